//! `just bench-sessions`: sessions through the queue and onto agents.
//!
//! Against the durable halfstack, each part on a fresh database:
//!
//! 0. **baseline** (the event store bench's): raw single-row PostgreSQL
//!    `INSERT` commits into a plain table — commits/s at
//!    `BENCH_CONNECTIONS` (32) clients, and the commit latency of one lone
//!    client (p50/p99), `BENCH_BASELINE_SECONDS` (5) each. Every figure
//!    below is also printed as a ratio to it;
//! 1. **enqueue**: the release `manager start-server`, `BENCH_CONNECTIONS`
//!    signed clients `POST /session` with `enqueueOnly` (unique names,
//!    the default fixture's `python` image) for `BENCH_SECONDS` (10),
//!    sessions/s. The scheduler is kept out of it: this benchmark holds
//!    the scheduler's advisory lock (`SCHEDULER_LOCK`) on a connection of
//!    its own, so no manager plans while the queue fills;
//! 2. **placement**, in process: 1,000 agents registered through the agent
//!    command handler (32 CPUs, 256 GiB each), sessions of 16 owners
//!    (keypairs of the `default` policy) — owner *k* already holds *2k*
//!    placed sessions, so DRF's shares differ — then `BENCH_PLACE` (10,000)
//!    sessions enqueued through `EnqueueSession` (1, 2 or 4 CPUs and 2, 4
//!    or 8 GiB, owners round robin; not timed), the `default` scaling
//!    group's scheduler set to `drf`, then (on a database of its own)
//!    `fifo`; timed: `Scheduler::schedule_once()` rounds on a view
//!    following the log, until every session is SCHEDULED. Each round is
//!    split into planning (until the view shows its first placement) and
//!    appending (until the view has folded its last one);
//! 3. **create → RUNNING**: the release manager and one release `agent`
//!    process running `BENCH_RUN_AGENTS` (100) dummy agents with zero
//!    delays (64 CPUs, 256 GiB each); `BENCH_RUN_SESSIONS` (500) sessions
//!    created one at a time without `enqueueOnly` (the request is held
//!    until the session is RUNNING), latency p50/p99 as the client sees
//!    it. Sessions stay running (the view grows as a busy cluster's does).
//!    The latency is then split into its steps from the log's
//!    `recorded_at` (enqueued, scheduled, first kernel step, started).
//!
//! Parts 1–3 also print the CPU the manager, PostgreSQL, Redis and this
//! process used (from `/proc`), to tell where a figure's time went.
//!
//! The last line is one JSON object with `enqueue_rps`,
//! `place_10k_drf_s`, `place_10k_fifo_s`, `create_to_running_p50_ms`,
//! `create_to_running_p99_ms`, the baseline and the ratios.
//! `BENCH_ONLY=enqueue,place,run` runs only the named parts (the baseline
//! always runs). The load generator, the agents, the manager, PostgreSQL and
//! Redis share the machine's cores.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_rpc::notice::AgentInfo;
use chrono::{SecondsFormat, Utc};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures::StreamExt;
use manager_command::agent::{self as agents, Agent, AgentCommand};
use manager_command::auth::signature::{RequestParts, parse_date, sign};
use manager_command::handler::CommandHandler;
use manager_command::keypair::{self, Keypair};
use manager_command::reservation::Reservation;
use manager_command::scaling_group::{self, ScalingGroup, ScalingGroupCommand};
use manager_command::session::EnqueueSession;
use manager_command::session::scheduler::{SCHEDULER_LOCK, Scheduler, SchedulerConfig};
use manager_command::session::view::SessionView;
use manager_events::session::{
    ClusterMode, KernelSpec, Owner, SessionImage, SessionSpec, SessionType,
};
use manager_events::{EventMetadata, EventStore, EventStoreConfig};
use serde_json::{Value, json};
use uuid::Uuid;

const ADMIN_AK: &str = "AKIAIOSFODNN7EXAMPLE";
const ADMIN_SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const RPC_KEY: &str = "bench-sessions-rpc-key-0123456789abcdef";
const GIB: u64 = 1 << 30;
/// Owners of the placement part's sessions.
const OWNERS: usize = 16;
/// Agents of the placement part.
const PLACE_AGENTS: usize = 1000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `p` quantile of sorted latencies in µs, in ms.
fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// A child process, stopped with SIGTERM (then killed) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: a fleet deletes its keys and says goodbye.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` and returns it with the first stdout line; the rest of
/// stdout is drained in the background.
fn spawn_reading_first_line(mut cmd: Command) -> (Proc, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    (Proc(child), line)
}

/// The release `agent` binary next to this benchmark's directory.
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let agent = dir.join("agent");
    assert!(
        agent.exists(),
        "{} is missing: `cargo build --release -p agent` first (just bench-sessions does)",
        agent.display()
    );
    agent
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

// `RunQueryDsl` is imported only here: its blanket methods (`load`,
// `execute`) would shadow the command handler's and the atomics'.

/// `sql` answering one `n`.
async fn count(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(sql)
        .get_result::<Count>(conn)
        .await
        .unwrap()
        .n
}

