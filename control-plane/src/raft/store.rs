//! Binds the replicated application (`aos-cp-state`) to the sled storage
//! (`aos-cp-store`). The newtype exists only because the trait and the
//! state live in different crates.

use aos_cp_state::{Applied, CommandResult, ControlState, LoggedProposal, Rejection, RejectionCode};
use serde::{Deserialize, Serialize};

/// The control-plane state as the Raft state machine holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Replicated(pub ControlState);

impl aos_cp_store::Application for Replicated {
    type Command = LoggedProposal;
    type Response = CommandResult;

    /// Decodes the entry's proposal (once per node: it travelled as text)
    /// and applies it. Text that does not decode can only come from a
    /// cluster member running incompatible code: it is refused the same way
    /// on every node, and changes nothing — there is no request id or actor
    /// to audit it under.
    fn apply(&mut self, log_index: u64, command: &LoggedProposal) -> CommandResult {
        match command.decode() {
            Ok(proposal) => self.0.apply(log_index, &proposal),
            Err(error) => {
                tracing::error!(log_index, %error, "committed entry is not a proposal; refused");
                CommandResult::Rejected(Rejection {
                    code: RejectionCode::InvalidInput,
                    message: format!("log entry {log_index} is not a proposal: {error}"),
                    field_errors: Vec::new(),
                    audit_seq: 0,
                })
            }
        }
    }

    /// Blank and membership entries carry no command; nobody waits for
    /// their response, and they write no audit entry (seq 0).
    fn blank_response() -> CommandResult {
        CommandResult::Applied(Applied {
            audit_seq: 0,
            tenant_snapshot_version: None,
            detail: serde_json::Value::Null,
        })
    }
}

/// Log store of a control-plane node.
pub type LogStore = aos_cp_store::SledLogStore<super::TypeConfig>;
/// State machine of a control-plane node.
pub type StateMachine = aos_cp_store::SledStateMachine<super::TypeConfig, Replicated>;
/// Read handle on the applied state.
pub type StateReader = aos_cp_store::StateReader<Replicated>;

/// Opens (or creates) the node's sled database under `dir`.
pub fn open(dir: &std::path::Path) -> Result<(LogStore, StateMachine), aos_cp_store::StoreError> {
    aos_cp_store::open::<super::TypeConfig, Replicated>(dir)
}
