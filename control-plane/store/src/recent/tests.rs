use std::collections::BTreeMap;

use proptest::prelude::*;

use super::RecentEntries;

/// Entries are their own index; each counts 10 bytes.
fn entries(range: std::ops::Range<u64>) -> Vec<(u64, usize)> {
    range.map(|i| (i, 10)).collect()
}

#[test]
fn appended_entries_are_served_within_a_payload_budget() {
    let cache = RecentEntries::new(1_000);
    cache.appended(5, entries(5..15));
    assert_eq!(cache.get(5, 15, usize::MAX), Some((5..15).collect()));
    assert_eq!(cache.get(7, 9, usize::MAX), Some(vec![7, 8]));
    // 25 bytes: two entries fit, the third would pass the budget.
    assert_eq!(cache.get(5, 15, 25), Some(vec![5, 6]));
    // One entry travels even when it alone is over the budget.
    assert_eq!(cache.get(5, 15, 1), Some(vec![5]));
}

#[test]
fn a_range_the_cache_does_not_fully_hold_is_left_to_the_log() {
    let cache = RecentEntries::new(1_000);
    assert_eq!(cache.get(0, 1, usize::MAX), None);
    cache.appended(5, entries(5..15));
    assert_eq!(cache.get(4, 6, usize::MAX), None);
    assert_eq!(cache.get(14, 16, usize::MAX), None);
    assert_eq!(cache.get(9, 9, usize::MAX), None);
}

#[test]
fn the_oldest_entries_go_first_when_the_budget_is_passed() {
    let cache = RecentEntries::new(50);
    cache.appended(1, entries(1..6));
    cache.appended(6, entries(6..9));
    assert_eq!(cache.get(1, 2, usize::MAX), None);
    assert_eq!(cache.get(4, 9, usize::MAX), Some((4..9).collect()));
}

#[test]
fn truncation_and_purging_remove_entries_and_the_run_continues() {
    let cache = RecentEntries::new(1_000);
    cache.appended(1, entries(1..11));
    cache.truncated(8);
    assert_eq!(cache.get(7, 9, usize::MAX), None);
    assert_eq!(cache.get(1, 8, usize::MAX), Some((1..8).collect()));
    // The next append continues at the truncation point.
    cache.appended(8, vec![(800, 10), (900, 10)]);
    assert_eq!(cache.get(7, 10, usize::MAX), Some(vec![7, 800, 900]));
    cache.purged(3);
    assert_eq!(cache.get(3, 5, usize::MAX), None);
    assert_eq!(cache.get(4, 10, usize::MAX), Some(vec![4, 5, 6, 7, 800, 900]));
}

#[test]
fn an_append_that_does_not_continue_the_run_starts_a_new_one() {
    let cache = RecentEntries::new(1_000);
    cache.appended(1, entries(1..5));
    cache.appended(20, entries(20..22));
    assert_eq!(cache.get(1, 2, usize::MAX), None);
    assert_eq!(cache.get(20, 22, usize::MAX), Some(vec![20, 21]));
}

#[test]
fn a_zero_budget_keeps_nothing() {
    let cache = RecentEntries::new(0);
    cache.appended(1, entries(1..5));
    assert_eq!(cache.get(1, 2, usize::MAX), None);
}

/// What the log store does to its log.
#[derive(Debug, Clone)]
enum Op {
    /// Append `n` entries after the last one (or at index 1).
    Append(u8),
    /// Truncate at the given distance back from the end.
    Truncate(u8),
    /// Purge up to the given distance after the start.
    Purge(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..8).prop_map(Op::Append),
        1 => (0u8..6).prop_map(Op::Truncate),
        1 => (0u8..6).prop_map(Op::Purge),
    ]
}

proptest! {
    /// Whatever the sequence of appends, truncations and purges, whatever the cache returns is
    /// exactly what the log holds at those indexes (the log modelled as a map, like sled's
    /// tree), and within the budget's most recent entries it returns something.
    #[test]
    fn the_cache_never_disagrees_with_the_log(ops in proptest::collection::vec(op(), 1..60), budget in 0usize..200) {
        let cache = RecentEntries::new(budget);
        let mut log: BTreeMap<u64, u64> = BTreeMap::new();
        let mut version = 0u64;
        let mut purged_upto = 0u64;
        for op in ops {
            let appending = matches!(op, Op::Append(_));
            let end = log.keys().next_back().map_or(purged_upto + 1, |last| last + 1);
            match op {
                Op::Append(n) => {
                    let mut appended = Vec::new();
                    for index in end..end + u64::from(n) {
                        version += 1;
                        // Entry value: unique per write, so an overwritten index is told apart.
                        log.insert(index, version);
                        appended.push((version, 10));
                    }
                    cache.appended(end, appended);
                }
                Op::Truncate(back) => {
                    let at = end.saturating_sub(u64::from(back)).max(purged_upto + 1);
                    log.retain(|&index, _| index < at);
                    cache.truncated(at);
                }
                Op::Purge(ahead) => {
                    let upto = purged_upto + u64::from(ahead);
                    log.retain(|&index, _| index > upto);
                    purged_upto = purged_upto.max(upto);
                    cache.purged(upto);
                }
            }
            let end = log.keys().next_back().map_or(purged_upto + 1, |last| last + 1);
            for start in purged_upto.saturating_sub(1)..=end {
                for stop in start..=end + 1 {
                    if let Some(got) = cache.get(start, stop, usize::MAX) {
                        let want: Vec<u64> = (start..stop).filter_map(|i| log.get(&i).copied()).collect();
                        prop_assert_eq!(got, want, "range {}..{}", start, stop);
                    }
                }
            }
            // Right after an append, the newest entry is served whenever one fits the budget.
            if appending && budget >= 10 {
                prop_assert!(cache.get(end - 1, end, usize::MAX).is_some());
            }
        }
    }
}
