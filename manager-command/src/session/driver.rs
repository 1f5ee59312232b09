//! The kernel driver: carries out on agents what the log decided.
//!
//! Level-triggered, like the scheduler, and run by the manager that holds
//! the scheduler's lock: whenever the [`SessionView`] moves (and every
//! tick) it looks for
//! - sessions SCHEDULED → `create_kernels` on each of their agents (all in
//!   parallel), keyed by the `SessionScheduled` event's id, so a call
//!   repeated after a manager restart creates nothing twice. The answer's
//!   kernels are recorded started (the agents' own notices record the
//!   steps on the way; whichever comes first counts, the other appends
//!   nothing); a refusal or no answer within `create_timeout` records the
//!   agent's kernels ERROR (`failed-to-start`), which frees their slots;
//! - kernels TERMINATING → `destroy_kernel`, keyed by the id of the event
//!   that made them TERMINATING; the answer records them TERMINATED. A
//!   kernel whose agent is not alive is recorded TERMINATED at once
//!   (`agent-lost`): there is nobody to ask;
//! - kernels RESTARTING → `restart_kernel`, then recorded running again.
//!
//! Calls are at least once; each is in flight at most once per manager.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_rpc::RpcError;
use agent_rpc::kernel::{
    ClusterInfo, ClusterMode as RpcClusterMode, CreateKernelsRequest, DestroyKernelRequest,
    ImageRef, KernelConfig, KernelCreationInfo, RestartKernelRequest,
};
use manager_events::EventMetadata;
use manager_events::session::{ClusterMode, ErrorInfo, KernelStatus, ServicePort, SessionStatus};
use tokio::sync::watch;
use uuid::Uuid;

use super::view::{SessionEntry, SessionView};
use super::{ActOnSession, SessionCommand, Started};
use crate::agent::AgentClients;
use crate::handler::CommandHandler;

/// Settings of the driver.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Look at the view at least this often.
    pub tick: Duration,
    /// How long `create_kernels` may take (pulling an image included).
    pub create_timeout: Duration,
    /// How long `destroy_kernel` may take.
    pub destroy_timeout: Duration,
    /// What the sweeper turns into commands.
    pub sweep: super::sweeper::SweepConfig,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick: Duration::from_secs(1),
            create_timeout: Duration::from_secs(600),
            destroy_timeout: Duration::from_secs(60),
            sweep: super::sweeper::SweepConfig::default(),
        }
    }
}

/// The driver; cheap to clone.
#[derive(Clone)]
pub struct Driver {
    handler: CommandHandler,
    view: SessionView,
    clients: AgentClients,
    config: DriverConfig,
    in_flight: Arc<Mutex<HashSet<(Uuid, &'static str)>>>,
    activity: Option<super::activity::Activity>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Removes an in-flight mark when the call's task ends, however it ends.
struct Flight {
    set: Arc<Mutex<HashSet<(Uuid, &'static str)>>>,
    key: (Uuid, &'static str),
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.key);
        }
    }
}

fn meta(what: &str) -> EventMetadata {
    EventMetadata {
        request_id: Some(format!("driver:{what}")),
        ..EventMetadata::default()
    }
}

/// What a kernel's creation info says, as the session records it.
pub fn started_of(info: &KernelCreationInfo) -> Started {
    Started {
        container_id: info.container_id.clone(),
        kernel_host: info.kernel_host.clone(),
        repl_in_port: info.repl_in_port,
        repl_out_port: info.repl_out_port,
        service_ports: info
            .service_ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                protocol: p.protocol.clone(),
                container_ports: p.container_ports.clone(),
                host_ports: p.host_ports.clone(),
            })
            .collect(),
        occupied_slots: info.resource_slots.clone(),
    }
}

impl Driver {
    /// A driver over `view`, calling agents through `clients`.
    pub fn new(
        handler: CommandHandler,
        view: SessionView,
        clients: AgentClients,
        config: DriverConfig,
    ) -> Self {
        Driver {
            handler,
            view,
            clients,
            config,
            in_flight: Arc::default(),
            activity: None,
        }
    }

