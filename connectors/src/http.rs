//! HTTP endpoints through `ureq` (rustls), on the blocking pool.
//!
//! The URL is always the source's base URL plus the endpoint's rendered
//! path (parameters percent-encoded into their own segment or the query),
//! so a parameter cannot change the host. Redirects are never followed (a
//! 3xx is an error naming where it pointed), the body is read up to the
//! source's `max_response_bytes`, and the whole call is bounded by its
//! `timeout_ms`. The credential, if any, is sent as the `Authorization`
//! header value.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aos_core::access::{HttpConnector, HttpMethod};
use serde_json::Value;

use crate::error::ConnectorError;
use crate::output::{Output, doc_ids};
use crate::secret::Secret;

/// One `ureq` agent per timeout (agents are cheap to clone and pool their
/// connections).
#[derive(Debug, Default)]
pub(crate) struct Clients {
    agents: Mutex<HashMap<u64, ureq::Agent>>,
}

impl Clients {
    fn agent(&self, timeout_ms: u64) -> ureq::Agent {
        let build = || -> ureq::Agent {
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_millis(timeout_ms)))
                .max_redirects(0)
                .http_status_as_error(false)
                .user_agent("aos-edge-agent")
                .build()
                .into()
        };
        match self.agents.lock() {
            Ok(mut agents) => agents.entry(timeout_ms).or_insert_with(build).clone(),
            Err(_) => build(),
        }
    }

    pub(crate) async fn call(
        &self,
        connector: &HttpConnector,
        method: HttpMethod,
        target: &str,
        body: Option<Value>,
        credential: Option<&Secret>,
    ) -> Result<Output, ConnectorError> {
        let url = format!("{}{target}", connector.base_url.trim_end_matches('/'));
        let agent = self.agent(connector.timeout_ms);
        let limit = connector.max_response_bytes;
        let timeout_ms = connector.timeout_ms;
        let auth = credential.map(|s| s.expose().to_owned());
        tokio::task::spawn_blocking(move || {
            let response = match method {
                HttpMethod::Get => {
                    let mut req = agent.get(&url);
                    if let Some(auth) = &auth {
                        req = req.header("Authorization", auth);
                    }
                    req.call()
                }
                HttpMethod::Post => {
                    let mut req = agent.post(&url);
                    if let Some(auth) = &auth {
                        req = req.header("Authorization", auth);
                    }
                    req.send_json(body.unwrap_or(Value::Null))
                }
            };
            read(response, limit, timeout_ms)
        })
        .await
        .map_err(|e| ConnectorError::Upstream(format!("HTTP worker failed: {e}")))?
    }

    /// GET of the base URL with the credential: refused credentials (401,
    /// 403) and server errors fail; anything else proves the source answers.
    pub(crate) async fn probe(
        &self,
        connector: &HttpConnector,
        credential: Option<&Secret>,
    ) -> Result<String, ConnectorError> {
        let probe = HttpConnector { max_response_bytes: connector.max_response_bytes, ..connector.clone() };
        match self.call(&probe, HttpMethod::Get, "", None, credential).await {
            Ok(out) => Ok(format!("{} answered ({} bytes)", connector.base_url, out.bytes)),
            Err(ConnectorError::Status { status }) if status != 401 && status != 403 && status < 500 => {
                Ok(format!("{} answered HTTP {status}", connector.base_url))
            }
            Err(ConnectorError::Redirect { status, .. }) => {
                Ok(format!("{} answered HTTP {status}", connector.base_url))
            }
            Err(e) => Err(e),
        }
    }
}

fn read(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    limit: u64,
    timeout_ms: u64,
) -> Result<Output, ConnectorError> {
    let mut response = response.map_err(|e| match e {
        ureq::Error::Timeout(_) => ConnectorError::Timeout { after_ms: timeout_ms },
        other => ConnectorError::Upstream(format!("HTTP: {other}")),
    })?;
    let status = response.status().as_u16();
    if (300..400).contains(&status) {
        let location =
            response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        return Err(ConnectorError::Redirect { status, location });
    }
    if status >= 400 {
        return Err(ConnectorError::Status { status });
    }
    let bytes = response.body_mut().with_config().limit(limit).read_to_vec().map_err(|e| match e {
        ureq::Error::BodyExceedsLimit(_) => ConnectorError::TooLarge { limit },
        ureq::Error::Timeout(_) => ConnectorError::Timeout { after_ms: timeout_ms },
        other => ConnectorError::Upstream(format!("HTTP body: {other}")),
    })?;
    let size = bytes.len();
    let data = serde_json::from_slice::<Value>(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Output { doc_ids: doc_ids(&data), data, rows: None, truncated: false, bytes: size })
}

/// Refuses a base URL whose host is not public, unless `allow_private`
/// (for probes run on a control-plane node; see `crate::net`).
pub(crate) async fn check_reachable_from_control_plane(
    base_url: &str,
    allow_private: bool,
) -> Result<(), ConnectorError> {
    let uri: ureq::http::Uri =
        base_url.parse().map_err(|_| ConnectorError::Upstream(format!("{base_url:?} is not a valid URL")))?;
    let host = uri.host().unwrap_or_default().to_owned();
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    tokio::task::spawn_blocking(move || crate::net::check_host(&host, port, allow_private))
        .await
        .map_err(|e| ConnectorError::Upstream(format!("resolver failed: {e}")))?
        .map_err(ConnectorError::Refused)
}
