//! MCP tools through `rmcp`, the official Rust SDK (GAP-063): stdio
//! servers started by the edge agent, one long-lived session per
//! (command, arguments, credential), shared by concurrent calls.
//!
//! Only tools the source allows are ever called (the plane gate already
//! refuses others before a connector is chosen; this is checked again
//! here). A call is bounded by the source's timeout and its result by
//! [`MAX_RESULT_BYTES`]; a session whose transport broke is dropped and
//! started again on the next call. The server starts with an empty
//! environment but `PATH` (nothing of the edge agent's own configuration
//! reaches it) plus the credential, if any, as `AOS_CONNECTOR_CREDENTIAL`
//! — never on its command line — and its stderr is discarded so
//! tenant-controlled text never lands in the agent's logs.
//! Streamable-HTTP servers are registered like stdio ones but this build
//! does not connect to them yet (`UNSUPPORTED_SOURCE`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aos_core::access::McpConnector;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
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

type Session = Arc<RunningService<RoleClient, ()>>;

/// Live sessions by a hash of (command, args, credential).
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn key(command: &str, args: &[String], credential: Option<&Secret>) -> String {
    let mut h = Sha256::new();
    h.update(command.as_bytes());
    for a in args {
        h.update([0]);
        h.update(a.as_bytes());
    }
    h.update([1]);
    h.update(credential.map(Secret::expose).unwrap_or_default().as_bytes());
    hex::encode(h.finalize())
}

impl Sessions {
    async fn session(
        &self,
        source_id: &str,
        connector: &McpConnector,
        credential: Option<&Secret>,
        timeout: Duration,
    ) -> Result<(String, Session), ConnectorError> {
        let Some(command) = connector.command.as_deref() else {
            return Err(ConnectorError::Unsupported { asset_type: "MCP (streamable HTTP)" });
        };
        let key = key(command, &connector.args, credential);
        if let Some(session) = self.live.lock().await.get(&key).filter(|s| !s.is_transport_closed()) {
            return Ok((key, Arc::clone(session)));
        }
        // Started outside the lock: a slow server delays only its own
        // callers. Two racing first calls may both start one; the second
        // replaces the first in the map.
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
            .map_err(|e| ConnectorError::Upstream(format!("cannot start MCP server `{command}`: {e}")))?;
        let session = tokio::time::timeout(timeout, ().serve(transport))
            .await
            .map_err(|_| ConnectorError::Timeout { after_ms: millis(timeout) })?
            .map_err(|e| {
                ConnectorError::Upstream(format!("MCP server of `{source_id}` failed to initialise: {e}"))
            })?;
        let session = Arc::new(session);
        self.live.lock().await.insert(key.clone(), Arc::clone(&session));
        Ok((key, session))
    }

    async fn forget(&self, key: &str) {
        self.live.lock().await.remove(key);
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
                if session.is_transport_closed() {
                    self.forget(&key).await;
                }
                return Err(ConnectorError::Upstream(format!("MCP call `{tool}` failed: {e}")));
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
            let text = match credential {
                Some(secret) if !secret.expose().is_empty() => text.replace(secret.expose(), "[redacted]"),
                _ => text,
            };
            let text: String = text.chars().take(500).collect();
            return Err(ConnectorError::Upstream(format!("MCP tool `{tool}` reported an error: {text}")));
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

    /// Connects and lists the server's tools: every allowed tool must exist.
    pub(crate) async fn probe(
        &self,
        source_id: &str,
        connector: &McpConnector,
        credential: Option<&Secret>,
    ) -> Result<String, ConnectorError> {
        let timeout = Duration::from_millis(connector.timeout_ms);
        let (key, session) = self.session(source_id, connector, credential, timeout).await?;
        let tools = match tokio::time::timeout(timeout, session.list_all_tools()).await {
            Err(_) => return Err(ConnectorError::Timeout { after_ms: millis(timeout) }),
            Ok(Err(e)) => {
                self.forget(&key).await;
                return Err(ConnectorError::Upstream(format!("listing MCP tools failed: {e}")));
            }
            Ok(Ok(tools)) => tools,
        };
        let offered: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        let missing: Vec<&str> =
            connector.allowed_tools.iter().map(String::as_str).filter(|t| !offered.contains(t)).collect();
        if !missing.is_empty() {
            return Err(ConnectorError::Config {
                source_id: source_id.to_owned(),
                problem: format!("allows tools the server does not offer: {}", missing.join(", ")),
            });
        }
        Ok(format!(
            "MCP server offers {} tools; all {} allowed tools present",
            offered.len(),
            connector.allowed_tools.len()
        ))
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
