//! Read-your-writes against a real database: waiting for the projections'
//! checkpoints, bounded, and ignoring positions the log never reached.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use manager_events::testing::TestDb;
use manager_events::{AppendBatch, EventStore, EventStoreConfig, ExpectedVersion, NewEvent};
use manager_query::freshness::Freshness;

async fn set_checkpoints(db: &TestDb, a: i64, b: i64) {
    db.connection()
        .await
        .batch_execute(&format!(
            "INSERT INTO projection_checkpoints (name, position) VALUES ('a', {a}), ('b', {b}) \
             ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_read_waits_for_the_slowest_projector_within_its_bound() {
    let db = TestDb::new().await;
    let store = EventStore::connect(&db.url, 4, EventStoreConfig::default()).unwrap();
    let events: Vec<NewEvent> = (0..10)
        .map(|i| NewEvent::new("Noted", serde_json::json!({ "i": i })))
        .collect();
    store
        .append(AppendBatch::new().stream("note-1", "note", ExpectedVersion::NoStream, events))
        .await
        .unwrap();
    set_checkpoints(&db, 10, 4).await;

    let freshness = Freshness::new(store.pool().clone(), Duration::from_millis(150));
    assert!(
        freshness.wait_for(4).await,
        "both projectors are at 4 or beyond"
    );
    let started = Instant::now();
    assert!(!freshness.wait_for(8).await, "projector b is behind: stale");
    assert!(started.elapsed() >= Duration::from_millis(150));

    // b catches up while a read waits: the read returns as soon as it has.
    let freshness = Freshness::new(store.pool().clone(), Duration::from_secs(10));
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        (freshness.wait_for(8).await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    set_checkpoints(&db, 10, 9).await;
    let (fresh, took) = waiting.await.unwrap();
    assert!(fresh && took < Duration::from_secs(5), "{took:?}");

    // A position beyond the log's head (a record from another database, say
    // after a restore) is not waited for.
    let freshness = Freshness::new(store.pool().clone(), Duration::from_secs(10));
    let started = Instant::now();
    assert!(freshness.wait_for(1_000).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    store.shutdown().await;
}
