//! The `manager` binary as an operator runs it, against the halfstack.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, manager, spawn};
use manager_events::testing::TestDb;
use manager_events::{AppendBatch, ExpectedVersion, NewEvent};

async fn wait_until_up(url: &str, server: &mut Server) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(url).await {
            return r;
        }
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "the server exited at start-up"
        );
        assert!(Instant::now() < deadline, "the server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn start_server_answers_the_version_probe_and_metrics_then_stops_on_sigterm() {
    let db = TestDb::new().await;
    let mut server = spawn(&db);
    let probe = wait_until_up(&format!("{}/", server.base), &mut server).await;
    assert_eq!(probe.status(), 200);
    assert_eq!(probe.headers()["server"], "BackendAI");
    let body: serde_json::Value = probe.json().await.unwrap();
    assert_eq!(
        body["version"], "v7.20230615",
        "client 23.9 parses ^v(\\d+)\\.(\\d{{8}})$"
    );
    assert_eq!(body["manager"], "23.09.10");

    // Errors are problem+json, as the official client expects.
    let missing = reqwest::get(format!("{}/no/such/path", server.base))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["type"], "https://api.backend.ai/probs/url-not-found");
    assert_eq!(body["data"], "/no/such/path");
    let wrong = reqwest::Client::new()
        .post(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(
        body["type"],
        "https://api.backend.ai/probs/method-not-allowed"
    );

    let m = reqwest::get(format!("{}/metrics", server.metrics))
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no clean exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        reqwest::get(format!("{}/", server.base)).await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn migrate_is_idempotent_and_bad_config_is_reported() {
    let db = TestDb::new().await;
    let out = manager(&db).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = manager(&db)
        .env("MANAGER_API__BIND", "not an address")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid configuration"));
    let out = manager(&db)
        .args(["--config", "/nonexistent.toml", "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn verify_log_reports_an_intact_and_a_tampered_log() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for i in 0..5 {
        store
            .append(AppendBatch::single(
                "s-1",
                "thing",
                ExpectedVersion::Any,
                vec![NewEvent::new("Made", serde_json::json!({"i": i}))],
            ))
            .await
            .unwrap();
    }
    let out = manager(&db).arg("verify-log").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 events verified"));

    use diesel_async::RunQueryDsl;
    let mut conn = db.connection().await;
    diesel::sql_query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("UPDATE events SET event_type = 'Forged' WHERE position = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let out = manager(&db).arg("verify-log").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("event 3 does not match"));
}

#[tokio::test]
async fn projections_status_shows_position_and_lag() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for i in 0..3 {
        store
            .append(AppendBatch::single(
                "s-1",
                "thing",
                ExpectedVersion::Any,
                vec![NewEvent::new("Made", serde_json::json!({"i": i}))],
            ))
            .await
            .unwrap();
    }
    let out = manager(&db)
        .args(["projections", "status"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("domains"))
        .expect("the domains projector is listed");
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, ["domains", "0", "3", "3"]);
}

#[tokio::test]
async fn projections_rebuild_replays_and_unknown_names_are_refused() {
    let db = TestDb::new().await;
    let out = manager(&db)
        .args(["projections", "rebuild", "domains"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("domains: rebuilt from 0 events"));
    let out = manager(&db)
        .args(["projections", "rebuild", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "there are: domains, users, keypairs, projects, keypair_resource_policies, scaling_groups, \
         user_resource_policies, project_resource_policies, resource_presets"
    ));
}
