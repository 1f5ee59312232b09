//! Reading sessions back over REST: `GET /session/{name}` and the event
//! streams `GET /events/session` (followed from the log) and
//! `GET /events/background-task`, end to end with `manager start-server`
//! and an in-process `process` agent; also the official CLI's
//! `session events`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use manager_command::auth::signature::{RequestParts, parse_date, sign};
use manager_events::testing::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

use common::{ADMIN_AK, ADMIN_SK, USER_AK, USER_SK, delete, post, process_agent, until};

const USER: (&str, &str) = (USER_AK, USER_SK);
const ADMIN: (&str, &str) = (ADMIN_AK, ADMIN_SK);

async fn get(server: &common::Server, (ak, sk): (&str, &str), path: &str) -> (u16, Value) {
    let r = common::signed(server, "GET", path, ak, sk, None)
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A signed GET without a Content-Type header, as the client opens event
/// streams (signed with `application/octet-stream`).
async fn sse(server: &common::Server, (ak, sk): (&str, &str), rel_url: &str) -> reqwest::Response {
    let date = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, false);
    let parts = RequestParts {
        method: "GET",
        rel_url,
        host: &server.host,
        date: Some(&date),
        authorization: None,
        content_type: None,
        api_version: Some("v7.20230615"),
        legacy_api_version: None,
    };
    let signature = sign(&parts, "sha256", parse_date(&date).unwrap(), sk).unwrap();
    reqwest::Client::new()
        .get(format!("{}{rel_url}", server.base))
        .header("Date", date)
        .header("X-BackendAI-Version", "v7.20230615")
        .header(
            "Authorization",
            format!("BackendAI signMethod=HMAC-SHA256, credential={ak}:{signature}"),
        )
        .send()
        .await
        .unwrap()
}

/// One SSE frame as read off the wire.
#[derive(Debug, Clone)]
struct Frame {
    event: String,
    data: String,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("{} data is not JSON ({e}): {:?}", self.event, self.data))
    }
}

/// Reads frames until `server_close`, the end of the body, `stop` says
/// enough, or `within` passes. Also answers whether the body ended.
async fn read_frames(
    mut r: reqwest::Response,
    within: Duration,
    stop: impl Fn(&[Frame]) -> bool,
) -> (Vec<Frame>, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    loop {
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block = String::from_utf8(buf[..end].to_vec()).unwrap();
            buf.drain(..end + 2);
            let (mut event, mut data) = (None, None);
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            if let Some(event) = event {
                frames.push(Frame {
                    event,
                    data: data.expect("a frame without data"),
                });
            }
        }
        if frames.last().is_some_and(|f| f.event == "server_close") || stop(&frames) {
            return (frames, false);
        }
        match tokio::time::timeout_at(deadline, r.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            Ok(Ok(None)) => return (frames, true),
            Ok(Err(e)) => panic!("reading the stream failed: {e}"),
            Err(_) => panic!(
                "timed out reading the stream; got {:?}",
                frames.iter().map(|f| &f.event).collect::<Vec<_>>()
            ),
        }
    }
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| f.event.as_str()).collect()
}

fn position(frames: &[Frame], event: &str) -> usize {
    frames
        .iter()
        .position(|f| f.event == event)
        .unwrap_or_else(|| panic!("no {event} in {:?}", names(frames)))
}

/// Every frame's data is JSON with the documented keys.
fn check_data(frames: &[Frame], name: &str, id: Uuid) {
    for f in frames {
        let data = f.json();
        if f.event == "server_close" {
            assert_eq!(data, json!({}));
            continue;
        }
        for key in [
            "reason",
            "sessionName",
            "ownerAccessKey",
            "sessionId",
            "exitCode",
            "kernelId",
        ] {
            assert!(data.get(key).is_some(), "{} lacks {key}: {data}", f.event);
        }
        assert_eq!(data["sessionName"], name, "{data}");
        assert_eq!(data["sessionId"], id.to_string(), "{data}");
        assert_eq!(data["ownerAccessKey"], USER_AK, "{data}");
        assert!(data["reason"].is_string(), "{data}");
        assert!(data["kernelId"].as_str().unwrap().parse::<Uuid>().is_ok());
        if f.event.starts_with("kernel_") {
            assert_eq!(data["clusterRole"], "main", "{data}");
            assert_eq!(data["clusterIdx"], 1, "{data}");
        }
        if !matches!(
            f.event.as_str(),
            "kernel_terminating" | "kernel_terminated" | "session_success" | "session_failure"
        ) {
            assert_eq!(data["exitCode"], Value::Null, "{}: {data}", f.event);
        }
    }
}

