//! The notice ingester: turns what agents tell the managers through the
//! Redis notice stream into commands on the agent aggregate.
//!
//! # Delivery
//! Every manager reads the stream through one consumer group
//! ([`CONSUMER_GROUP`]), each process as its own consumer, so each notice is
//! handled by one manager (anycast). A notice is acknowledged (`XACK`) only
//! after its command was appended, so a manager that dies mid-notice loses
//! nothing: the entry stays pending under its name, and after
//! `claim_idle` another manager takes it over (`XAUTOCLAIM`) and handles it.
//! Handling is therefore *at least once*; the command carries the stream
//! entry id as its idempotency key, so a notice handled twice appends once.
//!
//! # Order
//! Notices of one agent are handled in stream order; notices of different
//! agents in one batch are handled concurrently. A notice whose command fails
//! for a reason that may pass (database down, repeated conflicts) is not
//! acknowledged; neither are the later notices of the same agent in its
//! batch. They are read again from this consumer's pending list after a
//! growing pause, in order.
//!
//! Across managers there is no such order: two managers reading one
//! agent's notices at once, or a manager taking over a notice left pending
//! while later ones were handled, may handle them out of order. The
//! aggregate absorbs what it can (a start read after its goodbye, a goodbye
//! after the key vanished); what it cannot — an older `agent_info_changed`
//! applied after a newer one — leaves stale description or capacity until
//! the agent reports again. (Closing it needs the notice's entry id in the
//! events, so the aggregate can drop older notices.)
//!
//! # Bad notices
//! A notice that does not parse, names no agent, or is refused by the
//! aggregate (retrying cannot help) is copied to the dead-letter stream
//! ([`dead_letter_stream`]) with the error, counted
//! (`agent_notices_dead_lettered_total`) and acknowledged: one bad entry
//! never stops the ingester.
//!
//! # Kernel notices
//! `kernel_*` notices belong to sessions (issue 5). They are counted and
//! handed to a [`KernelNotices`] hook; the default, [`IgnoreKernelNotices`],
//! only acknowledges them.
//!
//! # Metrics
//! `agent_notices_total{name}` (every notice read, by notice name, `invalid`
//! for those that do not parse), `agent_notices_dead_lettered_total`,
//! `agent_notice_retries_total` (notices left pending after a transient
//! failure), `agent_notices_claimed_total` (taken over from another
//! consumer), `agent_notice_handling_seconds` (per notice).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_rpc::notice::{
    CONSUMER_GROUP, NOTICE_FIELD, Notice, NoticeBody, dead_letter_stream, notice_stream,
};
use fred::clients::Client;
use fred::interfaces::StreamsInterface;
use fred::types::Value;
use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use manager_events::{EventMetadata, EventStoreError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::aggregate::{Agent, AgentCommand, AgentCommandError, stream_id};
use crate::handler::{CommandError, CommandHandler};

/// Entries kept in the dead-letter stream (`XADD MAXLEN ~`).
pub const DEAD_LETTER_MAXLEN: i64 = 100_000;

/// Settings of an [`Ingester`].
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    /// The managers' `redis.key_prefix` (the agents' too).
    pub key_prefix: String,
    /// This process's consumer name in the group; unique per process.
    pub consumer: String,
    /// Most entries read at once.
    pub batch: u64,
    /// How long one read waits for new entries. Shutdown waits at most this
    /// long for the read in flight.
    pub block: Duration,
    /// Entries pending this long under another consumer are taken over.
    pub claim_idle: Duration,
    /// The longest pause between retries of a failing notice.
    pub max_backoff: Duration,
    /// Agents whose notices are handled at once.
    pub concurrency: usize,
}

impl IngesterConfig {
    /// The defaults (batch 256, block 1 s, claim after 15 s idle) for
    /// `key_prefix`, with a fresh consumer name.
    pub fn new(key_prefix: impl Into<String>) -> Self {
        IngesterConfig {
            key_prefix: key_prefix.into(),
            consumer: consumer_name(),
            batch: 256,
            block: Duration::from_secs(1),
            claim_idle: Duration::from_secs(15),
            max_backoff: Duration::from_secs(5),
            concurrency: 64,
        }
    }
}

