//! What a run retrieved, kept for the hallucination detector (GAP-023):
//! the text of every document a governed data access returned to the run,
//! as passages [`aos_core::grounding::check`] grounds responses against.
//!
//! Kept in memory only, within the corpus limits of
//! [`aos_core::grounding`] per run (the oldest passages go first), dropped
//! when the run ends, and never written anywhere: retrieval evidence records ids
//! and hashes, not data. After an edge-agent restart a run has no passages
//! until it retrieves again, and its responses are not scored until then.

use std::sync::Arc;

use aos_connectors::{doc_id, documents};
use aos_core::grounding::{Corpus, Passage};
use serde_json::Value;

/// A run's retrieved passages, indexed once as they arrive
/// ([`Corpus`]: at most 1,000 passages and 512 KiB of text, the oldest
/// going first). Cloning it for a check is cheap: it is shared until the
/// next retrieval changes it.
#[derive(Debug, Clone, Default)]
pub struct RetrievedPassages {
    corpus: Arc<Corpus>,
}

impl RetrievedPassages {
    /// Adds what one access returned: each object of an array (or of an
    /// object's `items`/`results`/`documents`/`rows`) is a passage with its
    /// `id`/`doc_id` and the text of its values; anything else is one
    /// passage under `fallback_id`.
    pub fn add(&mut self, data: &Value, fallback_id: &str) {
        let corpus = Arc::make_mut(&mut self.corpus);
        match documents(data) {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    corpus.push(Passage {
                        doc_id: doc_id(item).unwrap_or_else(|| format!("{fallback_id}#{i}")),
                        text: text_of(item),
                    });
                }
            }
            None => corpus.push(Passage {
                doc_id: doc_id(data).unwrap_or_else(|| fallback_id.to_owned()),
                text: text_of(data),
            }),
        }
    }

    /// The passages, shared.
    pub fn shared(&self) -> Arc<Corpus> {
        Arc::clone(&self.corpus)
    }

    /// Whether the run retrieved anything.
    pub fn is_empty(&self) -> bool {
        self.corpus.is_empty()
    }
}

/// The text of a value: strings and numbers, joined by sentence breaks so
/// that fields do not run into one another.
fn text_of(v: &Value) -> String {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Bool(b) => out.push(b.to_string()),
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(obj) => obj.values().for_each(|i| walk(i, out)),
            Value::Null => {}
        }
    }
    let mut parts = Vec::new();
    walk(v, &mut parts);
    parts.join(". ")
}

#[cfg(test)]
mod tests {
    use aos_core::grounding::check;
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_become_passages_with_their_ids() {
        let mut kept = RetrievedPassages::default();
        kept.add(
            &json!([{"id": "d1", "title": "Refunds", "body": "Refunds take 14 days"}, {"body": "no id"}]),
            "ev-1",
        );
        assert_eq!(kept.shared().len(), 2);
        let grounded = check("Refunds take 14 days [doc:d1].", &[], &kept.shared());
        assert_eq!((grounded.score, grounded.unknown_citations.len()), (0.0, 0), "{grounded:?}");
        // A row without an id is cited by the evidence id and its index.
        let cited = check("Ok.", &["ev-1#1".to_owned()], &kept.shared());
        assert!(cited.unknown_citations.is_empty(), "{cited:?}");
        kept.add(&json!("plain text answer"), "ev-2");
        assert_eq!(kept.shared().len(), 3);
        assert!(check("Ok.", &["ev-2".to_owned()], &kept.shared()).unknown_citations.is_empty());
    }

    #[test]
    fn the_oldest_passages_go_past_the_budget() {
        let mut kept = RetrievedPassages::default();
        let big = "x".repeat(aos_core::grounding::MAX_CORPUS_BYTES / 2 + 1);
        kept.add(&json!({"id": "a", "t": big}), "e");
        kept.add(&json!({"id": "b", "t": big}), "e");
        let corpus = kept.shared();
        assert_eq!(corpus.len(), 1);
        assert!(corpus.bytes() <= aos_core::grounding::MAX_CORPUS_BYTES);
        assert_eq!(check("Ok.", &["a".to_owned()], &corpus).unknown_citations, ["a"]);
    }
}
