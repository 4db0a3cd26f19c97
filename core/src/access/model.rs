//! The data-source catalogue (GAP-036, 037, 041, 042, 055..057) as it
//! travels in a snapshot: sources with their connector configuration, SQL
//! templates, HTTP endpoints and MCP tool lists, and sealed credentials.
//!
//! One flat shape per source (`asset_type` plus the matching connector
//! section) keeps the JSON of the admin API and the postcard of the
//! snapshot the same types, and lets validation name the wrong field.

use serde::{Deserialize, Serialize};

use crate::compile::check_id;
use crate::error::FieldError;
use crate::path::FieldPath;

use super::templates::{compile_template, path_params};

/// What kind of system a source is (GAP-036).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssetType {
    /// A SQL database behind registered templates (GAP-060).
    Sql,
    /// An HTTP API behind registered endpoints (GAP-059).
    Http,
    /// A vector store (not yet executable by the edge agent).
    Vector,
    /// A file store (not yet executable by the edge agent).
    File,
    /// An MCP server behind an allowed-tool list (GAP-063).
    Mcp,
    /// A serverless function (not yet executable by the edge agent).
    Serverless,
}

impl AssetType {
    /// The document spelling, e.g. `SQL`.
    pub fn as_str(self) -> &'static str {
        match self {
            AssetType::Sql => "SQL",
            AssetType::Http => "HTTP",
            AssetType::Vector => "VECTOR",
            AssetType::File => "FILE",
            AssetType::Mcp => "MCP",
            AssetType::Serverless => "SERVERLESS",
        }
    }
}

/// A source's lifecycle (GAP-039): `CREATED → VERIFIED → ENABLED ↔
/// DISABLED`, any of them `→ ERROR` when a probe fails. Only `ENABLED`
/// sources serve access.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SourceStatus {
    /// Registered, not yet probed.
    Created,
    /// A read-only probe with its credentials succeeded.
    Verified,
    /// Serving access.
    Enabled,
    /// Switched off by an operator.
    Disabled,
    /// The last probe failed.
    Error,
}

impl SourceStatus {
    /// The document spelling, e.g. `ENABLED`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceStatus::Created => "CREATED",
            SourceStatus::Verified => "VERIFIED",
            SourceStatus::Enabled => "ENABLED",
            SourceStatus::Disabled => "DISABLED",
            SourceStatus::Error => "ERROR",
        }
    }

    /// Whether an operator may move a source from `self` to `to`
    /// (verification results are applied separately).
    pub fn can_transition(self, to: SourceStatus) -> bool {
        matches!(
            (self, to),
            (SourceStatus::Verified, SourceStatus::Enabled)
                | (SourceStatus::Enabled, SourceStatus::Disabled)
                | (SourceStatus::Disabled, SourceStatus::Enabled)
        )
    }
}

/// A registered data source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataSource {
    /// Id, unique within the tenant.
    pub source_id: String,
    /// What it is; exactly the matching connector section is set.
    pub asset_type: AssetType,
    /// Lifecycle state.
    #[serde(default = "created")]
    pub status: SourceStatus,
    /// SQL connection and templates (`asset_type: SQL`).
    #[serde(default)]
    pub sql: Option<SqlConnector>,
    /// HTTP base URL and endpoints (`asset_type: HTTP`).
    #[serde(default)]
    pub http: Option<HttpConnector>,
    /// MCP transport and allowed tools (`asset_type: MCP`).
    #[serde(default)]
    pub mcp: Option<McpConnector>,
}

fn created() -> SourceStatus {
    SourceStatus::Created
}

/// SQL engines the gateway speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SqlEngine {
    /// SQLite file (the embedded default).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A SQL source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlConnector {
    /// Engine.
    pub engine: SqlEngine,
    /// SQLite: the database file path on the edge agent's host. PostgreSQL:
    /// a `key=value` connection string *without* a password (the password is
    /// the source's credential).
    pub target: String,
    /// Statement timeout in milliseconds (default 5,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Registered statements; no other SQL can run (GAP-060).
    #[serde(default)]
    pub templates: Vec<SqlTemplate>,
}

