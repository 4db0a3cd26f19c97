//! `aosctl` as a user runs it: the real binary, real files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on any unexpected error"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn aosctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aosctl")).args(args).current_dir(repo()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn validates_the_shipped_examples() {
    let o = aosctl(&[
        "policy",
        "validate",
        "deploy/examples/budgets.yaml",
        "deploy/examples/data-access.yaml",
        "deploy/examples/privacy.yaml",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    assert!(text.contains("ok    deploy/examples/budgets.yaml (3 policies)"), "{text}");
    assert!(text.contains("pol-vip-actor"), "{text}");
}

#[test]
fn rejects_an_invalid_document_with_path_and_line() {
    let o = aosctl(&["policy", "validate", "deploy/examples/invalid/weekly-window.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains(
        "policies[2].limits[0].window: unknown value \"weekly\" (expected PER_RUN, PER_SESSION, TEMPORAL) (line 18, column 44)"
    ));
}

#[test]
fn json_output_is_machine_readable() {
    let o = aosctl(&[
        "-o",
        "json",
        "policy",
        "validate",
        "deploy/examples/budgets.yaml",
        "deploy/examples/invalid/many-errors.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reports[0]["ok"], true);
    assert_eq!(reports[0]["policies"][0]["id"], "pol-run-tokens");
    assert_eq!(reports[1]["ok"], false);
    assert_eq!(reports[1]["errors"][0]["path"], "policies[0].id");
    assert_eq!(reports[1]["errors"].as_array().unwrap().len(), 11);
}

#[test]
fn unreadable_file_exits_66_and_still_checks_the_rest() {
    let o = aosctl(&["policy", "validate", "no/such/file.yaml", "deploy/examples/budgets.yaml"]);
    assert_eq!(o.status.code(), Some(66));
    let text = stdout(&o);
    assert!(text.contains("FAIL  no/such/file.yaml") && text.contains("cannot read"), "{text}");
    assert!(text.contains("ok    deploy/examples/budgets.yaml"), "{text}");
}

#[test]
fn usage_errors_exit_nonzero_with_help() {
    let o = aosctl(&["policy", "validate"]);
    assert_eq!(o.status.code(), Some(2), "clap's usage exit code");
    assert!(String::from_utf8_lossy(&o.stderr).contains("required"));
}

#[test]
fn prints_the_checked_in_schema() {
    let o = aosctl(&["policy", "schema"]);
    assert!(o.status.success());
    let checked_in =
        std::fs::read_to_string(repo().join("deploy/schema/policy-document.schema.json")).unwrap();
    assert_eq!(stdout(&o), checked_in);
}
