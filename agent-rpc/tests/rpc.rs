//! The agent RPC over real ZeroMQ sockets on 127.0.0.1: a [`Client`] against a
//! [`Server`] with a test handler, and raw tmq sockets playing broken,
//! hostile or foreign peers.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agent_rpc::agent::{
    HealthRequest, HealthResponse, KernelRef, LocalConfig, SyncKernelRegistryRequest,
    SyncKernelRegistryResponse,
};
use agent_rpc::execute::{ConsoleItem, ExecuteMode, ExecuteRequest, ExecuteResult, ExecuteStatus};
use agent_rpc::kernel::{
    ClusterInfo, ClusterMode, CreateKernelsRequest, CreateKernelsResponse, DestroyKernelRequest,
    DestroyKernelResponse, GetLogsRequest, GetLogsResponse, ImageRef, InterruptKernelRequest,
    InterruptKernelResponse, KernelConfig, KernelCreationInfo, RestartKernelRequest, ServicePort,
    VFolderMount,
};
use agent_rpc::wire::{self, Header, Kind};
use agent_rpc::{
    Client, ClientConfig, ClusterKey, Handler, PROTOCOL_VERSION, RejectReason, RemoteError,
    ReplyBody, Request, Response, RpcError, Server, ServerConfig, ServerHandle,
};
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tmq::{AsZmqSocket, Multipart};
use tokio::time::{Instant, sleep, timeout};
use uuid::Uuid;

// ---------------------------------------------------------------- fixtures

fn key() -> ClusterKey {
    ClusterKey::new(b"the-test-cluster-key-32-bytes-ok").unwrap()
}

fn other_key() -> ClusterKey {
    ClusterKey::new(b"some-other-cluster-key-32-bytes!").unwrap()
}

/// A handler that answers every operation from its input, counts calls per
/// operation, and sleeps when asked (`health` with message `sleep:MS/...`).
#[derive(Default)]
struct TestAgent {
    calls: Mutex<HashMap<&'static str, usize>>,
}

impl TestAgent {
    fn count(&self, op: &str) -> usize {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }
}

fn info_for(kernel_id: Uuid) -> KernelCreationInfo {
    KernelCreationInfo {
        kernel_id,
        container_id: format!("c-{kernel_id}"),
        kernel_host: "127.0.0.1".into(),
        repl_in_port: 2000,
        repl_out_port: 2001,
        stdin_port: 2002,
        stdout_port: 2003,
        service_ports: vec![ServicePort {
            name: "jupyter".into(),
            protocol: "http".into(),
            container_ports: vec![8080],
            host_ports: vec![30001],
        }],
        resource_slots: BTreeMap::from([("cpu".into(), "1".into())]),
        attached_devices: BTreeMap::new(),
        agent_addr: "tcp://127.0.0.1:6011".into(),
        scaling_group: "default".into(),
    }
}

impl Handler for TestAgent {
    async fn handle(&self, request: Request) -> Result<Response, RemoteError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(request.name())
            .or_default() += 1;
        match request {
            Request::Health(r) => {
                if let Some(ms) = r
                    .message
                    .strip_prefix("sleep:")
                    .and_then(|rest| rest.split('/').next())
                    .and_then(|ms| ms.parse::<u64>().ok())
                {
                    sleep(Duration::from_millis(ms)).await;
                }
                if r.message == "panic" {
                    panic!("asked to panic");
                }
                Ok(Response::Health(HealthResponse {
                    agent_id: "i-test".into(),
                    agent_version: "0.1.0".into(),
                    message: r.message,
                }))
            }
            Request::CreateKernels(r) => {
                sleep(Duration::from_millis(50)).await;
                Ok(Response::CreateKernels(CreateKernelsResponse {
                    kernels: r.kernels.iter().map(|k| info_for(k.kernel_id)).collect(),
                }))
            }
            Request::DestroyKernel(r) => {
                if r.kernel_id.is_nil() {
                    return Err(RemoteError::not_found("no such kernel"));
                }
                Ok(Response::DestroyKernel(DestroyKernelResponse {
                    kernel_id: r.kernel_id,
                    exit_code: Some(0),
                    already_terminated: false,
                }))
            }
            Request::RestartKernel(r) => Ok(Response::RestartKernel(info_for(r.kernel_id))),
            Request::Execute(r) => Ok(Response::Execute(ExecuteResult {
                run_id: r.run_id,
                status: ExecuteStatus::Finished,
                exit_code: Some(0),
                console: vec![ConsoleItem {
                    stream: "stdout".into(),
                    data: r.code,
                }],
                options: BTreeMap::new(),
                files: vec![],
            })),
            Request::InterruptKernel(r) => {
                if r.kernel_id.is_nil() {
                    return Err(RemoteError::unavailable("try later"));
                }
                Ok(Response::InterruptKernel(InterruptKernelResponse {}))
            }
            Request::GetLogs(r) => Ok(Response::GetLogs(GetLogsResponse {
                kernel_id: r.kernel_id,
                logs: "hello from the kernel\n".into(),
            })),
            Request::SyncKernelRegistry(r) => {
                let (running, gone) = r.kernels.split_at(r.kernels.len().min(1));
                Ok(Response::SyncKernelRegistry(SyncKernelRegistryResponse {
                    running: running.to_vec(),
                    already_terminated: gone.to_vec(),
                    destroyed_unknown: vec![],
                }))
            }
            Request::GetLocalConfig => Ok(Response::GetLocalConfig(LocalConfig {
                agent_id: "i-test".into(),
                region: "local".into(),
                scaling_group: "default".into(),
                abuse_report_path: None,
                watcher: BTreeMap::new(),
            })),
        }
    }
}

