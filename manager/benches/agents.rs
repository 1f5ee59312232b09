//! `just bench-agents`: what a fleet of agents costs the manager.
//!
//! Against a release manager over a durable halfstack and a release agent
//! process running `BENCH_AGENTS` (1,000) dummy agents that heartbeat every
//! `BENCH_HEARTBEAT_MS` (3,000):
//! 1. **ingest**: from the fleet's start until every agent is registered in
//!    the log (each agent's `agent_started` notice through the ingester),
//!    as notices per second;
//! 2. **steady state**: the manager's CPU time over `BENCH_SECONDS` (30) of
//!    heartbeats and liveness sweeps, as a percentage of one core;
//! 3. **RPC**: `health` calls to one agent, 32 in flight for 5 s, p50/p99;
//!    then, as the baseline, the same round trips over a raw ZeroMQ
//!    DEALER/ROUTER echo (no envelope, MAC or encoding).
//!
//! The last line is one JSON object with `agents`,
//! `manager_cpu_pct_of_core`, `notices_per_s`, `rpc_p50_ms`, `rpc_p99_ms`.
//! The agents, the manager, PostgreSQL and Redis share the machine's cores.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_rpc::{Client, ClientConfig, ClusterKey};
use chrono::Utc;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use serde_json::json;

const RPC_KEY: &str = "bench-agents-rpc-key-0123456789abcdef";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: the fleet deletes its keys and says goodbye.
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

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release `agent` binary next to this benchmark's directory.
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let agent = dir.join("agent");
    assert!(
        agent.exists(),
        "{} is missing: `cargo build --release -p agent` first (just bench-agents does)",
        agent.display()
    );
    agent
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

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ: 100 on Linux, as `getconf CLK_TCK` says.
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    ticks / hz
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn registered(conn: &mut AsyncPgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(DISTINCT stream_id) AS n FROM events WHERE stream_type = 'agent'",
    )
    .get_result::<Count>(conn)
    .await
    .map_or(0, |c| c.n)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// The transport alone: a raw ZeroMQ ROUTER echoing on its own thread and