/// `sql` answering one text `v`.
async fn text(conn: &mut AsyncPgConnection, sql: &str) -> String {
    use diesel_async::RunQueryDsl;
    diesel::sql_query(sql)
        .get_result::<Setting>(conn)
        .await
        .unwrap()
        .v
}

/// One single-row INSERT, committed on its own.
async fn insert_row(conn: &mut AsyncPgConnection, payload: String) {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("INSERT INTO bench_plain (payload) VALUES ($1::jsonb)")
        .bind::<diesel::sql_types::Text, _>(payload)
        .execute(conn)
        .await
        .unwrap();
}

/// Where the benchmark's databases live.
struct Pg {
    admin_url: String,
    redis_url: String,
    run: String,
}

impl Pg {
    fn url(&self, db: &str) -> String {
        self.admin_url.rsplit_once('/').map_or_else(
            || panic!("BENCH_ADMIN_DATABASE_URL needs a database name"),
            |(base, _)| format!("{base}/{db}"),
        )
    }

    /// A new empty database `db` (dropped first if it exists); its URL.
    async fn fresh(&self, db: &str) -> String {
        let mut admin = AsyncPgConnection::establish(&self.admin_url).await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            format!("CREATE DATABASE {db}"),
        ] {
            admin.batch_execute(&sql).await.unwrap();
        }
        self.url(db)
    }

    /// The `manager` binary configured for `db_url`, with a Redis prefix of
    /// this run and part (fresh rate-limit windows).
    fn manager(&self, db_url: &str, part: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_manager"));
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env("MANAGER_DB__URL", db_url)
            .env("MANAGER_DB__POOL_SIZE", "32")
            .env("MANAGER_REDIS__URL", &self.redis_url)
            .env("MANAGER_REDIS__KEY_PREFIX", self.prefix(part))
            .env("MANAGER_AGENTS__RPC_KEY", RPC_KEY)
            .env("MANAGER_LOGGING__LEVEL", "error")
            .env("MANAGER_API__BIND", "127.0.0.1:0")
            .env("MANAGER_METRICS__BIND", "127.0.0.1:0")
            .args(args);
        cmd
    }

    fn prefix(&self, part: &str) -> String {
        format!("bench-sessions-{}-{part}", self.run)
    }

    /// Migrates `db_url` and loads the fixture files, through the binary.
    fn populate(&self, db_url: &str, fixtures: &[&str]) {
        for file in fixtures {
            let out = self
                .manager(db_url, "setup", &["fixture", "populate", file])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// `manager start-server` over `db_url`; the server and its API host.
    fn start(&self, db_url: &str, part: &str) -> (Proc, String) {
        let (server, line) =
            spawn_reading_first_line(self.manager(db_url, part, &["start-server"]));
        let host = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .unwrap_or_else(|| panic!("the manager did not start: {line:?}"))
            .to_owned();
        (server, host)
    }
}

/// A request ready to send, signed as the official client signs (the
/// admin keypair).
fn request(
    client: &reqwest::Client,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false);
    let content_type = if body.is_some() {
        "application/json"
    } else {
        "text/plain"
    };
    let parts = RequestParts {
        method,
        rel_url: path,
        host,
        date: Some(&date),
        authorization: None,
        content_type: Some(content_type),
        api_version: Some("v7.20230615"),
        legacy_api_version: None,
    };
    let signature = sign(&parts, "sha256", parse_date(&date).unwrap(), ADMIN_SK).unwrap();
    let mut req = client
        .request(method.parse().unwrap(), format!("http://{host}{path}"))
        .header("Date", &date)
        .header("Content-Type", content_type)
        .header("X-BackendAI-Version", "v7.20230615")
        .header(
            "Authorization",
            format!("BackendAI signMethod=HMAC-SHA256, credential={ADMIN_AK}:{signature}"),
        );
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    req
}

/// Waits until the server answers signed requests (the projectors have
/// caught up with the fixture).
async fn ready(client: &reqwest::Client, host: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = request(client, host, "GET", "/auth/role", None)
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the manager did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Raises the admin keypair's rate limit (the fixture's 30,000 per 15
/// minutes would refuse part of a fast run); the limiter is still consulted.
async fn raise_rate_limit(client: &reqwest::Client, host: &str) {
    let body = json!({"query": format!("mutation {{ modify_keypair(access_key: \"{ADMIN_AK}\", props: {{rate_limit: 2000000000}}) {{ ok msg }} }}")});
    let v: Value = request(client, host, "POST", "/admin/gql", Some(&body))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["modify_keypair"]["ok"], true, "{v}");
    // Past the authenticator's cache of the old limit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

/// What a load phase measured.
struct Phase {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
}

/// Runs `connections` loops for `seconds`; `make(task, i)` builds the i-th
/// request of a task; `check` says whether a response body is a success.
async fn phase<F>(
    name: &str,
    connections: usize,
    seconds: f64,
    make: F,
    check: fn(&str) -> bool,
) -> Phase
where
    F: Fn(usize, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for task in 0..connections {
        let make = Arc::clone(&make);
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let req = make(task, i);
                i += 1;
                let t = Instant::now();
                let ok = match req.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        let ok = status.is_success() && check(&text);
                        if !ok && errors.load(Ordering::Relaxed) < 3 {
                            eprintln!("{status}: {text}");
                        }
                        ok
                    }
                    Err(_) => false,
                };
                latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let errors = errors.load(Ordering::Relaxed);
    let ok = all.len() as u64 - errors;
    let result = Phase {
        rps: ok as f64 / elapsed,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        ok,
        errors,
    };
    println!(
        "{name:<28} {:>8.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   errors {}",
        result.rps, result.p50_ms, result.p99_ms, result.errors
    );
    result
}

