//! MCP tools through `rmcp`, the official Rust SDK (GAP-063), over both
//! transports the MCP specification defines: stdio servers started by the
//! edge agent, and streamable-HTTP servers reached at a registered URL. One
//! long-lived session per (transport target, arguments, timeout,
//! credential), shared by concurrent calls.
//!
//! Only tools the source allows are ever called (the plane gate already
//! refuses others before a connector is chosen; this is checked again
//! here). A call is bounded by the source's timeout and its result by
//! [`MAX_RESULT_BYTES`]; a session whose transport broke, or whose call
//! failed below the MCP layer, is dropped and created again on the next
//! call. Error texts never hold the credential: anything the server or the
//! transport said is scrubbed of it and cut to a few hundred characters
//! before it reaches evidence, logs or an API answer.
//!
//! **stdio.** The server starts with an empty environment but `PATH`
//! (nothing of the edge agent's own configuration reaches it) plus the
//! credential, if any, as `AOS_CONNECTOR_CREDENTIAL` — never on its command
//! line — and its stderr is discarded so tenant-controlled text never lands
//! in the agent's logs.
//!
//! **Streamable HTTP.** rmcp's client transport over `reqwest` (rustls with
//! ring and the webpki roots, like the rest of the tree). The credential, if
//! any, is the bearer token: it travels only as `Authorization: Bearer …`
//! (the URL cannot carry one: sources are validated without user info or
//! query) and must be visible ASCII. Redirects are never followed (the
//! token must not be replayed elsewhere), no proxy from the environment is
//! used, connecting and every HTTP request are bounded by the source's
//! timeout, and a response body or SSE event larger than [`MAX_WIRE_BYTES`]
//! is refused before it is parsed. The standing GET stream the protocol
//! offers for server-initiated messages is not reopened once it ends (AOS
//! handles none: no sampling, roots or elicitation), so a session holds no
//! reconnect loop.
//!
//! A verification probe on the control plane starts no process (stdio
//! sources get a configuration check) but does connect to a streamable-HTTP
//! server, like it does to HTTP and PostgreSQL sources: only to public
//! addresses unless the operator allows private ones, pinned to the
//! addresses it checked, in a session closed right after it listed the
//! tools.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aos_core::access::McpConnector;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{ClientInitializeError, RoleClient, RunningService};
use rmcp::transport::common::client_side_sse::NeverRetry;
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransportConfig, StreamableHttpError};
use rmcp::transport::{
    ConfigureCommandExt, DynamicTransportError, StreamableHttpClientTransport, TokioChildProcess,
};
use rmcp::{ServiceError, ServiceExt};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::error::ConnectorError;
use crate::output::{Output, doc_ids};
use crate::secret::Secret;

/// The environment variable carrying a source's credential to its stdio
/// MCP server.
pub const CREDENTIAL_ENV: &str = "AOS_CONNECTOR_CREDENTIAL";

/// Largest tool result accepted (rendered JSON), bytes.
pub const MAX_RESULT_BYTES: usize = 1 << 20;

/// Largest HTTP response body or SSE event accepted from a streamable-HTTP
/// server, bytes, checked before anything is parsed. Larger than
/// [`MAX_RESULT_BYTES`] because a result travels inside a JSON-RPC envelope,
/// usually twice (structured and as text) and JSON-escaped; the decoded
/// result is then held to [`MAX_RESULT_BYTES`] like a stdio one.
pub const MAX_WIRE_BYTES: usize = 4 * MAX_RESULT_BYTES;

/// Bytes of a non-JSON HTTP error body kept as a diagnostic.
const MAX_ERROR_BODY_BYTES: usize = 2048;

/// Characters of server- or transport-provided text kept in an error.
const MAX_DETAIL_CHARS: usize = 500;

type Session = Arc<RunningService<RoleClient, ()>>;

/// Live sessions by a hash of what shapes them (see [`key`]).
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

