//! The scheduler against the real event store (halfstack PostgreSQL): the
//! hard properties checked from the log itself, and the queue policies.
//!
//! - `random_histories_never_overbook_and_every_reader_agrees` (a property
//!   test): random interleavings of enqueues, destroys, kernels starting,
//!   progressing, failing and going away, agents lost and back, and
//!   scheduler restarts, each followed by a scheduling round. After every
//!   step the whole log is folded here, independently of the code under
//!   test, and checked: no agent ever holds more than its capacity (at any
//!   position of the log), placements go only to alive agents of the
//!   session's scaling group, single-node sessions stay on one agent, a
//!   session's stamped status is the one its kernels add up to, nothing
//!   that fits stays pending; and the scheduler's view, the `agent_occupancy`
//!   read model and the owners' usage in `sessions` all equal the fold.
//! - `two_schedulers_at_once_never_double_book`: two schedulers with their
//!   own views plan the same oversubscribed queue at the same time, again
//!   and again (in lock-step, then free-running while sessions come and
//!   go); the fold shows no agent over capacity and some placements lost
//!   on stream versions (the fence was exercised).
//! - `a_stale_plan_…`: a scheduler whose plan is stale (a deposed one) must
//!   lose every placement on an agent another writer appended to since:
//!   neither on top of another scheduler's placement, nor on an agent lost
//!   in the meantime.
//! - One test per queue rule: FIFO, LIFO, DRF, no head-of-line stall,
//!   multi-node spreading and single-node packing, `starts_at` and
//!   dependencies (also of a single-kernel batch session that succeeded).
//!
//! proptest's test closure is synchronous: the property test builds its own
//! tokio runtime and runs each case (with a database of its own) inside it.
//! `PROPTEST_CASES` overrides the number of cases.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use agent_rpc::notice::AgentInfo;
use chrono::Utc;
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use manager_command::agent::{self as agents, Agent, AgentCommand};
use manager_command::handler::CommandHandler;
use manager_command::scaling_group::{self as scaling_groups, ScalingGroup, ScalingGroupCommand};
use manager_command::session::scheduler::{Round, Scheduler, SchedulerConfig};
use manager_command::session::view::SessionView;
use manager_command::session::{ActOnSession, EnqueueSession, SessionCommand, Started};
use manager_events::agent::{AgentEvent, AgentStatus};
use manager_events::codec::decode;
use manager_events::config::Faults;
use manager_events::scaling_group::ScalingGroupFields;
use manager_events::session::{
    self as session_events, ClusterMode, ErrorInfo, KernelSpec, KernelStatus, Owner, SessionEvent,
    SessionImage, SessionResult, SessionSpec, SessionStatus, SessionType, derive_session_status,
};
use manager_events::slots::SlotAmount;
use manager_events::testing::TestDb;
use manager_events::{EventMetadata, EventStore, EventStoreConfig, Problem, ProblemKind};
use manager_projections::ProjectionRunner;
use manager_projections::sessions::SessionsProjector;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

const GIB: u64 = 1 << 30;
const ARCH: &str = "x86_64";

type Slots = BTreeMap<String, SlotAmount>;

// ---------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------

fn amount(s: &str) -> SlotAmount {
    SlotAmount::parse(s).unwrap()
}

/// A slot map read from decimal strings, without zero amounts (so that
/// "holds nothing of a slot" and "does not list it" compare equal).
fn slots_of(map: &BTreeMap<String, String>) -> Slots {
    map.iter()
        .map(|(k, v)| (k.clone(), amount(v)))
        .filter(|(_, v)| *v != SlotAmount::ZERO)
        .collect()
}

fn add(a: &mut Slots, b: &Slots) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_insert(SlotAmount::ZERO);
        *e = e.plus(*v);
    }
    a.retain(|_, v| *v != SlotAmount::ZERO);
}

fn times(per: &Slots, n: usize) -> Slots {
    let mut total = Slots::new();
    for _ in 0..n {
        add(&mut total, per);
    }
    total
}

/// `cpu` (a decimal) and `mem` in bytes.
fn request(cpu: &str, mem: u64) -> BTreeMap<String, String> {
    [
        ("cpu".to_owned(), cpu.to_owned()),
        ("mem".to_owned(), mem.to_string()),
    ]
    .into()
}

fn agent_info(id: &str, group: &str, cpu: &str, mem: u64) -> AgentInfo {
    AgentInfo {
        id: id.into(),
        addr: format!("tcp://{id}.test:6011"),
        region: "local".into(),
        scaling_group: group.into(),
        architecture: ARCH.into(),
        version: "test".into(),
        protocol_version: 1,
        available_slots: request(cpu, mem),
        slot_types: [
            ("cpu".to_owned(), "count".to_owned()),
            ("mem".to_owned(), "bytes".to_owned()),
        ]
        .into(),
        ..Default::default()
    }
}

