//! `just bench-api`: the API under load, against a real manager (this
//! crate's release binary) over the halfstack.
//!
//! Each phase runs for `BENCH_SECONDS` (default 10) with `BENCH_CONNECTIONS`
//! (default 32) concurrent keep-alive connections:
//!
//! 1. baseline — unsigned `GET /` (the HTTP stack and this load generator,
//!    nothing else; the other figures are also reported as ratios to it);
//! 2. signed `GET /auth/role`;
//! 3. GraphQL `user_list` (limit 50 of 1,000 users, the official CLI's
//!    document);
//!    The log does not move during it, so responses are kept (see the
//!    operator guide); `gql-uncached` runs the same list against a second
//!    manager started with `api.graphql_cache_entries = 0`;
//! 4. `create_keypair` mutations, spread over the 1,000 users.
//!
//! The last line is one JSON object with `signed_get_rps`,
//! `signed_get_p99_ms`, `gql_list_rps`, `gql_list_p99_ms`, `command_rps`,
//! `command_p99_ms` (and the baseline). The load generator shares the
//! machine's cores with the manager, PostgreSQL and Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use manager_command::auth::signature::{RequestParts, parse_date, sign};
use serde_json::{Value, json};

const ADMIN_AK: &str = "AKIAIOSFODNN7EXAMPLE";
const ADMIN_SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const USERS: usize = 1000;

const USER_LIST: &str = "query($limit:Int!, $offset:Int!, $status: String, $group_id: UUID, $filter: String, $order: String) {
  user_list(
      limit:$limit, offset:$offset, status:$status, group_id:$group_id, filter:$filter, order:$order) {
    items { uuid username role email full_name need_password_change status status_info created_at domain_name groups { id name } allowed_client_ip sudo_session_enabled main_access_key }
    total_count
  }
}";

const CREATE_KEYPAIR: &str = "mutation($user_id: String!, $input: KeyPairInput!) {  create_keypair(user_id: $user_id, props: $input) {    ok msg keypair { access_key secret_key }  }}";

struct Server {
    child: Child,
    host: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manager(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manager"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("MANAGER_DB__URL", db_url)
        // A fresh rate-limit window for each run (earlier runs filled theirs).
        .env("MANAGER_REDIS__KEY_PREFIX", run_prefix())
        .env("MANAGER_DB__POOL_SIZE", "32")
        .env("MANAGER_LOGGING__LEVEL", "error")
        .env("MANAGER_API__BIND", "127.0.0.1:0")
        .env("MANAGER_METRICS__BIND", "127.0.0.1:0");
    cmd
}

fn run_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| format!("bench-api-{}", Utc::now().timestamp_millis()))
}

fn start(db_url: &str) -> Server {
    start_with(db_url, &[])
}

fn start_with(db_url: &str, env: &[(&str, &str)]) -> Server {
    let mut child = manager(db_url)
        .envs(env.iter().copied())
        .arg("start-server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    let host = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .unwrap_or_else(|| panic!("the manager did not start: {line:?}"))
        .to_owned();
    Server { child, host }
}

/// A request ready to send: method, path, JSON body (if any), signed or not.
fn request(
    client: &reqwest::Client,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    signed: bool,
) -> reqwest::RequestBuilder {
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false);
    let content_type = if body.is_some() {
        "application/json"
    } else {
        "text/plain"
    };
    let mut req = client
        .request(method.parse().unwrap(), format!("http://{host}{path}"))
        .header("Date", &date)
        .header("Content-Type", content_type)
        .header("X-BackendAI-Version", "v7.20230615");
    if signed {
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
        req = req.header(
            "Authorization",
            format!("BackendAI signMethod=HMAC-SHA256, credential={ADMIN_AK}:{signature}"),
        );
    }
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    req
}