fn server_config() -> ServerConfig {
    let mut c = ServerConfig::new(key());
    c.max_message_bytes = 64 * 1024;
    c.shutdown_grace = Duration::from_secs(2);
    c
}

fn start_with(agent: Arc<TestAgent>, config: ServerConfig) -> ServerHandle {
    let server = Server::bind("tcp://127.0.0.1:0", config).unwrap();
    assert!(server.local_endpoint().starts_with("tcp://127.0.0.1:"));
    assert!(!server.local_endpoint().ends_with(":0"));
    assert!(!server.local_endpoint().ends_with(":*"));
    server.spawn(agent)
}

fn start(agent: Arc<TestAgent>) -> ServerHandle {
    start_with(agent, server_config())
}

fn client_with(endpoint: &str, key: ClusterKey, default_timeout: Duration) -> Client {
    let mut c = ClientConfig::new(key);
    c.default_timeout = default_timeout;
    c.max_message_bytes = 64 * 1024;
    Client::connect(endpoint, c).unwrap()
}

fn client(endpoint: &str) -> Client {
    client_with(endpoint, key(), Duration::from_secs(5))
}

fn kernel_config(kernel_id: Uuid) -> KernelConfig {
    KernelConfig {
        kernel_id,
        image: ImageRef {
            canonical: "cr.backend.ai/stable/python:3.9-ubuntu20.04".into(),
            architecture: "x86_64".into(),
            digest: Some("sha256:abc".into()),
            registry: "cr.backend.ai".into(),
            registry_url: "https://cr.backend.ai".into(),
            labels: BTreeMap::from([("ai.backend.role".into(), "COMPUTE".into())]),
            is_local: false,
        },
        auto_pull: "digest".into(),
        session_type: "interactive".into(),
        cluster_role: "main".into(),
        cluster_idx: 1,
        cluster_hostname: "main1".into(),
        local_rank: 0,
        resource_slots: BTreeMap::from([
            ("cpu".into(), "1".into()),
            ("mem".into(), "1073741824".into()),
        ]),
        resource_opts: BTreeMap::new(),
        environ: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
        mounts: vec![VFolderMount {
            name: "data".into(),
            vfid: "user:1/abc".into(),
            vfsubpath: ".".into(),
            host_path: "/vfroot/data".into(),
            kernel_path: "/home/work/data".into(),
            mount_perm: "rw".into(),
            usage_mode: "general".into(),
        }],
        idle_timeout: Some(600),
        bootstrap_script: None,
        startup_command: None,
        preopen_ports: vec![],
        allocated_host_ports: vec![],
        scaling_group: "default".into(),
        endpoint_id: None,
    }
}

