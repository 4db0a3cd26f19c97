//! The in-process event reactor (EVENT path, INV-001): alerts, run endings
//! and heartbeats fan out to subscribers without ever blocking the step
//! that produced them.
//!
//! Publishing is a non-blocking write into a bounded ring
//! (`tokio::sync::broadcast`): a subscriber that falls behind loses the
//! oldest events and is told how many (`lagged`), it never makes the
//! publisher wait. Anything that must not be lost goes to the durable
//! outbox instead; events are notifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aos_core::evaluate::AlertIntent;
use serde::Serialize;
use tokio::sync::broadcast;

/// Events buffered per subscriber before the oldest are dropped for it.
pub const EVENT_BUFFER: usize = 4096;

/// Something the EVENT path should know about.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentEvent {
    /// A near-threshold tier or breach newly reached by a step.
    Alert {
        /// Run.
        run_id: String,
        /// What crossed.
        alert: AlertIntent,
    },
    /// A run ended.
    RunEnded {
        /// Run.
        run_id: String,
        /// Final status.
        status: &'static str,
    },
    /// A governance state newly in force (pushed by the control plane,
    /// GAP-069/070): it applies from the next decision on. Published
    /// before the state is made durable, so subscribers hear of it as
    /// soon as steps see it.
    GovernanceChanged {
        /// The state's version (one per change, cluster-wide).
        version: u64,
        /// `ENFORCING`, `DEGRADED`, `DISABLED` or `HALTED`.
        mode: &'static str,
        /// Why, as the operator gave it.
        reason: String,
        /// Who set it.
        set_by: String,
    },
    /// The agent is alive (GAP-048).
    Heartbeat {
        /// Unix ms.
        at_ms: u64,
    },
}

/// The reactor; one per agent.
#[derive(Debug)]
pub struct EventReactor {
    tx: broadcast::Sender<Arc<AgentEvent>>,
    published: AtomicU64,
    lagged: Arc<AtomicU64>,
}

impl Default for EventReactor {
    fn default() -> Self {
        Self::new()
    }
}

impl EventReactor {
    /// A reactor with no subscriber yet and [`EVENT_BUFFER`] slots.
    pub fn new() -> EventReactor {
        Self::with_capacity(EVENT_BUFFER)
    }

    /// A reactor buffering `capacity` events per subscriber (at least 1).
    pub fn with_capacity(capacity: usize) -> EventReactor {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventReactor { tx, published: AtomicU64::new(0), lagged: Arc::new(AtomicU64::new(0)) }
    }

    /// Publishes without waiting, whatever the subscribers do.
    pub fn publish(&self, event: AgentEvent) {
        self.published.fetch_add(1, Ordering::Relaxed);
        // No subscriber is not an error: events are notifications.
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new subscription. A receiver that lags gets `RecvError::Lagged`;
    /// use [`EventReactor::count_lag`] to report it.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AgentEvent>> {
        self.tx.subscribe()
    }

    /// Records that a subscriber skipped `n` events.
    pub fn count_lag(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }

    /// (published, subscribers, lagged) for `/health` and `/metrics`.
    pub fn stats(&self) -> (u64, usize, u64) {
        (
            self.published.load(Ordering::Relaxed),
            self.tx.receiver_count(),
            self.lagged.load(Ordering::Relaxed),
        )
    }

    /// Runs the built-in subscriber that logs alerts (delivery to people is
    /// the control plane's job), until the reactor is dropped.
    pub fn spawn_alert_log(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let mut rx = self.subscribe();
        let reactor = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        if let AgentEvent::Alert { run_id, alert } = event.as_ref() {
                            tracing::info!(
                                message = "alert",
                                run_id = %run_id,
                                policy_id = %alert.policy_id,
                                kind = alert.kind.as_str(),
                                value = alert.value,
                                threshold = alert.threshold
                            );
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => reactor.count_lag(n),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_that_never_reads_never_blocks_the_publisher() {
        let reactor = EventReactor::new();
        let mut stuck = reactor.subscribe();
        for i in 0..(EVENT_BUFFER as u64 * 3) {
            reactor.publish(AgentEvent::Heartbeat { at_ms: i });
        }
        let (published, subscribers, _) = reactor.stats();
        assert_eq!((published, subscribers), (EVENT_BUFFER as u64 * 3, 1));
        // The stuck subscriber learns it missed the oldest events.
        match stuck.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, EVENT_BUFFER as u64 * 2),
            other => panic!("expected a lag, got {other:?}"),
        }
    }
}
