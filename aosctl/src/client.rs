//! The REST client: endpoints tried in turn, bearer authentication, and
//! the server's error body mapped to [`ClientError`].
//!
//! Failover: each request goes to the endpoints in the order given. A
//! connection error or a `503` moves on to the next endpoint; when every
//! endpoint was tried and at least one answered `503`, the client waits for
//! the largest `Retry-After` it was given (at most [`MAX_RETRY_AFTER`]) and
//! makes another pass, up to [`MAX_ROUNDS`] passes. Every other answer is
//! final. Writes carry one `Idempotency-Key` across all attempts, so a
//! retried write is not applied twice.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aos_core::FieldError;
use serde::Deserialize;
use serde_json::Value;

/// Longest `Retry-After` honoured between passes.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Passes over the endpoint list when endpoints answer `503`.
pub const MAX_ROUNDS: usize = 3;
/// Largest response body read (an audit page of 1000 entries fits).
const MAX_BODY: u64 = 256 * 1024 * 1024;

/// Why a request did not produce a successful answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint answered, or all answered `503`.
    #[error("no endpoint reachable: {}", .attempts.join("; "))]
    Unavailable {
        /// What happened at each endpoint, e.g. `http://a:7070: connection refused`.
        attempts: Vec<String>,
    },
    /// The server answered with an error status.
    #[error("the server refused ({status} {code}): {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code of the body, e.g. `UNAUTHENTICATED`.
        code: String,
        /// The server's message.
        message: String,
        /// Per-field problems, when the server named them.
        field_errors: Vec<FieldError>,
    },
    /// The server answered something that is not the API's JSON.
    #[error("unexpected response from `{endpoint}`: {reason}")]
    Protocol {
        /// The endpoint that answered.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// No token was given.
    #[error("no API key: pass --token, --token-file or set AOS_TOKEN")]
    NoToken,
    /// The token file could not be read.
    #[error("cannot read the token file `{}`: {source}", .path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An endpoint is not a usable URL.
    #[error("invalid endpoint `{0}`: expected http://HOST:PORT")]
    BadEndpoint(String),
}

impl ClientError {
    /// The process exit code for this error: 69 (`EX_UNAVAILABLE`) when no
    /// endpoint could be reached, 66 for an unreadable token file, 2 for a
    /// missing token or bad endpoint (usage), otherwise 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unavailable { .. } => 69,
            ClientError::TokenFile { .. } => 66,
            ClientError::NoToken | ClientError::BadEndpoint(_) => 2,
            ClientError::Api { .. } | ClientError::Protocol { .. } => 1,
        }
    }

    /// The server's field errors, if any.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ClientError::Api { field_errors, .. } => field_errors,
            _ => &[],
        }
    }
}

/// A request body.
#[derive(Debug)]
pub enum Body<'a> {
    /// No body.
    Empty,
    /// A JSON value.
    Json(&'a Value),
    /// Raw bytes with a content type.
    Raw {
        /// e.g. `application/yaml`.
        content_type: &'a str,
        /// The bytes.
        bytes: &'a [u8],
    },
}

/// HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
}

/// Where the API key comes from.
#[derive(Clone, Default)]
pub enum Token {
    /// None given.
    #[default]
    None,
    /// The key itself.
    Value(String),
    /// A file holding the key.
    File(PathBuf),
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::None => f.write_str("None"),
            Token::Value(_) => f.write_str("Value(<redacted>)"),
            Token::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl Token {
    fn resolve(&self) -> Result<String, ClientError> {
        let secret = match self {
            Token::None => return Err(ClientError::NoToken),
            Token::Value(v) => v.trim().to_owned(),
            Token::File(path) => read_token_file(path)?,
        };
        if secret.is_empty() { Err(ClientError::NoToken) } else { Ok(secret) }
    }
}

fn read_token_file(path: &Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| ClientError::TokenFile { path: path.to_owned(), source })
}

/// A client of one AOS cluster.
pub struct Client {
    endpoints: Vec<String>,
    secret: String,
    agent: ureq::Agent,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("endpoints", &self.endpoints).field("secret", &"<redacted>").finish()
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
    #[serde(default)]
    field_errors: Vec<FieldError>,
}