/// Registers (or restarts) an agent as its `agent_started` notice would;
/// returns its process id.
async fn start_agent(handler: &CommandHandler, info: &AgentInfo) -> Uuid {
    let instance = Uuid::new_v4();
    handler
        .execute::<Agent>(
            &agents::stream_id(&info.id),
            AgentCommand::Started {
                instance,
                info: info.clone(),
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    instance
}

async fn agent_command(handler: &CommandHandler, id: &str, command: AgentCommand) {
    handler
        .execute::<Agent>(&agents::stream_id(id), command, EventMetadata::default())
        .await
        .unwrap();
}

/// Creates a scaling group with a queue policy and options.
async fn scaling_group(handler: &CommandHandler, name: &str, scheduler: &str, opts: Value) {
    handler
        .execute::<ScalingGroup>(
            &scaling_groups::stream_id(name),
            ScalingGroupCommand::Create {
                name: name.into(),
                fields: ScalingGroupFields {
                    description: String::new(),
                    is_active: true,
                    is_public: true,
                    driver: "static".into(),
                    driver_opts: json!({}),
                    scheduler: scheduler.into(),
                    scheduler_opts: opts,
                    use_host_network: false,
                    wsproxy_addr: None,
                },
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
}

fn owner(access_key: &str) -> Owner {
    Owner {
        access_key: access_key.into(),
        user_id: Uuid::from_u128(
            OWNERS
                .iter()
                .position(|o| *o == access_key)
                .map_or(99, |i| i as u128 + 1),
        ),
        project_id: Uuid::from_u128(8),
        domain_name: "default".into(),
    }
}

/// What a session asks for: `kernels` kernels of `per_kernel` each.
fn spec(
    name: &str,
    group: &str,
    per_kernel: BTreeMap<String, String>,
    kernels: u32,
    mode: ClusterMode,
) -> SessionSpec {
    SessionSpec {
        name: name.into(),
        session_type: SessionType::Interactive,
        image: SessionImage {
            canonical: "cr.backend.ai/stable/python:3.9-ubuntu20.04".into(),
            architecture: ARCH.into(),
            registry: "cr.backend.ai".into(),
            tag: "3.9-ubuntu20.04".into(),
        },
        cluster_mode: mode,
        slots_per_kernel: per_kernel,
        scaling_group: group.into(),
        kernels: (0..kernels)
            .map(|i| KernelSpec {
                id: Uuid::new_v4(),
                cluster_role: if i == 0 { "main" } else { "sub" }.into(),
                cluster_idx: if i == 0 { 1 } else { i },
                local_rank: i,
                cluster_hostname: if i == 0 {
                    "main1".into()
                } else {
                    format!("sub{i}")
                },
            })
            .collect(),
        ..SessionSpec::default()
    }
}

async fn enqueue(handler: &CommandHandler, access_key: &str, spec: SessionSpec) -> Uuid {
    let id = Uuid::new_v4();
    handler
        .transact(
            &EnqueueSession {
                id,
                creation_id: "c0ffee".into(),
                owner: owner(access_key),
                spec,
            },
            EventMetadata::default(),
        )
        .await
        .unwrap();
    id
}

async fn act(handler: &CommandHandler, id: Uuid, command: SessionCommand) -> Result<(), Problem> {
    handler
        .transact(&ActOnSession { id, command }, EventMetadata::default())
        .await
        .map(|_| ())
}

fn started(kernel: Uuid, occupied: BTreeMap<String, String>) -> SessionCommand {
    SessionCommand::Start {
        kernel_id: kernel,
        started: Started {
            container_id: format!("c-{kernel}"),
            kernel_host: "10.0.0.5".into(),
            repl_in_port: 2000,
            repl_out_port: 2001,
            service_ports: vec![],
            occupied_slots: occupied,
        },
    }
}

fn gone(kernel: Uuid, exit_code: Option<i32>) -> SessionCommand {
    SessionCommand::KernelGone {
        kernel_id: kernel,
        reason: if exit_code.is_some() {
            "self-terminated"
        } else {
            "user-requested"
        }
        .into(),
        exit_code,
    }
}

/// A session's events, decoded.
async fn session_events(store: &EventStore, id: Uuid) -> Vec<SessionEvent> {
    store
        .read_stream(&session_events::stream_id(id), 0)
        .await
        .unwrap()
        .iter()
        .map(|r| decode::<SessionEvent>(&r.event_type, &r.payload).unwrap())
        .collect()
}

/// A scheduler with a view of its own following the log, as one manager
/// runs it.
struct Manager {
    view: SessionView,
    scheduler: Scheduler,
    stop: watch::Sender<bool>,
    follower: tokio::task::JoinHandle<()>,
}

impl Manager {
    fn start(handler: &CommandHandler, url: &str) -> Manager {
        let (stop, stopped) = watch::channel(false);
        let view = SessionView::new();
        let follower = tokio::spawn(view.clone().follow(handler.store().clone(), stopped));
        let scheduler = Scheduler::new(
            handler.clone(),
            view.clone(),
            SchedulerConfig {
                database_url: url.to_owned(),
                tick: Duration::from_secs(3600),
            },
        );
        Manager {
            view,
            scheduler,
            stop,
            follower,
        }
    }

    /// Waits until the view has applied the whole log.
    async fn catch_up(&self, store: &EventStore) {
        let head = store.head_position().await.unwrap();
        assert!(
            self.view.wait_for(head, Duration::from_secs(10)).await,
            "the view did not reach the log's head {head} (it is at {})",
            self.view.position()
        );
    }

    /// One scheduling round on a view that has seen the whole log.
    async fn round(&self, store: &EventStore) -> Round {
        self.catch_up(store).await;
        self.scheduler.schedule_once().await.unwrap()
    }

    /// Stops following; the scheduler and its view are dropped.
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.follower.await.unwrap();
    }
}

/// A database of its own, a handler, and the sessions projector.
struct Cluster {
    db: TestDb,
    store: EventStore,
    handler: CommandHandler,
    projections: ProjectionRunner,
}

impl Cluster {
    async fn new() -> Cluster {
        let db = TestDb::new().await;
        let store = db.store().await;
        let handler = CommandHandler::new(store.clone());
        let projections =
            ProjectionRunner::new(store.clone(), vec![Arc::new(SessionsProjector)], 500);
        Cluster {
            db,
            store,
            handler,
            projections,
        }
    }

    fn manager(&self) -> Manager {
        Manager::start(&self.handler, &self.db.url)
    }

    async fn model(&self) -> Model {
        Model::of(&self.store).await
    }
}

// ---------------------------------------------------------------------------
// The model: the log folded here, independently of the code under test
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ModelAgent {
    capacity: Slots,
    status: AgentStatus,
    group: String,
}

#[derive(Debug, Clone)]
struct ModelSession {
    owner: String,
    group: String,
    mode: ClusterMode,
    per_kernel: Slots,
    /// Kernels in their order, with their status.
    kernels: Vec<(Uuid, KernelStatus)>,
    /// The status the log stamped.
    status: SessionStatus,
    result: SessionResult,
    /// Where `SessionScheduled` put each kernel.
    assigned: BTreeMap<Uuid, String>,
}

impl ModelSession {
    fn status_of(&self, kernel: Uuid) -> Option<KernelStatus> {
        self.kernels
            .iter()
            .find(|(k, _)| *k == kernel)
            .map(|(_, s)| *s)
    }

    fn set(&mut self, kernel: Uuid, status: KernelStatus) {
        if let Some(k) = self.kernels.iter_mut().find(|(k, _)| *k == kernel) {
            k.1 = status;
        }
    }
}

/// The log, folded: agents, sessions, what each kernel holds where, and
/// every rule broken on the way.
#[derive(Debug, Default)]
struct Model {
    agents: BTreeMap<String, ModelAgent>,
    sessions: BTreeMap<Uuid, ModelSession>,
    /// Session of each kernel.
    session_of: HashMap<Uuid, Uuid>,
    /// Kernel → (agent, slots): from `KernelsPlaced`, replaced by what the
    /// agent allocated (`KernelStarted.occupied_slots`, when not empty).
    placed: HashMap<Uuid, (String, Slots)>,
    violations: Vec<String>,
    /// The transaction being folded, and the sessions it touched (checked
    /// once it is folded whole: a decision stamps the session's status on
    /// its last event that moves a kernel).
    xact: Option<u64>,
    touched: Vec<(u64, Uuid)>,
}

impl Model {
    async fn of(store: &EventStore) -> Model {
        let mut model = Model::default();
        let mut after = 0;
        loop {
            let page = store.read_all(after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.position;
            for e in &page {
                model.observe(e);
            }
        }
        model.finish();
        model
    }

    fn kernel_status(&self, kernel: Uuid) -> Option<KernelStatus> {
        let s = self.session_of.get(&kernel)?;
        self.sessions.get(s)?.status_of(kernel)
    }

    /// What the agent's kernels hold now.
    fn occupancy(&self, agent: &str) -> Slots {
        let mut total = Slots::new();
        for (kernel, (a, slots)) in &self.placed {
            if a == agent
                && self
                    .kernel_status(*kernel)
                    .is_some_and(KernelStatus::holds_agent_slots)
            {
                add(&mut total, slots);
            }
        }
        total
    }

    /// Every agent holding something, and what.
    fn occupancies(&self) -> BTreeMap<String, Slots> {
        self.agents
            .keys()
            .map(|a| (a.clone(), self.occupancy(a)))
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    /// Per owner, what their sessions holding quota asked for in all.
    fn usage(&self) -> BTreeMap<String, Slots> {
        let mut usage: BTreeMap<String, Slots> = BTreeMap::new();
        for s in self.sessions.values() {
            if s.status.holds_quota() {
                add(
                    usage.entry(s.owner.clone()).or_default(),
                    &times(&s.per_kernel, s.kernels.len()),
                );
            }
        }
        usage.retain(|_, s| !s.is_empty());
        usage
    }

    fn over_capacity(&self, agent: &str) -> Option<String> {
        let a = self.agents.get(agent)?;
        let held = self.occupancy(agent);
        held.iter().find_map(|(slot, amount)| {
            let cap = a.capacity.get(slot).copied().unwrap_or(SlotAmount::ZERO);
            (*amount > cap).then(|| format!("agent {agent} holds {slot} {amount} of {cap}"))
        })
    }

    fn observe(&mut self, e: &manager_events::RecordedEvent) {
        if self.xact != Some(e.xact_id) {
            self.check_touched();
            self.xact = Some(e.xact_id);
        }
        match e.stream_type.as_str() {
            manager_events::agent::STREAM_TYPE => {
                let id = e.stream_id.strip_prefix("agent:").unwrap().to_owned();
                let event = decode::<AgentEvent>(&e.event_type, &e.payload).unwrap();
                self.observe_agent(e.position, id, event);
            }
            session_events::STREAM_TYPE => {
                let id: Uuid = e
                    .stream_id
                    .strip_prefix("session:")
                    .unwrap()
                    .parse()
                    .unwrap();
                let event = decode::<SessionEvent>(&e.event_type, &e.payload).unwrap();
                self.observe_session(e.position, id, event);
            }
            _ => {}
        }
    }

    fn observe_agent(&mut self, position: u64, id: String, event: AgentEvent) {
        match event {
            AgentEvent::AgentRegistered {
                description,
                capacity,
                ..
            } => {
                self.agents.insert(
                    id,
                    ModelAgent {
                        capacity: slots_of(&capacity.available_slots),
                        status: AgentStatus::Alive,
                        group: description.scaling_group,
                    },
                );
            }
            AgentEvent::AgentCapacityChanged { capacity } => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.capacity = slots_of(&capacity.available_slots);
                }
            }
            AgentEvent::AgentDescriptionChanged { description } => {
                if let Some(a) = self.agents.get_mut(&id) {
                    a.group = description.scaling_group;
                }
            }
            AgentEvent::AgentLost { .. } => self.agent_status(&id, AgentStatus::Lost),
            AgentEvent::AgentStopped { .. } => self.agent_status(&id, AgentStatus::Terminated),
            AgentEvent::AgentDecommissioned { .. } => {
                self.agent_status(&id, AgentStatus::Decommissioned)
            }
            AgentEvent::AgentRejoined { .. } => self.agent_status(&id, AgentStatus::Alive),
            AgentEvent::KernelsPlaced {
                session_id,
                kernels,
            } => {
                let Some(agent) = self.agents.get(&id).cloned() else {
                    self.violations
                        .push(format!("@{position}: kernels placed on unknown agent {id}"));
                    return;
                };
                if agent.status != AgentStatus::Alive {
                    self.violations.push(format!(
                        "@{position}: kernels placed on agent {id}, which is {:?}",
                        agent.status
                    ));
                }
                match self.sessions.get(&session_id) {
                    Some(s) if s.group != agent.group => self.violations.push(format!(
                        "@{position}: session {session_id} of group {} placed on agent {id} of \
                         group {}",
                        s.group, agent.group
                    )),
                    None => self.violations.push(format!(
                        "@{position}: kernels of unknown session {session_id} placed"
                    )),
                    _ => {}
                }
                for (kernel, slots) in kernels {
                    if self.session_of.get(&kernel) != Some(&session_id) {
                        self.violations.push(format!(
                            "@{position}: kernel {kernel} placed is not of session {session_id}"
                        ));
                    }
                    if self.placed.contains_key(&kernel) {
                        self.violations
                            .push(format!("@{position}: kernel {kernel} placed twice"));
                    }
                    self.placed.insert(kernel, (id.clone(), slots_of(&slots)));
                }
                // The fence: at no position of the log is an agent promised
                // more than it has.
                if let Some(over) = self.over_capacity(&id) {
                    self.violations.push(format!("@{position}: {over}"));
                }
            }
        }
    }

    fn agent_status(&mut self, id: &str, status: AgentStatus) {
        if let Some(a) = self.agents.get_mut(id) {
            a.status = status;
        }
    }

    fn observe_session(&mut self, position: u64, id: Uuid, event: SessionEvent) {
        if let SessionEvent::SessionEnqueued { owner, spec, .. } = &event {
            for k in &spec.kernels {
                self.session_of.insert(k.id, id);
            }
            self.sessions.insert(
                id,
                ModelSession {
                    owner: owner.access_key.clone(),
                    group: spec.scaling_group.clone(),
                    mode: spec.cluster_mode,
                    per_kernel: slots_of(&spec.slots_per_kernel),
                    kernels: spec
                        .kernels
                        .iter()
                        .map(|k| (k.id, KernelStatus::Pending))
                        .collect(),
                    status: SessionStatus::Pending,
                    result: SessionResult::Undefined,
                    assigned: BTreeMap::new(),
                },
            );
            return;
        }
        let Some(s) = self.sessions.get_mut(&id) else {
            self.violations
                .push(format!("@{position}: event of unknown session {id}"));
            return;
        };
        match event {
            SessionEvent::SessionEnqueued { .. }
            | SessionEvent::SchedulingDeferred { .. }
            | SessionEvent::SessionRenamed { .. } => {}
            SessionEvent::SessionScheduled { kernels, .. } => {
                if s.status != SessionStatus::Pending {
                    self.violations.push(format!(
                        "@{position}: session {id} scheduled while {:?}",
                        s.status
                    ));
                }
                for p in kernels {
                    s.set(p.kernel_id, KernelStatus::Scheduled);
                    s.assigned.insert(p.kernel_id, p.agent_id);
                }
                s.status = SessionStatus::Scheduled;
                let agents: HashSet<&String> = s.assigned.values().collect();
                if s.mode == ClusterMode::SingleNode && agents.len() > 1 {
                    self.violations.push(format!(
                        "@{position}: single-node session {id} spread over {agents:?}"
                    ));
                }
            }
            SessionEvent::KernelsTransitioned {
                kernels,
                status,
                session_status,
                ..
            } => {
                for k in kernels {
                    s.set(k, status);
                }
                if let Some(st) = session_status {
                    s.status = st;
                }
            }
            SessionEvent::KernelStarted {
                kernel_id,
                occupied_slots,
                session_status,
                ..
            } => {
                s.set(kernel_id, KernelStatus::Running);
                if let Some(st) = session_status {
                    s.status = st;
                }
                if !occupied_slots.is_empty()
                    && let Some((_, held)) = self.placed.get_mut(&kernel_id)
                {
                    *held = slots_of(&occupied_slots);
                }
            }
            SessionEvent::SessionCancelled { .. } => {
                for k in &mut s.kernels {
                    k.1 = KernelStatus::Cancelled;
                }
                s.status = SessionStatus::Cancelled;
            }
            SessionEvent::SessionResultRecorded { result, .. } => s.result = result,
        }
        self.touched.push((position, id));
    }

    /// Each session a transaction touched has the status its kernels add
    /// up to.
    fn check_touched(&mut self) {
        for (position, id) in std::mem::take(&mut self.touched) {
            let s = &self.sessions[&id];
            let derived = derive_session_status(s.kernels.iter().map(|(_, st)| *st));
            if derived != s.status {
                self.violations.push(format!(
                    "@{position}: session {id} stamped {:?}, its kernels {:?} add up to \
                     {derived:?}",
                    s.status, s.kernels
                ));
            }
        }
    }

    /// Checks what only the whole log can tell.
    fn finish(&mut self) {
        self.check_touched();
        for (id, s) in &self.sessions {
            for (kernel, agent) in &s.assigned {
                match self.placed.get(kernel) {
                    Some((a, _)) if a == agent => {}
                    other => self.violations.push(format!(
                        "session {id} put kernel {kernel} on {agent}, its agent's stream says \
                         {other:?}"
                    )),
                }
            }
        }
    }

    /// Pending sessions that would fit now on alive agents of their group
    /// (what a round that lost no race must have placed).
    fn pending_that_fit(&self) -> Vec<Uuid> {
        let free: BTreeMap<&String, (String, Slots)> = self
            .agents
            .iter()
            .filter(|(_, a)| a.status == AgentStatus::Alive)
            .map(|(id, a)| {
                let held = self.occupancy(id);
                let free: Slots = a
                    .capacity
                    .iter()
                    .map(|(k, v)| {
                        let used = held.get(k).copied().unwrap_or(SlotAmount::ZERO);
                        (k.clone(), v.minus(used))
                    })
                    .collect();
                (id, (a.group.clone(), free))
            })
            .collect();
        let fits = |free: &Slots, want: &Slots| {
            want.iter().all(|(k, w)| {
                *w <= SlotAmount::ZERO || *w <= free.get(k).copied().unwrap_or(SlotAmount::ZERO)
            })
        };
        // How many kernels of `per` fit in `free`.
        let how_many = |free: &Slots, per: &Slots| -> usize {
            let mut left = free.clone();
            let mut n = 0;
            while n < 64 && fits(&left, per) {
                for (k, w) in per {
                    let e = left.entry(k.clone()).or_insert(SlotAmount::ZERO);
                    *e = e.minus(*w);
                }
                n += 1;
            }
            n
        };
        self.sessions
            .iter()
            .filter(|(_, s)| s.status == SessionStatus::Pending)
            .filter(|(_, s)| {
                let in_group = free.values().filter(|(g, _)| *g == s.group);
                match s.mode {
                    ClusterMode::SingleNode => {
                        let total = times(&s.per_kernel, s.kernels.len());
                        in_group.clone().any(|(_, f)| fits(f, &total))
                    }
                    ClusterMode::MultiNode => {
                        in_group
                            .map(|(_, f)| how_many(f, &s.per_kernel))
                            .sum::<usize>()
                            >= s.kernels.len()
                    }
                }
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Read models
// ---------------------------------------------------------------------------

#[derive(QueryableByName)]
struct OccupancyRow {
    #[diesel(sql_type = Text)]
    agent_id: String,
    #[diesel(sql_type = Text)]
    slots: String,
}

#[derive(QueryableByName)]
struct SessionRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    access_key: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    slots: String,
}

fn json_slots(text: &str) -> Slots {
    let map: BTreeMap<String, Value> = serde_json::from_str(text).unwrap();
    map.into_iter()
        .map(|(k, v)| {
            let a = match v {
                Value::String(s) => amount(&s),
                Value::Number(n) => amount(&n.to_string()),
                other => panic!("slot {k} is {other}"),
            };
            (k, a)
        })
        .filter(|(_, v)| *v != SlotAmount::ZERO)
        .collect()
}

/// `agent_occupancy`, agents holding nothing left out.
async fn read_occupancy(db: &TestDb) -> BTreeMap<String, Slots> {
    let rows: Vec<OccupancyRow> =
        diesel::sql_query("SELECT agent_id, occupied_slots::text AS slots FROM agent_occupancy")
            .load(&mut db.connection().await)
            .await
            .unwrap();
    rows.into_iter()
        .map(|r| (r.agent_id, json_slots(&r.slots)))
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// From `sessions`: per owner, what their sessions holding quota asked for
/// in all; and every session's status.
async fn read_usage(db: &TestDb) -> (BTreeMap<String, Slots>, BTreeMap<Uuid, SessionStatus>) {
    let rows: Vec<SessionRow> = diesel::sql_query(
        "SELECT id::text AS id, access_key, status, occupying_slots::text AS slots FROM sessions",
    )
    .load(&mut db.connection().await)
    .await
    .unwrap();
    let mut usage: BTreeMap<String, Slots> = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for r in rows {
        let status = SessionStatus::parse(&r.status).unwrap();
        statuses.insert(r.id.parse().unwrap(), status);
        if status.holds_quota() {
            add(
                usage.entry(r.access_key).or_default(),
                &json_slots(&r.slots),
            );
        }
    }
    usage.retain(|_, s| !s.is_empty());
    (usage, statuses)
}

/// The scheduler's view's occupancy, agents holding nothing left out.
fn view_occupancy(view: &SessionView) -> BTreeMap<String, Slots> {
    view.agents()
        .into_iter()
        .map(|(id, a)| {
            let mut held = a.occupied();
            held.retain(|_, v| *v != SlotAmount::ZERO);
            (id, held)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect()
}

/// Everything that must hold after a step, or why not.
async fn check(cluster: &Cluster, manager: &Manager, step: &str) -> Result<Model, String> {
    let model = cluster.model().await;
    if !model.violations.is_empty() {
        return Err(format!(
            "after {step}: the log breaks rules:\n{}",
            model.violations.join("\n")
        ));
    }
    for agent in model.agents.keys() {
        if let Some(over) = model.over_capacity(agent) {
            return Err(format!("after {step}: {over}"));
        }
    }
    let expected = model.occupancies();
    manager.catch_up(&cluster.store).await;
    let seen = view_occupancy(&manager.view);
    if seen != expected {
        return Err(format!(
            "after {step}: the scheduler's view holds {seen:?}, the log {expected:?}"
        ));
    }
    // Its live sessions (an entry without an id is checked elsewhere, by
    // `a_single_kernel_batch_session_that_succeeded_lets_its_dependents_run`).
    let live: BTreeMap<Uuid, SessionStatus> = manager
        .view
        .sessions()
        .iter()
        .filter_map(|s| Some((s.state.id?, s.state.status)))
        .collect();
    let logged_live: BTreeMap<Uuid, SessionStatus> = model
        .sessions
        .iter()
        .filter(|(_, s)| !s.status.is_dead())
        .map(|(id, s)| (*id, s.status))
        .collect();
    if live != logged_live {
        return Err(format!(
            "after {step}: the scheduler's view has live sessions {live:?}, the log \
             {logged_live:?}"
        ));
    }
    cluster
        .projections
        .catch_up()
        .await
        .map_err(|e| e.to_string())?;
    let projected = read_occupancy(&cluster.db).await;
    if projected != expected {
        return Err(format!(
            "after {step}: agent_occupancy holds {projected:?}, the log {expected:?}"
        ));
    }
    let (usage, statuses) = read_usage(&cluster.db).await;
    if usage != model.usage() {
        return Err(format!(
            "after {step}: sessions say owners use {usage:?}, the log {:?}",
            model.usage()
        ));
    }
    let logged: BTreeMap<Uuid, SessionStatus> = model
        .sessions
        .iter()
        .map(|(id, s)| (*id, s.status))
        .collect();
    if statuses != logged {
        return Err(format!(
            "after {step}: sessions have statuses {statuses:?}, the log {logged:?}"
        ));
    }
    Ok(model)
}

// ---------------------------------------------------------------------------
// 1. Random histories
// ---------------------------------------------------------------------------

const OWNERS: [&str; 3] = ["AKIAALICE", "AKIABOB", "AKIACAROL"];
const GROUPS: [&str; 2] = ["default", "gpu"];

/// One step of a history (indices pick among what exists, modulo).
#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        owner: usize,
        group: usize,
        /// CPU per kernel, in halves.
        cpu_halves: u8,
        mem_gib: u8,
        kernels: u32,
        multi_node: bool,
        batch: bool,
    },
    Destroy {
        pick: usize,
        forced: bool,
    },
    /// A kernel on its way up moves a step (`kernel_pulling`…).
    Progress {
        pick: usize,
    },
    /// A kernel runs; `smaller`: the agent allocated less memory than asked.
    Start {
        pick: usize,
        smaller: bool,
    },
    /// A kernel is gone (by itself with an exit code, or destroyed).
    Gone {
        pick: usize,
        exit_code: Option<i32>,
    },
    /// A kernel failed to start.
    Fail {
        pick: usize,
    },
    /// A running session restarts.
    Restart {
        pick: usize,
    },
    /// An agent's heartbeat expired.
    Lose {
        agent: usize,
    },
    /// An agent is back: its heartbeat resumed, or a new process started.
    Rejoin {
        agent: usize,
        new_process: bool,
    },
    /// The scheduler and its view are dropped and built again from the log.
    RestartScheduler,
}

#[derive(Debug, Clone)]
struct AgentSpec {
    cpu: u8,
    mem_gib: u8,
    group: usize,
}

#[derive(Debug, Clone)]
struct History {
    agents: Vec<AgentSpec>,
    policies: Vec<(&'static str, &'static str)>,
    ops: Vec<Op>,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let enqueue = (
        0..OWNERS.len(),
        prop::bool::weighted(0.8),
        1u8..=4,
        1u8..=4,
        1u32..=3,
        any::<bool>(),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(owner, default_group, cpu_halves, mem_gib, kernels, multi_node, batch)| Op::Enqueue {
                owner,
                group: usize::from(!default_group),
                cpu_halves,
                mem_gib,
                kernels,
                multi_node,
                batch,
            },
        );
    prop_oneof![
        5 => enqueue,
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, forced)| Op::Destroy { pick, forced }),
        1 => any::<usize>().prop_map(|pick| Op::Progress { pick }),
        3 => (any::<usize>(), prop::bool::weighted(0.3))
            .prop_map(|(pick, smaller)| Op::Start { pick, smaller }),
        3 => (any::<usize>(), prop::option::of(0i32..2))
            .prop_map(|(pick, exit_code)| Op::Gone { pick, exit_code }),
        1 => any::<usize>().prop_map(|pick| Op::Fail { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Restart { pick }),
        1 => (0usize..4).prop_map(|agent| Op::Lose { agent }),
        1 => (0usize..4, any::<bool>())
            .prop_map(|(agent, new_process)| Op::Rejoin { agent, new_process }),
        1 => Just(Op::RestartScheduler),
    ]
}

fn history_strategy() -> impl Strategy<Value = History> {
    let agent = (3u8..=8, 6u8..=16, prop::bool::weighted(0.75)).prop_map(
        |(cpu, mem_gib, default_group)| AgentSpec {
            cpu,
            mem_gib,
            group: usize::from(!default_group),
        },
    );
    let policy = (
        prop_oneof![Just("fifo"), Just("lifo"), Just("drf")],
        prop_oneof![Just("dispersed"), Just("concentrated"), Just("roundrobin")],
    );
    (
        prop::collection::vec(agent, 2..=4),
        prop::collection::vec(policy, GROUPS.len()),
        prop::collection::vec(op_strategy(), 5..=30),
    )
        .prop_map(|(agents, policies, ops)| History {
            agents,
            policies,
            ops,
        })
}

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

/// How often each kind of thing happened over all cases.
#[derive(Debug, Default)]
struct Coverage {
    placed: usize,
    deferred: usize,
    refused_destroys: usize,
    placed_while_an_agent_was_lost: usize,
    multi_agent_sessions: usize,
    scheduler_restarts: usize,
    freed: usize,
}

/// Kernels of live sessions whose status is one of `statuses`.
fn kernels_in(model: &Model, statuses: &[KernelStatus]) -> Vec<(Uuid, Uuid)> {
    model
        .sessions
        .iter()
        .flat_map(|(sid, s)| {
            s.kernels
                .iter()
                .filter(|(_, st)| statuses.contains(st))
                .map(|(k, _)| (*sid, *k))
        })
        .collect()
}

async fn run_history(
    history: &History,
    coverage: &std::sync::Mutex<Coverage>,
) -> Result<(), String> {
    let cluster = Cluster::new().await;
    let handler = &cluster.handler;
    for (name, (policy, strategy)) in GROUPS.iter().zip(&history.policies) {
        // Starvation protection held off: a round must place whatever fits
        // (checked below), whatever waited how long.
        scaling_group(
            handler,
            name,
            policy,
            json!({
                "agent_selection_strategy": strategy,
                "config": {"starvation_timeout": 0},
            }),
        )
        .await;
    }
    let mut infos = Vec::new();
    let mut instances = Vec::new();
    for (i, a) in history.agents.iter().enumerate() {
        let info = agent_info(
            &format!("i-agent{i}"),
            GROUPS[a.group],
            &a.cpu.to_string(),
            u64::from(a.mem_gib) * GIB,
        );
        instances.push(start_agent(handler, &info).await);
        infos.push(info);
    }
    let mut manager = cluster.manager();
    let mut names = 0u32;
    let mut local = Coverage::default();
    for (n, op) in history.ops.iter().enumerate() {
        let model = cluster.model().await;
        let step = format!("step {n} ({op:?})");
        match op {
            Op::Enqueue {
                owner,
                group,
                cpu_halves,
                mem_gib,
                kernels,
                multi_node,
                batch,
            } => {
                names += 1;
                let cpu = SlotAmount::Finite(i128::from(*cpu_halves) * 500_000).to_string();
                let mode = if *multi_node {
                    ClusterMode::MultiNode
                } else {
                    ClusterMode::SingleNode
                };
                let mut spec = spec(
                    &format!("s{names}"),
                    GROUPS[*group],
                    request(&cpu, u64::from(*mem_gib) * GIB),
                    *kernels,
                    mode,
                );
                if *batch {
                    spec.session_type = SessionType::Batch;
                }
                enqueue(handler, OWNERS[*owner], spec).await;
            }
            Op::Destroy { pick, forced } => {
                let live: Vec<(&Uuid, &ModelSession)> = model
                    .sessions
                    .iter()
                    .filter(|(_, s)| !s.status.is_dead())
                    .collect();
                if let Some((id, s)) = live.get(pick % live.len().max(1)) {
                    let r = act(
                        handler,
                        **id,
                        SessionCommand::Destroy {
                            forced: *forced,
                            reason: String::new(),
                        },
                    )
                    .await;
                    let starting = matches!(
                        s.status,
                        SessionStatus::Scheduled
                            | SessionStatus::Preparing
                            | SessionStatus::Pulling
                            | SessionStatus::Prepared
                            | SessionStatus::Creating
                    );
                    match r {
                        Ok(()) if !starting || *forced => {}
                        Err(p)
                            if starting && !forced && p.kind == ProblemKind::GenericForbidden =>
                        {
                            local.refused_destroys += 1;
                        }
                        other => {
                            return Err(format!(
                                "{step}: destroying a {:?} session (forced: {forced}) gave {other:?}",
                                s.status
                            ));
                        }
                    }
                }
            }
            Op::Progress { pick } => {
                use manager_command::session::Progress;
                let starting = kernels_in(
                    &model,
                    &[
                        KernelStatus::Scheduled,
                        KernelStatus::Preparing,
                        KernelStatus::Pulling,
                        KernelStatus::Prepared,
                    ],
                );
                if let Some((sid, k)) = starting.get(pick % starting.len().max(1)) {
                    let progress = [
                        Progress::Preparing,
                        Progress::Pulling,
                        Progress::Prepared,
                        Progress::Creating,
                    ][pick % 4];
                    act(
                        handler,
                        *sid,
                        SessionCommand::Progress {
                            kernel_id: *k,
                            progress,
                        },
                    )
                    .await
                    .map_err(|p| format!("{step}: {p:?}"))?;
                }
            }
            Op::Start { pick, smaller } => {
                let starting = kernels_in(
                    &model,
                    &[
                        KernelStatus::Scheduled,
                        KernelStatus::Preparing,
                        KernelStatus::Pulling,
                        KernelStatus::Prepared,
                        KernelStatus::Creating,
                        KernelStatus::Restarting,
                    ],
                );
                if let Some((sid, k)) = starting.get(pick % starting.len().max(1)) {
                    let occupied = if *smaller {
                        let s = &model.sessions[sid];
                        let mem = match s.per_kernel.get("mem") {
                            Some(SlotAmount::Finite(v)) => v / 1_000_000 / 2,
                            _ => 0,
                        };
                        let cpu = s.per_kernel.get("cpu").copied().unwrap_or(SlotAmount::ZERO);
                        request(&cpu.to_string(), u64::try_from(mem).unwrap())
                    } else {
                        BTreeMap::new()
                    };
                    act(handler, *sid, started(*k, occupied))
                        .await
                        .map_err(|p| format!("{step}: {p:?}"))?;
                }
            }
            Op::Gone { pick, exit_code } => {
                let holding: Vec<(Uuid, Uuid)> = kernels_in(
                    &model,
                    &KernelStatus::ALL
                        .into_iter()
                        .filter(|s| s.holds_agent_slots())
                        .collect::<Vec<_>>(),
                );
                if let Some((sid, k)) = holding.get(pick % holding.len().max(1)) {
                    act(handler, *sid, gone(*k, *exit_code))
                        .await
                        .map_err(|p| format!("{step}: {p:?}"))?;
                    local.freed += 1;
                }
            }
            Op::Fail { pick } => {
                let starting = kernels_in(
                    &model,
                    &[
                        KernelStatus::Scheduled,
                        KernelStatus::Preparing,
                        KernelStatus::Pulling,
                        KernelStatus::Prepared,
                        KernelStatus::Creating,
                    ],
                );
                if let Some((sid, k)) = starting.get(pick % starting.len().max(1)) {
                    let agent = model.placed.get(k).map(|(a, _)| a.clone());
                    act(
                        handler,
                        *sid,
                        SessionCommand::Fail {
                            kernel_ids: vec![*k],
                            reason: "failed-to-start".into(),
                            error: ErrorInfo {
                                src: "agent".into(),
                                name: "AgentError".into(),
                                repr: "no such image".into(),
                                agent_id: agent,
                            },
                        },
                    )
                    .await
                    .map_err(|p| format!("{step}: {p:?}"))?;
                    local.freed += 1;
                }
            }
            Op::Restart { pick } => {
                let running: Vec<&Uuid> = model
                    .sessions
                    .iter()
                    .filter(|(_, s)| {
                        matches!(
                            s.status,
                            SessionStatus::Running | SessionStatus::RunningDegraded
                        )
                    })
                    .map(|(id, _)| id)
                    .collect();
                if let Some(id) = running.get(pick % running.len().max(1)) {
                    act(handler, **id, SessionCommand::Restart)
                        .await
                        .map_err(|p| format!("{step}: {p:?}"))?;
                }
            }
            Op::Lose { agent } => {
                if let Some(info) = infos.get(*agent) {
                    agent_command(handler, &info.id, AgentCommand::HeartbeatExpired).await;
                }
            }
            Op::Rejoin { agent, new_process } => {
                if let Some(info) = infos.get(*agent) {
                    if *new_process {
                        instances[*agent] = start_agent(handler, info).await;
                    } else {
                        agent_command(
                            handler,
                            &info.id,
                            AgentCommand::HeartbeatSeen {
                                instance: instances[*agent],
                                addr: info.addr.clone(),
                            },
                        )
                        .await;
                    }
                }
            }
            Op::RestartScheduler => {
                manager.stop().await;
                manager = cluster.manager();
                local.scheduler_restarts += 1;
            }
        }
        let round = manager.round(&cluster.store).await;
        local.placed += round.placed;
        local.deferred += round.deferred;
        if round.placed > 0
            && model
                .agents
                .values()
                .any(|a| a.status != AgentStatus::Alive)
        {
            local.placed_while_an_agent_was_lost += 1;
        }
        if round.conflicts != 0 {
            return Err(format!(
                "{step}: a lone scheduler lost {} placements",
                round.conflicts
            ));
        }
        let after = check(&cluster, &manager, &step).await?;
        let fit = after.pending_that_fit();
        if !fit.is_empty() {
            return Err(format!(
                "{step}: sessions {fit:?} stay pending though they fit ({:?}; agents {:?})",
                fit.iter().map(|id| &after.sessions[id]).collect::<Vec<_>>(),
                after
                    .agents
                    .iter()
                    .map(|(id, a)| (id, a, after.occupancy(id)))
                    .collect::<Vec<_>>()
            ));
        }
    }
    let model = cluster.model().await;
    local.multi_agent_sessions += model
        .sessions
        .values()
        .filter(|s| s.assigned.values().collect::<HashSet<_>>().len() > 1)
        .count();
    manager.stop().await;
    let mut c = coverage.lock().unwrap();
    c.placed += local.placed;
    c.deferred += local.deferred;
    c.refused_destroys += local.refused_destroys;
    c.placed_while_an_agent_was_lost += local.placed_while_an_agent_was_lost;
    c.multi_agent_sessions += local.multi_agent_sessions;
    c.scheduler_restarts += local.scheduler_restarts;
    c.freed += local.freed;
    Ok(())
}

#[test]
fn random_histories_never_overbook_and_every_reader_agrees() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let coverage = std::sync::Mutex::new(Coverage::default());
    let mut runner = runner(24);
    let planned = runner.config().cases;
    let result = runner.run(&history_strategy(), |history| {
        rt.block_on(run_history(&history, &coverage))
            .map_err(TestCaseError::fail)
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let c = coverage.into_inner().unwrap();
    eprintln!("random histories: {planned} cases, {c:?}");
    if planned >= 16 {
        assert!(c.placed > 0 && c.deferred > 0, "{c:?}");
        assert!(c.freed > 0 && c.scheduler_restarts > 0, "{c:?}");
        assert!(c.multi_agent_sessions > 0, "{c:?}");
    }
}

// ---------------------------------------------------------------------------
// 2. Two schedulers at once
// ---------------------------------------------------------------------------

/// Enqueues `n` more sessions of 1–3 CPUs, some of two kernels, some
/// multi-node; returns how many were enqueued so far.
async fn enqueue_some(handler: &CommandHandler, names: &mut usize, n: usize) {
    for _ in 0..n {
        *names += 1;
        let cpu = ["1", "2", "1.5"][*names % 3];
        let mode = if names.is_multiple_of(4) {
            ClusterMode::MultiNode
        } else {
            ClusterMode::SingleNode
        };
        let kernels = if names.is_multiple_of(5) { 2 } else { 1 };
        let s = spec(
            &format!("s{names}"),
            "default",
            request(cpu, GIB),
            kernels,
            mode,
        );
        enqueue(handler, OWNERS[*names % 3], s).await;
    }
}

/// Destroys (forced) up to `n` sessions that were placed.
async fn destroy_some(cluster: &Cluster, n: usize) {
    let model = cluster.model().await;
    let placed: Vec<Uuid> = model
        .sessions
        .iter()
        .filter(|(_, s)| s.status == SessionStatus::Scheduled)
        .map(|(id, _)| *id)
        .take(n)
        .collect();
    for id in placed {
        // A concurrent destroy may have won: only "not found" may fail.
        if let Err(p) = act(
            &cluster.handler,
            id,
            SessionCommand::Destroy {
                forced: true,
                reason: String::new(),
            },
        )
        .await
        {
            assert_eq!(p.kind, ProblemKind::ObjectNotFound("session"), "{p:?}");
        }
    }
}

fn assert_never_overbooked(model: &Model, when: &str) {
    assert!(
        model.violations.is_empty(),
        "{when}: {:#?}",
        model.violations
    );
    for agent in model.agents.keys() {
        assert_eq!(model.over_capacity(agent), None, "{when}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_at_once_never_double_book() {
    let cluster = Cluster::new().await;
    scaling_group(&cluster.handler, "default", "lifo", json!({})).await;
    for i in 0..2 {
        start_agent(
            &cluster.handler,
            &agent_info(&format!("i-agent{i}"), "default", "6", 16 * GIB),
        )
        .await;
    }
    // Two managers: each its own store, handler, view and scheduler. Their
    // appends take a few random milliseconds before they reach the log, so
    // that plans go stale now and then.
    let slow_store = || async {
        cluster
            .db
            .store_with(EventStoreConfig {
                faults: Faults {
                    max_delay_in_transaction: Some(Duration::from_millis(10)),
                    delay_share: 0.5,
                },
                ..EventStoreConfig::default()
            })
            .await
    };
    let a = Manager::start(&CommandHandler::new(slow_store().await), &cluster.db.url);
    let b = Manager::start(&CommandHandler::new(slow_store().await), &cluster.db.url);
    let mut names = 0;
    let (mut placed, mut conflicts) = (0, 0);

    // Lock-step: both plan on the very same state at the same time (so
    // they race for every placement).
    for round in 0..10 {
        enqueue_some(&cluster.handler, &mut names, 6).await;
        a.catch_up(&cluster.store).await;
        b.catch_up(&cluster.store).await;
        let (ra, rb) = tokio::join!(a.scheduler.schedule_once(), b.scheduler.schedule_once());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        placed += ra.placed + rb.placed;
        conflicts += ra.conflicts + rb.conflicts;
        assert_never_overbooked(&cluster.model().await, &format!("lock-step round {round}"));
        destroy_some(&cluster, 2).await;
    }
    assert!(
        conflicts > 0,
        "no placement ever lost on a stream version: the fence was not exercised"
    );

    // Free-running: each plans whenever it likes, on a view that may lag
    // the other's placements, while sessions come and go.
    let free_running = |m: Scheduler| {
        tokio::spawn(async move {
            let (mut placed, mut conflicts) = (0, 0);
            for _ in 0..40 {
                let r = m.schedule_once().await.unwrap();
                placed += r.placed;
                conflicts += r.conflicts;
                tokio::time::sleep(Duration::from_millis(rand_ms())).await;
            }
            (placed, conflicts)
        })
    };
    let ta = free_running(a.scheduler.clone());
    let tb = free_running(b.scheduler.clone());
    for _ in 0..20 {
        enqueue_some(&cluster.handler, &mut names, 4).await;
        destroy_some(&cluster, 4).await;
        tokio::time::sleep(Duration::from_millis(rand_ms())).await;
    }
    let (mut free_placed, mut free_conflicts) = (0, 0);
    for (p, c) in [ta.await.unwrap(), tb.await.unwrap()] {
        free_placed += p;
        free_conflicts += c;
    }
    eprintln!("free-running: {free_placed} placed, {free_conflicts} lost on versions");
    placed += free_placed;
    conflicts += free_conflicts;
    assert_never_overbooked(&cluster.model().await, "free-running");

    // Whatever the race left pending that fits is placed by one of them.
    a.round(&cluster.store).await;
    let model = check(&cluster, &a, "the last round").await.unwrap();
    assert!(model.pending_that_fit().is_empty());
    eprintln!("two schedulers: {placed} placed, {conflicts} lost on versions");
    assert!(placed > 25, "only {placed} placements");
    a.stop().await;
    b.stop().await;
}

/// A few milliseconds, at random.
fn rand_ms() -> u64 {
    u64::from(Uuid::new_v4().as_bytes()[0] % 8)
}

/// Feeds `view` the log after its position, up to `upto` (the head when
/// `None`).
async fn feed(view: &SessionView, store: &EventStore, upto: Option<u64>) {
    loop {
        let page = store.read_all(view.position(), 1000).await.unwrap();
        if page.is_empty() {
            return;
        }
        for e in &page {
            if upto.is_some_and(|u| e.position > u) {
                return;
            }
            view.observe(e);
        }
    }
}

/// A scheduler whose view saw the log up to now, and is fed the rest only
/// once its round has planned (the other manager's writes arrive late).
async fn stale_scheduler(cluster: &Cluster) -> (Scheduler, SessionView) {
    let view = SessionView::new();
    feed(&view, &cluster.store, None).await;
    let scheduler = Scheduler::new(
        CommandHandler::new(cluster.db.store().await),
        view.clone(),
        SchedulerConfig {
            database_url: cluster.db.url.clone(),
            tick: Duration::from_secs(3600),
        },
    );
    (scheduler, view)
}

/// Runs the stale scheduler's round; its view catches up only after it
/// has planned.
async fn stale_round(cluster: &Cluster, scheduler: &Scheduler, view: &SessionView) -> Round {
    let (round, ()) = tokio::join!(scheduler.schedule_once(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for _ in 0..50 {
            feed(view, &cluster.store, None).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    round.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_plan_never_lands_on_top_of_another_schedulers_placement() {
    // LIFO, one agent of 4 CPUs, which joins once `s1` (1 CPU) and `s2`
    // (3 CPUs) have been deferred (so deferring them again appends nothing).
    let (cluster, fresh) = policy_cluster("lifo", json!({}), &[]).await;
    let s1 = one_kernel(&cluster, OWNERS[0], "s1", "1").await;
    let s2 = one_kernel(&cluster, OWNERS[1], "s2", "3").await;
    assert_eq!(fresh.round(&cluster.store).await.deferred, 2);
    start_agent(
        &cluster.handler,
        &agent_info("i-agent0", "default", "4", 8 * GIB),
    )
    .await;
    // A deposed scheduler saw all of that: it would place s2 then s1.
    let (stale, stale_view) = stale_scheduler(&cluster).await;
    // The current scheduler places s3, the newest, on the whole agent.
    let s3 = one_kernel(&cluster, OWNERS[2], "s3", "4").await;
    let round = fresh.round(&cluster.store).await;
    assert_eq!((round.placed, round.deferred), (1, 2));
    // The deposed scheduler's plan is stale: every placement of it must
    // lose on the agent's version.
    let round = stale_round(&cluster, &stale, &stale_view).await;
    let model = cluster.model().await;
    assert_eq!(status(&model, s3), SessionStatus::Scheduled);
    assert_eq!(
        (status(&model, s1), status(&model, s2)),
        (SessionStatus::Pending, SessionStatus::Pending),
        "the stale plan placed something: {round:?}; agent i-agent0 holds {:?}",
        model.occupancy("i-agent0")
    );
    assert_never_overbooked(&model, "the stale round");
    fresh.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_plan_never_places_on_an_agent_lost_since() {
    let (cluster, fresh) = policy_cluster("fifo", json!({}), &[]).await;
    let s1 = one_kernel(&cluster, OWNERS[0], "s1", "1").await;
    let s2 = one_kernel(&cluster, OWNERS[1], "s2", "1").await;
    assert_eq!(fresh.round(&cluster.store).await.deferred, 2);
    start_agent(
        &cluster.handler,
        &agent_info("i-agent0", "default", "4", 8 * GIB),
    )
    .await;
    // The plan sees the agent alive: s1 and s2 both go there.
    let (stale, stale_view) = stale_scheduler(&cluster).await;
    agent_command(&cluster.handler, "i-agent0", AgentCommand::HeartbeatExpired).await;
    let round = stale_round(&cluster, &stale, &stale_view).await;
    let model = cluster.model().await;
    assert_eq!(
        (status(&model, s1), status(&model, s2)),
        (SessionStatus::Pending, SessionStatus::Pending),
        "placed on a lost agent: {round:?}; {:?}",
        model.violations
    );
    assert_never_overbooked(&model, "the stale round");
    fresh.stop().await;
}

// ---------------------------------------------------------------------------
// 3. Queue policies
// ---------------------------------------------------------------------------

/// A cluster with the `default` scaling group under `policy` and agents of
/// the given CPUs (8 GiB each).
async fn policy_cluster(policy: &str, opts: Value, cpus: &[&str]) -> (Cluster, Manager) {
    let cluster = Cluster::new().await;
    scaling_group(&cluster.handler, "default", policy, opts).await;
    for (i, cpu) in cpus.iter().enumerate() {
        start_agent(
            &cluster.handler,
            &agent_info(&format!("i-agent{i}"), "default", cpu, 8 * GIB),
        )
        .await;
    }
    let manager = cluster.manager();
    (cluster, manager)
}

async fn one_kernel(cluster: &Cluster, owner: &str, name: &str, cpu: &str) -> Uuid {
    enqueue(
        &cluster.handler,
        owner,
        spec(
            name,
            "default",
            request(cpu, GIB),
            1,
            ClusterMode::SingleNode,
        ),
    )
    .await
}

fn status(model: &Model, id: Uuid) -> SessionStatus {
    model.sessions[&id].status
}

/// The last `SchedulingDeferred` of a session: its reason and the names of
/// the predicates that failed.
async fn last_deferral(store: &EventStore, id: Uuid) -> Option<(String, Vec<String>)> {
    session_events(store, id)
        .await
        .into_iter()
        .rev()
        .find_map(|e| match e {
            SessionEvent::SchedulingDeferred {
                status_info,
                failed_predicates,
                ..
            } => Some((
                status_info,
                failed_predicates.into_iter().map(|p| p.name).collect(),
            )),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_places_in_enqueue_order() {
    let (cluster, manager) = policy_cluster("fifo", json!({}), &["2"]).await;
    let first = one_kernel(&cluster, OWNERS[0], "first", "1").await;
    let second = one_kernel(&cluster, OWNERS[1], "second", "1").await;
    let third = one_kernel(&cluster, OWNERS[2], "third", "1").await;
    let round = manager.round(&cluster.store).await;
    assert_eq!((round.placed, round.deferred), (2, 1));
    let model = check(&cluster, &manager, "the round").await.unwrap();
    assert_eq!(status(&model, first), SessionStatus::Scheduled);
    assert_eq!(status(&model, second), SessionStatus::Scheduled);
    assert_eq!(status(&model, third), SessionStatus::Pending);
    assert_eq!(
        last_deferral(&cluster.store, third).await,
        Some(("no-available-instances".into(), vec![]))
    );
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lifo_places_the_newest_first() {
    let (cluster, manager) = policy_cluster("lifo", json!({}), &["2"]).await;
    let first = one_kernel(&cluster, OWNERS[0], "first", "1").await;
    let second = one_kernel(&cluster, OWNERS[1], "second", "1").await;
    let third = one_kernel(&cluster, OWNERS[2], "third", "1").await;
    let round = manager.round(&cluster.store).await;
    assert_eq!((round.placed, round.deferred), (2, 1));
    let model = check(&cluster, &manager, "the round").await.unwrap();
    assert_eq!(status(&model, first), SessionStatus::Pending);
    assert_eq!(status(&model, second), SessionStatus::Scheduled);
    assert_eq!(status(&model, third), SessionStatus::Scheduled);
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drf_prefers_the_owner_with_the_smaller_dominant_share() {
    for (policy, expected_winner) in [("drf", 1), ("fifo", 0)] {
        let (cluster, manager) = policy_cluster(policy, json!({}), &["4"]).await;
        // Alice already runs half the group's CPUs.
        let running = one_kernel(&cluster, OWNERS[0], "running", "2").await;
        manager.round(&cluster.store).await;
        // Room for one more: Alice asked first, Bob (who runs nothing) next.
        let alice = one_kernel(&cluster, OWNERS[0], "alice", "2").await;
        let bob = one_kernel(&cluster, OWNERS[1], "bob", "2").await;
        let round = manager.round(&cluster.store).await;
        assert_eq!((round.placed, round.deferred), (1, 1), "{policy}");
        let model = check(&cluster, &manager, "the round").await.unwrap();
        assert_eq!(status(&model, running), SessionStatus::Scheduled);
        let (winner, loser) = if expected_winner == 1 {
            (bob, alice)
        } else {
            (alice, bob)
        };
        assert_eq!(status(&model, winner), SessionStatus::Scheduled, "{policy}");
        assert_eq!(status(&model, loser), SessionStatus::Pending, "{policy}");
        manager.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_that_fits_nowhere_does_not_hold_up_the_sessions_behind_it() {
    let (cluster, manager) = policy_cluster("fifo", json!({}), &["4", "4"]).await;
    // `huge` fits on no agent once `big` is placed (only on an empty one):
    // it waits, and `small` behind it goes on.
    let filler = one_kernel(&cluster, OWNERS[0], "filler", "3").await;
    manager.round(&cluster.store).await;
    let big = one_kernel(&cluster, OWNERS[0], "big", "4").await;
    let huge = enqueue(
        &cluster.handler,
        OWNERS[1],
        spec(
            "huge",
            "default",
            request("2", GIB),
            2,
            ClusterMode::SingleNode,
        ),
    )
    .await;
    let small = one_kernel(&cluster, OWNERS[2], "small", "1").await;
    let round = manager.round(&cluster.store).await;
    let model = check(&cluster, &manager, "the round").await.unwrap();
    assert_eq!(status(&model, filler), SessionStatus::Scheduled);
    assert_eq!(status(&model, big), SessionStatus::Scheduled);
    assert_eq!(status(&model, huge), SessionStatus::Pending);
    assert_eq!(status(&model, small), SessionStatus::Scheduled);
    assert_eq!((round.placed, round.deferred), (2, 1));
    assert_eq!(
        last_deferral(&cluster.store, huge).await,
        Some(("no-available-instances".into(), vec![]))
    );
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_larger_than_every_agent_never_holds_the_queue() {
    // Starvation protection after one second: it must not apply to a
    // session no agent could ever hold, however long and often it waited.
    let opts = json!({"config": {"starvation_timeout": 1}});
    let (cluster, manager) = policy_cluster("fifo", opts, &["4", "4"]).await;
    let never = one_kernel(&cluster, OWNERS[0], "never", "5").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..25 {
        manager.round(&cluster.store).await;
    }
    let small = one_kernel(&cluster, OWNERS[1], "small", "1").await;
    let round = manager.round(&cluster.store).await;
    let model = check(&cluster, &manager, "the round").await.unwrap();
    assert_eq!(status(&model, never), SessionStatus::Pending);
    assert_eq!(status(&model, small), SessionStatus::Scheduled, "{round:?}");
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_node_sessions_spread_and_single_node_sessions_stay_on_one_agent() {
    let (cluster, manager) = policy_cluster("fifo", json!({}), &["4", "4", "4"]).await;
    let multi = enqueue(
        &cluster.handler,
        OWNERS[0],
        spec(
            "multi",
            "default",
            request("1", GIB),
            3,
            ClusterMode::MultiNode,
        ),
    )
    .await;
    let single = enqueue(
        &cluster.handler,
        OWNERS[1],
        spec(
            "single",
            "default",
            request("1", GIB),
            3,
            ClusterMode::SingleNode,
        ),
    )
    .await;
    let round = manager.round(&cluster.store).await;
    assert_eq!(round.placed, 2);
    let model = check(&cluster, &manager, "the round").await.unwrap();
    let agents_of =
        |id: Uuid| -> HashSet<String> { model.sessions[&id].assigned.values().cloned().collect() };
    assert_eq!(agents_of(multi).len(), 3, "{:?}", agents_of(multi));
    assert_eq!(agents_of(single).len(), 1, "{:?}", agents_of(single));

    // With room on only two agents, a multi-node session of three still
    // goes (two kernels share one).
    let multi2 = enqueue(
        &cluster.handler,
        OWNERS[2],
        spec(
            "multi2",
            "default",
            request("1.5", GIB),
            3,
            ClusterMode::MultiNode,
        ),
    )
    .await;
    let round = manager.round(&cluster.store).await;
    assert_eq!(round.placed, 1, "{round:?}");
    let model = check(&cluster, &manager, "the second round").await.unwrap();
    let multi2_agents: HashSet<String> =
        model.sessions[&multi2].assigned.values().cloned().collect();
    assert_eq!(multi2_agents.len(), 2, "{multi2_agents:?}");
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_takes_agents_in_turn_and_a_new_scheduler_resumes_the_turn() {
    let (cluster, manager) = policy_cluster(
        "fifo",
        json!({"agent_selection_strategy": "roundrobin"}),
        &["4", "4", "4"],
    )
    .await;
    let mut ids = Vec::new();
    for (i, (owner, cpu)) in OWNERS.iter().cycle().zip(["1", "2", "1", "1"]).enumerate() {
        ids.push(one_kernel(&cluster, owner, &format!("rr{i}"), cpu).await);
    }
    let round = manager.round(&cluster.store).await;
    assert_eq!(round.placed, 4, "{round:?}");
    let model = check(&cluster, &manager, "the round").await.unwrap();
    let agent_of = |model: &Model, id: Uuid| -> String {
        let agents: HashSet<&String> = model.sessions[&id].assigned.values().collect();
        assert_eq!(agents.len(), 1, "{agents:?}");
        agents.into_iter().next().cloned().unwrap_or_default()
    };
    let got: Vec<String> = ids.iter().map(|id| agent_of(&model, *id)).collect();
    assert_eq!(got, ["i-agent0", "i-agent1", "i-agent2", "i-agent0"]);
    // A scheduler that starts afresh (another manager) continues the turn
    // from the log, and skips an agent that has no room.
    manager.stop().await;
    let manager = cluster.manager();
    let big = one_kernel(&cluster, OWNERS[1], "rr-big", "3").await;
    let next = one_kernel(&cluster, OWNERS[2], "rr-next", "1").await;
    let round = manager.round(&cluster.store).await;
    assert_eq!(round.placed, 2, "{round:?}");
    let model = check(&cluster, &manager, "the second round").await.unwrap();
    assert_eq!(
        agent_of(&model, big),
        "i-agent2",
        "i-agent1 has 2 CPUs left"
    );
    assert_eq!(agent_of(&model, next), "i-agent0");
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_knows_the_slot_names_agents_report_as_they_come_and_go() {
    let cluster = Cluster::new().await;
    let manager = cluster.manager();
    let plain = agent_info("i-plain", "default", "4", 8 * GIB);
    let mut gpu = agent_info("i-gpu", "default", "4", 8 * GIB);
    gpu.available_slots.insert("cuda.device".into(), "2".into());
    start_agent(&cluster.handler, &plain).await;
    start_agent(&cluster.handler, &gpu).await;
    manager.catch_up(&cluster.store).await;
    assert_eq!(
        *manager.view.reported_slots(),
        ["cpu", "cuda.device", "mem"]
    );
    // The only agent with GPUs comes back without them: the name goes.
    gpu.available_slots.remove("cuda.device");
    start_agent(&cluster.handler, &gpu).await;
    manager.catch_up(&cluster.store).await;
    assert_eq!(*manager.view.reported_slots(), ["cpu", "mem"]);
    manager.stop().await;
}

/// A batch session of `kernels` kernels of 1 CPU, waiting for `deps`.
fn batch(name: &str, kernels: u32, deps: Vec<Uuid>) -> SessionSpec {
    let mut s = spec(
        name,
        "default",
        request("1", GIB),
        kernels,
        ClusterMode::SingleNode,
    );
    s.session_type = SessionType::Batch;
    s.dependencies = deps;
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_at_and_dependencies_defer_and_a_failed_dependency_cancels() {
    let (cluster, manager) = policy_cluster("fifo", json!({}), &["8"]).await;
    let handler = &cluster.handler;

    // Not before an hour from now: deferred; a time already past: placed.
    let mut later = spec(
        "later",
        "default",
        request("1", GIB),
        1,
        ClusterMode::SingleNode,
    );
    later.starts_at = Some(Utc::now() + chrono::Duration::hours(1));
    let later = enqueue(handler, OWNERS[0], later).await;
    let mut now = spec(
        "now",
        "default",
        request("1", GIB),
        1,
        ClusterMode::SingleNode,
    );
    now.starts_at = Some(Utc::now() - chrono::Duration::seconds(1));
    let now = enqueue(handler, OWNERS[0], now).await;

    // Batch sessions: `ok` (of two kernels) will succeed, `bad` fail; one
    // session waits for each, and one for a session that never existed.
    let ok = enqueue(handler, OWNERS[1], batch("ok", 2, vec![])).await;
    let bad = enqueue(handler, OWNERS[1], batch("bad", 1, vec![])).await;
    let after_ok = enqueue(handler, OWNERS[2], batch("after-ok", 1, vec![ok])).await;
    let after_bad = enqueue(handler, OWNERS[2], batch("after-bad", 1, vec![bad])).await;
    let after_nothing = enqueue(
        handler,
        OWNERS[2],
        batch("after-nothing", 1, vec![Uuid::new_v4()]),
    )
    .await;

    let round = manager.round(&cluster.store).await;
    let model = check(&cluster, &manager, "the first round").await.unwrap();
    assert_eq!(status(&model, now), SessionStatus::Scheduled);
    assert_eq!(status(&model, ok), SessionStatus::Scheduled);
    assert_eq!(status(&model, bad), SessionStatus::Scheduled);
    for (id, predicate) in [
        (later, "reserved_time"),
        (after_ok, "dependencies"),
        (after_bad, "dependencies"),
    ] {
        assert_eq!(status(&model, id), SessionStatus::Pending);
        assert_eq!(
            last_deferral(&cluster.store, id).await,
            Some(("predicate-checks-failed".into(), vec![predicate.to_owned()])),
            "{predicate}"
        );
    }
    // A dependency that does not exist can never succeed.
    assert_eq!(status(&model, after_nothing), SessionStatus::Cancelled);
    assert_eq!(round.cancelled, 1, "{round:?}");

    // `ok` exits 0 (its other kernel is then stopped), `bad` exits 1.
    for (id, code) in [(ok, 0), (bad, 1)] {
        let kernels: Vec<Uuid> = model.sessions[&id].kernels.iter().map(|k| k.0).collect();
        for k in &kernels {
            act(handler, id, started(*k, BTreeMap::new()))
                .await
                .unwrap();
        }
        act(handler, id, gone(kernels[0], Some(code)))
            .await
            .unwrap();
        for k in &kernels[1..] {
            act(handler, id, gone(*k, None)).await.unwrap();
        }
    }
    let model = check(&cluster, &manager, "the batches ended")
        .await
        .unwrap();
    assert_eq!(model.sessions[&ok].result, SessionResult::Success);
    assert_eq!(model.sessions[&bad].result, SessionResult::Failure);
    assert_eq!(status(&model, ok), SessionStatus::Terminated);
    assert_eq!(status(&model, bad), SessionStatus::Terminated);

    let round = manager.round(&cluster.store).await;
    let model = check(&cluster, &manager, "the second round").await.unwrap();
    assert_eq!(status(&model, after_ok), SessionStatus::Scheduled);
    assert_eq!(status(&model, after_bad), SessionStatus::Cancelled);
    assert_eq!(status(&model, later), SessionStatus::Pending);
    assert_eq!((round.placed, round.cancelled), (1, 1), "{round:?}");
    let cancelled = session_events(&cluster.store, after_bad).await;
    assert!(
        matches!(
            cancelled.last(),
            Some(SessionEvent::SessionCancelled { reason }) if reason == "dependency-failed"
        ),
        "{cancelled:?}"
    );
    manager.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_single_kernel_batch_session_that_succeeded_lets_its_dependents_run() {
    let (cluster, manager) = policy_cluster("fifo", json!({}), &["8"]).await;
    let handler = &cluster.handler;
    let ok = enqueue(handler, OWNERS[0], batch("ok", 1, vec![])).await;
    let after = enqueue(handler, OWNERS[0], batch("after-ok", 1, vec![ok])).await;
    manager.round(&cluster.store).await;
    let model = check(&cluster, &manager, "the first round").await.unwrap();
    assert_eq!(status(&model, ok), SessionStatus::Scheduled);
    assert_eq!(status(&model, after), SessionStatus::Pending);

    // Its only kernel runs and exits 0: the session succeeded and ended
    // (the log says TERMINATED, then SUCCESS).
    let kernel = model.sessions[&ok].kernels[0].0;
    act(handler, ok, started(kernel, BTreeMap::new()))
        .await
        .unwrap();
    act(handler, ok, gone(kernel, Some(0))).await.unwrap();
    let model = check(&cluster, &manager, "it ended").await.unwrap();
    assert_eq!(
        (status(&model, ok), model.sessions[&ok].result),
        (SessionStatus::Terminated, SessionResult::Success)
    );
    // The scheduler's view must say so too, and keep no trace of it among
    // the live sessions.
    let ghosts: Vec<String> = manager
        .view
        .sessions()
        .iter()
        .filter(|s| s.state.id.is_none())
        .map(|s| format!("{:?} (result {:?})", s.state.status, s.state.result))
        .collect();
    assert_eq!(
        (manager.view.ended(ok), ghosts),
        (
            Some((SessionStatus::Terminated, SessionResult::Success)),
            vec![]
        ),
        "the view's record of the ended session, and its live sessions without an id"
    );
    let round = manager.round(&cluster.store).await;
    let model = check(&cluster, &manager, "the second round").await.unwrap();
    assert_eq!(status(&model, after), SessionStatus::Scheduled, "{round:?}");
    manager.stop().await;
}
