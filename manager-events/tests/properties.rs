//! Model-based property tests of the event store against a real PostgreSQL (the
//! halfstack).
//!
//! - `appends_match_the_model`: random sequences of multi-stream append batches
//!   (expected versions that sometimes hold and sometimes do not, empty streams,
//!   empty batches, idempotency keys that get reused) run against the store and
//!   against a simple in-memory model of the documented semantics; after every
//!   call the verdict is compared, and after every case the whole log, every
//!   stream and the hash chain are.
//! - `concurrent_appends_have_one_winner_per_stream_and_key`: random sets of
//!   appends launched at once, several racing to create the same stream or to
//!   use the same idempotency key: exactly one per stream appends and the others
//!   get `WrongExpectedVersion`, exactly one per key appends and the others get
//!   its result back, and the positions of the appends tile the log densely.
//!
//! proptest's test closure is synchronous, so each test builds its own tokio
//! runtime and one database, and runs every case inside it with `block_on`.
//! Cases share the database; each case prefixes its stream ids and idempotency
//! keys with its own number, and starts its model from the log's current head.
//! `PROPTEST_CASES` overrides the number of cases.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use manager_events::config::Faults;
use manager_events::testing::TestDb;
use manager_events::{
    AppendBatch, AppendResult, EventStore, EventStoreConfig, EventStoreError, ExpectedVersion,
    InvalidAppend, NewEvent, RecordedEvent, StreamAppended,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestCaseResult, TestRunner};
use serde_json::{Value, json};
use uuid::Uuid;

/// Streams a case picks from: few, so that batches often collide.
const STREAMS: u8 = 4;
/// Idempotency keys a case picks from: few, so that retries happen.
const KEYS: u8 = 3;
/// The stream type of every stream here.
const STREAM_TYPE: &str = "thing";
/// More than the log will ever hold in these tests.
const ALL: usize = 1 << 30;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build the tokio runtime")
}

/// `default` cases unless `PROPTEST_CASES` says otherwise; no persistence file
/// (the runner is used directly, outside the `proptest!` macro).
fn runner(default: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Fails the case when a store call that must not fail does.
fn ok<T>(what: &str, r: Result<T, EventStoreError>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))
}

// ---------------------------------------------------------------------------
// Sequential appends against the model
// ---------------------------------------------------------------------------

/// An expected version, relative to the stream's version in the model when the
/// operation runs (so that shrinking keeps hits hits and misses misses).
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    NoStream,
    /// `Exact(current + offset)`, offset in -1..=1 (saturating at 0).
    Exact(i8),
}

