//! The SQL gateway against a real PostgreSQL server (started by
//! `tests/fixtures/postgres.sh` for this test binary): typed binding,
//! injection, the row cap, read-only transactions, the statement timeout,
//! credentials and the verification probe.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::{Path, PathBuf};

use std::process::Command;
use std::sync::OnceLock;

use aos_connectors::{ConnectorError, Connectors, ProbeSite, Secret};
use aos_core::access::{
    AssetType, DataSource, ParamSpec, ParamType, SourceStatus, SqlConnector, SqlEngine, SqlTemplate,
};
use serde_json::{Map, Value, json};

const PASSWORD: &str = "pg-s3cret-7d2e";

/// One server for the whole test binary; the fixture's watchdog stops it
/// and removes its directory once this process has exited.
struct Server {
    port: u16,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/postgres.sh")
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("aos-pg-{}-{port}", std::process::id()));
        let status = Command::new(script())
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .arg(PASSWORD)
            .arg(std::process::id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "could not start PostgreSQL (scripts/verify installs it): {status}");
        let server = Server { port };
        let setup = target(&server);
        // Tests call this from inside their own runtimes: set up on a
        // thread with its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&format!("{setup} password={PASSWORD}"), tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(
                    "CREATE TABLE people (id int4 PRIMARY KEY, name text, score float8, active bool, big int8);
                     INSERT INTO people VALUES (1, 'Ada', 0.5, true, 10), (2, 'Grace', NULL, false, 20), (3, 'Edsger', 1.5, true, 30);",
                )
                .await
                .unwrap();
            });
        })
        .join()
        .unwrap();
        server
    })
}

fn target(server: &Server) -> String {
    format!("host=127.0.0.1 port={} user=aos dbname=postgres", server.port)
}

fn source(statement: &str, params: &[(&str, ParamType)], read_only: bool, max_rows: u32) -> DataSource {
    DataSource {
        source_id: "pg".into(),
        asset_type: AssetType::Sql,
        status: SourceStatus::Enabled,
        sql: Some(SqlConnector {
            engine: SqlEngine::Postgres,
            target: target(server()),
            timeout_ms: 500,
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
    let secret = Secret::new(PASSWORD.to_owned());
    Connectors::new().query(source, template, &params, Some(&secret)).await
}

#[tokio::test]
async fn parameters_bind_to_the_inferred_types_and_rows_are_capped() {
    let s = source(
        "SELECT id, name, score, active, big FROM people WHERE id >= :min ORDER BY id",
        &[("min", ParamType::Integer)],
        true,
        2,
    );
    let out = run(&s, json!({"min": 1})).await.unwrap();
    assert_eq!(
        out.data,
        json!([
            {"id": 1, "name": "Ada", "score": 0.5, "active": true, "big": 10},
            {"id": 2, "name": "Grace", "score": null, "active": false, "big": 20}
        ])
    );
    assert!(out.truncated);
    assert_eq!(out.doc_ids, ["1", "2"]);
    let err = run(&s, json!({"min": 5_000_000_000_i64})).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_PARAMS", "an int4 placeholder refuses a value out of range: {err}");
}

#[tokio::test]
async fn injection_payloads_are_values_not_sql() {
    let s = source("SELECT id FROM people WHERE name = :name", &[("name", ParamType::String)], true, 10);
    for payload in ["Ada' OR '1'='1", "Ada'; DROP TABLE people; --", "x' UNION SELECT 1 --"] {
        assert_eq!(run(&s, json!({"name": payload})).await.unwrap().rows, Some(0), "{payload}");
    }
    assert_eq!(run(&s, json!({"name": "Ada"})).await.unwrap().rows, Some(1), "the table is intact");
}

#[tokio::test]
async fn read_only_templates_run_in_read_only_transactions() {
    let s = source(
        "INSERT INTO people VALUES (:id, 'Mallory', 0, false, 0)",
        &[("id", ParamType::Integer)],
        true,
        1,
    );
    assert_eq!(run(&s, json!({"id": 99})).await.unwrap_err(), ConnectorError::ReadOnly);
    let count = source("SELECT count(*)::int4 AS n FROM people WHERE id = 99", &[], true, 1);
    assert_eq!(run(&count, json!({})).await.unwrap().data, json!([{"n": 0}]));
}

#[tokio::test]
async fn a_slow_statement_stops_at_the_timeout() {
    let s = source("SELECT 1 AS x FROM pg_sleep(5)", &[], true, 1);
    let started = std::time::Instant::now();
    let err = run(&s, json!({})).await.unwrap_err();
    assert_eq!(err, ConnectorError::Timeout { after_ms: 500 });
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test]
async fn unrenderable_columns_say_what_to_do() {
    let s = source("SELECT now() AS at", &[], true, 1);
    let err = run(&s, json!({})).await.unwrap_err().to_string();
    assert!(err.contains("column `at`") && err.contains("cast it to text"), "{err}");
}

#[tokio::test]
async fn the_probe_checks_the_credential_and_errors_never_carry_it() {
    let s = source("SELECT 1", &[], true, 1);
    let connectors = Connectors::new();
    let ok = connectors.probe(&s, Some(&Secret::new(PASSWORD.to_owned())), ProbeSite::Edge).await.unwrap();
    assert!(ok.contains("connected as aos") && ok.contains("PostgreSQL"), "{ok}");
    let wrong = "not-the-password-4411";
    let err = connectors.probe(&s, Some(&Secret::new(wrong.to_owned())), ProbeSite::Edge).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert_eq!(err.code(), "UPSTREAM_FAILED", "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    assert!(!format!("{:?}", Secret::new(PASSWORD.to_owned())).contains(PASSWORD));
}

#[tokio::test]
async fn a_pooled_connection_reuses_its_statement_and_survives_a_schema_change() {
    let connectors = Connectors::new();
    let setup = source("CREATE TABLE IF NOT EXISTS cache_probe (id int4 PRIMARY KEY, v text)", &[], false, 1);
    let params: Map<String, Value> = Map::new();
    let secret = Secret::new(PASSWORD.to_owned());
    let template = |s: &DataSource| s.sql.as_ref().unwrap().templates[0].clone();
    connectors.query(&setup, &template(&setup), &params, Some(&secret)).await.unwrap();
    let fill = source("INSERT INTO cache_probe VALUES (1, 'a') ON CONFLICT DO NOTHING", &[], false, 1);
    connectors.query(&fill, &template(&fill), &params, Some(&secret)).await.unwrap();
    let read = source("SELECT * FROM cache_probe ORDER BY id", &[], true, 10);
    let first = connectors.query(&read, &template(&read), &params, Some(&secret)).await.unwrap();
    let again = connectors.query(&read, &template(&read), &params, Some(&secret)).await.unwrap();
    assert_eq!(first.data, again.data);
    assert_eq!(first.data, json!([{"id": 1, "v": "a"}]));
    // The cached plan's result type changes under it: re-prepared once.
    let alter = source("ALTER TABLE cache_probe ADD COLUMN w text", &[], false, 1);
    connectors.query(&alter, &template(&alter), &params, Some(&secret)).await.unwrap();
    let after = connectors.query(&read, &template(&read), &params, Some(&secret)).await.unwrap();
    assert_eq!(after.data, json!([{"id": 1, "v": "a", "w": null}]));
}
