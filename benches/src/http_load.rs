//! An event-driven HTTP/1.1 load client for the bench binaries.
//!
//! The first harnesses ran one OS thread per simulated client with a
//! blocking HTTP agent (`ureq`). On this 2-core machine the client shares
//! the cores with the system under test, so a client that spends a thread
//! switch and a blocking read per request takes CPU from what it measures
//! — at 256 writers it was a quarter of the machine. This client drives
//! every connection from one tokio thread (or a few, `client_threads`),
//! as `wrk`, `oha` or etcd's own `benchmark` tool do, so what is measured
//! is the server.
//!
//! Each simulated client owns its connections (one per target, opened on
//! first use, dropped and reopened after a transport error), keep-alive,
//! `TCP_NODELAY`, no pipelining: a closed loop, as before.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;

/// An `http://host:port/path` URL split into what a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`, also sent as the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses a plain-HTTP URL (the benches talk to loopback servers only).
    pub fn parse(url: &str) -> Result<Target> {
        let rest = url.strip_prefix("http://").with_context(|| format!("{url}: only http:// URLs"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        Ok(Target { authority: authority.to_owned(), path: path.to_owned() })
    }
}

/// One simulated client: its own keep-alive connection per authority.
#[derive(Debug)]
pub struct Client {
    connections: HashMap<String, SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

impl Client {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> Client {
        Client { connections: HashMap::new(), timeout }
    }

    async fn connection(&mut self, authority: &str) -> Result<&mut SendRequest<Full<Bytes>>> {
        let usable = self.connections.get(authority).is_some_and(|c| !c.is_closed());
        if !usable {
            let stream =
                TcpStream::connect(authority).await.with_context(|| format!("connect {authority}"))?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            // The connection task ends when the sender is dropped or the
            // peer closes; its error is the next request's error.
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.connections.insert(authority.to_owned(), sender);
        }
        self.connections.get_mut(authority).ok_or_else(|| anyhow!("connection to {authority} vanished"))
    }

    /// `POST` a JSON body (with a bearer key); the status and the whole
    /// response body. A transport error drops the connection, so the next
    /// call reconnects.
    pub async fn post_json(
        &mut self,
        target: &Target,
        bearer: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, Bytes)> {
        let timeout = self.timeout;
        let exchange = async {
            let sender = self.connection(&target.authority).await?;
            sender.ready().await?;
            let mut request = hyper::Request::builder()
                .method(hyper::Method::POST)
                .uri(target.path.as_str())
                .header(hyper::header::HOST, target.authority.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json");
            if let Some(key) = bearer {
                request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
            }
            let response = sender.send_request(request.body(Full::new(body))?).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, bytes))
        };
        let result = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(anyhow!("no answer within {timeout:?}")));
        if result.is_err() {
            self.connections.remove(&target.authority);
        }
        result
    }
}

/// A server that does no work: every request is answered at once with a
/// small JSON body that satisfies the agent benches' clients (201 with a
/// `run_id` for `…/runs`, 200 with an allowed `step_id` otherwise). Run on
/// this machine next to the real server, it shows what the client and
/// loopback HTTP alone cost: the ceiling no server could beat here.
/// Serves on its own thread until the process ends; returns the base URL.
pub fn spawn_floor_server() -> Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let base = format!("http://{}", listener.local_addr()?);
    let runtime = runtime(1)?;
    std::thread::Builder::new().name("floor-server".to_owned()).spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(stream),
                            hyper::service::service_fn(floor_answer),
                        )
                        .await;
                });
            }
        });
    })?;
    Ok(base)
}

/// The floor server's answer to any request (see [`spawn_floor_server`]).
async fn floor_answer(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let runs = request.uri().path().ends_with("/runs");
    let _ = request.into_body().collect().await;
    let (status, body) = if runs {
        (hyper::StatusCode::CREATED, &br#"{"run_id":"floor"}"#[..])
    } else {
        (hyper::StatusCode::OK, &br#"{"step_id":"floor-1","allowed":true,"outcome":"ALLOW"}"#[..])
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    Ok(response)
}

/// A tokio runtime for the client side: one thread unless asked for more.
pub fn runtime(client_threads: usize) -> Result<tokio::runtime::Runtime> {
    let runtime = if client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(client_threads).enable_all().build()?
    };
    Ok(runtime)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::{Client, Target, spawn_floor_server};

    /// The client against the floor server: keep-alive exchanges, the
    /// shapes the agent benches expect, and a fresh connection after a
    /// transport error instead of a client stuck on a dead one.
    #[tokio::test]
    async fn the_client_talks_to_the_floor_server_and_recovers_from_errors() {
        let base = spawn_floor_server().unwrap();
        let mut client = Client::new(Duration::from_secs(5));
        let runs = Target::parse(&format!("{base}/api/v1/runs")).unwrap();
        let (status, body) = client.post_json(&runs, Some("k"), Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!((status, &body[..]), (201, &br#"{"run_id":"floor"}"#[..]));
        let steps = Target::parse(&format!("{base}/api/v1/runs/floor/steps")).unwrap();
        for _ in 0..3 {
            let (status, body) = client.post_json(&steps, None, Bytes::from_static(b"{}")).await.unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((status, &answer["allowed"]), (200, &serde_json::Value::Bool(true)));
        }
        assert_eq!(client.connections.len(), 1, "one kept-alive connection per authority");

        // Nothing listens here: an error, and no dead connection is kept.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let nowhere = Target::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        assert!(client.post_json(&nowhere, None, Bytes::new()).await.is_err());
        assert!(!client.connections.contains_key(&nowhere.authority));
        let (status, _) = client.post_json(&steps, None, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(status, 200, "the working connection is unaffected");
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        let t = Target::parse("http://127.0.0.1:8000/api/v1/runs?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8000");
        assert_eq!(t.path, "/api/v1/runs?x=1");
        assert_eq!(Target::parse("http://h:1").unwrap().path, "/");
        assert!(Target::parse("https://h:1/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }
}