// ---------------------------------------------------------------------------
// 0. Baseline
// ---------------------------------------------------------------------------

struct Baseline {
    insert_rps: f64,
    insert_1_p50_ms: f64,
    insert_1_p99_ms: f64,
}

/// Raw single-row INSERT commits: the rate at `connections` clients, and a
/// lone client's latency.
async fn baseline(pg: &Pg, connections: usize, seconds: f64) -> Baseline {
    let url = pg.fresh("mgr_bench_sessions_base").await;
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    conn.batch_execute("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        .await
        .unwrap();
    let insert = |clients: usize| {
        let url = url.clone();
        async move {
            let stop = Arc::new(AtomicBool::new(false));
            let mut tasks = Vec::new();
            for w in 0..clients {
                let (url, stop) = (url.clone(), Arc::clone(&stop));
                tasks.push(tokio::spawn(async move {
                    let mut c = AsyncPgConnection::establish(&url).await.unwrap();
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let payload = json!({"n": i, "w": w, "kind": "bench", "slots": {"cpu": "1", "mem": "1073741824"}});
                        let t = Instant::now();
                        insert_row(&mut c, payload.to_string()).await;
                        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                        i += 1;
                    }
                    lat
                }));
            }
            // Connections are established before the clock starts.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = count_rows(&url).await;
            let t = Instant::now();
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            let done = count_rows(&url).await - before;
            let rate = done as f64 / t.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            let mut lat = Vec::new();
            for task in tasks {
                lat.extend(task.await.unwrap());
            }
            lat.sort_unstable();
            (rate, lat)
        }
    };
    let (insert_rps, _) = insert(connections).await;
    println!("baseline: INSERT, {connections} clients   {insert_rps:>8.0} commits/s");
    let (_, lat) = insert(1).await;
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!("baseline: INSERT, 1 client     p50 {p50:.3} ms   p99 {p99:.3} ms");
    Baseline {
        insert_rps,
        insert_1_p50_ms: p50,
        insert_1_p99_ms: p99,
    }
}

async fn count_rows(url: &str) -> i64 {
    let mut c = AsyncPgConnection::establish(url).await.unwrap();
    count(&mut c, "SELECT count(*) AS n FROM bench_plain").await
}

// ---------------------------------------------------------------------------
// 1. Enqueue
// ---------------------------------------------------------------------------

async fn enqueue(pg: &Pg, connections: usize, seconds: f64) -> Phase {
    let url = pg.fresh("mgr_bench_sessions_enqueue").await;
    pg.populate(&url, &["fixtures/default.json"]);
    // No manager may schedule while the queue fills: hold the lock first.
    let mut lock = AsyncPgConnection::establish(&url).await.unwrap();
    lock.batch_execute(&format!("SELECT pg_advisory_lock({SCHEDULER_LOCK})"))
        .await
        .unwrap();
    let (server, host) = pg.start(&url, "enqueue");
    println!(
        "enqueue: manager pid {}; the scheduler's lock is held by this benchmark (nothing is placed)",
        server.0.id()
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections * 2)
        .build()
        .unwrap();
    ready(&client, &host).await;
    raise_rate_limit(&client, &host).await;
    let check: fn(&str) -> bool = |t| t.contains("\"status\":\"PENDING\"");
    let make = |tag: &'static str| {
        let (c, h) = (client.clone(), host.clone());
        move |task: usize, i: u64| {
            let body = json!({"name": format!("{tag}-{task}-{i}"), "image": "python", "enqueueOnly": true});
            request(&c, &h, "POST", "/session", Some(&body))
        }
    };
    phase("enqueue warm-up (1 s)", connections, 1.0, make("w"), check).await;
    let cpu = Cpu::now(Some(server.0.id()));
    let measured = phase(
        "POST /session enqueueOnly",
        connections,
        seconds,
        make("q"),
        check,
    )
    .await;
    println!("enqueue: {}", cpu.since());
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let logged = count(
        &mut conn,
        "SELECT count(*) AS n FROM events WHERE stream_type = 'session' AND stream_version = 1",
    )
    .await;
    let placed = count(
        &mut conn,
        "SELECT count(*) AS n FROM events WHERE stream_type = 'session' AND stream_version > 1",
    )
    .await;
    println!("enqueue: {logged} sessions in the log, {placed} later session events (must be 0)");
    drop(server);
    drop(lock);
    measured
}

// ---------------------------------------------------------------------------
// 2. Placement
// ---------------------------------------------------------------------------

fn owner_key(k: usize) -> String {
    format!("AKIABENCHOWNER{k:06}")
}