/// A consumer name unique to this process: host, pid and a random suffix
/// (a restarted process is a new consumer; the old one's pending entries
/// are claimed by idle time).
pub fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "manager".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &suffix[..8])
}

/// Why a notice was not handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeFailure {
    /// It may work later (database down, repeated conflicts): leave it
    /// pending and retry.
    #[error("transient: {0}")]
    Transient(String),
    /// It never will (malformed, refused): dead-letter it.
    #[error("{0}")]
    Permanent(String),
}

/// Where kernel lifecycle notices (`kernel_*`) go. Issue 5 (sessions)
/// implements it; a [`NoticeFailure::Transient`] leaves the notice pending
/// for a retry, a [`NoticeFailure::Permanent`] dead-letters it. Handlers
/// must be idempotent (keyed by `entry_id`): a notice may be handed over
/// more than once.
pub trait KernelNotices: Send + Sync + 'static {
    /// Handles one kernel notice read as stream entry `entry_id`.
    fn handle<'a>(
        &'a self,
        entry_id: &'a str,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<(), NoticeFailure>>;
}

/// Acknowledges kernel notices without doing anything (until sessions
/// exist).
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreKernelNotices;

impl KernelNotices for IgnoreKernelNotices {
    fn handle<'a>(
        &'a self,
        _entry_id: &'a str,
        _notice: &'a Notice,
    ) -> BoxFuture<'a, Result<(), NoticeFailure>> {
        Box::pin(async { Ok(()) })
    }
}

/// Why the ingester could not talk to Redis.
#[derive(Debug, thiserror::Error)]
#[error("notice stream (Redis): {0}")]
pub struct IngestError(#[from] fred::error::Error);

/// One entry read from the stream: its id and fields (`None` when the entry
/// was trimmed away before it was handled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream entry id.
    pub id: String,
    /// Its fields, in order.
    pub fields: Option<Vec<(String, String)>>,
}

/// What one pass over a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handled {
    /// Entries acknowledged (handled, or dead-lettered).
    pub acked: usize,
    /// Entries dead-lettered.
    pub dead_lettered: usize,
    /// Entries left pending after a transient failure.
    pub retrying: usize,
}

/// Reads the notice stream and turns notices into commands; see the module
/// documentation.
#[derive(Clone)]
pub struct Ingester {
    handler: CommandHandler,
    redis: Client,
    config: IngesterConfig,
    stream: String,
    dead: String,
    kernels: Arc<dyn KernelNotices>,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingester")
            .field("stream", &self.stream)
            .field("consumer", &self.config.consumer)
            .finish_non_exhaustive()
    }
}

enum Plan {
    /// A command on the agent aggregate.
    Agent(String, Box<AgentCommand>),
    /// A kernel notice for the hook.
    Kernel(Box<Notice>),
    /// Dead-letter it with this error.
    Dead(String),
}

impl Ingester {
    /// An ingester appending through `handler`, reading with `redis`. The
    /// client must be its own: a blocking read holds its connection for up
    /// to `block`, and its command timeout must exceed `block`.
    pub fn new(handler: CommandHandler, redis: Client, config: IngesterConfig) -> Self {
        Ingester {
            handler,
            redis,
            stream: notice_stream(&config.key_prefix),
            dead: dead_letter_stream(&config.key_prefix),
            config,
            kernels: Arc::new(IgnoreKernelNotices),
        }
    }

    /// Hands kernel notices to `kernels` (issue 5).
    pub fn with_kernel_notices(mut self, kernels: Arc<dyn KernelNotices>) -> Self {
        self.kernels = kernels;
        self
    }

    /// The consumer name.
    pub fn consumer(&self) -> &str {
        &self.config.consumer
    }

