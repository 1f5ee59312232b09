//! Agents on the write side against the halfstack: notices through the
//! ingester, liveness through the sweeper, with the reference agent.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use agent_rpc::notice::{
    AgentInfo, CONSUMER_GROUP, NOTICE_FIELD, Notice, NoticeBody, dead_letter_stream, notice_stream,
};
use fred::clients::Client;
use fred::interfaces::{KeysInterface, StreamsInterface};
use fred::types::Value;
use manager_command::agent::{
    AgentServices, AgentServicesConfig, DEVELOPMENT_RPC_KEY, Directory, Ingester, IngesterConfig,
    Sweeper, SweeperConfig, connect_redis, stream_id,
};
use manager_command::handler::CommandHandler;
use manager_events::EventStore;
use manager_events::agent::{AgentEvent, AgentStatus};
use manager_events::codec::decode;
use manager_events::testing::TestDb;
use tokio::sync::watch;
use uuid::Uuid;

fn redis_url() -> String {
    std::env::var("MANAGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:8111".to_owned())
}

fn prefix() -> String {
    format!("test-agents-{}", Uuid::new_v4().simple())
}

async fn redis() -> Client {
    connect_redis(&redis_url(), Duration::from_secs(5))
        .await
        .expect("the halfstack Redis (just halfstack-up)")
}

fn info(id: &str, cpu: &str) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        addr: format!("tcp://127.0.0.1:{}", 7000 + id.len()),
        region: "local".into(),
        scaling_group: "default".into(),
        architecture: "x86_64".into(),
        version: "test".into(),
        protocol_version: 1,
        available_slots: BTreeMap::from([("cpu".into(), cpu.into())]),
        slot_types: BTreeMap::from([("cpu".into(), "count".into())]),
        ..Default::default()
    }
}

fn notice(id: &str, instance: Uuid, body: NoticeBody) -> String {
    Notice {
        agent_id: id.into(),
        instance,
        sent_at_ms: 1,
        body,
    }
    .to_json()
}

async fn send(redis: &Client, prefix: &str, fields: Vec<(&str, String)>) -> String {
    redis
        .xadd(notice_stream(prefix), false, None, "*", fields)
        .await
        .unwrap()
}

async fn send_notice(redis: &Client, prefix: &str, text: String) -> String {
    send(redis, prefix, vec![(NOTICE_FIELD, text)]).await
}

async fn events(store: &EventStore, id: &str) -> Vec<AgentEvent> {
    store
        .read_stream(&stream_id(id), 0)
        .await
        .unwrap()
        .iter()
        .map(|r| decode::<AgentEvent>(&r.event_type, &r.payload).unwrap())
        .collect()
}

fn kinds(events: &[AgentEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            AgentEvent::AgentRegistered { .. } => "registered",
            AgentEvent::AgentCapacityChanged { .. } => "capacity",
            AgentEvent::AgentDescriptionChanged { .. } => "description",
            AgentEvent::AgentLost { .. } => "lost",
            AgentEvent::AgentStopped { .. } => "stopped",
            AgentEvent::AgentRejoined { .. } => "rejoined",
            AgentEvent::AgentDecommissioned { .. } => "decommissioned",
            AgentEvent::KernelsPlaced { .. } => "placed",
        })
        .collect()
}

/// Polls `check` until it holds, at most `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Entries pending in the managers' group.
async fn pending(redis: &Client, prefix: &str) -> i64 {
    let summary: Value = redis
        .xpending(notice_stream(prefix), CONSUMER_GROUP, ())
        .await
        .unwrap();
    match summary {
        Value::Array(parts) => parts.first().and_then(Value::as_i64).unwrap_or(0),
        _ => 0,
    }
}

fn ingester_config(prefix: &str) -> IngesterConfig {
    let mut c = IngesterConfig::new(prefix);
    c.block = Duration::from_millis(100);
    c.claim_idle = Duration::from_millis(300);
    c.max_backoff = Duration::from_millis(200);
    c
}

async fn start_ingester(
    handler: &CommandHandler,
    config: IngesterConfig,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let client = connect_redis(&redis_url(), Duration::from_secs(5))
        .await
        .unwrap();
    let ingester = Ingester::new(handler.clone(), client, config);
    ingester.ensure_group().await.unwrap();
    tokio::spawn(ingester.run(stop.clone()))
}

