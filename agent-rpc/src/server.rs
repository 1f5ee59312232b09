//! The agent's side: [`Server`] answers calls with a [`Handler`].
//!
//! The server owns one ROUTER socket. Each authenticated request is decoded
//! and handled in its own task, so a slow `create_kernels` does not hold up a
//! `health`; the answer goes back through the ROUTER to the peer that asked.
//! At most [`ServerConfig::max_in_flight`] requests are handled at once;
//! beyond that a request is answered [`RemoteError::Unavailable`] at once.
//!
//! **Refused without an answer** (logged, counted in
//! `agent_rpc_rejected_total{side="server", reason}` and in
//! [`Server::rejections`]): malformed frames, bad MACs, stale or replayed
//! messages, responses sent to the server, and requests whose deadline had
//! passed on arrival.
//!
//! **Answered with an error**: a request of another protocol version
//! ([`RemoteError::VersionMismatch`], not read further), an authenticated
//! body that does not decode ([`RemoteError::InvalidArgument`]), overload
//! ([`RemoteError::Unavailable`]), a panicking handler
//! ([`RemoteError::Internal`]).
//!
//! **At most once per idempotency key.** State-changing requests run through
//! an [`IdempotencyCache`] keyed by [`Request::idempotency_scope`]: a repeat
//! of a finished call gets the first answer, a repeat of a running call waits
//! for it. Transient errors ([`RemoteError::is_retryable`]) are not
//! remembered, so their retry runs again.
//!
//! A handler is not cancelled when the caller's deadline passes: stopping a
//! half-created container midway would leave worse debris than finishing it,
//! and the finished answer is what the caller's retry (same key) picks up.

use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use tmq::AsZmqSocket;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use crate::auth::{Authenticator, RejectReason, Rejections};
use crate::error::{RemoteError, ServerError};
use crate::idempotency::{IdempotencyCache, Outcome};
use crate::ops::{ReplyBody, Request, Response};
use crate::transport::{self, Outgoing, Pump};
use crate::wire::{self, ClusterKey, Header, Kind, PROTOCOL_VERSION};

/// What an agent does with a request. Implement it with an `async fn`:
///
/// ```
/// use agent_rpc::{Handler, RemoteError, Request, Response};
///
/// struct Agent;
///
/// impl Handler for Agent {
///     async fn handle(&self, request: Request) -> Result<Response, RemoteError> {
///         Err(RemoteError::Unimplemented { message: request.name().into() })
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Called concurrently, once per request (once per
    /// idempotency scope for state-changing requests).
    fn handle(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Response, RemoteError>> + Send;
}

/// Settings of a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The cluster key every message is signed with.
    pub cluster_key: ClusterKey,
    /// How far a request's timestamp may be from this host's clock. Default 30 s.
    pub auth_window: Duration,
    /// Most request nonces remembered (replay guard). When full, requests
    /// older than the oldest remembered one are refused. Default 262,144.
    pub nonce_cache_capacity: usize,
    /// Largest body accepted or sent, in bytes; a larger frame makes libzmq
    /// drop the peer's connection. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Most requests handled at once; more are answered `Unavailable`.
    /// Default 1,024.
    pub max_in_flight: usize,
    /// Most answers of state-changing calls remembered. Default 100,000.
    pub idempotency_capacity: usize,
    /// How long such an answer is remembered. Default 1 hour.
    pub idempotency_ttl: Duration,
    /// On shutdown, how long running requests may still finish and be
    /// answered. Default 5 s.
    pub shutdown_grace: Duration,
    /// Most answers waiting for the socket. Default 4,096.
    pub queue_depth: usize,
}

impl ServerConfig {
    /// The defaults, with `cluster_key`.
    pub fn new(cluster_key: ClusterKey) -> ServerConfig {
        ServerConfig {
            cluster_key,
            auth_window: Duration::from_secs(30),
            nonce_cache_capacity: 262_144,
            max_message_bytes: 16 * 1024 * 1024,
            max_in_flight: 1024,
            idempotency_capacity: 100_000,
            idempotency_ttl: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(5),
            queue_depth: 4096,
        }
    }
}

