//! The `sessions` projector against the real event store (halfstack
//! PostgreSQL): statuses, their history, and what sessions and agents hold.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;

use diesel::QueryableByName;
use diesel::sql_types::{Nullable, Text, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use manager_events::agent::{self, AgentEvent};
use manager_events::session::{
    self, ErrorInfo, KernelPlacement, KernelSpec, KernelStatus, Owner, PredicateFailure,
    ServicePort, SessionEvent, SessionImage, SessionResult, SessionSpec, SessionStatus,
};
use manager_events::testing::TestDb;
use manager_events::{AppendBatch, EventStore, ExpectedVersion, NewEvent};
use manager_projections::ProjectionRunner;
use manager_projections::sessions::SessionsProjector;
use serde_json::{Value, json};
use uuid::Uuid;

const GIB: &str = "1073741824";

fn slots(cpu: &str, mem: &str) -> BTreeMap<String, String> {
    [
        ("cpu".to_owned(), cpu.to_owned()),
        ("mem".to_owned(), mem.to_owned()),
    ]
    .into()
}

/// A session of `n` kernels (main1, sub1, …), each asking 1 CPU and 1 GiB.
fn enqueued(id: Uuid, name: &str, n: u32, dependencies: Vec<Uuid>) -> (SessionEvent, Vec<Uuid>) {
    let kernels: Vec<KernelSpec> = (0..n)
        .map(|i| KernelSpec {
            id: Uuid::new_v4(),
            cluster_role: if i == 0 { "main" } else { "sub" }.into(),
            cluster_idx: if i == 0 { 1 } else { i },
            local_rank: i,
            cluster_hostname: if i == 0 {
                "main1".into()
            } else {
                format!("sub{i}")
            },
        })
        .collect();
    let ids = kernels.iter().map(|k| k.id).collect();
    let event = SessionEvent::SessionEnqueued {
        id,
        creation_id: "c0ffee".into(),
        owner: Owner {
            access_key: "AKIAUSER".into(),
            user_id: Uuid::from_u128(7),
            project_id: Uuid::from_u128(8),
            domain_name: "default".into(),
        },
        spec: SessionSpec {
            name: name.into(),
            image: SessionImage {
                canonical: "cr.backend.ai/stable/python:3.9-ubuntu20.04".into(),
                architecture: "x86_64".into(),
                registry: "cr.backend.ai".into(),
                tag: "3.9-ubuntu20.04".into(),
            },
            slots_per_kernel: slots("1", GIB),
            resource_opts: [("shmem".to_owned(), "67108864".to_owned())].into(),
            scaling_group: "default".into(),
            startup_command: Some("python -c 'print(1)'".into()),
            dependencies,
            tag: Some("nightly".into()),
            preopen_ports: vec![8080],
            kernels,
            ..SessionSpec::default()
        },
    };
    (event, ids)
}

async fn emit(store: &EventStore, id: Uuid, events: &[SessionEvent]) {
    manager_events::testing::emit(store, session::stream_id(id), session::STREAM_TYPE, events)
        .await;
}

fn new_event<E: serde::Serialize>(e: &E) -> NewEvent {
    let (t, p) = manager_events::codec::encode(e).unwrap();
    NewEvent::new(t, p)
}

/// Places the kernels as the scheduler does: the session's
/// `SessionScheduled` and each agent's `KernelsPlaced` in one append, the
/// agents' streams first when `agents_first`.
async fn place(store: &EventStore, id: Uuid, on: &[(Uuid, &str)], agents_first: bool) {
    let scheduled = SessionEvent::SessionScheduled {
        scaling_group: "default".into(),
        kernels: on
            .iter()
            .map(|(k, a)| KernelPlacement {
                kernel_id: *k,
                agent_id: (*a).into(),
                agent_addr: format!("tcp://{a}:6011"),
            })
            .collect(),
    };
    let mut per_agent: BTreeMap<&str, BTreeMap<Uuid, BTreeMap<String, String>>> = BTreeMap::new();
    for (k, a) in on {
        per_agent.entry(a).or_default().insert(*k, slots("1", GIB));
    }
    let mut batch = AppendBatch::new();
    let session_stream = |b: AppendBatch| {
        b.stream(
            session::stream_id(id),
            session::STREAM_TYPE,
            ExpectedVersion::Any,
            vec![new_event(&scheduled)],
        )
    };
    if !agents_first {
        batch = session_stream(batch);
    }
    for (a, kernels) in per_agent {
        batch = batch.stream(
            agent::stream_id(a),
            agent::STREAM_TYPE,
            ExpectedVersion::Any,
            vec![new_event(&AgentEvent::KernelsPlaced {
                session_id: id,
                kernels,
            })],
        );
    }
    if agents_first {
        batch = session_stream(batch);
    }
    store.append(batch).await.unwrap();
}

fn transitioned(
    kernels: &[Uuid],
    status: KernelStatus,
    session: Option<SessionStatus>,
) -> SessionEvent {
    SessionEvent::KernelsTransitioned {
        kernels: kernels.to_vec(),
        status,
        reason: "user-requested".into(),
        exit_code: None,
        error: None,
        session_status: session,
    }
}

fn started(
    kernel: Uuid,
    occupied: BTreeMap<String, String>,
    session: Option<SessionStatus>,
) -> SessionEvent {
    SessionEvent::KernelStarted {
        kernel_id: kernel,
        container_id: format!("c-{kernel}"),
        kernel_host: "10.0.0.5".into(),
        repl_in_port: 2000,
        repl_out_port: 2001,
        service_ports: vec![ServicePort {
            name: "jupyter".into(),
            protocol: "http".into(),
            container_ports: vec![8080],
            host_ports: vec![30001],
        }],
        occupied_slots: occupied,
        session_status: session,
    }
}

#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Text)]
    j: String,
}