/// A parameterised SQL statement (GAP-060). Parameters are written
/// `:name` in the statement and bound by the engine, never spliced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlTemplate {
    /// Id, unique within the source.
    pub template_id: String,
    /// One statement with `:name` placeholders.
    pub statement: String,
    /// The placeholders' types.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// At most this many rows are returned (1..=10,000).
    pub max_rows: u32,
    /// Run in a read-only transaction (default `true`).
    #[serde(default = "yes")]
    pub read_only: bool,
}

fn yes() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn default_max_response_bytes() -> u64 {
    1 << 20
}

/// A typed parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// Name (`[a-z_][a-z0-9_]*`).
    pub name: String,
    /// Type the value must have.
    #[serde(rename = "type")]
    pub param_type: ParamType,
}

/// Parameter types.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParamType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Integer,
    /// 64-bit float.
    Float,
    /// `true` / `false`.
    Boolean,
}

impl ParamType {
    /// The document spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "STRING",
            ParamType::Integer => "INTEGER",
            ParamType::Float => "FLOAT",
            ParamType::Boolean => "BOOLEAN",
        }
    }
}

/// An HTTP source (GAP-059).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConnector {
    /// `http://` or `https://` origin plus optional path prefix; every
    /// request goes to this host and port.
    pub base_url: String,
    /// Request timeout in milliseconds (default 5,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest response body accepted, bytes (default 1 MiB).
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Registered endpoints; no other path can be requested.
    #[serde(default)]
    pub endpoints: Vec<HttpEndpoint>,
}

/// HTTP methods an endpoint may use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HttpMethod {
    /// GET.
    Get,
    /// POST (the payload's `body` is sent as JSON).
    Post,
}

impl HttpMethod {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// A registered HTTP endpoint: `{name}` segments of `path_template` are
/// filled from parameters (percent-encoded, one segment each); other
/// parameters become the query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpoint {
    /// Id, unique within the source.
    pub endpoint_id: String,
    /// Method.
    pub method: HttpMethod,
    /// Path below the base URL, starting with `/`, e.g. `/items/{id}`.
    pub path_template: String,
    /// Every parameter, path and query.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
}

/// An MCP source (GAP-063): exactly one of `command` (stdio) or `url`
/// (streamable HTTP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpConnector {
    /// Program to start for the stdio transport.
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Streamable-HTTP endpoint.
    #[serde(default)]
    pub url: Option<String>,
    /// Tools that may be called; every other tool is refused before it
    /// reaches the server.
    pub allowed_tools: Vec<String>,
    /// Per-call timeout in milliseconds (default 5,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// A source's credential as a snapshot carries it: kept apart from
/// [`DataSource`] so that no rendering of a source can include it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCredential {
    /// The source.
    pub source_id: String,
    /// The sealed secret.
    pub sealed: SealedCredential,
}

/// A credential sealed with the tenant's data key
/// ([`super::sealing::seal`]): XChaCha20-Poly1305, associated data binding
/// it to its tenant and source.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedCredential {
    /// The tenant data key it is sealed with.
    pub data_key_id: String,
    /// 24-byte nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedCredential")
            .field("data_key_id", &self.data_key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

const MAX_TIMEOUT_MS: u64 = 120_000;
const MAX_ROWS: u32 = 10_000;
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

impl DataSource {
    /// Checks the source on its own (as the admin API receives it).
    pub fn validate(&self) -> Result<(), crate::FieldErrors> {
        let mut errors = Vec::new();
        self.check(&FieldPath::ROOT, &mut errors);
        if errors.is_empty() { Ok(()) } else { Err(crate::FieldErrors(errors)) }
    }

    /// Checks the source's own fields, reporting under `path`.
    pub(crate) fn check(&self, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
        check_id(&self.source_id, &path.field("source_id"), errors);
        let sections = [
            (AssetType::Sql, self.sql.is_some(), "sql"),
            (AssetType::Http, self.http.is_some(), "http"),
            (AssetType::Mcp, self.mcp.is_some(), "mcp"),
        ];
        for (asset, present, name) in sections {
            if present && asset != self.asset_type {
                errors.push(FieldError::at(
                    &path.field(name),
                    format!("must be absent for asset_type {}", self.asset_type.as_str()),
                ));
            }
            if !present && asset == self.asset_type {
                errors.push(FieldError::at(
                    &path.field(name),
                    format!("is required for asset_type {}", asset.as_str()),
                ));
            }
        }
        if let Some(sql) = &self.sql {
            check_sql(sql, &path.field("sql"), errors);
        }
        if let Some(http) = &self.http {
            check_http(http, &path.field("http"), errors);
        }
        if let Some(mcp) = &self.mcp {
            check_mcp(mcp, &path.field("mcp"), errors);
        }
    }

    /// The SQL template `id`, if this is a SQL source that has it.
    pub fn template(&self, id: &str) -> Option<&SqlTemplate> {
        self.sql.as_ref()?.templates.iter().find(|t| t.template_id == id)
    }

    /// The HTTP endpoint `id`, if this is an HTTP source that has it.
    pub fn endpoint(&self, id: &str) -> Option<&HttpEndpoint> {
        self.http.as_ref()?.endpoints.iter().find(|e| e.endpoint_id == id)
    }

    /// Whether this is an MCP source that allows `tool`.
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.mcp.as_ref().is_some_and(|m| m.allowed_tools.iter().any(|t| t == tool))
    }
}

