//! Raft plumbing for the control plane: the openraft type configuration,
//! the gRPC transport in both directions, and the storage binding.
//!
//! - [`network`]: outbound RPCs (openraft → peers).
//! - [`service`]: inbound RPCs (peers → openraft).
//! - [`store`]: the sled log store and state machine for this application.
//! - [`runtime`]: tokio for openraft, with a floor under its RPC deadlines.

pub mod network;
pub mod runtime;
pub mod service;
pub mod store;

/// Control-plane node ids.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The control plane's Raft types: commands are `aos_cp_state`
    /// proposals, carried as their JSON text (`LoggedProposal`), answers
    /// their results.
    pub TypeConfig:
        D = aos_cp_state::LoggedProposal,
        R = aos_cp_state::CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = runtime::RaftRuntime,
);

/// A Raft instance of the control plane.
pub type Raft = openraft::Raft<TypeConfig>;
