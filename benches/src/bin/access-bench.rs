//! Mediation overhead for `benches/README.md` (issue 6): the same templated
//! query run directly by a client and through the edge agent's
//! `POST /api/v1/access`, against SQLite and PostgreSQL, at concurrency 1
//! and 16.
//!
//! ```sh
//! cargo build --release -p aos-edge-agent -p aos-benches
//! cargo run --release -p aos-benches --bin access-bench -- [--duration SECS] [--warmup SECS] [--no-postgres]
//! ```
//!
//! *Direct* is what a workload would do without AOS: a prepared statement
//! on its own connection (SQLite: `rusqlite`; PostgreSQL: `tokio-postgres`,
//! one query round trip). *Through the agent* adds the loopback HTTP
//! request, the plane gate and policy decision under the engine lock, the
//! connector (a read-only transaction with a statement timeout and a row
//! cap), and the evidence record fsynced before the answer. The agent is a
//! real release process with a signed snapshot holding both sources; the
//! PostgreSQL server is a real one started by
//! `connectors/tests/fixtures/postgres.sh` (trust auth on loopback).
//!
//! A second table gives the floors in the same run: a loopback HTTP round
//! trip to a server that does nothing and an fsync on the agent's disk.
//! Their sum is the least any mediation that answers over HTTP and makes
//! its evidence durable first can add on this machine.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aos_benches::cluster::{agent, fmt_duration, free_port, percentile, post_json, standalone_agent};
use aos_core::access::DataSource;
use aos_core::snapshot::{KnowledgePlane, PlaneDefault, PolicySnapshot, Sensitivity, SnapshotSigner};
use serde_json::{Value, json};

struct Args {
    duration: Duration,
    warmup: Duration,
    postgres: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { duration: Duration::from_secs(5), warmup: Duration::from_secs(1), postgres: true };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut secs = |name: &str| -> Result<Duration> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            Ok(Duration::from_secs_f64(v.parse::<f64>().with_context(|| format!("{name}: not a number"))?))
        };
        match flag.as_str() {
            "--duration" => args.duration = secs("--duration")?,
            "--warmup" => args.warmup = secs("--warmup")?,
            "--no-postgres" => args.postgres = false,
            other => bail!(
                "unknown flag {other}; usage: access-bench [--duration SECS (5)] [--warmup SECS (1)] [--no-postgres]"
            ),
        }
    }
    Ok(args)
}

const ROWS: i64 = 1_000;
const SQL_DIRECT_SQLITE: &str = "SELECT id, title FROM docs WHERE id = ?1";
const SQL_DIRECT_PG: &str = "SELECT id, title FROM docs WHERE id = $1";

fn source(id: &str, engine: &str, target: &str) -> Result<DataSource> {
    Ok(serde_json::from_value(json!({
        "source_id": id,
        "asset_type": "SQL",
        "status": "ENABLED",
        "sql": {
            "engine": engine,
            "target": target,
            "templates": [{
                "template_id": "by-id",
                "statement": "SELECT id, title FROM docs WHERE id = :id",
                "params": [{"name": "id", "type": "INTEGER"}],
                "max_rows": 10
            }]
        }
    }))?)
}

fn snapshot(tenant: &str, signer: &SnapshotSigner, sources: Vec<DataSource>) -> Result<Vec<u8>> {
    let planes = sources
        .iter()
        .map(|s| KnowledgePlane {
            plane_id: s.source_id.clone(),
            name: s.source_id.clone(),
            sensitivity: Sensitivity::Public,
            default_policy: PlaneDefault::Allow,
            bound_source_ids: vec![s.source_id.clone()],
            active: true,
        })
        .collect();
    let now = aos_edge_agent::ids::now_ms();
    let snapshot = PolicySnapshot::new(tenant, 1, now, now + 3_600_000, vec![], vec![], vec![])?
        .with_data_access(planes, sources, vec![])?;
    Ok(aos_core::sign(&snapshot, signer)?)
}

fn sqlite_db(path: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT NOT NULL)")?;
    let tx = conn.unchecked_transaction()?;
    for i in 0..ROWS {
        tx.execute("INSERT INTO docs VALUES (?1, ?2)", rusqlite::params![i, format!("document {i}")])?;
    }
    tx.commit()?;
    Ok(())
}