/// How a source's server is reached.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// A program started by the edge agent.
    Stdio(&'a str),
    /// A streamable-HTTP endpoint.
    Http(&'a str),
}

fn target<'a>(source_id: &str, connector: &'a McpConnector) -> Result<Target<'a>, ConnectorError> {
    match (connector.command.as_deref(), connector.url.as_deref()) {
        (Some(command), None) => Ok(Target::Stdio(command)),
        (None, Some(url)) => Ok(Target::Http(url)),
        // Validation refuses both; a snapshot is validated before use, so
        // this only guards against a caller that skipped it.
        _ => Err(ConnectorError::Config {
            source_id: source_id.to_owned(),
            problem: "must set exactly one of command (stdio) and url (streamable HTTP)".to_owned(),
        }),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The session key: everything a live session was built with (the
/// transport and its target, the arguments, the timeout baked into the HTTP
/// client, the credential), hashed so the map never holds a credential.
fn key(target: Target<'_>, connector: &McpConnector, credential: Option<&Secret>) -> String {
    let mut h = Sha256::new();
    match target {
        Target::Stdio(command) => {
            h.update(b"stdio\0");
            h.update(command.as_bytes());
        }
        Target::Http(url) => {
            h.update(b"http\0");
            h.update(url.as_bytes());
        }
    }
    for a in &connector.args {
        h.update([0]);
        h.update(a.as_bytes());
    }
    h.update([1]);
    h.update(connector.timeout_ms.to_le_bytes());
    h.update([1]);
    h.update(credential.map(Secret::expose).unwrap_or_default().as_bytes());
    hex::encode(h.finalize())
}

/// `text` without the credential, cut to [`MAX_DETAIL_CHARS`] (after the
/// replacement, so a cut cannot leave part of the credential behind).
fn scrub(text: &str, credential: Option<&Secret>) -> String {
    let text = match credential {
        Some(secret) if !secret.expose().is_empty() => text.replace(secret.expose(), "[redacted]"),
        _ => text.to_owned(),
    };
    text.chars().take(MAX_DETAIL_CHARS).collect()
}

/// A failure talking to the server as a typed error: a timeout, an HTTP
/// status, a refused redirect or an oversized response when the transport
/// says so, otherwise `what` with the error's chain of causes, scrubbed of
/// the credential.
fn failure(
    what: &str,
    error: &(dyn std::error::Error + 'static),
    timeout: Duration,
    credential: Option<&Secret>,
) -> ConnectorError {
    let mut text = String::new();
    let mut next = Some(error);
    while let Some(e) = next {
        next = e.source();
        // Wrappers whose text is only the transport's type name: go on
        // with what they wrap.
        if let Some(ServiceError::TransportSend(wrapped)) = e.downcast_ref::<ServiceError>() {
            next = Some(&*wrapped.error);
            continue;
        }
        if let Some(wrapped) = e.downcast_ref::<DynamicTransportError>() {
            next = Some(&*wrapped.error);
            continue;
        }
        if let Some(http) = e.downcast_ref::<StreamableHttpError<reqwest::Error>>() {
            match http {
                StreamableHttpError::ResponseBodyTooLarge { max_size } => {
                    return ConnectorError::TooLarge { limit: u64::try_from(*max_size).unwrap_or(u64::MAX) };
                }
                StreamableHttpError::HttpStatus(status) => {
                    return ConnectorError::Status { status: status.status };
                }
                StreamableHttpError::AuthRequired(_) => return ConnectorError::Status { status: 401 },
                StreamableHttpError::InsufficientScope(_) => return ConnectorError::Status { status: 403 },
                // rmcp does not chain reqwest's error as a source; follow
                // it by hand so the root cause (refused, reset…) is named.
                StreamableHttpError::Client(inner) => {
                    next = Some(inner as &(dyn std::error::Error + 'static))
                }
                _ => {}
            }
        }
        if let Some(redirect) = e.downcast_ref::<RedirectRefused>() {
            return ConnectorError::Redirect {
                status: redirect.status,
                location: scrub(&redirect.location, credential),
            };
        }
        if e.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_timeout) {
            return ConnectorError::Timeout { after_ms: millis(timeout) };
        }
        let shown = e.to_string();
        if !text.contains(&shown) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&shown);
        }
    }
    ConnectorError::Upstream(scrub(&format!("{what}: {text}"), credential))
}

/// Why `initialize` failed, typed as [`failure`] does.
fn init_failure(
    source_id: &str,
    error: &ClientInitializeError,
    timeout: Duration,
    credential: Option<&Secret>,
) -> ConnectorError {
    let what = format!("MCP server of `{source_id}` failed to initialise");
    match error {
        // The transport's error is a field, not a `source()`: start there.
        ClientInitializeError::TransportError { error, context } => {
            failure(&format!("{what} ({context})"), &*error.error, timeout, credential)
        }
        other => failure(&what, other, timeout, credential),
    }
}

/// The rustls configuration of the HTTP transport: ring (the provider the
/// rest of the tree uses) and the webpki roots (as `ureq` uses for HTTP
/// sources), so the edge agent trusts the same CAs for both.
fn tls_config() -> Result<rustls::ClientConfig, ConnectorError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::Upstream(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why the HTTP client stopped at a redirect (read back by [`failure`]).
#[derive(Debug, thiserror::Error)]
#[error("redirect refused")]
struct RedirectRefused {
    status: u16,
    location: String,
}

/// The HTTP client of one session. `pinned`: connect `host` only to these
/// addresses (the control plane's checked resolution).
fn http_client(
    timeout: Duration,
    pinned: Option<(&str, &[SocketAddr])>,
) -> Result<reqwest::Client, ConnectorError> {
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config()?)
        // A redirect would replay the bearer token to wherever it points:
        // none is followed, and the refusal names where it pointed.
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let refused =
                RedirectRefused { status: attempt.status().as_u16(), location: attempt.url().to_string() };
            attempt.error(refused)
        }))
        .referer(false)
        // Only the registered URL is reached, never a proxy named by the
        // agent's environment (which would see a plain-HTTP token).
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent("aos-edge-agent");
    if let Some((host, addrs)) = pinned
        && !addrs.is_empty()
    {
        builder = builder.resolve_to_addrs(host, addrs);
    }
    builder.build().map_err(|e| ConnectorError::Upstream(format!("HTTP client: {e}")))
}