/// A bound, not yet serving, agent RPC endpoint.
pub struct Server {
    socket: tmq::router::Router,
    endpoint: String,
    config: ServerConfig,
    rejections: Rejections,
    cache: IdempotencyCache<ReplyBody>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// Remember an answer unless retrying may change it.
fn remember(reply: &ReplyBody) -> bool {
    match reply {
        Ok(_) => true,
        Err(e) => !e.is_retryable(),
    }
}

impl Server {
    /// Binds a ROUTER socket at `endpoint` (`tcp://host:port`; port `*` or
    /// `0` picks a free one, see [`local_endpoint`](Self::local_endpoint)).
    /// Must be called inside a Tokio runtime.
    pub fn bind(endpoint: &str, config: ServerConfig) -> Result<Server, ServerError> {
        let fail = |message: String| ServerError::Bind {
            endpoint: endpoint.to_owned(),
            message,
        };
        tokio::runtime::Handle::try_current()
            .map_err(|e| fail(format!("no Tokio runtime: {e}")))?;
        let max_frame = i64::try_from(config.max_message_bytes).unwrap_or(i64::MAX);
        let endpoint = match endpoint.strip_suffix(":0") {
            Some(host) if endpoint.starts_with("tcp://") => format!("{host}:*"),
            _ => endpoint.to_owned(),
        };
        let socket = tmq::router(&transport::context())
            .set_linger(1000)
            .set_maxmsgsize(max_frame)
            .set_tcp_keepalive(1)
            .set_tcp_keepalive_idle(60)
            .set_tcp_keepalive_intvl(20)
            .set_tcp_keepalive_cnt(3)
            .bind(&endpoint)
            .map_err(|e| fail(e.to_string()))?;
        let local = match socket.get_socket().get_last_endpoint() {
            Ok(Ok(s)) => s,
            _ => endpoint.clone(),
        };
        let cache = IdempotencyCache::with_policy(
            config.idempotency_capacity,
            config.idempotency_ttl,
            remember,
        );
        Ok(Server {
            socket,
            endpoint: local,
            config,
            rejections: Rejections::default(),
            cache,
        })
    }

    /// The endpoint really bound, e.g. `tcp://127.0.0.1:40123` after binding
    /// port `*`.
    pub fn local_endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Messages this server dropped unanswered, by reason.
    pub fn rejections(&self) -> Rejections {
        self.rejections.clone()
    }

    /// The cache of answers to state-changing calls.
    pub fn idempotency_cache(&self) -> IdempotencyCache<ReplyBody> {
        self.cache.clone()
    }

    /// Serves requests with `handler` until `shutdown` completes; then stops
    /// reading, lets running requests finish and be answered (within
    /// [`ServerConfig::shutdown_grace`]), and closes the socket.
    pub async fn serve<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (replies_tx, replies_rx) = mpsc::unbounded_channel();
        let config = self.config;
        let mut driver = ServerLoop {
            endpoint: self.endpoint,
            pump: Pump::new(self.socket, config.queue_depth, "server"),
            auth: Authenticator::new(
                config.cluster_key.clone(),
                config.max_message_bytes,
                config.auth_window,
                config.nonce_cache_capacity,
            ),
            rejections: self.rejections,
            shared: Arc::new(Shared {
                handler,
                key: config.cluster_key,
                cache: self.cache,
                max_body: config.max_message_bytes,
            }),
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            max_in_flight: config.max_in_flight.max(1),
            replies_tx: Some(replies_tx),
            replies_rx,
            tasks: JoinSet::new(),
            shutdown: Box::pin(shutdown),
            grace: config.shutdown_grace,
            stopping: None,
        };
        tracing::info!(endpoint = %driver.endpoint, "agent RPC server serving");
        let result = poll_fn(|cx| driver.poll_run(cx)).await;
        tracing::info!(endpoint = %driver.endpoint, "agent RPC server stopped");
        result
    }

    /// Serves in a background task; see [`serve`](Self::serve). Stop it with
    /// [`ServerHandle::shutdown`] (dropping the handle stops it too).
    pub fn spawn<H: Handler>(self, handler: Arc<H>) -> ServerHandle {
        let (stop, stopped) = oneshot::channel::<()>();
        let endpoint = self.endpoint.clone();
        let rejections = self.rejections.clone();
        let cache = self.cache.clone();
        let task = tokio::spawn(self.serve(handler, async move {
            let _ = stopped.await;
        }));
        ServerHandle {
            endpoint,
            rejections,
            cache,
            stop: Some(stop),
            task,
        }
    }
}

