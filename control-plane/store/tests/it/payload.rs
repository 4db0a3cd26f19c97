//! What replication reads for one AppendEntries: a prefix of the asked range bounded by encoded
//! bytes, never empty.

use aos_cp_store::log_store::PAYLOAD_BUDGET;
use openraft::storage::RaftLogStorageExt;
use openraft::{Entry, EntryPayload, RaftLogReader};

use crate::support::{KvCommand, TestConfig, entries, log_id, open};

/// A normal entry whose value is a string of `bytes` bytes.
fn sized(index: u64, bytes: usize) -> Entry<TestConfig> {
    let command = KvCommand::Set { key: format!("key{index}"), value: "v".repeat(bytes).into() };
    Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(command) }
}

/// Bytes of an entry as the store keeps it.
fn encoded(entry: &Entry<TestConfig>) -> usize {
    serde_json::to_vec(entry).unwrap().len()
}

#[tokio::test]
async fn small_entries_travel_whole_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path());
    log.blocking_append(entries(300)).await.unwrap();
    let read = log.limited_get_log_entries(2, 301).await.unwrap();
    assert_eq!(read, entries(300).split_off(2), "299 small entries fit one payload");
    // The end is exclusive.
    assert_eq!(log.limited_get_log_entries(5, 6).await.unwrap(), vec![entries(5).remove(5)]);
}

#[tokio::test]
async fn large_entries_are_cut_at_the_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path());
    let big: Vec<_> = (1..=40).map(|i| sized(i, 48 * 1024)).collect();
    log.blocking_append(big.clone()).await.unwrap();

    let read = log.limited_get_log_entries(1, 41).await.unwrap();
    let sizes: Vec<usize> = big.iter().map(encoded).collect();
    // The longest prefix within the budget, from the first index asked.
    let fits = (1..=sizes.len()).take_while(|&n| sizes[..n].iter().sum::<usize>() <= PAYLOAD_BUDGET).count();
    assert!(fits > 1 && fits < big.len(), "the test's entries must straddle the budget (fits {fits})");
    assert_eq!(read, big[..fits].to_vec());
    assert!(read.iter().map(encoded).sum::<usize>() <= PAYLOAD_BUDGET);

    // Replication asks again from where the payload stopped and gets the next prefix.
    let next = log.limited_get_log_entries(read.len() as u64 + 1, 41).await.unwrap();
    assert_eq!(next.first(), big.get(fits));
}

#[tokio::test]
async fn an_entry_larger_than_the_budget_still_travels_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _sm) = open(dir.path());
    let entries = vec![sized(1, PAYLOAD_BUDGET + 1), sized(2, 10), sized(3, 10)];
    log.blocking_append(entries.clone()).await.unwrap();
    assert_eq!(log.limited_get_log_entries(1, 4).await.unwrap(), entries[..1].to_vec());
    // After it, the small ones go together.
    assert_eq!(log.limited_get_log_entries(2, 4).await.unwrap(), entries[1..].to_vec());
}