impl Expect {
    fn resolve(self, current: u64) -> ExpectedVersion {
        match self {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::Exact(offset) => {
                ExpectedVersion::Exact(current.saturating_add_signed(i64::from(offset)))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct StreamOp {
    /// Index into the case's stream pool.
    stream: u8,
    expect: Expect,
    /// Each event's schema version and free-form text; may be empty (a pure check).
    events: Vec<(u32, String)>,
}

#[derive(Debug, Clone)]
struct Op {
    /// 1–3 distinct streams, in batch order.
    streams: Vec<StreamOp>,
    /// Index into the case's key pool.
    key: Option<u8>,
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        2 => Just(Expect::Any),
        1 => Just(Expect::NoStream),
        4 => Just(Expect::Exact(0)),
        1 => Just(Expect::Exact(-1)),
        1 => Just(Expect::Exact(1)),
    ]
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..6).prop_map(|c| c.into_iter().collect())
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let pool: Vec<u8> = (0..STREAMS).collect();
    let ids = prop::sample::subsequence(pool, 1..=3).prop_shuffle();
    let shapes = prop::collection::vec(
        (
            expect_strategy(),
            prop::collection::vec((1u32..=3, text_strategy()), 0..=3),
        ),
        3,
    );
    let key = prop::option::weighted(0.4, 0..KEYS);
    (ids, shapes, key).prop_map(|(ids, shapes, key)| Op {
        streams: ids
            .into_iter()
            .zip(shapes)
            .map(|(stream, (expect, events))| StreamOp {
                stream,
                expect,
                events,
            })
            .collect(),
        key,
    })
}

/// An event as the model expects to read it back.
#[derive(Debug, Clone)]
struct ModelEvent {
    position: u64,
    stream_id: String,
    stream_version: u64,
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    payload: Value,
    idempotency_key: Option<String>,
}

/// What the store should hold after the operations of one case.
#[derive(Debug, Default)]
struct Model {
    head: u64,
    /// Each stream's events, in version order (the version is the length).
    streams: BTreeMap<String, Vec<ModelEvent>>,
    /// The first result of each accepted idempotency key.
    keys: HashMap<String, AppendResult>,
    /// Events appended during the case, in position order.
    log: Vec<ModelEvent>,
}

impl Model {
    fn version(&self, stream_id: &str) -> u64 {
        self.streams.get(stream_id).map_or(0, |e| e.len() as u64)
    }
}

/// How often each rule decided a verdict over a run: a generator that stopped
/// reaching one of them would make the property vacuous.
#[derive(Debug, Default)]
struct Coverage {
    empty: u64,
    appended: u64,
    /// Accepted batches with a stream given no events (a pure version check).
    with_pure_check: u64,
    deduplicated: u64,
    /// Deduplicated although a stream's expectation no longer holds: the key
    /// is checked before the versions.
    deduplicated_while_stale: u64,
    conflicts: u64,
    /// Conflicts with more than one stale stream: the first must be named.
    conflicts_with_several_stale: u64,
    /// Conflicts where an earlier stream of the batch was fine.
    conflicts_not_on_the_first_stream: u64,
}

/// What the model says one append must return.
#[derive(Debug)]
enum Verdict {
    Empty,
    Accepted(AppendResult),
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: u64,
    },
}

fn stream_id(case: u64, index: u8) -> String {
    format!("p{case}-s{index}")
}

/// Builds the batch for `op`, predicts its verdict and applies it to `model`.
fn plan(
    case: u64,
    index: usize,
    op: &Op,
    model: &mut Model,
    seen: &mut Coverage,
) -> (AppendBatch, Verdict) {
    let key = op.key.map(|k| format!("p{case}-k{k}"));
    let mut batch = AppendBatch::new();
    // (stream id, resolved expectation, events) in batch order.
    let mut parts: Vec<(String, ExpectedVersion, Vec<NewEvent>)> = Vec::new();
    for s in &op.streams {
        let id = stream_id(case, s.stream);
        let expected = s.expect.resolve(model.version(&id));
        let events: Vec<NewEvent> = s
            .events
            .iter()
            .enumerate()
            .map(|(j, (schema_version, text))| NewEvent {
                event_id: Uuid::new_v4(),
                event_type: format!("Op{index}.Happened"),
                schema_version: *schema_version,
                payload: json!({ "case": case, "op": index, "stream": s.stream, "n": j, "text": text }),
            })
            .collect();
        batch = batch.stream(id.clone(), STREAM_TYPE, expected, events.clone());
        parts.push((id, expected, events));
    }
    if let Some(key) = &key {
        batch = batch.with_idempotency_key(key.clone());
    }

    // 1. An empty batch is refused before anything else.
    if parts.iter().all(|(_, _, events)| events.is_empty()) {
        seen.empty += 1;
        return (batch, Verdict::Empty);
    }
    let stale: Vec<usize> = parts
        .iter()
        .enumerate()
        .filter(|(_, (id, expected, _))| !expected.admits(model.version(id)))
        .map(|(i, _)| i)
        .collect();
    // 2. A key seen before returns its first result, whatever the versions.
    if let Some(first) = key.as_ref().and_then(|k| model.keys.get(k)) {
        seen.deduplicated += 1;
        seen.deduplicated_while_stale += u64::from(!stale.is_empty());
        let result = AppendResult {
            deduplicated: true,
            ..first.clone()
        };
        return (batch, Verdict::Accepted(result));
    }
    // 3. The first stream (in batch order) not at its expected version fails all.
    if let Some(&first_stale) = stale.first() {
        seen.conflicts += 1;
        seen.conflicts_with_several_stale += u64::from(stale.len() > 1);
        seen.conflicts_not_on_the_first_stream += u64::from(first_stale > 0);
        let (id, expected, _) = &parts[first_stale];
        let verdict = Verdict::Conflict {
            stream_id: id.clone(),
            // `Exact(0)` is reported as what it means.
            expected: match expected {
                ExpectedVersion::Exact(0) => ExpectedVersion::NoStream,
                other => *other,
            },
            actual: model.version(id),
        };
        return (batch, verdict);
    }
    // 4. Everything is appended, contiguously, in batch order.
    seen.appended += 1;
    seen.with_pure_check += u64::from(parts.iter().any(|(_, _, events)| events.is_empty()));
    let first_position = model.head + 1;
    let mut appended = Vec::new();
    for (id, _, events) in parts {
        let stream = model.streams.entry(id.clone()).or_default();
        for event in events {
            model.head += 1;
            let recorded = ModelEvent {
                position: model.head,
                stream_id: id.clone(),
                stream_version: stream.len() as u64 + 1,
                event_id: event.event_id,
                event_type: event.event_type,
                schema_version: event.schema_version,
                payload: event.payload,
                idempotency_key: key.clone(),
            };
            stream.push(recorded.clone());
            model.log.push(recorded);
        }
        appended.push(StreamAppended {
            stream_id: id,
            version: stream.len() as u64,
        });
    }
    let result = AppendResult {
        first_position,
        last_position: model.head,
        streams: appended,
        deduplicated: false,
    };
    if let Some(key) = key {
        model.keys.insert(key, result.clone());
    }
    (batch, Verdict::Accepted(result))
}

fn check_verdict(
    what: &str,
    verdict: &Verdict,
    got: &Result<AppendResult, EventStoreError>,
) -> TestCaseResult {
    match (verdict, got) {
        (Verdict::Empty, Err(EventStoreError::Invalid(InvalidAppend::EmptyBatch))) => Ok(()),
        (Verdict::Accepted(want), Ok(got)) => {
            prop_assert_eq!(want, got, "{}", what);
            Ok(())
        }
        (
            Verdict::Conflict {
                stream_id,
                expected,
                actual,
            },
            Err(EventStoreError::WrongExpectedVersion {
                stream_id: got_stream,
                expected: got_expected,
                actual: got_actual,
            }),
        ) => {
            prop_assert_eq!(
                (stream_id, expected, actual),
                (got_stream, got_expected, got_actual),
                "{}: the conflict must name the first stale stream",
                what
            );
            Ok(())
        }
        (want, got) => Err(TestCaseError::fail(format!(
            "{what}: the model expects {want:?}, the store returned {got:?}"
        ))),
    }
}

fn check_event(what: &str, want: &ModelEvent, got: &RecordedEvent) -> TestCaseResult {
    prop_assert_eq!(want.position, got.position, "{}: position", what);
    prop_assert_eq!(&want.stream_id, &got.stream_id, "{}: stream", what);
    prop_assert_eq!(
        STREAM_TYPE,
        got.stream_type.as_str(),
        "{}: stream type",
        what
    );
    prop_assert_eq!(want.stream_version, got.stream_version, "{}: version", what);
    prop_assert_eq!(want.event_id, got.event_id, "{}: event id", what);
    prop_assert_eq!(&want.event_type, &got.event_type, "{}: event type", what);
    prop_assert_eq!(
        want.schema_version,
        got.schema_version,
        "{}: schema version",
        what
    );
    prop_assert_eq!(&want.payload, &got.payload, "{}: payload", what);
    prop_assert_eq!(
        &want.idempotency_key,
        &got.metadata.idempotency_key,
        "{}: idempotency key",
        what
    );
    Ok(())
}

async fn run_sequence(
    store: &EventStore,
    case: u64,
    ops: &[Op],
    coverage: &Mutex<Coverage>,
) -> TestCaseResult {
    let start = ok("head_position", store.head_position().await)?;
    let mut model = Model {
        head: start,
        ..Model::default()
    };
    for (i, op) in ops.iter().enumerate() {
        let (batch, verdict) = plan(case, i, op, &mut model, &mut coverage.lock().unwrap());
        let got = store.append(batch).await;
        check_verdict(&format!("op {i} ({op:?})"), &verdict, &got)?;
        // Refused, empty and deduplicated calls write nothing; accepted ones
        // move the head by exactly their events.
        let head = ok("head_position", store.head_position().await)?;
        prop_assert_eq!(head, model.head, "head after op {} ({:?})", i, op);
    }

    // The whole log: positions 1..=head, and this case's part as modelled.
    prop_assert_eq!(
        ok("head_position", store.head_position().await)?,
        model.head
    );
    let all = ok("read_all", store.read_all(0, ALL).await)?;
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    prop_assert_eq!(positions, (1..=model.head).collect::<Vec<_>>(), "dense log");
    let mine = &all[usize::try_from(start).unwrap()..];
    prop_assert_eq!(mine.len(), model.log.len(), "events appended by the case");
    for (want, got) in model.log.iter().zip(mine) {
        check_event("read_all", want, got)?;
    }
    let tail = ok("read_all", store.read_all(start, ALL).await)?;
    prop_assert_eq!(tail.len(), model.log.len(), "read_all after the start");

    // Every stream of the pool, touched or not.
    for index in 0..STREAMS {
        let id = stream_id(case, index);
        let want = model
            .streams
            .get(&id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let got = ok("read_stream", store.read_stream(&id, 0).await)?;
        let versions: Vec<u64> = got.iter().map(|e| e.stream_version).collect();
        prop_assert_eq!(
            versions,
            (1..=want.len() as u64).collect::<Vec<_>>(),
            "versions of {}",
            &id
        );
        for (w, g) in want.iter().zip(&got) {
            check_event(&format!("read_stream {id}"), w, g)?;
        }
        prop_assert_eq!(
            ok("stream_version", store.stream_version(&id).await)?,
            want.len() as u64,
            "stream_version of {}",
            &id
        );
        if want.len() > 1 {
            let after = ok("read_stream", store.read_stream(&id, 1).await)?;
            prop_assert_eq!(
                after.len(),
                want.len() - 1,
                "read_stream after 1 of {}",
                &id
            );
        }
    }

    let report = ok("verify_chain", store.verify_chain().await)?;
    prop_assert!(report.is_intact(), "chain: {:?}", report);
    prop_assert_eq!(report.head_position, model.head);
    prop_assert_eq!(report.verified, model.head);
    Ok(())
}

#[test]
fn appends_match_the_model() {
    let rt = runtime();
    let db = rt.block_on(TestDb::new());
    let store = rt.block_on(db.store());
    let cases = AtomicU64::new(0);
    let coverage = Mutex::new(Coverage::default());
    let strategy = prop::collection::vec(op_strategy(), 1..=40);
    let mut runner = runner(64);
    let planned = runner.config().cases;
    let result = runner.run(&strategy, |ops| {
        let case = cases.fetch_add(1, Ordering::Relaxed);
        rt.block_on(run_sequence(&store, case, &ops, &coverage))
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let c = coverage.into_inner().unwrap();
    eprintln!("appends_match_the_model: {planned} cases, {c:?}");
    if planned >= 32 {
        let reached = [
            c.empty,
            c.appended,
            c.with_pure_check,
            c.deduplicated,
            c.deduplicated_while_stale,
            c.conflicts,
            c.conflicts_with_several_stale,
            c.conflicts_not_on_the_first_stream,
        ];
        assert!(
            reached.iter().all(|&n| n > 0),
            "a rule was never exercised: {c:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Concurrent races
// ---------------------------------------------------------------------------

/// Streams the concurrent calls race to create.
const CONTENDED: u8 = 3;
/// Idempotency keys the concurrent calls race to use.
const RACED_KEYS: u8 = 2;

#[derive(Debug, Clone)]
enum Call {
    /// Create one of the contended streams (`NoStream` or `Exact(0)`).
    Create {
        stream: u8,
        exact_zero: bool,
        events: usize,
    },
    /// Append with `Any` to a stream of its own: never conflicts.
    Free { events: usize },
    /// Append with `Any` to a stream of its own, under one of the contended
    /// idempotency keys: the first call of each key appends, the others are
    /// deduplicated.
    Retry { key: u8, events: usize },
}

fn call_strategy() -> impl Strategy<Value = Call> {
    prop_oneof![
        4 => (0..CONTENDED, any::<bool>(), 1usize..=3).prop_map(|(stream, exact_zero, events)| {
            Call::Create { stream, exact_zero, events }
        }),
        1 => (1usize..=3).prop_map(|events| Call::Free { events }),
        2 => (0..RACED_KEYS, 1usize..=3).prop_map(|(key, events)| Call::Retry { key, events }),
    ]
}

impl Call {
    fn events(&self) -> usize {
        match self {
            Call::Create { events, .. } | Call::Free { events } | Call::Retry { events, .. } => {
                *events
            }
        }
    }

    fn stream_id(&self, case: u64, index: usize) -> String {
        match self {
            Call::Create { stream, .. } => format!("c{case}-s{stream}"),
            Call::Free { .. } | Call::Retry { .. } => format!("c{case}-own{index}"),
        }
    }

    fn key(&self, case: u64) -> Option<String> {
        match self {
            Call::Retry { key, .. } => Some(format!("c{case}-k{key}")),
            _ => None,
        }
    }

    fn expected(&self) -> ExpectedVersion {
        match self {
            Call::Create {
                exact_zero: true, ..
            } => ExpectedVersion::Exact(0),
            Call::Create { .. } => ExpectedVersion::NoStream,
            Call::Free { .. } | Call::Retry { .. } => ExpectedVersion::Any,
        }
    }
}

/// Races lost over a run, to show that the property is not vacuous.
#[derive(Debug, Default)]
struct Races {
    conflicts: AtomicU64,
    deduplicated: AtomicU64,
    /// Cases where calls were committed together by the group-commit writer.
    grouped: AtomicU64,
}

async fn run_concurrently(
    store: &EventStore,
    case: u64,
    calls: &[Call],
    races: &Races,
) -> TestCaseResult {
    let start = ok("head_position", store.head_position().await)?;
    let tasks: Vec<_> = calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let store = store.clone();
            let events = (0..call.events())
                .map(|n| NewEvent::new("Raced", json!({ "call": i, "n": n })))
                .collect();
            let mut batch = AppendBatch::single(
                call.stream_id(case, i),
                STREAM_TYPE,
                call.expected(),
                events,
            );
            if let Some(key) = call.key(case) {
                batch = batch.with_idempotency_key(key);
            }
            tokio::spawn(async move { store.append(batch).await })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("the append task panicked"));
    }

    // Per idempotency key: exactly one call appended; every other call got
    // its result back, marked deduplicated.
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, call) in calls.iter().enumerate() {
        if let Some(key) = call.key(case) {
            by_key.entry(key).or_default().push(i);
        }
    }
    for (key, members) in &by_key {
        let outcomes: Vec<_> = members.iter().map(|&i| &results[i]).collect();
        let original: Vec<&AppendResult> = outcomes
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|r| !r.deduplicated)
            .collect();
        prop_assert_eq!(original.len(), 1, "calls with key {}: {:?}", key, outcomes);
        let original = original[0];
        for r in &outcomes {
            match r {
                Ok(r) if r.deduplicated => {
                    races.deduplicated.fetch_add(1, Ordering::Relaxed);
                    let first = AppendResult {
                        deduplicated: true,
                        ..original.clone()
                    };
                    prop_assert_eq!(&first, r, "a retry with key {}", key);
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "a call with key {key} failed: {e:?}"
                    )));
                }
            }
        }
    }

