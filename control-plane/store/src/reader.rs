//! The applied state shared between the state machine and its readers.
//!
//! [`SledStateMachine`](crate::SledStateMachine) is moved into openraft; the REST API keeps a
//! [`StateReader`] to read the applied application state and to wait until a given log index
//! has been applied (read-index reads).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::{BasicNode, LogId, StoredMembership};
use tokio::sync::watch;

/// The application state and the point in the log it reflects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Applied<A> {
    pub(crate) app: A,
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) last_membership: StoredMembership<u64, BasicNode>,
}

/// State shared by the state machine, its snapshot builders and readers.
pub(crate) struct Shared<A> {
    state: RwLock<Applied<A>>,
    applied_index: watch::Sender<u64>,
    /// Encoded size of the latest snapshot built, installed or restored; 0 before any.
    snapshot_bytes: AtomicU64,
}

impl<A> Shared<A> {
    pub(crate) fn new(applied: Applied<A>) -> Arc<Self> {
        let index = applied_index(&applied);
        Arc::new(Self {
            state: RwLock::new(applied),
            applied_index: watch::Sender::new(index),
            snapshot_bytes: AtomicU64::new(0),
        })
    }

    /// Records the encoded size of the snapshot just built, installed or restored.
    pub(crate) fn set_snapshot_bytes(&self, bytes: usize) {
        self.snapshot_bytes.store(bytes as u64, Ordering::Relaxed);
    }

    /// Read access. A poisoned lock (a panic inside `Application::apply`) still holds the state
    /// as far as it got; readers see it rather than panicking in turn.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Applied<A>> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Applied<A>> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes the last applied index to subscribers.
    pub(crate) fn publish(&self, index: u64) {
        self.applied_index.send_replace(index);
    }
}

/// The value published for a state: the last applied index, 0 before anything is applied.
pub(crate) fn applied_index<A>(applied: &Applied<A>) -> u64 {
    applied.last_applied.map_or(0, |id| id.index)
}

/// A cloneable read handle on the applied application state.
pub struct StateReader<A> {
    shared: Arc<Shared<A>>,
}

impl<A> StateReader<A> {
    pub(crate) fn new(shared: Arc<Shared<A>>) -> Self {
        Self { shared }
    }

    /// Runs `f` on the applied application state, under a read lock: keep `f` short, since
    /// applying entries waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        f(&self.shared.read().app)
    }

    /// Encoded size in bytes of the latest snapshot this node built, installed or restored
    /// from disk; 0 before any.
    pub fn snapshot_bytes(&self) -> u64 {
        self.shared.snapshot_bytes.load(Ordering::Relaxed)
    }

    /// The id of the last log entry applied to the state, `None` before any.
    pub fn last_applied(&self) -> Option<LogId<u64>> {
        self.shared.read().last_applied
    }

    /// Watches the index of the last applied log entry (0 before any entry is applied; Raft's
    /// first real entry is index 0 or 1, so wait for `>= read_index` with a read index from the
    /// leader, which is always at least 1).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }
}

impl<A> Clone for StateReader<A> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<A> fmt::Debug for StateReader<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateReader").field("last_applied", &self.last_applied()).finish_non_exhaustive()
    }
}
