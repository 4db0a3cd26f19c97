//! The checked-in OpenAPI document (`deploy/openapi/control-plane.json`)
//! describes exactly the routes the REST router serves, and a node serves
//! that document.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use support::{NodeProc, call, wait_healthy};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(aos_control_plane::http::OPENAPI_DOCUMENT).unwrap()
}

/// `METHOD /path` for every `.route("/path", get(…).post(…))` in the
/// router's source files.
fn router_operations() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("http.rs")];
    for entry in std::fs::read_dir(src.join("http")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let route = regex::Regex::new(r#"\.route\(\s*"([^"]+)",\s*((?:[^()]|\([^()]*\))*)\)"#).unwrap();
    let method = regex::Regex::new(r"\b(get|post|put|patch|delete)\(").unwrap();
    let mut operations = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for caps in route.captures_iter(&text) {
            for m in method.captures_iter(&caps[2]) {
                operations.insert(format!("{} {}", m[1].to_uppercase(), &caps[1]));
            }
        }
    }
    operations
}

fn documented_operations() -> BTreeSet<String> {
    let doc = document();
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let served = router_operations();
    assert!(served.len() > 20, "the route scan found too little: {served:?}");
    let documented = documented_operations();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes missing from the OpenAPI document: {undocumented:?}");
    assert!(phantom.is_empty(), "documented operations no route serves: {phantom:?}");
}

#[test]
fn every_operation_has_a_unique_id_and_documents_its_errors() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: no success response");
            let public = op.get("security").and_then(Value::as_array).is_some_and(Vec::is_empty);
            if !public {
                assert!(responses.contains_key("401"), "{method} {path}: authenticated but no 401");
            }
        }
    }
}

#[test]
fn a_node_serves_the_checked_in_document() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(1, dir.path(), true);
    wait_healthy(&mut node);
    let (status, served) = call("GET", &node.url("/api/v1/openapi.json"), None, None);
    assert_eq!(status, 200);
    assert_eq!(served, document());
}
