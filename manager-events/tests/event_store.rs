//! The event store against a real PostgreSQL (the halfstack). Each test gets its
//! own database cloned from a migrated template.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::StreamExt;
use manager_events::config::Faults;
use manager_events::testing::TestDb;
use manager_events::{
    AppendBatch, ChainProblem, EventMetadata, EventStore, EventStoreConfig, EventStoreError,
    ExpectedVersion, InvalidAppend, NewEvent, RecordedEvent, Snapshot,
};
use serde_json::json;
use uuid::Uuid;

fn ev(n: u64) -> NewEvent {
    NewEvent::new("ThingHappened", json!({ "n": n }))
}

fn single(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendBatch {
    AppendBatch::single(stream, "thing", expected, events)
}

async fn all_events(store: &EventStore) -> Vec<RecordedEvent> {
    store.read_all(0, 1_000_000).await.unwrap()
}

#[tokio::test]
async fn expected_version_semantics() {
    let db = TestDb::new().await;
    let store = db.store().await;

    // NoStream creates; a second NoStream on the now existing stream conflicts.
    let r = store
        .append(single(
            "thing-1",
            ExpectedVersion::NoStream,
            vec![ev(1), ev(2)],
        ))
        .await
        .unwrap();
    assert_eq!((r.first_position, r.last_position), (1, 2));
    assert_eq!(r.streams[0].version, 2);
    let err = store
        .append(single("thing-1", ExpectedVersion::NoStream, vec![ev(3)]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EventStoreError::WrongExpectedVersion { stream_id, actual: 2, expected: ExpectedVersion::NoStream } if stream_id == "thing-1"),
        "{err:?}"
    );

    // Exact: stale fails naming the actual version; current succeeds.
    let err = store
        .append(single("thing-1", ExpectedVersion::Exact(1), vec![ev(3)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::WrongExpectedVersion { actual: 2, .. }),
        "{err:?}"
    );
    let err = store
        .append(single("thing-2", ExpectedVersion::Exact(1), vec![ev(3)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::WrongExpectedVersion { actual: 0, .. }),
        "{err:?}"
    );
    let r = store
        .append(single("thing-1", ExpectedVersion::Exact(2), vec![ev(3)]))
        .await
        .unwrap();
    assert_eq!(r.streams[0].version, 3);

    // Any appends whatever the version, to new and existing streams.
    store
        .append(single("thing-1", ExpectedVersion::Any, vec![ev(4)]))
        .await
        .unwrap();
    store
        .append(single("thing-2", ExpectedVersion::Any, vec![ev(5)]))
        .await
        .unwrap();

    let stream: Vec<u64> = store
        .read_stream("thing-1", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(stream, vec![1, 2, 3, 4]);
    let tail: Vec<u64> = store
        .read_stream("thing-1", 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(tail, vec![3, 4]);
    assert_eq!(store.stream_version("thing-1").await.unwrap(), 4);
    assert_eq!(store.stream_version("nothing").await.unwrap(), 0);
    assert_eq!(
        all_events(&store).await.len(),
        5,
        "the failed appends wrote nothing"
    );
}

#[tokio::test]
async fn a_stream_keeps_its_type() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store
        .append(single("x-1", ExpectedVersion::Any, vec![ev(1)]))
        .await
        .unwrap();
    let err = store
        .append(AppendBatch::single(
            "x-1",
            "other",
            ExpectedVersion::Any,
            vec![ev(2)],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EventStoreError::StreamTypeMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(store.stream_version("x-1").await.unwrap(), 1);
}

#[tokio::test]
async fn one_stale_stream_fails_the_whole_batch() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store
        .append(single("agent-1", ExpectedVersion::Any, vec![ev(1)]))
        .await
        .unwrap();

    // Session is new, agent is stale: nothing of the batch may land.
    let batch = AppendBatch::new()
        .stream(
            "session-1",
            "session",
            ExpectedVersion::NoStream,
            vec![ev(2), ev(3)],
        )
        .stream("agent-1", "thing", ExpectedVersion::Exact(0), vec![ev(4)]);
    let err = store.append(batch).await.unwrap_err();
    assert!(
        matches!(&err, EventStoreError::WrongExpectedVersion { stream_id, actual: 1, .. } if stream_id == "agent-1"),
        "{err:?}"
    );
    assert_eq!(store.stream_version("session-1").await.unwrap(), 0);
    assert_eq!(store.head_position().await.unwrap(), 1);

    // With the right version both streams land, in batch order, contiguously.
    let batch = AppendBatch::new()
        .stream(
            "session-1",
            "session",
            ExpectedVersion::NoStream,
            vec![ev(2), ev(3)],
        )
        .stream("agent-1", "thing", ExpectedVersion::Exact(1), vec![ev(4)]);
    let r = store.append(batch).await.unwrap();
    assert_eq!((r.first_position, r.last_position), (2, 4));
    let events = all_events(&store).await;
    let order: Vec<(&str, u64)> = events
        .iter()
        .map(|e| (e.stream_id.as_str(), e.stream_version))
        .collect();
    assert_eq!(
        order,
        vec![
            ("agent-1", 1),
            ("session-1", 1),
            ("session-1", 2),
            ("agent-1", 2)
        ]
    );
    assert_eq!(
        events[1].xact_id, events[3].xact_id,
        "one batch, one transaction"
    );

    // A stream with no events is a pure precondition: checked, not changed.
    let guarded = AppendBatch::new()
        .stream(
            "session-2",
            "session",
            ExpectedVersion::NoStream,
            vec![ev(5)],
        )
        .stream("agent-1", "thing", ExpectedVersion::Exact(1), vec![]);
    assert!(matches!(
        store.append(guarded).await,
        Err(EventStoreError::WrongExpectedVersion { .. })
    ));
    let guarded = AppendBatch::new()
        .stream(
            "session-2",
            "session",
            ExpectedVersion::NoStream,
            vec![ev(5)],
        )
        .stream("agent-1", "thing", ExpectedVersion::Exact(2), vec![]);
    let r = store.append(guarded).await.unwrap();
    assert_eq!(r.streams[1].version, 2, "the guard stream is unchanged");
    assert_eq!(store.stream_version("agent-1").await.unwrap(), 2);
}

#[tokio::test]
async fn idempotent_retry_returns_the_first_result_and_appends_nothing() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store
        .append(single("s-0", ExpectedVersion::Any, vec![ev(0)]))
        .await
        .unwrap();

    let batch =
        single("s-1", ExpectedVersion::NoStream, vec![ev(1), ev(2)]).with_idempotency_key("req-42");
    let first = store.append(batch.clone()).await.unwrap();
    assert!(!first.deduplicated);
    // The retry would conflict on its version if it were judged again.
    let retry = store.append(batch).await.unwrap();
    assert!(retry.deduplicated);
    assert_eq!(
        (retry.first_position, retry.last_position),
        (first.first_position, first.last_position)
    );
    assert_eq!(retry.streams, first.streams);
    assert_eq!(all_events(&store).await.len(), 3);

    // Concurrent retries with one key: exactly one append, one shared answer.
    let calls = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(
                    single("s-2", ExpectedVersion::Any, vec![ev(7)]).with_idempotency_key("req-43"),
                )
                .await
                .unwrap()
        })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(results.iter().filter(|r| !r.deduplicated).count(), 1);
    assert!(
        results
            .iter()
            .all(|r| r.first_position == results[0].first_position)
    );
    assert_eq!(store.stream_version("s-2").await.unwrap(), 1);
    let stored = store.read_stream("s-2", 0).await.unwrap();
    assert_eq!(
        stored[0].metadata.idempotency_key.as_deref(),
        Some("req-43")
    );
}

#[tokio::test]
async fn metadata_is_recorded() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let metadata = EventMetadata {
        actor_access_key: Some("AKIAIOSFODNN7EXAMPLE".into()),
        request_id: Some("req-1".into()),
        causation_id: Some(Uuid::new_v4()),
        correlation_id: Some(Uuid::new_v4()),
        idempotency_key: None,
    };
    let event = NewEvent::new(
        "SessionCreated",
        json!({"name": "s", "slots": {"cpu": "1"}}),
    )
    .with_schema_version(3);
    let id = event.event_id;
    store
        .append(
            AppendBatch::single(
                "session-1",
                "session",
                ExpectedVersion::NoStream,
                vec![event],
            )
            .with_metadata(metadata.clone()),
        )
        .await
        .unwrap();
    let got = &store.read_stream("session-1", 0).await.unwrap()[0];
    assert_eq!(got.metadata, metadata);
    assert_eq!(got.event_id, id);
    assert_eq!(got.schema_version, 3);
    assert_eq!(got.event_type, "SessionCreated");
    assert_eq!(got.payload, json!({"name": "s", "slots": {"cpu": "1"}}));
    assert!(got.xact_id > 0);
}

#[tokio::test]
async fn invalid_batches_get_typed_errors_and_write_nothing() {
    let db = TestDb::new().await;
    let store = db
        .store_with(EventStoreConfig {
            max_payload_bytes: 1024,
            max_events_per_append: 10,
            ..Default::default()
        })
        .await;
    let cases = vec![
        (AppendBatch::new(), "empty"),
        (single("s-1", ExpectedVersion::Any, vec![]), "no events"),
        (
            single(
                "s-1",
                ExpectedVersion::Any,
                vec![NewEvent::new("Big", json!("x".repeat(2000)))],
            ),
            "oversize",
        ),
        (
            single("bad id", ExpectedVersion::Any, vec![ev(1)]),
            "stream id",
        ),
        (
            single("../etc", ExpectedVersion::Any, vec![ev(1)]),
            "stream id",
        ),
        (
            single("s-1", ExpectedVersion::Any, vec![ev(1); 11]),
            "batch size",
        ),
    ];
    for (batch, what) in cases {
        let err = store.append(batch).await.unwrap_err();
        let EventStoreError::Invalid(kind) = err else {
            panic!("{what}: {err:?}")
        };
        match what {
            "empty" | "no events" => assert_eq!(kind, InvalidAppend::EmptyBatch),
            "oversize" => assert!(
                matches!(kind, InvalidAppend::PayloadTooLarge { limit: 1024, .. }),
                "{kind:?}"
            ),
            "stream id" => assert!(matches!(kind, InvalidAppend::StreamId { .. }), "{kind:?}"),
            _ => assert!(
                matches!(
                    kind,
                    InvalidAppend::BatchTooLarge {
                        events: 11,
                        limit: 10
                    }
                ),
                "{kind:?}"
            ),
        }
    }
    assert_eq!(store.head_position().await.unwrap(), 0);
    assert!(all_events(&store).await.is_empty());
}

/// Many writers (separate stores, as separate manager processes would be), each
/// with random delays inside its transactions, and one live subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_make_a_subscriber_skip_or_repeat() {
    const WRITERS: u64 = 16;
    const APPENDS: u64 = 2_000;
    let db = TestDb::new().await;
    let reader = db.store().await;
    let mut subscription = reader.subscribe(0);
    let collector = tokio::spawn(async move {
        let mut seen = Vec::with_capacity((WRITERS * APPENDS) as usize);
        while (seen.len() as u64) < WRITERS * APPENDS {
            let event = tokio::time::timeout(Duration::from_secs(60), subscription.next())
                .await
                .expect("the subscriber stalled")
                .expect("the subscription ended")
                .expect("a read failed");
            seen.push(event);
        }
        seen
    });

    let faults = Faults {
        max_delay_in_transaction: Some(Duration::from_millis(4)),
        delay_share: 0.1,
    };
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = db
            .store_with(EventStoreConfig {
                faults: faults.clone(),
                ..Default::default()
            })
            .await;
        writers.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                // Each writer owns a stream and checks its version: no conflicts expected.
                store
                    .append(single(
                        &format!("w-{w}"),
                        ExpectedVersion::Exact(i),
                        vec![ev(i)],
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let seen = collector.await.unwrap();

    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    let expected: Vec<u64> = (1..=WRITERS * APPENDS).collect();
    assert!(
        positions == expected,
        "positions are not exactly 1..=N in order"
    );
    let all = all_events(&reader).await;
    assert_eq!(all.len(), seen.len());
    assert!(
        all.iter().zip(&seen).all(|(a, b)| a == b),
        "the subscription differs from read_all"
    );
    // Each writer's events in its own order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in &seen {
        let v = last.entry(&e.stream_id).or_default();
        assert_eq!(e.stream_version, *v + 1);
        *v += 1;
    }
    assert!(reader.verify_chain().await.unwrap().is_intact());
}

#[tokio::test]
async fn a_conflicting_call_fails_alone_in_its_group() {
    let db = TestDb::new().await;
    // Every transaction sleeps while holding the lock, so calls made meanwhile
    // queue up and are committed together as one group.
    let faults = Faults {
        max_delay_in_transaction: Some(Duration::from_millis(400)),
        delay_share: 1.0,
    };
    let store = db
        .store_with(EventStoreConfig {
            faults,
            ..Default::default()
        })
        .await;
    store
        .append(single("c-0", ExpectedVersion::Any, vec![ev(0)]))
        .await
        .unwrap();

    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(single("blocker", ExpectedVersion::Any, vec![ev(0)]))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            // Call 3 expects a version c-0 is not at.
            let expected = if i == 3 {
                ExpectedVersion::Exact(7)
            } else {
                ExpectedVersion::Any
            };
            let stream = if i == 3 {
                "c-0".to_owned()
            } else {
                format!("c-{}", i + 1)
            };
            tokio::spawn(async move { store.append(single(&stream, expected, vec![ev(i)])).await })
        })
        .collect();
    blocker.await.unwrap().unwrap();
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(
                    r,
                    Err(EventStoreError::WrongExpectedVersion { actual: 1, .. })
                ),
                "{r:?}"
            );
        } else {
            assert!(r.is_ok(), "call {i}: {r:?}");
        }
    }
    let landed: Vec<RecordedEvent> = all_events(&store)
        .await
        .into_iter()
        .filter(|e| e.stream_id != "c-0" && e.stream_id != "blocker")
        .collect();
    assert_eq!(landed.len(), 7);
    let xacts: HashSet<u64> = landed.iter().map(|e| e.xact_id).collect();
    assert_eq!(
        xacts.len(),
        1,
        "the neighbours were committed in one transaction"
    );
    let positions: Vec<u64> = landed.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (3..=9).collect::<Vec<_>>(),
        "dense despite the refused call"
    );
    assert!(store.verify_chain().await.unwrap().is_intact());
}