/// The value of `Authorization: Bearer …`, if a credential is set: a
/// bearer token is visible ASCII (RFC 6750), which also keeps it from
/// breaking out of its header.
fn bearer(credential: Option<&Secret>) -> Result<Option<String>, ConnectorError> {
    match credential.map(Secret::expose) {
        None | Some("") => Ok(None),
        Some(token) if token.bytes().all(|b| b.is_ascii_graphic()) => Ok(Some(token.to_owned())),
        Some(_) => Err(ConnectorError::Credential(
            "an MCP server over HTTP takes the credential as a bearer token: visible ASCII without spaces (set the token alone, without `Bearer `)".to_owned(),
        )),
    }
}

/// Starts a session: the stdio server's process, or the HTTP transport and
/// `initialize`.
async fn connect(
    source_id: &str,
    target: Target<'_>,
    connector: &McpConnector,
    credential: Option<&Secret>,
    timeout: Duration,
    pinned: Option<(&str, &[SocketAddr])>,
) -> Result<RunningService<RoleClient, ()>, ConnectorError> {
    let started = match target {
        Target::Stdio(command) => {
            let secret = credential.map(|s| s.expose().to_owned());
            let args = connector.args.clone();
            let path = std::env::var_os("PATH");
            let command_line = tokio::process::Command::new(command).configure(|cmd| {
                cmd.args(&args).env_clear();
                if let Some(path) = &path {
                    cmd.env("PATH", path);
                }
                if let Some(secret) = &secret {
                    cmd.env(CREDENTIAL_ENV, secret);
                }
            });
            let (transport, _stderr) = TokioChildProcess::builder(command_line)
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| {
                    ConnectorError::Upstream(scrub(
                        &format!("cannot start MCP server `{command}`: {e}"),
                        credential,
                    ))
                })?;
            tokio::time::timeout(timeout, ().serve(transport)).await
        }
        Target::Http(url) => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
                .max_json_response_size(MAX_WIRE_BYTES)
                .max_sse_event_size(MAX_WIRE_BYTES)
                .max_error_response_size(MAX_ERROR_BODY_BYTES)
                .control_request_timeout(timeout)
                .session_recovery_timeout(timeout);
            config.retry_config = Arc::new(NeverRetry::default());
            if let Some(token) = bearer(credential)? {
                config = config.auth_header(token);
            }
            let transport = StreamableHttpClientTransport::with_client(http_client(timeout, pinned)?, config);
            tokio::time::timeout(timeout, ().serve(transport)).await
        }
    };
    started
        .map_err(|_| ConnectorError::Timeout { after_ms: millis(timeout) })?
        .map_err(|e| init_failure(source_id, &e, timeout, credential))
}

