//! gRPC connections between control-plane nodes: one HTTP/2 connection per
//! peer, with `h2`'s client used directly as the tonic client's transport.
//!
//! Why not tonic's `Channel`: it sends every call through a `tower::Buffer`
//! worker task, so a call crosses two extra task hand-offs (caller → worker,
//! worker → caller) on top of the hop to the connection task. A lone Raft
//! write makes four or five peer calls (AppendEntries and the commit
//! heartbeat to each follower, and the forward when a follower took the
//! request), and on a small machine every hand-off to a parked worker
//! thread is a futex wake-up and a context switch.
//!
//! Why not hyper's HTTP/2 client: it sends a request's body from a task of
//! its own once the stream has flow-control capacity, so every unary call
//! left as three TCP writes — HEADERS, then DATA, then an empty DATA frame
//! ending the stream — each a loopback delivery and a wake-up of the peer
//! (`strace` of a 3-node cluster at one writer: ~19 `writev` per write,
//! benches/README.md). The whole request of a unary call is in memory
//! already, so it is handed to `h2` with the headers and goes out as one
//! write: HEADERS and DATA carrying END_STREAM.
//!
//! A [`PeerChannel`] does not reconnect by itself: its owner drops it when a
//! call fails or [`PeerChannel::is_closed`] says the connection is gone, and
//! connects again. Keep-alive pings close a connection whose peer stopped
//! answering (a partition), so a stale connection is noticed even while no
//! call is failing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::codegen::Bytes;
use tonic::codegen::http::{HeaderMap, Request, Response, Uri};

/// How often an idle connection is pinged.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before the connection is closed: long
/// enough that a peer busy on a small machine is not cut off.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Flow-control windows this side grants (hyper's client defaults): replies
/// are small, but a snapshot chunk's acknowledgement or a read reply must
/// not wait for window updates.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The error a call through a [`PeerChannel`] fails with.
pub type CallError = Box<dyn std::error::Error + Send + Sync>;

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
    sender: h2::client::SendRequest<Bytes>,
    origin: Uri,
    /// Set by the connection's task when the connection has ended.
    closed: Arc<AtomicBool>,
}

impl PeerChannel {
    /// Connects to `addr` (`host:port`, plain HTTP/2 as between nodes),
    /// giving up after `timeout` for the TCP connect and HTTP/2 handshake
    /// together.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<PeerChannel, ConnectError> {
        Self::connect_with(
            addr,
            timeout,
            KeepAlive { interval: KEEP_ALIVE_INTERVAL, timeout: KEEP_ALIVE_TIMEOUT },
        )
        .await
    }

    async fn connect_with(
        addr: &str,
        timeout: Duration,
        keep_alive: KeepAlive,
    ) -> Result<PeerChannel, ConnectError> {
        let fail = |reason: String| ConnectError { addr: addr.to_owned(), reason };
        let origin: Uri = format!("http://{addr}").parse().map_err(|e| fail(format!("bad address: {e}")))?;
        let handshake = async {
            let stream = TcpStream::connect(addr).await.map_err(|e| fail(e.to_string()))?;
            stream.set_nodelay(true).map_err(|e| fail(format!("TCP_NODELAY: {e}")))?;
            h2::client::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .enable_push(false)
                .handshake::<_, Bytes>(stream)
                .await
                .map_err(|e| fail(format!("HTTP/2 handshake: {e}")))
        };
        let (sender, connection) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| fail(format!("no connection within {} ms", timeout.as_millis())))??;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(addr.to_owned(), connection, keep_alive, Arc::clone(&closed)));
        Ok(PeerChannel { sender, origin, closed })
    }

    /// `http://host:port` of the peer, for the tonic client's `with_origin`.
    pub fn origin(&self) -> Uri {
        self.origin.clone()
    }

    /// Whether the connection is gone (the peer closed it, it failed, or a
    /// keep-alive ping went unanswered): connect again.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether `other` is a handle on the same connection.
    pub fn same_connection(&self, other: &PeerChannel) -> bool {
        Arc::ptr_eq(&self.closed, &other.closed)
    }
}