#[tokio::test]
async fn session_info_shows_a_live_session_of_the_caller() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-info", "4").await;

    let id = common::running_session(
        &server,
        USER,
        json!({"name": "info-s", "image": "python", "maxWaitSeconds": 60,
               "config": {"resources": {"cpu": "1", "mem": "512m"},
                          "resource_opts": {"shmem": "64m"}}}),
    )
    .await
    .to_string();

    // The create answered RUNNING as soon as the log said so; the read
    // models follow (read-your-writes covers the caller's own command, the
    // enqueue, not the agent's report that the kernel started).
    until(
        Duration::from_secs(10),
        "the read models to show it running",
        || async { get(&server, USER, "/session/info-s").await.1["status"] == "RUNNING" },
    )
    .await;
    let (status, info) = get(&server, USER, "/session/info-s").await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["status"], "RUNNING", "{info}");
    assert_eq!(info["domainName"], "default");
    assert!(info["groupId"].as_str().unwrap().parse::<Uuid>().is_ok());
    assert!(info["userId"].as_str().unwrap().parse::<Uuid>().is_ok());
    assert_eq!(info["lang"], info["image"]);
    assert!(info["image"].as_str().unwrap().contains("python"), "{info}");
    assert_eq!(info["architecture"], "x86_64");
    assert_eq!(info["tag"], Value::Null);
    assert_ne!(info["containerId"], "None", "{info}");
    // Python repr strings, not JSON.
    for key in ["occupiedSlots", "occupyingSlots", "requestedSlots"] {
        let text = info[key].as_str().unwrap();
        assert!(
            text.contains("'cpu': Decimal('1')") && text.contains("'mem': Decimal('536870912')"),
            "{key}: {text}"
        );
    }
    assert_eq!(info["occupiedShares"], "{}");
    assert_eq!(
        info["resourceOpts"], "{'main1': {'shmem': '64m'}}",
        "{info}"
    );
    assert!(info["statusInfo"].is_string(), "{info}");
    assert!(info["age"].as_i64().unwrap() >= 0);
    let created = info["creationTime"].as_str().unwrap();
    assert!(
        created.len() >= 25 && created.as_bytes()[10] == b' ' && created.ends_with("+00:00"),
        "{created}"
    );
    assert_eq!(info["terminationTime"], Value::Null);
    assert_eq!(info["numQueriesExecuted"], 0);
    assert_eq!(info["lastStat"], Value::Null);
    assert_eq!(info["idleChecks"], json!({}));

    // By id too; `owner_access_key` is ignored, as in the reference.
    let (status, by_id) = get(&server, USER, &format!("/session/{id}")).await;
    assert_eq!(
        (status, &by_id["creationTime"]),
        (200, &info["creationTime"])
    );
    let (status, _) = get(
        &server,
        USER,
        &format!("/session/info-s?owner_access_key={ADMIN_AK}"),
    )
    .await;
    assert_eq!(status, 200);

    // Nothing of that name; someone else's session; a malformed reference.
    let (status, nf) = get(&server, USER, "/session/nope").await;
    assert_eq!(status, 404, "{nf}");
    assert!(nf["type"].as_str().unwrap().ends_with("object-not-found"));
    assert_eq!(nf["title"], "No such session.");
    assert_eq!(nf["msg"], "Session (id=nope) does not exist.");
    let (status, _) = get(&server, ADMIN, "/session/info-s").await;
    assert_eq!(status, 404);
    let (status, _) = get(&server, ADMIN, &format!("/session/{id}")).await;
    assert_eq!(status, 404);
    let r = common::signed(&server, "GET", "/session/info-s", USER_AK, "wrong", None)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Two live sessions of one name (which the write side never allows;
    // forced here into the read model) are "too many".
    {
        use diesel_async::SimpleAsyncConnection;
        let mut conn = db.connection().await;
        conn.batch_execute(&format!(
            "INSERT INTO sessions SELECT '{}'::uuid, creation_id, name, session_type, tag, \
             NULL, image, architecture, registry, cluster_mode, cluster_size, domain_name, \
             group_id, user_uuid, access_key, scaling_group, agent_ids, status, status_changed, \
             status_info, status_data, status_history, created_at, terminated_at, starts_at, \
             scheduled_at, startup_command, callback_url, result, resource_opts, service_ports, \
             mounts, requested_slots, occupying_slots, occupied_slots, position \
             FROM sessions WHERE id = '{id}'",
            Uuid::new_v4()
        ))
        .await
        .unwrap();
    }
    let (status, many) = get(&server, USER, "/session/info-s").await;
    assert_eq!(status, 404, "{many}");
    assert!(
        many["type"]
            .as_str()
            .unwrap()
            .ends_with("too-many-sessions-matched")
    );
    assert_eq!(
        many["data"]["matches"].as_array().unwrap().len(),
        2,
        "{many}"
    );
    // The id still picks one.
    let (status, _) = get(&server, USER, &format!("/session/{id}")).await;
    assert_eq!(status, 200);

    // Once destroyed, it is gone.
    let (status, _) = delete(&server, USER, &format!("/session/{id}")).await;
    assert_eq!(status, 200);
    until(
        Duration::from_secs(20),
        "the session to be gone",
        || async { get(&server, USER, &format!("/session/{id}")).await.0 == 404 },
    )
    .await;
}

