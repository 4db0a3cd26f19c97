//! Binds the replicated application (`aos-cp-state`) to the sled storage
//! (`aos-cp-store`). The newtype exists only because the trait and the
//! state live in different crates.

use aos_cp_state::{Applied, CommandResult, ControlState, LoggedProposal};
use serde::{Deserialize, Serialize};

/// The control-plane state as the Raft state machine holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Replicated(pub ControlState);

impl aos_cp_store::Application for Replicated {
    type Command = LoggedProposal;
    type Response = CommandResult;

    /// Decodes the entry's proposal (once per node: it travelled as text)
    /// and applies it. Every node encodes what it proposes and the leader
    /// decodes what followers forward before proposing it, so text that
    /// does not decode here was written by a member running other code
    /// (say, a newer command during a rolling upgrade): this node stops
    /// applying rather than diverge from members that can apply it.
    fn apply(&mut self, log_index: u64, command: &LoggedProposal) -> Result<CommandResult, String> {
        let proposal = command.decode().map_err(|e| format!("not a proposal this build knows: {e}"))?;
        Ok(self.0.apply(log_index, &proposal))
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