    /// Creates the consumer group (and the stream) if missing, reading from
    /// the stream's start: notices sent before any manager ran are handled.
    pub async fn ensure_group(&self) -> Result<(), IngestError> {
        let created: Result<Value, _> = self
            .redis
            .xgroup_create(&self.stream, CONSUMER_GROUP, "0", true)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs until `stop` turns true (or its sender is dropped): reads,
    /// handles, acknowledges, claims entries of dead consumers. Redis
    /// failures are logged and retried with backoff. On the way out, the
    /// consumer leaves the group if nothing is pending under its name.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let claim_every = (self.config.claim_idle / 2).max(Duration::from_millis(50));
        let mut next_claim = Instant::now();
        // Our own pending entries first (those left after a failure).
        let mut pending_first = true;
        let mut backoff = Duration::ZERO;
        let mut group_ready = false;
        while !*stop.borrow() && stop.has_changed().is_ok() {
            if !backoff.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => continue,
                }
            }
            if !group_ready {
                match self.ensure_group().await {
                    Ok(()) => group_ready = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create the notice consumer group; retrying");
                        backoff = self.grow(backoff);
                        continue;
                    }
                }
            }
            let step = async {
                if Instant::now() >= next_claim {
                    next_claim = Instant::now() + claim_every;
                    let claimed = self.claim().await?;
                    if !claimed.is_empty() {
                        metrics::counter!("agent_notices_claimed_total")
                            .increment(claimed.len() as u64);
                        tracing::info!(
                            entries = claimed.len(),
                            "took over notices left pending by another manager"
                        );
                        return Ok::<_, IngestError>(self.handle(claimed).await);
                    }
                }
                let entries = if pending_first {
                    let own = self.read("0", None).await?;
                    if own.is_empty() {
                        pending_first = false;
                    }
                    own
                } else {
                    self.read(">", Some(self.config.block)).await?
                };
                Ok(self.handle(entries).await)
            };
            match step.await {
                Ok(handled) if handled.retrying > 0 => {
                    pending_first = true;
                    backoff = self.grow(backoff);
                }
                Ok(_) => backoff = Duration::ZERO,
                Err(e) => {
                    if e.0.details().contains("NOGROUP") {
                        group_ready = false;
                    }
                    tracing::warn!(error = %e, "reading the notice stream failed; retrying");
                    backoff = self.grow(backoff);
                }
            }
        }
        self.leave().await;
    }

    fn grow(&self, backoff: Duration) -> Duration {
        (backoff * 2)
            .max(Duration::from_millis(100))
            .min(self.config.max_backoff)
    }

    /// Reads entries as this consumer: `">"` for new ones (waiting up to
    /// `block`), `"0"` for those already delivered to it and not acked.
    pub async fn read(&self, id: &str, block: Option<Duration>) -> Result<Vec<Entry>, IngestError> {
        let block_ms = block.map(|b| u64::try_from(b.as_millis()).unwrap_or(u64::MAX).max(1));
        let reply: Value = self
            .redis
            .xreadgroup(
                CONSUMER_GROUP,
                self.config.consumer.as_str(),
                Some(self.config.batch.max(1)),
                block_ms,
                false,
                self.stream.as_str(),
                id,
            )
            .await?;
        Ok(parse_read(reply))
    }

    /// Takes over entries pending longer than `claim_idle` under any
    /// consumer (`XAUTOCLAIM`), at most one batch.
    pub async fn claim(&self) -> Result<Vec<Entry>, IngestError> {
        let idle = u64::try_from(self.config.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let reply: Value = self
            .redis
            .xautoclaim(
                self.stream.as_str(),
                CONSUMER_GROUP,
                self.config.consumer.as_str(),
                idle,
                "0-0",
                Some(self.config.batch.max(1)),
                false,
            )
            .await?;
        Ok(match reply {
            Value::Array(mut parts) if parts.len() >= 2 => parse_entries(parts.swap_remove(1)),
            _ => Vec::new(),
        })
    }

    /// Handles a batch: plans every entry, dead-letters what cannot be
    /// handled, runs each agent's commands in order (agents concurrently),
    /// then acknowledges everything handled in one `XACK`.
    pub async fn handle(&self, entries: Vec<Entry>) -> Handled {
        let mut handled = Handled::default();
        if entries.is_empty() {
            return handled;
        }
        let mut acked: Vec<String> = Vec::new();
        // Per agent, in stream order.
        let mut chains: Vec<Vec<(Entry, Plan)>> = Vec::new();
        let mut chain_of: HashMap<String, usize> = HashMap::new();
        for entry in entries {
            let (agent, plan) = plan(&entry);
            match plan {
                Plan::Dead(error) => {
                    if self.dead_letter(&entry, &error).await {
                        handled.dead_lettered += 1;
                        acked.push(entry.id);
                    } else {
                        handled.retrying += 1;
                    }
                }
                plan => {
                    let i = *chain_of.entry(agent).or_insert_with(|| {
                        chains.push(Vec::new());
                        chains.len() - 1
                    });
                    chains[i].push((entry, plan));
                }
            }
        }
        let mut outcomes = stream::iter(chains)
            .map(|chain| self.run_chain(chain))
            .buffer_unordered(self.config.concurrency.max(1));
        while let Some((done, dead, retrying)) = outcomes.next().await {
            handled.dead_lettered += dead;
            handled.retrying += retrying;
            acked.extend(done);
        }
        drop(outcomes);
        if !acked.is_empty() {
            let n = acked.len();
            let result: Result<Value, _> = self
                .redis
                .xack(self.stream.as_str(), CONSUMER_GROUP, acked)
                .await;
            match result {
                Ok(_) => handled.acked = n,
                Err(e) => {
                    // Handled but not acknowledged: they come back and are
                    // deduplicated by their idempotency keys.
                    tracing::warn!(error = %e, entries = n, "could not acknowledge handled notices");
                    handled.retrying += n;
                }
            }
        }
        if handled.retrying > 0 {
            metrics::counter!("agent_notice_retries_total").increment(handled.retrying as u64);
        }
        handled
    }

    /// One agent's notices, in order; stops at the first transient failure.
    /// Returns the ids to acknowledge, how many were dead-lettered, how many
    /// are left for a retry.
    async fn run_chain(&self, chain: Vec<(Entry, Plan)>) -> (Vec<String>, usize, usize) {
        let total = chain.len();
        let mut done = Vec::with_capacity(total);
        let mut dead = 0;
        for (entry, plan) in chain {
            let id = entry.id.clone();
            let started = std::time::Instant::now();
            let (outcome, name) = match &plan {
                Plan::Agent(agent, command) => {
                    (self.execute(&id, agent, (**command).clone()).await, "agent")
                }
                Plan::Kernel(notice) => (self.kernels.handle(&id, notice).await, "kernel"),
                Plan::Dead(e) => (Err(NoticeFailure::Permanent(e.clone())), "invalid"),
            };
            metrics::histogram!("agent_notice_handling_seconds", "kind" => name)
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(()) => done.push(id),
                Err(NoticeFailure::Permanent(error)) => {
                    if self.dead_letter(&entry, &error).await {
                        dead += 1;
                        done.push(id);
                    } else {
                        break;
                    }
                }
                Err(NoticeFailure::Transient(error)) => {
                    tracing::warn!(entry = %id, error = %error, "notice not handled yet; will retry");
                    break;
                }
            }
        }
        let left = total - done.len();
        (done, dead, left)
    }

    async fn execute(
        &self,
        entry_id: &str,
        agent: &str,
        command: AgentCommand,
    ) -> Result<(), NoticeFailure> {
        let metadata = EventMetadata {
            request_id: Some(format!("notice:{entry_id}")),
            idempotency_key: Some(format!("agent-notice:{}:{entry_id}", self.stream)),
            ..Default::default()
        };
        match self
            .handler
            .execute::<Agent>(&stream_id(agent), command, metadata)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Copies an entry that cannot be handled to the dead-letter stream with
    /// the error. Returns whether Redis took it.
    async fn dead_letter(&self, entry: &Entry, error: &str) -> bool {
        let mut fields: Vec<(String, String)> = entry.fields.clone().unwrap_or_default();
        fields.push(("error".into(), error.to_owned()));
        fields.push(("entry_id".into(), entry.id.clone()));
        fields.push(("consumer".into(), self.config.consumer.clone()));
        let written: Result<Value, _> = self
            .redis
            .xadd(
                self.dead.as_str(),
                false,
                ("MAXLEN", "~", DEAD_LETTER_MAXLEN),
                "*",
                fields,
            )
            .await;
        match written {
            Ok(_) => {
                metrics::counter!("agent_notices_dead_lettered_total").increment(1);
                tracing::warn!(entry = %entry.id, error, "notice dead-lettered");
                true
            }
            Err(e) => {
                tracing::warn!(entry = %entry.id, error = %e, "could not dead-letter a notice; will retry");
                false
            }
        }
    }

    /// Leaves the group if nothing is pending under this consumer (pending
    /// entries stay for another manager to claim).
    async fn leave(&self) {
        let pending = self.read("0", None).await;
        if matches!(&pending, Ok(p) if p.is_empty()) {
            let _: Result<Value, _> = self
                .redis
                .xgroup_delconsumer(
                    self.stream.as_str(),
                    CONSUMER_GROUP,
                    self.config.consumer.as_str(),
                )
                .await;
        }
    }
}

