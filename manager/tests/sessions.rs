//! Sessions end to end: `manager start-server` with a real `process` agent
//! — create (held until it runs), destroy, batch results, cancellation of a
//! queued session, and bad requests that change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use manager_events::codec::decode;
use manager_events::session::{SessionEvent, SessionResult, SessionStatus};
use manager_events::testing::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use common::{ADMIN_AK, ADMIN_SK, USER_AK, USER_SK, delete, post, process_agent, until};

/// Every status the log recorded for a session, in order, and its result.
async fn history(
    store: &manager_events::EventStore,
    id: Uuid,
) -> (Vec<SessionStatus>, SessionResult) {
    let mut statuses = Vec::new();
    let mut result = SessionResult::Undefined;
    for r in store
        .read_stream(&manager_events::session::stream_id(id), 0)
        .await
        .unwrap()
    {
        match decode::<SessionEvent>(&r.event_type, &r.payload).unwrap() {
            SessionEvent::SessionEnqueued { .. } => statuses.push(SessionStatus::Pending),
            SessionEvent::SessionScheduled { .. } => statuses.push(SessionStatus::Scheduled),
            SessionEvent::SessionCancelled { .. } => statuses.push(SessionStatus::Cancelled),
            SessionEvent::KernelsTransitioned {
                session_status: Some(s),
                ..
            }
            | SessionEvent::KernelStarted {
                session_status: Some(s),
                ..
            } => statuses.push(s),
            SessionEvent::SessionResultRecorded { result: r, .. } => result = r,
            _ => {}
        }
    }
    (statuses, result)
}

const USER: (&str, &str) = (USER_AK, USER_SK);

