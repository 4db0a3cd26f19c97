//! The JSON Schema of policy documents, generated from the model so it can
//! never drift from what the parser accepts. A copy is checked in at
//! `deploy/schema/policy-document.schema.json`; a test fails when the two
//! differ, and `aosctl policy schema` prints it.

use crate::document::PolicyDocument;

/// The schema as a JSON value.
pub fn policy_document_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PolicyDocument);
    schema.to_value()
}

/// The schema as pretty-printed JSON with a trailing newline, exactly as
/// checked in. Keys are sorted explicitly: whether `serde_json` keeps
/// insertion order depends on which other crates share the build (feature
/// unification), and the checked-in text must not.
pub fn policy_document_schema_pretty() -> String {
    let mut text = serde_json::to_string_pretty(&sorted(policy_document_schema())).unwrap_or_default();
    text.push('\n');
    text
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
