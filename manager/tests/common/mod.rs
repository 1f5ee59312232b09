//! Helpers shared by the manager's integration tests: run the real binary
//! against a test database and the halfstack Redis.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use manager_command::auth::signature::{RequestParts, parse_date, sign};
use manager_events::testing::TestDb;

pub const ADMIN_AK: &str = "AKIAIOSFODNN7EXAMPLE";
pub const ADMIN_SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const USER_AK: &str = "AKIANABBDUSEREXAMPLE";
pub const USER_SK: &str = "C8qnIo29EZvXkPK_MXcuAakYTy4NYrxwmCEyNPlf";

/// The `manager` binary, run from the repository root, configured for `db`.
pub fn manager(db: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manager"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MANAGER_DB__URL", &db.url)
        // Rate-limit windows and last writes of this test only.
        .env(
            "MANAGER_REDIS__KEY_PREFIX",
            db.url.rsplit('/').next().unwrap_or("test"),
        )
        .env("MANAGER_LOGGING__LEVEL", "error")
        .env(
            "MANAGER_REDIS__URL",
            std::env::var("MANAGER_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:8111".into()),
        );
    cmd
}

/// A running `manager start-server`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub host: String,
    pub metrics: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on ports the system picks (no fixture); returns once it
/// has printed where it listens. Binding port 0 in the server itself leaves
/// no window for another process to take a port between choosing and binding.
pub fn spawn(db: &TestDb) -> Server {
    spawn_with(db, &[])
}

/// [`spawn`] with extra environment (configuration overrides).
pub fn spawn_with(db: &TestDb, env: &[(&str, &str)]) -> Server {
    use std::io::{BufRead, BufReader, Read};
    let mut child = manager(db)
        .envs(env.iter().copied())
        .env("MANAGER_API__BIND", "127.0.0.1:0")
        .env("MANAGER_METRICS__BIND", "127.0.0.1:0")
        .arg("start-server")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    // Keep draining, so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
    });
    let addr = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
            .to_owned()
    };
    let (api, metrics) = (addr("api="), addr("metrics="));
    Server {
        child,
        base: format!("http://{api}"),
        host: api,
        metrics: format!("http://{metrics}"),
    }
}

/// Loads the default fixture, starts the server, and waits until the admin
/// keypair authenticates (the projections have caught up).
pub async fn start_with_fixture(db: &TestDb) -> Server {
    start_with_fixture_env(db, &[]).await
}

