//! Agents on the write side: the aggregate, the notice ingester, the
//! liveness sweeper and the RPC clients.
//!
//! Agents tell the managers about themselves through Redis (see
//! `agent_rpc::notice`): a heartbeat key each, refreshed every period, and
//! notices on one stream when something changes. This module turns those
//! into the events of each agent's stream (`agent:<id>`), appending only
//! what changed.
//!
//! # Layout
//! - [`aggregate`]: [`Agent`] — register, describe, lose, rejoin, stop,
//!   decommission; pure `decide`/`apply`.
//! - [`ingester`]: [`Ingester`] — the notice stream, read through a
//!   consumer group, each notice a command keyed by its entry id.
//! - [`directory`]: [`Directory`] — every agent's state, folded from the
//!   log by a subscription; what the sweeper and the clients look at.
//! - [`sweeper`]: [`Sweeper`] — heartbeat keys → lost and rejoined, one
//!   manager at a time (PostgreSQL advisory lock).
//! - [`clients`]: [`AgentClients`] — one RPC client per alive agent at its
//!   current address.
//! - [`AgentServices`]: all of it started together, as `manager
//!   start-server` runs it.
//!
//! # Guarantees
//! - A notice is handled at least once and appends at most once; a notice
//!   that cannot be handled is dead-lettered, never retried forever.
//! - A heartbeat or notice that changes nothing appends nothing.
//! - An agent whose heartbeat key is missing or older than
//!   `heartbeat_timeout` is LOST within one sweep interval (plus the
//!   directory's lag behind the log); only one sweeper acts at a time.
//! - No RPC goes to an agent that the log says is not alive, nor to an
//!   address it has left.

pub mod aggregate;
pub mod clients;
pub mod directory;
pub mod ingester;
pub mod sweeper;

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::config::{Config, PerformanceConfig, ReconnectPolicy};
use manager_events::EventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use aggregate::{Agent, AgentCommand, AgentCommandError, stream_id};
pub use clients::{AgentClients, ClientsError};
pub use directory::Directory;
pub use ingester::{IgnoreKernelNotices, Ingester, IngesterConfig, KernelNotices, NoticeFailure};
pub use sweeper::{Sweeper, SweeperConfig};

use crate::handler::CommandHandler;

/// The agents' built-in development RPC key (the same text as the
/// reference agent's `DEVELOPMENT_CLUSTER_KEY`), used when none is
/// configured, with a warning. Never on a real cluster.
pub const DEVELOPMENT_RPC_KEY: &str = "development-agent-rpc-key-do-not-use-in-production";

/// Connects a Redis client for the agent services: reconnects forever with
/// backoff, each command gives up after `command_timeout`.
pub async fn connect_redis(
    url: &str,
    command_timeout: Duration,
) -> Result<Client, fred::error::Error> {
    let performance = PerformanceConfig {
        default_command_timeout: command_timeout,
        ..Default::default()
    };
    let reconnect = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
    let client = Client::new(
        Config::from_url(url)?,
        Some(performance),
        None,
        Some(reconnect),
    );
    client.init().await?;
    Ok(client)
}

/// Settings of [`AgentServices`].
#[derive(Debug, Clone)]
pub struct AgentServicesConfig {
    /// Redis URL.
    pub redis_url: String,
    /// The database of the event log (the sweeper's lock lives there).
    pub database_url: String,
    /// The ingester's settings.
    pub ingester: IngesterConfig,
    /// The sweeper's settings.
    pub sweeper: SweeperConfig,
    /// How RPC clients to agents are made (the agents' RPC key).
    pub rpc: agent_rpc::ClientConfig,
}

/// The agent side of a running manager: directory, ingester, sweeper and
/// RPC clients, stopped together.
pub struct AgentServices {
    directory: Directory,
    clients: AgentClients,
    consumer: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    redis: Vec<Client>,
}