fn create_request(key: &str, kernel_ids: &[Uuid]) -> CreateKernelsRequest {
    CreateKernelsRequest {
        idempotency_key: key.into(),
        session_id: Uuid::from_u128(0x5e55),
        kernels: kernel_ids.iter().map(|k| kernel_config(*k)).collect(),
        cluster_info: ClusterInfo {
            mode: ClusterMode::SingleNode,
            size: u32::try_from(kernel_ids.len()).unwrap(),
            replicas: BTreeMap::from([("main".into(), 1)]),
            network_name: None,
            ssh_keypair: None,
            ssh_port_mapping: BTreeMap::new(),
        },
    }
}

// Raw sockets, on a context of their own that lives as long as the process.
fn raw_context() -> tmq::Context {
    static CTX: OnceLock<tmq::Context> = OnceLock::new();
    CTX.get_or_init(tmq::Context::new).clone()
}

fn raw_dealer(endpoint: &str) -> tmq::dealer::Dealer {
    tmq::dealer(&raw_context())
        .set_linger(0)
        .connect(endpoint)
        .unwrap()
}

fn raw_router() -> (tmq::router::Router, String) {
    let router = tmq::router(&raw_context())
        .set_linger(0)
        .bind("tcp://127.0.0.1:*")
        .unwrap();
    let endpoint = router.get_socket().get_last_endpoint().unwrap().unwrap();
    (router, endpoint)
}

fn to_vecs(m: Multipart) -> Vec<Vec<u8>> {
    m.into_iter().map(|f| f.to_vec()).collect()
}

async fn recv<S>(socket: &mut S, within: Duration) -> Option<Vec<Vec<u8>>>
where
    S: futures::Stream<Item = tmq::Result<Multipart>> + Unpin,
{
    match timeout(within, socket.next()).await {
        Ok(Some(Ok(m))) => Some(to_vecs(m)),
        Ok(other) => panic!("socket failed: {other:?}"),
        Err(_) => None,
    }
}