#[tokio::test]
async fn notices_become_events_and_a_notice_that_changes_nothing_appends_nothing() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = CommandHandler::new(store.clone());
    let redis = redis().await;
    let prefix = prefix();
    let (stop, stopped) = watch::channel(false);
    let task = start_ingester(&handler, ingester_config(&prefix), &stopped).await;

    let a = Uuid::new_v4();
    let started = NoticeBody::AgentStarted {
        reason: "self-started".into(),
        info: info("i-a", "4"),
    };
    send_notice(&redis, &prefix, notice("i-a", a, started.clone())).await;
    // The same again, and an info notice that changes nothing.
    send_notice(&redis, &prefix, notice("i-a", a, started)).await;
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-a",
            a,
            NoticeBody::AgentInfoChanged {
                info: info("i-a", "4"),
            },
        ),
    )
    .await;
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-a",
            a,
            NoticeBody::AgentInfoChanged {
                info: info("i-a", "8"),
            },
        ),
    )
    .await;
    // Kernel notices are acknowledged (issue 5 handles them).
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-a",
            a,
            NoticeBody::KernelCreating {
                kernel_id: Uuid::new_v4(),
                session_id: Uuid::new_v4(),
            },
        ),
    )
    .await;
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-a",
            a,
            NoticeBody::AgentTerminated {
                reason: "shutdown".into(),
            },
        ),
    )
    .await;

    eventually(Duration::from_secs(10), "the agent stopped", || async {
        kinds(&events(&store, "i-a").await).last() == Some(&"stopped")
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "everything acknowledged",
        || async { pending(&redis, &prefix).await == 0 },
    )
    .await;
    let log = events(&store, "i-a").await;
    assert_eq!(kinds(&log), ["registered", "capacity", "stopped"]);
    match &log[1] {
        AgentEvent::AgentCapacityChanged { capacity } => {
            assert_eq!(capacity.available_slots["cpu"], "8")
        }
        other => panic!("{other:?}"),
    }
    let _ = stop.send(true);
    task.await.unwrap();
}

#[tokio::test]
async fn a_redelivered_notice_appends_nothing() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = CommandHandler::new(store.clone());
    let redis = redis().await;
    let prefix = prefix();
    let ingester = Ingester::new(handler, redis.clone(), ingester_config(&prefix));
    ingester.ensure_group().await.unwrap();
    let a = Uuid::new_v4();
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-r",
            a,
            NoticeBody::AgentStarted {
                reason: "self-started".into(),
                info: info("i-r", "4"),
            },
        ),
    )
    .await;
    let first = ingester.read(">", None).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(ingester.handle(first.clone()).await.acked, 1);
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-r",
            a,
            NoticeBody::AgentTerminated {
                reason: "shutdown".into(),
            },
        ),
    )
    .await;
    let second = ingester.read(">", None).await.unwrap();
    ingester.handle(second).await;
    // The start again (as after a crash between append and XACK): deciding
    // it afresh would make the stopped agent rejoin; its key says it was done.
    ingester.handle(first).await;
    assert_eq!(
        kinds(&events(&store, "i-r").await),
        ["registered", "stopped"]
    );
}

#[tokio::test]
async fn two_ingesters_handle_each_notice_once() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let redis = redis().await;
    let prefix = prefix();
    let (stop, stopped) = watch::channel(false);
    // Two managers: their own handlers (caches), their own consumers.
    let one = start_ingester(
        &CommandHandler::new(store.clone()),
        ingester_config(&prefix),
        &stopped,
    )
    .await;
    let two = start_ingester(
        &CommandHandler::new(store.clone()),
        ingester_config(&prefix),
        &stopped,
    )
    .await;
    // Each agent is announced twice (an agent's notice writer retries may
    // repeat an entry): whichever manager reads which, each agent is
    // registered once. (Notices of one agent read by two managers at once
    // may be handled out of order: see the module docs of the ingester.)
    let agents: Vec<String> = (0..60).map(|i| format!("i-twin-{i}")).collect();
    for id in &agents {
        let text = notice(
            id,
            Uuid::new_v4(),
            if id.ends_with('0') {
                NoticeBody::AgentInfoChanged {
                    info: info(id, "2"),
                }
            } else {
                NoticeBody::AgentStarted {
                    reason: "self-started".into(),
                    info: info(id, "4"),
                }
            },
        );
        send_notice(&redis, &prefix, text.clone()).await;
        send_notice(&redis, &prefix, text).await;
    }
    for id in &agents {
        eventually(
            Duration::from_secs(20),
            "every agent registered",
            || async { !events(&store, id).await.is_empty() },
        )
        .await;
    }
    eventually(
        Duration::from_secs(5),
        "everything acknowledged",
        || async { pending(&redis, &prefix).await == 0 },
    )
    .await;
    for id in &agents {
        assert_eq!(kinds(&events(&store, id).await), ["registered"], "{id}");
    }
    assert_eq!(
        store.head_position().await.unwrap(),
        agents.len() as u64,
        "one event per agent in the whole log"
    );
    let _ = stop.send(true);
    one.await.unwrap();
    two.await.unwrap();
}

