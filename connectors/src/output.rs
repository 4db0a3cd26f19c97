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

/// Ids found in `data`: the `id` (or `doc_id`) of each object of an array,
/// of an object's `items`/`results`/`documents` array, or of the object
/// itself. Strings and integers count; at most 1,000 are kept.
pub fn doc_ids(data: &Value) -> Vec<String> {
    fn id_of(v: &Value) -> Option<String> {
        let obj = v.as_object()?;
        let id = obj.get("id").or_else(|| obj.get("doc_id"))?;
        match id {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    let list = match data {
        Value::Array(items) => Some(items),
        Value::Object(obj) => ["items", "results", "documents", "rows"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_array)),
        _ => None,
    };
    match list {
        Some(items) => items.iter().filter_map(id_of).take(1000).collect(),
        None => id_of(data).into_iter().collect(),
    }
}
