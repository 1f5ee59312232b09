//! The official client, `backend.ai-client` 23.9.10 from PyPI, against the
//! real manager. `just test` installs it into `.client-venv/` (`just
//! client-venv`); `BACKENDAI_CLIENT` may point at another `backend.ai` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ADMIN_AK, ADMIN_SK, Server, start_with_fixture};
use manager_events::testing::TestDb;

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

#[tokio::test]
async fn the_official_cli_talks_to_the_manager() {
    let db = TestDb::new().await;
    let server = start_with_fixture(&db).await;

    // GET / (version negotiation) then GET /config/resource-slots.
    let (ok, out) = cli(
        &server,
        ADMIN_AK,
        ADMIN_SK,
        &["admin", "resource", "query-slots"],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("cpu (count)") && out.contains("mem (bytes)"),
        "{out}"
    );
    assert!(
        !out.contains("server API version is higher"),
        "no version warning: {out}"
    );

    // A wrong secret: the CLI shows the reference's error.
    let (ok, out) = cli(
        &server,
        ADMIN_AK,
        "not-the-secret",
        &["admin", "user", "list"],
    );
    assert!(!ok);
    assert!(
        out.contains("401") && out.contains("Signature mismatch"),
        "{out}"
    );
}
