//! openraft's storage conformance suite against the sled store, each case on a fresh temp dir.

use aos_cp_store::StoreError;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use tempfile::TempDir;

use crate::support::{KvApp, LogStore, StateMachine, TestConfig};

/// Builds a store in a new temp dir; the dir (the guard) is removed when the case ends.
struct SledBuilder;

impl StoreBuilder<TestConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let (log, sm) = aos_cp_store::open::<TestConfig, KvApp>(dir.path())
            .map_err(|e: StoreError| e.into_storage_error(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok((dir, log, sm))
    }
}

type S = Suite<TestConfig, LogStore, StateMachine, SledBuilder, TempDir>;

/// The whole suite, exactly as openraft defines it.
#[test]
fn conformance_test_all() {
    S::test_all(SledBuilder).unwrap();
}

/// Runs one suite case on a fresh store, in its own runtime (as the suite itself does).
fn run_case<F, Fut>(case: F)
where
    F: FnOnce(LogStore, StateMachine) -> Fut,
    Fut: Future<Output = Result<(), StorageError<u64>>>,
{
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (_dir, log, sm) = SledBuilder.build().await.unwrap();
        case(log, sm).await.unwrap();
    });
}

/// One `#[test]` per suite case, so a failure names the case and the others still run.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        mod case {
            use super::*;
            $(
                #[test]
                fn $name() {
                    run_case(S::$name);
                }
            )*
        }
    };
}

cases!(
    last_membership_in_log_initial,
    last_membership_in_log,
    last_membership_in_log_multi_step,
    get_membership_initial,
    get_membership_from_log_and_empty_sm,
    get_membership_from_empty_log_and_sm,
    get_membership_from_log_le_sm_last_applied,
    get_membership_from_log_gt_sm_last_applied_1,
    get_membership_from_log_gt_sm_last_applied_2,
    get_initial_state_without_init,
    get_initial_state_membership_from_log_and_sm,
    get_initial_state_with_state,
    get_initial_state_last_log_gt_sm,
    get_initial_state_last_log_lt_sm,
    get_initial_state_log_ids,
    get_initial_state_re_apply_committed,
    save_vote,
    get_log_entries,
    limited_get_log_entries,
    try_get_log_entry,
    initial_logs,
    get_log_state,
    get_log_id,
    last_id_in_log,
    last_applied_state,
    purge_logs_upto_0,
    purge_logs_upto_5,
    purge_logs_upto_20,
    delete_logs_since_11,
    delete_logs_since_0,
    append_to_log,
    snapshot_meta,
    apply_single,
    apply_multiple,
);

/// `transfer_snapshot` takes the builder rather than a store.
#[test]
fn transfer_snapshot() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(S::transfer_snapshot(&SledBuilder)).unwrap();
}