#[tokio::test]
async fn a_restarted_subscriber_resumes_from_its_checkpoint() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for i in 0..50 {
        store
            .append(single(
                &format!("s-{}", i % 5),
                ExpectedVersion::Any,
                vec![ev(i)],
            ))
            .await
            .unwrap();
    }
    let mut checkpoint = 0;
    let mut seen = Vec::new();
    {
        let mut sub = store.subscribe(checkpoint);
        for _ in 0..20 {
            let e = sub.next().await.unwrap().unwrap();
            checkpoint = e.position;
            seen.push(e.position);
        }
    } // killed
    for i in 50..80 {
        store
            .append(single("s-late", ExpectedVersion::Any, vec![ev(i)]))
            .await
            .unwrap();
    }
    let other = db.store().await; // a new process, as after a restart
    let mut sub = other.subscribe(checkpoint);
    while seen.len() < 80 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(e.position);
    }
    assert_eq!(seen, (1..=80).collect::<Vec<_>>());
    // Nothing more arrives, and a new append does.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err()
    );
    store
        .append(single("s-last", ExpectedVersion::Any, vec![ev(0)]))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.position, 81);
}

#[tokio::test]
async fn subscribers_are_woken_across_processes_and_by_polling_alone() {
    let db = TestDb::new().await;
    let writer = db.store().await;
    // Woken by NOTIFY from another store (another process): the poll interval
    // is an hour, so only the notification can deliver within the timeout.
    let notified = db
        .store_with(EventStoreConfig {
            poll_interval_ms: 3_600_000,
            ..Default::default()
        })
        .await;
    // No LISTEN at all: polling every 50 ms must still deliver.
    let polling = db
        .store_with(EventStoreConfig {
            listen: false,
            poll_interval_ms: 50,
            ..Default::default()
        })
        .await;
    let mut a = notified.subscribe(0);
    let mut b = polling.subscribe(0);
    // Give the listener time to LISTEN before the append.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer
        .append(single("s-1", ExpectedVersion::Any, vec![ev(1)]))
        .await
        .unwrap();
    for sub in [&mut a, &mut b] {
        let e = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.position, 1);
    }
}