/// A server running in the background. Dropping it stops the server.
#[derive(Debug)]
pub struct ServerHandle {
    endpoint: String,
    rejections: Rejections,
    cache: IdempotencyCache<ReplyBody>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    /// The endpoint really bound.
    pub fn local_endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Messages the server dropped unanswered, by reason.
    pub fn rejections(&self) -> Rejections {
        self.rejections.clone()
    }

    /// The cache of answers to state-changing calls.
    pub fn idempotency_cache(&self) -> IdempotencyCache<ReplyBody> {
        self.cache.clone()
    }

    /// Stops the server gracefully and waits until it has stopped.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Task(e.to_string())),
        }
    }
}

/// What every request task needs.
struct Shared<H> {
    handler: Arc<H>,
    key: ClusterKey,
    cache: IdempotencyCache<ReplyBody>,
    max_body: usize,
}

/// An answer on its way to the socket: the peer's routing id and the frames.
type Reply = (Vec<u8>, Vec<Vec<u8>>);

/// The socket task of a server.
struct ServerLoop<H> {
    endpoint: String,
    pump: Pump<tmq::router::Router>,
    auth: Authenticator,
    rejections: Rejections,
    shared: Arc<Shared<H>>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    replies_tx: Option<mpsc::UnboundedSender<Reply>>,
    replies_rx: mpsc::UnboundedReceiver<Reply>,
    tasks: JoinSet<()>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    grace: Duration,
    /// Set once shutdown began: when the grace period ends.
    stopping: Option<Pin<Box<Sleep>>>,
}

/// Most steps the socket task takes before yielding to other tasks.
const BUDGET: usize = 256;