    // Per stream: exactly one call appended (the calls of a key that were
    // deduplicated wrote nothing to theirs); every other call got a conflict
    // naming the stream at the winner's version.
    let mut by_stream: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, call) in calls.iter().enumerate() {
        by_stream
            .entry(call.stream_id(case, i))
            .or_default()
            .push(i);
    }
    let appended = |i: usize| matches!(&results[i], Ok(r) if !r.deduplicated);
    let mut winners: BTreeMap<String, Option<usize>> = BTreeMap::new();
    for (id, members) in &by_stream {
        let won: Vec<usize> = members.iter().copied().filter(|&i| appended(i)).collect();
        let deduplicated = members.iter().any(|&i| results[i].is_ok() && !appended(i));
        prop_assert_eq!(
            won.len(),
            usize::from(!deduplicated),
            "{} calls on {}: {:?}",
            members.len(),
            id,
            members.iter().map(|&i| &results[i]).collect::<Vec<_>>()
        );
        let Some(&winner) = won.first() else {
            winners.insert(id.clone(), None);
            continue;
        };
        winners.insert(id.clone(), Some(winner));
        let winner_events = calls[winner].events() as u64;
        for &i in members.iter().filter(|&&i| i != winner) {
            races.conflicts.fetch_add(1, Ordering::Relaxed);
            match &results[i] {
                Err(EventStoreError::WrongExpectedVersion {
                    stream_id,
                    expected: ExpectedVersion::NoStream,
                    actual,
                }) if stream_id == id && *actual == winner_events => {}
                other => {
                    return Err(TestCaseError::fail(format!(
                        "call {i} on {id} lost to call {winner} ({winner_events} events) \
                         but returned {other:?}"
                    )));
                }
            }
        }
    }

    // The winners' positions tile start+1..=head: distinct, contiguous, dense.
    let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if let Ok(r) = r
            && !r.deduplicated
        {
            let n = calls[i].events() as u64;
            prop_assert_eq!(r.last_position + 1 - r.first_position, n, "call {}", i);
            prop_assert_eq!(r.streams.len(), 1);
            prop_assert_eq!(r.streams[0].version, n, "call {}", i);
            ranges.push((r.first_position, r.last_position, i));
        }
    }
    ranges.sort_unstable();
    let mut next = start + 1;
    for &(first, last, i) in &ranges {
        prop_assert_eq!(first, next, "call {} in {:?}", i, ranges);
        next = last + 1;
    }
    let head = next - 1;
    prop_assert_eq!(ok("head_position", store.head_position().await)?, head);

    // What was read back matches the winners' calls, position by position.
    let landed = ok("read_all", store.read_all(start, ALL).await)?;
    prop_assert_eq!(landed.len() as u64, head - start);
    for e in &landed {
        let &(first, _, i) = ranges
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&e.position))
            .expect("every position belongs to a winner");
        prop_assert_eq!(&e.stream_id, &calls[i].stream_id(case, i));
        prop_assert_eq!(e.stream_version, e.position - first + 1);
        prop_assert_eq!(&e.metadata.idempotency_key, &calls[i].key(case));
        prop_assert_eq!(
            &e.payload,
            &json!({ "call": i, "n": e.position - first }),
            "event at {}",
            e.position
        );
    }
    let xacts: HashSet<u64> = landed.iter().map(|e| e.xact_id).collect();
    if xacts.len() < ranges.len() {
        races.grouped.fetch_add(1, Ordering::Relaxed);
    }
    for (id, winner) in &winners {
        let stream = ok("read_stream", store.read_stream(id, 0).await)?;
        let want = winner.map_or(0, |w| calls[w].events());
        prop_assert_eq!(stream.len(), want, "{}", id);
        prop_assert!(
            stream
                .iter()
                .all(|e| Some(&e.payload["call"]) == winner.map(|w| json!(w)).as_ref())
        );
    }
    let report = ok("verify_chain", store.verify_chain().await)?;
    prop_assert!(report.is_intact(), "chain: {:?}", report);
    prop_assert_eq!(report.head_position, head);
    Ok(())
}

