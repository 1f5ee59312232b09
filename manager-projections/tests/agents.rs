//! The `agents` projector against the real event store (halfstack PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use diesel::QueryableByName;
use diesel::sql_types::{Bool, Nullable, Text};
use diesel_async::RunQueryDsl;
use manager_events::EventStore;
use manager_events::agent::{self, AgentCapacity, AgentDescription, AgentEvent};
use manager_events::testing::TestDb;
use manager_projections::ProjectionRunner;
use manager_projections::agents::AgentsProjector;
use uuid::Uuid;

/// Appends `events` to agent `id`'s stream, in one transaction.
async fn emit(store: &EventStore, id: &str, events: &[AgentEvent]) {
    manager_events::testing::emit(store, agent::stream_id(id), agent::STREAM_TYPE, events).await;
}

fn description(addr: &str, group: &str) -> AgentDescription {
    AgentDescription {
        addr: addr.into(),
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
        public_host: Some("10.0.0.1".into()),
        auto_terminate_abusing_kernel: false,
    }
}

fn capacity(cpu: &str, mem: &str) -> AgentCapacity {
    AgentCapacity {
        available_slots: [
            ("cpu".to_owned(), cpu.to_owned()),
            ("mem".to_owned(), mem.to_owned()),
        ]
        .into(),
        slot_types: [
            ("cpu".to_owned(), "count".to_owned()),
            ("mem".to_owned(), "bytes".to_owned()),
        ]
        .into(),
    }
}

fn registered(id: &str, instance: Uuid, group: &str) -> AgentEvent {
    AgentEvent::AgentRegistered {
        id: id.into(),
        instance,
        description: description(&format!("tcp://{id}:6011"), group),
        capacity: capacity("8", "17179869184"),
    }
}

/// An `agents` row, with its times checked against the log: `changed_now`
/// says whether `status_changed` is the time of the row's last event.
#[derive(QueryableByName, Debug, PartialEq)]
struct Row {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    scaling_group: String,
    #[diesel(sql_type = Text)]
    addr: String,
    #[diesel(sql_type = Text)]
    available_slots: String,
    #[diesel(sql_type = Text)]
    occupied_slots: String,
    #[diesel(sql_type = Text)]
    compute_plugins: String,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Nullable<Text>)]
    public_host: Option<String>,
    #[diesel(sql_type = Bool)]
    schedulable: bool,
    #[diesel(sql_type = Text)]
    instance: String,
    #[diesel(sql_type = Bool)]
    lost: bool,
    #[diesel(sql_type = Bool)]
    changed_now: bool,
    #[diesel(sql_type = Bool)]
    first_contact_is_first_event: bool,
}