#[tokio::test]
async fn notices_of_a_consumer_that_died_before_acking_are_claimed_and_handled() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = CommandHandler::new(store.clone());
    let redis = redis().await;
    let prefix = prefix();
    // A manager that read the notice and died before acknowledging it.
    let dead = Ingester::new(handler.clone(), redis.clone(), {
        let mut c = ingester_config(&prefix);
        c.consumer = "dead-manager".into();
        c
    });
    dead.ensure_group().await.unwrap();
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-orphan",
            Uuid::new_v4(),
            NoticeBody::AgentStarted {
                reason: "self-started".into(),
                info: info("i-orphan", "4"),
            },
        ),
    )
    .await;
    assert_eq!(dead.read(">", None).await.unwrap().len(), 1);
    assert_eq!(pending(&redis, &prefix).await, 1);

    let (stop, stopped) = watch::channel(false);
    let task = start_ingester(&handler, ingester_config(&prefix), &stopped).await;
    eventually(
        Duration::from_secs(10),
        "the orphan notice handled",
        || async { !events(&store, "i-orphan").await.is_empty() },
    )
    .await;
    eventually(Duration::from_secs(5), "and acknowledged", || async {
        pending(&redis, &prefix).await == 0
    })
    .await;
    assert_eq!(kinds(&events(&store, "i-orphan").await), ["registered"]);
    let _ = stop.send(true);
    task.await.unwrap();
}

#[tokio::test]
async fn malformed_notices_are_dead_lettered_and_the_ingester_goes_on() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = CommandHandler::new(store.clone());
    let redis = redis().await;
    let prefix = prefix();
    let (stop, stopped) = watch::channel(false);
    let task = start_ingester(&handler, ingester_config(&prefix), &stopped).await;

    let garbage = send_notice(&redis, &prefix, "{not json".into()).await;
    send(&redis, &prefix, vec![("something", "else".into())]).await;
    send_notice(
        &redis,
        &prefix,
        notice(
            "",
            Uuid::new_v4(),
            NoticeBody::AgentTerminated {
                reason: "shutdown".into(),
            },
        ),
    )
    .await;
    // Refused by the aggregate: an agent with no address.
    let mut no_addr = info("i-noaddr", "4");
    no_addr.addr = String::new();
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-noaddr",
            Uuid::new_v4(),
            NoticeBody::AgentStarted {
                reason: "self-started".into(),
                info: no_addr,
            },
        ),
    )
    .await;
    send_notice(
        &redis,
        &prefix,
        notice(
            "i-good",
            Uuid::new_v4(),
            NoticeBody::AgentStarted {
                reason: "self-started".into(),
                info: info("i-good", "4"),
            },
        ),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the good notice handled",
        || async { !events(&store, "i-good").await.is_empty() },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "everything acknowledged",
        || async { pending(&redis, &prefix).await == 0 },
    )
    .await;
    let dead: Vec<(String, std::collections::HashMap<String, String>)> = redis
        .xrange(dead_letter_stream(&prefix), "-", "+", None)
        .await
        .unwrap();
    assert_eq!(dead.len(), 4, "{dead:?}");
    let first = &dead[0].1;
    assert_eq!(first["entry_id"], garbage);
    assert_eq!(first[NOTICE_FIELD], "{not json");
    assert!(first["error"].contains("not a notice"), "{first:?}");
    assert!(dead[3].1["error"].contains("addr"), "{:?}", dead[3].1);
    assert!(events(&store, "i-noaddr").await.is_empty());
    let _ = stop.send(true);
    task.await.unwrap();
}

