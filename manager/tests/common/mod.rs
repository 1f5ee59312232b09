//! Helpers shared by the manager's integration tests: run the real binary
//! against a test database and the halfstack Redis.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use manager_command::auth::signature::{RequestParts, parse_date, sign};
use manager_events::testing::TestDb;

pub const ADMIN_AK: &str = "AKIAIOSFODNN7EXAMPLE";
pub const ADMIN_SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const USER_AK: &str = "AKIANABBDUSEREXAMPLE";
pub const USER_SK: &str = "C8qnIo29EZvXkPK_MXcuAakYTy4NYrxwmCEyNPlf";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `manager` binary, run from the repository root, configured for `db`.
pub fn manager(db: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manager"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MANAGER_DB__URL", &db.url)
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

/// Starts the server on free ports (no fixture, no waiting).
pub fn spawn(db: &TestDb) -> Server {
    let (api, metrics) = (free_port(), free_port());
    let child = manager(db)
        .env("MANAGER_API__BIND", format!("127.0.0.1:{api}"))
        .env("MANAGER_METRICS__BIND", format!("127.0.0.1:{metrics}"))
        .arg("start-server")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Server {
        child,
        base: format!("http://127.0.0.1:{api}"),
        host: format!("127.0.0.1:{api}"),
        metrics: format!("http://127.0.0.1:{metrics}"),
    }
}

/// Loads the default fixture, starts the server, and waits until the admin
/// keypair authenticates (the projections have caught up).
pub async fn start_with_fixture(db: &TestDb) -> Server {
    let out = manager(db)
        .args(["fixture", "populate", "fixtures/default.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = spawn(db);
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