fn classify(err: CommandError<AgentCommandError>) -> NoticeFailure {
    match err {
        CommandError::Rejected(e) => NoticeFailure::Permanent(e.to_string()),
        CommandError::Conflict { .. } => NoticeFailure::Transient(err.to_string()),
        CommandError::Store(EventStoreError::Invalid(e)) => NoticeFailure::Permanent(e.to_string()),
        CommandError::Store(e) => NoticeFailure::Transient(e.to_string()),
        CommandError::Codec { .. } => NoticeFailure::Permanent(err.to_string()),
        CommandError::Failed(p) if p.status() == 503 => NoticeFailure::Transient(p.to_string()),
        CommandError::Failed(p) => NoticeFailure::Permanent(p.to_string()),
    }
}

/// What to do with an entry: the agent it is about and the plan.
fn plan(entry: &Entry) -> (String, Plan) {
    let Some(fields) = &entry.fields else {
        return (
            String::new(),
            Plan::Dead("the entry was trimmed from the stream before it was handled".into()),
        );
    };
    let Some((_, text)) = fields.iter().find(|(k, _)| k == NOTICE_FIELD) else {
        metrics::counter!("agent_notices_total", "name" => "invalid").increment(1);
        return (
            String::new(),
            Plan::Dead(format!("no {NOTICE_FIELD:?} field")),
        );
    };
    let notice = match Notice::from_json(text) {
        Ok(n) => n,
        Err(e) => {
            metrics::counter!("agent_notices_total", "name" => "invalid").increment(1);
            return (String::new(), Plan::Dead(format!("not a notice: {e}")));
        }
    };
    metrics::counter!("agent_notices_total", "name" => notice_name(&notice.body)).increment(1);
    let agent = notice.agent_id.trim().to_owned();
    if agent.is_empty() {
        return (agent, Plan::Dead("the notice names no agent".into()));
    }
    let with_id = |info: &agent_rpc::notice::AgentInfo| {
        let mut info = info.clone();
        if info.id.is_empty() {
            info.id = agent.clone();
        }
        if info.id == agent {
            Ok(info)
        } else {
            Err(format!(
                "the notice is about agent {agent:?} but its info names {:?}",
                info.id
            ))
        }
    };
    let plan = match &notice.body {
        NoticeBody::AgentStarted { info, .. } => match with_id(info) {
            Ok(info) => Plan::Agent(
                agent.clone(),
                Box::new(AgentCommand::Started {
                    instance: notice.instance,
                    info,
                }),
            ),
            Err(error) => Plan::Dead(error),
        },
        NoticeBody::AgentInfoChanged { info } => match with_id(info) {
            Ok(info) => Plan::Agent(
                agent.clone(),
                Box::new(AgentCommand::InfoChanged {
                    instance: notice.instance,
                    info,
                }),
            ),
            Err(error) => Plan::Dead(error),
        },
        NoticeBody::AgentTerminated { reason } => Plan::Agent(
            agent.clone(),
            Box::new(AgentCommand::Stopped {
                instance: notice.instance,
                reason: reason.clone(),
            }),
        ),
        NoticeBody::KernelPreparing { .. }
        | NoticeBody::KernelPulling { .. }
        | NoticeBody::KernelCreating { .. }
        | NoticeBody::KernelStarted { .. }
        | NoticeBody::KernelTerminated { .. } => Plan::Kernel(Box::new(notice.clone())),
    };
    (agent, plan)
}

