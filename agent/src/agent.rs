//! One agent: its identity, its kernel registry and slot accounting, and its
//! answers to the manager's calls ([`Handler`]).
//!
//! The **registry** maps each kernel id to an entry whose state —
//! creating, running, gone — sits behind an async lock: creating, destroying
//! and restarting a kernel hold it, so two lifecycle calls on one kernel
//! never interleave, and a call on a kernel being created waits for it.
//! Executions only hold it long enough to find the running kernel, so a
//! long execution never holds up the kernel's destruction (which kills it).
//!
//! **Repeats are harmless** beyond what the server's idempotency cache
//! catches (e.g. after an agent restart, or with another key): creating a
//! kernel that exists answers its creation info, destroying a kernel that is
//! gone answers `already_terminated`.
//!
//! **Notices** go out as the reference's lifecycle events:
//! `kernel_preparing`, `kernel_pulling` (when the backend pulls),
//! `kernel_creating`, `kernel_started` (with the creation info), and
//! `kernel_terminated` (reason and exit code) when a kernel is destroyed,
//! fails to start, exits by itself (`self-terminated`) or is not known to
//! the manager (`not-found-in-manager`, from `sync_kernel_registry`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use agent_rpc::agent::{
    HealthRequest, HealthResponse, KernelRef, LocalConfig, SyncKernelRegistryRequest,
    SyncKernelRegistryResponse,
};
use agent_rpc::execute::{ExecuteRequest, ExecuteResult};
use agent_rpc::kernel::{
    AttachedDevice, CreateKernelsRequest, CreateKernelsResponse, DestroyKernelRequest,
    DestroyKernelResponse, GetLogsRequest, GetLogsResponse, InterruptKernelRequest,
    InterruptKernelResponse, KernelConfig, KernelCreationInfo, RestartKernelRequest,
};
use agent_rpc::notice::{AgentInfo, Heartbeat, NoticeBody, heartbeat_key};
use agent_rpc::{Handler, PROTOCOL_VERSION, RemoteError, Request, Response};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::backend::{Backend, BackendEvent, KernelHandle};
use crate::report::{Notifier, now_ms};
use crate::slots::{AllocError, Amount, SlotTable, SlotType};

/// The agent software's version, as reported.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What an agent says about itself that a configuration reload may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Its region.
    pub region: String,
    /// The scaling group it asks to join.
    pub scaling_group: String,
    /// The host users reach its kernels at, if any.
    pub public_host: Option<String>,
    /// Where abuse reports go, if anywhere.
    pub abuse_report_path: Option<String>,
    /// Declared capacity by slot.
    pub capacity: BTreeMap<String, (SlotType, Amount)>,
}

/// Who an agent is.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its id.
    pub id: String,
    /// This process's incarnation of it.
    pub instance: Uuid,
    /// Where its RPC server is reached, `tcp://host:port`.
    pub addr: String,
    /// The Redis key prefix (its heartbeat key derives from it).
    pub key_prefix: String,
}

/// One agent. Shared (`Arc`) between its RPC server, its heartbeats and its
/// backend's event loop.
#[derive(Debug)]
pub struct Agent {
    identity: Identity,
    kernel_host: String,
    state: Mutex<State>,
    kernels: Mutex<HashMap<Uuid, Arc<Entry>>>,
    backend: Backend,
    notifier: Notifier,
}

#[derive(Debug)]
struct State {
    settings: Settings,
    slots: SlotTable,
    /// The info last announced (`agent_started` / `agent_info_changed`).
    announced: Option<AgentInfo>,
}

/// A kernel in the registry.
#[derive(Debug)]
struct Entry {
    session_id: Uuid,
    state: Arc<AsyncMutex<KernelState>>,
}

#[derive(Debug)]
enum KernelState {
    /// Being created (the creator holds the lock, so nobody sees this).
    Creating,
    Running(Box<Running>),
    Gone,
}