/// A PostgreSQL server for the run; stopped by the fixture's watchdog when
/// this process exits.
fn postgres(root: &Path) -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../connectors/tests/fixtures/postgres.sh");
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("aos-pg-bench-{}", std::process::id()));
    let status = Command::new(&script)
        .arg("start")
        .arg(&dir)
        .arg(port.to_string())
        .arg("-")
        .arg(std::process::id().to_string())
        .status()?;
    if !status.success() {
        bail!("could not start PostgreSQL with {} ({status}); pass --no-postgres", script.display());
    }
    let _ = root;
    let target = format!("host=127.0.0.1 port={port} user=aos dbname=postgres");
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&target, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE TABLE docs (id int8 PRIMARY KEY, title text NOT NULL);
                 INSERT INTO docs SELECT g, 'document ' || g FROM generate_series(0, {}) g;",
                ROWS - 1
            ))
            .await?;
        anyhow::Ok(())
    })?;
    Ok(target)
}

#[derive(Default)]
struct Samples {
    direct: Vec<Duration>,
    mediated: Vec<Duration>,
    errors: u64,
    last_error: Option<String>,
}

enum Direct {
    Sqlite(rusqlite::Connection),
    Postgres(tokio::runtime::Runtime, tokio_postgres::Client, tokio_postgres::Statement),
}

impl Direct {
    fn open(backend: &str, target: &str) -> Result<Direct> {
        if backend == "SQLite" {
            let conn =
                rusqlite::Connection::open_with_flags(target, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            return Ok(Direct::Sqlite(conn));
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (client, stmt) = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(target, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let stmt = client.prepare(SQL_DIRECT_PG).await?;
            anyhow::Ok((client, stmt))
        })?;
        Ok(Direct::Postgres(rt, client, stmt))
    }

    fn query(&mut self, id: i64) -> Result<usize> {
        match self {
            Direct::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(SQL_DIRECT_SQLITE)?;
                let rows: Vec<(i64, String)> =
                    stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
                Ok(rows.len())
            }
            Direct::Postgres(rt, client, stmt) => {
                let rows = rt.block_on(client.query(&*stmt, &[&id]))?;
                Ok(rows.len())
            }
        }
    }
}

