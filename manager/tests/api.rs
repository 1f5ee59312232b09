//! The API as the official client uses it: the default fixture, signed
//! requests, rate-limit headers, and the reference's error answers.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use manager_command::auth::signature::{RequestParts, parse_date, sign};
use manager_events::testing::TestDb;

const ADMIN_AK: &str = "AKIAIOSFODNN7EXAMPLE";
const ADMIN_SK: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const USER_AK: &str = "AKIANABBDUSEREXAMPLE";
const USER_SK: &str = "C8qnIo29EZvXkPK_MXcuAakYTy4NYrxwmCEyNPlf";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn manager(db: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manager"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MANAGER_DB__URL", &db.url)
        .env("MANAGER_LOGGING__LEVEL", "warn")
        .env(
            "MANAGER_REDIS__URL",
            std::env::var("MANAGER_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:8111".into()),
        );
    cmd
}

struct Server {
    child: Child,
    base: String,
    host: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(db: &TestDb) -> Server {
    let out = manager(db)
        .args(["fixture", "populate", "fixtures/default.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (api, metrics) = (free_port(), free_port());
    let child = manager(db)
        .env("MANAGER_API__BIND", format!("127.0.0.1:{api}"))
        .env("MANAGER_METRICS__BIND", format!("127.0.0.1:{metrics}"))
        .arg("start-server")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{api}"),
        host: format!("127.0.0.1:{api}"),
    };
    // Up, and the projections have caught up with the fixture.
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
async fn signed(
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

async fn problem(r: reqwest::Response) -> (u16, serde_json::Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn signed_requests_from_the_default_fixture() {
    let db = TestDb::new().await;
    let server = start(&db).await;

    let r = signed(&server, "GET", "/auth/role", ADMIN_AK, ADMIN_SK, None)
        .await
        .unwrap();
    assert_eq!(r.headers()["x-ratelimit-limit"], "30000");
    assert_eq!(r.headers()["x-ratelimit-window"], "900");
    let remaining: u64 = r.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 30000);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"global_role": "superadmin", "domain_role": "admin", "group_role": null})
    );

    let r = signed(&server, "GET", "/auth/role", USER_AK, USER_SK, None)
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["global_role"].as_str(), body["domain_role"].as_str()),
        (Some("user"), Some("user"))
    );

    // Each failure its own answer, in the reference's order.
    let (s, b) = problem(
        signed(&server, "GET", "/auth/role", ADMIN_AK, USER_SK, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, b["msg"].as_str()), (401, Some("Signature mismatch")));
    let (s, b) = problem(
        signed(
            &server,
            "GET",
            "/auth/role",
            "AKIANOSUCHKEY0000000",
            ADMIN_SK,
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((s, b["msg"].as_str()), (401, Some("Access key not found")));
    let skewed =
        (Utc::now() - chrono::Duration::minutes(20)).to_rfc3339_opts(SecondsFormat::Micros, false);
    let (s, b) = problem(
        signed(
            &server,
            "GET",
            "/auth/role",
            ADMIN_AK,
            ADMIN_SK,
            Some(skewed),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["type"].as_str(), b["msg"].as_str()),
        (
            400,
            Some("https://api.backend.ai/probs/invalid-auth-params"),
            Some("Date/time sync error")
        )
    );
    // Unsigned, with no Date: the date check comes first (400, not 401).
    let (s, _) = problem(
        reqwest::get(format!("{}/auth/role", server.base))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    // Unsigned with a Date: unauthenticated, so the handler refuses it.
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false);
    let r = reqwest::Client::new()
        .get(format!("{}/auth/role", server.base))
        .header("Date", date)
        .send()
        .await
        .unwrap();
    let (s, b) = problem(r).await;
    assert_eq!((s, b["msg"].as_str()), (401, Some("Unauthorized access")));
    // A bad group id is a validation error; an unknown project 404.
    let (s, _) = problem(
        signed(
            &server,
            "GET",
            "/auth/role?group=nope",
            ADMIN_AK,
            ADMIN_SK,
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 400);

    // Public endpoints need no signature.
    let a: serde_json::Value = reqwest::get(format!("{}/manager/announcement", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a, serde_json::json!({"enabled": false, "message": ""}));
}

#[tokio::test]
async fn the_fixture_is_idempotent() {
    let db = TestDb::new().await;
    for expect in ["created 5", "created 0"] {
        let out = manager(&db)
            .args(["fixture", "populate", "fixtures/default.json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(expect),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
