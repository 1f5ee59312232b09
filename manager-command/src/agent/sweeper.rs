//! The liveness sweeper: turns heartbeat keys into `AgentLost` and
//! `AgentRejoined`.
//!
//! Every `sweep_interval` the sweeper reads the heartbeat key of every agent
//! the [`Directory`] knows (one `MGET` per 500 agents, all sent at once on
//! one pipelined connection, so a thousand agents cost two round trips):
//!
//! - an ALIVE agent whose key is missing, unreadable, or whose
//!   `sent_at_ms` is older than `heartbeat_timeout` → `HeartbeatExpired`
//!   (the aggregate records `AgentLost`);
//! - a LOST or TERMINATED agent whose key is present and fresh →
//!   `HeartbeatSeen` with the key's instance and address (the aggregate
//!   records `AgentRejoined`, unless it is the leftover key of a process
//!   that said goodbye).
//!
//! It is a level-triggered reconciler: it looks at the current state each
//! time and never depends on having seen a change, and the aggregate judges
//! every command on its own state, so a repeated or late command appends
//! nothing.
//!
//! # One sweeper at a time
//! Every manager runs a sweeper, but only the one holding a PostgreSQL
//! session advisory lock ([`SWEEPER_LOCK`]) on a dedicated connection acts;
//! the others try again every interval. PostgreSQL releases the lock when
//! the holder's session ends — a crashed manager, a cut connection — so a
//! standby takes over within an interval or two, with no lease to tune and
//! nothing new to run. The leader checks its connection before each sweep
//! and stops acting the moment it is gone. A deposed leader's command in
//! flight is harmless: it is decided on the aggregate's current state.
//!
//! Clocks: `sent_at_ms` is the agent's clock, compared with the manager's;
//! keep hosts in time (NTP) to well within `heartbeat_timeout`. The key's
//! TTL (set by the agent) makes a dead agent's key vanish regardless.
//!
//! # Metrics
//! `agent_sweeper_leader` (1 on the manager acting), `agent_sweeps_total`,
//! `agent_sweep_seconds`, `agent_liveness_commands_total{command}`
//! (`expired`, `seen`; commands sent, whether or not they appended).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_rpc::notice::{Heartbeat, heartbeat_key};
use fred::clients::Client;
use fred::interfaces::KeysInterface;
use futures::{StreamExt, stream};
use manager_events::EventMetadata;
use manager_events::agent::AgentStatus;
use tokio::sync::watch;

use crate::agent::aggregate::{Agent, AgentCommand, stream_id};
use crate::agent::directory::Directory;
use crate::handler::CommandHandler;
use crate::leadership::AdvisoryLock;

/// The advisory lock the acting sweeper holds (`"agswp"` in ASCII).
pub const SWEEPER_LOCK: i64 = 0x61_67_73_77_70;

/// Keys read by one `MGET`.
const MGET_CHUNK: usize = 500;

/// Liveness commands sent at once.
const CONCURRENCY: usize = 32;

/// Settings of a [`Sweeper`].
#[derive(Debug, Clone)]
pub struct SweeperConfig {
    /// The managers' `redis.key_prefix` (the agents' too).
    pub key_prefix: String,
    /// A heartbeat older than this (or a missing key) means the agent is
    /// lost. Default 9 s (three agent heartbeat periods).
    pub heartbeat_timeout: Duration,
    /// Time between sweeps, and between attempts to become the sweeper.
    /// Default 1 s.
    pub sweep_interval: Duration,
    /// The database holding the lock (the event log's).
    pub database_url: String,
}

impl SweeperConfig {
    /// The defaults for `key_prefix` and `database_url`.
    pub fn new(key_prefix: impl Into<String>, database_url: impl Into<String>) -> Self {
        SweeperConfig {
            key_prefix: key_prefix.into(),
            heartbeat_timeout: Duration::from_secs(9),
            sweep_interval: Duration::from_secs(1),
            database_url: database_url.into(),
        }
    }
}

