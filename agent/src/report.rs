//! Telling the managers through Redis: heartbeat keys and the notice stream
//! (the contract is `agent_rpc::notice`).
//!
//! One [`Reporter`] — one `fred` client, one connection — serves every agent
//! of the process, so a thousand dummy agents cost one connection and a few
//! pipelines per second, not a thousand connections.
//!
//! - **Notices** are queued in memory, in order, and written by one task in
//!   batches: one pipeline of `XADD {stream} MAXLEN ~ {cap} * notice {json}`
//!   per batch, so the stream stays near its cap however long it runs. A
//!   batch that fails is retried, whole and in order, with a backoff from
//!   100 ms to 5 s until Redis takes it: delivery is at least once (a batch
//!   cut off midway may repeat entries already written), and notices are
//!   never reordered.
//! - **Heartbeats** are written by the caller ([`Reporter::set_heartbeats`],
//!   one pipeline of `SET key value PX ttl`); a failed round is not
//!   retried, the next round is the retry.
//! - **A Redis outage never stops the agent.** The client reconnects forever
//!   with backoff, commands give up after `redis.command_timeout_ms`, RPC
//!   goes on being served, and the outage and the recovery are logged once
//!   each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_rpc::notice::{NOTICE_FIELD, Notice, NoticeBody, notice_stream};
use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface, StreamsInterface};
use fred::types::config::{Config as FredConfig, PerformanceConfig, ReconnectPolicy};
use fred::types::{Expiration, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::config::RedisConfig;

/// Most notices written in one pipeline.
const BATCH: usize = 512;

/// A queued item: a notice (already JSON) or a flush marker.
enum Item {
    Notice(String),
    Flush(oneshot::Sender<()>),
}

/// The Redis side of every agent in the process. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    prefix: String,
    queue: mpsc::UnboundedSender<Item>,
    pump: std::sync::Mutex<Option<JoinHandle<()>>>,
    healthy: Arc<AtomicBool>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Sets up the client and the notice writer. Does not wait for Redis: an
    /// unreachable Redis is retried in the background (only a malformed URL
    /// is an error). Must be called inside a Tokio runtime.
    pub fn connect(config: &RedisConfig) -> Result<Reporter, fred::error::Error> {
        let mut fred_config = FredConfig::from_url(&config.url)?;
        // Retry the first connection like any other instead of failing.
        fred_config.fail_fast = false;
        let performance = PerformanceConfig {
            default_command_timeout: Duration::from_millis(config.command_timeout_ms.max(100)),
            ..Default::default()
        };
        let reconnect = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
        let client = Client::new(fred_config, Some(performance), None, Some(reconnect));
        // The connection task runs until `quit`; it reconnects by itself.
        let _connection = client.connect();

        let stream = notice_stream(&config.key_prefix);
        let (tx, rx) = mpsc::unbounded_channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let pump = tokio::spawn(pump(
            client.clone(),
            stream,
            i64::try_from(config.notice_stream_maxlen).unwrap_or(i64::MAX),
            rx,
            Arc::clone(&healthy),
        ));
        Ok(Reporter {
            inner: Arc::new(Inner {
                client,
                prefix: config.key_prefix.clone(),
                queue: tx,
                pump: std::sync::Mutex::new(Some(pump)),
                healthy,
            }),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Queues a notice; it is written in order, at least once, as soon as
    /// Redis takes it.
    pub fn notice(&self, notice: &Notice) {
        let _ = self.inner.queue.send(Item::Notice(notice.to_json()));
    }

    /// Waits until every notice queued so far is written, at most `timeout`.
    /// Returns whether they were.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.inner.queue.send(Item::Flush(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    /// Writes heartbeat keys (`SET key value PX ttl`) in one pipeline.
    pub async fn set_heartbeats(
        &self,
        entries: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), fred::error::Error> {
        if entries.is_empty() {
            return Ok(());
        }
        // While disconnected, commands would only pile up in the client.
        if !self.inner.client.is_connected() {
            let result = Err(not_connected());
            self.observe(&result, "heartbeat");
            return result;
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let pipeline = self.inner.client.pipeline();
        for (key, value) in entries {
            let _: () = pipeline
                .set(
                    key.as_str(),
                    value.as_str(),
                    Some(Expiration::PX(ttl_ms)),
                    None,
                    false,
                )
                .await?;
        }
        let result = pipeline.all::<Vec<Value>>().await.map(|_| ());
        self.observe(&result, "heartbeat");
        result
    }

    /// Waits until the connection to Redis is up, at most `timeout`;
    /// returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let client = &self.inner.client;
        if client.is_connected() {
            return true;
        }
        let _ = tokio::time::timeout(timeout, client.wait_for_connect()).await;
        client.is_connected()
    }

    /// Deletes keys (the heartbeat keys, on shutdown).
    pub async fn delete(&self, keys: Vec<String>) -> Result<(), fred::error::Error> {
        if keys.is_empty() {
            return Ok(());
        }
        if !self.inner.client.is_connected() {
            return Err(not_connected());
        }
        let result = self.inner.client.del::<i64, _>(keys).await.map(|_| ());
        self.observe(&result, "delete");
        result
    }

    /// Stops the notice writer (unwritten notices are dropped: call
    /// [`flush`](Self::flush) first) and closes the connection.
    pub async fn close(&self) {
        let pump = self
            .inner
            .pump
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(pump) = pump {
            pump.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.client.quit()).await;
    }

    fn observe<T>(&self, result: &Result<T, fred::error::Error>, what: &str) {
        observe(&self.inner.healthy, result, what);
    }
}

fn not_connected() -> fred::error::Error {
    fred::error::Error::new(fred::error::ErrorKind::IO, "not connected to Redis")
}

/// Logs the first failure of an outage and the first success after it.
fn observe<T>(healthy: &AtomicBool, result: &Result<T, fred::error::Error>, what: &str) {
    match result {
        Ok(_) => {
            if !healthy.swap(true, Ordering::Relaxed) {
                tracing::info!("Redis reachable again");
            }
        }
        Err(e) => {
            if healthy.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %e, what, "Redis unreachable; retrying in the background");
            } else {
                tracing::debug!(error = %e, what, "Redis still unreachable");
            }
        }
    }
}

/// Writes queued notices in order, batch by batch, retrying a failed batch.
async fn pump(
    client: Client,
    stream: String,
    maxlen: i64,
    mut rx: mpsc::UnboundedReceiver<Item>,
    healthy: Arc<AtomicBool>,
) {
    let mut items = Vec::with_capacity(BATCH);
    loop {
        items.clear();
        if rx.recv_many(&mut items, BATCH).await == 0 {
            return;
        }
        let notices: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                Item::Notice(n) => Some(n.as_str()),
                Item::Flush(_) => None,
            })
            .collect();
        let mut backoff = Duration::from_millis(100);
        while !notices.is_empty() {
            // Writing while disconnected would queue commands in the client
            // that it may still send after they timed out here: duplicates.
            if !client.is_connected() {
                observe::<()>(&healthy, &Err(not_connected()), "notice");
                // Back to writing as soon as the connection is.
                let _ = tokio::time::timeout(backoff, client.wait_for_connect()).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            let result = write_notices(&client, &stream, maxlen, &notices).await;
            observe(&healthy, &result, "notice");
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        for item in items.drain(..) {
            if let Item::Flush(done) = item {
                let _ = done.send(());
            }
        }
    }
}

async fn write_notices(
    client: &Client,
    stream: &str,
    maxlen: i64,
    notices: &[&str],
) -> Result<(), fred::error::Error> {
    let pipeline = client.pipeline();
    for notice in notices {
        let _: () = pipeline
            .xadd(
                stream,
                false,
                ("MAXLEN", "~", maxlen),
                "*",
                vec![(NOTICE_FIELD, *notice)],
            )
            .await?;
    }
    pipeline.all::<Vec<Value>>().await.map(|_| ())
}

/// Sends the notices of one agent process: stamps each with the agent's id,
/// its instance and the time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    agent_id: Arc<str>,
    instance: Uuid,
    reporter: Reporter,
}

impl Notifier {
    /// A notifier for `agent_id`, instance `instance`.
    pub fn new(agent_id: &str, instance: Uuid, reporter: Reporter) -> Notifier {
        Notifier {
            agent_id: Arc::from(agent_id),
            instance,
            reporter,
        }
    }

    /// Queues `body` as a notice of this agent.
    pub fn send(&self, body: NoticeBody) {
        let notice = Notice {
            agent_id: self.agent_id.to_string(),
            instance: self.instance,
            sent_at_ms: now_ms(),
            body,
        };
        tracing::debug!(agent = %self.agent_id, notice = ?notice.body, "notice");
        self.reporter.notice(&notice);
    }

    /// The reporter behind it.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }
}

/// Now, unix milliseconds.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