fn health_request(id: u64, message: &str) -> (Header, Vec<u8>) {
    let header = Header::request(id, wire::now_ms() + 5_000);
    let body = wire::encode_body(&Request::Health(HealthRequest {
        message: message.into(),
    }))
    .unwrap();
    (header, body)
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn every_operation_round_trips() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let c = client(server.local_endpoint());
    let kernel = Uuid::from_u128(1);
    let session = Uuid::from_u128(0x5e55);

    let h = c.health().await.unwrap();
    assert_eq!(h.agent_id, "i-test");
    let echoed = c
        .call(
            Request::Health(HealthRequest {
                message: "ping".into(),
            }),
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(echoed, Response::Health(HealthResponse { message, .. }) if message == "ping")
    );

    let created = c
        .create_kernels(create_request("ev-1", &[kernel, Uuid::from_u128(2)]))
        .await
        .unwrap();
    assert_eq!(
        created.kernels,
        vec![info_for(kernel), info_for(Uuid::from_u128(2))]
    );

    let destroyed = c
        .destroy_kernel(DestroyKernelRequest {
            idempotency_key: "ev-2".into(),
            kernel_id: kernel,
            session_id: session,
            reason: "user-requested".into(),
            suppress_events: false,
        })
        .await
        .unwrap();
    assert_eq!(destroyed.kernel_id, kernel);
    assert_eq!(destroyed.exit_code, Some(0));

    let missing = c
        .destroy_kernel(DestroyKernelRequest {
            idempotency_key: "ev-3".into(),
            kernel_id: Uuid::nil(),
            session_id: session,
            reason: String::new(),
            suppress_events: true,
        })
        .await;
    assert_eq!(
        missing,
        Err(RpcError::Remote(RemoteError::not_found("no such kernel")))
    );

    let restarted = c
        .restart_kernel(RestartKernelRequest {
            idempotency_key: "ev-4".into(),
            session_id: session,
            kernel_id: kernel,
            updated_config: Some(Box::new(kernel_config(kernel))),
        })
        .await
        .unwrap();
    assert_eq!(restarted, info_for(kernel));

    let run = c
        .execute(ExecuteRequest {
            idempotency_key: "ev-5".into(),
            session_id: session,
            kernel_id: kernel,
            api_version: 8,
            run_id: "run-1".into(),
            mode: ExecuteMode::Query,
            code: "print('hi')".into(),
            options: BTreeMap::new(),
            flush_timeout_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(run.run_id, "run-1");
    assert_eq!(run.status, ExecuteStatus::Finished);
    assert_eq!(run.console[0].data, "print('hi')");

    c.interrupt_kernel(InterruptKernelRequest {
        idempotency_key: "ev-6".into(),
        session_id: session,
        kernel_id: kernel,
    })
    .await
    .unwrap();

    let logs = c
        .get_logs(GetLogsRequest { kernel_id: kernel })
        .await
        .unwrap();
    assert_eq!(logs.kernel_id, kernel);
    assert_eq!(logs.logs, "hello from the kernel\n");

    let a = KernelRef {
        kernel_id: kernel,
        session_id: session,
    };
    let b = KernelRef {
        kernel_id: Uuid::from_u128(9),
        session_id: session,
    };
    let synced = c
        .sync_kernel_registry(SyncKernelRegistryRequest {
            kernels: vec![a, b],
        })
        .await
        .unwrap();
    assert_eq!(synced.running, vec![a]);
    assert_eq!(synced.already_terminated, vec![b]);

    let config = c.get_local_config().await.unwrap();
    assert_eq!(config.agent_id, "i-test");
    assert_eq!(config.region, "local");

    for op in [
        "health",
        "create_kernels",
        "destroy_kernel",
        "restart_kernel",
        "execute",
        "interrupt_kernel",
        "get_logs",
        "sync_kernel_registry",
        "get_local_config",
    ] {
        assert!(agent.count(op) >= 1, "{op} never reached the handler");
    }
    assert_eq!(server.rejections().total(), 0);
    assert_eq!(c.rejections().total(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_call_past_its_deadline_times_out_and_the_client_keeps_working() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let c = client(server.local_endpoint());

    let started = Instant::now();
    let slow = c
        .call(
            Request::Health(HealthRequest {
                message: "sleep:600".into(),
            }),
            Some(Duration::from_millis(100)),
        )
        .await;
    assert!(
        matches!(slow, Err(RpcError::Timeout { operation: "health", timeout }) if timeout == Duration::from_millis(100)),
        "{slow:?}"
    );
    assert!(slow.unwrap_err().is_retryable());
    assert!(started.elapsed() < Duration::from_millis(500));

    // The client goes on working, before and after the late answer arrives.
    assert_eq!(c.health().await.unwrap().agent_id, "i-test");
    sleep(Duration::from_millis(600)).await;
    assert_eq!(c.health().await.unwrap().agent_id, "i-test");
    assert_eq!(c.rejections().total(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_calls_are_in_flight_on_one_client() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let c = client(server.local_endpoint());
    c.health().await.unwrap(); // connected

    let started = Instant::now();
    let calls = (0..32).map(|i| {
        let c = c.clone();
        async move {
            let message = format!("sleep:200/{i}");
            let r = c
                .call(
                    Request::Health(HealthRequest {
                        message: message.clone(),
                    }),
                    None,
                )
                .await
                .unwrap();
            assert!(matches!(r, Response::Health(h) if h.message == message));
        }
    });
    futures::future::join_all(calls).await;
    // One at a time would take 6.4 s.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(agent.count("health"), 33);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_peer_of_another_version_gets_a_clear_version_mismatch() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());

    // A future manager sends a request in version + 1 with a body this
    // version cannot read.
    let mut dealer = raw_dealer(server.local_endpoint());
    let mut header = Header::request(77, wire::now_ms() + 5_000);
    header.version = PROTOCOL_VERSION + 1;
    let frames = wire::seal(&key(), &header, b"\x92\xa4v2op\xc3".to_vec());
    dealer.send(Multipart::from(frames)).await.unwrap();

    let reply = recv(&mut dealer, Duration::from_secs(3))
        .await
        .expect("a version mismatch is answered");
    let reply_header = wire::open(&key(), &reply, 1 << 20).unwrap();
    assert_eq!(reply_header.kind, Kind::Response);
    assert_eq!(reply_header.request_id, 77);
    assert_eq!(reply_header.version, PROTOCOL_VERSION);
    let body: ReplyBody = wire::decode_body(&reply[1]).unwrap();
    assert_eq!(
        body,
        Err(RemoteError::VersionMismatch {
            supported: PROTOCOL_VERSION,
            received: PROTOCOL_VERSION + 1,
        })
    );
    assert_eq!(agent.calls.lock().unwrap().values().sum::<usize>(), 0);

    // And a client talking to an agent of another version says so.
    let (mut router, endpoint) = raw_router();
    let c = client(&endpoint);
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.health().await }
    });
    let req = recv(&mut router, Duration::from_secs(3)).await.unwrap();
    assert_eq!(req.len(), 4);
    let req_header = wire::open(&key(), &req[1..], 1 << 20).unwrap();
    let mut answer = Header::response(req_header.request_id);
    answer.version = PROTOCOL_VERSION + 1;
    let mut frames = vec![req[0].clone()];
    frames.extend(wire::seal(&key(), &answer, b"\xc0".to_vec()));
    router.send(Multipart::from(frames)).await.unwrap();
    assert_eq!(
        call.await.unwrap(),
        Err(RpcError::VersionMismatch {
            local: PROTOCOL_VERSION,
            remote: PROTOCOL_VERSION + 1,
        })
    );

    // The server's VersionMismatch answer reads the same way to a client.
    let req = recv(&mut router, Duration::from_millis(10)).await;
    assert!(req.is_none());
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.health().await }
    });
    let req = recv(&mut router, Duration::from_secs(3)).await.unwrap();
    let req_header = wire::open(&key(), &req[1..], 1 << 20).unwrap();
    let refusal: ReplyBody = Err(RemoteError::VersionMismatch {
        supported: PROTOCOL_VERSION + 1,
        received: PROTOCOL_VERSION,
    });
    let mut frames = vec![req[0].clone()];
    frames.extend(wire::seal(
        &key(),
        &Header::response(req_header.request_id),
        wire::encode_body(&refusal).unwrap(),
    ));
    router.send(Multipart::from(frames)).await.unwrap();
    assert_eq!(
        call.await.unwrap(),
        Err(RpcError::VersionMismatch {
            local: PROTOCOL_VERSION,
            remote: PROTOCOL_VERSION + 1,
        })
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_peer_with_the_wrong_key_gets_nothing_and_good_peers_are_served() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let intruder = client_with(
        server.local_endpoint(),
        other_key(),
        Duration::from_millis(300),
    );
    let good = client(server.local_endpoint());

    let r = intruder.health().await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    assert_eq!(good.health().await.unwrap().agent_id, "i-test");
    let r = intruder.get_local_config().await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    assert_eq!(good.get_local_config().await.unwrap().agent_id, "i-test");

    assert_eq!(server.rejections().get(RejectReason::BadMac), 2);
    assert_eq!(agent.count("health"), 1);
    assert_eq!(agent.count("get_local_config"), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn stale_expired_and_misdirected_messages_get_no_answer() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let mut dealer = raw_dealer(server.local_endpoint());

    // Stamped a minute ago: outside the ±30 s window.
    let (mut h, body) = health_request(1, "old");
    h.timestamp_ms -= 60_000;
    dealer
        .send(Multipart::from(wire::seal(&key(), &h, body)))
        .await
        .unwrap();
    // Its deadline passed before it arrived.
    let (mut h, body) = health_request(2, "late");
    h.deadline_ms = wire::now_ms() - 1;
    dealer
        .send(Multipart::from(wire::seal(&key(), &h, body)))
        .await
        .unwrap();
    // A response sent to the server.
    let body = wire::encode_body(&ReplyBody::Err(RemoteError::internal("x"))).unwrap();
    dealer
        .send(Multipart::from(wire::seal(
            &key(),
            &Header::response(3),
            body,
        )))
        .await
        .unwrap();
    // A good one, to know the others were looked at.
    let (h, body) = health_request(4, "fresh");
    dealer
        .send(Multipart::from(wire::seal(&key(), &h, body)))
        .await
        .unwrap();

    let reply = recv(&mut dealer, Duration::from_secs(3)).await.unwrap();
    assert_eq!(wire::open(&key(), &reply, 1 << 20).unwrap().request_id, 4);
    assert!(
        recv(&mut dealer, Duration::from_millis(200))
            .await
            .is_none()
    );
    let r = server.rejections();
    assert_eq!(r.get(RejectReason::Stale), 1);
    assert_eq!(r.get(RejectReason::Expired), 1);
    assert_eq!(r.get(RejectReason::UnexpectedKind), 1);
    assert_eq!(agent.count("health"), 1);
    server.shutdown().await.unwrap();
}

/// A man in the middle captures a request and its answer and plays each
/// twice: the agent runs the request once, the client takes the answer once.
#[tokio::test]
async fn a_replayed_message_is_not_executed_twice() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let (mut front, front_endpoint) = raw_router();
    let mut back = raw_dealer(server.local_endpoint());
    let c = client(&front_endpoint);

    let call = tokio::spawn({
        let c = c.clone();
        async move {
            c.get_logs(GetLogsRequest {
                kernel_id: Uuid::from_u128(5),
            })
            .await
        }
    });
    let captured = recv(&mut front, Duration::from_secs(3)).await.unwrap();
    let (identity, request) = (captured[0].clone(), captured[1..].to_vec());
    back.send(Multipart::from(request.clone())).await.unwrap();
    back.send(Multipart::from(request.clone())).await.unwrap();

    let answer = recv(&mut back, Duration::from_secs(3)).await.unwrap();
    assert!(
        recv(&mut back, Duration::from_millis(300)).await.is_none(),
        "the replay was answered"
    );
    // Later, too (a replay within the window is still refused).
    back.send(Multipart::from(request)).await.unwrap();
    assert!(recv(&mut back, Duration::from_millis(200)).await.is_none());
    assert_eq!(agent.count("get_logs"), 1);
    assert_eq!(server.rejections().get(RejectReason::Replayed), 2);

    let mut to_client = vec![identity];
    to_client.extend(answer);
    front
        .send(Multipart::from(to_client.clone()))
        .await
        .unwrap();
    front.send(Multipart::from(to_client)).await.unwrap();
    let logs = call.await.unwrap().unwrap();
    assert_eq!(logs.logs, "hello from the kernel\n");
    // The replayed answer is refused by the client as well.
    let deadline = Instant::now() + Duration::from_secs(2);
    while c.rejections().get(RejectReason::Replayed) == 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.rejections().get(RejectReason::Replayed), 1);
    server.shutdown().await.unwrap();
}

