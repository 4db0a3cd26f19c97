//! # aos-connectors
//!
//! Executes governed data access (issue 6, GAP-059, GAP-060, GAP-063): a
//! registered SQL template against SQLite or PostgreSQL, a registered HTTP
//! endpoint, an allowed MCP tool on a stdio or streamable-HTTP server, and
//! a source's verification probe (GAP-039). What to run always comes
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
mod mcp;
pub mod net;
mod output;
mod postgres;
mod secret;
mod sqlite;

use std::time::Duration;

use aos_core::access::{DataSource, HttpEndpoint, SqlEngine, SqlTemplate, bind_params, compile_template};
use serde_json::{Map, Value};

pub use error::ConnectorError;
pub use mcp::CREDENTIAL_ENV as MCP_CREDENTIAL_ENV;
pub use output::{Output, doc_id, doc_ids, documents};
pub use secret::Secret;

/// Connection pools and HTTP clients shared by every access.
#[derive(Debug, Default)]
pub struct Connectors {
    sqlite: sqlite::Pool,
    postgres: postgres::Pool,
    http: http::Clients,
    mcp: mcp::Sessions,
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

    /// Calls MCP `tool` of `source` with `arguments` (an allowed tool only).
    pub async fn call_tool(
        &self,
        source: &DataSource,
        tool: &str,
        arguments: &Map<String, Value>,
        credential: Option<&Secret>,
    ) -> Result<Output, ConnectorError> {
        let connector = source.mcp.as_ref().ok_or_else(|| ConnectorError::Config {
            source_id: source.source_id.clone(),
            problem: "is not an MCP source".to_owned(),
        })?;
        self.mcp.call(&source.source_id, connector, tool, arguments.clone(), credential).await
    }

    /// A read-only probe of `source` with `credential` (GAP-039): a
    /// description of what answered, or why it failed. See [`ProbeSite`]
    /// for what a probe may touch where it runs.
    pub async fn probe(
        &self,
        source: &DataSource,
        credential: Option<&Secret>,
        site: ProbeSite,
    ) -> Result<String, ConnectorError> {
        if let Some(sql) = &source.sql {
            let timeout = Duration::from_millis(sql.timeout_ms);
            return match (sql.engine, site) {
                (SqlEngine::Sqlite, ProbeSite::ControlPlane { .. }) => Ok(format!(
                    "configuration checked ({} templates); the SQLite file is opened only by the tenant's edge agents, read-only",
                    sql.templates.len()
                )),
                (SqlEngine::Sqlite, ProbeSite::Edge) => self.sqlite.probe(&sql.target, timeout).await,
                (SqlEngine::Postgres, site) => {
                    if let ProbeSite::ControlPlane { allow_private } = site {
                        postgres::check_reachable_from_control_plane(&sql.target, allow_private).await?;
                    }
                    self.postgres.probe(&sql.target, credential, timeout).await
                }
            };
        }
        if let Some(http) = &source.http {
            if let ProbeSite::ControlPlane { allow_private } = site {
                http::check_reachable_from_control_plane(&http.base_url, allow_private).await?;
            }
            return self.http.probe(http, credential).await;
        }
        if let Some(mcp) = &source.mcp {
            return match (site, mcp.url.as_deref()) {
                (ProbeSite::ControlPlane { .. }, None) => Ok(format!(
                    "configuration checked ({} allowed tools); the MCP server is started only by the tenant's edge agents",
                    mcp.allowed_tools.len()
                )),
                (ProbeSite::ControlPlane { allow_private }, Some(url)) => {
                    self.mcp
                        .probe_from_control_plane(&source.source_id, mcp, url, credential, allow_private)
                        .await
                }
                (ProbeSite::Edge, _) => self.mcp.probe(&source.source_id, mcp, credential).await,
            };
        }
        Err(ConnectorError::Unsupported { asset_type: source.asset_type.as_str() })
    }
}

/// Where a verification probe runs, which bounds what it may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSite {
    /// A shared control-plane node, on a tenant admin's request: it opens
    /// no local file and starts no process (SQLite and stdio MCP sources
    /// get a configuration check only), and reaches network hosts
    /// (PostgreSQL, HTTP and streamable-HTTP MCP sources) only at public
    /// addresses unless `allow_private` (the operator's
    /// `--alert-private-targets`).
    ControlPlane {
        /// Private, loopback and link-local addresses allowed.
        allow_private: bool,
    },
    /// Next to the workload, where the source is meant to be reached.
    Edge,
}