fn load(
    base: &str,
    backend: &str,
    target: &str,
    plane: &str,
    concurrency: usize,
    args: &Args,
) -> Result<Samples> {
    let all = Mutex::new(Samples::default());
    let start = Instant::now();
    let (from, end) = (start + args.warmup, start + args.warmup + args.duration);
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..concurrency {
            let all = &all;
            handles.push(s.spawn(move || -> Result<()> {
                let http = agent(Duration::from_secs(10));
                let (status, body) = post_json(&http, &format!("{base}/api/v1/runs"), None, &json!({}))?;
                if status != 201 {
                    bail!("start run: {status} {body}");
                }
                let run: Value = serde_json::from_str(&body)?;
                let run_id = run["run_id"].as_str().context("run id")?.to_owned();
                let url = format!("{base}/api/v1/access");
                let mut direct = Direct::open(backend, target)?;
                let mut mine = Samples::default();
                let mut i = i64::try_from(t).unwrap_or(0) * 37;
                while Instant::now() < end {
                    i = (i + 1) % ROWS;
                    let t0 = Instant::now();
                    let n = direct.query(i)?;
                    let t1 = Instant::now();
                    let request = json!({"run_id": run_id, "plane": plane, "action": "query",
                        "payload": {"template_id": "by-id", "params": {"id": i}}});
                    let (status, body) = post_json(&http, &url, None, &request)?;
                    let t2 = Instant::now();
                    if status != 200 || n != 1 {
                        mine.errors += 1;
                        mine.last_error = Some(format!("{status} {body}"));
                    } else if t0 >= from {
                        mine.direct.push(t1 - t0);
                        mine.mediated.push(t2 - t1);
                    }
                }
                let mut all = all.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                all.direct.extend(mine.direct);
                all.mediated.extend(mine.mediated);
                all.errors += mine.errors;
                if mine.last_error.is_some() {
                    all.last_error = mine.last_error;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    })?;
    let mut samples = all.into_inner().map_err(|_| anyhow::anyhow!("poisoned"))?;
    samples.direct.sort_unstable();
    samples.mediated.sort_unstable();
    Ok(samples)
}

/// The two costs no mediation can avoid here, measured in the same run:
/// a loopback HTTP round trip (the same client against a server that does
/// nothing) and an fsync on the disk the agent's store lives on (the
/// evidence record must be durable before the answer, GAP-058).
fn floors(dir: &Path, iterations: usize) -> Result<Vec<(&'static str, Vec<Duration>)>> {
    let base = aos_benches::http_load::spawn_floor_server()?;
    let http = agent(Duration::from_secs(10));
    let url = format!("{base}/api/v1/access");
    let body = json!({"run_id": "floor", "plane": "p", "action": "query", "payload": {}});
    let mut round_trips = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        let (status, _) = post_json(&http, &url, None, &body)?;
        round_trips.push(t0.elapsed());
        if status != 200 {
            bail!("floor server answered {status}");
        }
    }
    let path = dir.join("fsync-floor.bin");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let record = [b'e'; 400];
    let mut fsyncs = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        std::io::Write::write_all(&mut file, &record)?;
        let t0 = Instant::now();
        file.sync_data()?;
        fsyncs.push(t0.elapsed());
    }
    // The cheapest durable write there is: the same 400 bytes rewritten in
    // place, so the file's size and extents never change (reopened without
    // O_APPEND, under which Linux's pwrite appends whatever the offset).
    drop(file);
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    let mut overwrites = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        std::os::unix::fs::FileExt::write_all_at(&file, &record, 0)?;
        let t0 = Instant::now();
        file.sync_data()?;
        overwrites.push(t0.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    round_trips.sort_unstable();
    fsyncs.sort_unstable();
    overwrites.sort_unstable();
    Ok(vec![
        ("loopback HTTP round trip (same client, a server that does nothing)", round_trips),
        ("fdatasync after a 400-byte append (the agent's disk)", fsyncs),
        ("fdatasync after rewriting 400 bytes in place (the cheapest durable write)", overwrites),
    ])
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("docs.db");
    sqlite_db(&db)?;
    let db_path = db.to_str().context("temp path is UTF-8")?.to_owned();
    let mut backends = vec![("SQLite", db_path.clone(), "sqlite-docs")];
    let mut sources = vec![source("sqlite-docs", "SQLITE", &db_path)?];
    if args.postgres {
        let target = postgres(dir.path())?;
        sources.push(source("pg-docs", "POSTGRES", &target)?);
        backends.push(("PostgreSQL", target, "pg-docs"));
    }
    let signer = SnapshotSigner::from_secret_bytes(&[9u8; 32])?;
    let file = dir.path().join("snapshot.bin");
    std::fs::write(&file, snapshot("bench", &signer, sources)?)?;
    let key: String = signer.verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let (_agent, base) = standalone_agent(dir.path(), "bench", &key, &file)?;

    println!(
        "| backend | concurrency | direct p50 | direct p99 | through agent p50 | through agent p99 | added p50 | accesses/s | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (backend, target, plane) in &backends {
        for concurrency in [1usize, 16] {
            eprintln!("{backend}, concurrency {concurrency} …");
            let s = load(&base, backend, target, plane, concurrency, &args)?;
            if let Some(e) = &s.last_error {
                eprintln!("last error: {e}");
            }
            let rate = u32::try_from(s.mediated.len()).map_or(f64::INFINITY, f64::from)
                / args.duration.as_secs_f64();
            let (d50, m50) = (percentile(&s.direct, 50), percentile(&s.mediated, 50));
            println!(
                "| {backend} | {concurrency} | {} | {} | {} | {} | {} | {rate:.0} | {} |",
                fmt_duration(d50),
                fmt_duration(percentile(&s.direct, 99)),
                fmt_duration(m50),
                fmt_duration(percentile(&s.mediated, 99)),
                fmt_duration(m50.saturating_sub(d50)),
                s.errors
            );
        }
    }
    println!();
    println!("| floor (concurrency 1, 2,000 samples) | p50 | p99 |");
    println!("|---|---:|---:|");
    for (what, samples) in floors(dir.path(), 2_000)? {
        println!(
            "| {what} | {} | {} |",
            fmt_duration(percentile(&samples, 50)),
            fmt_duration(percentile(&samples, 99))
        );
    }
    Ok(())
}