/// The session's row as JSON, with `history_matches` (its current status's
/// history entry is its `status_changed`).
async fn session_row(db: &TestDb, id: Uuid) -> Value {
    let rows: Vec<Json> = diesel::sql_query(
        "SELECT (to_jsonb(s) || jsonb_build_object('history_matches', \
           (s.status_history->>s.status)::timestamptz = s.status_changed))::text AS j \
         FROM sessions s WHERE s.id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .load(&mut db.connection().await)
    .await
    .unwrap();
    serde_json::from_str(&rows.into_iter().next().expect("the session has a row").j).unwrap()
}

/// The session's kernels as JSON, by local rank.
async fn kernel_rows(db: &TestDb, id: Uuid) -> Vec<Value> {
    let rows: Vec<Json> = diesel::sql_query(
        "SELECT to_jsonb(k)::text AS j FROM kernels k WHERE k.session_id = $1 ORDER BY k.local_rank",
    )
    .bind::<SqlUuid, _>(id)
    .load(&mut db.connection().await)
    .await
    .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(&r.j).unwrap())
        .collect()
}

#[derive(QueryableByName)]
struct Occupancy {
    #[diesel(sql_type = Nullable<Text>)]
    slots: Option<String>,
}

/// What the agent's kernels hold, as JSON (`None`: no row, nothing held).
async fn agent_holds(db: &TestDb, agent: &str) -> Option<Value> {
    let rows: Vec<Occupancy> = diesel::sql_query(
        "SELECT occupied_slots::text AS slots FROM agent_occupancy WHERE agent_id = $1",
    )
    .bind::<Text, _>(agent)
    .load(&mut db.connection().await)
    .await
    .unwrap();
    rows.into_iter()
        .next()
        .and_then(|r| r.slots)
        .map(|s| serde_json::from_str(&s).unwrap())
}

