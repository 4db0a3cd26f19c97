//! The published JSON Schema matches the model and accepts the shipped
//! examples.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on any unexpected error"
)]

use std::path::{Path, PathBuf};

use aos_core::schema::{policy_document_schema, policy_document_schema_pretty};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

#[test]
fn checked_in_schema_is_current() {
    let path = repo().join("deploy/schema/policy-document.schema.json");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == policy_document_schema_pretty(),
        "{} is stale; regenerate with: cargo run -p aosctl -- policy schema > deploy/schema/policy-document.schema.json",
        path.display()
    );
}

#[test]
fn every_example_validates_against_the_schema() {
    let validator = jsonschema::validator_for(&policy_document_schema()).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("deploy/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let doc = yaml_as_json(&path);
            let errors: Vec<String> =
                validator.iter_errors(&doc).map(|e| format!("{}: {e}", e.instance_path())).collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the shipped examples, found {seen}");
}

#[test]
fn schema_rejects_what_the_parser_rejects_by_shape() {
    let validator = jsonschema::validator_for(&policy_document_schema()).unwrap();
    let bad = yaml_as_json(&repo().join("deploy/examples/invalid/weekly-window.yaml"));
    assert!(!validator.is_valid(&bad), "unknown enum value must fail the schema");
    let unknown_field = serde_json::json!({"api_version": "aos/v1", "policies": [{"id": "p", "name": "n", "scope": {"type": "ALL_RUNS"}, "limitz": []}]});
    assert!(!validator.is_valid(&unknown_field));
}