/// One random malformed message: garbage of every shape, near misses of a
/// valid message, and (only when `oversize`) frames over the size limit.
fn garbage(rng: &mut StdRng, kind: Kind, oversize: bool) -> Vec<Vec<u8>> {
    let random_bytes =
        |rng: &mut StdRng, n: usize| -> Vec<u8> { (0..n).map(|_| rng.random()).collect() };
    if oversize {
        let mut frames = wire::seal(&key(), &Header::request(1, 0), vec![]);
        let len = 64 * 1024 + 1 + rng.random_range(0..1024);
        frames[1] = random_bytes(rng, len);
        return frames;
    }
    let sealed = |rng: &mut StdRng, body: Vec<u8>| {
        let mut h = match kind {
            Kind::Request => Header::request(rng.random_range(1 << 40..1 << 41), 0),
            Kind::Response => Header::response(rng.random_range(1 << 40..1 << 41)),
        };
        h.deadline_ms = 0;
        wire::seal(&key(), &h, body)
    };
    match rng.random_range(0..8) {
        // Anything at all.
        0 => {
            let n = rng.random_range(1..7);
            (0..n)
                .map(|_| {
                    let len = rng.random_range(0..200);
                    random_bytes(rng, len)
                })
                .collect()
        }
        // Empty frames.
        1 => vec![vec![]; rng.random_range(1..5)],
        // A plausible header, random body and MAC.
        2 => {
            let mut h = Header::request(1, 0).to_bytes().to_vec();
            let at = rng.random_range(4..h.len());
            h[at] = rng.random();
            let len = rng.random_range(0..100);
            vec![h, random_bytes(rng, len), random_bytes(rng, 32)]
        }
        // A sealed message with one byte changed.
        3 => {
            let mut frames = sealed(rng, b"\x81\xa6health\x80".to_vec());
            let f = rng.random_range(0..3);
            if !frames[f].is_empty() {
                let i = rng.random_range(0..frames[f].len());
                frames[f][i] ^= 1 << rng.random_range(0..8);
            }
            frames
        }
        // Sealed with another key.
        4 => wire::seal(&other_key(), &Header::request(1, 0), vec![1, 2, 3]),
        // The right frames, too few or too many of them.
        5 => {
            let mut frames = sealed(rng, vec![0xc0]);
            if rng.random() {
                frames.truncate(rng.random_range(1..3));
            } else {
                frames.push(random_bytes(rng, 8));
            }
            frames
        }
        // Authenticated, but the body is garbage.
        6 => {
            let len = rng.random_range(0..64);
            let body = random_bytes(rng, len);
            sealed(rng, body)
        }
        // Authenticated, but the other direction's kind.
        _ => {
            let h = match kind {
                Kind::Request => Header::response(7),
                Kind::Response => Header::request(7, 0),
            };
            wire::seal(&key(), &h, vec![0xc0])
        }
    }
}

