//! The SQL gateway against a real SQLite file: bound parameters, the row
//! cap, read-only enforcement and the timeout.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use aos_connectors::{ConnectorError, Connectors, ProbeSite};
use aos_core::access::{
    AssetType, DataSource, ParamSpec, ParamType, SourceStatus, SqlConnector, SqlEngine, SqlTemplate,
};
use serde_json::{Map, Value, json};

fn db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, score REAL, body BLOB);
         INSERT INTO docs VALUES (1, 'a', 0.5, x'00ff'), (2, 'b', NULL, NULL), (3, 'c', 1.5, NULL);",
    )
    .unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

fn source(
    path: &str,
    statement: &str,
    params: &[(&str, ParamType)],
    read_only: bool,
    max_rows: u32,
) -> DataSource {
    DataSource {
        source_id: "db".into(),
        asset_type: AssetType::Sql,
        status: SourceStatus::Enabled,
        sql: Some(SqlConnector {
            engine: SqlEngine::Sqlite,
            target: path.into(),
            timeout_ms: 300,
            templates: vec![SqlTemplate {
                template_id: "t".into(),
                statement: statement.into(),
                params: params.iter().map(|(n, t)| ParamSpec { name: (*n).into(), param_type: *t }).collect(),
                max_rows,
                read_only,
            }],
        }),
        http: None,
        mcp: None,
    }
}

async fn run(source: &DataSource, params: Value) -> Result<aos_connectors::Output, ConnectorError> {
    let params: Map<String, Value> = params.as_object().cloned().unwrap_or_default();
    let template = &source.sql.as_ref().unwrap().templates[0];
    Connectors::new().query(source, template, &params, None).await
}

#[tokio::test]
async fn rows_come_back_typed_and_capped() {
    let (_dir, path) = db();
    let s = source(
        &path,
        "SELECT id, title, score, body FROM docs WHERE id >= :min ORDER BY id",
        &[("min", ParamType::Integer)],
        true,
        2,
    );
    let out = run(&s, json!({"min": 1})).await.unwrap();
    assert_eq!(
        out.data,
        json!([{"id": 1, "title": "a", "score": 0.5, "body": "00ff"}, {"id": 2, "title": "b", "score": null, "body": null}])
    );
    assert!(out.truncated, "a third row existed");
    assert_eq!((out.rows, out.doc_ids.clone()), (Some(2), vec!["1".to_owned(), "2".to_owned()]));
}

#[tokio::test]
async fn injection_payloads_are_values_not_sql() {
    let (_dir, path) = db();
    let s =
        source(&path, "SELECT id FROM docs WHERE title = :title", &[("title", ParamType::String)], true, 10);
    for payload in ["a' OR '1'='1", "a'; DROP TABLE docs; --", "' UNION SELECT name FROM sqlite_master --"] {
        let out = run(&s, json!({"title": payload})).await.unwrap();
        assert_eq!(out.rows, Some(0), "{payload}");
    }
    assert_eq!(run(&s, json!({"title": "a"})).await.unwrap().rows, Some(1), "the table is intact");
}

#[tokio::test]
async fn a_read_only_template_cannot_write() {
    let (_dir, path) = db();
    let s = source(&path, "DELETE FROM docs WHERE id = :id", &[("id", ParamType::Integer)], true, 10);
    assert_eq!(run(&s, json!({"id": 1})).await.unwrap_err(), ConnectorError::ReadOnly);
    let w = source(&path, "DELETE FROM docs WHERE id = :id", &[("id", ParamType::Integer)], false, 10);
    assert_eq!(run(&w, json!({"id": 1})).await.unwrap().data, json!({"rows_affected": 1}));
}

#[tokio::test]
async fn a_runaway_query_stops_at_the_timeout() {
    let (_dir, path) = db();
    let s = source(
        &path,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
        &[],
        true,
        1,
    );
    let started = std::time::Instant::now();
    let err = run(&s, json!({})).await.unwrap_err();
    assert_eq!(err, ConnectorError::Timeout { after_ms: 300 });
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn bad_parameters_and_missing_files_are_typed_errors() {
    let (_dir, path) = db();
    let s = source(&path, "SELECT id FROM docs WHERE id = :id", &[("id", ParamType::Integer)], true, 10);
    let err = run(&s, json!({"id": "1"})).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_PARAMS");
    assert!(err.is_caller_error());
    let missing = source("/nonexistent/aos.db", "SELECT 1", &[], true, 1);
    let err = run(&missing, json!({})).await.unwrap_err();
    assert_eq!(err.code(), "UPSTREAM_FAILED", "{err}");
    let probe = Connectors::new()
        .probe(&source(&path, "SELECT 1", &[], true, 1), None, ProbeSite::Edge)
        .await
        .unwrap();
    assert!(probe.contains("1 tables"), "{probe}");
}
