//! Compute sessions through GraphQL against the real manager:
//! `compute_session_list` (what `backend.ai ps` sends), `compute_session`
//! (what `backend.ai session info` sends), `compute_container(_list)`, with
//! the reference's scoping per role, and what the agents' kernels hold.
//! Sessions enter the log as the write side records them: `SessionEvent`s
//! on their streams, `KernelsPlaced` on their agents'; the tests hold the
//! scheduler's lock, so the manager under test leaves them as written.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    ADMIN_AK, ADMIN_SK, Server, USER_AK, USER_SK, cli, emit, emit_session, gql, hold_scheduler,
    hold_sweeper, place_session, start_with_fixture as start,
};
use manager_events::EventStore;
use manager_events::agent::{AgentCapacity, AgentDescription, AgentEvent};
use manager_events::session::{
    KernelSpec, KernelStatus, Owner, PredicateFailure, SessionEvent, SessionImage, SessionResult,
    SessionSpec, SessionStatus, SessionType,
};
use manager_events::testing::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

const ADMIN: (&str, &str) = (ADMIN_AK, ADMIN_SK);
const USER: (&str, &str) = (USER_AK, USER_SK);
const GIB: &str = "1073741824";
const FORBIDDEN: &str = "Forbidden operation.";

/// `backend.ai ps`, step 2, as sent for an admin (spec §5.6).
const PS_ADMIN: &str = "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {
  compute_session_list(
      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {
    items { name access_key id group_name main_kernel_id image type status status_info status_changed result }
    total_count
  }
}";

/// `backend.ai ps`, step 2, as sent for a user (no `access_key` column).
const PS_USER: &str = "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {
  compute_session_list(
      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {
    items { name id group_name main_kernel_id image type status status_info status_changed result }
    total_count
  }
}";

/// `backend.ai ps --all --detail …`.
const PS_DETAIL: &str = "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {
  compute_session_list(
      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {
    items { name access_key id group_name main_kernel_id image type status status_info status_changed result tag created_at occupying_slots }
    total_count
  }
}";

/// `backend.ai session info <UUID>` (spec §5.6).
const INFO: &str = "query($id: UUID!) {  compute_session(id: $id) {    name id main_kernel_id image tag created_at terminated_at status status_info status_data occupying_slots idle_checks containers { id cluster_role cluster_idx cluster_hostname session_id image registry status status_info status_data status_changed agent container_id resource_opts occupied_slots preopen_ports live_stat last_stat id } dependencies { name id }  }}";

const DEFAULT_STATUSES: &str =
    "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR";
const ALL_STATUSES: &str = "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RESTARTING,RUNNING_DEGRADED,TERMINATING,TERMINATED,ERROR,CANCELLED";

const IMAGE: &str = "cr.backend.ai/stable/python:3.9-ubuntu20.04";

fn slots() -> BTreeMap<String, String> {
    [
        ("cpu".to_owned(), "1".to_owned()),
        ("mem".to_owned(), GIB.to_owned()),
    ]
    .into()
}

fn ps(status: &str, filter: Option<&str>, order: Option<&str>, limit: i32, offset: i32) -> Value {
    json!({"status": status, "access_key": null, "filter": filter, "order": order,
           "limit": limit, "offset": offset})
}

