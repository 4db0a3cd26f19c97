//! The async runtime openraft runs on: tokio, with a floor under the deadlines openraft puts on
//! its RPCs to peers ([`RPC_TIMEOUT_FLOOR`]).
//!
//! openraft 0.9 gives every AppendEntries exactly one heartbeat interval (50 ms by default) to
//! be answered, and gives the heartbeats that confirm a linearizable read's index the same; the
//! interval is not configurable apart from the heartbeat itself. Under load on a small machine
//! (three nodes and their clients on two cores, a Raft snapshot being written) a follower's
//! answer took longer than that, the leader cancelled the request — often before the follower
//! had even read it — and sent it again, so a follower that was merely busy stopped hearing from
//! the leader, called elections, and writes were refused while they ran (benches/README.md,
//! "Record ingest", forced-snapshot runs). Waiting longer for an answer costs nothing when a peer
//! is gone: a refused connection fails at once, and the leader's other followers are replicated
//! to independently. Raising the heartbeat instead would also slow elections (their timeouts are
//! 3–6 heartbeats) and so failover.
//!
//! Everything else — tasks, sleeps (the election and heartbeat timers), channels, randomness —
//! is openraft's own tokio runtime, unchanged.

use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

/// The shortest deadline openraft's RPCs to peers get: three default heartbeats, the shortest
/// election timeout (`election_timeout_min`), so a request is given as long as a follower waits
/// for the leader before it calls an election.
pub const RPC_TIMEOUT_FLOOR: Duration = Duration::from_millis(150);

/// openraft's tokio runtime with [`RPC_TIMEOUT_FLOOR`] under every `timeout` it asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RaftRuntime;

type Tokio = TokioRuntime;

impl AsyncRuntime for RaftRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    /// openraft calls this for its RPCs to peers (AppendEntries, heartbeats, votes, snapshot
    /// chunks) and for `Raft::wait`; the floor only ever lengthens a deadline.
    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration.max(RPC_TIMEOUT_FLOOR), future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_short_deadline_is_raised_to_the_floor_and_a_long_one_kept() {
        // Lower bounds only: a deadline can pass late on a busy machine, never early.
        let started = std::time::Instant::now();
        let short = RaftRuntime::timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
        assert!(short.is_err());
        assert!(started.elapsed() >= RPC_TIMEOUT_FLOOR, "gave up after {:?}", started.elapsed());

        let started = std::time::Instant::now();
        let long = RaftRuntime::timeout(RPC_TIMEOUT_FLOOR * 2, std::future::pending::<()>()).await;
        assert!(long.is_err());
        assert!(started.elapsed() >= RPC_TIMEOUT_FLOOR * 2, "gave up after {:?}", started.elapsed());

        let ready = RaftRuntime::timeout(Duration::from_millis(1), async { 7 }).await;
        assert_eq!(ready.ok(), Some(7));
    }
}