/// runtime (as an agent is another process), and one DEALER with `in_flight`
/// messages outstanding, for `seconds`. Answers the round trips in µs.
async fn raw_zeromq_echo(in_flight: usize, seconds: u64) -> Vec<u32> {
    use futures::{SinkExt, StreamExt};
    use tmq::AsZmqSocket;
    let ctx = tmq::Context::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let server_ctx = ctx.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut router = tmq::router(&server_ctx).bind("tcp://127.0.0.1:*").unwrap();
            tx.send(router.get_socket().get_last_endpoint().unwrap().unwrap())
                .unwrap();
            let echo = async {
                while let Some(Ok(msg)) = router.next().await {
                    if router.send(msg).await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                () = echo => {}
                _ = stop_rx => {}
            }
        });
    });
    let endpoint = rx.recv().unwrap();
    let mut dealer = tmq::dealer(&ctx).connect(&endpoint).unwrap();
    let start = Instant::now();
    let until = start + Duration::from_secs(seconds);
    let mut sent_at = vec![start; in_flight];
    for (slot, at) in sent_at.iter_mut().enumerate() {
        *at = Instant::now();
        dealer
            .send(tmq::Multipart::from(vec![slot.to_be_bytes().to_vec()]))
            .await
            .unwrap();
    }
    let mut lat = Vec::new();
    while let Some(Ok(msg)) = dealer.next().await {
        let slot = usize::from_be_bytes(msg[0][..8].try_into().unwrap());
        lat.push(u32::try_from(sent_at[slot].elapsed().as_micros()).unwrap_or(u32::MAX));
        if Instant::now() >= until {
            if lat.len() >= in_flight {
                break;
            }
            continue;
        }
        sent_at[slot] = Instant::now();
        dealer.send(msg).await.unwrap();
    }
    let _ = stop_tx.send(());
    server.join().unwrap();
    lat
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let agents: usize = env_or("BENCH_AGENTS", 1000);
    let heartbeat_ms: u64 = env_or("BENCH_HEARTBEAT_MS", 3000);
    let seconds: u64 = env_or("BENCH_SECONDS", 30);
    let in_flight: usize = env_or("BENCH_RPC_IN_FLIGHT", 32);
    let admin_url: String = env_or(
        "BENCH_ADMIN_DATABASE_URL",
        "postgres://postgres@127.0.0.1:8101/postgres".to_owned(),
    );
    let redis_url: String = env_or("BENCH_REDIS_URL", "redis://127.0.0.1:8111".to_owned());
    let db_url = admin_url.rsplit_once('/').map_or_else(
        || panic!("BENCH_ADMIN_DATABASE_URL needs a database name"),
        |(base, _)| format!("{base}/mgr_bench_agents"),
    );
    let mut admin = AsyncPgConnection::establish(&admin_url).await.unwrap();
    for sql in [
        "DROP DATABASE IF EXISTS mgr_bench_agents WITH (FORCE)",
        "CREATE DATABASE mgr_bench_agents",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let prefix = format!("bench-agents-{}", Utc::now().timestamp_millis());
    let manager = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_manager"));
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .env("MANAGER_DB__URL", &db_url)
            .env("MANAGER_REDIS__URL", &redis_url)
            .env("MANAGER_REDIS__KEY_PREFIX", &prefix)
            .env("MANAGER_AGENTS__RPC_KEY", RPC_KEY)
            .env(
                "MANAGER_AGENTS__HEARTBEAT_TIMEOUT_MS",
                (heartbeat_ms * 3).to_string(),
            )
            .env("MANAGER_LOGGING__LEVEL", "error")
            .env("MANAGER_API__BIND", "127.0.0.1:0")
            .env("MANAGER_METRICS__BIND", "127.0.0.1:0")
            .args(args);
        cmd
    };
    for args in [
        &["migrate"][..],
        &["fixture", "populate", "fixtures/default.json"][..],
    ] {
        let out = manager(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (server, line) = spawn_reading_first_line(manager(&["start-server"]));
    assert!(line.contains("api="), "the manager did not start: {line:?}");
    let manager_pid = server.0.id();
    println!("manager pid {manager_pid}");

    // The fleet.
    let mut cmd = Command::new(agent_binary());
    cmd.env("AGENT_RPC__CLUSTER_KEY", RPC_KEY)
        .env("AGENT_LOGGING__LEVEL", "error")
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
            &redis_url,
            "--key-prefix",
            &prefix,
            "--heartbeat-interval-ms",
            &heartbeat_ms.to_string(),
            "--slot",
            "cuda.device=4",
        ]);
    let started = Instant::now();
    let (fleet, line) = spawn_reading_first_line(cmd);
    let endpoint = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rpc="))
        .unwrap_or_else(|| panic!("the agents did not start: {line:?}"))
        .to_owned();
    println!(
        "fleet: {agents} agents up in {:.1} s (pid {})",
        started.elapsed().as_secs_f64(),
        fleet.0.id()
    );

    // 1. Ingest: every agent registered.
    let mut conn = AsyncPgConnection::establish(&db_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut first_seen: Option<Instant> = None;
    loop {
        let n = registered(&mut conn).await;
        if n > 0 && first_seen.is_none() {
            first_seen = Some(Instant::now());
        }
        if usize::try_from(n).unwrap_or(0) >= agents {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {agents} agents registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ingest = started.elapsed().as_secs_f64();
    // The rate while notices were being handled: from the first agent in
    // the log to the last (the fleet's own start-up excluded).
    let burst = first_seen.map_or(ingest, |t| t.elapsed().as_secs_f64().max(0.001));
    let notices_per_s = (agents.saturating_sub(1)) as f64 / burst;
    println!(
        "ingest: {agents} agents registered {ingest:.2} s after the fleet was started, \
         {burst:.2} s from the first to the last ({notices_per_s:.0} notices/s)"
    );

    // 2. Steady state.
    let (cpu0, t0) = (cpu_seconds(manager_pid), Instant::now());
    let fleet_cpu0 = cpu_seconds(fleet.0.id());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall = t0.elapsed().as_secs_f64();
    let manager_pct = (cpu_seconds(manager_pid) - cpu0) / wall * 100.0;
    let fleet_pct = (cpu_seconds(fleet.0.id()) - fleet_cpu0) / wall * 100.0;
    let lost: i64 = diesel::sql_query(
        "SELECT count(*) AS n FROM events WHERE stream_type = 'agent' AND event_type LIKE '%Lost%'",
    )
    .get_result::<Count>(&mut conn)
    .await
    .map_or(0, |c| c.n);
    println!(
        "steady: manager {manager_pct:.2} % of one core over {wall:.0} s (the {agents} agents: {fleet_pct:.1} %); {lost} agents lost"
    );

    // 3. RPC round trips.
    let client = Client::connect(
        &endpoint,
        ClientConfig::new(ClusterKey::new(RPC_KEY).unwrap()),
    )
    .unwrap();
    client.health().await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let mut tasks = Vec::new();
    let client = Arc::new(client);
    for _ in 0..in_flight {
        let client = Arc::clone(&client);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let t = Instant::now();
                client.health().await.unwrap();
                lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            lat
        }));
    }
    let mut lat: Vec<u32> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    lat.sort_unstable();
    let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
    println!(
        "rpc: health, {in_flight} in flight: {:.0} calls/s, p50 {p50:.3} ms, p99 {p99:.3} ms",
        lat.len() as f64 / 5.0
    );
    // The same round trips over raw ZeroMQ (no envelope, MAC, MessagePack,
    // deadlines or idempotency), measured now on the same machine.
    let mut raw = raw_zeromq_echo(in_flight, 5).await;
    raw.sort_unstable();
    let (raw_p50, raw_p99) = (percentile(&raw, 0.50), percentile(&raw, 0.99));
    println!(
        "baseline: raw ZeroMQ echo, {in_flight} in flight: {:.0} calls/s, p50 {raw_p50:.3} ms, p99 {raw_p99:.3} ms",
        raw.len() as f64 / 5.0
    );
    drop(fleet);
    drop(server);
    println!(
        "{}",
        json!({
            "agents": agents,
            "manager_cpu_pct_of_core": (manager_pct * 100.0).round() / 100.0,
            "notices_per_s": notices_per_s.round(),
            "rpc_p50_ms": (p50 * 1000.0).round() / 1000.0,
            "rpc_p99_ms": (p99 * 1000.0).round() / 1000.0,
            "agents_cpu_pct_of_core": (fleet_pct * 10.0).round() / 10.0,
            "agents_lost": lost,
            "raw_zeromq_p50_ms": (raw_p50 * 1000.0).round() / 1000.0,
            "raw_zeromq_p99_ms": (raw_p99 * 1000.0).round() / 1000.0,
            "rpc_p99_vs_raw": ((p99 / raw_p99.max(0.001)) * 100.0).round() / 100.0,
        })
    );
}