/// Lists the server's tools: every allowed tool must exist.
async fn check_tools(
    session: &RunningService<RoleClient, ()>,
    connector: &McpConnector,
    source_id: &str,
    timeout: Duration,
    credential: Option<&Secret>,
) -> Result<String, ConnectorError> {
    let tools = match tokio::time::timeout(timeout, session.list_all_tools()).await {
        Err(_) => return Err(ConnectorError::Timeout { after_ms: millis(timeout) }),
        Ok(Err(e)) => return Err(failure("listing MCP tools failed", &e, timeout, credential)),
        Ok(Ok(tools)) => tools,
    };
    let offered: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    let missing: Vec<&str> =
        connector.allowed_tools.iter().map(String::as_str).filter(|t| !offered.contains(t)).collect();
    if !missing.is_empty() {
        return Err(ConnectorError::Config {
            source_id: source_id.to_owned(),
            problem: scrub(
                &format!("allows tools the server does not offer: {}", missing.join(", ")),
                credential,
            ),
        });
    }
    Ok(format!(
        "MCP server offers {} tools; all {} allowed tools present",
        offered.len(),
        connector.allowed_tools.len()
    ))
}

impl Sessions {
    async fn session(
        &self,
        source_id: &str,
        connector: &McpConnector,
        credential: Option<&Secret>,
        timeout: Duration,
    ) -> Result<(String, Session), ConnectorError> {
        let target = target(source_id, connector)?;
        let key = key(target, connector, credential);
        if let Some(session) = self.live.lock().await.get(&key).filter(|s| !s.is_transport_closed()) {
            return Ok((key, Arc::clone(session)));
        }
        // Started outside the lock: a slow server delays only its own
        // callers. Two racing first calls may both start one; the second
        // replaces the first in the map.
        let session = Arc::new(connect(source_id, target, connector, credential, timeout, None).await?);
        self.live.lock().await.insert(key.clone(), Arc::clone(&session));
        Ok((key, session))
    }

    /// Drops `broken` (unless another call already replaced it), so the
    /// next call starts a fresh session.
    async fn forget(&self, key: &str, broken: &Session) {
        let mut live = self.live.lock().await;
        if live.get(key).is_some_and(|s| Arc::ptr_eq(s, broken)) {
            live.remove(key);
        }
    }

    /// Calls `tool` with `arguments`.
    pub(crate) async fn call(
        &self,
        source_id: &str,
        connector: &McpConnector,
        tool: &str,
        arguments: Map<String, Value>,
        credential: Option<&Secret>,
    ) -> Result<Output, ConnectorError> {
        if !connector.allowed_tools.iter().any(|t| t == tool) {
            return Err(ConnectorError::Config {
                source_id: source_id.to_owned(),
                problem: format!("does not allow tool `{tool}`"),
            });
        }
        let timeout = Duration::from_millis(connector.timeout_ms);
        let (key, session) = self.session(source_id, connector, credential, timeout).await?;
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let result = match tokio::time::timeout(timeout, session.call_tool(params)).await {
            Err(_) => return Err(ConnectorError::Timeout { after_ms: millis(timeout) }),
            Ok(Err(e)) => {
                // A JSON-RPC error is the server's answer on a working
                // session; anything else (a refused connection, a dead
                // process, a malformed reply) leaves it suspect.
                if session.is_transport_closed() || !matches!(e, ServiceError::McpError(_)) {
                    self.forget(&key, &session).await;
                }
                return Err(failure(&format!("MCP call `{tool}` failed"), &e, timeout, credential));
            }
            Ok(Ok(result)) => result,
        };
        let rendered = serde_json::to_value(&result).unwrap_or(Value::Null);
        if result.is_error == Some(true) {
            let text: String = rendered["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["text"].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            return Err(ConnectorError::Upstream(scrub(
                &format!("MCP tool `{tool}` reported an error: {text}"),
                credential,
            )));
        }
        let data = match result.structured_content {
            Some(structured) => structured,
            None => text_or_content(&rendered),
        };
        let bytes = data.to_string().len();
        if bytes > MAX_RESULT_BYTES {
            return Err(ConnectorError::TooLarge { limit: MAX_RESULT_BYTES as u64 });
        }
        Ok(Output { doc_ids: doc_ids(&data), data, rows: None, truncated: false, bytes })
    }

    /// Connects (reusing the live session) and lists the server's tools:
    /// every allowed tool must exist. Where the workload runs.
    pub(crate) async fn probe(
        &self,
        source_id: &str,
        connector: &McpConnector,
        credential: Option<&Secret>,
    ) -> Result<String, ConnectorError> {
        let timeout = Duration::from_millis(connector.timeout_ms);
        let (key, session) = self.session(source_id, connector, credential, timeout).await?;
        let checked = check_tools(&session, connector, source_id, timeout, credential).await;
        if matches!(checked, Err(ConnectorError::Upstream(_) | ConnectorError::Status { .. })) {
            self.forget(&key, &session).await;
        }
        checked
    }

    /// The control plane's probe of a streamable-HTTP source: its host must
    /// resolve to public addresses only (unless `allow_private`), the
    /// connection is pinned to them, and the session is closed afterwards
    /// (a shared node keeps nothing open on a tenant's behalf).
    pub(crate) async fn probe_from_control_plane(
        &self,
        source_id: &str,
        connector: &McpConnector,
        url: &str,
        credential: Option<&Secret>,
        allow_private: bool,
    ) -> Result<String, ConnectorError> {
        let timeout = Duration::from_millis(connector.timeout_ms);
        let parsed = reqwest::Url::parse(url).map_err(|e| ConnectorError::Config {
            source_id: source_id.to_owned(),
            problem: format!("url: {e}"),
        })?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        let port = parsed.port_or_known_default().unwrap_or(443);
        let lookup = host.clone();
        let addrs =
            tokio::task::spawn_blocking(move || crate::net::resolve_public(&lookup, port, allow_private))
                .await
                .map_err(|e| ConnectorError::Upstream(format!("resolver failed: {e}")))?
                .map_err(ConnectorError::Refused)?;
        // An IP literal is connected to as written; only a name is pinned.
        let is_name = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_err();
        let pinned = is_name.then_some((host.as_str(), addrs.as_slice()));
        let mut session =
            connect(source_id, Target::Http(url), connector, credential, timeout, pinned).await?;
        let checked = check_tools(&session, connector, source_id, timeout, credential).await;
        let _ = session.close_with_timeout(timeout).await;
        checked.map(|detail| format!("{detail} (at {url})"))
    }
}