/// A fixture of the owners: a user and a keypair (`default` policy) each.
fn owners_fixture() -> PathBuf {
    let users: Vec<Value> = (0..OWNERS)
        .map(|k| {
            json!({"email": format!("owner{k}@example.com"), "username": format!("owner{k}"),
                   "password": "bench-password", "role": "user", "domain_name": "default"})
        })
        .collect();
    let keypairs: Vec<Value> = (0..OWNERS)
        .map(|k| {
            json!({"user_email": format!("owner{k}@example.com"), "access_key": owner_key(k),
                   "secret_key": format!("{:0>40}", k), "rate_limit": 1_000_000})
        })
        .collect();
    let path =
        std::env::temp_dir().join(format!("bench-sessions-owners-{}.json", std::process::id()));
    std::fs::write(
        &path,
        json!({"users": users, "keypairs": keypairs}).to_string(),
    )
    .unwrap();
    path
}

fn agent_info(n: usize) -> AgentInfo {
    let id = format!("i-bench-{n:04}");
    AgentInfo {
        addr: format!("tcp://10.0.{}.{}:6011", n / 250, n % 250 + 1),
        id,
        region: "local".into(),
        scaling_group: "default".into(),
        architecture: "x86_64".into(),
        version: "bench".into(),
        protocol_version: 1,
        available_slots: [
            ("cpu".to_owned(), "32".to_owned()),
            ("mem".to_owned(), (256 * GIB).to_string()),
        ]
        .into(),
        slot_types: [
            ("cpu".to_owned(), "count".to_owned()),
            ("mem".to_owned(), "bytes".to_owned()),
        ]
        .into(),
        ..Default::default()
    }
}

/// A single-kernel python session of `cpu` CPUs and `mem_gib` GiB, as
/// `POST /session` would enqueue it.
fn spec(id: Uuid, name: String, cpu: u32, mem_gib: u64) -> SessionSpec {
    SessionSpec {
        name,
        session_type: SessionType::Interactive,
        image: SessionImage {
            canonical: "cr.backend.ai/stable/python:3.9-ubuntu20.04".into(),
            architecture: "x86_64".into(),
            registry: "cr.backend.ai".into(),
            tag: "3.9-ubuntu20.04".into(),
        },
        cluster_mode: ClusterMode::SingleNode,
        slots_per_kernel: [
            ("cpu".to_owned(), cpu.to_string()),
            ("mem".to_owned(), (mem_gib * GIB).to_string()),
        ]
        .into(),
        resource_opts: [("shmem".to_owned(), (64u64 << 20).to_string())].into(),
        scaling_group: "default".into(),
        kernels: vec![KernelSpec {
            id,
            cluster_role: "main".into(),
            cluster_idx: 1,
            local_rank: 0,
            cluster_hostname: "main1".into(),
        }],
        ..SessionSpec::default()
    }
}