fn history_keys(row: &Value) -> Vec<String> {
    let mut keys: Vec<String> = row["status_history"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_session_runs_and_terminates_and_its_agent_gets_its_slots_back() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(SessionsProjector)], 2);
    let id = Uuid::new_v4();
    let (event, k) = enqueued(id, "train", 2, vec![]);
    emit(&store, id, &[event]).await;
    runner.catch_up().await.unwrap();

    // Enqueued: PENDING, asking for 2 CPUs and 2 GiB in all, holding nothing.
    let s = session_row(&db, id).await;
    assert_eq!(s["status"], "PENDING");
    assert_eq!(s["history_matches"], true);
    assert_eq!(history_keys(&s), ["PENDING"]);
    assert_eq!(s["session_type"], "interactive");
    assert_eq!(s["cluster_size"], 2);
    assert_eq!(s["main_kernel_id"], k[0].to_string());
    assert_eq!(
        s["occupying_slots"],
        json!({"cpu": "2", "mem": "2147483648"})
    );
    assert_eq!(s["requested_slots"], json!({"cpu": "1", "mem": GIB}));
    assert_eq!(s["occupied_slots"], json!({}));
    assert_eq!(
        s["resource_opts"],
        json!({"main1": {"shmem": "67108864"}, "sub1": {"shmem": "67108864"}})
    );
    assert_eq!(
        (&s["terminated_at"], &s["scheduled_at"]),
        (&Value::Null, &Value::Null)
    );
    let kernels = kernel_rows(&db, id).await;
    assert_eq!(kernels.len(), 2);
    assert_eq!(
        (
            &kernels[0]["cluster_hostname"],
            &kernels[1]["cluster_hostname"]
        ),
        (&json!("main1"), &json!("sub1"))
    );
    assert!(kernels.iter().all(|k| k["status"] == "PENDING"));
    assert_eq!(kernels[0]["preopen_ports"], json!([8080]));

    // The scheduler tried: why shows, the status stays.
    emit(
        &store,
        id,
        &[SessionEvent::SchedulingDeferred {
            status_info: "no-available-instances".into(),
            retries: 3,
            failed_predicates: vec![PredicateFailure {
                name: "concurrency".into(),
                msg: "You cannot run more than 1 concurrent sessions".into(),
            }],
            msg: None,
        }],
    )
    .await;
    runner.catch_up().await.unwrap();
    let s = session_row(&db, id).await;
    assert_eq!(
        (&s["status"], &s["status_info"]),
        (&json!("PENDING"), &json!("no-available-instances"))
    );
    let scheduler = &s["status_data"]["scheduler"];
    assert_eq!(scheduler["retries"], 3);
    assert_eq!(
        scheduler["failed_predicates"],
        json!([{"name": "concurrency", "msg": "You cannot run more than 1 concurrent sessions"}])
    );
    assert!(scheduler["last_try"].as_str().unwrap().ends_with("+00:00"));
    assert!(scheduler.get("msg").is_none());

    // Placed on i-a (the agent's events first in the append): both kernels'
    // requested slots are taken there.
    place(&store, id, &[(k[0], "i-a"), (k[1], "i-a")], true).await;
    runner.catch_up().await.unwrap();
    let s = session_row(&db, id).await;
    assert_eq!(
        (&s["status"], &s["status_info"], &s["status_data"]),
        (&json!("SCHEDULED"), &json!("scheduled"), &json!({}))
    );
    assert_eq!(s["agent_ids"], json!(["i-a"]));
    assert!(s["scheduled_at"].is_string());
    assert_eq!(history_keys(&s), ["PENDING", "SCHEDULED"]);
    assert_eq!(
        s["occupied_slots"],
        json!({"cpu": "2", "mem": "2147483648"})
    );
    assert_eq!(
        agent_holds(&db, "i-a").await,
        Some(json!({"cpu": "2", "mem": "2147483648"}))
    );
    let kernels = kernel_rows(&db, id).await;
    assert!(
        kernels
            .iter()
            .all(|k| k["agent"] == "i-a" && k["agent_addr"] == "tcp://i-a:6011")
    );

    // Started: the main kernel got less memory than asked; the sub kernel
    // reports nothing (as placed). The main kernel's ports are the session's.
    emit(
        &store,
        id,
        &[
            transitioned(&k, KernelStatus::Preparing, Some(SessionStatus::Preparing)),
            started(k[0], slots("1", "536870912"), None),
            started(k[1], BTreeMap::new(), Some(SessionStatus::Running)),
        ],
    )
    .await;
    runner.catch_up().await.unwrap();
    let s = session_row(&db, id).await;
    assert_eq!(s["status"], "RUNNING");
    // On its way to RUNNING it no longer says why it was last changed
    // ("scheduled").
    assert_eq!(
        (&s["status_info"], &s["status_data"]),
        (&Value::Null, &json!({}))
    );
    assert_eq!(
        history_keys(&s),
        ["PENDING", "PREPARING", "RUNNING", "SCHEDULED"]
    );
    assert_eq!(s["history_matches"], true);
    assert_eq!(
        s["occupied_slots"],
        json!({"cpu": "2", "mem": "1610612736"})
    );
    assert_eq!(
        s["occupying_slots"],
        json!({"cpu": "2", "mem": "2147483648"})
    );
    assert_eq!(
        agent_holds(&db, "i-a").await,
        Some(json!({"cpu": "2", "mem": "1610612736"}))
    );
    assert_eq!(
        s["service_ports"],
        json!([{"name": "jupyter", "protocol": "http", "container_ports": [8080], "host_ports": [30001]}])
    );
    let kernels = kernel_rows(&db, id).await;
    assert!(
        kernels
            .iter()
            .all(|k| k["status_info"].is_null() && k["status_data"] == json!({})),
        "{kernels:?}"
    );
    assert_eq!(kernels[0]["container_id"], format!("c-{}", k[0]));
    assert_eq!(
        kernels[0]["occupied_slots"],
        json!({"cpu": "1", "mem": "536870912"})
    );
    assert_eq!(
        kernels[1]["occupied_slots"],
        json!({"cpu": "1", "mem": GIB})
    );
    assert_eq!(kernels[1]["status"], "RUNNING");

    // A restart re-enters RUNNING: its history entry moves, no new key.
    let first_running = s["status_history"]["RUNNING"].clone();
    emit(
        &store,
        id,
        &[
            transitioned(
                &k,
                KernelStatus::Restarting,
                Some(SessionStatus::Restarting),
            ),
            transitioned(&k, KernelStatus::Running, Some(SessionStatus::Running)),
        ],
    )
    .await;
    runner.catch_up().await.unwrap();
    let s = session_row(&db, id).await;
    assert_eq!(s["status"], "RUNNING");
    assert_ne!(s["status_history"]["RUNNING"], first_running);
    assert_eq!(history_keys(&s).len(), 5);
    assert_eq!(
        agent_holds(&db, "i-a").await,
        Some(json!({"cpu": "2", "mem": "1610612736"}))
    );

    // Terminated: every slot is free again.
    emit(
        &store,
        id,
        &[
            transitioned(
                &k,
                KernelStatus::Terminating,
                Some(SessionStatus::Terminating),
            ),
            SessionEvent::KernelsTransitioned {
                kernels: k.clone(),
                status: KernelStatus::Terminated,
                reason: "user-requested".into(),
                exit_code: Some(0),
                error: None,
                session_status: Some(SessionStatus::Terminated),
            },
            SessionEvent::SessionResultRecorded {
                result: SessionResult::Success,
                exit_code: Some(0),
            },
        ],
    )
    .await;
    runner.catch_up().await.unwrap();
    let s = session_row(&db, id).await;
    assert_eq!(
        (&s["status"], &s["status_info"], &s["result"]),
        (
            &json!("TERMINATED"),
            &json!("user-requested"),
            &json!("SUCCESS")
        )
    );
    assert_eq!(s["status_data"]["session"], json!({"status": "terminated"}));
    assert!(s["terminated_at"].is_string());
    assert_eq!(s["terminated_at"], s["status_changed"]);
    assert_eq!(s["occupied_slots"], json!({}));
    assert_eq!(agent_holds(&db, "i-a").await, None);
    let kernels = kernel_rows(&db, id).await;
    assert!(
        kernels
            .iter()
            .all(|k| k["status"] == "TERMINATED" && k["terminated_at"].is_string())
    );
    assert_eq!(kernels[0]["status_data"]["kernel"], json!({"exit_code": 0}));
    assert_eq!(kernels[0]["exit_code"], 0);
}

