//! Idempotency: the results of the most recent proposals by request id.
//!
//! A client that retries (timeout, leader change) sends the same
//! `request_id`; the state answers with the original result and changes
//! nothing. The log is bounded: once it holds `capacity` ids, the oldest is
//! forgotten. Eviction order is insertion order, which is the log order, so
//! every replica forgets the same ids.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::CommandResult;

/// Request ids remembered by default.
pub const DEFAULT_REQUEST_CAPACITY: usize = 100_000;

/// Bounded map from request id to the result it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLog {
    capacity: usize,
    results: BTreeMap<String, CommandResult>,
    order: VecDeque<String>,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog::with_capacity(DEFAULT_REQUEST_CAPACITY)
    }
}

impl RequestLog {
    /// A log remembering at most `capacity` request ids.
    pub fn with_capacity(capacity: usize) -> Self {
        RequestLog { capacity, results: BTreeMap::new(), order: VecDeque::new() }
    }

    /// How many ids are remembered at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The result recorded for `request_id`, if still remembered.
    pub fn get(&self, request_id: &str) -> Option<&CommandResult> {
        self.results.get(request_id)
    }

    /// Remembers `result` for a new `request_id`, forgetting the oldest ids
    /// beyond capacity.
    pub(crate) fn insert(&mut self, request_id: String, result: CommandResult) {
        if self.results.insert(request_id.clone(), result).is_none() {
            self.order.push_back(request_id);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.results.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Applied;

    fn result(seq: u64) -> CommandResult {
        CommandResult::Applied(Applied {
            audit_seq: seq,
            tenant_snapshot_version: None,
            detail: serde_json::Value::Null,
        })
    }

    #[test]
    fn evicts_oldest_first() {
        let mut log = RequestLog::with_capacity(2);
        log.insert("a".into(), result(1));
        log.insert("b".into(), result(2));
        log.insert("c".into(), result(3));
        assert_eq!(log.len(), 2);
        assert!(log.get("a").is_none());
        assert_eq!(log.get("b"), Some(&result(2)));
        assert_eq!(log.get("c"), Some(&result(3)));
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let mut log = RequestLog::with_capacity(0);
        log.insert("a".into(), result(1));
        assert!(log.is_empty());
        assert!(log.get("a").is_none());
    }
}