/// The outcome of one attempt at one endpoint.
enum Attempt {
    /// A final answer: the 2xx body, or the refusal.
    Done(Result<Vec<u8>, ClientError>),
    /// Try the next endpoint; `Some(d)` when the server asked to retry after `d`.
    Next(String, Option<Duration>),
}

impl Client {
    /// A client for `endpoints` (URLs; `http://` is assumed when no scheme
    /// is given; trailing slashes dropped) authenticating with `token`.
    pub fn new(endpoints: &[String], token: &Token) -> Result<Self, ClientError> {
        let endpoints = endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(normalise_endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint(String::new()));
        }
        let secret = token.resolve()?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_global(Some(Duration::from_secs(60)))
            .user_agent(concat!("aosctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Client { endpoints, secret, agent })
    }

    /// `GET path?query`.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        self.request(Method::Get, path, query, &Body::Empty)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.request(Method::Post, path, &[], &Body::Json(body))
    }

    /// Sends one request with failover; the parsed JSON answer on 2xx.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body<'_>,
    ) -> Result<Value, ClientError> {
        let (endpoint, bytes) = self.send(method, path, query, body, &mut |_, _| {})?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            endpoint,
            reason: format!("a success status with a body that is not JSON: {e}"),
        })
    }

    /// `GET path?query` of a file (an export): the body's bytes, with
    /// `progress(received, total)` called as they arrive.
    pub fn download(
        &self,
        path: &str,
        query: &[(&str, String)],
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, ClientError> {
        self.send(Method::Get, path, query, &Body::Empty, progress).map(|(_, bytes)| bytes)
    }

    /// Sends one request with failover: the endpoint that answered and the
    /// 2xx body.
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body<'_>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<(String, Vec<u8>), ClientError> {
        let idempotency_key = (method != Method::Get).then(idempotency_key);
        let mut attempts = Vec::new();
        for round in 0..MAX_ROUNDS {
            let mut retry_after: Option<Duration> = None;
            for endpoint in &self.endpoints {
                let call = Call { method, path, query, body, idempotency_key: idempotency_key.as_deref() };
                match self.attempt(endpoint, &call, progress) {
                    Attempt::Done(result) => return result.map(|bytes| (endpoint.clone(), bytes)),
                    Attempt::Next(what, wait) => {
                        attempts.push(format!("{endpoint}: {what}"));
                        if let Some(wait) = wait {
                            retry_after = Some(retry_after.map_or(wait, |w| w.max(wait)));
                        }
                    }
                }
            }
            // Only a 503 is worth another pass; refused connections are not.
            let Some(wait) = retry_after else { break };
            if round + 1 < MAX_ROUNDS {
                std::thread::sleep(wait.min(MAX_RETRY_AFTER));
            }
        }
        Err(ClientError::Unavailable { attempts })
    }

    fn attempt(
        &self,
        endpoint: &str,
        call: &Call<'_>,
        progress: &mut dyn FnMut(u64, Option<u64>),
    ) -> Attempt {
        let Call { method, path, query, body, idempotency_key } = *call;
        let url = format!("{endpoint}{path}");
        let auth = format!("Bearer {}", self.secret);
        let sent = match method {
            Method::Get | Method::Delete => {
                let mut req =
                    if method == Method::Get { self.agent.get(&url) } else { self.agent.delete(&url) };
                for (k, v) in query {
                    req = req.query(*k, v);
                }
                req = req.header("Authorization", &auth).header("Accept", "application/json");
                if let Some(key) = idempotency_key {
                    req = req.header("Idempotency-Key", key);
                }
                req.call()
            }
            Method::Post | Method::Put => {
                let mut req =
                    if method == Method::Put { self.agent.put(&url) } else { self.agent.post(&url) };
                for (k, v) in query {
                    req = req.query(*k, v);
                }
                req = req.header("Authorization", &auth).header("Accept", "application/json");
                if let Some(key) = idempotency_key {
                    req = req.header("Idempotency-Key", key);
                }
                match body {
                    Body::Empty => req.send_empty(),
                    Body::Json(value) => req.send_json(value),
                    Body::Raw { content_type, bytes } => {
                        req.header("Content-Type", *content_type).send(*bytes)
                    }
                }
            }
        };
        let mut response = match sent {
            Ok(response) => response,
            Err(e) if is_transport(&e) => return Attempt::Next(e.to_string(), None),
            Err(e) => {
                return Attempt::Done(Err(ClientError::Protocol {
                    endpoint: endpoint.to_owned(),
                    reason: e.to_string(),
                }));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let total = response.body().content_length();
        let mut reader = response.body_mut().with_config().limit(MAX_BODY).reader();
        let mut bytes = Vec::with_capacity(usize::try_from(total.unwrap_or(0).min(MAX_BODY)).unwrap_or(0));
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match std::io::Read::read(&mut reader, &mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    bytes.extend_from_slice(&chunk[..n]);
                    progress(bytes.len() as u64, total);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Final: a body over the limit, or cut off, is not worth
                // asking another endpoint for (an export would be made and
                // recorded again).
                Err(e) => {
                    return Attempt::Done(Err(ClientError::Protocol {
                        endpoint: endpoint.to_owned(),
                        reason: format!("reading the body: {e}"),
                    }));
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if status == 503 {
            let why = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(b) => format!("503 {}: {}", b.error.code, b.error.message),
                Err(_) => "503 service unavailable".to_owned(),
            };
            return Attempt::Next(why, Some(retry_after.unwrap_or(Duration::from_secs(1))));
        }
        if (200..300).contains(&status) {
            return Attempt::Done(Ok(bytes));
        }
        Attempt::Done(Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => ClientError::Api {
                status,
                code: b.error.code,
                message: b.error.message,
                field_errors: b.error.field_errors,
            },
            Err(_) => ClientError::Api {
                status,
                code: "HTTP".to_owned(),
                message: if text.trim().is_empty() {
                    format!("status {status}")
                } else {
                    text.trim().to_owned()
                },
                field_errors: Vec::new(),
            },
        }))
    }
}