/// What one phase measured.
struct Phase {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Runs `connections` loops for `seconds`; `make(task, i)` builds the i-th
/// request of a task; `check` says whether a response body is a success.
async fn phase<F>(
    name: &str,
    connections: usize,
    seconds: u64,
    client: &reqwest::Client,
    make: F,
    check: fn(&str) -> bool,
) -> Phase
where
    F: Fn(usize, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..connections {
        let make = Arc::clone(&make);
        let errors = Arc::clone(&errors);
        let _ = client;
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
                        status.is_success() && check(&text)
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
    let pct = |p: f64| {
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        f64::from(all.get(i).copied().unwrap_or(0)) / 1000.0
    };
    let result = Phase {
        rps: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
    };
    println!(
        "{name:<22} {:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {}",
        result.rps, result.p50_ms, result.p99_ms, result.errors
    );
    result
}

/// The CLI's `user_list` document, 50 a page, offsets cycling over the users.
async fn user_list_phase(
    name: &str,
    connections: usize,
    seconds: u64,
    client: &reqwest::Client,
    host: &str,
) -> Phase {
    let (c, h) = (client.clone(), host.to_owned());
    let list_body = json!({"query": USER_LIST, "variables": {"status": null, "group_id": null, "filter": null, "order": null, "limit": 50, "offset": 0}});
    phase(
        name,
        connections,
        seconds,
        client,
        move |_, i| {
            let mut body = list_body.clone();
            body["variables"]["offset"] = json!((i % 20) * 50);
            request(&c, &h, "POST", "/admin/gql", Some(&body), true)
        },
        |t| t.contains("total_count") && !t.contains("\"errors\""),
    )
    .await
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let connections: usize = env_or("BENCH_CONNECTIONS", 32);
    let admin_url: String = env_or(
        "BENCH_ADMIN_DATABASE_URL",
        "postgres://postgres@127.0.0.1:8101/postgres".to_owned(),
    );
    let db_url = admin_url.rsplit_once('/').map_or_else(
        || panic!("BENCH_ADMIN_DATABASE_URL needs a database name"),
        |(base, _)| format!("{base}/mgr_bench_api"),
    );
    let mut admin = AsyncPgConnection::establish(&admin_url).await.unwrap();
    for sql in [
        "DROP DATABASE IF EXISTS mgr_bench_api WITH (FORCE)",
        "CREATE DATABASE mgr_bench_api",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
    let out = manager(&db_url)
        .args(["fixture", "populate", "fixtures/default.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = start(&db_url);
    let host = server.host.clone();
    println!("manager pid {}", server.child.id());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections * 2)
        .build()
        .unwrap();

    // Ready when the projectors have caught up with the fixture.
    let ready = Instant::now() + Duration::from_secs(60);
    loop {
        let r = request(&client, &host, "GET", "/auth/role", None, true)
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < ready, "the manager did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1,000 users, created through the API (each hashes a password).
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (client, host, next) = (client.clone(), host.clone(), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= USERS as u64 {
                    break;
                }
                let body = json!({"query": "mutation($email: String!, $input: UserInput!) { create_user(email: $email, props: $input) { ok msg } }",
                    "variables": {"email": format!("bench{i:04}@example.com"), "input": {
                        "username": format!("bench{i:04}"), "password": "bench-password", "need_password_change": false,
                        "full_name": format!("Bench User {i}")}}});
                let r = request(&client, &host, "POST", "/admin/gql", Some(&body), true)
                    .send()
                    .await
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["data"]["create_user"]["ok"], true, "{v}");
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    println!(
        "setup: {USERS} users created through create_user in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The fixture's rate limit (30,000 per 15 minutes) would refuse most of
    // the run: raise it, so that the limiter is still consulted but passes.
    let body = json!({"query": format!("mutation {{ modify_keypair(access_key: \"{ADMIN_AK}\", props: {{rate_limit: 2000000000}}) {{ ok msg }} }}")});
    let r = request(&client, &host, "POST", "/admin/gql", Some(&body), true)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["data"]["modify_keypair"]["ok"], true, "{v}");
    // Past the authenticator's cache of the old limit.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    println!("phases: {seconds} s each, {connections} connections");
    // `BENCH_ONLY=gql,command` runs only the named phases (for profiling).
    let only: String = env_or("BENCH_ONLY", String::new());
    let runs = |name: &str| only.is_empty() || only.split(',').any(|o| o.trim() == name);
    let skipped = || Phase {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        errors: 0,
    };

    let (c, h) = (client.clone(), host.clone());
    let baseline = if runs("baseline") {
        phase(
            "baseline GET /",
            connections,
            seconds,
            &client,
            move |_, _| request(&c, &h, "GET", "/", None, false),
            |_| true,
        )
        .await
    } else {
        skipped()
    };
    let (c, h) = (client.clone(), host.clone());
    let signed = if runs("signed") {
        phase(
            "signed GET /auth/role",
            connections,
            seconds,
            &client,
            move |_, _| request(&c, &h, "GET", "/auth/role", None, true),
            |_| true,
        )
        .await
    } else {
        skipped()
    };
    let list = if runs("gql") {
        user_list_phase("gql user_list (50)", connections, seconds, &client, &host).await
    } else {
        skipped()
    };
    // The same list from a second manager that keeps no responses: what a
    // page costs when the log moves between requests.
    let uncached = if runs("gql-uncached") {
        let other = start_with(&db_url, &[("MANAGER_API__GRAPHQL_CACHE_ENTRIES", "0")]);
        let measured = user_list_phase(
            "gql user_list, uncached",
            connections,
            seconds,
            &client,
            &other.host,
        )
        .await;
        drop(other);
        measured
    } else {
        skipped()
    };
    let (c, h) = (client.clone(), host.clone());
    let command = if runs("command") {
        phase(
            "create_keypair",
            connections,
            seconds,
            &client,
            move |task, i| {
                // Spread over the users: the keypairs of one user share its stream.
                let user = (task + connections * usize::try_from(i).unwrap_or(0)) % USERS;
                let body = json!({"query": CREATE_KEYPAIR, "variables": {
                    "user_id": format!("bench{user:04}@example.com"),
                    "input": {"is_active": true, "is_admin": false, "resource_policy": "default", "rate_limit": 1000}}});
                request(&c, &h, "POST", "/admin/gql", Some(&body), true)
            },
            |t| t.contains("\"ok\":true"),
        )
        .await
    } else {
        skipped()
    };
    drop(server);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    let summary = json!({
        "baseline_get_rps": round(baseline.rps),
        "signed_get_rps": round(signed.rps),
        "signed_get_p99_ms": round(signed.p99_ms),
        "signed_vs_baseline": round(signed.rps / baseline.rps),
        "gql_list_rps": round(list.rps),
        "gql_list_p99_ms": round(list.p99_ms),
        "gql_list_vs_baseline": round(list.rps / baseline.rps),
        "gql_list_uncached_rps": round(uncached.rps),
        "gql_list_uncached_p99_ms": round(uncached.p99_ms),
        "command_rps": round(command.rps),
        "command_p99_ms": round(command.p99_ms),
        "command_vs_baseline": round(command.rps / baseline.rps),
        "errors": signed.errors + list.errors + uncached.errors + command.errors,
    });
    println!("{summary}");
}
