//! Failover: time from `kill -9` of the AOS leader to the first
//! acknowledged write issued after the kill.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::agent;
use super::aos::{AosCluster, create_tenant};

/// Writer threads per surviving node: more than one, so a request stuck on
/// the dead leader does not hide a quicker path.
const WRITERS_PER_NODE: usize = 2;
/// Give up on a round after this long without an acknowledged write.
const ROUND_LIMIT: Duration = Duration::from_secs(30);

/// One round: kill the leader, measure, restart it and wait until the
/// cluster is whole again. Returns the kill-to-ack time.
pub fn round(cluster: &mut AosCluster, round: usize, name: &str) -> Result<Duration> {
    let leader = cluster.wait_stable(Duration::from_secs(60))?;
    let idx = cluster
        .nodes
        .iter()
        .position(|n| n.id == leader)
        .ok_or_else(|| anyhow!("leader {leader} is not one of the nodes"))?;
    let survivors: Vec<String> =
        cluster.nodes.iter().filter(|n| n.id != leader).map(|n| n.url("/api/v1/tenants")).collect();
    let key = cluster.key.clone();

    let killed_at = Instant::now();
    cluster.nodes[idx].kill();

    let done = AtomicBool::new(false);
    let first_ack: Mutex<Option<Instant>> = Mutex::new(None);
    std::thread::scope(|s| {
        for w in 0..survivors.len() * WRITERS_PER_NODE {
            let (url, key, done, first_ack) = (&survivors[w % survivors.len()], &key, &done, &first_ack);
            s.spawn(move || {
                let http = agent(Duration::from_secs(2));
                let mut seq = 0u64;
                while !done.load(Ordering::Relaxed) && killed_at.elapsed() < ROUND_LIMIT {
                    seq += 1;
                    if create_tenant(&http, url, key, &format!("failover-{round}-{w}-{seq}"), name) {
                        let acked = Instant::now();
                        if let Ok(mut first) = first_ack.lock() {
                            *first = Some(first.map_or(acked, |f| f.min(acked)));
                        }
                        done.store(true, Ordering::Relaxed);
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
        }
    });
    let first = *first_ack.lock().map_err(|_| anyhow!("ack time poisoned"))?;
    let Some(acked) = first else {
        bail!("round {round}: no write acknowledged within {ROUND_LIMIT:?} of killing leader {leader}");
    };

    cluster.nodes[idx].restart().with_context(|| format!("restart node {leader}"))?;
    cluster.wait_stable(Duration::from_secs(60)).with_context(|| format!("round {round}: rejoin"))?;
    Ok(acked - killed_at)
}