impl<H: Handler> ServerLoop<H> {
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ServerError>> {
        for _ in 0..BUDGET {
            let mut progress = false;

            let mut replies_done = false;
            for _ in 0..64 {
                match self.replies_rx.poll_recv(cx) {
                    Poll::Ready(Some((peer, frames))) => {
                        progress = true;
                        self.send(peer, frames);
                    }
                    Poll::Ready(None) => {
                        replies_done = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            self.pump.poll_send(cx);

            if self.stopping.is_none() {
                match self.pump.poll_recv(cx) {
                    Poll::Ready(Some(Ok(msg))) => {
                        progress = true;
                        self.on_message(transport::frames_of(msg));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.tasks.abort_all();
                        return Poll::Ready(Err(ServerError::Socket(e.to_string())));
                    }
                    Poll::Ready(None) => {
                        self.tasks.abort_all();
                        return Poll::Ready(Err(ServerError::Socket("socket closed".into())));
                    }
                    Poll::Pending => {}
                }
                if self.shutdown.as_mut().poll(cx).is_ready() {
                    progress = true;
                    tracing::info!(endpoint = %self.endpoint, in_flight = self.tasks.len(), "agent RPC server shutting down");
                    self.replies_tx = None;
                    self.stopping = Some(Box::pin(tokio::time::sleep(self.grace)));
                }
            }

            while let Some(done) = self.tasks.try_join_next() {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(endpoint = %self.endpoint, "agent RPC request task panicked");
                }
            }

            if let Some(grace) = self.stopping.as_mut() {
                // Every task has answered and the answers are sent: done.
                if replies_done && self.pump.is_idle() {
                    return Poll::Ready(Ok(()));
                }
                if grace.as_mut().poll(cx).is_ready() {
                    tracing::warn!(endpoint = %self.endpoint, abandoned = self.tasks.len(), "agent RPC shutdown grace over; abandoning running requests");
                    self.tasks.abort_all();
                    return Poll::Ready(Ok(()));
                }
            }

            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn send(&mut self, peer: Vec<u8>, frames: Vec<Vec<u8>>) {
        let mut all = Vec::with_capacity(frames.len() + 1);
        all.push(peer);
        all.extend(frames);
        self.pump.enqueue(Outgoing {
            frames: transport::multipart(all),
            deadline: None,
        });
    }

    fn reply_now(&mut self, peer: Vec<u8>, request_id: u64, reply: &ReplyBody) {
        let frames = seal_reply(&self.shared.key, request_id, reply, self.shared.max_body);
        self.send(peer, frames);
    }

    fn on_message(&mut self, mut frames: Vec<Vec<u8>>) {
        // A ROUTER puts the peer's routing id in front of the three frames.
        if frames.len() != wire::FRAMES + 1 {
            let peer = frames.first().map(|p| peer_name(p)).unwrap_or_default();
            self.rejections
                .record("server", RejectReason::Malformed, &peer);
            return;
        }
        let peer = frames.remove(0);
        let header = match self.auth.accept(&frames) {
            Ok(h) => h,
            Err(reason) => {
                self.rejections.record("server", reason, &peer_name(&peer));
                return;
            }
        };
        if header.kind != Kind::Request {
            self.rejections
                .record("server", RejectReason::UnexpectedKind, &peer_name(&peer));
            return;
        }
        if header.version != PROTOCOL_VERSION {
            tracing::warn!(
                peer = %peer_name(&peer),
                supported = PROTOCOL_VERSION,
                received = header.version,
                "agent RPC request of another protocol version refused"
            );
            metrics::counter!("agent_rpc_version_mismatch_total").increment(1);
            let reply = Err(RemoteError::VersionMismatch {
                supported: PROTOCOL_VERSION,
                received: header.version,
            });
            self.reply_now(peer, header.request_id, &reply);
            return;
        }
        if header.deadline_ms != 0 && header.deadline_ms <= wire::now_ms() {
            self.rejections
                .record("server", RejectReason::Expired, &peer_name(&peer));
            return;
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            let reply = Err(RemoteError::unavailable(format!(
                "the agent is handling {} requests already",
                self.max_in_flight
            )));
            self.reply_now(peer, header.request_id, &reply);
            return;
        };
        let Some(replies) = self.replies_tx.clone() else {
            return;
        };
        let body = std::mem::take(&mut frames[1]);
        let shared = Arc::clone(&self.shared);
        self.tasks.spawn(async move {
            let _permit = permit;
            let reply = answer(&shared, &body, &header).await;
            let frames = seal_reply(&shared.key, header.request_id, &reply, shared.max_body);
            let _ = replies.send((peer, frames));
        });
    }
}

/// Decodes a request and runs the handler on it (once per idempotency scope).
async fn answer<H: Handler>(shared: &Shared<H>, body: &[u8], header: &Header) -> ReplyBody {
    let request: Request = match wire::decode_body(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(request_id = header.request_id, error = %e, "undecodable agent RPC request");
            return Err(RemoteError::invalid_argument(e.to_string()));
        }
    };
    let operation = request.name();
    let started = Instant::now();
    let reply = match request.idempotency_scope() {
        Some(scope) => {
            let (reply, outcome) = shared
                .cache
                .run(&scope, || run_handler(shared.handler.as_ref(), request))
                .await;
            if outcome != Outcome::Ran {
                tracing::debug!(operation, scope, ?outcome, "repeated call answered once");
                metrics::counter!("agent_rpc_deduplicated_total", "op" => operation).increment(1);
            }
            reply
        }
        None => run_handler(shared.handler.as_ref(), request).await,
    };
    let outcome = if reply.is_ok() { "ok" } else { "error" };
    metrics::counter!("agent_rpc_server_requests_total", "op" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("agent_rpc_server_handle_seconds", "op" => operation)
        .record(started.elapsed().as_secs_f64());
    reply
}

async fn run_handler<H: Handler>(handler: &H, request: Request) -> ReplyBody {
    AssertUnwindSafe(handler.handle(request))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(RemoteError::internal("the agent's handler panicked")))
}

/// Seals an answer; one that would exceed the size limit is replaced by an
/// `Internal` error saying so (the peer would drop the connection otherwise).
fn seal_reply(
    key: &ClusterKey,
    request_id: u64,
    reply: &ReplyBody,
    max_body: usize,
) -> Vec<Vec<u8>> {
    let body = match wire::encode_body(reply) {
        Ok(b) if b.len() <= max_body => b,
        Ok(b) => fallback(format!(
            "the answer has {} bytes, more than the limit of {max_body}",
            b.len()
        )),
        Err(e) => fallback(e.to_string()),
    };
    wire::seal(key, &Header::response(request_id), body)
}

fn fallback(message: String) -> Vec<u8> {
    let reply: Result<Response, RemoteError> = Err(RemoteError::internal(message));
    wire::encode_body(&reply).unwrap_or_default()
}

/// A peer's routing id, printable.
fn peer_name(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
