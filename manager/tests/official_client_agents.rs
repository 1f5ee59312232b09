//! The official client, `backend.ai-client` 23.9.10 from PyPI, listing and
//! showing agents (`backend.ai admin agent list`, `admin agent info`). `just
//! test` installs it into `.client-venv/` (`just client-venv`);
//! `BACKENDAI_CLIENT` may point at another `backend.ai` binary. Agents enter
//! the log as the write side records them: `AgentEvent`s appended to their
//! streams.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{
    ADMIN_AK, ADMIN_SK, USER_AK, USER_SK, cli, emit, gql, hold_sweeper, start_with_fixture,
};
use manager_events::agent::{AgentCapacity, AgentDescription, AgentEvent};
use manager_events::testing::TestDb;
use serde_json::json;
use uuid::Uuid;

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