fn check_timeout(ms: u64, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        errors.push(FieldError::at(path, format!("must be between 1 and {MAX_TIMEOUT_MS}, got {ms}")));
    }
}

fn check_sql(sql: &SqlConnector, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    check_timeout(sql.timeout_ms, &path.field("timeout_ms"), errors);
    if sql.target.trim().is_empty() {
        errors.push(FieldError::at(&path.field("target"), "must not be empty"));
    }
    if sql.engine == SqlEngine::Postgres && postgres_target_has_password(&sql.target) {
        errors.push(FieldError::at(
            &path.field("target"),
            "must not carry a password: set it as the source's credential",
        ));
    }
    let templates = path.field("templates");
    for (i, t) in sql.templates.iter().enumerate() {
        let at = templates.index(i);
        check_id(&t.template_id, &at.field("template_id"), errors);
        if sql.templates[..i].iter().any(|o| o.template_id == t.template_id) {
            errors
                .push(FieldError::at(&at.field("template_id"), format!("{:?} is duplicated", t.template_id)));
        }
        if t.max_rows == 0 || t.max_rows > MAX_ROWS {
            errors.push(FieldError::at(
                &at.field("max_rows"),
                format!("must be between 1 and {MAX_ROWS}, got {}", t.max_rows),
            ));
        }
        check_params(&t.params, &at.field("params"), errors);
        if let Err(problem) = compile_template(t) {
            errors.push(FieldError::at(&at.field("statement"), problem));
        }
    }
}

fn check_http(http: &HttpConnector, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    check_timeout(http.timeout_ms, &path.field("timeout_ms"), errors);
    if http.max_response_bytes == 0 || http.max_response_bytes > MAX_RESPONSE_BYTES {
        errors.push(FieldError::at(
            &path.field("max_response_bytes"),
            format!("must be between 1 and {MAX_RESPONSE_BYTES}, got {}", http.max_response_bytes),
        ));
    }
    if let Some(problem) = base_url_problem(&http.base_url) {
        errors.push(FieldError::at(&path.field("base_url"), problem));
    }
    let endpoints = path.field("endpoints");
    for (i, e) in http.endpoints.iter().enumerate() {
        let at = endpoints.index(i);
        check_id(&e.endpoint_id, &at.field("endpoint_id"), errors);
        if http.endpoints[..i].iter().any(|o| o.endpoint_id == e.endpoint_id) {
            errors
                .push(FieldError::at(&at.field("endpoint_id"), format!("{:?} is duplicated", e.endpoint_id)));
        }
        check_params(&e.params, &at.field("params"), errors);
        match path_params(&e.path_template) {
            Err(problem) => errors.push(FieldError::at(&at.field("path_template"), problem)),
            Ok(names) => {
                for name in names {
                    if !e.params.iter().any(|p| p.name == name) {
                        errors.push(FieldError::at(
                            &at.field("path_template"),
                            format!("names {{{name}}} but params does not declare it"),
                        ));
                    }
                }
            }
        }
    }
}