#[tokio::test]
async fn cancelled_failed_and_neighbouring_sessions_hold_what_they_should() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(SessionsProjector)], 100);

    // A session cancelled while pending: it and its kernels are over.
    let waiting = Uuid::new_v4();
    let (event, _) = enqueued(waiting, "waiting", 3, vec![]);
    emit(&store, waiting, &[event]).await;
    emit(
        &store,
        waiting,
        &[SessionEvent::SessionCancelled {
            reason: "pending-timeout".into(),
        }],
    )
    .await;

    // Two sessions: one on i-a alone, one spread over i-a and i-b, placed
    // with the session's event first.
    let single = Uuid::new_v4();
    let (event, s1) = enqueued(single, "single", 1, vec![]);
    emit(&store, single, &[event]).await;
    place(&store, single, &[(s1[0], "i-a")], false).await;
    let multi = Uuid::new_v4();
    let (event, m) = enqueued(multi, "multi", 2, vec![single, waiting]);
    emit(&store, multi, &[event]).await;
    place(&store, multi, &[(m[0], "i-a"), (m[1], "i-b")], false).await;
    runner.catch_up().await.unwrap();

    let s = session_row(&db, waiting).await;
    assert_eq!(
        (&s["status"], &s["status_info"]),
        (&json!("CANCELLED"), &json!("pending-timeout"))
    );
    assert!(s["terminated_at"].is_string());
    assert_eq!(history_keys(&s), ["CANCELLED", "PENDING"]);
    let kernels = kernel_rows(&db, waiting).await;
    assert_eq!(kernels.len(), 3);
    assert!(
        kernels
            .iter()
            .all(|k| k["status"] == "CANCELLED" && k["terminated_at"].is_string())
    );

    assert_eq!(
        agent_holds(&db, "i-a").await,
        Some(json!({"cpu": "2", "mem": "2147483648"}))
    );
    assert_eq!(
        agent_holds(&db, "i-b").await,
        Some(json!({"cpu": "1", "mem": GIB}))
    );
    let s = session_row(&db, multi).await;
    assert_eq!(s["agent_ids"], json!(["i-a", "i-b"]));

    // The sub kernel on i-b fails while the main one runs: i-b is free, i-a
    // still holds both sessions' main kernels; the error is kept.
    let error = ErrorInfo {
        src: "agent".into(),
        name: "ContainerCreationError".into(),
        repr: "no space left on device".into(),
        agent_id: Some("i-b".into()),
    };
    emit(
        &store,
        multi,
        &[
            started(m[0], BTreeMap::new(), None),
            SessionEvent::KernelsTransitioned {
                kernels: vec![m[1]],
                status: KernelStatus::Error,
                reason: "failed-to-start".into(),
                exit_code: None,
                error: Some(error),
                session_status: Some(SessionStatus::RunningDegraded),
            },
        ],
    )
    .await;
    runner.catch_up().await.unwrap();
    assert_eq!(agent_holds(&db, "i-b").await, None);
    assert_eq!(
        agent_holds(&db, "i-a").await,
        Some(json!({"cpu": "2", "mem": "2147483648"}))
    );
    let s = session_row(&db, multi).await;
    assert_eq!(
        (&s["status"], &s["status_info"]),
        (&json!("RUNNING_DEGRADED"), &json!("failed-to-start"))
    );
    let expected_error = json!({"src": "agent", "name": "ContainerCreationError",
        "repr": "no space left on device", "agent_id": "i-b"});
    assert_eq!(s["status_data"]["error"], expected_error);
    assert_eq!(s["occupied_slots"], json!({"cpu": "1", "mem": GIB}));
    let kernels = kernel_rows(&db, multi).await;
    assert_eq!(
        (&kernels[1]["status"], &kernels[1]["status_data"]["error"]),
        (&json!("ERROR"), &expected_error)
    );
    assert_eq!(
        kernels[1]["terminated_at"],
        Value::Null,
        "failed is not gone"
    );

    // The other session ends: i-a keeps only the degraded session's main.
    emit(
        &store,
        single,
        &[transitioned(
            &s1,
            KernelStatus::Terminated,
            Some(SessionStatus::Terminated),
        )],
    )
    .await;
    // Renamed; its dependencies were recorded at enqueue.
    emit(
        &store,
        multi,
        &[SessionEvent::SessionRenamed {
            name: "multi-2".into(),
        }],
    )
    .await;
    runner.catch_up().await.unwrap();
    assert_eq!(
        agent_holds(&db, "i-a").await,
        Some(json!({"cpu": "1", "mem": GIB}))
    );
    assert_eq!(session_row(&db, multi).await["name"], "multi-2");
    let deps: Vec<Json> = diesel::sql_query(
        "SELECT depends_on::text AS j FROM session_dependencies WHERE session_id = $1 ORDER BY 1",
    )
    .bind::<SqlUuid, _>(multi)
    .load(&mut db.connection().await)
    .await
    .unwrap();
    let mut expected = vec![single.to_string(), waiting.to_string()];
    expected.sort();
    assert_eq!(deps.into_iter().map(|d| d.j).collect::<Vec<_>>(), expected);

    // Damage the read models: a rebuild from the log gives the same rows.
    let before = (
        session_row(&db, multi).await,
        kernel_rows(&db, multi).await,
        agent_holds(&db, "i-a").await,
    );
    diesel::sql_query("UPDATE agent_occupancy SET occupied_slots = '{\"cpu\": \"99\"}'")
        .execute(&mut db.connection().await)
        .await
        .unwrap();
    diesel::sql_query("UPDATE sessions SET status = 'corrupted'")
        .execute(&mut db.connection().await)
        .await
        .unwrap();
    runner.rebuild(&SessionsProjector, |_| {}).await.unwrap();
    let after = (
        session_row(&db, multi).await,
        kernel_rows(&db, multi).await,
        agent_holds(&db, "i-a").await,
    );
    assert_eq!(after, before);
}