#[derive(Debug)]
struct Running {
    handle: KernelHandle,
    info: KernelCreationInfo,
    config: KernelConfig,
    slots: BTreeMap<String, Amount>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn alloc_error(e: AllocError) -> RemoteError {
    match e {
        AllocError::BadAmount { .. } | AllocError::UnknownSlot(_) => {
            RemoteError::invalid_argument(e.to_string())
        }
        AllocError::Insufficient { .. } => RemoteError::FailedPrecondition {
            message: e.to_string(),
        },
    }
}

fn reason_or(reason: &str, default: &str) -> String {
    if reason.is_empty() {
        default.to_owned()
    } else {
        reason.to_owned()
    }
}

impl Agent {
    /// An agent with no kernels.
    pub fn new(
        identity: Identity,
        settings: Settings,
        backend: Backend,
        notifier: Notifier,
    ) -> Agent {
        let kernel_host = host_of(&identity.addr);
        let slots = SlotTable::new(settings.capacity.clone());
        Agent {
            identity,
            kernel_host,
            state: Mutex::new(State {
                settings,
                slots,
                announced: None,
            }),
            kernels: Mutex::new(HashMap::new()),
            backend,
            notifier,
        }
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.identity.id
    }

    /// This process's incarnation.
    pub fn instance(&self) -> Uuid {
        self.identity.instance
    }

    /// Where its RPC server is reached.
    pub fn addr(&self) -> &str {
        &self.identity.addr
    }

    /// Its backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Its heartbeat key.
    pub fn heartbeat_key(&self) -> String {
        heartbeat_key(&self.identity.key_prefix, &self.identity.id)
    }

    /// Its heartbeat value now (JSON).
    pub fn heartbeat(&self) -> String {
        let hb = Heartbeat {
            instance: self.identity.instance,
            addr: self.identity.addr.clone(),
            sent_at_ms: now_ms(),
            kernels: u32::try_from(self.kernel_count()).unwrap_or(u32::MAX),
        };
        serde_json::to_string(&hb).unwrap_or_default()
    }

    /// How many kernels are in its registry.
    pub fn kernel_count(&self) -> usize {
        lock(&self.kernels).len()
    }

    /// The kernels in its registry.
    pub fn kernel_ids(&self) -> Vec<Uuid> {
        lock(&self.kernels).keys().copied().collect()
    }

    /// What the running kernels hold, by slot.
    pub fn allocated_slots(&self) -> BTreeMap<String, String> {
        lock(&self.state).slots.allocated()
    }

    /// What it reports about itself now.
    pub fn info(&self) -> AgentInfo {
        let state = lock(&self.state);
        self.info_of(&state)
    }

    fn info_of(&self, state: &State) -> AgentInfo {
        let s = &state.settings;
        let mut plugins = BTreeMap::new();
        for slot in s.capacity.keys() {
            let plugin = slot.split('.').next().unwrap_or(slot).to_owned();
            plugins.entry(plugin).or_insert_with(|| {
                BTreeMap::from([
                    ("version".to_owned(), VERSION.to_owned()),
                    ("backend".to_owned(), self.backend.name().to_owned()),
                ])
            });
        }
        AgentInfo {
            id: self.identity.id.clone(),
            addr: self.identity.addr.clone(),
            region: s.region.clone(),
            scaling_group: s.scaling_group.clone(),
            architecture: std::env::consts::ARCH.to_owned(),
            version: VERSION.to_owned(),
            protocol_version: PROTOCOL_VERSION,
            available_slots: state.slots.available(),
            slot_types: state.slots.types(),
            compute_plugins: plugins,
            public_host: s.public_host.clone(),
            auto_terminate_abusing_kernel: false,
        }
    }

    /// Sends `agent_started{reason: "self-started", info}`.
    pub fn announce_start(&self) {
        let info = {
            let mut state = lock(&self.state);
            let info = self.info_of(&state);
            state.announced = Some(info.clone());
            info
        };
        self.notifier.send(NoticeBody::AgentStarted {
            reason: "self-started".into(),
            info,
        });
    }