#[tokio::test]
async fn a_thousand_malformed_messages_do_not_hurt_the_server() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let mut dealer = raw_dealer(server.local_endpoint());
    let mut rng = StdRng::seed_from_u64(0xbad_f00d);
    for i in 0..1000 {
        let frames = garbage(&mut rng, Kind::Request, i >= 995);
        dealer.send(Multipart::from(frames)).await.unwrap();
    }

    // Only authenticated requests with garbage bodies are answered, and with
    // InvalidArgument.
    while let Some(reply) = recv(&mut dealer, Duration::from_millis(300)).await {
        wire::open(&key(), &reply, 1 << 20).unwrap();
        let body: ReplyBody = wire::decode_body(&reply[1]).unwrap();
        assert!(
            matches!(body, Err(RemoteError::InvalidArgument { .. })),
            "{body:?}"
        );
    }
    assert_eq!(agent.calls.lock().unwrap().values().sum::<usize>(), 0);
    assert!(
        server.rejections().total() > 500,
        "{:?}",
        server.rejections()
    );

    let c = client(server.local_endpoint());
    assert_eq!(c.health().await.unwrap().agent_id, "i-test");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_thousand_malformed_messages_do_not_hurt_the_client() {
    let (mut router, endpoint) = raw_router();
    let c = client(&endpoint);

    // Learn the client's routing id from a first call.
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            c.call(Request::GetLocalConfig, Some(Duration::from_millis(500)))
                .await
        }
    });
    let req = recv(&mut router, Duration::from_secs(3)).await.unwrap();
    let identity = req[0].clone();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for i in 0..1000 {
        let mut frames = vec![identity.clone()];
        frames.extend(garbage(&mut rng, Kind::Response, i >= 995));
        router.send(Multipart::from(frames)).await.unwrap();
    }
    assert!(matches!(
        first.await.unwrap(),
        Err(RpcError::Timeout { .. })
    ));
    assert!(c.rejections().total() > 500, "{:?}", c.rejections());

    // A good call afterwards is answered. The oversized frames at the end
    // made libzmq drop the connection for good (it does not reconnect after a
    // protocol error); the client notices that its socket takes nothing and
    // reconnects, under a new routing id.
    let call = tokio::spawn({
        let c = c.clone();
        async move { c.health().await }
    });
    let req = recv(&mut router, Duration::from_secs(3)).await.unwrap();
    let h = wire::open(&key(), &req[1..], 1 << 20).unwrap();
    let reply: ReplyBody = Ok(Response::Health(HealthResponse {
        agent_id: "i-raw".into(),
        agent_version: String::new(),
        message: String::new(),
    }));
    let mut frames = vec![req[0].clone()];
    frames.extend(wire::seal(
        &key(),
        &Header::response(h.request_id),
        wire::encode_body(&reply).unwrap(),
    ));
    router.send(Multipart::from(frames)).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap().agent_id, "i-raw");
}