/// Open connections to peers by address, shared by every caller that
/// reaches the same peer: one multiplexed HTTP/2 connection per peer
/// instead of a TCP and HTTP/2 handshake per call. A closed connection (the
/// peer restarted, or a keep-alive ping went unanswered) is replaced at the
/// next [`PeerPool::get`]; a dead peer makes it fail fast (connection
/// refused).
#[derive(Debug, Clone, Default)]
pub struct PeerPool(Arc<Mutex<HashMap<String, PeerChannel>>>);

impl PeerPool {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, PeerChannel>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open connection to `addr`, connecting (within `timeout`) when
    /// there is none.
    pub async fn get(&self, addr: &str, timeout: Duration) -> Result<PeerChannel, ConnectError> {
        if let Some(open) = self.lock().get(addr).filter(|channel| !channel.is_closed()) {
            return Ok(open.clone());
        }
        let connected = PeerChannel::connect(addr, timeout).await?;
        // Callers that connected at once all leave with the first open
        // connection put here; the others' close when dropped, so a Raft
        // client that keeps its channel never holds a second connection.
        let mut pool = self.lock();
        match pool.get(addr).filter(|channel| !channel.is_closed()) {
            Some(open) => Ok(open.clone()),
            None => {
                pool.insert(addr.to_owned(), connected.clone());
                Ok(connected)
            }
        }
    }

    /// Forgets `failed` (a call on it failed or timed out), so the next
    /// [`PeerPool::get`] connects afresh — unless another caller has
    /// replaced it already.
    pub fn forget(&self, addr: &str, failed: &PeerChannel) {
        let mut pool = self.lock();
        if pool.get(addr).is_some_and(|shared| shared.same_connection(failed)) {
            pool.remove(addr);
        }
    }
}

/// How often an idle connection is pinged, and how long an answer may take.
#[derive(Debug, Clone, Copy)]
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
}

/// Runs the connection until it ends or a ping goes unanswered, then marks
/// it closed. Dropping the connection closes the socket, so calls still in
/// flight fail at once.
async fn drive(
    peer: String,
    mut connection: h2::client::Connection<TcpStream, Bytes>,
    keep_alive: KeepAlive,
    closed: Arc<AtomicBool>,
) {
    let pings = connection.ping_pong();
    let pinging = async move {
        let Some(mut pings) = pings else {
            // Pings were already taken (never, here): run without them.
            return std::future::pending::<String>().await;
        };
        loop {
            tokio::time::sleep(keep_alive.interval).await;
            match tokio::time::timeout(keep_alive.timeout, pings.ping(h2::Ping::opaque())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("keep-alive ping failed: {e}"),
                Err(_) => return format!("no answer to a ping within {} ms", keep_alive.timeout.as_millis()),
            }
        }
    };
    tokio::select! {
        ended = &mut connection => {
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "peer connection ended");
            }
        }
        reason = pinging => tracing::debug!(%peer, %reason, "peer connection dropped"),
    }
    closed.store(true, Ordering::Release);
}

impl tower_service::Service<Request<Body>> for PeerChannel {
    type Response = Response<ReplyBody>;
    type Error = CallError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ReplyBody>, CallError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.sender.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let sender = self.sender.clone();
        Box::pin(send(sender, request))
    }
}

/// Sends one call: headers and the whole body in one go (every call between
/// nodes is unary, so tonic's body is one encoded message, ready at once).
async fn send(
    sender: h2::client::SendRequest<Bytes>,
    request: Request<Body>,
) -> Result<Response<ReplyBody>, CallError> {
    let (parts, body) = request.into_parts();
    let message = body.collect().await?.to_bytes();
    let mut sender = sender.ready().await?;
    let (reply, mut outbound) = sender.send_request(Request::from_parts(parts, ()), message.is_empty())?;
    if !message.is_empty() {
        outbound.send_data(message, true)?;
    }
    let reply = reply.await?;
    Ok(reply.map(|inbound| ReplyBody { inbound, trailers_read: false }))
}

