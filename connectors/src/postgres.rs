//! PostgreSQL through `tokio-postgres`: a pool of connections per
//! (connection string, password), each used by one access at a time so a
//! transaction never interleaves with another.
//!
//! Every template runs in its own transaction — `READ ONLY` for read-only
//! templates — under the source's `statement_timeout` (set once per
//! connection), as a statement prepared once per connection, and rows are fetched
//! through a portal limited to `max_rows + 1`, so a huge result is never
//! materialised. Parameters are converted to the types PostgreSQL inferred
//! for the prepared statement (an `INTEGER` placeholder gets an `i32`,
//! range-checked), then bound.
//!
//! Transport: plain TCP (`NoTls`). Sources across untrusted networks need
//! TLS, which this connector does not offer yet (ARCHITECTURE.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aos_core::access::ParamValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, NoTls, Row};

use crate::error::ConnectorError;
use crate::output::{Output, doc_ids};
use crate::secret::Secret;

const IDLE_PER_KEY: usize = 16;

/// Most statements kept prepared per connection.
const STATEMENTS_PER_CONNECTION: usize = 64;

/// Idle connections by a hash of (connection string, password).
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<String, Vec<PgConn>>>,
}

/// A pooled connection with what it already has: statements prepared on
/// it (prepared statements live as long as the session) and its
/// session-level `statement_timeout`, so a repeated query costs BEGIN,
/// bind, execute and COMMIT — no prepare and no `SET`.
struct PgConn {
    client: Client,
    statements: HashMap<String, tokio_postgres::Statement>,
    timeout_ms: u64,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConn").field("statements", &self.statements.len()).finish_non_exhaustive()
    }
}

fn pool_key(target: &str, credential: Option<&Secret>) -> String {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    h.update([0]);
    h.update(credential.map(Secret::expose).unwrap_or_default().as_bytes());
    hex::encode(h.finalize())
}

