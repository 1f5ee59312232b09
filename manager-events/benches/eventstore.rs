//! `just bench-eventstore`: event store throughput and latency against a raw
//! PostgreSQL baseline measured in the same run, on the same (durable) server.
//!
//! 1. raw single-row INSERT commits/s into a plain table at 1, 8, 32 clients;
//! 2. single-event `append` calls/s at 1, 8, 32 concurrent callers;
//! 3. appends of 100 events per call, events/s (4 concurrent callers);
//! 4. subscription latency from append call to delivery at a steady 1,000
//!    events/s, p50 and p99, the subscriber on its own store (as another
//!    process would be), woken by NOTIFY.
//!
//! The last line is one JSON object with every figure.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use manager_events::testing::with_database;
use manager_events::{
    AppendBatch, EventStore, EventStoreConfig, ExpectedVersion, NewEvent, migrations,
};
use serde_json::json;

const PHASE: Duration = Duration::from_secs(4);
const CONCURRENCY: [usize; 3] = [1, 8, 32];

fn payload(n: u64) -> serde_json::Value {
    json!({ "n": n, "kind": "bench", "slots": { "cpu": "1", "mem": "1073741824" } })
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs `workers` loops of `op` for [`PHASE`] and returns completed ops per second.
async fn rate<F, Fut>(workers: usize, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !AtomicBool::load(&stop, Ordering::Relaxed) {
                    done.fetch_add(op(w, i).await, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(PHASE).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    AtomicU64::load(&done, Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let admin = std::env::var("MANAGER_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:8101/postgres".to_owned());
    let url = with_database(&admin, "bench_eventstore");
    {
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .expect("connect to the halfstack");
        diesel::sql_query("DROP DATABASE IF EXISTS bench_eventstore WITH (FORCE)")
            .execute(&mut conn)
            .await
            .unwrap();
        diesel::sql_query("CREATE DATABASE bench_eventstore")
            .execute(&mut conn)
            .await
            .unwrap();
        #[derive(diesel::QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Text)]
            v: String,
        }
        let s: Setting = diesel::sql_query(
            "SELECT current_setting('fsync') || '/' || current_setting('synchronous_commit') AS v",
        )
        .get_result(&mut conn)
        .await
        .unwrap();
        println!("server: fsync/synchronous_commit = {}", s.v);
        if s.v != "on/on" {
            println!(
                "WARNING: the server is not durable; run `halfstack/halfstack mode durable` for real figures"
            );
        }
    }
    migrations::run_pending(&url).await.unwrap();
    println!(
        "machine: {} cores; each phase runs {} s",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        PHASE.as_secs()
    );

    // 1. Baseline: raw single-row INSERT commits/s.
    {
        let mut conn = AsyncPgConnection::establish(&url).await.unwrap();
        diesel::sql_query("CREATE TABLE bench_plain (id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let mut insert = Vec::new();
    for &n in &CONCURRENCY {
        let conns: Vec<_> =
            futures::future::join_all((0..n).map(|_| AsyncPgConnection::establish(&url)))
                .await
                .into_iter()
                .map(|c| Arc::new(tokio::sync::Mutex::new(c.unwrap())))
                .collect();
        let conns = Arc::new(conns);
        let r = rate(n, move |w, i| {
            let conns = conns.clone();
            async move {
                let mut c = conns[w].lock().await;
                diesel::sql_query("INSERT INTO bench_plain (payload) VALUES ($1::jsonb)")
                    .bind::<diesel::sql_types::Text, _>(payload(i).to_string())
                    .execute(&mut *c)
                    .await
                    .unwrap();
                1
            }
        })
        .await;
        println!("insert  {n:>2} clients: {r:>9.0} commits/s");
        insert.push(r);
    }

    // 2. Single-event appends through the group-commit writer.
    let store = EventStore::connect(&url, 40, EventStoreConfig::default()).unwrap();
    let mut append = Vec::new();
    for &n in &CONCURRENCY {
        let s = store.clone();
        let r = rate(n, move |w, i| {
            let s = s.clone();
            async move {
                let batch = AppendBatch::single(
                    format!("bench-{n}-{w}"),
                    "bench",
                    ExpectedVersion::Exact(i),
                    vec![NewEvent::new("Appended", payload(i))],
                );
                s.append(batch).await.unwrap();
                1
            }
        })
        .await;
        println!(
            "append  {n:>2} callers: {r:>9.0} calls/s  ({:.2}x insert)",
            r / insert[append.len()]
        );
        append.push(r);
    }

    // 3. Batches of 100 events.
    let s = store.clone();
    let callers: usize = std::env::var("BENCH_BATCH_CALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let batched = rate(callers, move |w, i| {
        let s = s.clone();
        async move {
            let events = (0..100)
                .map(|k| NewEvent::new("Appended", payload(i * 100 + k)))
                .collect();
            s.append(AppendBatch::single(
                format!("batch-{w}"),
                "bench",
                ExpectedVersion::Any,
                events,
            ))
            .await
            .unwrap();
            100
        }
    })
    .await;
    println!("batched 100/call, {callers} callers: {batched:>9.0} events/s");

    // 4. Subscription latency at a steady 1,000 events/s.
    let reader = EventStore::connect(&url, 4, EventStoreConfig::default()).unwrap();
    let from = reader.head_position().await.unwrap();
    let mut sub = reader.subscribe(from);
    tokio::time::sleep(Duration::from_millis(300)).await; // let the listener LISTEN
    let total = 5_000u64;
    let producer = {
        let s = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut calls = Vec::new();
            for i in 0..total {
                tick.tick().await;
                let s = s.clone();
                calls.push(tokio::spawn(async move {
                    let e = NewEvent::new("Tick", json!({ "sent_us": now_micros() }));
                    s.append(AppendBatch::single(
                        format!("tick-{}", i % 16),
                        "bench",
                        ExpectedVersion::Any,
                        vec![e],
                    ))
                    .await
                    .unwrap();
                }));
            }
            for c in calls {
                c.await.unwrap();
            }
        })
    };
    let mut latencies = Vec::with_capacity(total as usize);
    while (latencies.len() as u64) < total {
        let e = sub.next().await.unwrap().unwrap();
        let sent = e.payload["sent_us"].as_u64().unwrap();
        latencies.push(now_micros().saturating_sub(sent) as f64 / 1000.0);
    }
    producer.await.unwrap();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (p50, p99) = (pct(0.50), pct(0.99));
    println!("subscription at 1,000 events/s: p50 {p50:.2} ms, p99 {p99:.2} ms");
    store.shutdown().await;

    let result = json!({
        "insert_1": insert[0].round(), "insert_8": insert[1].round(), "insert_32": insert[2].round(),
        "append_1": append[0].round(), "append_8": append[1].round(), "append_32": append[2].round(),
        "batched_events_per_s": batched.round(),
        "sub_p50_ms": (p50 * 100.0).round() / 100.0,
        "sub_p99_ms": (p99 * 100.0).round() / 100.0,
        "append_vs_insert_32": (append[2] / insert[2] * 100.0).round() / 100.0,
    });
    println!("{result}");
}