/// A reply's body: its DATA frames, then its trailers (where gRPC puts the
/// status). Received bytes are handed back to flow control as they are
/// read, so the peer's window never closes.
#[derive(Debug)]
pub struct ReplyBody {
    inbound: h2::RecvStream,
    trailers_read: bool,
}

impl HttpBody for ReplyBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if self.trailers_read {
            return Poll::Ready(None);
        }
        if let Some(data) = ready!(self.inbound.poll_data(cx)) {
            let data = data?;
            // Releasing fails only when the stream is already gone, and
            // then there is no window left to keep open.
            let _ = self.inbound.flow_control().release_capacity(data.len());
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let trailers: Option<HeaderMap> = ready!(self.inbound.poll_trailers(cx))?;
        self.trailers_read = true;
        Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.trailers_read
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
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

    /// A peer serving [`Echo`] (any message size) for the rest of the test;
    /// its address.
    async fn echo_peer() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    RaftServiceServer::new(Echo)
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX),
                )
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        addr
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
            let reply = client.append_entries(RaftPayload { json: vec![i; 100].into() }).await.unwrap();
            assert_eq!(reply.into_inner().json, vec![i; 100], "call {i} answered in kind");
        }
        // A peer's error comes back as its status, and the connection stays.
        let refused = client.vote(RaftPayload { json: Default::default() }).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unimplemented);
        assert!(!channel.is_closed());

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !channel.is_closed() {
            assert!(Instant::now() < deadline, "the channel never noticed its peer shut down");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(client.append_entries(RaftPayload { json: vec![9].into() }).await.is_err());
    }

    #[tokio::test]
    async fn payloads_larger_than_every_flow_control_window_travel_both_ways() {
        let addr = echo_peer().await;
        let channel = PeerChannel::connect(&addr, Duration::from_secs(2)).await.unwrap();
        let mut client = RaftServiceClient::with_origin(channel.clone(), channel.origin())
            .max_decoding_message_size(usize::MAX);
        // Above the 5 MiB connection window this side grants and the
        // server's own: a reply whose bytes were never handed back to flow
        // control would stall the second call.
        for i in 0..3u8 {
            let payload: Vec<u8> =
                (0..6 * 1024 * 1024 + 7u32).map(|n| u8::try_from(n % 251).unwrap() ^ i).collect();
            let call = client.append_entries(RaftPayload { json: payload.clone().into() });
            let reply = tokio::time::timeout(Duration::from_secs(30), call)
                .await
                .unwrap_or_else(|_| panic!("call {i} stalled: a flow-control window was never reopened"))
                .unwrap();
            assert!(reply.into_inner().json == payload, "call {i}: the echo differs");
        }
        assert!(!channel.is_closed());
    }

    #[tokio::test]
    async fn a_peer_that_stops_answering_pings_leaves_the_channel_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // An HTTP/2 server that completes the handshake and then is never
        // polled again: the socket stays open, nothing is answered.
        let (handshaken, frozen) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let connection = h2::server::handshake(socket).await.unwrap();
            let _ = handshaken.send(connection);
            std::future::pending::<()>().await;
        });
        let keep_alive =
            KeepAlive { interval: Duration::from_millis(50), timeout: Duration::from_millis(200) };
        let channel = PeerChannel::connect_with(&addr, Duration::from_secs(2), keep_alive).await.unwrap();
        let _held = frozen.await.unwrap();
        assert!(!channel.is_closed(), "closed before any ping went unanswered");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !channel.is_closed() {
            assert!(Instant::now() < deadline, "an unanswered ping never closed the channel");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn callers_that_connect_at_once_share_one_connection() {
        let addr = echo_peer().await;
        let pool = PeerPool::default();
        let get = || pool.get(&addr, Duration::from_secs(2));
        let (a, b, c, d) = tokio::join!(get(), get(), get(), get());
        let channels = [a.unwrap(), b.unwrap(), c.unwrap(), d.unwrap()];
        for (i, channel) in channels.iter().enumerate() {
            assert!(channel.same_connection(&channels[0]), "caller {i} kept a connection of its own");
        }
        assert!(pool.get(&addr, Duration::from_secs(2)).await.unwrap().same_connection(&channels[0]));
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