fn names(r: &Value) -> Vec<String> {
    r["data"]["compute_session_list"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {r}"))
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs `query` until `done` holds for its answer (the projections caught
/// up), for at most 10 s; answers the last answer.
async fn until(
    server: &Server,
    by: (&str, &str),
    query: &str,
    variables: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gql(server, by, query, variables.clone()).await;
        if done(&r) {
            return r;
        }
        assert!(Instant::now() < deadline, "never came: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn register(store: &EventStore, id: &str) {
    let event = AgentEvent::AgentRegistered {
        id: id.into(),
        instance: Uuid::new_v4(),
        description: AgentDescription {
            addr: format!("tcp://{id}.local:6011"),
            region: "local".into(),
            scaling_group: "default".into(),
            architecture: "x86_64".into(),
            version: "23.09.10".into(),
            protocol_version: 1,
            ..AgentDescription::default()
        },
        capacity: AgentCapacity {
            available_slots: [
                ("cpu".to_owned(), "8".to_owned()),
                ("mem".to_owned(), "17179869184".to_owned()),
            ]
            .into(),
            slot_types: [
                ("cpu".to_owned(), "count".to_owned()),
                ("mem".to_owned(), "bytes".to_owned()),
            ]
            .into(),
        },
    };
    emit(store, id, &[event]).await;
}

/// A session's id and its kernels' ids (main first).
#[derive(Debug, Clone)]
struct Made {
    id: Uuid,
    kernels: Vec<Uuid>,
}

/// Enqueues a session of `n` kernels for `owner`.
async fn enqueue(
    store: &EventStore,
    owner: &Owner,
    name: &str,
    n: u32,
    session_type: SessionType,
    dependencies: Vec<Uuid>,
) -> Made {
    let id = Uuid::new_v4();
    let kernels: Vec<KernelSpec> = (0..n)
        .map(|i| KernelSpec {
            id: Uuid::new_v4(),
            cluster_role: if i == 0 { "main" } else { "sub" }.into(),
            cluster_idx: i.max(1),
            local_rank: i,
            cluster_hostname: if i == 0 {
                "main1".into()
            } else {
                format!("sub{i}")
            },
        })
        .collect();
    let made = Made {
        id,
        kernels: kernels.iter().map(|k| k.id).collect(),
    };
    let event = SessionEvent::SessionEnqueued {
        id,
        creation_id: "c0ffee".into(),
        owner: owner.clone(),
        spec: SessionSpec {
            name: name.into(),
            session_type,
            image: SessionImage {
                canonical: IMAGE.into(),
                architecture: "x86_64".into(),
                registry: "cr.backend.ai".into(),
                tag: "3.9-ubuntu20.04".into(),
            },
            slots_per_kernel: slots(),
            resource_opts: [("shmem".to_owned(), "67108864".to_owned())].into(),
            scaling_group: "default".into(),
            dependencies,
            tag: Some(format!("tag-{name}")),
            preopen_ports: vec![8080],
            kernels,
            ..SessionSpec::default()
        },
    };
    emit_session(store, id, &[event]).await;
    made
}

/// Kernels moved to `status`, and their session to `session`; an ended
/// kernel's reason is `user-requested`, others give none.
fn moved(kernels: &[Uuid], status: KernelStatus, session: SessionStatus) -> SessionEvent {
    let reason = if status.is_dead() {
        "user-requested"
    } else {
        ""
    };
    SessionEvent::KernelsTransitioned {
        kernels: kernels.to_vec(),
        status,
        reason: reason.into(),
        exit_code: None,
        error: None,
        session_status: Some(session),
    }
}

fn started(kernel: Uuid, session: Option<SessionStatus>) -> SessionEvent {
    SessionEvent::KernelStarted {
        kernel_id: kernel,
        container_id: format!("c-{kernel}"),
        kernel_host: "127.0.0.1".into(),
        repl_in_port: 2000,
        repl_out_port: 2001,
        service_ports: vec![],
        occupied_slots: BTreeMap::new(),
        session_status: session,
    }
}

/// Places a session on `agent` and runs it.
async fn run(store: &EventStore, made: &Made, agent: &str) {
    let on: Vec<(Uuid, &str)> = made.kernels.iter().map(|k| (*k, agent)).collect();
    place_session(store, made.id, &on, &slots()).await;
    let mut events = vec![moved(
        &made.kernels,
        KernelStatus::Preparing,
        SessionStatus::Preparing,
    )];
    for (i, k) in made.kernels.iter().enumerate() {
        let last = i + 1 == made.kernels.len();
        events.push(started(*k, last.then_some(SessionStatus::Running)));
    }
    emit_session(store, made.id, &events).await;
}

async fn ok(server: &Server, mutation: &str) -> Value {
    let r = gql(server, ADMIN, mutation, json!({})).await;
    let field = r["data"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(field["ok"], true, "{mutation}: {r}");
    field
}

/// What the tests share.
struct World {
    /// The domain admin of `other` (access key, secret key).
    boss: (String, String),
    project: String,
    dead: Made,
    admin_one: Made,
    running: Made,
    prepared: Made,
    batch: Made,
    boss_one: Made,
}

/// Agents `i-a` and `i-b`; a domain `other` with its admin and a project;
/// seven sessions, in this order:
/// - `u-dead` (user): ran on i-a, terminated, SUCCESS;
/// - `a-one` (superadmin): pending, the scheduler deferred it;
/// - `u-running` (user): two kernels running on i-a;
/// - `u-prep` (user): PREPARED on i-b;
/// - `u-batch` (user, batch): pending, depends on `u-dead` and `a-one`;
/// - `b-one` (the admin of `other`): pending;
/// - `u-cancel` (user): cancelled while pending.
async fn setup(server: &Server, store: &EventStore) -> World {
    ok(
        server,
        "mutation { create_domain(name: \"other\", props: {}) { ok msg } }",
    )
    .await;
    let group = ok(
        server,
        "mutation { create_group(name: \"team\", props: {domain_name: \"other\"}) { ok msg group { id } } }",
    )
    .await;
    let team: Uuid = group["group"]["id"].as_str().unwrap().parse().unwrap();
    ok(server, "mutation { create_user(email: \"boss@other.org\", props: {username: \"boss\", password: \"Passw0rd!\", need_password_change: false, domain_name: \"other\", role: \"admin\"}) { ok msg } }").await;
    let kp = ok(
        server,
        "mutation { create_keypair(user_id: \"boss@other.org\", props: {is_active: true, is_admin: true, resource_policy: \"default\", rate_limit: 1000}) { ok msg keypair { access_key secret_key } } }",
    )
    .await;
    let boss = (
        kp["keypair"]["access_key"].as_str().unwrap().to_owned(),
        kp["keypair"]["secret_key"].as_str().unwrap().to_owned(),
    );
    let uuid_of =
        |r: &Value| -> Uuid { r["data"]["user"]["uuid"].as_str().unwrap().parse().unwrap() };
    let q = "query($email: String) { user(email: $email) { uuid } }";
    let user_id = uuid_of(&gql(server, ADMIN, q, json!({"email": "user@lablup.com"})).await);
    let admin_id = uuid_of(&gql(server, ADMIN, q, json!({"email": "admin@lablup.com"})).await);
    let boss_id = uuid_of(&gql(server, ADMIN, q, json!({"email": "boss@other.org"})).await);
    let r = gql(
        server,
        ADMIN,
        "{ groups(domain_name: \"default\") { id name } }",
        json!({}),
    )
    .await;
    let project = r["data"]["groups"][0]["id"].as_str().unwrap().to_owned();
    let project_id: Uuid = project.parse().unwrap();

    let user = Owner {
        access_key: USER_AK.into(),
        user_id,
        project_id,
        domain_name: "default".into(),
    };
    let admin = Owner {
        access_key: ADMIN_AK.into(),
        user_id: admin_id,
        ..user.clone()
    };
    let boss_owner = Owner {
        access_key: boss.0.clone(),
        user_id: boss_id,
        project_id: team,
        domain_name: "other".into(),
    };

    register(store, "i-a").await;
    register(store, "i-b").await;

    let dead = enqueue(store, &user, "u-dead", 1, SessionType::Interactive, vec![]).await;
    run(store, &dead, "i-a").await;
    emit_session(
        store,
        dead.id,
        &[
            moved(
                &dead.kernels,
                KernelStatus::Terminated,
                SessionStatus::Terminated,
            ),
            SessionEvent::SessionResultRecorded {
                result: SessionResult::Success,
                exit_code: Some(0),
            },
        ],
    )
    .await;

    let admin_one = enqueue(store, &admin, "a-one", 1, SessionType::Interactive, vec![]).await;
    emit_session(
        store,
        admin_one.id,
        &[SessionEvent::SchedulingDeferred {
            status_info: "predicate-checks-failed".into(),
            retries: 2,
            failed_predicates: vec![PredicateFailure {
                name: "keypair_resource_limit".into(),
                msg: "Your keypair resource quota is exceeded. (cpu)".into(),
            }],
            msg: None,
        }],
    )
    .await;

    let running = enqueue(
        store,
        &user,
        "u-running",
        2,
        SessionType::Interactive,
        vec![],
    )
    .await;
    run(store, &running, "i-a").await;

    let prepared = enqueue(store, &user, "u-prep", 1, SessionType::Interactive, vec![]).await;
    place_session(
        store,
        prepared.id,
        &[(prepared.kernels[0], "i-b")],
        &slots(),
    )
    .await;
    emit_session(
        store,
        prepared.id,
        &[moved(
            &prepared.kernels,
            KernelStatus::Prepared,
            SessionStatus::Prepared,
        )],
    )
    .await;

    let batch = enqueue(
        store,
        &user,
        "u-batch",
        1,
        SessionType::Batch,
        vec![dead.id, admin_one.id],
    )
    .await;
    let boss_one = enqueue(
        store,
        &boss_owner,
        "b-one",
        1,
        SessionType::Interactive,
        vec![],
    )
    .await;
    let cancel = enqueue(
        store,
        &user,
        "u-cancel",
        1,
        SessionType::Interactive,
        vec![],
    )
    .await;
    emit_session(
        store,
        cancel.id,
        &[SessionEvent::SessionCancelled {
            reason: "user-requested".into(),
        }],
    )
    .await;
    // The last event is projected, so every one before it is.
    until(
        server,
        ADMIN,
        PS_ADMIN,
        ps("CANCELLED", None, None, 10, 0),
        |r| r["data"]["compute_session_list"]["total_count"] == 1,
    )
    .await;
    World {
        boss,
        project,
        dead,
        admin_one,
        running,
        prepared,
        batch,
        boss_one,
    }
}

#[tokio::test]
async fn ps_lists_the_sessions_each_role_may_see() {
    let db = TestDb::new().await;
    let _sweeper = hold_sweeper(&db).await;
    let _scheduler = hold_scheduler(&db).await;
    let server = start(&db).await;
    let store = db.store().await;
    let w = setup(&server, &store).await;
    let boss = (w.boss.0.as_str(), w.boss.1.as_str());

    // A superadmin: every live session, across domains, newest first.
    let r = gql(
        &server,
        ADMIN,
        PS_ADMIN,
        ps(DEFAULT_STATUSES, None, None, 20, 0),
    )
    .await;
    assert_eq!(
        names(&r),
        ["b-one", "u-batch", "u-prep", "u-running", "a-one"],
        "{r}"
    );
    assert_eq!(r["data"]["compute_session_list"]["total_count"], 5);
    let item = &r["data"]["compute_session_list"]["items"][3];
    let running = w.running.id.to_string();
    assert_eq!(
        item,
        &json!({"name": "u-running", "access_key": USER_AK, "id": running,
                "group_name": "default", "main_kernel_id": w.running.kernels[0].to_string(),
                "image": IMAGE, "type": "INTERACTIVE", "status": "RUNNING",
                "status_info": null, "status_changed": item["status_changed"],
                "result": "UNDEFINED"})
    );
    assert!(item["status_changed"].as_str().unwrap().ends_with("+00:00"));
    let pending = &r["data"]["compute_session_list"]["items"][4];
    assert_eq!(
        (&pending["status"], &pending["status_info"]),
        (&json!("PENDING"), &json!("predicate-checks-failed"))
    );
    // PREPARED is a step of what 23.09 clients call PREPARING.
    assert_eq!(
        r["data"]["compute_session_list"]["items"][2]["status"],
        "PREPARED"
    );

    // A user: its own sessions only; another keypair's is forbidden.
    let r = gql(
        &server,
        USER,
        PS_USER,
        ps(DEFAULT_STATUSES, None, None, 20, 0),
    )
    .await;
    assert_eq!(names(&r), ["u-batch", "u-prep", "u-running"], "{r}");
    let r = gql(&server, USER, PS_USER, ps(ALL_STATUSES, None, None, 20, 0)).await;
    assert_eq!(
        names(&r),
        ["u-cancel", "u-batch", "u-prep", "u-running", "u-dead"],
        "{r}"
    );
    let mut other = ps(DEFAULT_STATUSES, None, None, 20, 0);
    other["access_key"] = json!(ADMIN_AK);
    let r = gql(&server, USER, PS_USER, other.clone()).await;
    assert_eq!(r["errors"][0]["message"], FORBIDDEN, "{r}");
    assert_eq!(r["data"], json!({"compute_session_list": null}));
    // A superadmin may ask for one keypair's.
    let r = gql(&server, ADMIN, PS_ADMIN, other).await;
    assert_eq!(names(&r), ["a-one"], "{r}");

    // A domain admin: its domain's sessions; another domain is forbidden.
    let r = gql(&server, boss, PS_ADMIN, ps(ALL_STATUSES, None, None, 20, 0)).await;
    assert_eq!(names(&r), ["b-one"], "{r}");
    let list = "query($d: String) { compute_session_list(limit: 20, offset: 0, domain_name: $d) { items { name } total_count } }";
    let r = gql(&server, boss, list, json!({"d": "default"})).await;
    assert_eq!(r["errors"][0]["message"], FORBIDDEN, "{r}");
    let r = gql(&server, ADMIN, list, json!({"d": "other"})).await;
    assert_eq!(names(&r), ["b-one"], "{r}");

    // Statuses, as the CLI's presets send them.
    let r = gql(
        &server,
        ADMIN,
        PS_ADMIN,
        ps("CANCELLED,TERMINATED", None, None, 20, 0),
    )
    .await;
    assert_eq!(names(&r), ["u-cancel", "u-dead"], "{r}");
    let dead = &r["data"]["compute_session_list"]["items"][1];
    assert_eq!(
        (&dead["status"], &dead["result"]),
        (&json!("TERMINATED"), &json!("SUCCESS"))
    );
    let r = gql(
        &server,
        ADMIN,
        PS_ADMIN,
        ps("PREPARING,RUNNING,RUNNING_DEGRADED", None, None, 20, 0),
    )
    .await;
    assert_eq!(names(&r), ["u-prep", "u-running"], "{r}");
    let r = gql(
        &server,
        ADMIN,
        PS_ADMIN,
        ps("RUNNING,ZOMBIE", None, None, 20, 0),
    )
    .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown session status \"ZOMBIE\""),
        "{r}"
    );

    // `ps --all --detail --filter … --order -created_at --limit 2`, paged.
    let mut seen = Vec::new();
    for offset in [0, 2, 4] {
        let r = gql(
            &server,
            ADMIN,
            PS_DETAIL,
            ps(
                ALL_STATUSES,
                Some("name ilike \"U-%\""),
                Some("-created_at"),
                2,
                offset,
            ),
        )
        .await;
        assert_eq!(r["data"]["compute_session_list"]["total_count"], 5, "{r}");
        seen.extend(names(&r));
        if offset == 0 {
            let first = &r["data"]["compute_session_list"]["items"][0];
            assert_eq!(first["tag"], "tag-u-cancel");
            assert_eq!(
                first["occupying_slots"],
                r#"{"cpu": "1", "mem": "1073741824"}"#
            );
            assert!(first["created_at"].as_str().unwrap().ends_with("+00:00"));
        }
    }
    assert_eq!(
        seen,
        ["u-cancel", "u-batch", "u-prep", "u-running", "u-dead"]
    );
    let r = gql(
        &server,
        ADMIN,
        PS_ADMIN,
        ps(ALL_STATUSES, None, Some("name"), 3, 6),
    )
    .await;
    assert_eq!(names(&r), ["u-running"], "the last page by name: {r}");

    // The mini-language over the sessions' own and joined fields.
    let filtered = |filter: &str| ps(ALL_STATUSES, Some(filter), Some("name"), 20, 0);
    for (filter, expected) in [
        (
            "group_name == \"default\" & type == \"batch\"",
            vec!["u-batch"],
        ),
        ("agent_id == \"i-a\"", vec!["u-dead", "u-running"]),
        (
            "user_email == \"admin@lablup.com\" | domain_name == \"other\"",
            vec!["a-one", "b-one"],
        ),
        (
            "full_name == \"User Lablup\" & status == \"cancelled\"",
            vec!["u-cancel"],
        ),
        ("cluster_size > 1", vec!["u-running"]),
        (
            "result == \"SUCCESS\" & terminated_at != null",
            vec!["u-dead"],
        ),
        (
            "scheduled_at != null & !(status in [\"TERMINATED\"])",
            vec!["u-prep", "u-running"],
        ),
    ] {
        let r = gql(&server, ADMIN, PS_ADMIN, filtered(filter)).await;
        assert_eq!(names(&r), expected, "{filter}: {r}");
    }
    let r = gql(&server, ADMIN, PS_ADMIN, filtered("secret == \"x\"")).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field name \"secret\""),
        "{r}"
    );

    // `group_id` narrows to one project.
    let by_group = "query($g: String) { compute_session_list(limit: 20, offset: 0, group_id: $g, status: \"PENDING\") { items { name group_id } total_count } }";
    let r = gql(&server, ADMIN, by_group, json!({"g": w.project})).await;
    assert_eq!(names(&r), ["u-batch", "a-one"], "{r}");
    assert_eq!(
        r["data"]["compute_session_list"]["items"][0]["group_id"],
        w.project
    );
}

#[tokio::test]
async fn session_info_shows_containers_dependencies_and_what_agents_hold() {
    let db = TestDb::new().await;
    let _sweeper = hold_sweeper(&db).await;
    let _scheduler = hold_scheduler(&db).await;
    let server = start(&db).await;
    let store = db.store().await;
    let w = setup(&server, &store).await;
    let boss = (w.boss.0.as_str(), w.boss.1.as_str());

    // `session info` of a running two-kernel session.
    let r = gql(&server, USER, INFO, json!({"id": w.running.id})).await;
    let s = &r["data"]["compute_session"];
    assert_eq!(s["name"], "u-running", "{r}");
    assert_eq!(s["id"], w.running.id.to_string());
    assert_eq!(s["main_kernel_id"], w.running.kernels[0].to_string());
    assert_eq!(
        (&s["image"], &s["tag"]),
        (&json!(IMAGE), &json!("tag-u-running"))
    );
    assert_eq!(
        (&s["status"], &s["terminated_at"]),
        (&json!("RUNNING"), &Value::Null)
    );
    assert_eq!(s["status_data"], "{}");
    assert_eq!(s["occupying_slots"], r#"{"cpu": "2", "mem": "2147483648"}"#);
    assert_eq!(s["idle_checks"], "{}");
    assert_eq!(s["dependencies"], json!([]));
    let containers = s["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    for (c, (role, host, kernel)) in containers.iter().zip([
        ("main", "main1", w.running.kernels[0]),
        ("sub", "sub1", w.running.kernels[1]),
    ]) {
        assert_eq!(
            c,
            &json!({"id": kernel.to_string(), "cluster_role": role, "cluster_idx": 1,
                    "cluster_hostname": host, "session_id": w.running.id.to_string(),
                    "image": IMAGE, "registry": "cr.backend.ai", "status": "RUNNING",
                    "status_info": null, "status_data": "{}",
                    "status_changed": c["status_changed"], "agent": "i-a",
                    "container_id": format!("c-{kernel}"),
                    "resource_opts": r#"{"shmem": "67108864"}"#,
                    "occupied_slots": r#"{"cpu": "1", "mem": "1073741824"}"#,
                    "preopen_ports": [8080], "live_stat": null, "last_stat": null})
        );
    }

    // A pending session shows why it waits.
    let r = gql(&server, ADMIN, INFO, json!({"id": w.admin_one.id})).await;
    let s = &r["data"]["compute_session"];
    let data: Value = serde_json::from_str(s["status_data"].as_str().unwrap()).unwrap();
    assert_eq!(data["scheduler"]["retries"], 2, "{r}");
    assert_eq!(
        data["scheduler"]["failed_predicates"][0]["name"],
        "keypair_resource_limit"
    );
    assert_eq!(s["containers"][0]["status"], "PENDING");
    assert_eq!(s["containers"][0]["agent"], Value::Null);

    // Dependencies: the user sees the one it may see, the superadmin both.
    let r = gql(&server, USER, INFO, json!({"id": w.batch.id})).await;
    assert_eq!(
        r["data"]["compute_session"]["dependencies"],
        json!([{"name": "u-dead", "id": w.dead.id.to_string()}]),
        "{r}"
    );
    let nested = "query($id: UUID!) { compute_session(id: $id) { type d: dependencies { name status containers { status } } dependencies { result } } }";
    let r = gql(&server, ADMIN, nested, json!({"id": w.batch.id})).await;
    let s = &r["data"]["compute_session"];
    assert_eq!(s["type"], "BATCH", "{r}");
    assert_eq!(
        s["d"],
        json!([{"name": "u-dead", "status": "TERMINATED", "containers": [{"status": "TERMINATED"}]},
               {"name": "a-one", "status": "PENDING", "containers": [{"status": "PENDING"}]}])
    );
    assert_eq!(
        s["dependencies"],
        json!([{"result": "SUCCESS"}, {"result": "UNDEFINED"}])
    );

    // Others' sessions are not there for a user, nor other domains' for a
    // domain admin; an unknown id is no session.
    for (by, id) in [
        (USER, w.admin_one.id),
        (boss, w.running.id),
        (USER, Uuid::new_v4()),
    ] {
        let r = gql(&server, by, INFO, json!({"id": id})).await;
        assert_eq!(r, json!({"data": {"compute_session": null}}), "{id}");
    }
    let r = gql(&server, boss, INFO, json!({"id": w.boss_one.id})).await;
    assert_eq!(r["data"]["compute_session"]["name"], "b-one");

    // Containers one by one, and a session's containers by role.
    let container = "query($id: UUID!) { compute_container(id: $id) { id role hostname agent agent_addr status } }";
    let sub = w.running.kernels[1];
    let r = gql(&server, USER, container, json!({"id": sub})).await;
    assert_eq!(
        r["data"]["compute_container"],
        json!({"id": sub.to_string(), "role": "sub", "hostname": "sub1", "agent": "i-a",
               "agent_addr": "tcp://i-a.local:6011", "status": "RUNNING"})
    );
    let r = gql(&server, boss, container, json!({"id": sub})).await;
    assert_eq!(r, json!({"data": {"compute_container": null}}));
    let list = "query($s: ID!, $role: String, $order: String) { compute_container_list(limit: 10, offset: 0, session_id: $s, role: $role, order: $order) { items { cluster_hostname local_rank } total_count } }";
    let r = gql(
        &server,
        USER,
        list,
        json!({"s": w.running.id, "role": null, "order": null}),
    )
    .await;
    assert_eq!(
        r["data"]["compute_container_list"],
        json!({"items": [{"cluster_hostname": "main1", "local_rank": 0},
                         {"cluster_hostname": "sub1", "local_rank": 1}], "total_count": 2})
    );
    let r = gql(
        &server,
        USER,
        list,
        json!({"s": w.running.id, "role": "sub", "order": null}),
    )
    .await;
    assert_eq!(r["data"]["compute_container_list"]["total_count"], 1, "{r}");
    let r = gql(
        &server,
        USER,
        list,
        json!({"s": w.running.id, "role": null, "order": "-local_rank"}),
    )
    .await;
    assert_eq!(
        r["data"]["compute_container_list"]["items"][0]["cluster_hostname"],
        "sub1"
    );
    let r = gql(
        &server,
        boss,
        list,
        json!({"s": w.running.id, "role": null, "order": null}),
    )
    .await;
    assert_eq!(
        r["data"]["compute_container_list"],
        json!({"items": [], "total_count": 0})
    );

    // What the agents' kernels hold: u-running's two kernels on i-a (u-dead
    // gave its slots back), u-prep's on i-b.
    let agent = "query($id: String!) { agent(agent_id: $id) { occupied_slots used_cpu_slots used_mem_slots } }";
    let r = gql(&server, ADMIN, agent, json!({"id": "i-a"})).await;
    assert_eq!(
        r["data"]["agent"],
        json!({"occupied_slots": r#"{"cpu": "2", "mem": "2147483648"}"#,
               "used_cpu_slots": 2.0, "used_mem_slots": 2048}),
        "{r}"
    );
    let r = gql(&server, ADMIN, agent, json!({"id": "i-b"})).await;
    assert_eq!(
        r["data"]["agent"]["occupied_slots"],
        r#"{"cpu": "1", "mem": "1073741824"}"#
    );
    let occupied =
        "query($id: UUID!) { compute_session(id: $id) { occupied_slots occupying_slots } }";
    let r = gql(&server, USER, occupied, json!({"id": w.running.id})).await;
    assert_eq!(
        r["data"]["compute_session"]["occupied_slots"],
        r#"{"cpu": "2", "mem": "2147483648"}"#
    );

    // u-running ends: i-a is free again, and `ps` no longer lists it.
    emit_session(
        &store,
        w.running.id,
        &[moved(
            &w.running.kernels,
            KernelStatus::Terminated,
            SessionStatus::Terminated,
        )],
    )
    .await;
    let r = until(&server, ADMIN, agent, json!({"id": "i-a"}), |r| {
        r["data"]["agent"]["occupied_slots"] == "{}"
    })
    .await;
    assert_eq!(
        (
            &r["data"]["agent"]["used_cpu_slots"],
            &r["data"]["agent"]["used_mem_slots"]
        ),
        (&json!(0.0), &json!(0))
    );
    let r = gql(&server, USER, occupied, json!({"id": w.running.id})).await;
    assert_eq!(
        r["data"]["compute_session"],
        json!({"occupied_slots": "{}", "occupying_slots": r#"{"cpu": "2", "mem": "2147483648"}"#})
    );
    let r = gql(
        &server,
        USER,
        PS_USER,
        ps(DEFAULT_STATUSES, None, None, 20, 0),
    )
    .await;
    assert_eq!(names(&r), ["u-batch", "u-prep"], "{r}");
    let r = gql(&server, USER, INFO, json!({"id": w.running.id})).await;
    let s = &r["data"]["compute_session"];
    assert_eq!(s["status"], "TERMINATED");
    assert!(s["terminated_at"].is_string());
    assert_eq!(s["containers"][1]["status"], "TERMINATED");
    let _ = w.prepared;
}

#[tokio::test]
async fn the_official_cli_lists_and_shows_sessions() {
    let db = TestDb::new().await;
    let _sweeper = hold_sweeper(&db).await;
    let _scheduler = hold_scheduler(&db).await;
    let server = start(&db).await;
    let store = db.store().await;
    let w = setup(&server, &store).await;

    // `backend.ai ps` as the user: its live sessions.
    let (ok, out) = cli(&server, USER_AK, USER_SK, &["ps"]);
    assert!(ok, "{out}");
    for name in ["u-running", "u-prep", "u-batch"] {
        assert!(out.contains(name), "{name} missing: {out}");
    }
    for name in ["u-dead", "u-cancel", "a-one", "b-one"] {
        assert!(!out.contains(name), "{name} listed: {out}");
    }
    // As the superadmin, with the dead ones.
    let (ok, out) = cli(&server, ADMIN_AK, ADMIN_SK, &["ps", "--dead"]);
    assert!(ok, "{out}");
    assert!(out.contains("u-dead") && out.contains("u-cancel"), "{out}");
    assert!(!out.contains("u-running"), "{out}");

    // `backend.ai session info`.
    let id = w.running.id.to_string();
    let (ok, out) = cli(&server, USER_AK, USER_SK, &["session", "info", &id]);
    assert!(ok, "{out}");
    for expected in ["u-running", "RUNNING", "main1", "sub1", "i-a", IMAGE] {
        assert!(out.contains(expected), "{expected} missing: {out}");
    }
    let (ok, out) = cli(
        &server,
        USER_AK,
        USER_SK,
        &["session", "info", &w.admin_one.id.to_string()],
    );
    assert!(
        !ok && out.contains("There is no such compute session."),
        "{out}"
    );
}