    /// Sends `agent_terminated{reason}`.
    pub fn announce_termination(&self, reason: &str) {
        self.notifier.send(NoticeBody::AgentTerminated {
            reason: reason.to_owned(),
        });
    }

    /// Takes up new settings (a reload, or a test); sends
    /// `agent_info_changed` when what it reports changed. Returns whether it
    /// did. Allocations are kept even if the new capacity is smaller.
    pub fn update_settings(&self, settings: Settings) -> bool {
        let info = {
            let mut state = lock(&self.state);
            state.slots.set_capacity(settings.capacity.clone());
            state.settings = settings;
            let info = self.info_of(&state);
            if state.announced.as_ref() == Some(&info) {
                return false;
            }
            state.announced = Some(info.clone());
            info
        };
        tracing::info!(agent = %self.identity.id, "agent info changed");
        self.notifier.send(NoticeBody::AgentInfoChanged { info });
        true
    }

    // ------------------------------------------------------------ kernels

    /// Creates the kernels of a session, all or none.
    pub async fn create_kernels(
        &self,
        request: CreateKernelsRequest,
    ) -> Result<CreateKernelsResponse, RemoteError> {
        if request.kernels.is_empty() {
            return Err(RemoteError::invalid_argument("no kernels to create"));
        }
        let ids: BTreeSet<Uuid> = request.kernels.iter().map(|k| k.kernel_id).collect();
        if ids.len() != request.kernels.len() {
            return Err(RemoteError::invalid_argument("a kernel id appears twice"));
        }
        let session_id = request.session_id;

        // Under the registry lock: find the kernels that exist, reserve the
        // slots of the others and enter them as being created.
        enum Plan {
            Existing(Arc<AsyncMutex<KernelState>>),
            New(Box<OwnedMutexGuard<KernelState>>, BTreeMap<String, Amount>),
        }
        let mut plans = Vec::with_capacity(request.kernels.len());
        {
            let mut kernels = lock(&self.kernels);
            let mut state = lock(&self.state);
            // What this call entered so far, to undo on a refusal.
            let mut entered: Vec<(Uuid, BTreeMap<String, Amount>)> = Vec::new();
            let mut refusal = None;
            for k in &request.kernels {
                if let Some(entry) = kernels.get(&k.kernel_id) {
                    if entry.session_id != session_id {
                        refusal = Some(RemoteError::AlreadyExists {
                            message: format!(
                                "kernel {} exists in session {}",
                                k.kernel_id, entry.session_id
                            ),
                        });
                        break;
                    }
                    plans.push(Plan::Existing(Arc::clone(&entry.state)));
                    continue;
                }
                let wanted = match state
                    .slots
                    .parse_request(&k.resource_slots)
                    .and_then(|w| state.slots.allocate(&w).map(|()| w))
                {
                    Ok(w) => w,
                    Err(e) => {
                        refusal = Some(alloc_error(e));
                        break;
                    }
                };
                let cell = Arc::new(AsyncMutex::new(KernelState::Creating));
                let Ok(guard) = Arc::clone(&cell).try_lock_owned() else {
                    state.slots.release(&wanted);
                    refusal = Some(RemoteError::internal("a fresh kernel entry is locked"));
                    break;
                };
                entered.push((k.kernel_id, wanted.clone()));
                plans.push(Plan::New(Box::new(guard), wanted));
                kernels.insert(
                    k.kernel_id,
                    Arc::new(Entry {
                        session_id,
                        state: cell,
                    }),
                );
            }
            if let Some(refusal) = refusal {
                for (kernel_id, wanted) in entered {
                    kernels.remove(&kernel_id);
                    state.slots.release(&wanted);
                }
                return Err(refusal);
            }
        }

        // Create the new kernels concurrently; answer the existing ones.
        let work = plans
            .into_iter()
            .zip(request.kernels.iter())
            .map(|(plan, config)| async move {
                match plan {
                    Plan::Existing(cell) => match &*cell.lock().await {
                        KernelState::Running(r) => Ok((r.info.clone(), false)),
                        _ => Err(RemoteError::FailedPrecondition {
                            message: format!("kernel {} is terminated", config.kernel_id),
                        }),
                    },
                    Plan::New(guard, slots) => self
                        .create_one(*guard, session_id, config, slots)
                        .await
                        .map(|info| (info, true)),
                }
            });
        let results = futures::future::join_all(work).await;

        if let Some(error) = results.iter().find_map(|r| r.as_ref().err()).cloned() {
            // All or none: take down what this call started.
            for (result, config) in results.iter().zip(&request.kernels) {
                if let Ok((_, true)) = result {
                    let _ = self
                        .destroy(config.kernel_id, "failed-to-start", false)
                        .await;
                }
            }
            return Err(error);
        }
        Ok(CreateKernelsResponse {
            kernels: results
                .into_iter()
                .filter_map(|r| r.ok().map(|(info, _)| info))
                .collect(),
        })
    }

