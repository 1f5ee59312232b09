//! The dummy backend and what every agent does: heartbeats, notices,
//! reconciliation, capacity, shutdown, Redis outages.

use std::collections::BTreeSet;
use std::time::Duration;

use agent::Fleet;
use agent::config::{BackendKind, SlotValue};
use agent_rpc::agent::{HealthRequest, KernelRef, SyncKernelRegistryRequest};
use agent_rpc::notice::{Heartbeat, NoticeBody, heartbeat_key};
use agent_rpc::{RemoteError, Request, Response, RpcError};
use fred::interfaces::KeysInterface;
use uuid::Uuid;

use crate::common::*;

#[tokio::test]
async fn fifty_agents_in_one_process_all_heartbeat_and_answer() {
    let scratch = TempDir::new();
    let mut config = config(BackendKind::Dummy, &scratch);
    config.agent.count = 50;
    let prefix = config.redis.key_prefix.clone();
    let base = config.agent.id.clone();
    let fleet = Fleet::start(config).await.unwrap();
    let redis = redis().await;
    assert_eq!(fleet.agents().len(), 50);

    let ids: Vec<String> = (0..50).map(|n| format!("{base}-{n}")).collect();
    let keys: Vec<String> = ids.iter().map(|id| heartbeat_key(&prefix, id)).collect();
    for (key, agent) in keys.iter().zip(fleet.agents()) {
        let value: Option<String> = redis.get(key).await.unwrap();
        let hb: Heartbeat = serde_json::from_str(&value.expect("the key is set at start")).unwrap();
        assert_eq!(
            (hb.instance, hb.addr.as_str()),
            (agent.instance(), agent.addr())
        );
        let ttl: i64 = redis.pttl(key).await.unwrap();
        assert!(ttl > 0 && ttl <= 1000, "{key} has a TTL: {ttl}");
    }
    // Keys are refreshed: after more than a TTL every key still exists,
    // with a fresh heartbeat.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let now = agent::report::now_ms();
    for key in &keys {
        let value: Option<String> = redis.get(key).await.unwrap();
        let hb: Heartbeat = serde_json::from_str(&value.expect("refreshed")).unwrap();
        assert!(now - hb.sent_at_ms < 1000, "{key} is fresh");
    }

    // Every agent answers on its own port, as itself.
    let endpoints: BTreeSet<&String> = fleet.endpoints().iter().collect();
    assert_eq!(endpoints.len(), 50);
    let calls = fleet
        .endpoints()
        .iter()
        .zip(&ids)
        .map(|(endpoint, id)| async move {
            let c = client(endpoint);
            let r = c
                .call(
                    Request::Health(HealthRequest {
                        message: id.clone(),
                    }),
                    None,
                )
                .await
                .unwrap();
            let Response::Health(h) = r else {
                panic!("{r:?}")
            };
            assert_eq!((&h.agent_id, &h.message), (id, id));
        });
    futures::future::join_all(calls).await;

    // Each announced itself once.
    let started: BTreeSet<String> = notices(&redis, &prefix)
        .await
        .into_iter()
        .filter_map(|n| match n.body {
            NoticeBody::AgentStarted { reason, info } => {
                assert_eq!(reason, "self-started");
                assert_eq!(info.id, n.agent_id);
                Some(n.agent_id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(started, ids.iter().cloned().collect());

    fleet.shutdown().await;
    for key in &keys {
        assert!(!redis.exists::<bool, _>(key).await.unwrap());
    }
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn a_graceful_shutdown_deletes_the_key_and_says_goodbye() {
    let scratch = TempDir::new();
    let config = config(BackendKind::Dummy, &scratch);
    let prefix = config.redis.key_prefix.clone();
    let fleet = Fleet::start(config).await.unwrap();
    let redis = redis().await;
    let agent = fleet.agents()[0].clone();
    let key = agent.heartbeat_key();
    assert!(redis.exists::<bool, _>(&key).await.unwrap());

    fleet.shutdown().await;
    assert!(!redis.exists::<bool, _>(&key).await.unwrap());
    let all = notices(&redis, &prefix).await;
    let last = all.last().unwrap();
    assert_eq!(last.agent_id, agent.id());
    assert_eq!(last.instance, agent.instance());
    assert_eq!(
        last.body,
        NoticeBody::AgentTerminated {
            reason: "shutdown".into()
        }
    );
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn sync_kernel_registry_reconciles_with_the_manager() {
    let scratch = TempDir::new();
    let config = config(BackendKind::Dummy, &scratch);
    let prefix = config.redis.key_prefix.clone();
    let fleet = Fleet::start(config).await.unwrap();
    let redis = redis().await;
    let c = client(&fleet.endpoints()[0]);
    let session = Uuid::new_v4();
    let (a, b) = (kernel("python", &[]), kernel("python", &[]));
    let (a_ref, b_ref) = (
        KernelRef {
            kernel_id: a.kernel_id,
            session_id: session,
        },
        KernelRef {
            kernel_id: b.kernel_id,
            session_id: session,
        },
    );
    c.create_kernels(create(session, vec![a, b])).await.unwrap();
    let unknown = KernelRef {
        kernel_id: Uuid::new_v4(),
        session_id: session,
    };

    let r = c
        .sync_kernel_registry(SyncKernelRegistryRequest {
            kernels: vec![a_ref, unknown],
        })
        .await
        .unwrap();
    assert_eq!(r.running, vec![a_ref]);
    assert_eq!(r.destroyed_unknown, vec![b_ref]);
    assert_eq!(r.already_terminated, vec![unknown]);
    assert_eq!(fleet.agents()[0].kernel_ids(), vec![a_ref.kernel_id]);

    let n = wait_notice(&redis, &prefix, "not-found-in-manager", |n| {
        is_kernel(n, "kernel_terminated", b_ref.kernel_id)
    })
    .await;
    assert!(matches!(
        n.body,
        NoticeBody::KernelTerminated { ref reason, .. } if reason == "not-found-in-manager"
    ));

    // Reconciling again changes nothing.
    let again = c
        .sync_kernel_registry(SyncKernelRegistryRequest {
            kernels: vec![a_ref],
        })
        .await
        .unwrap();
    assert_eq!(again.running, vec![a_ref]);
    assert!(again.destroyed_unknown.is_empty() && again.already_terminated.is_empty());

    let local = c.get_local_config().await.unwrap();
    assert_eq!(local.agent_id, fleet.agents()[0].id());
    assert_eq!(local.scaling_group, "default");

    fleet.shutdown().await;
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn capacity_is_enforced_and_a_reload_announces_the_new_one() {
    let scratch = TempDir::new();
    let mut config = config(BackendKind::Dummy, &scratch);
    config.slots.insert("cpu".into(), SlotValue("2".into()));
    config
        .slots
        .insert("cuda.device".into(), SlotValue("1".into()));
    config.dummy.pull_delay_ms = 5;
    let prefix = config.redis.key_prefix.clone();
    let mut fleet = Fleet::start(config.clone()).await.unwrap();
    let redis = redis().await;
    let c = client(&fleet.endpoints()[0]);
    let session = Uuid::new_v4();

    let started = wait_notice(&redis, &prefix, "agent_started", |n| {
        matches!(n.body, NoticeBody::AgentStarted { .. })
    })
    .await;
    let NoticeBody::AgentStarted { info, .. } = started.body else {
        unreachable!()
    };
    assert_eq!(info.available_slots["cpu"], "2");
    assert_eq!(info.available_slots["mem"], "17179869184");
    assert_eq!(info.available_slots["cuda.device"], "1");
    assert_eq!(info.slot_types["cuda.device"], "count");
    assert_eq!(info.slot_types["mem"], "bytes");
    assert!(info.compute_plugins.contains_key("cuda"));

    let gpu = kernel(
        "python",
        &[("cpu", "2"), ("cuda.device", "1"), ("tpu", "0")],
    );
    let gpu_id = gpu.kernel_id;
    let made = c.create_kernels(create(session, vec![gpu])).await.unwrap();
    assert_eq!(made.kernels[0].attached_devices["cuda"][0].amount, "1");
    // A fake pull was announced before creation.
    wait_notice(&redis, &prefix, "kernel_pulling", |n| {
        is_kernel(n, "kernel_pulling", gpu_id)
    })
    .await;

    let more = kernel("python", &[("cpu", "0.5")]);
    let err = c
        .create_kernels(create(session, vec![more.clone()]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RpcError::Remote(RemoteError::FailedPrecondition { .. })
        ),
        "{err:?}"
    );
    let err = c
        .create_kernels(create(session, vec![kernel("python", &[("tpu", "1")])]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Remote(RemoteError::InvalidArgument { .. })),
        "{err:?}"
    );
    // All or none: one kernel too many refuses the whole session.
    let big = create(
        Uuid::new_v4(),
        vec![
            kernel("python", &[("mem", "1g")]),
            kernel("python", &[("cpu", "1")]),
        ],
    );
    assert!(c.create_kernels(big).await.is_err());
    assert_eq!(fleet.agents()[0].kernel_count(), 1);

    // More capacity, announced.
    let mut bigger = config.clone();
    bigger.slots.insert("cpu".into(), SlotValue("4".into()));
    bigger.agent.scaling_group = "gpu".into();
    bigger.heartbeat.interval_ms = 999;
    let ignored = fleet.reload(bigger).unwrap();
    assert_eq!(ignored, vec!["[heartbeat]"]);
    let changed = wait_notice(&redis, &prefix, "agent_info_changed", |n| {
        matches!(n.body, NoticeBody::AgentInfoChanged { .. })
    })
    .await;
    let NoticeBody::AgentInfoChanged { info } = changed.body else {
        unreachable!()
    };
    assert_eq!(info.available_slots["cpu"], "4");
    assert_eq!(info.scaling_group, "gpu");
    c.create_kernels(create(session, vec![more])).await.unwrap();
    assert_eq!(fleet.agents()[0].allocated_slots()["cpu"], "2.5");

    // Reloading the same settings announces nothing more.
    let before = notices(&redis, &prefix).await.len();
    let mut same = config;
    same.slots.insert("cpu".into(), SlotValue("4".into()));
    same.agent.scaling_group = "gpu".into();
    fleet.reload(same).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(notices(&redis, &prefix).await.len(), before);

    fleet.shutdown().await;
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn injected_failures_are_reported() {
    let scratch = TempDir::new();
    let mut config = config(BackendKind::Dummy, &scratch);
    config.dummy.create_failure_rate = 1.0;
    let prefix = config.redis.key_prefix.clone();
    let fleet = Fleet::start(config).await.unwrap();
    let redis = redis().await;
    let c = client(&fleet.endpoints()[0]);
    let k = kernel("python", &[("cpu", "1")]);
    let kernel_id = k.kernel_id;
    let err = c
        .create_kernels(create(Uuid::new_v4(), vec![k]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Remote(RemoteError::Internal { .. })),
        "{err:?}"
    );
    let n = wait_notice(&redis, &prefix, "failed-to-start", |n| {
        is_kernel(n, "kernel_terminated", kernel_id)
    })
    .await;
    assert!(matches!(
        n.body,
        NoticeBody::KernelTerminated { ref reason, .. } if reason == "failed-to-start"
    ));
    assert_eq!(fleet.agents()[0].kernel_count(), 0);
    assert!(fleet.agents()[0].allocated_slots().is_empty());
    fleet.shutdown().await;
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn a_redis_outage_does_not_stop_the_agent() {
    let proxy = Proxy::start().await;
    let scratch = TempDir::new();
    let mut config = config(BackendKind::Dummy, &scratch);
    config.redis.url = proxy.url.clone();
    let prefix = config.redis.key_prefix.clone();
    let fleet = Fleet::start(config).await.unwrap();
    let redis = redis().await;
    let key = fleet.agents()[0].heartbeat_key();
    let c = client(&fleet.endpoints()[0]);
    assert!(redis.exists::<bool, _>(&key).await.unwrap());

    proxy.cut();
    // The key expires (TTL 1 s) while the agent cannot reach Redis...
    eventually(
        Duration::from_secs(5),
        "the key expires during the outage",
        || async { !redis.exists::<bool, _>(&key).await.unwrap() },
    )
    .await;
    // ...but the agent goes on answering, and what happens meanwhile is
    // reported once Redis is back.
    c.health().await.unwrap();
    let k = kernel("python", &[]);
    let kernel_id = k.kernel_id;
    c.create_kernels(create(Uuid::new_v4(), vec![k]))
        .await
        .unwrap();

    proxy.restore();
    eventually(Duration::from_secs(10), "heartbeats resume", || async {
        redis.exists::<bool, _>(&key).await.unwrap()
    })
    .await;
    wait_notice(&redis, &prefix, "kernel_started after the outage", |n| {
        is_kernel(n, "kernel_started", kernel_id)
    })
    .await;
    let all = notices(&redis, &prefix).await;
    let kinds: Vec<&str> = all
        .iter()
        .filter_map(|n| match &n.body {
            NoticeBody::KernelPreparing { .. } => Some("preparing"),
            NoticeBody::KernelPulling { .. } => Some("pulling"),
            NoticeBody::KernelCreating { .. } => Some("creating"),
            NoticeBody::KernelStarted { .. } => Some("started"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["preparing", "creating", "started"]);

    fleet.shutdown().await;
    assert!(!redis.exists::<bool, _>(&key).await.unwrap());
    cleanup(&redis, &prefix).await;
}

#[tokio::test]
async fn agents_start_and_stop_without_redis() {
    let scratch = TempDir::new();
    let mut config = config(BackendKind::Dummy, &scratch);
    // Nothing listens there.
    config.redis.url = "redis://127.0.0.1:1".into();
    config.redis.shutdown_timeout_ms = 300;
    let fleet = Fleet::start(config).await.unwrap();
    let c = client(&fleet.endpoints()[0]);
    assert_eq!(c.health().await.unwrap().agent_id, fleet.agents()[0].id());
    let began = std::time::Instant::now();
    fleet.shutdown().await;
    assert!(began.elapsed() < Duration::from_secs(3));
}