impl std::fmt::Debug for AgentServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentServices")
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl AgentServices {
    /// Starts everything over `handler`'s store: the directory follows the
    /// log from the start, the ingester reads notices, the sweeper competes
    /// for its lock. Fails only if Redis cannot be reached.
    pub async fn start(
        handler: CommandHandler,
        config: AgentServicesConfig,
    ) -> Result<AgentServices, fred::error::Error> {
        Self::start_with(handler, config, std::sync::Arc::new(IgnoreKernelNotices)).await
    }

    /// [`start`](Self::start), handing kernel notices to `kernels`.
    pub async fn start_with(
        handler: CommandHandler,
        config: AgentServicesConfig,
        kernels: std::sync::Arc<dyn KernelNotices>,
    ) -> Result<AgentServices, fred::error::Error> {
        describe_metrics();
        let store: EventStore = handler.store().clone();
        // The ingester's blocking reads hold a connection of their own.
        let block = config.ingester.block;
        let reading = connect_redis(&config.redis_url, block + Duration::from_secs(5)).await?;
        let keys = connect_redis(&config.redis_url, Duration::from_secs(2)).await?;
        let (stop, stopped) = watch::channel(false);
        let directory = Directory::new();
        let clients = AgentClients::new(directory.clone(), config.rpc);
        let ingester = Ingester::new(handler.clone(), reading.clone(), config.ingester)
            .with_kernel_notices(kernels);
        let consumer = ingester.consumer().to_owned();
        let sweeper = Sweeper::new(handler, directory.clone(), keys.clone(), config.sweeper);
        let tasks = vec![
            tokio::spawn(directory.clone().follow(store, stopped.clone())),
            tokio::spawn(clients.clone().prune_on_changes(stopped.clone())),
            tokio::spawn(ingester.run(stopped.clone())),
            tokio::spawn(sweeper.run(stopped)),
        ];
        tracing::info!(consumer = %consumer, "agent notice ingester and liveness sweeper started");
        Ok(AgentServices {
            directory,
            clients,
            consumer,
            stop,
            tasks,
            redis: vec![reading, keys],
        })
    }

    /// The agents as the log tells them.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// RPC clients of the alive agents.
    pub fn clients(&self) -> &AgentClients {
        &self.clients
    }

    /// This manager's consumer name on the notice stream.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Stops everything: the ingester finishes the batch in hand (at most
    /// one blocking read), the sweeper releases its lock.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "an agent service task failed");
            }
        }
        for client in self.redis {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.quit()).await;
        }
    }
}

/// Names and explains the agent services' metrics, so that they are listed
/// (at zero) from the first scrape on.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "agent_notices_total",
        "Agent notices read from the notice stream, by notice name (invalid: did not parse)."
    );
    describe_counter!(
        "agent_notices_dead_lettered_total",
        "Agent notices copied to the dead-letter stream (malformed, or refused) and acknowledged."
    );
    describe_counter!(
        "agent_notice_retries_total",
        "Agent notices left pending after a transient failure, to be retried."
    );
    describe_counter!(
        "agent_notices_claimed_total",
        "Agent notices taken over from a manager that left them pending (XAUTOCLAIM)."
    );
    describe_histogram!(
        "agent_notice_handling_seconds",
        Unit::Seconds,
        "Handling one agent notice, by kind (agent, kernel)."
    );
    describe_gauge!(
        "agent_sweeper_leader",
        "1 on the manager whose liveness sweeper acts (holds the lock), else 0."
    );
    describe_counter!("agent_sweeps_total", "Liveness sweeps made.");
    describe_histogram!(
        "agent_sweep_seconds",
        Unit::Seconds,
        "One liveness sweep: read the heartbeat keys, send the commands."
    );
    describe_counter!(
        "agent_liveness_commands_total",
        "Liveness commands sent by the sweeper: expired (heartbeat gone or stale), seen (heartbeat back)."
    );
    for counter in [
        "agent_notices_dead_lettered_total",
        "agent_notice_retries_total",
        "agent_notices_claimed_total",
        "agent_sweeps_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    for command in ["expired", "seen"] {
        metrics::counter!("agent_liveness_commands_total", "command" => command).increment(0);
    }
    metrics::gauge!("agent_sweeper_leader").set(0.0);
}