#[tokio::test]
async fn one_notify_per_append_transaction() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let mut listener = diesel_async::AsyncPgConnection::establish(&db.url)
        .await
        .unwrap();
    diesel::sql_query("LISTEN event_log")
        .execute(&mut listener)
        .await
        .unwrap();
    let hundred: Vec<NewEvent> = (0..100).map(ev).collect();
    store
        .append(single("many", ExpectedVersion::Any, hundred))
        .await
        .unwrap();
    store
        .append(single("one", ExpectedVersion::Any, vec![ev(0)]))
        .await
        .unwrap();
    let mut payloads = Vec::new();
    let mut notes = std::pin::pin!(listener.notifications_stream());
    while payloads.last().map(String::as_str) != Some("101") {
        let n = tokio::time::timeout(Duration::from_secs(5), notes.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        payloads.push(n.payload);
    }
    assert_eq!(
        payloads,
        vec!["100", "101"],
        "one NOTIFY per transaction, carrying the head"
    );
}

#[tokio::test]
async fn the_log_is_immutable_and_tampering_is_detected() {
    let db = TestDb::new().await;
    let store = db.store().await;
    for i in 0..30 {
        store
            .append(
                single(
                    &format!("s-{}", i % 3),
                    ExpectedVersion::Any,
                    vec![ev(i), ev(i + 100)],
                )
                .with_idempotency_key(format!("k-{i}")),
            )
            .await
            .unwrap();
    }
    let report = store.verify_chain().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.verified, report.head_position), (60, 60));

    let mut conn = db.connection().await;
    for sql in [
        "UPDATE events SET payload = '{\"n\": 999}' WHERE position = 5",
        "DELETE FROM events WHERE position = 60",
        "TRUNCATE events",
        "UPDATE event_idempotency SET result = '{}'",
        "DELETE FROM event_idempotency",
    ] {
        let err = diesel::sql_query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(all_events(&store).await.len(), 60);

    // With the guard disabled, an edit of one payload is found by the verifier.
    diesel::sql_query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("UPDATE events SET payload = '{\"n\":999}' WHERE position = 17")
        .execute(&mut conn)
        .await
        .unwrap();
    let report = store.verify_chain().await.unwrap();
    assert_eq!(
        report.problem,
        Some(ChainProblem::HashMismatch { position: 17 })
    );
    assert_eq!(report.verified, 16);

    // So are a deleted row and a removed tail (each on a fresh copy of the story).
    let db2 = TestDb::new().await;
    let store2 = db2.store().await;
    for i in 0..10 {
        store2
            .append(single("s", ExpectedVersion::Any, vec![ev(i)]))
            .await
            .unwrap();
    }
    let mut conn2 = db2.connection().await;
    diesel::sql_query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&mut conn2)
        .await
        .unwrap();
    diesel::sql_query("DELETE FROM events WHERE position = 10")
        .execute(&mut conn2)
        .await
        .unwrap();
    let report = store2.verify_chain().await.unwrap();
    assert_eq!(
        report.problem,
        Some(ChainProblem::HeadMismatch {
            head_position: 10,
            last_position: 9
        })
    );
    diesel::sql_query("DELETE FROM events WHERE position = 4")
        .execute(&mut conn2)
        .await
        .unwrap();
    let report = store2.verify_chain().await.unwrap();
    assert_eq!(
        report.problem,
        Some(ChainProblem::Gap {
            expected: 4,
            found: 5
        })
    );
}

