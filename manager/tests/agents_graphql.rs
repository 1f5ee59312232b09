//! Agents through GraphQL against the real manager: `agent`, `agent_list`
//! (superadmins), `agent_summary` and `agent_summary_list` (scoped to the
//! scaling groups the caller may use). Agents enter the log as the write
//! side records them: `AgentEvent`s appended to their streams.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{
    ADMIN_AK, ADMIN_SK, Server, USER_AK, USER_SK, emit, gql, hold_sweeper,
    start_with_fixture as start,
};
use manager_events::EventStore;
use manager_events::agent::{AgentCapacity, AgentDescription, AgentEvent};
use manager_events::testing::TestDb;
use serde_json::{Value, json};
use uuid::Uuid;

const ADMIN: (&str, &str) = (ADMIN_AK, ADMIN_SK);
const USER: (&str, &str) = (USER_AK, USER_SK);

const AGENT_LIST: &str = "query($limit:Int!, $offset:Int!, $status: String, $scaling_group: String, $filter: String, $order: String) {
  agent_list(limit:$limit, offset:$offset, status:$status, scaling_group:$scaling_group, filter:$filter, order:$order) {
    items { id status scaling_group } total_count } }";

const SUMMARY_LIST: &str = "query($limit:Int!, $offset:Int!, $status: String, $scaling_group: String, $filter: String, $order: String) {
  agent_summary_list(limit:$limit, offset:$offset, status:$status, scaling_group:$scaling_group, filter:$filter, order:$order) {
    items { id status scaling_group schedulable available_slots occupied_slots architecture } total_count } }";

const AGENT: &str = "query($agent_id: String!) { agent(agent_id: $agent_id) {
  id status status_changed region scaling_group schedulable available_slots occupied_slots addr
  architecture first_contact lost_at live_stat version compute_plugins hardware_metadata
  auto_terminate_abusing_kernel local_config container_count mem_slots cpu_slots gpu_slots
  tpu_slots used_mem_slots used_cpu_slots used_gpu_slots used_tpu_slots cpu_cur_pct mem_cur_bytes } }";

