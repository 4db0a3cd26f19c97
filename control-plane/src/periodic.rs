//! The clock of a node's background jobs (snapshot reissue, retention,
//! the leader probe): a tick every period, a late tick delaying the next
//! rather than bunching up, until the node stops.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

/// Ticks every period until `stop` flips to true.
#[derive(Debug)]
pub struct Periodic {
    interval: Interval,
    stop: watch::Receiver<bool>,
}

impl Periodic {
    /// The first tick comes at once.
    pub fn new(period: Duration, stop: watch::Receiver<bool>) -> Periodic {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Periodic { interval, stop }
    }

    /// Waits for the next tick; `false` once the node is stopping.
    pub async fn tick(&mut self) -> bool {
        loop {
            tokio::select! {
                _ = self.interval.tick() => return true,
                changed = self.stop.changed() => {
                    if changed.is_err() || *self.stop.borrow() {
                        return false;
                    }
                }
            }
        }
    }
}
