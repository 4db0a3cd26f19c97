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
/// checked in.
pub fn policy_document_schema_pretty() -> String {
    let mut text = serde_json::to_string_pretty(&policy_document_schema()).unwrap_or_default();
    text.push('\n');
    text
}