#[tokio::test]
async fn session_events_follow_one_session_from_enqueue_to_termination() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-events", "4").await;

    let all = sse(&server, USER, "/events/session?sessionName=ev-one&scope=*").await;
    assert_eq!(all.status(), 200);
    let headers = all.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    let session_only = sse(&server, USER, "/events/session?name=ev-one&scope=session").await;
    let kernel_only = sse(
        &server,
        USER,
        "/events/session?sessionName=ev-one&scope=kernel",
    )
    .await;
    // Another session's events are not in these streams.
    let other = sse(
        &server,
        USER,
        "/events/session?sessionName=ev-other&scope=*",
    )
    .await;
    let within = Duration::from_secs(60);
    let readers = [all, session_only, kernel_only]
        .map(|r| tokio::spawn(async move { read_frames(r, within, |_| false).await }));
    // (Any frame at all ends this reader, which the end checks.)
    let other = tokio::spawn(async move {
        read_frames(other, Duration::from_secs(3600), |f| !f.is_empty()).await
    });

    let id = common::running_session(
        &server,
        USER,
        json!({"name": "ev-one", "image": "python", "maxWaitSeconds": 60}),
    )
    .await;
    let (status, _) = delete(&server, USER, "/session/ev-one").await;
    assert_eq!(status, 200);

    let mut results = Vec::new();
    for reader in readers {
        results.push(reader.await.unwrap());
    }
    let [(all, _), (session_only, _), (kernel_only, _)] = <[_; 3]>::try_from(results).unwrap();

    // Everything, in the log's order, then server_close.
    let seen = names(&all);
    assert_eq!(seen.first(), Some(&"session_enqueued"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"server_close"), "{seen:?}");
    assert!(position(&all, "session_scheduled") < position(&all, "kernel_started"));
    assert!(position(&all, "kernel_started") < position(&all, "session_started"));
    assert!(position(&all, "session_started") < position(&all, "kernel_terminated"));
    assert!(position(&all, "kernel_terminated") < position(&all, "session_terminated"));
    assert_eq!(
        position(&all, "session_terminated"),
        seen.len() - 2,
        "{seen:?}"
    );
    check_data(&all, "ev-one", id);

    // Scope `session`: the session frames only, in the same order.
    let expected: Vec<&str> = seen
        .iter()
        .copied()
        .filter(|n| n.starts_with("session_") || *n == "server_close")
        .collect();
    assert_eq!(names(&session_only), expected);
    assert!(expected.contains(&"session_started"), "{expected:?}");
    check_data(&session_only, "ev-one", id);
    // Scope `kernel`: the kernel frames only, and it still ends with the
    // session.
    let expected: Vec<&str> = seen
        .iter()
        .copied()
        .filter(|n| n.starts_with("kernel_") || *n == "server_close")
        .collect();
    assert_eq!(names(&kernel_only), expected);
    check_data(&kernel_only, "ev-one", id);

    // A stream of a session that is already gone ends at once.
    let r = sse(
        &server,
        USER,
        &format!("/events/session?sessionId={id}&scope=*"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (frames, _) = read_frames(r, Duration::from_secs(10), |_| false).await;
    assert_eq!(names(&frames), ["server_close"]);

    assert!(!other.is_finished(), "another session's stream ended");
    other.abort();
}

#[tokio::test]
async fn event_streams_show_only_what_the_caller_may_see_and_refuse_bad_parameters() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;

    // No agent: the sessions stay queued.
    let user_all = sse(&server, USER, "/events/session?scope=session").await;
    let admin_all = sse(&server, ADMIN, "/events/session?group=default").await;
    // The client's snake-case owner key is accepted for one's own key.
    let lenient = sse(
        &server,
        USER,
        &format!("/events/session?sessionName=usr-s&owner_access_key={USER_AK}"),
    )
    .await;
    assert_eq!(lenient.status(), 200);
    for (keypair, name) in [(ADMIN, "adm-s"), (USER, "usr-s")] {
        let (status, body) = post(
            &server,
            keypair,
            "/session",
            json!({"name": name, "image": "python", "enqueueOnly": true}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let has = |name: &'static str| {
        move |frames: &[Frame]| {
            frames
                .iter()
                .any(|f| f.event == "session_enqueued" && f.json()["sessionName"] == name)
        }
    };
    let within = Duration::from_secs(20);
    let (frames, ended) = read_frames(user_all, within, has("usr-s")).await;
    assert!(!ended);
    assert!(
        frames.iter().all(|f| f.json()["sessionName"] == "usr-s"),
        "{frames:?}"
    );
    let (frames, _) = read_frames(admin_all, within, |f| has("usr-s")(f) && has("adm-s")(f)).await;
    assert!(frames.iter().all(|f| f.event.starts_with("session_")));
    let (frames, _) = read_frames(lenient, within, has("usr-s")).await;
    assert_eq!(frames[0].json()["ownerAccessKey"], USER_AK);

    // Bad parameters.
    for (keypair, query, status, kind) in [
        (USER, "bogus=1", 400, "invalid-api-params"),
        (USER, "sessionId=not-a-uuid", 400, "invalid-api-params"),
        (USER, "scope=everything", 400, "invalid-api-params"),
        (
            USER,
            "ownerAccessKey=AKIAIOSFODNN7EXAMPLE",
            403,
            "generic-forbidden",
        ),
        (ADMIN, "group=no-such-project", 404, "object-not-found"),
    ] {
        let r = sse(&server, keypair, &format!("/events/session?{query}")).await;
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(got, status, "{query}: {body}");
        assert!(
            body["type"].as_str().unwrap().ends_with(kind),
            "{query}: {body}"
        );
    }
    let r = reqwest::get(format!("{}/events/session", server.base))
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 401), "{}", r.status());

    // Background tasks: none exist yet.
    for (query, status) in [
        ("", 400),
        ("?task_id=nope", 400),
        ("?task_id=6f1c1c1e-8d3b-4c55-9a43-0b7e1a1c0c01&x=1", 400),
        ("?task_id=6f1c1c1e-8d3b-4c55-9a43-0b7e1a1c0c01", 404),
        ("?taskId=6f1c1c1e-8d3b-4c55-9a43-0b7e1a1c0c01", 404),
    ] {
        let r = sse(&server, USER, &format!("/events/background-task{query}")).await;
        let got = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert_eq!(got, status, "{query}: {body}");
        if status == 404 {
            assert_eq!(body["title"], "No such background task.", "{body}");
        }
    }
}