    async fn create_one(
        &self,
        mut guard: OwnedMutexGuard<KernelState>,
        session_id: Uuid,
        config: &KernelConfig,
        slots: BTreeMap<String, Amount>,
    ) -> Result<KernelCreationInfo, RemoteError> {
        let kernel_id = config.kernel_id;
        self.notifier.send(NoticeBody::KernelPreparing {
            kernel_id,
            session_id,
            reason: String::new(),
        });
        let created = async {
            if self.backend.needs_pull(config) {
                self.notifier.send(NoticeBody::KernelPulling {
                    kernel_id,
                    session_id,
                    image: config.image.canonical.clone(),
                });
                self.backend.pull(config).await?;
            }
            self.notifier.send(NoticeBody::KernelCreating {
                kernel_id,
                session_id,
            });
            self.backend.create(kernel_id, session_id, config).await
        }
        .await;
        match created {
            Ok(handle) => {
                let info = self.creation_info(config, &handle);
                tracing::info!(agent = %self.identity.id, %kernel_id, container = %info.container_id, "kernel started");
                *guard = KernelState::Running(Box::new(Running {
                    handle,
                    info: info.clone(),
                    config: config.clone(),
                    slots,
                }));
                self.notifier.send(NoticeBody::KernelStarted {
                    kernel_id,
                    session_id,
                    creation_info: Some(info.clone()),
                });
                Ok(info)
            }
            Err(e) => {
                tracing::warn!(agent = %self.identity.id, %kernel_id, error = %e, "kernel failed to start");
                *guard = KernelState::Gone;
                self.forget(kernel_id, &slots);
                self.notifier.send(NoticeBody::KernelTerminated {
                    kernel_id,
                    session_id,
                    reason: "failed-to-start".into(),
                    exit_code: None,
                });
                Err(e.into())
            }
        }
    }

    fn creation_info(&self, config: &KernelConfig, handle: &KernelHandle) -> KernelCreationInfo {
        let mut attached: BTreeMap<String, Vec<AttachedDevice>> = BTreeMap::new();
        for (slot, amount) in &config.resource_slots {
            let Some((kind, _)) = slot.split_once('.') else {
                continue;
            };
            if Amount::parse_size(amount).map_or(true, Amount::is_zero) {
                continue;
            }
            attached
                .entry(kind.to_owned())
                .or_default()
                .push(AttachedDevice {
                    device_id: format!("{kind}-{}-0", self.backend.name()),
                    model_name: format!("{} {kind}", self.backend.name()),
                    amount: amount.clone(),
                });
        }
        let scaling_group = lock(&self.state).settings.scaling_group.clone();
        KernelCreationInfo {
            kernel_id: config.kernel_id,
            container_id: handle.container_id(),
            kernel_host: self.kernel_host.clone(),
            repl_in_port: 0,
            repl_out_port: 0,
            stdin_port: 0,
            stdout_port: 0,
            service_ports: Vec::new(),
            resource_slots: config.resource_slots.clone(),
            attached_devices: attached,
            agent_addr: self.identity.addr.clone(),
            scaling_group,
        }
    }

