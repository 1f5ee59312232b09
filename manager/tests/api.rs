//! The API as the official client uses it: the default fixture, signed
//! requests, rate-limit headers, and the reference's error answers.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use chrono::{SecondsFormat, Utc};
use common::{ADMIN_AK, ADMIN_SK, USER_AK, USER_SK, manager, signed, start_with_fixture as start};
use manager_events::testing::TestDb;

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
    // A bad group id is a validation error; an unknown project 404; the
    // default project (the fixture's) gives the member's role.
    let bad = signed(
        &server,
        "GET",
        "/auth/role?group=nope",
        ADMIN_AK,
        ADMIN_SK,
        None,
    )
    .await
    .unwrap();
    assert_eq!(problem(bad).await.0, 400);
    let unknown = format!("/auth/role?group={}", uuid::Uuid::new_v4());
    let r = signed(&server, "GET", &unknown, ADMIN_AK, ADMIN_SK, None)
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 404);
    let project = default_project_id(&db).await;
    let r = signed(
        &server,
        "GET",
        &format!("/auth/role?group={project}"),
        USER_AK,
        USER_SK,
        None,
    )
    .await
    .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["group_role"], "user");

    // An API version the manager does not know is refused before anything else.
    let r = reqwest::Client::new()
        .get(format!("{}/auth/role", server.base))
        .header("X-BackendAI-Version", "v9.20990101")
        .send()
        .await
        .unwrap();
    let (s, b) = problem(r).await;
    assert_eq!(
        (s, b["msg"].as_str()),
        (400, Some("Unsupported API version."))
    );

    // The default policy is projected with the reference's defaults.
    {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Policy {
            #[diesel(sql_type = diesel::sql_types::Text)]
            default_for_unspecified: String,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            max_concurrent_sftp_sessions: i64,
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let p = loop {
            let rows: Vec<Policy> = diesel::sql_query(
                "SELECT default_for_unspecified, max_concurrent_sftp_sessions FROM keypair_resource_policies \
                 WHERE name = 'default'",
            )
            .load(&mut db.connection().await)
            .await
            .unwrap();
            if let Some(p) = rows.into_iter().next() {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the default policy was never projected"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(
            (
                p.default_for_unspecified.as_str(),
                p.max_concurrent_sftp_sessions
            ),
            ("UNLIMITED", 1)
        );
    }

    // The default scaling group is offered to the default domain.
    {
        use diesel_async::RunQueryDsl;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = diesel::sql_query(
                "SELECT 1 FROM scaling_groups g JOIN sgroups_for_domains d ON d.scaling_group = g.name \
                 WHERE g.name = 'default' AND d.domain = 'default' AND g.scheduler = 'fifo'",
            )
            .execute(&mut db.connection().await)
            .await
            .unwrap();
            if n == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the default scaling group was never projected"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

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
    for expect in ["created 14", "created 0"] {
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

#[tokio::test]
async fn a_user_limited_to_some_addresses_is_refused_from_others() {
    use manager_command::handler::CommandHandler;
    use manager_command::reservation::Reservation;
    use manager_command::user::{User, UserCommand, UserPatch};
    let db = TestDb::new().await;
    let server = start(&db).await;
    let handler = CommandHandler::new(db.store().await);
    let (owner, _) = handler
        .load::<Reservation>(&manager_events::reservation::stream_id(
            "user-email",
            "user@lablup.com",
        ))
        .await
        .unwrap();
    let patch = UserPatch {
        allowed_client_ip: Some(vec!["10.0.0.0/8".into()]),
        ..Default::default()
    };
    handler
        .execute::<User>(
            &owner.holder.unwrap(),
            UserCommand::Modify(patch),
            Default::default(),
        )
        .await
        .unwrap();
    // Once projected, requests from 127.0.0.1 are refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = signed(&server, "GET", "/auth/role", USER_AK, USER_SK, None)
            .await
            .unwrap();
        if r.status() == 401 {
            let (_, b) = problem(r).await;
            assert_eq!(b["msg"], "'127.0.0.1' is not allowed IP address");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the restriction never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Others are unaffected.
    assert_eq!(
        signed(&server, "GET", "/auth/role", ADMIN_AK, ADMIN_SK, None)
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn default_project_id(db: &TestDb) -> uuid::Uuid {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let rows: Vec<Row> = diesel::sql_query("SELECT id FROM groups WHERE name = 'default'")
            .load(&mut db.connection().await)
            .await
            .unwrap();
        if let Some(r) = <[Row]>::first(&rows) {
            return r.id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the default project was never projected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