/// Enqueues `(owner, name, cpu, mem)` sessions, 32 at a time.
async fn enqueue_all(
    handler: &CommandHandler,
    owners: &[Owner],
    sessions: Vec<(usize, String, u32, u64)>,
) {
    futures::stream::iter(sessions.into_iter().map(|(k, name, cpu, mem)| {
        let handler = handler.clone();
        let owner = owners[k].clone();
        async move {
            let id = Uuid::new_v4();
            handler
                .transact(
                    &EnqueueSession {
                        id,
                        creation_id: Uuid::new_v4().simple().to_string(),
                        owner,
                        spec: spec(id, name, cpu, mem),
                    },
                    EventMetadata::default(),
                )
                .await
                .unwrap();
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<()>>()
    .await;
}

fn pending(view: &SessionView) -> usize {
    view.pending().len()
}

async fn catch_up(view: &SessionView, store: &EventStore) {
    let head = store.head_position().await.unwrap();
    assert!(
        view.wait_for(head, Duration::from_secs(60)).await,
        "the view did not reach the log's head {head}"
    );
}

/// CPU seconds (user + system) process `pid` has used so far (0 once it
/// is gone).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// The processes named `comm` (e.g. every PostgreSQL backend).
fn pids_named(comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim() == comm)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time used so far by this process, a manager (if any), PostgreSQL's
/// processes and Redis, to tell where a phase's time went.
#[derive(Clone)]
struct Cpu {
    at: Instant,
    manager: Option<(u32, f64)>,
    bench: f64,
    postgres: BTreeMap<u32, f64>,
    redis: f64,
}

impl Cpu {
    fn now(manager: Option<u32>) -> Cpu {
        Cpu {
            at: Instant::now(),
            manager: manager.map(|pid| (pid, cpu_seconds(pid))),
            bench: cpu_seconds(std::process::id()),
            postgres: pids_named("postgres")
                .into_iter()
                .map(|pid| (pid, cpu_seconds(pid)))
                .collect(),
            redis: pids_named("redis-server")
                .into_iter()
                .map(cpu_seconds)
                .sum(),
        }
    }

    /// Each party's share of one core since `self` (PostgreSQL: its
    /// processes alive at the end; backends that exited meanwhile are lost).
    fn since(&self) -> CpuShare {
        let now = Cpu::now(self.manager.map(|(pid, _)| pid));
        let wall = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let pct = |s: f64| s / wall * 100.0;
        let postgres: f64 = now
            .postgres
            .iter()
            .map(|(pid, s)| s - self.postgres.get(pid).copied().unwrap_or(0.0))
            .sum();
        CpuShare {
            manager: match (self.manager, now.manager) {
                (Some((_, a)), Some((_, b))) => pct(b - a),
                _ => 0.0,
            },
            bench: pct(now.bench - self.bench),
            postgres: pct(postgres),
            redis: pct(now.redis - self.redis),
            bench_s: now.bench - self.bench,
        }
    }
}

/// Shares of one core over a phase, in percent.
struct CpuShare {
    manager: f64,
    bench: f64,
    postgres: f64,
    redis: f64,
    bench_s: f64,
}

impl std::fmt::Display for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU, % of one core: manager {:.0}, PostgreSQL {:.0}, Redis {:.0}, this benchmark {:.0}; total {:.0} of {}",
            self.manager,
            self.postgres,
            self.redis,
            self.bench,
            self.manager + self.postgres + self.redis + self.bench,
            100 * std::thread::available_parallelism().map_or(1, |n| n.get())
        )
    }
}

/// What placing the queue took.
struct Placement {
    seconds: f64,
    rounds: usize,
    plan_s: f64,
    append_s: f64,
    cpu_s: f64,
    conflicts: usize,
}

async fn place(pg: &Pg, policy: &str, sessions: usize) -> Placement {
    let url = pg.fresh(&format!("mgr_bench_sessions_{policy}")).await;
    let owners_file = owners_fixture();
    pg.populate(
        &url,
        &["fixtures/default.json", owners_file.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&owners_file);
    let store = EventStore::connect(&url, 32, EventStoreConfig::default()).unwrap();
    let handler = CommandHandler::new(store.clone());

    // The scaling group's queue policy.
    let group = scaling_group::stream_id("default");
    let (g, _) = handler.load::<ScalingGroup>(&group).await.unwrap();
    let mut fields = g.live().unwrap().clone();
    fields.scheduler = policy.into();
    handler
        .execute::<ScalingGroup>(
            &group,
            ScalingGroupCommand::Modify(fields),
            EventMetadata::default(),
        )
        .await
        .unwrap();

    // 1,000 agents, registered as their `agent_started` notices would.
    let t = Instant::now();
    futures::stream::iter((0..PLACE_AGENTS).map(|n| {
        let handler = handler.clone();
        async move {
            let info = agent_info(n);
            handler
                .execute::<Agent>(
                    &agents::stream_id(&info.id),
                    AgentCommand::Started {
                        instance: Uuid::new_v4(),
                        info,
                    },
                    EventMetadata::default(),
                )
                .await
                .unwrap();
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<()>>()
    .await;
    let registered = t.elapsed().as_secs_f64();

    // The owners, as the API would fill them in.
    let (project, _) = handler
        .load::<Reservation>(&manager_events::reservation::stream_id(
            "project-name",
            "default/default",
        ))
        .await
        .unwrap();
    let project_id: Uuid = project
        .holder
        .as_deref()
        .and_then(|h| h.strip_prefix("project:"))
        .unwrap()
        .parse()
        .unwrap();
    let mut owners = Vec::new();
    for k in 0..OWNERS {
        let (kp, _) = handler
            .load::<Keypair>(&keypair::stream_id(&owner_key(k)))
            .await
            .unwrap();
        owners.push(Owner {
            access_key: owner_key(k),
            user_id: kp.live().unwrap().user_uuid,
            project_id,
            domain_name: "default".into(),
        });
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let view = SessionView::new();
    let follower = tokio::spawn(view.clone().follow(store.clone(), stopped));
    let scheduler = Scheduler::new(
        handler.clone(),
        view.clone(),
        SchedulerConfig {
            database_url: url.clone(),
            tick: Duration::from_secs(3600),
        },
    );

    // What the owners already run: owner k holds 2k sessions of 4 CPUs.
    let held: Vec<(usize, String, u32, u64)> = (0..OWNERS)
        .flat_map(|k| (0..2 * k).map(move |i| (k, format!("held-{k}-{i}"), 4, 8)))
        .collect();
    let held_n = held.len();
    enqueue_all(&handler, &owners, held).await;
    catch_up(&view, &store).await;
    while pending(&view) > 0 {
        scheduler.schedule_once().await.unwrap();
    }

    // The queue.
    let t = Instant::now();
    let queue: Vec<(usize, String, u32, u64)> = (0..sessions)
        .map(|i| {
            (
                i % OWNERS,
                format!("s-{i}"),
                [1, 2, 4][i % 3],
                [2, 4, 8][i % 3],
            )
        })
        .collect();
    enqueue_all(&handler, &owners, queue).await;
    catch_up(&view, &store).await;
    let enqueued = t.elapsed().as_secs_f64();
    assert_eq!(pending(&view), sessions);
    println!(
        "place ({policy}): {PLACE_AGENTS} agents registered in {registered:.1} s; {held_n} sessions placed before; \
         {sessions} enqueued by {OWNERS} owners in {enqueued:.1} s (not timed)"
    );

    // Timed: rounds until nothing is pending.
    let (cpu0, started) = (Cpu::now(None), Instant::now());
    let (mut rounds, mut placed, mut conflicts) = (0, 0, 0);
    let (mut plan_s, mut append_s) = (0.0, 0.0);
    while placed < sessions {
        assert!(
            rounds < 100,
            "{placed} of {sessions} placed after {rounds} rounds"
        );
        let mut changes = view.changes();
        changes.borrow_and_update();
        let t = Instant::now();
        // When the view first moves: the plan is made and its first
        // placement committed and delivered.
        let first = tokio::spawn(async move {
            let _ = changes.changed().await;
            Instant::now()
        });
        let round = scheduler.schedule_once().await.unwrap();
        let done = Instant::now();
        let first = if first.is_finished() {
            first.await.unwrap()
        } else {
            first.abort();
            done
        };
        let (p, a) = (
            first.duration_since(t).as_secs_f64(),
            done.duration_since(first).as_secs_f64(),
        );
        println!(
            "  round {}: {:>6} placed, {} conflicts, {} deferred in {:.3} s (planning {:.3} s, appending {:.3} s)",
            rounds + 1,
            round.placed,
            round.conflicts,
            round.deferred,
            done.duration_since(t).as_secs_f64(),
            p,
            a
        );
        plan_s += p;
        append_s += a;
        rounds += 1;
        placed += round.placed;
        conflicts += round.conflicts;
    }
    let seconds = started.elapsed().as_secs_f64();
    let share = cpu0.since();
    let cpu_s = share.bench_s;
    assert_eq!(pending(&view), 0);
    println!(
        "place ({policy}): {sessions} sessions on {PLACE_AGENTS} agents in {seconds:.3} s, {rounds} round(s), \
         {conflicts} conflicts; this process used {cpu_s:.2} CPU s"
    );
    println!("place ({policy}): {share}");
    let _ = stop.send(true);
    follower.await.unwrap();
    store.shutdown().await;
    Placement {
        seconds,
        rounds,
        plan_s,
        append_s,
        cpu_s,
        conflicts,
    }
}

// ---------------------------------------------------------------------------
// 3. Create → RUNNING
// ---------------------------------------------------------------------------

async fn create_to_running(pg: &Pg, agents: usize, sessions: usize) -> (f64, f64, u64) {
    let url = pg.fresh("mgr_bench_sessions_run").await;
    pg.populate(&url, &["fixtures/default.json"]);
    let (server, host) = pg.start(&url, "run");
    let client = reqwest::Client::new();
    ready(&client, &host).await;
    raise_rate_limit(&client, &host).await;

    let mut cmd = Command::new(agent_binary());
    cmd.env("AGENT_RPC__CLUSTER_KEY", RPC_KEY)
        .env("AGENT_LOGGING__LEVEL", "error")
        .env("AGENT_DUMMY__PULL_DELAY_MS", "0")
        .env("AGENT_DUMMY__CREATE_DELAY_MS", "0")
        .env("AGENT_DUMMY__DESTROY_DELAY_MS", "0")
        .env("AGENT_DUMMY__EXECUTE_DELAY_MS", "0")
        .args([
            "--backend",
            "dummy",
            "--id",
            "bench",
            "--count",
            &agents.to_string(),
            "--listen",
            "tcp://127.0.0.1:0",
            "--redis-url",
            &pg.redis_url,
            "--key-prefix",
            &pg.prefix("run"),
            "--slot",
            "cpu=64",
            "--slot",
            "mem=256g",
        ]);
    let (fleet, line) = spawn_reading_first_line(cmd);
    assert!(line.contains("rpc="), "the agents did not start: {line:?}");
    let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = count(
            &mut conn,
            "SELECT count(DISTINCT stream_id) AS n FROM events WHERE stream_type = 'agent'",
        )
        .await;
        if usize::try_from(n).unwrap_or(0) >= agents {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {agents} agents registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "run: manager pid {}, {agents} dummy agents (zero delays) pid {}",
        server.0.id(),
        fleet.0.id()
    );

    let create = |name: String| {
        let body = json!({"name": name, "image": "python", "maxWaitSeconds": 30});
        request(&client, &host, "POST", "/session", Some(&body))
    };
    for i in 0..20 {
        let v: Value = create(format!("warm-{i}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"], "RUNNING", "{v}");
    }
    let from = count(
        &mut conn,
        "SELECT coalesce(max(position), 0) AS n FROM events",
    )
    .await;
    let mut lat = Vec::with_capacity(sessions);
    // Per session: its id, and when the request was sent and answered.
    let mut timed: Vec<(String, i64, i64)> = Vec::with_capacity(sessions);
    let mut errors = 0u64;
    let (cpu, fleet_cpu) = (Cpu::now(Some(server.0.id())), cpu_seconds(fleet.0.id()));
    let t = Instant::now();
    for i in 0..sessions {
        let (started, sent) = (Instant::now(), Utc::now().timestamp_micros());
        let r = create(format!("run-{i}")).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        lat.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        let answered = Utc::now().timestamp_micros();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() || v["status"] != "RUNNING" {
            if errors < 3 {
                eprintln!("{status}: {text}");
            }
            errors += 1;
        } else if let Some(id) = v["sessionId"].as_str() {
            timed.push((format!("session:{id}"), sent, answered));
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    lat.sort_unstable();
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    println!(
        "create → RUNNING, one at a time: {sessions} sessions in {elapsed:.1} s, p50 {p50:.2} ms, p99 {p99:.2} ms, \
         max {:.2} ms, errors {errors}",
        percentile(&lat, 1.0)
    );
    println!(
        "run: {}; the agents {:.0}",
        cpu.since(),
        (cpu_seconds(fleet.0.id()) - fleet_cpu) / elapsed * 100.0
    );
    steps(&mut conn, from, &timed).await;
    drop(fleet);
    drop(server);
    (p50, p99, errors)
}

#[derive(QueryableByName)]
struct Step {
    #[diesel(sql_type = diesel::sql_types::Text)]
    stream_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    request_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    us: i64,
}

/// Where create → RUNNING goes, from the log: each session's events after
/// position `from` with their `recorded_at` (the writer's clock when its
/// group took the log's lock, just before the commit), between the
/// client's send and answer. Prints p50/p99 of each step.
async fn steps(conn: &mut AsyncPgConnection, from: i64, timed: &[(String, i64, i64)]) {
    use diesel_async::RunQueryDsl;
    let rows: Vec<Step> = diesel::sql_query(
        "SELECT stream_id, event_type, coalesce(request_id, '') AS request_id, \
         (extract(epoch FROM recorded_at) * 1000000)::bigint AS us \
         FROM events WHERE stream_type = 'session' AND position > $1 ORDER BY position",
    )
    .bind::<diesel::sql_types::BigInt, _>(from)
    .load(conn)
    .await
    .unwrap();
    let mut by_session: std::collections::HashMap<&str, Vec<&Step>> = Default::default();
    for r in &rows {
        by_session.entry(r.stream_id.as_str()).or_default().push(r);
    }
    const NAMES: [&str; 5] = [
        "request sent → SessionEnqueued (API checks, enqueue append)",
        "SessionEnqueued → SessionScheduled (view, plan, placement append)",
        "SessionScheduled → first kernel step (driver RPC, agent notice, append)",
        "first kernel step → KernelStarted (more steps, appends)",
        "KernelStarted → answer received (view, HTTP)",
    ];
    let mut gaps: Vec<Vec<u32>> = vec![Vec::new(); NAMES.len()];
    let (mut by_driver, mut by_notice, mut kernel_steps) = (0, 0, 0);
    for (stream, sent, answered) in timed {
        let Some(events) = by_session.get(stream.as_str()) else {
            continue;
        };
        let at = |ty: &str| events.iter().find(|e| e.event_type == ty);
        let (Some(enq), Some(sch), Some(run)) = (
            at("SessionEnqueued"),
            at("SessionScheduled"),
            at("KernelStarted"),
        ) else {
            continue;
        };
        let first_step = events
            .iter()
            .find(|e| {
                e.us >= sch.us
                    && e.event_type != "SessionScheduled"
                    && e.event_type != "SessionEnqueued"
            })
            .map_or(run.us, |e| e.us);
        kernel_steps += events
            .iter()
            .filter(|e| e.event_type == "KernelsTransitioned" && e.us <= run.us)
            .count();
        if run.request_id.starts_with("driver:") {
            by_driver += 1;
        } else {
            by_notice += 1;
        }
        let points = [*sent, enq.us, sch.us, first_step, run.us, *answered];
        for (i, w) in points.windows(2).enumerate() {
            gaps[i].push(u32::try_from((w[1] - w[0]).max(0)).unwrap_or(u32::MAX));
        }
    }
    let n = gaps[0].len();
    println!(
        "create → RUNNING by step ({n} sessions; {:.1} kernel transitions logged before RUNNING on average; \
         RUNNING recorded from the agent's notice {by_notice}, from the driver's RPC answer {by_driver}):",
        kernel_steps as f64 / n.max(1) as f64
    );
    for (name, mut g) in NAMES.iter().zip(gaps) {
        g.sort_unstable();
        println!(
            "  {name:<74} p50 {:>6.2} ms   p99 {:>7.2} ms",
            percentile(&g, 0.5),
            percentile(&g, 0.99)
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let begun = Instant::now();
    let seconds: f64 = env_or("BENCH_SECONDS", 10.0);
    let baseline_seconds: f64 = env_or("BENCH_BASELINE_SECONDS", 5.0);
    let connections: usize = env_or("BENCH_CONNECTIONS", 32);
    let place_n: usize = env_or("BENCH_PLACE", 10_000);
    let run_agents: usize = env_or("BENCH_RUN_AGENTS", 100);
    let run_sessions: usize = env_or("BENCH_RUN_SESSIONS", 500);
    let only: String = env_or("BENCH_ONLY", String::new());
    let runs = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    let pg = Pg {
        admin_url: env_or(
            "BENCH_ADMIN_DATABASE_URL",
            "postgres://postgres@127.0.0.1:8101/postgres".to_owned(),
        ),
        redis_url: env_or("BENCH_REDIS_URL", "redis://127.0.0.1:8111".to_owned()),
        run: Utc::now().timestamp_millis().to_string(),
    };
    {
        let mut admin = AsyncPgConnection::establish(&pg.admin_url).await.unwrap();
        let durability = text(
            &mut admin,
            "SELECT current_setting('fsync') || '/' || current_setting('synchronous_commit') AS v",
        )
        .await;
        println!(
            "server: fsync/synchronous_commit = {durability}; machine: {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        if durability != "on/on" {
            println!(
                "WARNING: the server is not durable; run `halfstack/halfstack mode durable` for real figures"
            );
        }
    }

    let base = baseline(&pg, connections, baseline_seconds).await;
    let enq = if runs("enqueue") {
        Some(enqueue(&pg, connections, seconds).await)
    } else {
        None
    };
    let (drf, fifo) = if runs("place") {
        (
            Some(place(&pg, "drf", place_n).await),
            Some(place(&pg, "fifo", place_n).await),
        )
    } else {
        (None, None)
    };
    let running = if runs("run") {
        Some(create_to_running(&pg, run_agents, run_sessions).await)
    } else {
        None
    };

    // Ratios: throughputs against INSERT commits/s at the same concurrency
    // (placements/s for the placement), latencies against one lone
    // INSERT's. Parts not run are null.
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "\nagainst the baseline measured in this run (INSERT {:.0} commits/s at {connections} clients; \
         one client's INSERT p50 {:.3} ms, p99 {:.3} ms):",
        base.insert_rps, base.insert_1_p50_ms, base.insert_1_p99_ms
    );
    if let Some(e) = &enq {
        println!(
            "  enqueue            {:>8.0} sessions/s = {:.3} × INSERT commits/s     target ≥ 1,500/s: {}",
            e.rps,
            e.rps / base.insert_rps,
            met(e.rps >= 1500.0)
        );
    }
    let place_rate = |p: &Placement| place_n as f64 / p.seconds;
    for (name, p) in [("drf", &drf), ("fifo", &fifo)] {
        if let Some(p) = p {
            println!(
                "  place {place_n} {name:<4} {:>8.3} s = {:>7.0} placements/s = {:.2} × INSERT commits/s     target ≤ 2 s: {}",
                p.seconds,
                place_rate(p),
                place_rate(p) / base.insert_rps,
                met(p.seconds <= 2.0)
            );
        }
    }
    if let Some((p50, p99, _)) = running {
        println!(
            "  create → RUNNING   p50 {p50:.2} ms = {:.0} × one INSERT's p50; p99 {p99:.2} ms = {:.0} × its p99     \
             target p50 ≤ 30 ms: {}",
            p50 / base.insert_1_p50_ms,
            p99 / base.insert_1_p99_ms,
            met(p50 <= 30.0)
        );
    }
    println!("bench-sessions took {:.0} s", begun.elapsed().as_secs_f64());
    let detail = |p: &Option<Placement>| {
        p.as_ref().map_or(json!(null), |p| {
            json!({"rounds": p.rounds, "planning_s": round3(p.plan_s), "appending_s": round3(p.append_s),
                   "cpu_s": round2(p.cpu_s), "conflicts": p.conflicts})
        })
    };
    let seconds_of = |p: &Option<Placement>| p.as_ref().map(|p| round3(p.seconds));
    let place_vs =
        |p: &Option<Placement>| p.as_ref().map(|p| round3(place_rate(p) / base.insert_rps));
    let summary = json!({
        "enqueue_rps": enq.as_ref().map(|e| round2(e.rps)),
        "place_10k_drf_s": seconds_of(&drf),
        "place_10k_fifo_s": seconds_of(&fifo),
        "create_to_running_p50_ms": running.map(|r| round2(r.0)),
        "create_to_running_p99_ms": running.map(|r| round2(r.1)),
        "baseline_insert_rps": round2(base.insert_rps),
        "baseline_insert_1_p50_ms": round3(base.insert_1_p50_ms),
        "baseline_insert_1_p99_ms": round3(base.insert_1_p99_ms),
        "enqueue_vs_insert": enq.as_ref().map(|e| round3(e.rps / base.insert_rps)),
        "place_drf_vs_insert": place_vs(&drf),
        "place_fifo_vs_insert": place_vs(&fifo),
        "create_to_running_p50_vs_insert": running.map(|r| round2(r.0 / base.insert_1_p50_ms)),
        "create_to_running_p99_vs_insert": running.map(|r| round2(r.1 / base.insert_1_p99_ms)),
        "enqueue_p99_ms": enq.as_ref().map(|e| round2(e.p99_ms)),
        "place_drf": detail(&drf),
        "place_fifo": detail(&fifo),
        "enqueued": enq.as_ref().map(|e| e.ok),
        "errors": enq.as_ref().map_or(0, |e| e.errors) + running.map_or(0, |r| r.2),
    });
    println!("{summary}");
}