fn agent_config(id: &str, prefix: &str) -> agent::Config {
    let mut c = agent::Config::default();
    c.agent.id = id.into();
    c.rpc.listen = "tcp://127.0.0.1:0".into();
    c.redis.url = redis_url();
    c.redis.key_prefix = prefix.into();
    c.heartbeat.interval_ms = 100;
    c.heartbeat.ttl_ms = 300;
    c.logging.level = "warn".into();
    c
}

fn services_config(db: &TestDb, prefix: &str) -> AgentServicesConfig {
    let mut sweeper = SweeperConfig::new(prefix, db.url.clone());
    sweeper.heartbeat_timeout = Duration::from_millis(300);
    sweeper.sweep_interval = Duration::from_millis(50);
    AgentServicesConfig {
        redis_url: redis_url(),
        database_url: db.url.clone(),
        ingester: ingester_config(prefix),
        sweeper,
        rpc: agent_rpc::ClientConfig::new(
            agent_rpc::ClusterKey::new(DEVELOPMENT_RPC_KEY.as_bytes()).unwrap(),
        ),
    }
}

fn status(directory: &Directory, id: &str) -> Option<AgentStatus> {
    directory.get(id).and_then(|a| a.status)
}

#[tokio::test]
async fn the_development_rpc_key_is_the_agents() {
    assert_eq!(DEVELOPMENT_RPC_KEY, agent::config::DEVELOPMENT_CLUSTER_KEY);
}