    /// Removes a kernel from the registry and gives its slots back.
    fn forget(&self, kernel_id: Uuid, slots: &BTreeMap<String, Amount>) {
        lock(&self.kernels).remove(&kernel_id);
        lock(&self.state).slots.release(slots);
    }

    /// Destroys a kernel; `Ok(None)` if it was not running.
    async fn destroy(
        &self,
        kernel_id: Uuid,
        reason: &str,
        suppress_events: bool,
    ) -> Result<Option<Option<i32>>, RemoteError> {
        let Some(entry) = lock(&self.kernels).get(&kernel_id).cloned() else {
            return Ok(None);
        };
        let mut guard = entry.state.lock().await;
        let running = match std::mem::replace(&mut *guard, KernelState::Gone) {
            KernelState::Running(r) => r,
            other => {
                *guard = other;
                return Ok(None);
            }
        };
        match self.backend.destroy(&running.handle).await {
            Ok(exit_code) => {
                self.forget(kernel_id, &running.slots);
                tracing::info!(agent = %self.identity.id, %kernel_id, reason, ?exit_code, "kernel destroyed");
                if !suppress_events {
                    self.notifier.send(NoticeBody::KernelTerminated {
                        kernel_id,
                        session_id: entry.session_id,
                        reason: reason.to_owned(),
                        exit_code,
                    });
                }
                Ok(Some(exit_code))
            }
            Err(e) => {
                *guard = KernelState::Running(running);
                Err(e.into())
            }
        }
    }

    /// Destroys a kernel on the manager's request.
    pub async fn destroy_kernel(
        &self,
        request: DestroyKernelRequest,
    ) -> Result<DestroyKernelResponse, RemoteError> {
        let reason = reason_or(&request.reason, "user-requested");
        let outcome = self
            .destroy(request.kernel_id, &reason, request.suppress_events)
            .await?;
        Ok(DestroyKernelResponse {
            kernel_id: request.kernel_id,
            exit_code: outcome.flatten(),
            already_terminated: outcome.is_none(),
        })
    }

    /// Destroys every kernel (shutdown), reporting each with `reason`.
    pub async fn destroy_all(&self, reason: &str) {
        let ids = self.kernel_ids();
        let work = ids.into_iter().map(|id| async move {
            if let Err(e) = self.destroy(id, reason, false).await {
                tracing::warn!(agent = %self.identity.id, kernel_id = %id, error = %e, "cannot destroy a kernel");
            }
        });
        futures::future::join_all(work).await;
    }

    /// Handles what the backend reports on its own: a kernel that exited
    /// is cleaned up and reported `self-terminated` with its exit code.
    pub async fn on_backend_event(&self, event: BackendEvent) {
        let BackendEvent::Exited {
            kernel_id,
            generation,
            exit_code,
        } = event;
        let Some(entry) = lock(&self.kernels).get(&kernel_id).cloned() else {
            return;
        };
        let mut guard = entry.state.lock().await;
        let running = match std::mem::replace(&mut *guard, KernelState::Gone) {
            KernelState::Running(r) if r.handle.generation() == generation => r,
            other => {
                // Destroyed or restarted meanwhile: not ours to report.
                *guard = other;
                return;
            }
        };
        if let Err(e) = self.backend.destroy(&running.handle).await {
            tracing::warn!(agent = %self.identity.id, %kernel_id, error = %e, "cannot clean up an exited kernel");
        }
        self.forget(kernel_id, &running.slots);
        self.notifier.send(NoticeBody::KernelTerminated {
            kernel_id,
            session_id: entry.session_id,
            reason: "self-terminated".into(),
            exit_code: Some(exit_code),
        });
    }