#[tokio::test]
async fn snapshots_save_and_load() {
    let db = TestDb::new().await;
    let store = db.store().await;
    assert_eq!(store.load_snapshot("agg-1").await.unwrap(), None);
    store
        .append(single(
            "agg-1",
            ExpectedVersion::Any,
            (0..5).map(ev).collect(),
        ))
        .await
        .unwrap();
    let snap = |v: u64| Snapshot {
        stream_id: "agg-1".into(),
        stream_type: "thing".into(),
        stream_version: v,
        schema_version: 1,
        state: json!({ "sum_at": v }),
        taken_at: None,
    };
    store.save_snapshot(&snap(3)).await.unwrap();
    let loaded = store.load_snapshot("agg-1").await.unwrap().unwrap();
    assert_eq!(
        (loaded.stream_version, loaded.state.clone()),
        (3, json!({"sum_at": 3}))
    );
    assert!(loaded.taken_at.is_some());
    // Loading an aggregate: the snapshot, then only the events after it.
    let rest = store
        .read_stream("agg-1", loaded.stream_version)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![4, 5]
    );

    store.save_snapshot(&snap(5)).await.unwrap();
    store.save_snapshot(&snap(2)).await.unwrap(); // older: ignored
    assert_eq!(
        store
            .load_snapshot("agg-1")
            .await
            .unwrap()
            .unwrap()
            .stream_version,
        5
    );
    let err = store.save_snapshot(&snap(6)).await.unwrap_err();
    assert!(
        matches!(
            err,
            EventStoreError::SnapshotAheadOfStream {
                version: 6,
                actual: 5,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn shutdown_finishes_queued_appends_then_refuses() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(single("s", ExpectedVersion::Any, vec![ev(i)]))
                    .await
            })
        })
        .collect();
    let results = futures::future::join_all(calls).await;
    store.shutdown().await;
    let landed = results
        .into_iter()
        .filter(|r| matches!(r, Ok(Ok(_))))
        .count() as u64;
    assert_eq!(store.head_position().await.unwrap(), landed);
    let err = store
        .append(single("s", ExpectedVersion::Any, vec![ev(0)]))
        .await
        .unwrap_err();
    assert!(matches!(err, EventStoreError::ShuttingDown));
}

