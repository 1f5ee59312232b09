//! The manager's side: [`Client`], a handle to one agent.
//!
//! A client owns one DEALER socket connected to one agent, driven by a
//! background task. Calls from any number of tasks share it: each call gets a
//! request id, its frames go to the socket task through a channel, and the
//! reply comes back through a oneshot channel when the socket task sees a
//! response with that id. Many calls are in flight at once; answers may come
//! back in any order.
//!
//! Every call has a deadline (its own or [`ClientConfig::default_timeout`]):
//! past it the call fails with [`RpcError::Timeout`] and a late answer is
//! ignored. The deadline also travels in the request, so the agent drops
//! work nobody waits for any more. A timeout does not mean the work did not
//! happen: state-changing calls carry an idempotency key so that a retry is
//! harmless.
//!
//! Answers are authenticated like requests (see [`crate::auth`]); anything
//! else arriving on the socket is dropped, logged and counted in
//! [`Client::rejections`].
//!
//! ZeroMQ connects in the background and reconnects after a lost connection.
//! It gives a connection up for good after a protocol error, though (a frame
//! over the size limit, a peer that is not ZeroMQ); the client notices that
//! its socket takes nothing while a request waits and, after
//! [`ClientConfig::reconnect_after_stall`], replaces the socket.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

use crate::agent::{
    HealthRequest, HealthResponse, LocalConfig, SyncKernelRegistryRequest,
    SyncKernelRegistryResponse,
};
use crate::auth::{Authenticator, RejectReason, Rejections};
use crate::error::{RemoteError, RpcError};
use crate::execute::{ExecuteRequest, ExecuteResult};
use crate::kernel::{
    CreateKernelsRequest, CreateKernelsResponse, DestroyKernelRequest, DestroyKernelResponse,
    GetLogsRequest, GetLogsResponse, InterruptKernelRequest, InterruptKernelResponse,
    KernelCreationInfo, RestartKernelRequest,
};
use crate::ops::{ReplyBody, Request, Response};
use crate::transport::{self, Outgoing, Pump};
use crate::wire::{self, ClusterKey, Header, Kind, PROTOCOL_VERSION};

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The cluster key every message is signed with.
    pub cluster_key: ClusterKey,
    /// Deadline of a call that names none. Default 30 s (the reference's
    /// timeout for `execute`, `get_logs` and `interrupt_kernel`).
    pub default_timeout: Duration,
    /// How far an answer's timestamp may be from this host's clock. Default 30 s.
    pub auth_window: Duration,
    /// Most answer nonces remembered (replay guard). Default 65,536.
    pub nonce_cache_capacity: usize,
    /// Largest body sent or accepted, in bytes; larger frames make libzmq drop
    /// the connection. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Most requests waiting to be handed to the socket. Default 1,024.
    pub queue_depth: usize,
    /// How long a request may wait for the socket to take it before the
    /// connection is thrown away and made anew. The socket takes nothing when
    /// its connection is gone for good (libzmq gives up a connection after a
    /// protocol error, e.g. a frame over the size limit) or when 1,000
    /// requests wait unread (the agent is stuck); a new socket drops those
    /// stale requests, whose callers have timed out. Default 1 s.
    pub reconnect_after_stall: Duration,
}

impl ClientConfig {
    /// The defaults, with `cluster_key`.
    pub fn new(cluster_key: ClusterKey) -> ClientConfig {
        ClientConfig {
            cluster_key,
            default_timeout: Duration::from_secs(30),
            auth_window: Duration::from_secs(30),
            nonce_cache_capacity: 65_536,
            max_message_bytes: 16 * 1024 * 1024,
            queue_depth: 1024,
            reconnect_after_stall: Duration::from_secs(1),
        }
    }
}

/// A handle to one agent's RPC endpoint. Cheap to clone; the socket closes
/// when the last clone is dropped. Must be created inside a Tokio runtime.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoint: String,
    key: ClusterKey,
    default_timeout: Duration,
    max_message_bytes: usize,
    next_id: AtomicU64,
    commands: mpsc::Sender<Command>,
    rejections: Rejections,
}