async fn register(store: &EventStore, id: &str, group: &str) {
    let event = AgentEvent::AgentRegistered {
        id: id.into(),
        instance: Uuid::new_v4(),
        description: AgentDescription {
            addr: format!("tcp://{id}.local:6011"),
            region: "local".into(),
            scaling_group: group.into(),
            architecture: "x86_64".into(),
            version: "23.09.10".into(),
            protocol_version: 1,
            compute_plugins: [(
                "cpu".to_owned(),
                [("version".to_owned(), "1".to_owned())].into(),
            )]
            .into(),
            public_host: None,
            auto_terminate_abusing_kernel: false,
        },
        capacity: AgentCapacity {
            available_slots: [
                ("cpu".to_owned(), "8".to_owned()),
                ("mem".to_owned(), "17179869184".to_owned()),
                ("cuda.device".to_owned(), "2".to_owned()),
            ]
            .into(),
            slot_types: [
                ("cpu".to_owned(), "count".to_owned()),
                ("mem".to_owned(), "bytes".to_owned()),
                ("cuda.device".to_owned(), "count".to_owned()),
            ]
            .into(),
        },
    };
    emit(store, id, &[event]).await;
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

fn ids(r: &Value, field: &str) -> Vec<String> {
    r["data"][field]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {r}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

fn vars(limit: i32, offset: i32, status: Option<&str>, group: Option<&str>) -> Value {
    json!({"limit": limit, "offset": offset, "status": status, "scaling_group": group,
           "filter": null, "order": "id"})
}

async fn ok(server: &Server, mutation: &str) {
    let r = gql(server, ADMIN, mutation, json!({})).await;
    let field = r["data"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(field["ok"], true, "{mutation}: {r}");
}

/// Scaling groups `gpu` (the user's keypair), `proj` (the `default`
/// project), `other-sg` (domain `other`), `inactive` (domain `default`,
/// inactive), `hidden` (no one); a domain admin of `other`; 17 agents.
/// Answers the domain admin's keypair.
async fn setup(server: &Server, store: &EventStore) -> (String, String) {
    ok(
        server,
        "mutation { create_domain(name: \"other\", props: {}) { ok msg } }",
    )
    .await;
    for (name, active) in [
        ("gpu", true),
        ("proj", true),
        ("other-sg", true),
        ("inactive", false),
        ("hidden", true),
    ] {
        ok(server, &format!(
            "mutation {{ create_scaling_group(name: \"{name}\", props: {{driver: \"static\", scheduler: \"fifo\", is_active: {active}}}) {{ ok msg }} }}"
        ))
        .await;
    }
    ok(server, &format!("mutation {{ associate_scaling_group_with_keypair(scaling_group: \"gpu\", access_key: \"{USER_AK}\") {{ ok msg }} }}")).await;
    let r = gql(
        server,
        ADMIN,
        "{ groups(domain_name: \"default\") { id name } }",
        json!({}),
    )
    .await;
    let project = r["data"]["groups"][0]["id"].as_str().unwrap().to_owned();
    ok(server, &format!("mutation {{ associate_scaling_group_with_user_group(scaling_group: \"proj\", user_group: \"{project}\") {{ ok msg }} }}")).await;
    for (sg, domain) in [("other-sg", "other"), ("inactive", "default")] {
        ok(server, &format!("mutation {{ associate_scaling_group_with_domain(scaling_group: \"{sg}\", domain: \"{domain}\") {{ ok msg }} }}")).await;
    }
    ok(server, "mutation { create_user(email: \"boss@other.org\", props: {username: \"boss\", password: \"Passw0rd!\", need_password_change: false, domain_name: \"other\", role: \"admin\"}) { ok msg } }").await;
    let r = gql(
        server,
        ADMIN,
        "mutation { create_keypair(user_id: \"boss@other.org\", props: {is_active: true, is_admin: true, resource_policy: \"default\", rate_limit: 1000}) { ok msg keypair { access_key secret_key } } }",
        json!({}),
    )
    .await;
    let kp = &r["data"]["create_keypair"]["keypair"];
    let boss = (
        kp["access_key"].as_str().unwrap().to_owned(),
        kp["secret_key"].as_str().unwrap().to_owned(),
    );

    for i in 0..12 {
        register(store, &format!("i-d{i:02}"), "default").await;
    }
    for (id, sg) in [
        ("i-gpu", "gpu"),
        ("i-proj", "proj"),
        ("i-other", "other-sg"),
        ("i-inact", "inactive"),
        ("i-hidden", "hidden"),
    ] {
        register(store, id, sg).await;
    }
    emit(
        store,
        "i-d03",
        &[AgentEvent::AgentLost {
            reason: "heartbeat-expired".into(),
        }],
    )
    .await;
    emit(
        store,
        "i-d05",
        &[AgentEvent::AgentStopped {
            reason: "shutdown".into(),
        }],
    )
    .await;
    // The last event is projected, so every one before it is.
    until(
        server,
        ADMIN,
        AGENT_LIST,
        vars(1, 0, Some("TERMINATED"), None),
        |r| r["data"]["agent_list"]["total_count"] == 1,
    )
    .await;
    boss
}

#[tokio::test]
async fn superadmins_list_page_filter_and_order_agents() {
    let db = TestDb::new().await;
    let _sweeper = hold_sweeper(&db).await;
    let server = start(&db).await;
    let store = db.store().await;
    setup(&server, &store).await;

    // Every agent, whatever its status, in pages of 5 ordered by id.
    let first = gql(&server, ADMIN, AGENT_LIST, vars(5, 0, None, None)).await;
    assert_eq!(first["data"]["agent_list"]["total_count"], 17, "{first}");
    let mut all = Vec::new();
    for offset in (0..17).step_by(5) {
        let r = gql(&server, ADMIN, AGENT_LIST, vars(5, offset, None, None)).await;
        all.extend(ids(&r, "agent_list"));
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!((all.len(), &all), (17, &sorted));
    let r = gql(&server, ADMIN, AGENT_LIST, vars(5, 100, None, None)).await;
    assert_eq!(
        r["data"]["agent_list"],
        json!({"items": [], "total_count": 17})
    );

    // `status` and `scaling_group`, as the CLI sends them.
    let r = gql(&server, ADMIN, AGENT_LIST, vars(50, 0, Some("ALIVE"), None)).await;
    assert_eq!(r["data"]["agent_list"]["total_count"], 15, "{r}");
    let r = gql(
        &server,
        ADMIN,
        AGENT_LIST,
        vars(50, 0, Some("ALIVE"), Some("default")),
    )
    .await;
    assert_eq!(r["data"]["agent_list"]["total_count"], 10, "{r}");
    let r = gql(
        &server,
        ADMIN,
        AGENT_LIST,
        vars(50, 0, Some("LOST,TERMINATED"), None),
    )
    .await;
    assert_eq!(ids(&r, "agent_list"), ["i-d03", "i-d05"]);
    assert_eq!(r["data"]["agent_list"]["items"][1]["status"], "TERMINATED");
    let r = gql(&server, ADMIN, AGENT_LIST, vars(50, 0, Some("DEAD"), None)).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown agent status"),
        "{r}"
    );

    // The mini-languages.
    let list = |filter: &str, order: &str| {
        json!({"limit": 50, "offset": 0, "status": null, "scaling_group": null,
               "filter": filter, "order": order})
    };
    let r = gql(
        &server,
        ADMIN,
        AGENT_LIST,
        list("scaling_group == \"gpu\" | addr like \"tcp://i-o%\"", "-id"),
    )
    .await;
    assert_eq!(ids(&r, "agent_list"), ["i-other", "i-gpu"]);
    let r = gql(
        &server,
        ADMIN,
        AGENT_LIST,
        list("status == \"lost\" | lost_at != null", "id"),
    )
    .await;
    assert_eq!(ids(&r, "agent_list"), ["i-d03", "i-d05"]);
    let r = gql(
        &server,
        ADMIN,
        AGENT_LIST,
        list(
            "region == \"local\" & schedulable == true",
            "-first_contact",
        ),
    )
    .await;
    let by_contact = ids(&r, "agent_list");
    assert_eq!(by_contact.len(), 17);
    assert_eq!(
        (by_contact[0].as_str(), by_contact[16].as_str()),
        ("i-hidden", "i-d00"),
        "newest first"
    );
    let r = gql(&server, ADMIN, AGENT_LIST, list("secret == \"x\"", "id")).await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field name \"secret\""),
        "{r}"
    );
    assert_eq!(r["data"]["agent_list"], Value::Null, "{r}");

    // One agent, every field.
    let r = gql(&server, ADMIN, AGENT, json!({"agent_id": "i-gpu"})).await;
    let a = &r["data"]["agent"];
    assert_eq!(a["id"], "i-gpu", "{r}");
    assert_eq!(a["status"], "ALIVE");
    assert_eq!(a["scaling_group"], "gpu");
    assert_eq!(a["schedulable"], true);
    assert_eq!(
        a["available_slots"],
        r#"{"cpu": "8", "cuda.device": "2", "mem": "17179869184"}"#
    );
    assert_eq!(a["occupied_slots"], "{}");
    assert_eq!(a["addr"], "tcp://i-gpu.local:6011");
    assert_eq!(a["compute_plugins"], r#"{"cpu": {"version": "1"}}"#);
    assert_eq!(
        (&a["region"], &a["version"]),
        (&json!("local"), &json!("23.09.10"))
    );
    assert!(a["first_contact"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(a["status_changed"], a["first_contact"]);
    assert_eq!(a["lost_at"], Value::Null);
    assert_eq!(
        (&a["live_stat"], &a["hardware_metadata"], &a["local_config"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert_eq!(
        (
            &a["cpu_cur_pct"],
            &a["mem_cur_bytes"],
            &a["container_count"]
        ),
        (&json!(0.0), &json!(0.0), &json!(0))
    );
    assert_eq!(
        (
            &a["mem_slots"],
            &a["cpu_slots"],
            &a["gpu_slots"],
            &a["tpu_slots"]
        ),
        (&json!(16384), &json!(8.0), &json!(2.0), &json!(0.0))
    );
    assert_eq!(
        (&a["used_mem_slots"], &a["used_cpu_slots"]),
        (&json!(0), &json!(0.0))
    );
    let r = gql(&server, ADMIN, AGENT, json!({"agent_id": "i-nowhere"})).await;
    assert_eq!(r, json!({"data": {"agent": null}}));
}

#[tokio::test]
async fn summaries_show_the_agents_of_the_groups_the_caller_may_use() {
    let db = TestDb::new().await;
    let _sweeper = hold_sweeper(&db).await;
    let server = start(&db).await;
    let store = db.store().await;
    let (boss_ak, boss_sk) = setup(&server, &store).await;
    let boss = (boss_ak.as_str(), boss_sk.as_str());
    let forbidden = "Forbidden operation. (superadmin privilege required)";

    // Only superadmins see agents themselves.
    for by in [USER, boss] {
        let r = gql(&server, by, AGENT_LIST, vars(5, 0, None, None)).await;
        assert_eq!(r["errors"][0]["message"], forbidden, "{r}");
        assert_eq!(r["data"], json!({"agent_list": null}));
        let r = gql(&server, by, AGENT, json!({"agent_id": "i-d00"})).await;
        assert_eq!(r["errors"][0]["message"], forbidden, "{r}");
        assert_eq!(r["data"], json!({"agent": null}));
    }

    // A user: its domain's groups (not the inactive one), its keypair's,
    // its project's.
    let r = gql(&server, USER, SUMMARY_LIST, vars(50, 0, None, None)).await;
    let mut expected: Vec<String> = (0..12).map(|i| format!("i-d{i:02}")).collect();
    expected.extend(["i-gpu".into(), "i-proj".into()]);
    assert_eq!(ids(&r, "agent_summary_list"), expected, "{r}");
    assert_eq!(r["data"]["agent_summary_list"]["total_count"], 14);
    let item = &r["data"]["agent_summary_list"]["items"][12];
    assert_eq!(
        item,
        &json!({"id": "i-gpu", "status": "ALIVE", "scaling_group": "gpu", "schedulable": true,
                "available_slots": r#"{"cpu": "8", "cuda.device": "2", "mem": "17179869184"}"#,
                "occupied_slots": "{}", "architecture": "x86_64"})
    );
    // Paged, and narrowed by status and group; a group it may not use
    // shows nothing.
    let r = gql(&server, USER, SUMMARY_LIST, vars(5, 10, None, None)).await;
    assert_eq!(
        ids(&r, "agent_summary_list"),
        ["i-d10", "i-d11", "i-gpu", "i-proj"]
    );
    let r = gql(
        &server,
        USER,
        SUMMARY_LIST,
        vars(50, 0, Some("ALIVE"), Some("default")),
    )
    .await;
    assert_eq!(r["data"]["agent_summary_list"]["total_count"], 10, "{r}");
    for hidden in ["hidden", "other-sg", "inactive"] {
        let r = gql(&server, USER, SUMMARY_LIST, vars(50, 0, None, Some(hidden))).await;
        assert_eq!(
            r["data"]["agent_summary_list"],
            json!({"items": [], "total_count": 0}),
            "{hidden}"
        );
    }
    // Summaries filter and order only by what they show.
    let r = gql(
        &server,
        USER,
        SUMMARY_LIST,
        json!({"limit": 50, "offset": 0, "filter": "scaling_group in [\"gpu\", \"proj\", \"hidden\"]", "order": "-id"}),
    )
    .await;
    assert_eq!(ids(&r, "agent_summary_list"), ["i-proj", "i-gpu"]);
    let r = gql(
        &server,
        USER,
        SUMMARY_LIST,
        json!({"limit": 50, "offset": 0, "filter": "addr like \"tcp://%\""}),
    )
    .await;
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field name \"addr\""),
        "{r}"
    );
    let summary = "query($agent_id: String!) { agent_summary(agent_id: $agent_id) { id status scaling_group } }";
    let r = gql(&server, USER, summary, json!({"agent_id": "i-proj"})).await;
    assert_eq!(
        r["data"]["agent_summary"],
        json!({"id": "i-proj", "status": "ALIVE", "scaling_group": "proj"})
    );
    for id in ["i-other", "i-hidden", "i-inact", "i-nowhere"] {
        let r = gql(&server, USER, summary, json!({"agent_id": id})).await;
        assert_eq!(r, json!({"data": {"agent_summary": null}}), "{id}");
    }

    // A domain admin: its domain's groups only.
    let r = gql(&server, boss, SUMMARY_LIST, vars(50, 0, None, None)).await;
    assert_eq!(ids(&r, "agent_summary_list"), ["i-other"], "{r}");
    let r = gql(&server, boss, summary, json!({"agent_id": "i-d00"})).await;
    assert_eq!(r["data"]["agent_summary"], Value::Null);

    // A superadmin: every agent.
    let r = gql(&server, ADMIN, SUMMARY_LIST, vars(50, 0, None, None)).await;
    assert_eq!(r["data"]["agent_summary_list"]["total_count"], 17, "{r}");
}

#[tokio::test]
async fn an_agent_that_changes_shows_its_new_state() {
    let db = TestDb::new().await;
    let _sweeper = hold_sweeper(&db).await;
    let server = start(&db).await;
    let store = db.store().await;
    setup(&server, &store).await;
    let one = json!({"agent_id": "i-gpu"});
    // Asked twice: the second answer may be the kept one.
    for _ in 0..2 {
        let r = gql(&server, ADMIN, AGENT, one.clone()).await;
        assert_eq!(r["data"]["agent"]["status"], "ALIVE");
    }
    let before = gql(&server, ADMIN, AGENT, one.clone()).await;
    let before = &before["data"]["agent"];

    emit(
        &store,
        "i-gpu",
        &[AgentEvent::AgentLost {
            reason: "heartbeat-expired".into(),
        }],
    )
    .await;
    let r = until(&server, ADMIN, AGENT, one.clone(), |r| {
        r["data"]["agent"]["status"] == "LOST"
    })
    .await;
    let lost = &r["data"]["agent"];
    assert!(lost["lost_at"].is_string(), "{r}");
    assert_eq!(lost["lost_at"], lost["status_changed"]);
    assert_eq!(lost["first_contact"], before["first_contact"]);
    // The user's summaries show it too.
    let r = gql(&server, USER, SUMMARY_LIST, vars(50, 0, Some("LOST"), None)).await;
    assert_eq!(ids(&r, "agent_summary_list"), ["i-d03", "i-gpu"]);

    // Back, from another address, with more capacity.
    emit(
        &store,
        "i-gpu",
        &[
            AgentEvent::AgentRejoined {
                instance: Uuid::new_v4(),
                addr: "tcp://10.1.2.3:6011".into(),
                reason: "heartbeat-resumed".into(),
            },
            AgentEvent::AgentCapacityChanged {
                capacity: AgentCapacity {
                    available_slots: [("cpu".to_owned(), "16".to_owned())].into(),
                    slot_types: [("cpu".to_owned(), "count".to_owned())].into(),
                },
            },
        ],
    )
    .await;
    let r = until(&server, ADMIN, AGENT, one.clone(), |r| {
        r["data"]["agent"]["status"] == "ALIVE"
    })
    .await;
    let back = &r["data"]["agent"];
    assert_eq!(back["addr"], "tcp://10.1.2.3:6011", "{r}");
    assert_eq!(back["lost_at"], Value::Null);
    assert_eq!(back["available_slots"], r#"{"cpu": "16"}"#);
    assert_eq!(back["cpu_slots"], 16.0);
    assert_ne!(back["status_changed"], lost["status_changed"]);

    // Decommissioned: still listed, with its status.
    emit(
        &store,
        "i-gpu",
        &[AgentEvent::AgentDecommissioned {
            reason: "retired".into(),
        }],
    )
    .await;
    let r = until(
        &server,
        ADMIN,
        AGENT_LIST,
        vars(50, 0, Some("DECOMMISSIONED"), None),
        |r| r["data"]["agent_list"]["total_count"] == 1,
    )
    .await;
    assert_eq!(ids(&r, "agent_list"), ["i-gpu"]);
}