    /// Restarts a kernel, optionally with a new configuration.
    pub async fn restart_kernel(
        &self,
        request: RestartKernelRequest,
    ) -> Result<KernelCreationInfo, RemoteError> {
        let kernel_id = request.kernel_id;
        let Some(entry) = lock(&self.kernels).get(&kernel_id).cloned() else {
            return Err(RemoteError::not_found(format!("kernel {kernel_id}")));
        };
        let mut guard = entry.state.lock().await;
        let mut running = match std::mem::replace(&mut *guard, KernelState::Gone) {
            KernelState::Running(r) => r,
            other => {
                *guard = other;
                return Err(RemoteError::not_found(format!("kernel {kernel_id}")));
            }
        };
        let mut config = match request.updated_config {
            Some(c) => *c,
            None => running.config.clone(),
        };
        config.kernel_id = kernel_id;
        // Re-reserve the slots when the new configuration asks for others.
        let slots = {
            let mut state = lock(&self.state);
            let wanted = state.slots.parse_request(&config.resource_slots);
            state.slots.release(&running.slots);
            match wanted.and_then(|w| state.slots.allocate(&w).map(|()| w)) {
                Ok(w) => w,
                Err(e) => {
                    let _ = state.slots.allocate(&running.slots);
                    drop(state);
                    *guard = KernelState::Running(running);
                    return Err(alloc_error(e));
                }
            }
        };
        match self
            .backend
            .restart(&running.handle, entry.session_id, &config)
            .await
        {
            Ok(handle) => {
                let info = self.creation_info(&config, &handle);
                running.handle = handle;
                running.info = info.clone();
                running.config = config;
                running.slots = slots;
                *guard = KernelState::Running(running);
                tracing::info!(agent = %self.identity.id, %kernel_id, "kernel restarted");
                Ok(info)
            }
            Err(e) => {
                tracing::warn!(agent = %self.identity.id, %kernel_id, error = %e, "kernel failed to restart");
                // The old incarnation may or may not be gone: make sure.
                let _ = self.backend.destroy(&running.handle).await;
                self.forget(kernel_id, &slots);
                self.notifier.send(NoticeBody::KernelTerminated {
                    kernel_id,
                    session_id: entry.session_id,
                    reason: "failed-to-restart".into(),
                    exit_code: None,
                });
                Err(e.into())
            }
        }
    }

    /// The running kernel's handle (waits while it is being created or
    /// changed).
    async fn running(&self, kernel_id: Uuid) -> Result<KernelHandle, RemoteError> {
        let entry = lock(&self.kernels).get(&kernel_id).cloned();
        if let Some(entry) = entry
            && let KernelState::Running(r) = &*entry.state.lock().await
        {
            return Ok(r.handle.clone());
        }
        Err(RemoteError::not_found(format!("kernel {kernel_id}")))
    }

    /// Runs code in a kernel.
    pub async fn execute(&self, request: ExecuteRequest) -> Result<ExecuteResult, RemoteError> {
        let handle = self.running(request.kernel_id).await?;
        Ok(self.backend.execute(&handle, &request).await?)
    }

    /// Interrupts what a kernel runs.
    pub async fn interrupt_kernel(
        &self,
        request: InterruptKernelRequest,
    ) -> Result<InterruptKernelResponse, RemoteError> {
        let handle = self.running(request.kernel_id).await?;
        self.backend.interrupt(&handle).await?;
        Ok(InterruptKernelResponse {})
    }

    /// A kernel's log.
    pub async fn get_logs(&self, request: GetLogsRequest) -> Result<GetLogsResponse, RemoteError> {
        let handle = self.running(request.kernel_id).await?;
        Ok(GetLogsResponse {
            kernel_id: request.kernel_id,
            logs: self.backend.logs(&handle),
        })
    }