/// A call handed to the socket task.
#[derive(Debug)]
struct Command {
    request_id: u64,
    deadline: Instant,
    frames: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<Vec<u8>, RpcError>>,
}

impl Client {
    /// Connects to an agent at `endpoint` (`tcp://host:port`). ZeroMQ
    /// connects in the background and reconnects by itself, so this succeeds
    /// even if the agent is not up yet; calls made meanwhile wait (within
    /// their deadline) for it.
    pub fn connect(endpoint: &str, config: ClientConfig) -> Result<Client, RpcError> {
        let fail = |message: String| RpcError::Connect {
            endpoint: endpoint.to_owned(),
            message,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| fail(format!("no Tokio runtime: {e}")))?;
        let socket =
            open_socket(endpoint, config.max_message_bytes).map_err(|e| fail(e.to_string()))?;

        let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
        let rejections = Rejections::default();
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut driver = ClientLoop {
            endpoint: endpoint.to_owned(),
            pump: Pump::new(socket, config.queue_depth, "client"),
            commands: rx,
            pending: HashMap::new(),
            auth: Authenticator::new(
                config.cluster_key.clone(),
                config.max_message_bytes,
                config.auth_window,
                config.nonce_cache_capacity,
            ),
            rejections: rejections.clone(),
            sweep,
            max_message_bytes: config.max_message_bytes,
            reconnect_after_stall: config.reconnect_after_stall,
            stall_timer: None,
        };
        runtime.spawn(async move { poll_fn(|cx| driver.poll_run(cx)).await });

        Ok(Client {
            inner: Arc::new(Inner {
                endpoint: endpoint.to_owned(),
                key: config.cluster_key,
                default_timeout: config.default_timeout,
                max_message_bytes: config.max_message_bytes,
                next_id: AtomicU64::new(1),
                commands: tx,
                rejections,
            }),
        })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Messages this client dropped unanswered, by reason.
    pub fn rejections(&self) -> Rejections {
        self.inner.rejections.clone()
    }

    /// Sends `request` and waits for the answer, at most `timeout` (or the
    /// configured default).
    pub async fn call(
        &self,
        request: Request,
        timeout: Option<Duration>,
    ) -> Result<Response, RpcError> {
        let operation = request.name();
        let started = Instant::now();
        let result = self.call_inner(request, operation, timeout).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(RpcError::Timeout { .. }) => "timeout",
            Err(RpcError::Remote(_)) => "remote_error",
            Err(_) => "error",
        };
        metrics::counter!("agent_rpc_client_calls_total", "op" => operation, "outcome" => outcome)
            .increment(1);
        metrics::histogram!("agent_rpc_client_call_seconds", "op" => operation)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn call_inner(
        &self,
        request: Request,
        operation: &'static str,
        timeout: Option<Duration>,
    ) -> Result<Response, RpcError> {
        let inner = &self.inner;
        let timeout = timeout.unwrap_or(inner.default_timeout);
        let deadline = Instant::now() + timeout;
        let deadline_ms = wire::now_ms()
            .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .max(1);
        let body = wire::encode_body(&request).map_err(|e| RpcError::Encode(e.to_string()))?;
        if body.len() > inner.max_message_bytes {
            return Err(RpcError::TooLarge {
                size: body.len(),
                limit: inner.max_message_bytes,
            });
        }
        let request_id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frames = wire::seal(&inner.key, &Header::request(request_id, deadline_ms), body);
        let (reply, answer) = oneshot::channel();
        let command = Command {
            request_id,
            deadline,
            frames,
            reply,
        };
        let exchange = async {
            inner
                .commands
                .send(command)
                .await
                .map_err(|_| RpcError::Closed)?;
            answer.await.map_err(|_| RpcError::Closed)?
        };
        let body = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(body) => body?,
            Err(_) => return Err(RpcError::Timeout { operation, timeout }),
        };
        match wire::decode_body::<ReplyBody>(&body) {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(RemoteError::VersionMismatch { supported, .. })) => {
                Err(RpcError::VersionMismatch {
                    local: PROTOCOL_VERSION,
                    remote: supported,
                })
            }
            Ok(Err(e)) => Err(RpcError::Remote(e)),
            Err(e) => Err(RpcError::Decode(e.to_string())),
        }
    }

    /// `health` with an empty message, within the default timeout. What a
    /// benchmark of the round trip calls.
    pub async fn health(&self) -> Result<HealthResponse, RpcError> {
        match self
            .call(Request::Health(HealthRequest::default()), None)
            .await?
        {
            Response::Health(r) => Ok(r),
            other => Err(unexpected("health", &other)),
        }
    }

    /// `create_kernels` within the default timeout.
    pub async fn create_kernels(
        &self,
        request: CreateKernelsRequest,
    ) -> Result<CreateKernelsResponse, RpcError> {
        match self.call(Request::CreateKernels(request), None).await? {
            Response::CreateKernels(r) => Ok(r),
            other => Err(unexpected("create_kernels", &other)),
        }
    }

    /// `destroy_kernel` within the default timeout.
    pub async fn destroy_kernel(
        &self,
        request: DestroyKernelRequest,
    ) -> Result<DestroyKernelResponse, RpcError> {
        match self.call(Request::DestroyKernel(request), None).await? {
            Response::DestroyKernel(r) => Ok(r),
            other => Err(unexpected("destroy_kernel", &other)),
        }
    }

    /// `restart_kernel` within the default timeout.
    pub async fn restart_kernel(
        &self,
        request: RestartKernelRequest,
    ) -> Result<KernelCreationInfo, RpcError> {
        match self.call(Request::RestartKernel(request), None).await? {
            Response::RestartKernel(r) => Ok(r),
            other => Err(unexpected("restart_kernel", &other)),
        }
    }

    /// `execute` within the default timeout.
    pub async fn execute(&self, request: ExecuteRequest) -> Result<ExecuteResult, RpcError> {
        match self.call(Request::Execute(request), None).await? {
            Response::Execute(r) => Ok(r),
            other => Err(unexpected("execute", &other)),
        }
    }

    /// `interrupt_kernel` within the default timeout.
    pub async fn interrupt_kernel(
        &self,
        request: InterruptKernelRequest,
    ) -> Result<InterruptKernelResponse, RpcError> {
        match self.call(Request::InterruptKernel(request), None).await? {
            Response::InterruptKernel(r) => Ok(r),
            other => Err(unexpected("interrupt_kernel", &other)),
        }
    }

    /// `get_logs` within the default timeout.
    pub async fn get_logs(&self, request: GetLogsRequest) -> Result<GetLogsResponse, RpcError> {
        match self.call(Request::GetLogs(request), None).await? {
            Response::GetLogs(r) => Ok(r),
            other => Err(unexpected("get_logs", &other)),
        }
    }

    /// `sync_kernel_registry` within the default timeout.
    pub async fn sync_kernel_registry(
        &self,
        request: SyncKernelRegistryRequest,
    ) -> Result<SyncKernelRegistryResponse, RpcError> {
        match self
            .call(Request::SyncKernelRegistry(request), None)
            .await?
        {
            Response::SyncKernelRegistry(r) => Ok(r),
            other => Err(unexpected("sync_kernel_registry", &other)),
        }
    }

    /// `get_local_config` within the default timeout.
    pub async fn get_local_config(&self) -> Result<LocalConfig, RpcError> {
        match self.call(Request::GetLocalConfig, None).await? {
            Response::GetLocalConfig(r) => Ok(r),
            other => Err(unexpected("get_local_config", &other)),
        }
    }
}