/// [`start_with_fixture`] with extra environment (configuration overrides).
pub async fn start_with_fixture_env(db: &TestDb, env: &[(&str, &str)]) -> Server {
    let out = manager(db)
        .args(["fixture", "populate", "fixtures/default.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = spawn_with(db, env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = signed(&server, "GET", "/auth/role", ADMIN_AK, ADMIN_SK, None).await
            && r.status() == 200
        {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come up with the fixture"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a request signed the way client 23.9.10 signs it.
pub async fn signed(
    server: &Server,
    method: &str,
    rel_url: &str,
    ak: &str,
    sk: &str,
    date: Option<String>,
) -> reqwest::Result<reqwest::Response> {
    let date = date.unwrap_or_else(|| Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false));
    let parts = RequestParts {
        method,
        rel_url,
        host: &server.host,
        date: Some(&date),
        authorization: None,
        content_type: Some("text/plain"),
        api_version: Some("v7.20230615"),
        legacy_api_version: None,
    };
    let signature = sign(&parts, "sha256", parse_date(&date).unwrap(), sk).unwrap();
    reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{rel_url}", server.base))
        .header("Date", date)
        .header("Content-Type", "text/plain")
        .header("X-BackendAI-Version", "v7.20230615")
        .header(
            "Authorization",
            format!("BackendAI signMethod=HMAC-SHA256, credential={ak}:{signature}"),
        )
        .send()
        .await
}

/// Sends a signed request with a JSON body and extra headers.
pub async fn signed_json(
    server: &Server,
    method: &str,
    rel_url: &str,
    (ak, sk): (&str, &str),
    body: &[u8],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false);
    let parts = RequestParts {
        method,
        rel_url,
        host: &server.host,
        date: Some(&date),
        authorization: None,
        content_type: Some("application/json"),
        api_version: Some("v7.20230615"),
        legacy_api_version: None,
    };
    let signature = sign(&parts, "sha256", parse_date(&date).unwrap(), sk).unwrap();
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{rel_url}", server.base))
        .header("Date", date)
        .header("Content-Type", "application/json")
        .header("X-BackendAI-Version", "v7.20230615")
        .header(
            "Authorization",
            format!("BackendAI signMethod=HMAC-SHA256, credential={ak}:{signature}"),
        )
        .body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

/// Posts a GraphQL document to `/admin/gql`; answers the whole envelope.
pub async fn gql(
    server: &Server,
    keypair: (&str, &str),
    query: &str,
    variables: serde_json::Value,
) -> serde_json::Value {
    gql_with(server, keypair, query, variables, &[]).await
}

/// [`gql`] with extra headers (e.g. `Idempotency-Key`).
pub async fn gql_with(
    server: &Server,
    keypair: (&str, &str),
    query: &str,
    variables: serde_json::Value,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    let body = serde_json::json!({ "query": query, "variables": variables });
    let r = signed_json(
        server,
        "POST",
        "/admin/gql",
        keypair,
        body.to_string().as_bytes(),
        headers,
    )
    .await;
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// The log's head position, read from the test database.
pub async fn log_head(db: &TestDb) -> i64 {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Head {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let head: Head = diesel::sql_query("SELECT coalesce(max(position), 0) AS n FROM events")
        .get_result(&mut db.connection().await)
        .await
        .unwrap();
    head.n
}

/// The official CLI (`backend.ai-client` 23.9.10 from `just client-venv`, or
/// `BACKENDAI_CLIENT`).
pub fn client() -> std::path::PathBuf {
    let path = std::env::var_os("BACKENDAI_CLIENT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.client-venv/bin/backend.ai"
            ))
        });
    assert!(
        path.exists(),
        "the official client is not installed at {}: run `just client-venv` (or set BACKENDAI_CLIENT)",
        path.display()
    );
    path
}

/// Runs the CLI in API mode against `server`; returns (success, stdout + stderr).
pub fn cli(server: &Server, ak: &str, sk: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(client())
        .args(args)
        .env("BACKEND_ENDPOINT", &server.base)
        .env("BACKEND_ENDPOINT_TYPE", "api")
        .env("BACKEND_ACCESS_KEY", ak)
        .env("BACKEND_SECRET_KEY", sk)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Holds the liveness sweeper's lock, as another manager acting as the
/// sweeper would: the manager under test then never turns agents without
/// heartbeat keys in Redis into `AgentLost`. For tests that write agent
/// events to the log themselves.
pub async fn hold_sweeper(db: &TestDb) -> diesel_async::AsyncPgConnection {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = db.connection().await;
    conn.batch_execute(&format!(
        "SELECT pg_advisory_lock({})",
        manager_command::agent::sweeper::SWEEPER_LOCK
    ))
    .await
    .unwrap();
    conn
}

/// Appends `events` to agent `id`'s stream, as the write side records them.
pub async fn emit(
    store: &manager_events::EventStore,
    id: &str,
    events: &[manager_events::agent::AgentEvent],
) {
    use manager_events::agent;
    manager_events::testing::emit(store, agent::stream_id(id), agent::STREAM_TYPE, events).await;
}

/// Appends `events` to session `id`'s stream, as the write side records them.
pub async fn emit_session(
    store: &manager_events::EventStore,
    id: uuid::Uuid,
    events: &[manager_events::session::SessionEvent],
) {
    use manager_events::session;
    manager_events::testing::emit(store, session::stream_id(id), session::STREAM_TYPE, events)
        .await;
}

/// Places session `id`'s kernels as the scheduler does: the session's
/// `SessionScheduled` and each agent's `KernelsPlaced` (every kernel taking
/// `slots`) in one append. `on` is (kernel, agent id).
pub async fn place_session(
    store: &manager_events::EventStore,
    id: uuid::Uuid,
    on: &[(uuid::Uuid, &str)],
    slots: &std::collections::BTreeMap<String, String>,
) {
    use std::collections::BTreeMap;

    use manager_events::agent::{self, AgentEvent};
    use manager_events::session::{self, KernelPlacement, SessionEvent};
    use manager_events::{AppendBatch, ExpectedVersion, NewEvent};

    fn new_event<E: serde::Serialize>(e: &E) -> NewEvent {
        let (t, p) = manager_events::codec::encode(e).unwrap();
        NewEvent::new(t, p)
    }
    let scheduled = SessionEvent::SessionScheduled {
        scaling_group: "default".into(),
        kernels: on
            .iter()
            .map(|(k, a)| KernelPlacement {
                kernel_id: *k,
                agent_id: (*a).into(),
                agent_addr: format!("tcp://{a}.local:6011"),
            })
            .collect(),
    };
    let mut batch = AppendBatch::new().stream(
        session::stream_id(id),
        session::STREAM_TYPE,
        ExpectedVersion::Any,
        vec![new_event(&scheduled)],
    );
    let mut per_agent: BTreeMap<&str, BTreeMap<uuid::Uuid, BTreeMap<String, String>>> =
        BTreeMap::new();
    for (k, a) in on {
        per_agent.entry(a).or_default().insert(*k, slots.clone());
    }
    for (a, kernels) in per_agent {
        batch = batch.stream(
            agent::stream_id(a),
            agent::STREAM_TYPE,
            ExpectedVersion::Any,
            vec![new_event(&AgentEvent::KernelsPlaced {
                session_id: id,
                kernels,
            })],
        );
    }
    store.append(batch).await.unwrap();
}

/// The session scheduler's advisory lock: the value of
/// `manager_command::session::scheduler::SCHEDULER_LOCK` (written out so
/// that these helpers build whether or not the scheduler is compiled in).
pub const SCHEDULER_LOCK: i64 = 0x6261_6900_0000_0091;

/// Holds the session scheduler's lock, as another manager acting as the
/// scheduler would: the manager under test then never places, starts,
/// defers or cancels sessions itself. For tests that write session events
/// to the log themselves.
pub async fn hold_scheduler(db: &TestDb) -> diesel_async::AsyncPgConnection {
    use diesel_async::SimpleAsyncConnection;
    let mut conn = db.connection().await;
    conn.batch_execute(&format!("SELECT pg_advisory_lock({SCHEDULER_LOCK})"))
        .await
        .unwrap();
    conn
}

/// The halfstack Redis (or `MANAGER_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("MANAGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:8111".into())
}

/// Polls `check` until it holds, at most `within`.
pub async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `process` agent of the test's cluster (the manager's Redis prefix is
/// the database's name) with `cpu` CPUs and 4 GiB.
pub async fn process_agent(db: &TestDb, id: &str, cpu: &str) -> agent::Fleet {
    let prefix = db.url.rsplit('/').next().unwrap().to_owned();
    let mut config = agent::Config::default();
    config.agent.id = id.into();
    config.agent.backend = agent::config::BackendKind::Process;
    config.rpc.listen = "tcp://127.0.0.1:0".into();
    config.redis.url = redis_url();
    config.redis.key_prefix = prefix;
    config.heartbeat.interval_ms = 200;
    config.heartbeat.ttl_ms = 2000;
    config.slots = [
        ("cpu".to_owned(), agent::config::SlotValue(cpu.into())),
        ("mem".to_owned(), agent::config::SlotValue("4g".into())),
    ]
    .into();
    agent::Fleet::start(config).await.unwrap()
}

/// A signed request with a JSON body (empty for `Value::Null`): status and
/// the answer (JSON, or its text as a string).
pub async fn call(
    server: &Server,
    keypair: (&str, &str),
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let r = signed_json(server, method, path, keypair, &bytes, &[]).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// `POST` with a JSON body; see [`call`].
pub async fn post(
    server: &Server,
    keypair: (&str, &str),
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    call(server, keypair, "POST", path, &body).await
}

/// Creates a session with `body` (which should ask to wait, e.g.
/// `maxWaitSeconds`) and asserts it answered 201 RUNNING; its id.
pub async fn running_session(
    server: &Server,
    keypair: (&str, &str),
    body: serde_json::Value,
) -> uuid::Uuid {
    let (status, created) = post(server, keypair, "/session", body).await;
    assert_eq!(
        (status, &created["status"]),
        (201, &serde_json::json!("RUNNING")),
        "{created}"
    );
    created["sessionId"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no session id in {created}"))
}

/// `DELETE` without a body; see [`call`].
pub async fn delete(
    server: &Server,
    keypair: (&str, &str),
    path: &str,
) -> (u16, serde_json::Value) {
    call(server, keypair, "DELETE", path, &serde_json::Value::Null).await
}