fn upstream(e: &tokio_postgres::Error) -> ConnectorError {
    // The driver's errors name the server's message and position, never the
    // connection's password.
    match e.as_db_error() {
        Some(db) => ConnectorError::Upstream(format!("PostgreSQL {}: {}", db.code().code(), db.message())),
        None => ConnectorError::Upstream(format!("PostgreSQL: {e}")),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Pool {
    async fn take(
        &self,
        target: &str,
        credential: Option<&Secret>,
        timeout: Duration,
    ) -> Result<(String, PgConn), ConnectorError> {
        let key = pool_key(target, credential);
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.get_mut(&key).and_then(Vec::pop));
        if let Some(conn) = pooled.filter(|c| !c.client.is_closed()) {
            return Ok((key, conn));
        }
        let mut config: Config = target
            .parse()
            .map_err(|e| ConnectorError::Upstream(format!("invalid PostgreSQL connection string: {e}")))?;
        if let Some(secret) = credential {
            config.password(secret.expose());
        }
        config.connect_timeout(timeout);
        let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
            .await
            .map_err(|_| ConnectorError::Timeout { after_ms: millis(timeout) })?
            .map_err(|e| upstream(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(message = "PostgreSQL connection ended", error = %e);
            }
        });
        Ok((key, PgConn { client, statements: HashMap::new(), timeout_ms: 0 }))
    }

    fn give_back(&self, key: String, conn: PgConn) {
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(key).or_default();
            if list.len() < IDLE_PER_KEY {
                list.push(conn);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn query(
        &self,
        target: &str,
        credential: Option<&Secret>,
        statement: &str,
        values: &[ParamValue],
        max_rows: u32,
        read_only: bool,
        timeout: Duration,
    ) -> Result<Output, ConnectorError> {
        let (key, mut conn) = self.take(target, credential, timeout).await?;
        let cached = conn.statements.contains_key(statement);
        let work = async {
            let first = run(&mut conn, statement, values, max_rows, read_only, timeout).await;
            // A statement prepared before the table changed fails once with
            // "cached plan must not change result type" (0A000) or is gone
            // (26000): prepare it afresh and try again, once.
            match first {
                Err(ConnectorError::Upstream(ref m))
                    if cached && (m.starts_with("PostgreSQL 0A000") || m.starts_with("PostgreSQL 26000")) =>
                {
                    conn.statements.remove(statement);
                    run(&mut conn, statement, values, max_rows, read_only, timeout).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => {
                // A failed transaction was rolled back on drop; the
                // connection is clean either way unless it broke. A failed
                // statement is prepared afresh next time (its table may
                // have changed).
                if result.is_err() {
                    conn.statements.remove(statement);
                }
                if !conn.client.is_closed() {
                    self.give_back(key, conn);
                }
                result
            }
            // The client may be mid-query: drop it rather than reuse it.
            Err(_) => Err(ConnectorError::Timeout { after_ms: millis(timeout) }),
        }
    }

    pub(crate) async fn probe(
        &self,
        target: &str,
        credential: Option<&Secret>,
        timeout: Duration,
    ) -> Result<String, ConnectorError> {
        let out = self
            .query(
                target,
                credential,
                "SELECT current_user::text AS who, version()::text AS server",
                &[],
                1,
                true,
                timeout,
            )
            .await?;
        let row = out.data.get(0).cloned().unwrap_or(Value::Null);
        let who = row.get("who").and_then(Value::as_str).unwrap_or("?");
        let server = row.get("server").and_then(Value::as_str).unwrap_or("?");
        let server: String = server.chars().take(40).collect();
        Ok(format!("connected as {who} to {server}, read-only transaction ok"))
    }
}

async fn run(
    conn: &mut PgConn,
    statement: &str,
    values: &[ParamValue],
    max_rows: u32,
    read_only: bool,
    timeout: Duration,
) -> Result<Output, ConnectorError> {
    let timeout_ms = millis(timeout).max(1);
    if conn.timeout_ms != timeout_ms {
        conn.client
            .batch_execute(&format!("SET statement_timeout = {timeout_ms}"))
            .await
            .map_err(|e| upstream(&e))?;
        conn.timeout_ms = timeout_ms;
    }
    let prepared = match conn.statements.get(statement) {
        Some(prepared) => prepared.clone(),
        None => {
            let prepared = conn.client.prepare(statement).await.map_err(|e| upstream(&e))?;
            if conn.statements.len() < STATEMENTS_PER_CONNECTION {
                conn.statements.insert(statement.to_owned(), prepared.clone());
            }
            prepared
        }
    };
    let tx = conn.client.build_transaction().read_only(read_only).start().await.map_err(|e| upstream(&e))?;
    if prepared.params().len() != values.len() {
        return Err(ConnectorError::Upstream(format!(
            "the statement has {} placeholders but the template binds {}",
            prepared.params().len(),
            values.len()
        )));
    }
    let params = convert(prepared.params(), values)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    if prepared.columns().is_empty() {
        let changed = tx.execute(&prepared, &refs).await.map_err(|e| classify(&e, timeout))?;
        tx.commit().await.map_err(|e| upstream(&e))?;
        let data = json!({ "rows_affected": changed });
        let bytes = data.to_string().len();
        return Ok(Output { data, doc_ids: Vec::new(), rows: Some(0), truncated: false, bytes });
    }
    let portal = tx.bind(&prepared, &refs).await.map_err(|e| classify(&e, timeout))?;
    let limit = i32::try_from(max_rows).unwrap_or(i32::MAX).saturating_add(1);
    let rows = tx.query_portal(&portal, limit).await.map_err(|e| classify(&e, timeout))?;
    tx.commit().await.map_err(|e| upstream(&e))?;
    let cap = usize::try_from(max_rows).unwrap_or(usize::MAX);
    let truncated = rows.len() > cap;
    let mut out = Vec::with_capacity(rows.len().min(cap));
    for row in rows.iter().take(cap) {
        out.push(row_json(row)?);
    }
    let data = Value::Array(out);
    let bytes = data.to_string().len();
    let count = data.as_array().map(Vec::len);
    Ok(Output { doc_ids: doc_ids(&data), data, rows: count, truncated, bytes })
}

fn classify(e: &tokio_postgres::Error, timeout: Duration) -> ConnectorError {
    match e.as_db_error().map(|db| db.code().code()) {
        // read_only_sql_transaction
        Some("25006") => ConnectorError::ReadOnly,
        // query_canceled: our statement_timeout fired
        Some("57014") => ConnectorError::Timeout { after_ms: millis(timeout) },
        _ => upstream(e),
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// Converts each value to the type PostgreSQL inferred for its placeholder.
fn convert(types: &[Type], values: &[ParamValue]) -> Result<Vec<Param>, ConnectorError> {
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (ty, value))| {
            let wrong = || ConnectorError::Param {
                name: format!("${}", i + 1),
                problem: format!("a {value:?} does not fit the column type {ty}"),
            };
            let p: Param = match (value, ty) {
                (ParamValue::Integer(n), &Type::INT8) => Box::new(*n),
                (ParamValue::Integer(n), &Type::INT4) => Box::new(i32::try_from(*n).map_err(|_| wrong())?),
                (ParamValue::Integer(n), &Type::INT2) => Box::new(i16::try_from(*n).map_err(|_| wrong())?),
                #[allow(clippy::cast_precision_loss)]
                (ParamValue::Integer(n), &Type::FLOAT8) => Box::new(*n as f64),
                (ParamValue::Float(f), &Type::FLOAT8) => Box::new(*f),
                #[allow(clippy::cast_possible_truncation)]
                (ParamValue::Float(f), &Type::FLOAT4) => Box::new(*f as f32),
                (ParamValue::Boolean(b), &Type::BOOL) => Box::new(*b),
                (ParamValue::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                    Box::new(s.clone())
                }
                (v, &Type::TEXT | &Type::VARCHAR) => Box::new(v.to_url_text()),
                _ => return Err(wrong()),
            };
            Ok(p)
        })
        .collect()
}

fn row_json(row: &Row) -> Result<Value, ConnectorError> {
    let mut object = Map::with_capacity(row.columns().len());
    for (i, column) in row.columns().iter().enumerate() {
        let get_err = |e: tokio_postgres::Error| upstream(&e);
        let value = match *column.type_() {
            Type::BOOL => json!(row.try_get::<_, Option<bool>>(i).map_err(get_err)?),
            Type::INT2 => json!(row.try_get::<_, Option<i16>>(i).map_err(get_err)?),
            Type::INT4 => json!(row.try_get::<_, Option<i32>>(i).map_err(get_err)?),
            Type::INT8 => json!(row.try_get::<_, Option<i64>>(i).map_err(get_err)?),
            Type::FLOAT4 => json!(row.try_get::<_, Option<f32>>(i).map_err(get_err)?),
            Type::FLOAT8 => json!(row.try_get::<_, Option<f64>>(i).map_err(get_err)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                json!(row.try_get::<_, Option<String>>(i).map_err(get_err)?)
            }
            ref other => {
                return Err(ConnectorError::Upstream(format!(
                    "column `{}` has type {other}, which the gateway does not render; cast it to text in the template",
                    column.name()
                )));
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    Ok(Value::Object(object))
}

/// Refuses a PostgreSQL target that is a Unix socket or a non-public host,
/// unless `allow_private` (for probes run on a control-plane node).
pub(crate) async fn check_reachable_from_control_plane(
    target: &str,
    allow_private: bool,
) -> Result<(), ConnectorError> {
    let config: Config = target
        .parse()
        .map_err(|e| ConnectorError::Upstream(format!("invalid PostgreSQL connection string: {e}")))?;
    let ports = config.get_ports().to_vec();
    let mut hosts = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        match host {
            tokio_postgres::config::Host::Tcp(name) => {
                let port = ports.get(i).or_else(|| ports.first()).copied().unwrap_or(5432);
                hosts.push((name.clone(), port));
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) if !allow_private => {
                return Err(ConnectorError::Refused(
                    "a Unix-socket target is local to the control-plane node; refused (the operator may allow it with --alert-private-targets)".to_owned(),
                ));
            }
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(_) => {}
        }
    }
    tokio::task::spawn_blocking(move || {
        hosts.iter().try_for_each(|(host, port)| crate::net::check_host(host, *port, allow_private))
    })
    .await
    .map_err(|e| ConnectorError::Upstream(format!("resolver failed: {e}")))?
    .map_err(ConnectorError::Refused)
}
