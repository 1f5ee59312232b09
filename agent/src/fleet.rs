//! The agents one process runs — one, or `agent.count` of them for scale
//! tests — with their RPC servers, their heartbeats and their goodbyes.
//!
//! **Start** ([`Fleet::start`]): bind every agent's RPC server (agent n on
//! port + n, or a free port with port 0), start serving, write every
//! heartbeat key once, then send each agent's `agent_started`. So by the
//! time a manager hears of an agent, the agent answers RPC and is alive.
//!
//! **Heartbeats** share one Redis connection. The period is cut into up to
//! `period / 50 ms` slices (never more slices than agents); each agent
//! belongs to one slice, and each slice's keys are written in one pipeline.
//! The schedule starts at a random offset, so agents started together on
//! many hosts do not beat in step.
//!
//! **Shutdown** ([`Fleet::shutdown`]): stop serving RPC (running calls
//! finish), destroy the process backend's kernels (`process.destroy_on_shutdown`),
//! stop the heartbeats, send `agent_terminated{reason: "shutdown"}`, delete
//! the heartbeat keys, and wait (bounded) until Redis has it all.

use std::net::{ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use agent_rpc::{Server, ServerConfig, ServerHandle};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::agent::{Agent, Identity, Settings};
use crate::backend::Backend;
use crate::config::{BackendKind, Config, ConfigError};
use crate::error::AgentError;
use crate::report::{Notifier, Reporter};

/// The shortest slice of a heartbeat period that gets its own pipeline.
const SLICE: Duration = Duration::from_millis(50);

/// The running agents of this process.
#[derive(Debug)]
pub struct Fleet {
    config: Config,
    agents: Vec<Arc<Agent>>,
    servers: Vec<ServerHandle>,
    endpoints: Vec<String>,
    reporter: Reporter,
    stop_heartbeats: watch::Sender<bool>,
    heartbeats: JoinHandle<()>,
    event_loops: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts the agents `config` describes. Must be called inside a Tokio
    /// runtime. Redis need not be up: heartbeats and notices wait for it.
    pub async fn start(config: Config) -> Result<Fleet, AgentError> {
        config.validate()?;
        let (cluster_key, development) = config.cluster_key()?;
        if development {
            tracing::warn!(
                "no rpc.cluster_key configured: using the built-in DEVELOPMENT key; never do this on a real cluster"
            );
        }
        let reporter = Reporter::connect(&config.redis)?;
        let base_id = config.base_id();
        let count = config.agent.count;
        let (listen_host, listen_port) = split_endpoint(&config.rpc.listen)?;
        let advertised = if config.rpc.advertised_addr.is_empty() {
            None
        } else {
            Some(split_endpoint(&config.rpc.advertised_addr)?)
        };
        let derived_host = if is_wildcard(&listen_host) && advertised.is_none() {
            Some(outbound_host(&config.redis.url))
        } else {
            None
        };
        let settings = settings_of(&config)?;

        let mut agents = Vec::new();
        let mut servers = Vec::new();
        let mut endpoints = Vec::new();
        let mut event_loops = Vec::new();
        for n in 0..count {
            let id = if count == 1 {
                base_id.clone()
            } else {
                format!("{base_id}-{n}")
            };
            let port = if listen_port == 0 {
                0
            } else {
                let p = u32::from(listen_port) + n;
                u16::try_from(p).map_err(|_| {
                    ConfigError::Value(format!("agent {n} would listen on port {p}"))
                })?
            };
            let mut server_config = ServerConfig::new(cluster_key.clone());
            server_config.max_in_flight = config.rpc.max_in_flight.max(1);
            let server = Server::bind(&format!("tcp://{listen_host}:{port}"), server_config)?;
            let bound = server.local_endpoint().to_owned();
            let bound_port = split_endpoint(&bound).map(|(_, p)| p).unwrap_or(port);
            let addr = match &advertised {
                Some((host, 0)) => format!("tcp://{host}:{bound_port}"),
                Some((host, p)) => format!("tcp://{host}:{}", u32::from(*p) + n),
                None => {
                    let host = derived_host.clone().unwrap_or_else(|| listen_host.clone());
                    format!("tcp://{host}:{bound_port}")
                }
            };
            let identity = Identity {
                id: id.clone(),
                instance: Uuid::new_v4(),
                addr,
                key_prefix: config.redis.key_prefix.clone(),
            };
            let (events_tx, mut events_rx) = mpsc::unbounded_channel();
            let backend = Backend::from_config(&config, n, events_tx)?;
            let notifier = Notifier::new(&id, identity.instance, reporter.clone());
            let agent = Arc::new(Agent::new(identity, settings.clone(), backend, notifier));
            {
                let agent = Arc::clone(&agent);
                event_loops.push(tokio::spawn(async move {
                    while let Some(event) = events_rx.recv().await {
                        agent.on_backend_event(event).await;
                    }
                }));
            }
            tracing::info!(agent = %id, listen = %bound, addr = %agent.addr(), backend = agent.backend().name(), "agent RPC bound");
            servers.push(server.spawn(Arc::clone(&agent)));
            endpoints.push(bound);
            agents.push(agent);
        }

        // Alive before announced (Redis may be down: then the schedule
        // writes the keys once it is back).
        reporter
            .wait_connected(Duration::from_millis(config.redis.command_timeout_ms))
            .await;
        let beats: Vec<(String, String)> = agents
            .iter()
            .map(|a| (a.heartbeat_key(), a.heartbeat()))
            .collect();
        if let Err(e) = reporter
            .set_heartbeats(&beats, config.heartbeat.ttl())
            .await
        {
            tracing::debug!(error = %e, "first heartbeats not written; retrying on schedule");
        }
        for agent in &agents {
            agent.announce_start();
        }

        let (stop_heartbeats, stopped) = watch::channel(false);
        let heartbeats = tokio::spawn(heartbeat_loop(
            reporter.clone(),
            agents.clone(),
            config.heartbeat.interval(),
            config.heartbeat.ttl(),
            stopped,
        ));
        tracing::info!(agents = agents.len(), "agents started");
        Ok(Fleet {
            config,
            agents,
            servers,
            endpoints,
            reporter,
            stop_heartbeats,
            heartbeats,
            event_loops,
        })
    }

    /// The agents.
    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// Where each agent's RPC server is bound (`tcp://host:port`), in agent
    /// order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The configuration running.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The Redis reporter shared by the agents.
    pub fn reporter(&self) -> &Reporter {
        &self.reporter
    }

    /// Takes up a reloaded configuration: the slots, slot types, region,
    /// scaling group, public host, abuse report path and `[dummy]` settings.
    /// Agents whose reported info changed send `agent_info_changed`. Returns
    /// the changed keys that need a restart (they are ignored).
    pub fn reload(&mut self, new: Config) -> Result<Vec<&'static str>, AgentError> {
        new.validate()?;
        let settings = settings_of(&new)?;
        let ignored = self.config.reloadable_differences(&new);
        for agent in &self.agents {
            agent.backend().reload(&new.dummy);
            agent.update_settings(settings.clone());
        }
        // Keep what was not taken up, so the next reload compares with
        // what really runs.
        let mut kept = self.config.clone();
        kept.slots = new.slots;
        kept.slot_types = new.slot_types;
        kept.agent.region = new.agent.region;
        kept.agent.scaling_group = new.agent.scaling_group;
        kept.agent.public_host = new.agent.public_host;
        kept.agent.abuse_report_path = new.agent.abuse_report_path;
        kept.dummy = new.dummy;
        self.config = kept;
        Ok(ignored)
    }

    /// Stops gracefully: see the module documentation.
    pub async fn shutdown(self) {
        tracing::info!(agents = self.agents.len(), "agents shutting down");
        let stopping = self.servers.into_iter().map(|s| async move {
            if let Err(e) = s.shutdown().await {
                tracing::warn!(error = %e, "RPC server did not stop cleanly");
            }
        });
        futures::future::join_all(stopping).await;

        if self.config.agent.backend == BackendKind::Process
            && self.config.process.destroy_on_shutdown
        {
            let destroying = self.agents.iter().map(|a| a.destroy_all("agent-shutdown"));
            futures::future::join_all(destroying).await;
        }
        for task in &self.event_loops {
            task.abort();
        }

        let _ = self.stop_heartbeats.send(true);
        let _ = self.heartbeats.await;
        for agent in &self.agents {
            agent.announce_termination("shutdown");
        }
        let keys: Vec<String> = self.agents.iter().map(|a| a.heartbeat_key()).collect();
        let timeout = Duration::from_millis(self.config.redis.shutdown_timeout_ms);
        let goodbye = async {
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = self.reporter.delete(keys.clone()).await {
                tracing::debug!(error = %e, "cannot delete the heartbeat keys yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            self.reporter.flush(timeout).await
        };
        match tokio::time::timeout(timeout, goodbye).await {
            Ok(true) => {}
            _ => tracing::warn!(
                "Redis did not take the goodbyes in time; the heartbeat keys will expire by themselves"
            ),
        }
        self.reporter.close().await;
        tracing::info!("agents stopped");
    }
}

/// Writes each agent's heartbeat every `period`, one slice of the agents at
/// a time, until told to stop.
async fn heartbeat_loop(
    reporter: Reporter,
    agents: Vec<Arc<Agent>>,
    period: Duration,
    ttl: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if agents.is_empty() {
        return;
    }
    let by_period = usize::try_from(period.as_millis() / SLICE.as_millis().max(1)).unwrap_or(1);
    let slices = by_period.clamp(1, agents.len());
    let tick = period / u32::try_from(slices).unwrap_or(1);
    let offset = rand::rng().random_range(Duration::ZERO..=tick);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut slice = 0usize;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let beats: Vec<(String, String)> = agents
            .iter()
            .skip(slice)
            .step_by(slices)
            .map(|a| (a.heartbeat_key(), a.heartbeat()))
            .collect();
        slice = (slice + 1) % slices;
        tokio::select! {
            result = reporter.set_heartbeats(&beats, ttl) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, agents = beats.len(), "heartbeats not written");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// The settings every agent of `config` starts with.
fn settings_of(config: &Config) -> Result<Settings, ConfigError> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Ok(Settings {
        region: config.agent.region.clone(),
        scaling_group: config.agent.scaling_group.clone(),
        public_host: non_empty(&config.agent.public_host),
        abuse_report_path: non_empty(&config.agent.abuse_report_path),
        capacity: config.slot_capacity()?,
    })
}

/// Splits `tcp://host:port` (IPv6 hosts in brackets; `*` for any port is
/// port 0).
fn split_endpoint(endpoint: &str) -> Result<(String, u16), ConfigError> {
    let bad = || ConfigError::Value(format!("{endpoint:?} is not tcp://host:port"));
    let rest = endpoint.strip_prefix("tcp://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port = if port == "*" {
        0
    } else {
        port.parse().map_err(|_| bad())?
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "*" | "[::]" | "::")
}

/// The address this host reaches Redis from (a guess at the address the
/// managers reach it at); `127.0.0.1` when it cannot tell. Sends nothing.
fn outbound_host(redis_url: &str) -> String {
    let authority = redis_url
        .split_once("://")
        .map_or(redis_url, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or(authority);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let target = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:6379")
    };
    let guess = || -> Option<String> {
        let remote = target.to_socket_addrs().ok()?.next()?;
        let local = if remote.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(local).ok()?;
        socket.connect(remote).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        Some(if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        })
    };
    guess().unwrap_or_else(|| "127.0.0.1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_split() {
        assert_eq!(
            split_endpoint("tcp://0.0.0.0:6011").unwrap(),
            ("0.0.0.0".to_owned(), 6011)
        );
        assert_eq!(
            split_endpoint("tcp://[::1]:*").unwrap(),
            ("[::1]".to_owned(), 0)
        );
        assert!(split_endpoint("udp://x:1").is_err());
        assert!(split_endpoint("tcp://:1").is_err());
        assert_eq!(outbound_host("redis://127.0.0.1:8111/0"), "127.0.0.1");
    }
}