    /// Applies idle timeouts from the last accesses `activity` keeps.
    pub fn with_activity(mut self, activity: Option<super::activity::Activity>) -> Self {
        self.activity = activity;
        self
    }

    /// Runs until `stop` turns true, acting while `leader` is true.
    pub async fn run(self, leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.view.changes();
        let mut ticker = tokio::time::interval(self.config.tick.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut ticked = false;
            tokio::select! {
                _ = ticker.tick() => ticked = true,
                r = changes.changed() => if r.is_err() { return },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                    continue;
                }
            }
            changes.borrow_and_update();
            if *leader.borrow() {
                self.pass();
                if ticked {
                    self.sweep().await;
                }
            }
        }
    }

    /// Starts whatever calls the view asks for and are not in flight.
    pub fn pass(&self) {
        for s in self.view.actionable() {
            let Some(id) = s.state.id else { continue };
            if s.state.status == SessionStatus::Scheduled {
                if let Some(flight) = self.take(id, "create") {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _flight = flight;
                        me.create(s).await;
                    });
                }
                continue;
            }
            for k in &s.state.kernels {
                let phase = match k.status {
                    KernelStatus::Terminating => "destroy",
                    KernelStatus::Restarting => "restart",
                    _ => continue,
                };
                if let Some(flight) = self.take(k.id, phase) {
                    let me = self.clone();
                    let s = s.clone();
                    let kernel = k.id;
                    tokio::spawn(async move {
                        let _flight = flight;
                        if phase == "destroy" {
                            me.destroy(s, kernel).await;
                        } else {
                            me.restart(s, kernel).await;
                        }
                    });
                }
            }
        }
    }

    /// Sends what the sweeper finds (see [`super::sweeper`]).
    pub async fn sweep(&self) {
        let now = chrono::Utc::now();
        let mut commands = super::sweeper::sweep(&self.view, &self.config.sweep, now);
        if let Some(activity) = &self.activity {
            let candidates = super::sweeper::idle_candidates(&self.view);
            let ids: Vec<Uuid> = candidates.iter().map(|c| c.session).collect();
            match activity.last_access(&ids).await {
                Ok(seen) => commands.extend(super::sweeper::idle(&candidates, &seen, now)),
                Err(e) => tracing::warn!(error = %e, "cannot read sessions' last accesses"),
            }
        }
        for (id, command) in commands {
            let reason = match &command {
                SessionCommand::Fail { reason, .. } | SessionCommand::Destroy { reason, .. } => {
                    reason.clone()
                }
                _ => String::new(),
            };
            tracing::info!(session = %id, reason, "sweeping a session");
            metrics::counter!("session_sweeps_total", "reason" => reason).increment(1);
            self.act(id, command, "sweeper").await;
        }
    }

    fn take(&self, id: Uuid, phase: &'static str) -> Option<Flight> {
        let mut set = self.in_flight.lock().ok()?;
        set.insert((id, phase)).then(|| Flight {
            set: Arc::clone(&self.in_flight),
            key: (id, phase),
        })
    }

    async fn act(&self, id: Uuid, command: SessionCommand, what: &str) {
        if let Err(e) = self
            .handler
            .transact(&ActOnSession { id, command }, meta(what))
            .await
        {
            tracing::warn!(session = %id, error = %e, what, "could not record what an agent did");
        }
    }

    fn config_of(s: &SessionEntry, kernel: Uuid) -> Option<KernelConfig> {
        let spec = &s.state.spec;
        let k = spec.kernels.iter().find(|k| k.id == kernel)?;
        let mut environ = spec.environ.clone();
        if let Some(id) = s.state.id {
            environ.insert("BACKENDAI_SESSION_ID".into(), id.to_string());
        }
        environ.insert("BACKENDAI_SESSION_NAME".into(), spec.name.clone());
        environ.insert("BACKENDAI_KERNEL_ID".into(), kernel.to_string());
        environ.insert("BACKENDAI_CLUSTER_ROLE".into(), k.cluster_role.clone());
        environ.insert("BACKENDAI_CLUSTER_IDX".into(), k.cluster_idx.to_string());
        environ.insert("BACKENDAI_CLUSTER_HOST".into(), k.cluster_hostname.clone());
        environ.insert(
            "BACKENDAI_CLUSTER_SIZE".into(),
            spec.kernels.len().to_string(),
        );
        environ.insert(
            "BACKENDAI_ACCESS_KEY".into(),
            s.state.owner.access_key.clone(),
        );
        Some(KernelConfig {
            kernel_id: kernel,
            image: ImageRef {
                canonical: spec.image.canonical.clone(),
                architecture: spec.image.architecture.clone(),
                digest: None,
                registry: spec.image.registry.clone(),
                registry_url: String::new(),
                labels: BTreeMap::new(),
                is_local: false,
            },
            auto_pull: "digest".into(),
            session_type: spec.session_type.as_str().into(),
            cluster_role: k.cluster_role.clone(),
            cluster_idx: k.cluster_idx,
            cluster_hostname: k.cluster_hostname.clone(),
            local_rank: k.local_rank,
            resource_slots: spec.slots_per_kernel.clone(),
            resource_opts: spec.resource_opts.clone(),
            environ,
            mounts: Vec::new(),
            idle_timeout: None,
            bootstrap_script: spec.bootstrap_script.clone(),
            startup_command: (k.cluster_role == "main")
                .then(|| spec.startup_command.clone())
                .flatten(),
            preopen_ports: spec.preopen_ports.clone(),
            allocated_host_ports: Vec::new(),
            scaling_group: spec.scaling_group.clone(),
            endpoint_id: None,
        })
    }

    async fn create(&self, s: SessionEntry) {
        let (Some(id), Some(key)) = (s.state.id, s.scheduled_event) else {
            return;
        };
        let mut by_agent: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
        for k in &s.state.kernels {
            if let Some(agent) = &k.agent_id {
                by_agent.entry(agent.clone()).or_default().push(k.id);
            }
        }
        let spec = &s.state.spec;
        let mut replicas = BTreeMap::new();
        for k in &spec.kernels {
            *replicas.entry(k.cluster_role.clone()).or_insert(0u32) += 1;
        }
        let cluster_info = ClusterInfo {
            mode: match spec.cluster_mode {
                ClusterMode::SingleNode => RpcClusterMode::SingleNode,
                ClusterMode::MultiNode => RpcClusterMode::MultiNode,
            },
            size: u32::try_from(spec.kernels.len()).unwrap_or(u32::MAX),
            replicas,
            ..ClusterInfo::default()
        };
        let calls = by_agent.into_iter().map(|(agent, kernels)| {
            let request = CreateKernelsRequest {
                idempotency_key: key.to_string(),
                session_id: id,
                kernels: kernels
                    .iter()
                    .filter_map(|k| Self::config_of(&s, *k))
                    .collect(),
                cluster_info: cluster_info.clone(),
            };
            async move {
                let result = match self.clients.get(&agent) {
                    Ok(client) => tokio::time::timeout(
                        self.config.create_timeout,
                        client.create_kernels(request),
                    )
                    .await
                    .unwrap_or(Err(RpcError::Timeout {
                        operation: "create_kernels",
                        timeout: self.config.create_timeout,
                    }))
                    .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (agent, kernels, result)
            }
        });
        for (agent, kernels, result) in futures::future::join_all(calls).await {
            match result {
                Ok(answer) => {
                    for info in &answer.kernels {
                        self.act(
                            id,
                            SessionCommand::Start {
                                kernel_id: info.kernel_id,
                                started: started_of(info),
                            },
                            "create_kernels",
                        )
                        .await;
                    }
                }
                Err(e) => {
                    tracing::warn!(session = %id, agent, error = %e, "create_kernels failed");
                    self.act(
                        id,
                        SessionCommand::Fail {
                            kernel_ids: kernels,
                            reason: "failed-to-start".into(),
                            error: ErrorInfo {
                                src: "agent".into(),
                                name: "KernelCreationFailed".into(),
                                repr: e,
                                agent_id: Some(agent),
                            },
                        },
                        "create_kernels",
                    )
                    .await;
                }
            }
        }
    }

    async fn destroy(&self, s: SessionEntry, kernel: Uuid) {
        let Some(id) = s.state.id else { return };
        let Some(k) = s.state.kernels.iter().find(|k| k.id == kernel) else {
            return;
        };
        let key = s
            .kernel_events
            .get(&kernel)
            .map_or_else(|| kernel.to_string(), ToString::to_string);
        let gone = |reason: &str, exit_code| SessionCommand::KernelGone {
            kernel_id: kernel,
            reason: reason.to_owned(),
            exit_code,
        };
        let Some(agent) = k.agent_id.clone() else {
            self.act(id, gone("missing-agent-allocation", None), "destroy_kernel")
                .await;
            return;
        };
        let client = match self.clients.get(&agent) {
            Ok(c) => c,
            Err(
                crate::agent::ClientsError::NotAlive { .. }
                | crate::agent::ClientsError::Unknown(_),
            ) => {
                self.act(id, gone("agent-lost", None), "destroy_kernel")
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!(session = %id, agent, error = %e, "no client for destroy_kernel");
                return;
            }
        };
        let reason = s.state.status_info.clone();
        let request = DestroyKernelRequest {
            idempotency_key: key,
            kernel_id: kernel,
            session_id: id,
            reason: reason.clone(),
            suppress_events: false,
        };
        match tokio::time::timeout(self.config.destroy_timeout, client.destroy_kernel(request))
            .await
        {
            Ok(Ok(answer)) => {
                self.act(id, gone(&reason, answer.exit_code), "destroy_kernel")
                    .await;
            }
            Ok(Err(e)) => {
                tracing::warn!(session = %id, %kernel, agent, error = %e, "destroy_kernel failed; retried next pass");
            }
            Err(_) => {
                tracing::warn!(session = %id, %kernel, agent, "destroy_kernel: no answer; retried next pass");
            }
        }
    }

    async fn restart(&self, s: SessionEntry, kernel: Uuid) {
        let Some(id) = s.state.id else { return };
        let Some(agent) = s
            .state
            .kernels
            .iter()
            .find(|k| k.id == kernel)
            .and_then(|k| k.agent_id.clone())
        else {
            return;
        };
        let key = s
            .kernel_events
            .get(&kernel)
            .map_or_else(|| kernel.to_string(), ToString::to_string);
        let Ok(client) = self.clients.get(&agent) else {
            return;
        };
        let request = RestartKernelRequest {
            idempotency_key: key,
            session_id: id,
            kernel_id: kernel,
            updated_config: None,
        };
        match tokio::time::timeout(self.config.create_timeout, client.restart_kernel(request)).await
        {
            Ok(Ok(info)) => {
                self.act(
                    id,
                    SessionCommand::Start {
                        kernel_id: kernel,
                        started: started_of(&info),
                    },
                    "restart_kernel",
                )
                .await;
            }
            Ok(Err(e)) => {
                self.act(
                    id,
                    SessionCommand::Fail {
                        kernel_ids: vec![kernel],
                        reason: "restart-failed".into(),
                        error: ErrorInfo {
                            src: "agent".into(),
                            name: "KernelRestartFailed".into(),
                            repr: e.to_string(),
                            agent_id: Some(agent),
                        },
                    },
                    "restart_kernel",
                )
                .await;
            }
            Err(_) => tracing::warn!(session = %id, %kernel, "restart_kernel: no answer"),
        }
    }
}
