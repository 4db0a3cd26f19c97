//! gRPC connections between control-plane nodes: one HTTP/2 connection per
//! peer, with hyper's `SendRequest` used directly as the tonic client's
//! transport.
//!
//! Why not tonic's `Channel`: it sends every call through a `tower::Buffer`
//! worker task, so a call crosses two extra task hand-offs (caller → worker,
//! worker → caller) on top of hyper's own hop to the connection task. A lone
//! Raft write makes four or five peer calls (AppendEntries and the commit
//! heartbeat to each follower, and the forward when a follower took the
//! request), and on a small machine every hand-off to a parked worker
//! thread is a futex wake-up and a context switch (measured at one writer:
//! ~47 context switches and ~2 ms of CPU per write across three nodes).
//!
//! A [`PeerChannel`] does not reconnect by itself: its owner drops it when a
//! call fails or [`PeerChannel::is_closed`] says the connection is gone, and
//! connects again. HTTP/2 keep-alive pings close a connection whose peer
//! stopped answering (a partition), so a stale connection is noticed even
//! while no call is failing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response, Uri};

/// How often an idle connection is pinged.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection is closed: long
/// enough that a peer busy on a small machine is not cut off.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer could not be connected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("connect to {addr}: {reason}")]
pub struct ConnectError {
    /// The peer's `host:port`.
    pub addr: String,
    /// What failed.
    pub reason: String,
}

/// One HTTP/2 connection to a peer; cloning shares it.
#[derive(Debug, Clone)]
pub struct PeerChannel {
    sender: SendRequest<Body>,
    origin: Uri,
}

impl PeerChannel {
    /// Connects to `addr` (`host:port`, plain HTTP/2 as between nodes),
    /// giving up after `timeout` for the TCP connect and HTTP/2 handshake
    /// together.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<PeerChannel, ConnectError> {
        let fail = |reason: String| ConnectError { addr: addr.to_owned(), reason };
        let origin: Uri = format!("http://{addr}").parse().map_err(|e| fail(format!("bad address: {e}")))?;
        let handshake = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| fail(e.to_string()))?;
            stream.set_nodelay(true).map_err(|e| fail(format!("TCP_NODELAY: {e}")))?;
            Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .handshake::<_, Body>(TokioIo::new(stream))
                .await
                .map_err(|e| fail(format!("HTTP/2 handshake: {e}")))
        };
        let (sender, connection) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| fail(format!("no connection within {} ms", timeout.as_millis())))??;
        let peer = addr.to_owned();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "peer connection ended");
            }
        });
        Ok(PeerChannel { sender, origin })
    }

    /// `http://host:port` of the peer, for the tonic client's `with_origin`.
    pub fn origin(&self) -> Uri {
        self.origin.clone()
    }

    /// Whether the connection is gone (the peer closed it, it failed, or a
    /// keep-alive ping went unanswered): connect again.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl tower_service::Service<Request<Body>> for PeerChannel {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use aos_proto::raft::RaftPayload;
    use aos_proto::raft::raft_service_client::RaftServiceClient;
    use aos_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
    use tokio::net::TcpListener;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Status};

    use super::*;

    /// Answers every call with the payload it was sent.
    struct Echo;

    #[tonic::async_trait]
    impl RaftService for Echo {
        async fn append_entries(
            &self,
            request: Request<RaftPayload>,
        ) -> Result<tonic::Response<RaftPayload>, Status> {
            Ok(tonic::Response::new(request.into_inner()))
        }

        async fn vote(&self, _: Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, Status> {
            Err(Status::unimplemented("vote"))
        }

        async fn install_snapshot(
            &self,
            _: Request<RaftPayload>,
        ) -> Result<tonic::Response<RaftPayload>, Status> {
            Err(Status::unimplemented("install_snapshot"))
        }
    }

    #[tokio::test]
    async fn calls_travel_and_a_peer_that_shuts_down_leaves_the_channel_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServiceServer::new(Echo))
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                }),
        );

        let channel = PeerChannel::connect(&addr, Duration::from_secs(2)).await.unwrap();
        assert_eq!(channel.origin().to_string(), format!("http://{addr}/"));
        let mut client = RaftServiceClient::with_origin(channel.clone(), channel.origin());
        for i in 0..3u8 {
            let reply = client.append_entries(RaftPayload { json: vec![i; 100] }).await.unwrap();
            assert_eq!(reply.into_inner().json, vec![i; 100], "call {i} answered in kind");
        }
        // A peer's error comes back as its status, and the connection stays.
        let refused = client.vote(RaftPayload { json: Vec::new() }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert!(!channel.is_closed());

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !channel.is_closed() {
            assert!(Instant::now() < deadline, "the channel never noticed its peer shut down");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(client.append_entries(RaftPayload { json: vec![9] }).await.is_err());
    }

    #[tokio::test]
    async fn connecting_to_a_port_nobody_listens_on_fails_and_names_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let error = PeerChannel::connect(&addr, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(error.addr, addr);
        assert!(error.to_string().starts_with(&format!("connect to {addr}: ")), "{error}");

        let error = PeerChannel::connect("not an address", Duration::from_secs(2)).await.unwrap_err();
        assert!(error.reason.starts_with("bad address"), "{error}");
    }
}
