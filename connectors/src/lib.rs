//! # aos-connectors
//!
//! Executes governed data access (issue 6, GAP-059, GAP-060): a registered
//! SQL template against SQLite or PostgreSQL, a registered HTTP endpoint,
//! and a source's verification probe (GAP-039). What to run always comes
//! from an `aos_core::access::DataSource`; the caller only supplies
//! parameter values, which are type-checked and bound (SQL) or
//! percent-encoded into their own segment (HTTP) — never spliced.
//!
//! Every call has a timeout and a size cap from the source, and reports a
//! typed [`ConnectorError`] that names what failed without echoing a
//! credential. Credentials arrive as [`Secret`], whose `Debug` is redacted.
//!
//! The edge agent uses this crate on the enforcement path after the plane
//! gate and the evaluator allowed the access; the control plane uses it
//! to probe a source before it can be enabled.

mod error;
mod http;
mod output;
mod postgres;
mod secret;
mod sqlite;

use std::time::Duration;

use aos_core::access::{DataSource, HttpEndpoint, SqlEngine, SqlTemplate, bind_params, compile_template};
use serde_json::{Map, Value};

pub use error::ConnectorError;
pub use output::{Output, doc_ids};
pub use secret::Secret;

/// Connection pools and HTTP clients shared by every access.
#[derive(Debug, Default)]
pub struct Connectors {
    sqlite: sqlite::Pool,
    postgres: postgres::Pool,
    http: http::Clients,
}

impl Connectors {
    /// Empty pools.
    pub fn new() -> Self {
        Connectors::default()
    }

    /// Runs `template` of SQL source `source` with `params`.
    pub async fn query(
        &self,
        source: &DataSource,
        template: &SqlTemplate,
        params: &Map<String, Value>,
        credential: Option<&Secret>,
    ) -> Result<Output, ConnectorError> {
        let sql = source.sql.as_ref().ok_or_else(|| ConnectorError::Config {
            source_id: source.source_id.clone(),
            problem: "is not a SQL source".to_owned(),
        })?;
        let compiled = compile_template(template).map_err(|problem| ConnectorError::Config {
            source_id: source.source_id.clone(),
            problem: format!("template `{}` {problem}", template.template_id),
        })?;
        let values = bind_params(&template.params, params)?;
        let ordered: Vec<_> = compiled.order.iter().filter_map(|i| values.get(*i).cloned()).collect();
        let timeout = Duration::from_millis(sql.timeout_ms);
        match sql.engine {
            SqlEngine::Sqlite => {
                self.sqlite
                    .query(
                        &sql.target,
                        compiled.sqlite,
                        ordered,
                        template.max_rows,
                        template.read_only,
                        timeout,
                    )
                    .await
            }
            SqlEngine::Postgres => {
                self.postgres
                    .query(
                        &sql.target,
                        credential,
                        &compiled.postgres,
                        &ordered,
                        template.max_rows,
                        template.read_only,
                        timeout,
                    )
                    .await
            }
        }
    }

    /// Calls `endpoint` of HTTP source `source` with `params` (and a JSON
    /// `body` for POST endpoints).
    pub async fn request(
        &self,
        source: &DataSource,
        endpoint: &HttpEndpoint,
        params: &Map<String, Value>,
        body: Option<Value>,
        credential: Option<&Secret>,
    ) -> Result<Output, ConnectorError> {
        let connector = source.http.as_ref().ok_or_else(|| ConnectorError::Config {
            source_id: source.source_id.clone(),
            problem: "is not an HTTP source".to_owned(),
        })?;
        let values = bind_params(&endpoint.params, params)?;
        let target = aos_core::access::render_http_target(endpoint, &values)
            .map_err(|problem| ConnectorError::Param { name: "path".to_owned(), problem })?;
        self.http.call(connector, endpoint.method, &target, body, credential).await
    }

    /// A read-only probe of `source` with `credential` (GAP-039): a
    /// description of what answered, or why it failed.
    pub async fn probe(
        &self,
        source: &DataSource,
        credential: Option<&Secret>,
    ) -> Result<String, ConnectorError> {
        if let Some(sql) = &source.sql {
            let timeout = Duration::from_millis(sql.timeout_ms);
            return match sql.engine {
                SqlEngine::Sqlite => self.sqlite.probe(&sql.target, timeout).await,
                SqlEngine::Postgres => self.postgres.probe(&sql.target, credential, timeout).await,
            };
        }
        if let Some(http) = &source.http {
            return self.http.probe(http, credential).await;
        }
        Err(ConnectorError::Unsupported { asset_type: source.asset_type.as_str() })
    }
}
