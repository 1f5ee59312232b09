//! Resource presets over the API: `GET /resource/presets` and
//! `POST /resource/check-presets` against a manager started with the default
//! fixture — with a real `process` agent running a session, for usage — plus
//! the fixture's user and project resource policies.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use common::{
    ADMIN_AK, ADMIN_SK, Server, USER_AK, USER_SK, call, delete, process_agent, signed,
    start_with_fixture as start,
};
use manager_command::auth::signature::{RequestParts, parse_date, sign};
use manager_command::domain::{self, Domain, DomainCommand, DomainPatch};
use manager_command::handler::CommandHandler;
use manager_command::policy::{self, DefaultForUnspecified, KeypairPolicy, KeypairPolicyCommand};
use manager_command::project::{self, Project, ProjectCommand, ProjectPatch};
use manager_command::resource_preset::{self, ResourcePreset, ResourcePresetCommand};
use manager_events::testing::TestDb;
use serde_json::{Value, json};

/// A signed request with a JSON body, as the SDK sends `check_presets`.
async fn signed_json(
    server: &Server,
    method: &str,
    rel_url: &str,
    (ak, sk): (&str, &str),
    body: &Value,
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
    reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{}{rel_url}", server.base))
        .header("Date", date)
        .header("Content-Type", "application/json")
        .header("X-BackendAI-Version", "v7.20230615")
        .header(
            "Authorization",
            format!("BackendAI signMethod=HMAC-SHA256, credential={ak}:{signature}"),
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn ok_json(r: reqwest::Response) -> Value {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn problem(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    (status, r.json().await.unwrap())
}

/// Polls `check` until it returns something, or fails after 10 s: the read
/// models follow the log a little behind.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn presets(server: &Server) -> Value {
    ok_json(
        signed(server, "GET", "/resource/presets", USER_AK, USER_SK, None)
            .await
            .unwrap(),
    )
    .await
}

async fn check(server: &Server, body: &Value) -> Value {
    ok_json(
        signed_json(
            server,
            "POST",
            "/resource/check-presets",
            (USER_AK, USER_SK),
            body,
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn presets_are_listed_with_every_known_slot() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    let server = &server;
    let body = eventually("the fixture's presets are projected", move || async move {
        let body = presets(server).await;
        (body["presets"].as_array().map(Vec::len) == Some(3)).then_some(body)
    })
    .await;
    assert_eq!(
        body,
        json!({"presets": [
            {"name": "01-small", "shared_memory": null,
             "resource_slots": {"cpu": "8", "mem": "34359738368"}},
            {"name": "02-medium", "shared_memory": "1073741824",
             "resource_slots": {"cpu": "24", "mem": "274877906944"}},
            {"name": "03-large", "shared_memory": "2147483648",
             "resource_slots": {"cpu": "64", "mem": "549755813888"}},
        ]})
    );

    // Unsigned: refused as every authenticated endpoint.
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false);
    let r = reqwest::Client::new()
        .get(format!("{}/resource/presets", server.base))
        .header("Date", date)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await.0, 401);

    // The slot types come from the same list.
    let types: Value = reqwest::get(format!("{}/config/resource-slots", server.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(types, json!({"cpu": "count", "mem": "bytes"}));
}

#[tokio::test]
async fn check_presets_reports_limits_usage_and_scaling_groups() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    let server = &server;
    eventually("the fixture's presets are projected", move || async move {
        (presets(server).await["presets"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await;

    // The SDK sends no parameters: project "default", every scaling group.
    let unlimited = json!({"cpu": "Infinity", "mem": "Infinity"});
    let zero = json!({"cpu": "0", "mem": "0"});
    let r = signed(
        server,
        "POST",
        "/resource/check-presets",
        USER_AK,
        USER_SK,
        None,
    )
    .await
    .unwrap();
    let body = ok_json(r).await;
    assert_eq!(
        body,
        json!({
            "keypair_limits": unlimited,
            "keypair_using": zero,
            "keypair_remaining": unlimited,
            "group_limits": unlimited,
            "group_using": zero,
            "group_remaining": unlimited,
            "scaling_group_remaining": zero,
            "scaling_groups": {"default": {"using": zero, "remaining": zero}},
            "presets": [
                {"name": "01-small", "resource_slots": {"cpu": "8", "mem": "34359738368"},
                 "shared_memory": null, "allocatable": false},
                {"name": "02-medium", "resource_slots": {"cpu": "24", "mem": "274877906944"},
                 "shared_memory": "1073741824", "allocatable": false},
                {"name": "03-large", "resource_slots": {"cpu": "64", "mem": "549755813888"},
                 "shared_memory": "2147483648", "allocatable": false},
            ],
        })
    );
    // The same through a JSON body and through the query string.
    let named = json!({"group": "default", "scaling_group": "default"});
    assert_eq!(check(server, &named).await, body);
    let r = signed(
        server,
        "POST",
        "/resource/check-presets?group=default&scaling_group=default",
        ADMIN_AK,
        ADMIN_SK,
        None,
    )
    .await
    .unwrap();
    assert_eq!(ok_json(r).await["scaling_groups"], body["scaling_groups"]);

    // A scaling group the caller may not use, a project it is not in, and
    // parameters the endpoint does not take.
    let r = signed_json(
        server,
        "POST",
        "/resource/check-presets",
        (USER_AK, USER_SK),
        &json!({"scaling_group": "gpu"}),
    )
    .await;
    let (s, b) = problem(r).await;
    assert_eq!(
        (s, b["type"].as_str()),
        (400, Some("https://api.backend.ai/probs/invalid-api-params"))
    );
    assert!(b["msg"].as_str().unwrap().contains("Unknown scaling group"));
    let r = signed_json(
        server,
        "POST",
        "/resource/check-presets",
        (USER_AK, USER_SK),
        &json!({"group": "research"}),
    )
    .await;
    let (s, b) = problem(r).await;
    assert_eq!(
        (s, b["type"].as_str(), b["title"].as_str()),
        (
            404,
            Some("https://api.backend.ai/probs/object-not-found"),
            Some("No such user group (or project).")
        )
    );
    let r = signed_json(
        server,
        "POST",
        "/resource/check-presets",
        (USER_AK, USER_SK),
        &json!({"groups": "default"}),
    )
    .await;
    let (s, b) = problem(r).await;
    assert_eq!(
        (s, &b["data"]),
        (400, &json!({"groups": "is not allowed key"}))
    );

    // Quotas: the keypair gets the least of its policy, project and domain.
    let handler = CommandHandler::new(db.store().await);
    let slots = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    handler
        .execute::<Domain>(
            &domain::stream_id("default"),
            DomainCommand::Modify(DomainPatch {
                total_resource_slots: Some(slots(&[("cpu", "4")])),
                ..Default::default()
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let project_id = body_project_id(&db).await;
    handler
        .execute::<Project>(
            &project::stream_id(&project_id),
            ProjectCommand::Modify(ProjectPatch {
                total_resource_slots: Some(slots(&[("cpu", "6"), ("mem", "1073741824")])),
                ..Default::default()
            }),
            Default::default(),
        )
        .await
        .unwrap();
    let limited = manager_events::policy::KeypairPolicyFields {
        default_for_unspecified: DefaultForUnspecified::Limited,
        total_resource_slots: slots(&[("cpu", "2.5"), ("cuda.shares", "1")]),
        ..policy::default_fields()
    };
    handler
        .execute::<KeypairPolicy>(
            &policy::stream_id("default"),
            KeypairPolicyCommand::Modify(limited),
            Default::default(),
        )
        .await
        .unwrap();
    let body = eventually("the quotas are projected", move || async move {
        let body = check(server, &json!({})).await;
        (body["group_limits"]["cpu"] == "6" && body["keypair_limits"]["cpu"] == "2.5")
            .then_some(body)
    })
    .await;
    assert_eq!(body["keypair_limits"], json!({"cpu": "2.5", "mem": "0"}));
    assert_eq!(body["keypair_remaining"], json!({"cpu": "2.5", "mem": "0"}));
    assert_eq!(
        body["group_limits"],
        json!({"cpu": "6", "mem": "1073741824"})
    );
    assert_eq!(body["group_remaining"], body["group_limits"]);
    assert_eq!(body["scaling_group_remaining"], zero);

    // Unlimited unspecified slots: the project's and domain's quotas bind.
    let unlimited_rest = manager_events::policy::KeypairPolicyFields {
        default_for_unspecified: DefaultForUnspecified::Unlimited,
        total_resource_slots: slots(&[("cpu", "8")]),
        ..policy::default_fields()
    };
    handler
        .execute::<KeypairPolicy>(
            &policy::stream_id("default"),
            KeypairPolicyCommand::Modify(unlimited_rest),
            Default::default(),
        )
        .await
        .unwrap();
    let body = eventually("the new policy is projected", move || async move {
        let body = check(server, &json!({})).await;
        (body["keypair_limits"]["cpu"] == "8").then_some(body)
    })
    .await;
    assert_eq!(
        body["keypair_limits"],
        json!({"cpu": "8", "mem": "Infinity"})
    );
    assert_eq!(
        body["keypair_remaining"],
        json!({"cpu": "4", "mem": "1073741824"})
    );
}

fn slot_map(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The `status` `GET /session/{name}` shows the user, or `None` once the
/// session is gone (404).
async fn session_status(server: &Server, name: &str) -> Option<Value> {
    let (status, body) = call(
        server,
        (USER_AK, USER_SK),
        "GET",
        &format!("/session/{name}"),
        &Value::Null,
    )
    .await;
    match status {
        200 => Some(body["status"].clone()),
        404 => None,
        _ => panic!("GET /session/{name}: {status} {body}"),
    }
}

#[tokio::test]
async fn check_presets_counts_a_running_session_against_quotas_agents_and_presets() {
    let db = TestDb::new().await;
    let server = start(&db).await;
    let server = &server;
    // 4 CPUs and 4 GiB in the scaling group `default`.
    let _agent = process_agent(&db, "i-presets", "4").await;

    // A preset that fits the agent (the fixture's need 32 GiB and more),
    // and a domain quota on CPUs, so that the domain's usage shows.
    let handler = CommandHandler::new(db.store().await);
    handler
        .execute::<ResourcePreset>(
            &resource_preset::stream_id("00-half"),
            ResourcePresetCommand::Create {
                name: "00-half".into(),
                fields: manager_events::resource_preset::ResourcePresetFields {
                    resource_slots: slot_map(&[("cpu", "2"), ("mem", "2147483648")]),
                    shared_memory: None,
                    scaling_group_name: None,
                },
            },
            Default::default(),
        )
        .await
        .unwrap();
    handler
        .execute::<Domain>(
            &domain::stream_id("default"),
            DomainCommand::Modify(DomainPatch {
                total_resource_slots: Some(slot_map(&[("cpu", "5")])),
                ..Default::default()
            }),
            Default::default(),
        )
        .await
        .unwrap();

    let allocatable = |body: &Value| -> Vec<(String, bool)> {
        body["presets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["allocatable"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let unlimited = json!({"cpu": "Infinity", "mem": "Infinity"});
    let zero = json!({"cpu": "0", "mem": "0"});
    let whole_agent = json!({"cpu": "4", "mem": "4294967296"});
    let idle = eventually(
        "the agent, preset and quota are projected",
        move || async move {
            let body = check(server, &json!({})).await;
            (body["scaling_group_remaining"]["cpu"] == "4"
                && body["presets"].as_array().map(Vec::len) == Some(4)
                && body["keypair_remaining"]["cpu"] == "5")
                .then_some(body)
        },
    )
    .await;
    assert_eq!(idle["keypair_using"], zero);
    assert_eq!(idle["group_using"], zero);
    assert_eq!(
        idle["keypair_remaining"],
        json!({"cpu": "5", "mem": "Infinity"})
    );
    assert_eq!(idle["scaling_group_remaining"], whole_agent);
    assert_eq!(
        idle["scaling_groups"],
        json!({"default": {"using": zero, "remaining": whole_agent}})
    );
    assert_eq!(
        allocatable(&idle),
        [
            ("00-half".to_owned(), true),
            ("01-small".to_owned(), false),
            ("02-medium".to_owned(), false),
            ("03-large".to_owned(), false),
        ]
    );

    // A session taking 3 CPUs and 1 GiB runs on the agent.
    common::running_session(
        server,
        (USER_AK, USER_SK),
        json!({"name": "busy", "image": "python", "maxWaitSeconds": 60,
               "config": {"resources": {"cpu": "3", "mem": "1g"}}}),
    )
    .await;
    eventually("the session is shown running", move || async move {
        (session_status(server, "busy").await == Some(json!("RUNNING"))).then_some(())
    })
    .await;
    let busy = check(server, &json!({})).await;
    let session = json!({"cpu": "3", "mem": "1073741824"});
    // The keypair, its project and its domain each use the session's slots:
    // the keypair may use 5 − 3 CPUs of the domain's quota.
    assert_eq!(busy["keypair_using"], session);
    assert_eq!(busy["group_using"], session);
    assert_eq!(busy["group_remaining"], unlimited);
    assert_eq!(
        busy["keypair_remaining"],
        json!({"cpu": "2", "mem": "Infinity"})
    );
    // The agent has 1 CPU and 3 GiB left, which is what the group has left.
    let left = json!({"cpu": "1", "mem": "3221225472"});
    assert_eq!(busy["scaling_group_remaining"], left);
    assert_eq!(
        busy["scaling_groups"],
        json!({"default": {"using": session, "remaining": left}})
    );
    // 2 CPUs no longer fit on the agent.
    assert_eq!(allocatable(&busy)[0], ("00-half".to_owned(), false));
    // Another member of the project sees the project's and the domain's
    // usage, but not the session as its own.
    let r = signed(
        server,
        "POST",
        "/resource/check-presets",
        ADMIN_AK,
        ADMIN_SK,
        None,
    )
    .await
    .unwrap();
    let admin = ok_json(r).await;
    assert_eq!(admin["keypair_using"], zero);
    assert_eq!(admin["group_using"], session);
    assert_eq!(admin["keypair_remaining"]["cpu"], "2");
    assert_eq!(admin["scaling_groups"]["default"]["using"], zero);

    // Destroyed, the session gives everything back.
    let (status, body) = delete(server, (USER_AK, USER_SK), "/session/busy").await;
    assert_eq!(status, 200, "{body}");
    eventually("the session is gone", move || async move {
        session_status(server, "busy").await.is_none().then_some(())
    })
    .await;
    assert_eq!(check(server, &json!({})).await, idle);
}

#[tokio::test]
async fn the_fixture_creates_the_default_user_and_project_policies() {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        policies: String,
    }
    let db = TestDb::new().await;
    let _server = start(&db).await;
    let db = &db;
    let rows = eventually("the default policies are projected", move || async move {
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT format('user %s %s %s %s %s', name, max_vfolder_count, max_quota_scope_size, \
             max_session_count_per_model_session, max_customized_image_count) AS policies \
             FROM user_resource_policies \
             UNION ALL SELECT format('project %s %s %s %s', name, max_vfolder_count, \
             max_quota_scope_size, max_network_count) FROM project_resource_policies \
             ORDER BY 1",
        )
        .load(&mut db.connection().await)
        .await
        .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    let rows: Vec<&str> = rows.iter().map(|r| r.policies.as_str()).collect();
    assert_eq!(rows, ["project default 0 -1 3", "user default 0 -1 10 3"]);
}

async fn body_project_id(db: &TestDb) -> uuid::Uuid {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: uuid::Uuid,
    }
    eventually("the default project is projected", move || async move {
        let rows: Vec<Row> = diesel::sql_query("SELECT id FROM groups WHERE name = 'default'")
            .load(&mut db.connection().await)
            .await
            .unwrap();
        <[Row]>::first(&rows).map(|r| r.id)
    })
    .await
}