#[tokio::test]
async fn event_streams_end_with_server_close_when_the_server_stops() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;
    let r = sse(&server, USER, "/events/session").await;
    assert_eq!(r.status(), 200);
    let reader = tokio::spawn(read_frames(r, Duration::from_secs(30), |_| false));
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let (frames, _) = reader.await.unwrap();
    assert_eq!(names(&frames), ["server_close"]);
}

/// The metric of open session streams, read from `/metrics`.
async fn open_streams(server: &common::Server) -> f64 {
    let text = reqwest::get(format!("{}/metrics", server.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("session_event_streams_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_official_cli_follows_a_session_until_it_is_gone() {
    let db = TestDb::new().await;
    let server = common::start_with_fixture(&db).await;
    let _agent = process_agent(&db, "i-cli-ev", "4").await;
    common::running_session(
        &server,
        USER,
        json!({"name": "cli-ev", "image": "python", "maxWaitSeconds": 60}),
    )
    .await;

    let child = std::process::Command::new(common::client())
        .args(["session", "events", "cli-ev"])
        .env("BACKEND_ENDPOINT", &server.base)
        .env("BACKEND_ENDPOINT_TYPE", "api")
        .env("BACKEND_ACCESS_KEY", USER_AK)
        .env("BACKEND_SECRET_KEY", USER_SK)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let output = std::thread::spawn(move || child.wait_with_output().unwrap());
    until(
        Duration::from_secs(30),
        "the CLI's stream to open",
        || async { open_streams(&server).await >= 1.0 },
    )
    .await;

    let (status, _) = delete(&server, USER, "/session/cli-ev").await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !output.is_finished() {
        if Instant::now() > deadline {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
            panic!("`backend.ai session events` did not return after the session ended");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = output.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Traceback"), "{text}");
    for event in [
        "kernel_terminating",
        "kernel_terminated",
        "session_terminated",
        "server_close",
    ] {
        assert!(text.contains(event), "no {event} in {text}");
    }
    let line = text
        .lines()
        .find(|l| l.starts_with("session_terminated "))
        .unwrap();
    let data: Value = serde_json::from_str(line.trim_start_matches("session_terminated ")).unwrap();
    assert_eq!(data["sessionName"], "cli-ev");
}