/// A DEALER connected to `endpoint`.
fn open_socket(endpoint: &str, max_message_bytes: usize) -> tmq::Result<tmq::dealer::Dealer> {
    tmq::dealer(&transport::context())
        .set_linger(0)
        .set_maxmsgsize(i64::try_from(max_message_bytes).unwrap_or(i64::MAX))
        .set_tcp_keepalive(1)
        .set_tcp_keepalive_idle(60)
        .set_tcp_keepalive_intvl(20)
        .set_tcp_keepalive_cnt(3)
        .connect(endpoint)
}

fn unexpected(expected: &'static str, got: &Response) -> RpcError {
    RpcError::UnexpectedResponse {
        expected,
        got: got.name(),
    }
}

/// A call waiting for its answer.
struct Pending {
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<u8>, RpcError>>,
}

/// The socket task of a client.
struct ClientLoop {
    endpoint: String,
    pump: Pump<tmq::dealer::Dealer>,
    commands: mpsc::Receiver<Command>,
    pending: HashMap<u64, Pending>,
    auth: Authenticator,
    rejections: Rejections,
    sweep: Interval,
    max_message_bytes: usize,
    reconnect_after_stall: Duration,
    /// Armed while a request waits for the socket: when to reconnect.
    stall_timer: Option<Pin<Box<Sleep>>>,
}

