//! Compiles the `.proto` files with `protox` (pure Rust), so building needs
//! no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/aos/raft/v1/raft.proto",
        "proto/aos/cluster/v1/cluster.proto",
        "proto/aos/agent/v1/agent.proto",
        "proto/aos/agent/v1/local.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