/// Text content parsed as JSON when it is JSON (one text block), the text
/// itself otherwise, or the content array.
fn text_or_content(rendered: &Value) -> Value {
    let content = rendered["content"].as_array().cloned().unwrap_or_default();
    if let [single] = content.as_slice()
        && let Some(text) = single["text"].as_str()
    {
        return serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
    }
    Value::Array(content)
}

#[cfg(test)]
mod tests {
    //! The HTTP transport against raw TCP servers that misbehave on
    //! purpose (the integration tests run a real rmcp server).

    use std::sync::Mutex as StdMutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    const TOKEN: &str = "tok-5ec7e7-31";

    fn http_source(port: u16, timeout_ms: u64) -> McpConnector {
        McpConnector {
            command: None,
            args: vec![],
            url: Some(format!("http://127.0.0.1:{port}/mcp")),
            allowed_tools: vec!["lookup_order".into()],
            timeout_ms,
        }
    }

    fn secret() -> Secret {
        Secret::new(TOKEN.to_owned())
    }

    /// A server answering every request with `response` (`None`: accept and
    /// never answer); the request heads it received.
    async fn raw_server(response: Option<String>) -> (u16, Arc<StdMutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(StdMutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                match &response {
                    Some(r) => {
                        let _ = socket.write_all(r.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                    None => held.push(socket),
                }
            }
        });
        (port, heads)
    }

    async fn call(sessions: &Sessions, connector: &McpConnector) -> ConnectorError {
        let args = Map::new();
        sessions.call("orders", connector, "lookup_order", args, Some(&secret())).await.unwrap_err()
    }

    #[tokio::test]
    async fn a_server_that_is_down_is_an_upstream_error_naming_the_cause() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = call(&Sessions::default(), &http_source(port, 2000)).await;
        let ConnectorError::Upstream(text) = &err else { panic!("{err:?}") };
        assert!(
            text.contains("failed to initialise") && text.contains(&format!("127.0.0.1:{port}")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connect"), "the cause is named: {text}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let (port, heads) = raw_server(None).await;
        let err = call(&Sessions::default(), &http_source(port, 300)).await;
        assert_eq!(err, ConnectorError::Timeout { after_ms: 300 });
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1, "{heads:?}");
        let head = heads[0].to_lowercase();
        assert!(head.starts_with("post /mcp http/1.1\r\n"), "the token is not in the URL: {head}");
        assert!(head.contains(&format!("authorization: bearer {TOKEN}")), "{head}");
    }