/// What one sweep found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Agents whose key was looked at.
    pub checked: usize,
    /// `HeartbeatExpired` commands sent.
    pub expired: usize,
    /// `HeartbeatSeen` commands sent.
    pub seen: usize,
    /// Events appended by them.
    pub appended: usize,
}

/// Decides liveness from heartbeat keys; see the module documentation.
#[derive(Clone)]
pub struct Sweeper {
    handler: CommandHandler,
    directory: Directory,
    redis: Client,
    config: SweeperConfig,
    leader: std::sync::Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Sweeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sweeper")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the sweeper should do about one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// It is alive but its heartbeat is gone or stale.
    Expired,
    /// It is not alive but heartbeats.
    Seen(Heartbeat),
}

/// Judges one agent from its status and its heartbeat key's value.
pub fn verdict(
    status: AgentStatus,
    value: Option<&str>,
    now_ms: i64,
    timeout: Duration,
) -> Verdict {
    let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    let fresh = value
        .and_then(|v| serde_json::from_str::<Heartbeat>(v).ok())
        .filter(|hb| now_ms.saturating_sub(hb.sent_at_ms) <= timeout_ms);
    match (status, fresh) {
        (AgentStatus::Alive, None) => Verdict::Expired,
        (AgentStatus::Lost | AgentStatus::Terminated, Some(hb)) => Verdict::Seen(hb),
        _ => Verdict::Keep,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Sweeper {
    /// A sweeper over the agents `directory` knows, reading heartbeat keys
    /// with `redis`, appending through `handler`.
    pub fn new(
        handler: CommandHandler,
        directory: Directory,
        redis: Client,
        config: SweeperConfig,
    ) -> Self {
        Sweeper {
            handler,
            directory,
            redis,
            config,
            leader: std::sync::Arc::new(watch::channel(false).0),
        }
    }

    /// Whether this sweeper holds the lock (acts) now; changes as it takes
    /// or loses it.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Runs until `stop` turns true (or its sender is dropped): becomes the
    /// sweeper when the lock is free, then sweeps every interval while it
    /// holds it. Waits for the directory to catch up with the log before
    /// the first sweep.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut lock = AdvisoryLock::new(
            SWEEPER_LOCK,
            "agent liveness sweeper",
            self.config.database_url.clone(),
        );
        let mut caught_up = false;
        let mut ticker =
            tokio::time::interval(self.config.sweep_interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                    continue;
                }
            }
            if !caught_up {
                match self.handler.store().head_position().await {
                    Ok(head) => {
                        caught_up = self
                            .directory
                            .wait_for(head, self.config.sweep_interval)
                            .await;
                    }
                    Err(e) => tracing::warn!(error = %e, "sweeper: cannot read the log head"),
                }
                if !caught_up {
                    continue;
                }
            }
            let leading = lock.hold().await;
            self.leader
                .send_if_modified(|l| std::mem::replace(l, leading) != leading);
            metrics::gauge!("agent_sweeper_leader").set(if leading { 1.0 } else { 0.0 });
            if !leading {
                continue;
            }
            let started = std::time::Instant::now();
            match self.sweep().await {
                Ok(swept) => {
                    metrics::counter!("agent_sweeps_total").increment(1);
                    metrics::histogram!("agent_sweep_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if swept.appended > 0 {
                        tracing::info!(?swept, "agent liveness changed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sweep failed; next interval"),
            }
        }
        metrics::gauge!("agent_sweeper_leader").set(0.0);
        lock.release().await;
        self.leader
            .send_if_modified(|l| std::mem::replace(l, false));
    }

    /// One sweep over every agent the directory knows (whether or not this
    /// manager holds the lock: [`run`](Self::run) sees to that).
    pub async fn sweep(&self) -> Result<Swept, fred::error::Error> {
        let agents: Vec<(String, AgentStatus)> = self
            .directory
            .all()
            .into_iter()
            .filter_map(|(id, a)| match a.status {
                Some(s @ (AgentStatus::Alive | AgentStatus::Lost | AgentStatus::Terminated)) => {
                    Some((id, s))
                }
                _ => None,
            })
            .collect();
        let mut swept = Swept {
            checked: agents.len(),
            ..Default::default()
        };
        if agents.is_empty() {
            return Ok(swept);
        }
        let reads = agents.chunks(MGET_CHUNK).map(|chunk| {
            let keys: Vec<String> = chunk
                .iter()
                .map(|(id, _)| heartbeat_key(&self.config.key_prefix, id))
                .collect();
            self.redis.mget::<Vec<Option<String>>, _>(keys)
        });
        let values: Vec<Option<String>> = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let now = now_ms();
        let mut commands = Vec::new();
        for ((id, status), value) in agents.into_iter().zip(values) {
            match verdict(status, value.as_deref(), now, self.config.heartbeat_timeout) {
                Verdict::Keep => {}
                Verdict::Expired => {
                    swept.expired += 1;
                    commands.push((id, AgentCommand::HeartbeatExpired));
                }
                Verdict::Seen(hb) => {
                    swept.seen += 1;
                    commands.push((
                        id,
                        AgentCommand::HeartbeatSeen {
                            instance: hb.instance,
                            addr: hb.addr,
                        },
                    ));
                }
            }
        }
        if swept.expired > 0 {
            metrics::counter!("agent_liveness_commands_total", "command" => "expired")
                .increment(swept.expired as u64);
        }
        if swept.seen > 0 {
            metrics::counter!("agent_liveness_commands_total", "command" => "seen")
                .increment(swept.seen as u64);
        }
        let mut results = stream::iter(commands)
            .map(|(id, command)| async move {
                let metadata = EventMetadata {
                    request_id: Some("agent-sweeper".into()),
                    ..Default::default()
                };
                let result = self
                    .handler
                    .execute::<Agent>(&stream_id(&id), command, metadata)
                    .await;
                (id, result)
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((id, result)) = results.next().await {
            match result {
                Ok(done) => swept.appended += done.events.len(),
                Err(e) => {
                    tracing::warn!(agent = %id, error = %e, "liveness command failed; next sweep retries")
                }
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(sent_at_ms: i64) -> String {
        serde_json::to_string(&Heartbeat {
            instance: uuid::Uuid::nil(),
            addr: "tcp://h:1".into(),
            sent_at_ms,
            kernels: 0,
        })
        .unwrap_or_default()
    }

    #[test]
    fn verdicts() {
        let t = Duration::from_secs(9);
        let now = 100_000;
        let fresh = hb(now - 1_000);
        let stale = hb(now - 10_000);
        assert_eq!(
            verdict(AgentStatus::Alive, Some(&fresh), now, t),
            Verdict::Keep
        );
        assert_eq!(
            verdict(AgentStatus::Alive, Some(&stale), now, t),
            Verdict::Expired
        );
        assert_eq!(verdict(AgentStatus::Alive, None, now, t), Verdict::Expired);
        assert_eq!(
            verdict(AgentStatus::Alive, Some("garbage"), now, t),
            Verdict::Expired
        );
        assert!(matches!(
            verdict(AgentStatus::Lost, Some(&fresh), now, t),
            Verdict::Seen(h) if h.addr == "tcp://h:1"
        ));
        assert!(matches!(
            verdict(AgentStatus::Terminated, Some(&fresh), now, t),
            Verdict::Seen(_)
        ));
        assert_eq!(
            verdict(AgentStatus::Lost, Some(&stale), now, t),
            Verdict::Keep
        );
        assert_eq!(verdict(AgentStatus::Lost, None, now, t), Verdict::Keep);
        assert_eq!(
            verdict(AgentStatus::Decommissioned, Some(&fresh), now, t),
            Verdict::Keep
        );
    }
}