#[tokio::test]
async fn a_killed_agent_is_lost_and_comes_back_at_its_new_address() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let handler = CommandHandler::new(store.clone());
    let prefix = prefix();
    let services = AgentServices::start(handler, services_config(&db, &prefix))
        .await
        .unwrap();
    let dir = services.directory().clone();
    let id = format!("i-real-{}", &Uuid::new_v4().simple().to_string()[..8]);

    let fleet = agent::Fleet::start(agent_config(&id, &prefix))
        .await
        .unwrap();
    let first_addr = fleet.agents()[0].addr().to_owned();
    eventually(Duration::from_secs(10), "registered and alive", || async {
        status(&dir, &id) == Some(AgentStatus::Alive)
    })
    .await;
    let client = services.clients().get(&id).unwrap();
    assert_eq!(client.endpoint(), first_addr);
    assert_eq!(client.health().await.unwrap().agent_id, id);

    // Killed: no goodbye, no more heartbeats; the key expires.
    drop(fleet);
    let killed = Instant::now();
    eventually(Duration::from_secs(5), "lost", || async {
        status(&dir, &id) == Some(AgentStatus::Lost)
    })
    .await;
    // Timeout 300 ms, sweeps every 50 ms, plus the log's round trip.
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        services.clients().get(&id).is_err(),
        "no RPC to a lost agent"
    );
    assert!(services.clients().held_addr(&id).is_none());

    // Restarted: a new process at a new address.
    let fleet = agent::Fleet::start(agent_config(&id, &prefix))
        .await
        .unwrap();
    let second_addr = fleet.agents()[0].addr().to_owned();
    assert_ne!(first_addr, second_addr);
    eventually(
        Duration::from_secs(10),
        "alive again at the new address",
        || async {
            dir.get(&id)
                .is_some_and(|a| a.is_alive() && a.description.addr == second_addr)
        },
    )
    .await;
    let client = services.clients().get(&id).unwrap();
    assert_eq!(client.endpoint(), second_addr);
    assert_eq!(client.health().await.unwrap().agent_id, id);
    // Give a sweep or two a chance to misjudge.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = kinds(&events(&store, &id).await);
    assert_eq!(
        log.iter().filter(|k| **k == "registered").count(),
        1,
        "{log:?}"
    );
    assert_eq!(log.iter().filter(|k| **k == "lost").count(), 1, "{log:?}");
    assert_eq!(
        log.iter().filter(|k| **k == "rejoined").count(),
        1,
        "{log:?}"
    );
    assert_eq!(status(&dir, &id), Some(AgentStatus::Alive));

    // A goodbye: TERMINATED, and not lost afterwards.
    fleet.shutdown().await;
    eventually(Duration::from_secs(5), "terminated", || async {
        status(&dir, &id) == Some(AgentStatus::Terminated)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = kinds(&events(&store, &id).await);
    assert_eq!(log.last(), Some(&"stopped"), "{log:?}");
    // The key goes before the goodbye is read: the sweeper may have lost
    // it meanwhile, but the goodbye has the last word.
    assert!(log.iter().filter(|k| **k == "lost").count() <= 2, "{log:?}");
    services.stop().await;
}

#[tokio::test]
async fn only_one_sweeper_acts_and_another_takes_over_when_it_stops() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let prefix = prefix();
    let redis = redis().await;
    let directory = Directory::new();
    let (stop_dir, dir_stopped) = watch::channel(false);
    let follow = tokio::spawn(directory.clone().follow(store.clone(), dir_stopped));
    let config = {
        let mut c = SweeperConfig::new(&prefix, db.url.clone());
        c.heartbeat_timeout = Duration::from_millis(300);
        c.sweep_interval = Duration::from_millis(50);
        c
    };
    let sweeper = |handler: CommandHandler| {
        Sweeper::new(handler, directory.clone(), redis.clone(), config.clone())
    };
    let one = sweeper(CommandHandler::new(store.clone()));
    let two = sweeper(CommandHandler::new(store.clone()));
    let (lead_one, lead_two) = (one.leadership(), two.leadership());
    let (stop_one, stopped_one) = watch::channel(false);
    let (stop_two, stopped_two) = watch::channel(false);
    let task_one = tokio::spawn(one.run(stopped_one));
    let task_two = tokio::spawn(two.run(stopped_two));
    eventually(Duration::from_secs(5), "a leader", || async {
        *lead_one.borrow() || *lead_two.borrow()
    })
    .await;
    for _ in 0..10 {
        assert!(!(*lead_one.borrow() && *lead_two.borrow()), "two leaders");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // Agents with no heartbeat key: both sweepers see them expire.
    let handler = CommandHandler::new(store.clone());
    let ids: Vec<String> = (0..20).map(|i| format!("i-sweep-{i}")).collect();
    for id in &ids {
        handler
            .execute::<manager_command::agent::Agent>(
                &stream_id(id),
                manager_command::agent::AgentCommand::Started {
                    instance: Uuid::new_v4(),
                    info: info(id, "4"),
                },
                Default::default(),
            )
            .await
            .unwrap();
    }
    for id in &ids {
        eventually(Duration::from_secs(5), "lost", || async {
            status(&directory, id) == Some(AgentStatus::Lost)
        })
        .await;
    }
    for id in &ids {
        assert_eq!(kinds(&events(&store, id).await), ["registered", "lost"]);
    }

    // The leader stops; the other takes over and acts: a heartbeat key
    // makes an agent rejoin.
    let (leader_stop, leader_task, other) = if *lead_one.borrow() {
        (stop_one, task_one, (lead_two, stop_two, task_two))
    } else {
        (stop_two, task_two, (lead_one, stop_one, task_one))
    };
    let _ = leader_stop.send(true);
    leader_task.await.unwrap();
    let (lead_other, stop_other, task_other) = other;
    eventually(Duration::from_secs(5), "the standby leads", || async {
        *lead_other.borrow()
    })
    .await;
    let hb = serde_json::json!({
        "instance": Uuid::new_v4(),
        "addr": "tcp://127.0.0.1:7999",
        "sent_at_ms": chrono_now_ms(),
    });
    let _: () = redis
        .set(
            agent_rpc::notice::heartbeat_key(&prefix, &ids[0]),
            hb.to_string(),
            Some(fred::types::Expiration::PX(5000)),
            None,
            false,
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "rejoined", || async {
        status(&directory, &ids[0]) == Some(AgentStatus::Alive)
    })
    .await;
    let log = events(&store, &ids[0]).await;
    assert_eq!(kinds(&log), ["registered", "lost", "rejoined"]);
    assert!(
        matches!(&log[2], AgentEvent::AgentRejoined { addr, reason, .. }
        if addr == "tcp://127.0.0.1:7999" && reason == "heartbeat-resumed")
    );
    let _ = stop_other.send(true);
    task_other.await.unwrap();
    let _ = stop_dir.send(true);
    follow.await.unwrap();
}

fn chrono_now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}