    #[tokio::test]
    async fn redirects_are_refused_not_followed() {
        let (elsewhere, reached) =
            raw_server(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into())).await;
        let moved = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{elsewhere}/steal?t={TOKEN}\r\ncontent-length: 0\r\n\r\n"
        );
        let (port, _) = raw_server(Some(moved)).await;
        let err = call(&Sessions::default(), &http_source(port, 2000)).await;
        assert_eq!(
            err,
            ConnectorError::Redirect {
                status: 307,
                location: format!("http://127.0.0.1:{elsewhere}/steal?t=[redacted]")
            }
        );
        assert_eq!(err.code(), "REDIRECT_REFUSED");
        assert!(reached.lock().unwrap().is_empty(), "the redirect target was never contacted");
    }

    #[tokio::test]
    async fn an_oversized_response_is_refused_before_it_is_read() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
            MAX_WIRE_BYTES + 1
        );
        let (port, _) = raw_server(Some(huge)).await;
        let err = call(&Sessions::default(), &http_source(port, 2000)).await;
        assert_eq!(err, ConnectorError::TooLarge { limit: MAX_WIRE_BYTES as u64 });
    }

    #[tokio::test]
    async fn statuses_are_typed_and_server_text_never_carries_the_token() {
        let (port, _) =
            raw_server(Some("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".into())).await;
        assert_eq!(
            call(&Sessions::default(), &http_source(port, 2000)).await,
            ConnectorError::Status { status: 503 }
        );

        let echo = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\nbad token {TOKEN}",
            10 + TOKEN.len()
        );
        let (port, _) = raw_server(Some(echo)).await;
        let err = call(&Sessions::default(), &http_source(port, 2000)).await;
        let text = err.to_string();
        assert!(text.contains("400") && text.contains("bad token [redacted]"), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }

    #[tokio::test]
    async fn a_token_unfit_for_a_header_is_refused_before_connecting() {
        let (port, heads) = raw_server(None).await;
        for bad in ["Bearer zq9", "zq9\r\nX-Injected: 1", "zq9ö"] {
            let err = Sessions::default()
                .call(
                    "orders",
                    &http_source(port, 300),
                    "lookup_order",
                    Map::new(),
                    Some(&Secret::new(bad.into())),
                )
                .await
                .unwrap_err();
            assert!(matches!(&err, ConnectorError::Credential(m) if m.contains("bearer token")), "{err:?}");
            assert!(!err.to_string().contains("zq9"), "{err}");
        }
        assert!(heads.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_control_plane_probe_refuses_private_targets_without_connecting() {
        let (port, heads) = raw_server(None).await;
        let connector = http_source(port, 300);
        let url = connector.url.clone().unwrap();
        let err = Sessions::default()
            .probe_from_control_plane("orders", &connector, &url, Some(&secret()), false)
            .await
            .unwrap_err();
        assert!(matches!(&err, ConnectorError::Refused(m) if m.contains("non-public")), "{err:?}");
        assert!(heads.lock().unwrap().is_empty(), "nothing was sent");
    }

    #[test]
    fn sessions_are_keyed_by_everything_that_shapes_them_never_holding_the_credential() {
        let c = http_source(1, 1000);
        let url = c.url.as_deref().unwrap();
        let base = key(Target::Http(url), &c, Some(&secret()));
        assert!(!base.contains(TOKEN));
        assert_eq!(base, key(Target::Http(url), &c, Some(&secret())));
        let other = Secret::new("other".into());
        let slower = McpConnector { timeout_ms: 2000, ..c.clone() };
        for different in [
            key(Target::Http(url), &c, None),
            key(Target::Http(url), &c, Some(&other)),
            key(Target::Http("http://127.0.0.1:2/mcp"), &c, Some(&secret())),
            key(Target::Http(url), &slower, Some(&secret())),
            key(Target::Stdio(url), &c, Some(&secret())),
        ] {
            assert_ne!(base, different);
        }
    }

    #[test]
    fn scrubbing_replaces_before_it_cuts() {
        let long = format!("{}{TOKEN}", "x".repeat(MAX_DETAIL_CHARS - 3));
        let scrubbed = scrub(&long, Some(&secret()));
        assert!(!scrubbed.contains("tok-"), "{scrubbed}");
        assert_eq!(scrubbed.chars().count(), MAX_DETAIL_CHARS);
        assert_eq!(scrub("plain", None), "plain");
    }
}
