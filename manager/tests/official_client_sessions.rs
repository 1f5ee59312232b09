//! The official CLI (`backend.ai-client` 23.9.10) against `manager
//! start-server` and a real `process` agent: `session create`, `ps`,
//! `session logs`, `session destroy` and `run`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use manager_events::testing::TestDb;

use common::{USER_AK, USER_SK, process_agent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_cli_creates_lists_runs_and_destroys_sessions() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-cli", "4").await;
    let cli = |args: &[&str]| {
        let server = &server;
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            tokio::task::block_in_place(|| common::cli(server, USER_AK, USER_SK, &refs))
        }
    };

    let (ok, out) = cli(&["session", "create", "-t", "cli-sess", "python"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("is created and ready"), "{out}");

    let (ok, out) = cli(&["ps"]).await;
    assert!(
        ok && out.contains("cli-sess") && out.contains("RUNNING"),
        "{out}"
    );

    let (ok, out) = cli(&["session", "logs", "cli-sess"]).await;
    assert!(ok, "{out}");

    let (ok, out) = cli(&["run", "--rm", "python", "-c", "print(6 * 7)"]).await;
    assert!(ok && out.contains("42"), "{out}");

    let (ok, out) = cli(&["session", "destroy", "cli-sess"]).await;
    assert!(ok, "{out}");
    let (ok, out) = cli(&["session", "destroy", "cli-sess"]).await;
    assert!(
        !ok || out.to_lowercase().contains("no such session"),
        "{out}"
    );
}