/// A notice's name, as on the wire.
pub fn notice_name(body: &NoticeBody) -> &'static str {
    match body {
        NoticeBody::AgentStarted { .. } => "agent_started",
        NoticeBody::AgentInfoChanged { .. } => "agent_info_changed",
        NoticeBody::AgentTerminated { .. } => "agent_terminated",
        NoticeBody::KernelPreparing { .. } => "kernel_preparing",
        NoticeBody::KernelPulling { .. } => "kernel_pulling",
        NoticeBody::KernelCreating { .. } => "kernel_creating",
        NoticeBody::KernelStarted { .. } => "kernel_started",
        NoticeBody::KernelTerminated { .. } => "kernel_terminated",
    }
}

fn text(v: &Value) -> Option<String> {
    v.as_string()
}

/// Parses an `XREADGROUP` reply (RESP2 `[[stream, entries]]` or RESP3
/// `{stream: entries}`; nil when nothing came).
fn parse_read(reply: Value) -> Vec<Entry> {
    match reply {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => parse_entries(pair.swap_remove(1)),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(map) => map.inner().into_values().flat_map(parse_entries).collect(),
        _ => Vec::new(),
    }
}

/// Parses a list of entries `[[id, [field, value, …] | nil], …]`.
fn parse_entries(entries: Value) -> Vec<Entry> {
    let Value::Array(entries) = entries else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let Value::Array(mut parts) = e else {
                return None;
            };
            if parts.is_empty() {
                return None;
            }
            let fields = if parts.len() >= 2 {
                parts.swap_remove(1)
            } else {
                Value::Null
            };
            let id = text(&parts[0])?;
            let fields = match fields {
                Value::Array(flat) => Some(
                    flat.chunks(2)
                        .filter_map(|kv| match kv {
                            [k, v] => Some((text(k)?, text(v)?)),
                            _ => None,
                        })
                        .collect(),
                ),
                Value::Map(map) => Some(
                    map.inner()
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), text(&v)?)))
                        .collect(),
                ),
                _ => None,
            };
            Some(Entry { id, fields })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn replies_parse_including_trimmed_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            s("p:agent-notices"),
            Value::Array(vec![
                Value::Array(vec![s("1-0"), Value::Array(vec![s("notice"), s("{}")])]),
                Value::Array(vec![s("2-0"), Value::Null]),
            ]),
        ])]);
        assert_eq!(
            parse_read(reply),
            vec![
                Entry {
                    id: "1-0".into(),
                    fields: Some(vec![("notice".into(), "{}".into())])
                },
                Entry {
                    id: "2-0".into(),
                    fields: None
                },
            ]
        );
        assert!(parse_read(Value::Null).is_empty());
    }

    #[test]
    fn notices_become_commands_or_dead_letters() {
        let entry = |text: &str| Entry {
            id: "1-0".into(),
            fields: Some(vec![(NOTICE_FIELD.into(), text.into())]),
        };
        let started = Notice {
            agent_id: "i-a".into(),
            instance: uuid::Uuid::nil(),
            sent_at_ms: 1,
            body: NoticeBody::AgentStarted {
                reason: "self-started".into(),
                info: agent_rpc::notice::AgentInfo {
                    addr: "tcp://h:1".into(),
                    ..Default::default()
                },
            },
        };
        let (agent, p) = plan(&entry(&started.to_json()));
        assert_eq!(agent, "i-a");
        assert!(
            matches!(p, Plan::Agent(_, ref c) if matches!(**c, AgentCommand::Started { ref info, .. } if info.id == "i-a"))
        );
        let mut other = started.clone();
        if let NoticeBody::AgentStarted { info, .. } = &mut other.body {
            info.id = "i-b".into();
        }
        assert!(matches!(plan(&entry(&other.to_json())).1, Plan::Dead(_)));
        let mut nobody = started;
        nobody.agent_id = String::new();
        assert!(matches!(plan(&entry(&nobody.to_json())).1, Plan::Dead(_)));
        assert!(matches!(plan(&entry("{not json")).1, Plan::Dead(_)));
        let no_field = Entry {
            id: "1-0".into(),
            fields: Some(vec![("x".into(), "y".into())]),
        };
        assert!(matches!(plan(&no_field).1, Plan::Dead(_)));
    }
}