#[tokio::test]
async fn the_same_create_kernels_twice_creates_kernels_once() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let c = client(server.local_endpoint());
    let kernels = [Uuid::from_u128(11), Uuid::from_u128(12)];

    // One after the other.
    let first = c
        .create_kernels(create_request("ev-a", &kernels))
        .await
        .unwrap();
    let second = c
        .create_kernels(create_request("ev-a", &kernels))
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(agent.count("create_kernels"), 1);

    // At the same time, from two clients.
    let other = client(server.local_endpoint());
    let calls = (0..8).map(|i| {
        let c = if i % 2 == 0 { c.clone() } else { other.clone() };
        async move { c.create_kernels(create_request("ev-b", &kernels)).await }
    });
    let answers = futures::future::join_all(calls).await;
    for a in &answers {
        assert_eq!(a.as_ref().unwrap().kernels.len(), 2);
    }
    assert_eq!(agent.count("create_kernels"), 2);

    // The same event creating other kernels is another call.
    c.create_kernels(create_request("ev-b", &[Uuid::from_u128(13)]))
        .await
        .unwrap();
    assert_eq!(agent.count("create_kernels"), 3);

    // A definitive error is remembered; a transient one is not.
    let destroy = DestroyKernelRequest {
        idempotency_key: "ev-c".into(),
        kernel_id: Uuid::nil(),
        session_id: Uuid::nil(),
        reason: String::new(),
        suppress_events: false,
    };
    for _ in 0..2 {
        let r = c.destroy_kernel(destroy.clone()).await;
        assert!(matches!(
            r,
            Err(RpcError::Remote(RemoteError::NotFound { .. }))
        ));
    }
    assert_eq!(agent.count("destroy_kernel"), 1);
    let interrupt = InterruptKernelRequest {
        idempotency_key: "ev-d".into(),
        session_id: Uuid::nil(),
        kernel_id: Uuid::nil(),
    };
    for _ in 0..2 {
        let r = c.interrupt_kernel(interrupt.clone()).await;
        assert!(matches!(
            r,
            Err(RpcError::Remote(RemoteError::Unavailable { .. }))
        ));
    }
    assert_eq!(agent.count("interrupt_kernel"), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn overload_and_panics_are_answered_with_typed_errors() {
    let agent = Arc::new(TestAgent::default());
    let mut config = server_config();
    config.max_in_flight = 2;
    let server = start_with(agent.clone(), config);
    let c = client(server.local_endpoint());

    let calls = (0..3).map(|i| {
        let c = c.clone();
        async move {
            if i > 0 {
                sleep(Duration::from_millis(50)).await;
            }
            c.call(
                Request::Health(HealthRequest {
                    message: "sleep:300".into(),
                }),
                None,
            )
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let unavailable = results
        .iter()
        .filter(|r| matches!(r, Err(RpcError::Remote(RemoteError::Unavailable { .. }))))
        .count();
    assert_eq!(unavailable, 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);

    let r = c
        .call(
            Request::Health(HealthRequest {
                message: "panic".into(),
            }),
            None,
        )
        .await;
    assert!(
        matches!(r, Err(RpcError::Remote(RemoteError::Internal { .. }))),
        "{r:?}"
    );
    assert_eq!(c.health().await.unwrap().agent_id, "i-test");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_running_calls_finish() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let endpoint = server.local_endpoint().to_owned();
    let c = client_with(&endpoint, key(), Duration::from_millis(1500));
    c.health().await.unwrap();

    let running = tokio::spawn({
        let c = c.clone();
        async move {
            c.call(
                Request::Health(HealthRequest {
                    message: "sleep:300".into(),
                }),
                None,
            )
            .await
        }
    });
    sleep(Duration::from_millis(100)).await;
    server.shutdown().await.unwrap();
    assert!(running.await.unwrap().is_ok());

    // Nobody answers any more.
    let r = c
        .call(
            Request::Health(HealthRequest::default()),
            Some(Duration::from_millis(200)),
        )
        .await;
    assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
}

#[tokio::test]
async fn the_client_reconnects_to_a_restarted_agent() {
    let agent = Arc::new(TestAgent::default());
    let server = start(agent.clone());
    let endpoint = server.local_endpoint().to_owned();
    let c = client_with(&endpoint, key(), Duration::from_secs(3));
    c.health().await.unwrap();
    server.shutdown().await.unwrap();

    // The agent comes back on the same address.
    let deadline = Instant::now() + Duration::from_secs(3);
    let again = loop {
        match Server::bind(&endpoint, server_config()) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot rebind {endpoint}: {e}"),
        }
    };
    let again = again.spawn(agent.clone());
    // A call sent while the old connection was still closing may be lost
    // (as with any agent going away mid-call); later ones get through.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c
            .call(
                Request::Health(HealthRequest::default()),
                Some(Duration::from_millis(500)),
            )
            .await;
        match r {
            Ok(Response::Health(h)) => {
                assert_eq!(h.agent_id, "i-test");
                break;
            }
            Err(RpcError::Timeout { .. }) if Instant::now() < deadline => {}
            other => panic!("{other:?}"),
        }
    }
    again.shutdown().await.unwrap();
}
