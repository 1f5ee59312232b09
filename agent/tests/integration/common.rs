//! Helpers: configurations isolated per test (their own Redis key prefix,
//! scratch directory and ports), RPC clients, reading the notice stream, a
//! TCP proxy that can cut the agent off Redis, and process checks.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::config::{BackendKind, Config};
use agent_rpc::kernel::{ClusterInfo, CreateKernelsRequest, ImageRef, KernelConfig};
use agent_rpc::notice::{NOTICE_FIELD, Notice, NoticeBody, notice_stream};
use agent_rpc::{Client, ClientConfig, ClusterKey};
use fred::clients::Client as Redis;
use fred::interfaces::{ClientLike, KeysInterface, StreamsInterface};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use uuid::Uuid;

pub const CLUSTER_KEY: &str = "the-agent-test-cluster-key-32-by";

pub fn redis_url() -> String {
    std::env::var("AGENT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:8111".into())
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("agent-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A configuration of its own for one test: a unique id and key prefix,
/// RPC on a free port of 127.0.0.1, fast heartbeats, short delays.
pub fn config(backend: BackendKind, scratch: &TempDir) -> Config {
    let tag = Uuid::new_v4().simple().to_string();
    let mut c = Config::default();
    c.agent.id = format!("i-test-{}", &tag[..8]);
    c.agent.backend = backend;
    c.rpc.listen = "tcp://127.0.0.1:0".into();
    c.rpc.cluster_key = CLUSTER_KEY.into();
    c.redis.url = redis_url();
    c.redis.key_prefix = format!("agent-test-{tag}");
    c.redis.command_timeout_ms = 500;
    c.redis.shutdown_timeout_ms = 2000;
    c.heartbeat.interval_ms = 200;
    c.heartbeat.ttl_ms = 1000;
    c.dummy.create_delay_ms = 5;
    c.dummy.destroy_delay_ms = 5;
    c.dummy.execute_delay_ms = 1;
    c.dummy.seed = Some(7);
    c.process.scratch_dir = scratch.0.clone();
    c.process.kill_grace_ms = 1000;
    c.process.flush_timeout_ms = 5000;
    c
}

pub async fn redis() -> Redis {
    let client = Redis::new(
        fred::types::config::Config::from_url(&redis_url()).unwrap(),
        None,
        None,
        None,
    );
    client.init().await.unwrap();
    client
}

pub fn client(endpoint: &str) -> Client {
    let mut config = ClientConfig::new(ClusterKey::new(CLUSTER_KEY).unwrap());
    config.default_timeout = Duration::from_secs(20);
    Client::connect(endpoint, config).unwrap()
}

/// Every notice on the test's stream, oldest first.
pub async fn notices(redis: &Redis, prefix: &str) -> Vec<Notice> {
    let entries: Vec<(String, HashMap<String, String>)> = redis
        .xrange_values(notice_stream(prefix), "-", "+", None)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| Notice::from_json(&fields[NOTICE_FIELD]).unwrap())
        .collect()
}

/// Waits (up to 10 s) until the stream holds a notice `pick` accepts.
pub async fn wait_notice(
    redis: &Redis,
    prefix: &str,
    what: &str,
    pick: impl Fn(&Notice) -> bool,
) -> Notice {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(n) = notices(redis, prefix).await.into_iter().find(|n| pick(n)) {
            return n;
        }
        assert!(Instant::now() < deadline, "no {what} notice came");
        sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` every 50 ms until it holds, at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes the test's notice stream (heartbeat keys expire by themselves).
pub async fn cleanup(redis: &Redis, prefix: &str) {
    let _: i64 = redis.del(notice_stream(prefix)).await.unwrap_or_default();
}

pub fn kernel(image: &str, slots: &[(&str, &str)]) -> KernelConfig {
    KernelConfig {
        kernel_id: Uuid::new_v4(),
        image: ImageRef {
            canonical: image.into(),
            architecture: std::env::consts::ARCH.into(),
            digest: None,
            registry: String::new(),
            registry_url: String::new(),
            labels: BTreeMap::new(),
            is_local: false,
        },
        auto_pull: "digest".into(),
        session_type: "interactive".into(),
        cluster_role: "main".into(),
        cluster_idx: 1,
        cluster_hostname: "main1".into(),
        local_rank: 0,
        resource_slots: slots
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        resource_opts: BTreeMap::new(),
        environ: BTreeMap::new(),
        mounts: Vec::new(),
        idle_timeout: None,
        bootstrap_script: None,
        startup_command: None,
        preopen_ports: Vec::new(),
        allocated_host_ports: Vec::new(),
        scaling_group: "default".into(),
        endpoint_id: None,
    }
}

pub fn create(session_id: Uuid, kernels: Vec<KernelConfig>) -> CreateKernelsRequest {
    CreateKernelsRequest {
        idempotency_key: Uuid::new_v4().to_string(),
        session_id,
        kernels,
        cluster_info: ClusterInfo::default(),
    }
}

/// Whether `n` is about `kernel_id` and named `name`.
pub fn is_kernel(n: &Notice, name: &str, kernel_id: Uuid) -> bool {
    let (this, id) = match &n.body {
        NoticeBody::KernelPreparing { kernel_id, .. } => ("kernel_preparing", kernel_id),
        NoticeBody::KernelPulling { kernel_id, .. } => ("kernel_pulling", kernel_id),
        NoticeBody::KernelCreating { kernel_id, .. } => ("kernel_creating", kernel_id),
        NoticeBody::KernelStarted { kernel_id, .. } => ("kernel_started", kernel_id),
        NoticeBody::KernelTerminated { kernel_id, .. } => ("kernel_terminated", kernel_id),
        _ => return false,
    };
    this == name && *id == kernel_id
}

/// Whether a process is gone (or a zombie nobody reaped yet).
pub fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("");
            state == "Z" || state == "X"
        }
    }
}

/// Live processes whose working directory is `dir`.
pub fn processes_in(dir: &std::path::Path) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd"))
            && cwd == dir
            && !pid_gone(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// A TCP proxy to Redis that a test can cut and restore.
pub struct Proxy {
    pub url: String,
    open: Arc<Mutex<bool>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let open = Arc::new(Mutex::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (open, conns) = (Arc::clone(&open), Arc::clone(&conns));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !*open.lock().unwrap() {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    conns.lock().unwrap().push(tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    }));
                }
            })
        };
        Proxy {
            url: format!("redis://127.0.0.1:{port}"),
            open,
            conns,
            accept,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        *self.open.lock().unwrap() = false;
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        *self.open.lock().unwrap() = true;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}