#[tokio::test]
async fn a_session_is_created_runs_on_the_agent_and_is_destroyed() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-proc", "4").await;

    let (status, body) = post(
        &server,
        USER,
        "/session",
        json!({"name": "first", "image": "python", "maxWaitSeconds": 60,
               "config": {"resources": {"cpu": "1", "mem": "512m"}}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "RUNNING", "{body}");
    assert_eq!(body["created"], true);
    let id: Uuid = body["sessionId"].as_str().unwrap().parse().unwrap();

    // The same name again reuses it.
    let (status, again) = post(
        &server,
        USER,
        "/session",
        json!({"name": "first", "image": "python", "enqueueOnly": true}),
    )
    .await;
    assert_eq!(
        (status, &again["created"], &again["sessionId"]),
        (201, &json!(false), &body["sessionId"]),
        "{again}"
    );
    // …unless the caller refuses reuse.
    let (status, refused) = post(
        &server,
        USER,
        "/session",
        json!({"name": "first", "image": "python", "reuseIfExists": false}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["type"]
            .as_str()
            .unwrap()
            .ends_with("session-already-exists")
    );
    assert_eq!(refused["data"]["existingSessionId"], body["sessionId"]);

    // Another user's session of that name is not this one.
    let (status, _) = delete(&server, (ADMIN_AK, ADMIN_SK), "/session/first").await;
    assert_eq!(status, 404);

    let (status, body) = delete(&server, USER, "/session/first").await;
    assert_eq!((status, body), (200, json!({"stats": null})));
    until(Duration::from_secs(20), "terminated", || async {
        history(&store, id).await.0.last() == Some(&SessionStatus::Terminated)
    })
    .await;
    let (statuses, _) = history(&store, id).await;
    assert_eq!(statuses.first(), Some(&SessionStatus::Pending));
    assert!(statuses.contains(&SessionStatus::Running), "{statuses:?}");
    assert!(
        statuses.contains(&SessionStatus::Terminating),
        "{statuses:?}"
    );

    // Its name is free again.
    let (status, body) = post(
        &server,
        USER,
        "/session",
        json!({"name": "first", "image": "python", "enqueueOnly": true}),
    )
    .await;
    assert_eq!((status, &body["created"]), (201, &json!(true)), "{body}");
    assert_ne!(body["sessionId"], json!(id.to_string()));
}

#[tokio::test]
async fn a_batch_session_records_its_exit_code_and_ends_by_itself() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-batch", "4").await;

    let mut ids = Vec::new();
    for (name, command) in [("batch-ok", "exit 0"), ("batch-bad", "exit 3")] {
        let (status, body) = post(
            &server,
            USER,
            "/session",
            json!({"name": name, "image": "python", "type": "batch",
                   "startupCommand": command, "enqueueOnly": true}),
        )
        .await;
        assert_eq!(
            (status, &body["status"]),
            (201, &json!("PENDING")),
            "{body}"
        );
        ids.push(body["sessionId"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    for (id, expected) in ids
        .into_iter()
        .zip([SessionResult::Success, SessionResult::Failure])
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        while history(&store, id).await.0.last() != Some(&SessionStatus::Terminated)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if history(&store, id).await.0.last() != Some(&SessionStatus::Terminated) {
            let events = store
                .read_stream(&manager_events::session::stream_id(id), 0)
                .await
                .unwrap();
            panic!("{events:#?}");
        }
        assert_eq!(history(&store, id).await.1, expected);
    }
}

#[tokio::test]
async fn a_session_that_fits_nowhere_waits_without_blocking_the_queue_and_is_cancelled_on_destroy()
{
    let db = TestDb::new().await;
    let store = db.store().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-small", "2").await;

    // Too big for the only agent: stays PENDING with a reason…
    let (status, big) = post(
        &server,
        USER,
        "/session",
        json!({"name": "too-big", "image": "python", "enqueueOnly": true,
               "config": {"resources": {"cpu": "3"}}}),
    )
    .await;
    assert_eq!(status, 201, "{big}");
    let big_id: Uuid = big["sessionId"].as_str().unwrap().parse().unwrap();
    // …while a small one behind it runs.
    common::running_session(
        &server,
        USER,
        json!({"name": "small", "image": "python", "maxWaitSeconds": 60}),
    )
    .await;
    let events = store
        .read_stream(&manager_events::session::stream_id(big_id), 0)
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.event_type == "SchedulingDeferred"
            && e.payload["status_info"] == "no-available-instances"),
        "{events:?}"
    );
    // A held request for it times out with the reference's pseudo-status.
    let (status, held) = post(
        &server,
        USER,
        "/session",
        json!({"name": "too-big-2", "image": "python", "maxWaitSeconds": 1,
               "config": {"resources": {"cpu": "3"}}}),
    )
    .await;
    assert_eq!(
        (status, &held["status"]),
        (201, &json!("TIMEOUT")),
        "{held}"
    );

    let (status, _) = delete(&server, USER, "/session/too-big").await;
    assert_eq!(status, 200);
    assert_eq!(
        history(&store, big_id).await.0.last(),
        Some(&SessionStatus::Cancelled)
    );
}

#[tokio::test]
async fn bad_requests_are_refused_with_problem_json_and_append_nothing() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;
    let head = common::log_head(&db).await;
    let cases = [
        (
            json!({"name": "s-img", "image": "no-such-image"}),
            404,
            "object-not-found",
        ),
        (
            json!({"name": "s-slot", "image": "python", "config": {"resources": {"gpu.magic": "1"}}}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-neg", "image": "python", "config": {"resources": {"cpu": "-1"}}}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-low", "image": "python", "config": {"resources": {"mem": "1m"}}}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-zero", "image": "python", "clusterSize": 0}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-huge", "image": "python", "clusterSize": 100000}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-two", "image": "python", "clusterSize": 2}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-env", "image": "python", "config": {"environ": {"A": 1}}}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-dep", "image": "python", "dependencies": [Uuid::new_v4().to_string()]}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-dep2", "image": "python", "dependencies": "x"}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "x", "image": "python"}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-batch", "image": "python", "type": "batch"}),
            400,
            "invalid-api-params",
        ),
        (
            json!({"name": "s-sg", "image": "python", "config": {"scalingGroup": "nope"}}),
            404,
            "object-not-found",
        ),
        (
            json!({"name": "s-agent", "image": "python", "config": {"agentList": ["i-x"]}}),
            403,
            "insufficient-privilege",
        ),
        (
            json!({"name": "s-extra", "image": "python", "bogus": 1}),
            400,
            "invalid-api-params",
        ),
    ];
    for (body, status, kind) in cases {
        let (got, answer) = post(&server, USER, "/session", body.clone()).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert!(
            answer["type"].as_str().is_some_and(|t| t.ends_with(kind)),
            "{body} → {answer}"
        );
    }
    let r = common::signed_json(&server, "POST", "/session", USER, b"{not json", &[]).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        common::log_head(&db).await,
        head,
        "a refused request appended events"
    );
    // Destroying what does not exist.
    let (status, body) = delete(&server, USER, "/session/nothing-here").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = delete(&server, USER, "/session/x?forced=maybe").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn quotas_hold_sessions_back_and_say_why() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-quota", "8").await;
    // One session at a time, at most 2 CPUs, for the default policy.
    let answer = common::gql(
        &server,
        (ADMIN_AK, ADMIN_SK),
        r#"mutation { modify_keypair_resource_policy(name: "default", props: {
            max_concurrent_sessions: 1, total_resource_slots: "{\"cpu\": \"2\"}",
            default_for_unspecified: "UNLIMITED"}) { ok msg } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        answer["data"]["modify_keypair_resource_policy"]["ok"], true,
        "{answer}"
    );

    let (status, too_big) = post(
        &server,
        USER,
        "/session",
        json!({"name": "q-big", "image": "python", "enqueueOnly": true,
               "config": {"resources": {"cpu": "3"}}}),
    )
    .await;
    assert_eq!(status, 201, "{too_big}");
    common::running_session(
        &server,
        USER,
        json!({"name": "q-one", "image": "python", "maxWaitSeconds": 60}),
    )
    .await;
    let (status, second) = post(
        &server,
        USER,
        "/session",
        json!({"name": "q-two", "image": "python", "maxWaitSeconds": 2}),
    )
    .await;
    assert_eq!(
        (status, &second["status"]),
        (201, &json!("TIMEOUT")),
        "{second}"
    );

    let failed = |id: &Value| {
        let id: Uuid = id.as_str().unwrap().parse().unwrap();
        let store = store.clone();
        async move {
            store
                .read_stream(&manager_events::session::stream_id(id), 0)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.event_type == "SchedulingDeferred")
                .flat_map(|e| {
                    e.payload["failed_predicates"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    until(
        Duration::from_secs(10),
        "q-two held back by concurrency",
        || async {
            failed(&second["sessionId"])
                .await
                .contains(&"concurrency".to_owned())
        },
    )
    .await;
    assert!(
        failed(&too_big["sessionId"])
            .await
            .contains(&"keypair_resource_limit".to_owned()),
        "{:?}",
        failed(&too_big["sessionId"]).await
    );
    // The first one ends: the second one runs.
    let (status, _) = delete(&server, USER, "/session/q-one").await;
    assert_eq!(status, 200);
    let second_id: Uuid = second["sessionId"].as_str().unwrap().parse().unwrap();
    until(Duration::from_secs(30), "q-two runs", || async {
        history(&store, second_id)
            .await
            .0
            .contains(&SessionStatus::Running)
    })
    .await;
}

#[tokio::test]
async fn kernels_of_a_lost_agent_end_in_error_and_the_session_can_still_be_destroyed() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let server = common::start_with_fixture_env(
        &db,
        &[
            ("MANAGER_AGENTS__HEARTBEAT_TIMEOUT_MS", "600"),
            ("MANAGER_AGENTS__SWEEP_INTERVAL_MS", "50"),
            ("MANAGER_SESSIONS__LOST_AGENT_GRACE_SECS", "0"),
            ("MANAGER_SESSIONS__SCHEDULE_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let agent = process_agent(&db, "i-doomed", "4").await;
    let id = common::running_session(
        &server,
        USER,
        json!({"name": "stranded", "image": "python", "maxWaitSeconds": 60}),
    )
    .await;
    drop(agent);
    until(Duration::from_secs(20), "ERROR", || async {
        history(&store, id).await.0.last() == Some(&SessionStatus::Error)
    })
    .await;
    let events = store
        .read_stream(&manager_events::session::stream_id(id), 0)
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.payload["reason"], "agent-lost", "{:?}", last.payload);
    // An errored session is destroyed at once: nobody to ask.
    let (status, _) = delete(&server, USER, "/session/stranded").await;
    assert_eq!(status, 200);
    assert_eq!(
        history(&store, id).await.0.last(),
        Some(&SessionStatus::Terminated)
    );
}

#[tokio::test]
async fn code_runs_in_a_session_and_its_log_is_read_back() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-exec", "4").await;
    common::running_session(
        &server,
        USER,
        json!({"name": "calc", "image": "python", "maxWaitSeconds": 60}),
    )
    .await;

    let mut answer = Value::Null;
    let mut run_id = Value::Null;
    let mut mode = "query";
    let mut output = String::new();
    for _ in 0..50 {
        let (status, body) = post(
            &server,
            USER,
            "/session/calc",
            json!({"mode": mode, "code": "print(6 * 7)", "runId": run_id}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        answer = body["result"].clone();
        for item in answer["console"].as_array().unwrap() {
            if item[0] == "stdout" {
                output.push_str(item[1].as_str().unwrap());
            }
        }
        if answer["status"] != "continued" {
            break;
        }
        run_id = answer["runId"].clone();
        mode = "continue";
    }
    assert_eq!(answer["status"], "finished", "{answer}");
    assert_eq!(output.trim(), "42", "{answer}");

    let r = common::signed(&server, "GET", "/session/calc/logs", USER_AK, USER_SK, None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let logs: Value = r.json().await.unwrap();
    assert!(logs["result"]["logs"].is_string(), "{logs}");

    // A mode that does not exist, and a continuation without its run.
    let (status, _) = post(
        &server,
        USER,
        "/session/calc",
        json!({"mode": "dance", "code": "", "runId": null}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &server,
        USER,
        "/session/calc",
        json!({"mode": "continue", "code": "", "runId": null}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        &server,
        USER,
        "/session/nope",
        json!({"mode": "query", "code": "1", "runId": null}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_running_session_restarts_and_is_renamed() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-restart", "4").await;
    let id = common::running_session(
        &server,
        USER,
        json!({"name": "phoenix", "image": "python", "maxWaitSeconds": 60}),
    )
    .await;

    let r = common::signed_json(&server, "PATCH", "/session/phoenix", USER, b"", &[]).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    until(Duration::from_secs(20), "running again", || async {
        let (statuses, _) = history(&store, id).await;
        statuses.ends_with(&[SessionStatus::Restarting, SessionStatus::Running])
    })
    .await;

    // Renamed: the new name finds it, the old one no longer does, and the
    // old name is free for another session.
    let rename = |path: &'static str| {
        let server = &server;
        async move {
            common::signed_json(server, "POST", path, USER, b"", &[])
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(rename("/session/phoenix/rename?name=renamed").await, 204);
    assert_eq!(rename("/session/renamed/rename?name=bad").await, 400);
    assert_eq!(rename("/session/phoenix/rename?name=again").await, 404);
    let (status, body) = post(
        &server,
        USER,
        "/session",
        json!({"name": "phoenix", "image": "python", "enqueueOnly": true}),
    )
    .await;
    assert_eq!((status, &body["created"]), (201, &json!(true)), "{body}");
    let (status, _) = delete(&server, USER, "/session/renamed").await;
    assert_eq!(status, 200);
    until(Duration::from_secs(20), "terminated", || async {
        history(&store, id).await.0.last() == Some(&SessionStatus::Terminated)
    })
    .await;
}

#[tokio::test]
async fn a_recursive_destroy_ends_the_sessions_that_depend_on_it() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let server = common::start_with_fixture(&db).await;
    // No agent: everything stays queued.
    let (_, first) = post(
        &server,
        USER,
        "/session",
        json!({"name": "base", "image": "python", "enqueueOnly": true}),
    )
    .await;
    let (status, second) = post(
        &server,
        USER,
        "/session",
        json!({"name": "child", "image": "python", "enqueueOnly": true,
               "dependencies": ["base"]}),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let r = common::signed_json(
        &server,
        "DELETE",
        "/session/base?recursive=true",
        USER,
        b"",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");
    for s in [&first, &second] {
        let id: Uuid = s["sessionId"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            history(&store, id).await.0.last(),
            Some(&SessionStatus::Cancelled)
        );
    }
}

#[tokio::test]
async fn an_unused_session_ends_after_its_idle_timeout_and_a_used_one_lives_on() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let server =
        common::start_with_fixture_env(&db, &[("MANAGER_SESSIONS__SCHEDULE_INTERVAL_MS", "100")])
            .await;
    let _agent = process_agent(&db, "i-idle", "4").await;
    let answer = common::gql(
        &server,
        (ADMIN_AK, ADMIN_SK),
        r#"mutation { modify_keypair_resource_policy(name: "default", props: {idle_timeout: 2}) { ok msg } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        answer["data"]["modify_keypair_resource_policy"]["ok"], true,
        "{answer}"
    );
    let mut ids = Vec::new();
    for name in ["idle-one", "busy-one"] {
        ids.push(
            common::running_session(
                &server,
                USER,
                json!({"name": name, "image": "python", "maxWaitSeconds": 60}),
            )
            .await,
        );
    }
    // Keep one busy for longer than the timeout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        let (status, _) = post(
            &server,
            USER,
            "/session/busy-one",
            json!({"mode": "query", "code": "1", "runId": null}),
        )
        .await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    until(Duration::from_secs(10), "the idle one ended", || async {
        history(&store, ids[0]).await.0.last() == Some(&SessionStatus::Terminated)
    })
    .await;
    let events = store
        .read_stream(&manager_events::session::stream_id(ids[0]), 0)
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.payload["reason"] == "idle-timeout"),
        "{events:?}"
    );
    assert_eq!(
        history(&store, ids[1]).await.0.last(),
        Some(&SessionStatus::Running)
    );
}

#[tokio::test]
async fn a_manager_never_enqueues_on_what_another_manager_changed_since_it_last_looked() {
    let db = TestDb::new().await;
    let a = common::start_with_fixture(&db).await;
    let b = common::spawn(&db);
    // Manager A has looked at the project, the keypair, its policy and the
    // image (and kept them).
    let (status, body) = post(
        &a,
        USER,
        "/session",
        json!({"name": "warm", "image": "python", "enqueueOnly": true}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Manager B deactivates the project.
    let groups = common::gql(
        &b,
        (ADMIN_AK, ADMIN_SK),
        "{ groups(domain_name: \"default\") { id name } }",
        json!({}),
    )
    .await;
    let gid = groups["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "default")
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .expect("the default project");
    let r = common::gql(
        &b,
        (ADMIN_AK, ADMIN_SK),
        "mutation($gid: UUID!) { modify_group(gid: $gid, props: {is_active: false}) { ok msg } }",
        json!({ "gid": gid }),
    )
    .await;
    assert_eq!(r["data"]["modify_group"]["ok"], true, "{r}");
    let head = common::log_head(&db).await;

    // Manager A refuses, although what it kept says the project is active.
    let (status, body) = post(
        &a,
        USER,
        "/session",
        json!({"name": "cold", "image": "python", "enqueueOnly": true}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["msg"].as_str().unwrap_or("").contains("project"),
        "{body}"
    );
    assert_eq!(common::log_head(&db).await, head, "nothing appended");
}
