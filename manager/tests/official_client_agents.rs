//! The official client, `backend.ai-client` 23.9.10 from PyPI, listing and
//! showing agents (`backend.ai admin agent list`, `admin agent info`). `just
//! test` installs it into `.client-venv/` (`just client-venv`);
//! `BACKENDAI_CLIENT` may point at another `backend.ai` binary. Agents enter
//! the log as the write side records them: `AgentEvent`s appended to their
//! streams.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ADMIN_AK, ADMIN_SK, Server, USER_AK, USER_SK, gql, start_with_fixture};
use manager_events::agent::{self, AgentCapacity, AgentDescription, AgentEvent};
use manager_events::codec::encode;
use manager_events::testing::TestDb;
use manager_events::{AppendBatch, EventStore, ExpectedVersion, NewEvent};
use serde_json::json;
use uuid::Uuid;

fn client() -> PathBuf {
    let path = std::env::var_os("BACKENDAI_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
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
fn cli(server: &Server, ak: &str, sk: &str, args: &[&str]) -> (bool, String) {
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
/// sweeper would: the manager under test then never turns these agents,
/// which have no heartbeat keys in Redis, into `AgentLost`. The read side
/// shows the log as it is; these tests write the log themselves.
async fn hold_sweeper(db: &TestDb) -> diesel_async::AsyncPgConnection {
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

async fn emit(store: &EventStore, id: &str, events: &[AgentEvent]) {
    let new = events
        .iter()
        .map(|e| {
            let (t, p) = encode(e).unwrap();
            NewEvent::new(t, p)
        })
        .collect();
    store
        .append(AppendBatch::single(
            agent::stream_id(id),
            agent::STREAM_TYPE,
            ExpectedVersion::Any,
            new,
        ))
        .await
        .unwrap();
}

fn registered(id: &str, cpu: &str, mem: &str) -> AgentEvent {
    AgentEvent::AgentRegistered {
        id: id.into(),
        instance: Uuid::new_v4(),
        description: AgentDescription {
            addr: format!("tcp://{id}.local:6011"),
            region: "local".into(),
            scaling_group: "default".into(),
            architecture: "x86_64".into(),
            version: "23.09.10".into(),
            protocol_version: 1,
            compute_plugins: Default::default(),
            public_host: None,
            auto_terminate_abusing_kernel: false,
        },
        capacity: AgentCapacity {
            available_slots: [
                ("cpu".to_owned(), cpu.to_owned()),
                ("mem".to_owned(), mem.to_owned()),
            ]
            .into(),
            slot_types: [
                ("cpu".to_owned(), "count".to_owned()),
                ("mem".to_owned(), "bytes".to_owned()),
            ]
            .into(),
        },
    }
}

/// The line of the CLI's table that starts with `id`.
fn row<'a>(out: &'a str, id: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in {out}"))
}

#[tokio::test]
async fn the_official_cli_lists_and_shows_agents() {
    let db = TestDb::new().await;
    let _sweeper = hold_sweeper(&db).await;
    let server = start_with_fixture(&db).await;
    let store = db.store().await;
    emit(
        &store,
        "i-alpha",
        &[registered("i-alpha", "8", "17179869184")],
    )
    .await;
    emit(&store, "i-beta", &[registered("i-beta", "4", "8589934592")]).await;
    emit(
        &store,
        "i-gamma",
        &[registered("i-gamma", "2", "4294967296")],
    )
    .await;
    emit(
        &store,
        "i-gamma",
        &[AgentEvent::AgentLost {
            reason: "heartbeat-expired".into(),
        }],
    )
    .await;
    // Wait until the projections show the last event.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gql(
            &server,
            (ADMIN_AK, ADMIN_SK),
            "{ agent(agent_id: \"i-gamma\") { status } }",
            json!({}),
        )
        .await;
        if r["data"]["agent"]["status"] == "LOST" {
            break;
        }
        assert!(Instant::now() < deadline, "never projected: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = |args: &[&str]| cli(&server, ADMIN_AK, ADMIN_SK, args);

    // The default: ALIVE agents, with their status and slots.
    let (ok, out) = admin(&["admin", "agent", "list"]);
    assert!(ok, "{out}");
    for header in ["ID", "Status", "Scaling Group", "Available Slots"] {
        assert!(out.contains(header), "{header}: {out}");
    }
    let alpha = row(&out, "i-alpha");
    for expected in ["ALIVE", "x86_64", "default", "local", "cpu:8", "mem:16.0G"] {
        assert!(alpha.contains(expected), "{expected}: {alpha}");
    }
    let beta = row(&out, "i-beta");
    assert!(
        beta.contains("ALIVE") && beta.contains("cpu:4") && beta.contains("mem:8.0G"),
        "{beta}"
    );
    assert!(!out.contains("i-gamma"), "not alive: {out}");

    // Another status, a scaling group, the mini-languages.
    let (ok, out) = admin(&["admin", "agent", "list", "-s", "LOST"]);
    assert!(ok, "{out}");
    assert!(row(&out, "i-gamma").contains("LOST"), "{out}");
    assert!(!out.contains("i-alpha"), "{out}");
    let (ok, out) = admin(&[
        "admin",
        "agent",
        "list",
        "--scaling-group",
        "default",
        "--filter",
        "id != \"i-alpha\"",
        "--order",
        "-id",
    ]);
    assert!(ok, "{out}");
    assert!(
        row(&out, "i-beta").contains("ALIVE") && !out.contains("i-alpha"),
        "{out}"
    );
    // Paged by the client (offset += items until total_count).
    let (ok, out) = admin(&["admin", "agent", "list", "--limit", "1"]);
    assert!(ok, "{out}");
    assert!(out.contains("i-alpha") && out.contains("i-beta"), "{out}");

    // One agent in detail.
    let (ok, out) = admin(&["admin", "agent", "info", "i-alpha"]);
    assert!(ok, "{out}");
    for expected in ["i-alpha", "ALIVE", "x86_64", "local", "cpu:8", "mem:16.0G"] {
        assert!(out.contains(expected), "{expected}: {out}");
    }
    let (ok, out) = admin(&["admin", "agent", "info", "i-nowhere"]);
    assert!(ok, "{out}");
    assert!(out.contains("No matching entry found."), "{out}");

    // Not for users.
    let (ok, out) = cli(&server, USER_AK, USER_SK, &["admin", "agent", "list"]);
    assert!(!ok, "{out}");
    assert!(out.contains("superadmin privilege required"), "{out}");
}
