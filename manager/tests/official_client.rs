//! The official client, `backend.ai-client` 23.9.10 from PyPI, against the
//! real manager. `just test` installs it into `.client-venv/` (`just
//! client-venv`); `BACKENDAI_CLIENT` may point at another `backend.ai` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{ADMIN_AK, ADMIN_SK, cli, start_with_fixture};
use manager_events::testing::TestDb;

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

/// The value printed next to `key` in the CLI's key/value output.
fn value_of(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[tokio::test]
async fn the_official_cli_administers_users_keypairs_domains_and_projects() {
    let db = TestDb::new().await;
    let server = start_with_fixture(&db).await;
    let admin = |args: &[&str]| cli(&server, ADMIN_AK, ADMIN_SK, args);

    let (ok, out) = admin(&["admin", "user", "list"]);
    assert!(ok, "{out}");
    for expected in [
        "admin@lablup.com",
        "user@lablup.com",
        "superadmin",
        "AKIAIOSFODNN7EXAMPLE",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }

    let (ok, out) = admin(&[
        "admin",
        "user",
        "add",
        "default",
        "new@example.com",
        "Passw0rd!",
        "-u",
        "newuser",
        "-n",
        "New User",
        "-r",
        "user",
    ]);
    assert!(ok, "{out}");
    assert_eq!(value_of(&out, "email"), "new@example.com", "{out}");
    assert_eq!(value_of(&out, "username"), "newuser", "{out}");
    // The same e-mail again: the CLI reports the integrity error and fails.
    let (ok, out) = admin(&[
        "admin",
        "user",
        "add",
        "default",
        "new@example.com",
        "Passw0rd!",
        "-u",
        "other",
    ]);
    assert!(!ok && out.contains("integrity error"), "{out}");
    let (ok, out) = admin(&["admin", "user", "list"]);
    assert!(
        ok && out.contains("new@example.com") && out.contains("New User"),
        "{out}"
    );

    let (ok, out) = admin(&[
        "admin",
        "keypair",
        "add",
        "new@example.com",
        "default",
        "-r",
        "5000",
    ]);
    assert!(ok, "{out}");
    let (ak, sk) = (value_of(&out, "access_key"), value_of(&out, "secret_key"));
    assert!(ak.starts_with("AKIA") && ak.len() == 20, "{out}");
    let (ok, out) = admin(&["admin", "keypair", "list"]);
    assert!(ok && out.contains(&ak) && out.contains("5000"), "{out}");
    // The new keypair works at once, for its owner's own keypair only.
    let (ok, out) = cli(&server, &ak, &sk, &["admin", "keypair", "info"]);
    assert!(ok, "{out}");
    assert_eq!(value_of(&out, "Access Key"), ak, "{out}");
    assert_eq!(value_of(&out, "Admin?"), "False", "{out}");
    let (ok, out) = cli(&server, &ak, &sk, &["admin", "domain", "add", "nope"]);
    assert!(!ok && out.contains("no permission"), "{out}");

    let (ok, out) = admin(&[
        "admin",
        "domain",
        "add",
        "mydomain",
        "-d",
        "desc",
        "--total-resource-slots",
        r#"{"cpu": 10}"#,
    ]);
    assert!(ok, "{out}");
    assert_eq!(value_of(&out, "name"), "mydomain", "{out}");
    let (ok, out) = admin(&["admin", "domain", "list"]);
    assert!(
        ok && out.contains("mydomain") && out.contains("cpu:10"),
        "{out}"
    );

    let (ok, out) = admin(&["admin", "group", "add", "default", "mygroup", "-d", "desc"]);
    assert!(ok, "{out}");
    assert_eq!(value_of(&out, "name"), "mygroup", "{out}");
    assert_eq!(value_of(&out, "domain_name"), "default", "{out}");
    let (ok, out) = admin(&["admin", "group", "list"]);
    assert!(ok && out.contains("mygroup"), "{out}");

    let (ok, out) = admin(&["admin", "scaling-group", "list"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("static") && row.contains("fifo"), "{row}");
}
