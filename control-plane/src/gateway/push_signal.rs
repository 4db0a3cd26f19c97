//! Wakes a node's snapshot watches when something they push may have
//! changed, and only then.
//!
//! Watches used to wake on every applied Raft entry. Record ingest and
//! ACKs are most of the entries, so a governance change reaching N agents
//! (N ACKs and N `GOVERNANCE_APPLIED` batches) woke every watch N times:
//! quadratic work on the path that must reach the last agent within
//! milliseconds. One task per node follows the applied index instead and
//! publishes the state's push generation (snapshot versions and governance
//! version, see `ControlState::push_generation`) when it moves.

use tokio::sync::watch;

use crate::node::Node;
use crate::raft::store::StateReader;

/// Starts following `node`'s applied state; the task ends once every
/// receiver is gone.
pub fn start(node: &Node) -> watch::Receiver<u64> {
    let state = node.state().clone();
    let (tx, rx) = watch::channel(generation(&state));
    let mut applied = state.subscribe();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
            }
            let now = generation(&state);
            tx.send_if_modified(|held| {
                let moved = *held != now;
                *held = now;
                moved
            });
        }
    });
    rx
}

fn generation(state: &StateReader) -> u64 {
    state.read(|s| s.0.push_generation())
}