#[test]
fn concurrent_appends_have_one_winner_per_stream_and_key() {
    let rt = runtime();
    let db = rt.block_on(TestDb::new());
    // Short random delays inside some transactions vary how the calls are
    // grouped: some are judged against each other in one transaction, some
    // against a committed log.
    let faults = Faults {
        max_delay_in_transaction: Some(Duration::from_millis(4)),
        delay_share: 0.3,
    };
    let store = rt.block_on(db.store_with(EventStoreConfig {
        faults,
        ..EventStoreConfig::default()
    }));
    let cases = AtomicU64::new(0);
    let races = Races::default();
    let strategy = prop::collection::vec(call_strategy(), 2..=12);
    let mut runner = runner(48);
    let planned = runner.config().cases;
    let result = runner.run(&strategy, |calls| {
        let case = cases.fetch_add(1, Ordering::Relaxed);
        rt.block_on(run_concurrently(&store, case, &calls, &races))
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    eprintln!("concurrent_appends_have_one_winner_per_stream_and_key: {planned} cases, {races:?}");
    if planned >= 32 {
        assert!(races.conflicts.into_inner() > 0, "no call ever lost a race");
        assert!(races.deduplicated.into_inner() > 0, "no key was ever raced");
        assert!(
            races.grouped.into_inner() > 0,
            "no calls were ever committed together"
        );
    }
}
