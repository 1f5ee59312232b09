//! `manager start-server` with agents: the real binary ingests a real
//! agent's notices, sweeps its liveness, reports metrics, and stops its
//! agent services cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use agent_rpc::notice::{NOTICE_FIELD, dead_letter_stream, notice_stream};
use fred::interfaces::{ClientLike, StreamsInterface};
use manager_events::agent::AgentEvent;
use manager_events::codec::decode;
use manager_events::testing::TestDb;

fn redis_url() -> String {
    std::env::var("MANAGER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:8111".into())
}

async fn agent_events(store: &manager_events::EventStore, id: &str) -> Vec<String> {
    store
        .read_stream(&manager_events::agent::stream_id(id), 0)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            // Every event must decode as the agent vocabulary.
            let _: AgentEvent = decode(&r.event_type, &r.payload).unwrap();
            r.event_type.clone()
        })
        .collect()
}

async fn until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn metrics(server: &common::Server) -> String {
    reqwest::get(format!("{}/metrics", server.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_server_registers_agents_sweeps_their_liveness_and_stops_cleanly() {
    let db = TestDb::new().await;
    let store = db.store().await;
    // The tests' manager uses the database's name as its Redis key prefix.
    let prefix = db.url.rsplit('/').next().unwrap().to_owned();
    let mut server = common::spawn_with(
        &db,
        &[
            ("MANAGER_AGENTS__HEARTBEAT_TIMEOUT_MS", "400"),
            ("MANAGER_AGENTS__SWEEP_INTERVAL_MS", "50"),
        ],
    );

    let mut config = agent::Config::default();
    config.agent.id = "i-served".into();
    config.rpc.listen = "tcp://127.0.0.1:0".into();
    config.redis.url = redis_url();
    config.redis.key_prefix = prefix.clone();
    config.heartbeat.interval_ms = 100;
    config.heartbeat.ttl_ms = 400;
    let fleet = agent::Fleet::start(config).await.unwrap();
    until(Duration::from_secs(15), "registered", || async {
        agent_events(&store, "i-served").await == ["AgentRegistered"]
    })
    .await;

    // A notice that does not parse: dead-lettered, counted, acknowledged.
    let redis = fred::clients::Client::new(
        fred::types::config::Config::from_url(&redis_url()).unwrap(),
        None,
        None,
        None,
    );
    redis.init().await.unwrap();
    let _: String = redis
        .xadd(
            notice_stream(&prefix),
            false,
            None,
            "*",
            vec![(NOTICE_FIELD, "nonsense")],
        )
        .await
        .unwrap();
    until(Duration::from_secs(10), "dead-lettered", || async {
        redis
            .xlen::<u64, _>(dead_letter_stream(&prefix))
            .await
            .unwrap()
            == 1
    })
    .await;

    // Killed: lost within the timeout and a few sweeps.
    drop(fleet);
    let killed = Instant::now();
    until(Duration::from_secs(10), "lost", || async {
        agent_events(&store, "i-served").await == ["AgentRegistered", "AgentLost"]
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );

    let text = metrics(&server).await;
    for expected in [
        "agent_notices_total{name=\"agent_started\"} 1",
        "agent_notices_total{name=\"invalid\"} 1",
        "agent_notices_dead_lettered_total 1",
        "agent_sweeper_leader 1",
        "agent_liveness_commands_total{command=\"expired\"}",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }

    // SIGTERM: the agent services stop with the rest.
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

const AGENT_LIST: &str = "query { agent_list(limit: 10, offset: 0) { total_count items { id status addr available_slots } } }";

/// The agents as `agent_list` shows them to the superadmin.
async fn agent_list(server: &common::Server) -> Vec<serde_json::Value> {
    let r = common::gql(
        server,
        (common::ADMIN_AK, common::ADMIN_SK),
        AGENT_LIST,
        serde_json::json!({}),
    )
    .await;
    r["data"]["agent_list"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"))
        .clone()
}

fn agent_config(prefix: &str, cpu: &str) -> agent::Config {
    let mut config = agent::Config::default();
    config.agent.id = "i-listed".into();
    config.rpc.listen = "tcp://127.0.0.1:0".into();
    config.redis.url = redis_url();
    config.redis.key_prefix = prefix.to_owned();
    config.heartbeat.interval_ms = 100;
    config.heartbeat.ttl_ms = 400;
    config
        .slots
        .insert("cpu".into(), agent::config::SlotValue(cpu.into()));
    config
}

#[tokio::test]
async fn an_agent_shows_in_agent_list_goes_lost_when_killed_and_comes_back_once() {
    let db = TestDb::new().await;
    let prefix = db.url.rsplit('/').next().unwrap().to_owned();
    let server = common::start_with_fixture_env(
        &db,
        &[
            ("MANAGER_AGENTS__HEARTBEAT_TIMEOUT_MS", "400"),
            ("MANAGER_AGENTS__SWEEP_INTERVAL_MS", "50"),
        ],
    )
    .await;
    let status_of = |items: &[serde_json::Value]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|a| {
                (
                    a["status"].as_str().unwrap().to_owned(),
                    a["available_slots"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };

    // Registered, with its slots.
    let mut fleet = agent::Fleet::start(agent_config(&prefix, "3"))
        .await
        .unwrap();
    let first_addr = fleet.endpoints()[0].clone();
    until(Duration::from_secs(15), "listed", || async {
        agent_list(&server).await.len() == 1
    })
    .await;
    let items = agent_list(&server).await;
    assert_eq!(items[0]["id"], "i-listed");
    assert_eq!(items[0]["status"], "ALIVE");
    assert_eq!(items[0]["addr"], first_addr.as_str());
    let slots: serde_json::Value =
        serde_json::from_str(items[0]["available_slots"].as_str().unwrap()).unwrap();
    assert_eq!(slots["cpu"], "3", "{slots}");

    // A capacity change shows.
    fleet.reload(agent_config(&prefix, "6")).unwrap();
    until(Duration::from_secs(15), "capacity change", || async {
        status_of(&agent_list(&server).await)
            .first()
            .is_some_and(|(_, s)| s.contains("\"6\""))
    })
    .await;

    // Killed (no goodbye): LOST once its heartbeat expires.
    drop(fleet);
    until(Duration::from_secs(15), "lost", || async {
        agent_list(&server).await[0]["status"] == "LOST"
    })
    .await;

    // Started again, from a new address: ALIVE, still one agent, new address.
    let fleet = agent::Fleet::start(agent_config(&prefix, "6"))
        .await
        .unwrap();
    let second_addr = fleet.endpoints()[0].clone();
    until(Duration::from_secs(15), "alive again", || async {
        agent_list(&server).await[0]["status"] == "ALIVE"
    })
    .await;
    let items = agent_list(&server).await;
    assert_eq!(items.len(), 1, "{items:?}");
    if second_addr != first_addr {
        assert_eq!(items[0]["addr"], second_addr.as_str());
    }
    fleet.shutdown().await;
}