async fn rows(db: &TestDb) -> Vec<Row> {
    diesel::sql_query(
        "SELECT a.id, a.status, a.scaling_group, a.addr, a.available_slots::text AS available_slots, \
         a.occupied_slots::text AS occupied_slots, a.compute_plugins::text AS compute_plugins, a.version, \
         a.public_host, a.schedulable, a.instance::text AS instance, a.lost_at IS NOT NULL AS lost, \
         a.status_changed = (SELECT e.recorded_at FROM events e WHERE e.position = a.position) AS changed_now, \
         a.first_contact = (SELECT min(e.recorded_at) FROM events e WHERE e.stream_id = 'agent:' || a.id) \
           AS first_contact_is_first_event \
         FROM agents a ORDER BY a.id",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_agents_read_model_follows_each_agents_life() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(AgentsProjector)], 3);
    let (i1, i2, i3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    emit(&store, "i-a", &[registered("i-a", i1, "default")]).await;
    emit(&store, "i-b", &[registered("i-b", i2, "gpu")]).await;
    runner.catch_up().await.unwrap();
    let r = rows(&db).await;
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0],
        Row {
            id: "i-a".into(),
            status: "ALIVE".into(),
            scaling_group: "default".into(),
            addr: "tcp://i-a:6011".into(),
            available_slots: r#"{"cpu": "8", "mem": "17179869184"}"#.into(),
            occupied_slots: "{}".into(),
            compute_plugins: r#"{"cpu": {"version": "1"}}"#.into(),
            version: "23.09.10".into(),
            public_host: Some("10.0.0.1".into()),
            schedulable: true,
            instance: i1.to_string(),
            lost: false,
            changed_now: true,
            first_contact_is_first_event: true,
        }
    );
    assert_eq!(
        (r[1].id.as_str(), r[1].scaling_group.as_str()),
        ("i-b", "gpu")
    );

    // Capacity and description change; status and its time stay.
    let mut moved = description("tcp://10.0.0.9:6011", "gpu");
    moved.version = "23.09.11".into();
    moved.public_host = None;
    emit(
        &store,
        "i-a",
        &[
            AgentEvent::AgentCapacityChanged {
                capacity: capacity("16", "34359738368"),
            },
            AgentEvent::AgentDescriptionChanged { description: moved },
        ],
    )
    .await;
    runner.catch_up().await.unwrap();
    let a = &rows(&db).await[0];
    assert_eq!(a.available_slots, r#"{"cpu": "16", "mem": "34359738368"}"#);
    assert_eq!(
        (
            a.scaling_group.as_str(),
            a.addr.as_str(),
            a.version.as_str(),
            a.public_host.as_deref()
        ),
        ("gpu", "tcp://10.0.0.9:6011", "23.09.11", None)
    );
    assert_eq!(a.status, "ALIVE");
    assert!(!a.changed_now, "a description change is no status change");

    // Lost, then back from a new address with a new process.
    emit(
        &store,
        "i-a",
        &[AgentEvent::AgentLost {
            reason: "heartbeat-expired".into(),
        }],
    )
    .await;
    runner.catch_up().await.unwrap();
    let a = &rows(&db).await[0];
    assert_eq!(
        (a.status.as_str(), a.lost, a.changed_now),
        ("LOST", true, true)
    );
    emit(
        &store,
        "i-a",
        &[AgentEvent::AgentRejoined {
            instance: i3,
            addr: "tcp://10.0.0.10:6011".into(),
            reason: "heartbeat-resumed".into(),
        }],
    )
    .await;
    runner.catch_up().await.unwrap();
    let a = &rows(&db).await[0];
    assert_eq!(
        (a.status.as_str(), a.lost, a.changed_now, a.addr.as_str()),
        ("ALIVE", false, true, "tcp://10.0.0.10:6011")
    );
    assert_eq!(a.instance, i3.to_string());
    assert!(a.first_contact_is_first_event, "first contact is kept");

    // Said goodbye; the other one is decommissioned.
    emit(
        &store,
        "i-a",
        &[AgentEvent::AgentStopped {
            reason: "shutdown".into(),
        }],
    )
    .await;
    emit(
        &store,
        "i-b",
        &[AgentEvent::AgentDecommissioned {
            reason: "retired".into(),
        }],
    )
    .await;
    runner.catch_up().await.unwrap();
    let r = rows(&db).await;
    assert_eq!(
        (r[0].status.as_str(), r[0].lost, r[0].changed_now),
        ("TERMINATED", true, true)
    );
    assert_eq!(
        (r[1].status.as_str(), r[1].lost, r[1].changed_now),
        ("DECOMMISSIONED", true, true)
    );

    // Events of other aggregates and of unknown agents change nothing.
    emit(
        &store,
        "i-ghost",
        &[AgentEvent::AgentLost {
            reason: "heartbeat-expired".into(),
        }],
    )
    .await;
    runner.catch_up().await.unwrap();
    assert_eq!(rows(&db).await.len(), 2);
}

#[tokio::test]
async fn a_whole_life_in_one_batch_and_a_rebuild_give_the_same_rows() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let i = Uuid::new_v4();
    for n in 0..20 {
        let id = format!("i-{n:02}");
        emit(&store, &id, &[registered(&id, i, "default")]).await;
        if n % 2 == 0 {
            emit(
                &store,
                &id,
                &[
                    AgentEvent::AgentLost {
                        reason: "heartbeat-expired".into(),
                    },
                    AgentEvent::AgentRejoined {
                        instance: i,
                        addr: format!("tcp://{id}:7000"),
                        reason: "self-started".into(),
                    },
                ],
            )
            .await;
        }
        if n % 3 == 0 {
            emit(
                &store,
                &id,
                &[AgentEvent::AgentStopped {
                    reason: "shutdown".into(),
                }],
            )
            .await;
        }
    }
    // One batch holds every event.
    let runner = ProjectionRunner::new(store.clone(), vec![Arc::new(AgentsProjector)], 1000);
    runner.catch_up().await.unwrap();
    let before = rows(&db).await;
    assert_eq!(before.len(), 20);
    assert_eq!(
        (before[0].status.as_str(), before[0].addr.as_str()),
        ("TERMINATED", "tcp://i-00:7000")
    );
    assert_eq!(
        (
            before[2].status.as_str(),
            before[2].addr.as_str(),
            before[2].lost
        ),
        ("ALIVE", "tcp://i-02:7000", false)
    );
    assert_eq!(before[1].status, "ALIVE");
    assert_eq!(before[3].status, "TERMINATED");

    // Damage the read model: the rebuild repairs it from the log.
    diesel::sql_query("UPDATE agents SET status = 'corrupted'")
        .execute(&mut db.connection().await)
        .await
        .unwrap();
    let report = runner.rebuild(&AgentsProjector, |_| {}).await.unwrap();
    assert_eq!(report.position, store.head_position().await.unwrap());
    assert_eq!(rows(&db).await, before);
}