/// One request, as sent to each endpoint in turn.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, String)],
    body: &'a Body<'a>,
    idempotency_key: Option<&'a str>,
}

/// Errors after which another endpoint may succeed.
fn is_transport(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_)
            | ureq::Error::Protocol(_)
    )
}

fn normalise_endpoint(endpoint: &str) -> Result<String, ClientError> {
    let url = if endpoint.contains("://") { endpoint.to_owned() } else { format!("http://{endpoint}") };
    let url = url.trim_end_matches('/').to_owned();
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(ClientError::BadEndpoint(endpoint.to_owned())),
    }
}

/// Percent-encodes one path segment (an id given on the command line).
pub fn segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One key per command invocation: process id and clock, unique enough for
/// the server's idempotency log.
fn idempotency_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("aosctl-{}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised() {
        assert_eq!(normalise_endpoint("127.0.0.1:7070/").unwrap(), "http://127.0.0.1:7070");
        assert_eq!(normalise_endpoint("http://a:1").unwrap(), "http://a:1");
        assert!(normalise_endpoint("http://").is_err());
        assert!(normalise_endpoint("ftp://x").is_err());
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("pol-a_1.x"), "pol-a_1.x");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        let token = Token::Value("aos_secret".to_owned());
        assert!(!format!("{token:?}").contains("aos_secret"));
        let client = Client::new(&["http://127.0.0.1:1".to_owned()], &token).unwrap();
        assert!(!format!("{client:?}").contains("aos_secret"));
    }

    #[test]
    fn a_missing_token_is_a_usage_error() {
        let e = Client::new(&["http://127.0.0.1:1".to_owned()], &Token::Value("  ".to_owned())).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn refused_connections_are_unavailable() {
        // Port 1 on loopback is closed on any sane test machine.
        let client = Client::new(&["http://127.0.0.1:1".to_owned()], &Token::Value("k".to_owned())).unwrap();
        let e = client.get("/health", &[]).unwrap_err();
        assert_eq!(e.exit_code(), 69, "{e}");
    }
}
