//! Settings of the event store.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::append::Limits;

/// Settings of the event store; the manager reads them from the `[event_store]`
/// table of its configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventStoreConfig {
    /// Largest serialized payload of one event, in bytes. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Most events in one append call. Default 10,000.
    pub max_events_per_append: usize,
    /// Most events the group-commit writer puts in one transaction. Calls are
    /// never split: one larger call still goes alone. Default 20,000.
    pub max_group_events: usize,
    /// Most calls the writer gathers into one transaction. Default 1,024.
    pub max_group_calls: usize,
    /// Most payload bytes the writer gathers into one transaction (calls are
    /// never split). Default 64 MiB.
    pub max_group_bytes: usize,
    /// Longest an append transaction may take, lock wait included, in
    /// milliseconds; past it the transaction is abandoned (the calls fail with
    /// a timeout, or `CommitUncertain` if it was committing) and its connection
    /// dropped, so one dead connection cannot stall every append of the
    /// process. Default 10,000.
    pub transaction_timeout_ms: u64,
    /// Calls that may wait for the writer before `append` itself waits
    /// (back-pressure). Default 8,192.
    pub queue_depth: usize,
    /// How often a subscriber polls the log when no notification arrives, in
    /// milliseconds: the fallback when LISTEN/NOTIFY is unavailable. Default 1,000.
    pub poll_interval_ms: u64,
    /// Events a subscriber reads per query. Default 1,000.
    pub subscription_batch: usize,
    /// Whether subscribers are woken by PostgreSQL LISTEN/NOTIFY (one dedicated
    /// connection per store). Without it they rely on polling. Default true.
    pub listen: bool,
    /// Milliseconds a pooled connection may sit idle inside a transaction
    /// before the server ends its session (`idle_in_transaction_session_timeout`;
    /// 0 keeps the server's setting). Appends hold the log's ordering lock for
    /// their whole transaction, so this bounds how long a stalled process can
    /// block every writer. Default 30,000.
    pub idle_in_transaction_ms: u64,
    /// Fault injection for tests only.
    #[serde(skip)]
    #[doc(hidden)]
    pub faults: Faults,
}

impl Default for EventStoreConfig {
    fn default() -> Self {
        EventStoreConfig {
            max_payload_bytes: 1024 * 1024,
            max_events_per_append: 10_000,
            max_group_events: 20_000,
            max_group_calls: 1_024,
            max_group_bytes: 64 * 1024 * 1024,
            transaction_timeout_ms: 10_000,
            queue_depth: 8_192,
            poll_interval_ms: 1_000,
            subscription_batch: 1_000,
            listen: true,
            idle_in_transaction_ms: 30_000,
            faults: Faults::default(),
        }
    }
}

impl EventStoreConfig {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_events_per_append: self.max_events_per_append,
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }
}

/// Delays injected into the writer's transactions, to widen race windows in tests.
#[doc(hidden)]
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// A random delay up to this long, taken inside each transaction both before
    /// the log's lock is taken and while it is held.
    pub max_delay_in_transaction: Option<Duration>,
    /// Share (0.0–1.0) of transactions that take the delays.
    pub delay_share: f64,
}