    /// Reconciles the registry with the manager's view: destroys the kernels
    /// the manager did not name (`not-found-in-manager`), reports the named
    /// ones it does not run as already terminated, and reports what runs. A
    /// kernel in the middle of a lifecycle call (being created, destroyed,
    /// restarted) is left alone and reported by what it is now.
    pub async fn sync_kernel_registry(
        &self,
        request: SyncKernelRegistryRequest,
    ) -> Result<SyncKernelRegistryResponse, RemoteError> {
        let named: BTreeSet<KernelRef> = request.kernels.into_iter().collect();
        let named_ids: BTreeSet<Uuid> = named.iter().map(|k| k.kernel_id).collect();
        let entries: Vec<(Uuid, Arc<Entry>)> = lock(&self.kernels)
            .iter()
            .map(|(id, e)| (*id, Arc::clone(e)))
            .collect();

        let mut response = SyncKernelRegistryResponse::default();
        let mut known: BTreeSet<Uuid> = BTreeSet::new();
        for (kernel_id, entry) in entries {
            let kref = KernelRef {
                kernel_id,
                session_id: entry.session_id,
            };
            let busy = entry.state.try_lock().is_err();
            if named_ids.contains(&kernel_id) || busy {
                known.insert(kernel_id);
                response.running.push(kref);
                continue;
            }
            match self.destroy(kernel_id, "not-found-in-manager", false).await {
                Ok(Some(_)) => response.destroyed_unknown.push(kref),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(agent = %self.identity.id, %kernel_id, error = %e, "cannot destroy an unknown kernel");
                    response.running.push(kref);
                }
            }
        }
        response.already_terminated = named
            .into_iter()
            .filter(|k| !known.contains(&k.kernel_id))
            .collect();
        response.running.sort();
        response.destroyed_unknown.sort();
        Ok(response)
    }

    /// The settings the manager asks for.
    pub fn local_config(&self) -> LocalConfig {
        let state = lock(&self.state);
        LocalConfig {
            agent_id: self.identity.id.clone(),
            region: state.settings.region.clone(),
            scaling_group: state.settings.scaling_group.clone(),
            abuse_report_path: state.settings.abuse_report_path.clone(),
            watcher: BTreeMap::new(),
        }
    }

    /// Answers `health`.
    pub fn health(&self, request: HealthRequest) -> HealthResponse {
        HealthResponse {
            agent_id: self.identity.id.clone(),
            agent_version: VERSION.to_owned(),
            message: request.message,
        }
    }
}

impl Handler for Agent {
    async fn handle(&self, request: Request) -> Result<Response, RemoteError> {
        tracing::debug!(agent = %self.identity.id, op = request.name(), "request");
        Ok(match request {
            Request::Health(r) => Response::Health(self.health(r)),
            Request::CreateKernels(r) => Response::CreateKernels(self.create_kernels(r).await?),
            Request::DestroyKernel(r) => Response::DestroyKernel(self.destroy_kernel(r).await?),
            Request::RestartKernel(r) => Response::RestartKernel(self.restart_kernel(r).await?),
            Request::Execute(r) => Response::Execute(self.execute(r).await?),
            Request::InterruptKernel(r) => {
                Response::InterruptKernel(self.interrupt_kernel(r).await?)
            }
            Request::GetLogs(r) => Response::GetLogs(self.get_logs(r).await?),
            Request::SyncKernelRegistry(r) => {
                Response::SyncKernelRegistry(self.sync_kernel_registry(r).await?)
            }
            Request::GetLocalConfig => Response::GetLocalConfig(self.local_config()),
        })
    }
}

/// The host part of `tcp://host:port`.
fn host_of(addr: &str) -> String {
    let rest = addr.strip_prefix("tcp://").unwrap_or(addr);
    match rest.rsplit_once(':') {
        Some((host, _)) => host.trim_matches(['[', ']']).to_owned(),
        None => rest.to_owned(),
    }
}
