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
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The bulky fields between nodes (AppendEntries of up to 512 KiB,
        // forwarded proposal batches) decode as slices of tonic's receive
        // buffer instead of copies into fresh vectors: one copy fewer per
        // message (benches/README.md, "Record ingest", session 34).
        .bytes(".aos.raft.v1.RaftPayload.json")
        .bytes(".aos.cluster.v1.ProposeRequest.proposal_json")
        .compile_fds(descriptors)?;
    Ok(())
}