#[tokio::test]
async fn a_stalled_transaction_holding_the_lock_is_cut_off() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new().await;
    let stalled = db
        .store_with(EventStoreConfig {
            idle_in_transaction_ms: 300,
            ..Default::default()
        })
        .await;
    // A process that takes the ordering lock and then hangs.
    let mut conn = stalled.pool().get().await.unwrap();
    conn.batch_execute("BEGIN; SELECT 1 FROM event_log_head FOR UPDATE;")
        .await
        .unwrap();

    let other = db.store().await;
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        other.append(single("s-1", ExpectedVersion::Any, vec![ev(1)])),
    )
    .await
    .expect("the stalled transaction was never cut off")
    .unwrap();
    assert_eq!(r.first_position, 1);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the append did wait for the lock"
    );
    // The stalled session was ended by the server.
    assert!(conn.batch_execute("SELECT 1").await.is_err());
}

#[tokio::test]
async fn a_pure_check_does_not_create_its_stream_for_the_rest_of_the_group() {
    let db = TestDb::new().await;
    let faults = Faults {
        max_delay_in_transaction: Some(Duration::from_millis(400)),
        delay_share: 1.0,
    };
    let store = db
        .store_with(EventStoreConfig {
            faults,
            ..Default::default()
        })
        .await;
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append(single("blocker", ExpectedVersion::Any, vec![ev(0)]))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the blocker, so judged in one group: A only checks "x";
    // B then creates "x" with another type, which nothing has claimed.
    let a = AppendBatch::new()
        .stream("x", "thing", ExpectedVersion::NoStream, vec![])
        .stream("y", "thing", ExpectedVersion::Any, vec![ev(1)]);
    let b = AppendBatch::single("x", "other", ExpectedVersion::NoStream, vec![ev(2)]);
    let (ra, rb) = tokio::join!(store.append(a), store.append(b));
    blocker.await.unwrap().unwrap();
    assert_eq!(ra.unwrap().streams[0].version, 0);
    rb.unwrap();
    let x = store.read_stream("x", 0).await.unwrap();
    assert_eq!((x.len(), x[0].stream_type.as_str()), (1, "other"));
    let y = store.read_stream("y", 0).await.unwrap();
    assert_eq!(
        x[0].xact_id, y[0].xact_id,
        "both calls were judged in one group"
    );
}

#[tokio::test]
async fn a_transaction_that_cannot_get_the_lock_times_out_and_the_writer_carries_on() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new().await;
    // Someone holds the ordering lock and does not let go (for now).
    let mut blocker = db.connection().await;
    blocker
        .batch_execute("BEGIN; SELECT 1 FROM event_log_head FOR UPDATE;")
        .await
        .unwrap();

    let store = db
        .store_with(EventStoreConfig {
            transaction_timeout_ms: 300,
            ..Default::default()
        })
        .await;
    let started = std::time::Instant::now();
    let err = store
        .append(single("s-1", ExpectedVersion::Any, vec![ev(1)]))
        .await
        .unwrap_err();
    assert!(matches!(err, EventStoreError::Timeout(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up in bounded time"
    );

    blocker.batch_execute("ROLLBACK").await.unwrap();
    let r = store
        .append(single("s-1", ExpectedVersion::Any, vec![ev(2)]))
        .await
        .unwrap();
    assert_eq!(
        r.first_position, 1,
        "the timed-out append wrote nothing; the writer works again"
    );
}