/// Most steps the socket task takes before yielding to other tasks.
const BUDGET: usize = 256;

impl ClientLoop {
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..BUDGET {
            let mut progress = false;
            match self.commands.poll_recv(cx) {
                Poll::Ready(Some(command)) => {
                    progress = true;
                    self.start(command);
                }
                // Every handle is gone, so no call can be waiting: stop.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            self.pump.poll_send(cx);
            match self.pump.poll_recv(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    progress = true;
                    self.on_message(transport::frames_of(msg));
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::error!(endpoint = %self.endpoint, error = %e, "agent RPC client socket failed");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {}
            }
            if self.sweep.poll_tick(cx).is_ready() {
                progress = true;
                self.expire();
            }
            if self.poll_stall(cx) {
                progress = true;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn start(&mut self, command: Command) {
        if command.deadline <= Instant::now() || command.reply.is_closed() {
            return;
        }
        let queued = self.pump.enqueue(Outgoing {
            frames: transport::multipart(command.frames),
            deadline: Some(command.deadline),
        });
        if !queued {
            let _ = command.reply.send(Err(RpcError::QueueFull));
            return;
        }
        self.pending.insert(
            command.request_id,
            Pending {
                deadline: command.deadline,
                reply: command.reply,
            },
        );
    }

    fn on_message(&mut self, mut frames: Vec<Vec<u8>>) {
        let header = match self.auth.accept(&frames) {
            Ok(h) => h,
            Err(reason) => {
                self.rejections.record("client", reason, &self.endpoint);
                return;
            }
        };
        if header.kind != Kind::Response {
            self.rejections
                .record("client", RejectReason::UnexpectedKind, &self.endpoint);
            return;
        }
        let Some(pending) = self.pending.remove(&header.request_id) else {
            tracing::debug!(endpoint = %self.endpoint, request_id = header.request_id, "answer to a call that gave up");
            return;
        };
        let result = if header.version == PROTOCOL_VERSION {
            Ok(std::mem::take(&mut frames[1]))
        } else {
            tracing::warn!(
                endpoint = %self.endpoint,
                local = PROTOCOL_VERSION,
                remote = header.version,
                "agent speaks another protocol version"
            );
            Err(RpcError::VersionMismatch {
                local: PROTOCOL_VERSION,
                remote: header.version,
            })
        };
        let _ = pending.reply.send(result);
    }

    /// Watches for a stalled socket and replaces it; true if it did.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(since) = self.pump.stalled_since() else {
            self.stall_timer = None;
            return false;
        };
        let at = since + self.reconnect_after_stall;
        let timer = self
            .stall_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.stall_timer = None;
        tracing::warn!(endpoint = %self.endpoint, "agent RPC connection stalled; reconnecting");
        metrics::counter!("agent_rpc_client_reconnects_total").increment(1);
        match open_socket(&self.endpoint, self.max_message_bytes) {
            Ok(socket) => self.pump.replace_socket(socket),
            Err(e) => {
                tracing::error!(endpoint = %self.endpoint, error = %e, "agent RPC reconnect failed");
                // Try again after another stall period.
                self.pump.replace_stall_clock();
            }
        }
        true
    }

    /// Forgets calls whose caller gave up (the caller reports the timeout).
    fn expire(&mut self) {
        let now = Instant::now();
        self.pending
            .retain(|_, p| p.deadline > now && !p.reply.is_closed());
    }
}
