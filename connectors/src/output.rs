//! What an access returns, and the document ids evidence records.

use serde_json::Value;

/// The result of one access.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Rows (SQL: an array of objects) or the response body (HTTP: JSON
    /// when it parses, else a string).
    pub data: Value,
    /// Ids of the documents or rows returned (GAP-058).
    pub doc_ids: Vec<String>,
    /// Rows returned (SQL).
    pub rows: Option<usize>,
    /// More rows existed than the template's `max_rows`.
    pub truncated: bool,
    /// Size of the payload, bytes.
    pub bytes: usize,
}

/// The list of documents in `data`: `data` itself when it is an array, else
/// an object's `items`/`results`/`documents`/`rows` array. `None` when
/// `data` is a single document (or nothing recognisable).
pub fn documents(data: &Value) -> Option<&Vec<Value>> {
    match data {
        Value::Array(items) => Some(items),
        Value::Object(obj) => ["items", "results", "documents", "rows"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_array)),
        _ => None,
    }
}

/// The id of one document: its `id` (or `doc_id`) when that is a string or
/// an integer.
pub fn doc_id(document: &Value) -> Option<String> {
    let obj = document.as_object()?;
    match obj.get("id").or_else(|| obj.get("doc_id"))? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Ids found in `data`: the [`doc_id`] of each of its [`documents`], or of
/// `data` itself when it is a single document; at most 1,000 are kept.
pub fn doc_ids(data: &Value) -> Vec<String> {
    match documents(data) {
        Some(items) => items.iter().filter_map(doc_id).take(1000).collect(),
        None => doc_id(data).into_iter().collect(),
    }
}