fn check_mcp(mcp: &McpConnector, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    check_timeout(mcp.timeout_ms, &path.field("timeout_ms"), errors);
    match (&mcp.command, &mcp.url) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::at(path, "set either command (stdio) or url, not both"))
        }
        (None, None) => errors.push(FieldError::at(path, "set command (stdio) or url (streamable HTTP)")),
        (Some(c), None) if c.trim().is_empty() => {
            errors.push(FieldError::at(&path.field("command"), "must not be empty"));
        }
        (None, Some(url)) => {
            if let Some(problem) = base_url_problem(url) {
                errors.push(FieldError::at(&path.field("url"), problem));
            }
            // Arguments belong to a process; silently ignoring them would
            // let a registration mean something other than what it says.
            if !mcp.args.is_empty() {
                errors
                    .push(FieldError::at(&path.field("args"), "apply to command (stdio) only; remove them"));
            }
        }
        _ => {}
    }
    if mcp.allowed_tools.is_empty() {
        errors.push(FieldError::at(&path.field("allowed_tools"), "must list at least one tool"));
    }
    for (i, tool) in mcp.allowed_tools.iter().enumerate() {
        if tool.is_empty() || tool.len() > 128 {
            errors.push(FieldError::at(&path.field("allowed_tools").index(i), "must be 1 to 128 characters"));
        }
    }
}

fn check_params(params: &[ParamSpec], path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    for (i, p) in params.iter().enumerate() {
        let valid = p.name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && p.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && p.name.len() <= 64;
        if !valid {
            errors.push(FieldError::at(
                &path.index(i).field("name"),
                format!("{:?} must match [a-z_][a-z0-9_]* (at most 64)", p.name),
            ));
        }
        if params[..i].iter().any(|o| o.name == p.name) {
            errors.push(FieldError::at(&path.index(i).field("name"), format!("{:?} is duplicated", p.name)));
        }
    }
}

/// Whether a PostgreSQL connection string carries a password: a
/// `password` keyword (spaces around `=` allowed) or a URL with
/// `user:password@`.
fn postgres_target_has_password(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    let keyword = lower
        .match_indices("password")
        .any(|(i, _)| lower[i + "password".len()..].trim_start().starts_with('='));
    let url = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .is_some_and(|rest| {
            let authority = rest.split(['/', '?']).next().unwrap_or_default();
            authority.rsplit_once('@').is_some_and(|(userinfo, _)| userinfo.contains(':'))
        });
    keyword || url
}

/// Why `url` is not a usable base URL: scheme `http`/`https`, a host, no
/// user info, query or fragment, and no character that URL parsers disagree
/// about (whitespace, control characters, backslashes), so the host the
/// control plane checks is the host a connector reaches. The messages never
/// repeat the URL: a mistaken one may carry a secret (user info, a token in
/// the query) and field errors are returned to the caller and logged.
fn base_url_problem(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Some("must start with http:// or https://".to_owned());
    };
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Some("must not carry user info: set it as the source's credential".to_owned());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return Some("must not contain whitespace, control characters or backslashes".to_owned());
    }
    if url.contains('?') || url.contains('#') {
        return Some("must not have a query or fragment: put a token in the source's credential".to_owned());
    }
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Some("has no host".to_owned());
    }
    None
}

/// Checks a snapshot's sources (canonical order, contents) and that every
/// plane binds only sources that exist.
pub(crate) fn check_sources(
    sources: &[DataSource],
    plane_bindings: &[(String, Vec<String>)],
    errors: &mut Vec<FieldError>,
) {
    let root = FieldPath::ROOT.field("data_sources");
    for (i, s) in sources.iter().enumerate() {
        let at = root.index(i);
        if i > 0 && sources[i - 1].source_id >= s.source_id {
            errors.push(FieldError::at(
                &at.field("source_id"),
                format!("{:?} is duplicated or out of canonical order", s.source_id),
            ));
        }
        s.check(&at, errors);
    }
    let planes = FieldPath::ROOT.field("knowledge_planes");
    for (i, (plane_id, bound)) in plane_bindings.iter().enumerate() {
        for (j, source_id) in bound.iter().enumerate() {
            if sources.binary_search_by(|s| s.source_id.as_str().cmp(source_id)).is_err() {
                errors.push(FieldError::at(
                    &planes.index(i).field("bound_source_ids").index(j),
                    format!("plane {plane_id:?} binds unknown source {source_id:?}"),
                ));
            }
        }
    }
}
