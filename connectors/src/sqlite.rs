//! SQLite through `rusqlite` (the embedded default for dev mode): one pool
//! of connections per database file and mode, used on the blocking pool.
//!
//! A read-only template runs on a connection opened `SQLITE_OPEN_READ_ONLY`
//! with `PRAGMA query_only`, and a statement SQLite itself reports as
//! writing is refused before it runs. The timeout interrupts the statement
//! through SQLite's progress handler, so a runaway query stops on time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aos_core::access::ParamValue;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value, json};

use crate::error::ConnectorError;
use crate::output::{Output, doc_ids};

/// Idle connections kept per (file, read-only).
const IDLE_PER_KEY: usize = 16;

/// Idle connections by (path, read-only).
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<(String, bool), Vec<Connection>>>,
}

impl Pool {
    fn take(&self, path: &str, read_only: bool) -> Result<Connection, ConnectorError> {
        let pooled = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.get_mut(&(path.to_owned(), read_only)).and_then(Vec::pop));
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        flags |= if read_only { OpenFlags::SQLITE_OPEN_READ_ONLY } else { OpenFlags::SQLITE_OPEN_READ_WRITE };
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| ConnectorError::Upstream(format!("cannot open SQLite database {path:?}: {e}")))?;
        if read_only {
            conn.pragma_update(None, "query_only", true).map_err(upstream)?;
        }
        Ok(conn)
    }

    fn give_back(&self, path: &str, read_only: bool, mut conn: Connection) {
        // Clear the progress handler of the finished call; a connection
        // whose handler cannot be cleared is not reused.
        if conn.progress_handler(0, None::<fn() -> bool>).is_err() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry((path.to_owned(), read_only)).or_default();
            if list.len() < IDLE_PER_KEY {
                list.push(conn);
            }
        }
    }

    pub(crate) async fn query(
        &self,
        path: &str,
        statement: String,
        values: Vec<ParamValue>,
        max_rows: u32,
        read_only: bool,
        timeout: Duration,
    ) -> Result<Output, ConnectorError> {
        let mut conn = self.take(path, read_only)?;
        let run = move || {
            let result = run(&mut conn, &statement, &values, max_rows, read_only, timeout);
            (conn, result)
        };
        // On a multi-threaded runtime the query runs in place (the worker
        // hands its other tasks to a new thread while it blocks): no hop to
        // the blocking pool and back, which costs more than a point query.
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let (conn, result) = if multi_thread {
            tokio::task::block_in_place(run)
        } else {
            tokio::task::spawn_blocking(run)
                .await
                .map_err(|e| ConnectorError::Upstream(format!("SQLite worker failed: {e}")))?
        };
        // A connection is reused only after a clean call.
        if result.is_ok() {
            self.give_back(path, read_only, conn);
        }
        result
    }

    pub(crate) async fn probe(&self, path: &str, timeout: Duration) -> Result<String, ConnectorError> {
        let out = self
            .query(
                path,
                "SELECT count(*) AS tables FROM sqlite_master WHERE type = 'table'".to_owned(),
                vec![],
                1,
                true,
                timeout,
            )
            .await?;
        let tables = out.data.get(0).and_then(|r| r.get("tables")).cloned().unwrap_or(Value::Null);
        Ok(format!("SQLite database {path:?} opened read-only; {tables} tables"))
    }
}

fn upstream(e: rusqlite::Error) -> ConnectorError {
    ConnectorError::Upstream(format!("SQLite: {e}"))
}

fn run(
    conn: &mut Connection,
    statement: &str,
    values: &[ParamValue],
    max_rows: u32,
    read_only: bool,
    timeout: Duration,
) -> Result<Output, ConnectorError> {
    let deadline = Instant::now() + timeout;
    conn.progress_handler(1_000, Some(move || Instant::now() > deadline)).map_err(upstream)?;
    conn.busy_timeout(timeout).map_err(upstream)?;
    let timed_out = |e: rusqlite::Error| {
        if Instant::now() > deadline {
            ConnectorError::Timeout { after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) }
        } else {
            upstream(e)
        }
    };
    let mut stmt = conn.prepare_cached(statement).map_err(upstream)?;
    if read_only && !stmt.readonly() {
        return Err(ConnectorError::ReadOnly);
    }
    // Every placeholder SQLite sees must be one the template binds; an
    // unbound one would silently read as NULL.
    if stmt.parameter_count() != values.len() {
        return Err(ConnectorError::Upstream(format!(
            "the statement has {} placeholders but the template binds {}",
            stmt.parameter_count(),
            values.len()
        )));
    }
    for (i, value) in values.iter().enumerate() {
        let index = i + 1;
        let bound = match value {
            ParamValue::Text(s) => stmt.raw_bind_parameter(index, s),
            ParamValue::Integer(n) => stmt.raw_bind_parameter(index, n),
            ParamValue::Float(f) => stmt.raw_bind_parameter(index, f),
            ParamValue::Boolean(b) => stmt.raw_bind_parameter(index, b),
        };
        bound.map_err(upstream)?;
    }
    if stmt.column_count() == 0 {
        let changed = stmt.raw_execute().map_err(timed_out)?;
        let data = json!({ "rows_affected": changed });
        let bytes = data.to_string().len();
        return Ok(Output { data, doc_ids: Vec::new(), rows: Some(0), truncated: false, bytes });
    }
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    let mut truncated = false;
    let cap = usize::try_from(max_rows).unwrap_or(usize::MAX);
    while let Some(row) = rows.next().map_err(timed_out)? {
        if out.len() == cap {
            truncated = true;
            break;
        }
        let mut object = Map::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let value = match row.get_ref(i).map_err(upstream)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::String(hex::encode(b)),
            };
            object.insert(name.clone(), value);
        }
        out.push(Value::Object(object));
    }
    let data = Value::Array(out);
    let bytes = data.to_string().len();
    let rows = data.as_array().map(Vec::len);
    Ok(Output { doc_ids: doc_ids(&data), data, rows, truncated, bytes })
}
