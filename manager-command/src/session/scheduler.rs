//! The scheduler: places PENDING sessions on agents.
//!
//! A level-triggered reconciler: whenever the log moves (a session enqueued,
//! capacity freed, an agent changed) and on a periodic tick, the manager
//! that holds the scheduler's lock (a PostgreSQL advisory lock on a
//! dedicated connection) looks at the [`SessionView`] and plans every
//! scaling group's pending queue.
//!
//! # Guarantees
//! - **No capacity promised twice.** Each placement is one atomic append:
//!   the session's `SessionScheduled` and, on each agent it uses,
//!   `KernelsPlaced`, every stream at the version the plan saw. A deposed or
//!   concurrent scheduler's placement fails as a conflict, appends nothing,
//!   and is planned again on fresh state.
//! - **No head-of-line stall.** A session that fits nowhere gets its reason
//!   (`no-available-instances`, `predicate-checks-failed`) and the queue
//!   goes on with the sessions behind it.
//! - **Bounded starvation.** Large sessions are not starved forever by
//!   small ones behind them: under FIFO, once a session that would fit on
//!   an empty agent of its group has waited longer than the group's
//!   `scheduler_opts.config.starvation_timeout` (seconds, default
//!   [`DEFAULT_STARVATION_TIMEOUT`]; 0 turns it off), nothing behind it in
//!   its scaling group is placed until it is: the capacity freed is kept
//!   for it. A session larger than every agent never holds the queue.
//!   `num_retries_to_skip` > 0 also turns it off (the reference's "skip
//!   after N retries" is the opposite choice).
//!
//! # Policies (scaling group `scheduler`)
//! - `fifo` (default): oldest first.
//! - `lifo`: newest first.
//! - `drf`: owners (access keys) with the smallest dominant share first —
//!   the share of the owner's summed occupied slots over the scaling
//!   group's capacity, maximised over slots; FIFO within an owner.
//!
//! Agent selection (`scheduler_opts.agent_selection_strategy`):
//! `dispersed` (default, most free capacity first), `concentrated` (least
//! free capacity that still fits). Free capacity is compared on the
//! requested slots in the order `cuda`, `rocm`, `tpu`, `cpu`, `mem`, then by
//! name; agents offering accelerator slots the request does not use go
//! last. Ties go to the agent id that sorts first. `roundrobin` (or
//! `scheduler_opts.roundrobin: true`, as the reference spells it): agents in
//! id order, cyclically, starting after the agent that received the scaling
//! group's last placement — known from the log, so a new scheduler resumes
//! where the last one stopped — taking the first that fits.
//!
//! Slot names are interned per round (amounts are arrays indexed by
//! position), so choosing an agent compares numbers, not strings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use manager_events::agent::{self as agent_events, AgentEvent};
use manager_events::codec::encode;
use manager_events::session::{
    self as session_events, ClusterMode, KernelPlacement, PredicateFailure, SessionStatus,
};
use manager_events::slots::SlotAmount;
use manager_events::{
    AppendBatch, EventMetadata, EventStoreError, ExpectedVersion, NewEvent, Problem,
};
use tokio::sync::watch;
use uuid::Uuid;

use super::view::{AgentEntry, SessionEntry, SessionView, Slots, add, slots_of};
use super::{ActOnSession, SessionCommand};
use crate::aggregate::Aggregate;
use crate::handler::CommandHandler;
use crate::leadership::AdvisoryLock;

/// The scheduler's advisory lock id.
pub const SCHEDULER_LOCK: i64 = 0x6261_6900_0000_0091;

/// Seconds a FIFO session may wait before the queue behind it waits for
/// it (see the module documentation).
pub const DEFAULT_STARVATION_TIMEOUT: u64 = 600;

/// Placements appended concurrently (they share group commits).
const CONCURRENT_APPENDS: usize = 256;

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The event log's database (the lock lives there).
    pub database_url: String,
    /// Plan at least this often, even when nothing happened.
    pub tick: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Sessions placed.
    pub placed: usize,
    /// Sessions that fit nowhere (or failed a predicate).
    pub deferred: usize,
    /// Placements that lost to a concurrent writer (planned again).
    pub conflicts: usize,
    /// Sessions cancelled (a failed dependency).
    pub cancelled: usize,
}

/// The scheduler.
#[derive(Clone)]
pub struct Scheduler {
    handler: CommandHandler,
    view: SessionView,
    config: SchedulerConfig,
    leader: std::sync::Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The policy of one scaling group.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    order: Order,
    selection: Selection,
    num_retries_to_skip: u32,
    pending_timeout: Option<Duration>,
    starvation_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Fifo,
    Lifo,
    Drf,
}

impl Policy {
    fn of(scheduler: &str, opts: &serde_json::Value) -> Policy {
        let order = match scheduler {
            "lifo" => Order::Lifo,
            "drf" => Order::Drf,
            _ => Order::Fifo,
        };
        let strategy = opts
            .get("agent_selection_strategy")
            .and_then(|v| v.as_str());
        let roundrobin = opts.get("roundrobin").and_then(serde_json::Value::as_bool) == Some(true);
        let selection = match strategy {
            _ if roundrobin => Selection::RoundRobin,
            Some("roundrobin" | "round-robin" | "round_robin") => Selection::RoundRobin,
            Some("concentrated") => Selection::Concentrated,
            _ => Selection::Dispersed,
        };
        let num_retries_to_skip = opts
            .get("config")
            .and_then(|c| c.get("num_retries_to_skip"))
            .and_then(serde_json::Value::as_u64)
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let pending_timeout = opts
            .get("pending_timeout")
            .and_then(serde_json::Value::as_f64)
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64);
        let starvation = opts
            .get("config")
            .and_then(|c| c.get("starvation_timeout"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(DEFAULT_STARVATION_TIMEOUT);
        Policy {
            order,
            selection,
            num_retries_to_skip,
            pending_timeout,
            starvation_timeout: (starvation > 0).then(|| Duration::from_secs(starvation)),
        }
    }
}

/// The order slots are compared in when choosing an agent.
fn slot_rank(name: &str) -> (usize, &str) {
    const PRIORITY: [&str; 5] = ["cuda", "rocm", "tpu", "cpu", "mem"];
    let device = name.split('.').next().unwrap_or(name);
    let rank = PRIORITY
        .iter()
        .position(|p| *p == device)
        .unwrap_or(PRIORITY.len());
    (rank, name)
}

/// The slot names of one round, each given a position, so that amounts
/// are arrays indexed by position rather than maps keyed by name.
#[derive(Debug, Default)]
struct SlotIndex {
    positions: HashMap<String, usize>,
    names: Vec<String>,
}

impl SlotIndex {
    fn intern(&mut self, name: &str) {
        if !self.positions.contains_key(name) {
            self.positions.insert(name.to_owned(), self.names.len());
            self.names.push(name.to_owned());
        }
    }

    /// `slots` as an array over every interned name (missing: zero).
    fn dense(&self, slots: &Slots) -> Vec<SlotAmount> {
        let mut out = vec![SlotAmount::ZERO; self.names.len()];
        for (name, amount) in slots {
            if let Some(&i) = self.positions.get(name) {
                out[i] = *amount;
            }
        }
        out
    }
}

/// A request as arrays: the amount of every slot, the slots it asks a
/// positive amount of, and the slots it names in comparison order.
#[derive(Debug, Clone)]
struct Request {
    want: Vec<SlotAmount>,
    asked: Vec<usize>,
    order: Vec<usize>,
}

impl Request {
    /// `times` kernels of `per_kernel` each.
    fn new(index: &SlotIndex, per_kernel: &Slots, times: usize) -> Request {
        let mut total = Slots::new();
        for _ in 0..times {
            add(&mut total, per_kernel);
        }
        let want = index.dense(&total);
        let mut named: Vec<&String> = total.keys().collect();
        named.sort_by_key(|s| slot_rank(s));
        let order: Vec<usize> = named
            .into_iter()
            .filter_map(|n| index.positions.get(n).copied())
            .collect();
        let asked = order
            .iter()
            .copied()
            .filter(|&i| want[i] > SlotAmount::ZERO)
            .collect();
        Request { want, asked, order }
    }
}

/// How agents are chosen (`scheduler_opts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// Most free capacity first.
    Dispersed,
    /// Least free capacity that still fits.
    Concentrated,
    /// The next agent (by id) after the one that got the group's last
    /// placement, cyclically, that fits.
    RoundRobin,
}

/// One agent during planning: capacity, what is used (including this
/// round's placements) and the version the next append expects. Amounts
/// are indexed by the round's [`SlotIndex`].
#[derive(Debug, Clone)]
struct Candidate {
    id: String,
    addr: String,
    scaling_group: String,
    architecture: String,
    capacity: Vec<SlotAmount>,
    used: Vec<SlotAmount>,
    /// Accelerator slots (named `device.kind`) it offers.
    accelerators: Vec<usize>,
    version: u64,
    last_placed: u64,
}

impl Candidate {
    fn of(index: &SlotIndex, id: &str, a: &AgentEntry) -> Candidate {
        let capacity = index.dense(&a.capacity());
        let accelerators = index
            .names
            .iter()
            .enumerate()
            .filter(|(i, name)| name.contains('.') && capacity[*i] > SlotAmount::ZERO)
            .map(|(i, _)| i)
            .collect();
        Candidate {
            id: id.to_owned(),
            addr: a.state.description.addr.clone(),
            scaling_group: a.state.description.scaling_group.clone(),
            architecture: a.state.description.architecture.clone(),
            capacity,
            used: index.dense(&a.occupied()),
            accelerators,
            version: a.version,
            last_placed: a.last_placed,
        }
    }

    fn free(&self, slot: usize) -> SlotAmount {
        self.capacity[slot].minus(self.used[slot])
    }

    /// Whether `r` fits in what is free.
    fn fits(&self, r: &Request) -> bool {
        r.asked
            .iter()
            .all(|&i| self.used[i].plus(r.want[i]) <= self.capacity[i])
    }

    /// Accelerator slots it offers that `r` does not use.
    fn extras(&self, r: &Request) -> usize {
        self.accelerators
            .iter()
            .filter(|&&i| r.want[i] <= SlotAmount::ZERO)
            .count()
    }

    fn take(&mut self, r: &Request) {
        for &i in &r.asked {
            self.used[i] = self.used[i].plus(r.want[i]);
        }
    }
}

/// Chooses among `candidates` (indices, ascending: candidates are sorted
/// by id) the agent for `r`, dispersed or concentrated.
fn choose(
    candidates: &[Candidate],
    eligible: impl Iterator<Item = usize>,
    r: &Request,
    concentrated: bool,
) -> Option<usize> {
    use std::cmp::Ordering;
    let mut best: Option<(usize, usize)> = None;
    for i in eligible {
        let c = &candidates[i];
        if !c.fits(r) {
            continue;
        }
        let extras = c.extras(r);
        let better = match best {
            None => true,
            Some((j, best_extras)) => {
                if extras != best_extras {
                    extras < best_extras
                } else {
                    let b = &candidates[j];
                    let by_free = r
                        .order
                        .iter()
                        .map(|&k| c.free(k).cmp(&b.free(k)))
                        .find(|o| *o != Ordering::Equal)
                        .unwrap_or(Ordering::Equal);
                    match by_free {
                        Ordering::Less => concentrated,
                        Ordering::Greater => !concentrated,
                        Ordering::Equal => i < j,
                    }
                }
            }
        };
        if better {
            best = Some((i, extras));
        }
    }
    best.map(|(i, _)| i)
}

/// The first of `pool` (ascending) at or after `cursor`, cyclically, that
/// `r` fits on and `skip` does not refuse.
fn next_round_robin(
    candidates: &[Candidate],
    pool: &[usize],
    cursor: usize,
    r: &Request,
    skip: impl Fn(usize) -> bool,
) -> Option<usize> {
    let start = pool.partition_point(|&i| i < cursor);
    pool[start..]
        .iter()
        .chain(&pool[..start])
        .copied()
        .find(|&i| !skip(i) && candidates[i].fits(r))
}

/// What sessions holding quota use, per owner scope, and how many each
/// keypair runs (this round's placements included).
#[derive(Debug, Default)]
struct Usage {
    sessions: HashMap<String, i64>,
    by_keypair: HashMap<String, Slots>,
    by_user: HashMap<Uuid, Slots>,
    by_project: HashMap<Uuid, Slots>,
    by_domain: HashMap<String, Slots>,
}

impl Usage {
    fn add(&mut self, s: &super::Session) {
        let per_kernel = slots_of(&s.spec.slots_per_kernel);
        let mut total = Slots::new();
        for _ in &s.kernels {
            add(&mut total, &per_kernel);
        }
        let o = &s.owner;
        *self.sessions.entry(o.access_key.clone()).or_insert(0) += 1;
        add(
            self.by_keypair.entry(o.access_key.clone()).or_default(),
            &total,
        );
        add(self.by_user.entry(o.user_id).or_default(), &total);
        add(self.by_project.entry(o.project_id).or_default(), &total);
        add(
            self.by_domain.entry(o.domain_name.clone()).or_default(),
            &total,
        );
    }
}

/// The first slot where `used + want` exceeds `limit(slot)`, as a message.
fn exceeded(
    used: Option<&Slots>,
    want: &Slots,
    limit: impl Fn(&str) -> SlotAmount,
) -> Option<String> {
    want.iter().find_map(|(slot, w)| {
        if *w <= SlotAmount::ZERO {
            return None;
        }
        let u = used
            .and_then(|m| m.get(slot))
            .copied()
            .unwrap_or(SlotAmount::ZERO);
        let l = limit(slot);
        (u.plus(*w) > l).then(|| format!("{slot}: {} of {l}", u.plus(*w)))
    })
}

fn listed_or(map: &BTreeMap<String, String>, slot: &str, unlisted: SlotAmount) -> SlotAmount {
    map.get(slot)
        .and_then(|v| SlotAmount::parse(v).ok())
        .unwrap_or(unlisted)
}

/// The quota predicates (all evaluated, failures collected):
/// `concurrency` (`max_concurrent_sessions` of the keypair's policy),
/// `keypair_resource_limit` (its `total_resource_slots`; unlisted slots per
/// `default_for_unspecified`), `user_resource_limit` (the same of the
/// user's main keypair's policy, over all the user's sessions),
/// `user_group_resource_limit` (the project's `total_resource_slots`;
/// unlisted slots unlimited) and `domain_resource_limit` (likewise).
fn quota_failures(
    s: &super::Session,
    usage: &Usage,
    tenancy: &super::view::Tenancy,
) -> Vec<PredicateFailure> {
    use manager_events::policy::DefaultForUnspecified;
    let mut failures = Vec::new();
    let per_kernel = slots_of(&s.spec.slots_per_kernel);
    let mut want = Slots::new();
    for _ in &s.kernels {
        add(&mut want, &per_kernel);
    }
    let o = &s.owner;
    let policy_of = |ak: &str| {
        tenancy
            .keypairs
            .get(ak)
            .and_then(|k| k.live())
            .and_then(|k| tenancy.policies.get(&k.resource_policy))
            .and_then(|p| p.live())
    };
    let check_policy = |policy: &manager_events::policy::KeypairPolicyFields,
                        used: Option<&Slots>| {
        let unlisted = match policy.default_for_unspecified {
            DefaultForUnspecified::Limited => SlotAmount::ZERO,
            DefaultForUnspecified::Unlimited => SlotAmount::Infinity,
        };
        exceeded(used, &want, |slot| {
            listed_or(&policy.total_resource_slots, slot, unlisted)
        })
    };
    if let Some(policy) = policy_of(&o.access_key) {
        let running = usage.sessions.get(&o.access_key).copied().unwrap_or(0);
        if policy.max_concurrent_sessions > 0 && running >= policy.max_concurrent_sessions {
            failures.push(PredicateFailure {
                name: "concurrency".into(),
                msg: format!(
                    "You cannot run more than {} concurrent sessions",
                    policy.max_concurrent_sessions
                ),
            });
        }
        if let Some(what) = check_policy(policy, usage.by_keypair.get(&o.access_key)) {
            failures.push(PredicateFailure {
                name: "keypair_resource_limit".into(),
                msg: format!("Your keypair resource quota is exceeded. ({what})"),
            });
        }
    }
    let main_policy = tenancy
        .users
        .get(&o.user_id)
        .and_then(|u| u.main_access_key.as_deref())
        .and_then(policy_of);
    if let Some(policy) = main_policy
        && let Some(what) = check_policy(policy, usage.by_user.get(&o.user_id))
    {
        failures.push(PredicateFailure {
            name: "user_resource_limit".into(),
            msg: format!("Your main-keypair resource quota is exceeded. ({what})"),
        });
    }
    if let Some(fields) = tenancy.projects.get(&o.project_id).and_then(|p| p.live())
        && let Some(what) = exceeded(usage.by_project.get(&o.project_id), &want, |slot| {
            listed_or(&fields.total_resource_slots, slot, SlotAmount::Infinity)
        })
    {
        failures.push(PredicateFailure {
            name: "user_group_resource_limit".into(),
            msg: format!("Your group resource quota is exceeded. ({what})"),
        });
    }
    if let Some(domain) = tenancy.domains.get(&o.domain_name)
        && let Some(what) = exceeded(usage.by_domain.get(&o.domain_name), &want, |slot| {
            listed_or(
                &domain.fields.total_resource_slots,
                slot,
                SlotAmount::Infinity,
            )
        })
    {
        failures.push(PredicateFailure {
            name: "domain_resource_limit".into(),
            msg: format!("Your domain resource quota is exceeded. ({what})"),
        });
    }
    failures
}

/// A planned placement: the session's events at its version, and the
/// `KernelsPlaced` event for each agent it uses.
struct Planned {
    session: Uuid,
    stream: (String, u64, Vec<NewEvent>),
    agents: Vec<(String, NewEvent)>,
}

/// Joins a round's placements that share an agent (directly or through
/// multi-node sessions) into one atomic batch each, every agent stream at
/// the version the plan saw. Appending them apart with chained versions
/// would let a later placement land on an agent whose earlier one failed —
/// on a plan that is no longer true.
fn batches(
    planned: Vec<Planned>,
    versions: &HashMap<String, u64>,
) -> Vec<(Vec<Uuid>, AppendBatch)> {
    // Union-find over the placements, joined by agent.
    let mut parent: Vec<usize> = (0..planned.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_user: HashMap<&str, usize> = HashMap::new();
    for (i, p) in planned.iter().enumerate() {
        for (agent, _) in &p.agents {
            match first_user.get(agent.as_str()) {
                Some(&j) => {
                    let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                    parent[a] = b;
                }
                None => {
                    first_user.insert(agent.as_str(), i);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..planned.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    let mut planned: Vec<Option<Planned>> = planned.into_iter().map(Some).collect();
    groups
        .into_values()
        .map(|members| {
            let mut sessions = Vec::with_capacity(members.len());
            let mut agent_events: BTreeMap<String, Vec<NewEvent>> = BTreeMap::new();
            let mut batch = AppendBatch::new().with_metadata(EventMetadata {
                request_id: Some("scheduler".into()),
                ..EventMetadata::default()
            });
            for i in members {
                let Some(p) = planned[i].take() else { continue };
                sessions.push(p.session);
                let (stream_id, version, events) = p.stream;
                batch = batch.stream(
                    stream_id,
                    session_events::STREAM_TYPE,
                    ExpectedVersion::Exact(version),
                    events,
                );
                for (agent, event) in p.agents {
                    agent_events.entry(agent).or_default().push(event);
                }
            }
            for (agent, events) in agent_events {
                let version = versions.get(&agent).copied().unwrap_or(0);
                batch = batch.stream(
                    agent_events::stream_id(&agent),
                    agent_events::STREAM_TYPE,
                    ExpectedVersion::Exact(version),
                    events,
                );
            }
            (sessions, batch)
        })
        .collect()
}

impl Scheduler {
    /// A scheduler over `view`, appending through `handler`'s store.
    pub fn new(handler: CommandHandler, view: SessionView, config: SchedulerConfig) -> Self {
        Scheduler {
            handler,
            view,
            config,
            leader: std::sync::Arc::new(watch::channel(false).0),
        }
    }

    /// Whether this manager is the scheduler now (holds the lock).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Runs until `stop` turns true: takes the lock when it is free, then
    /// plans on every change of the log and every tick while it holds it.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut lock = AdvisoryLock::new(
            SCHEDULER_LOCK,
            "scheduler",
            self.config.database_url.clone(),
        );
        let mut leading = false;
        let mut changes = self.view.changes();
        let mut ticker = tokio::time::interval(self.config.tick.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut caught_up = false;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                r = changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    if !leading {
                        continue;
                    }
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                    continue;
                }
            }
            if !caught_up {
                match self.handler.store().head_position().await {
                    Ok(head) => caught_up = self.view.wait_for(head, self.config.tick).await,
                    Err(e) => tracing::warn!(error = %e, "scheduler: cannot read the log head"),
                }
                if !caught_up {
                    continue;
                }
            }
            leading = lock.hold().await;
            self.leader
                .send_if_modified(|l| std::mem::replace(l, leading) != leading);
            metrics::gauge!("scheduler_leader").set(if leading { 1.0 } else { 0.0 });
            if !leading {
                continue;
            }
            let started = std::time::Instant::now();
            match self.schedule_once().await {
                Ok(round) => {
                    metrics::histogram!("scheduler_round_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::counter!("scheduler_placements_total").increment(round.placed as u64);
                    metrics::counter!("scheduler_conflicts_total")
                        .increment(round.conflicts as u64);
                    if round.conflicts > 0 {
                        // Plan again at once on the state that beat us.
                        let _ = self
                            .view
                            .wait_for(self.view.position() + 1, Duration::from_millis(50))
                            .await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduling round failed"),
            }
            // Coalesce: whatever arrived while planning is seen next round.
            changes.borrow_and_update();
        }
        metrics::gauge!("scheduler_leader").set(0.0);
        self.leader
            .send_if_modified(|l| std::mem::replace(l, false));
        lock.release().await;
    }

    /// One planning round over every scaling group, appended; returns once
    /// the view shows what it appended.
    pub async fn schedule_once(&self) -> Result<Round, Problem> {
        let mut round = Round::default();
        let queued = self.view.pending();
        if queued.is_empty() {
            return Ok(round);
        }
        let mut pending: BTreeMap<String, Vec<SessionEntry>> = BTreeMap::new();
        for s in queued {
            pending
                .entry(s.state.spec.scaling_group.clone())
                .or_default()
                .push(s);
        }
        // Live sessions' statuses (dependencies) and what those holding
        // quota use, read in place.
        let mut usage = Usage::default();
        let mut dead_or_done: HashMap<Uuid, SessionStatus> = HashMap::new();
        self.view.for_each_session(|s| {
            if let Some(id) = s.state.id {
                dead_or_done.insert(id, s.state.status);
            }
            if s.state.status.holds_quota() {
                usage.add(&s.state);
            }
        });
        if pending.is_empty() {
            return Ok(round);
        }
        let groups: HashMap<String, Policy> = self
            .view
            .scaling_groups()
            .into_iter()
            .filter_map(|(name, g)| {
                g.live()
                    .map(|f| (name, Policy::of(&f.scheduler, &f.scheduler_opts)))
            })
            .collect();
        let agents: Vec<(String, AgentEntry)> = self
            .view
            .agents()
            .into_iter()
            .filter(|(_, a)| a.schedulable())
            .collect();
        // Every slot name of the round, so amounts are arrays.
        let mut index = SlotIndex::default();
        for (_, a) in &agents {
            for name in a.state.capacity.available_slots.keys() {
                index.intern(name);
            }
            for held in a.held.values() {
                for name in held.keys() {
                    index.intern(name);
                }
            }
        }
        for queue in pending.values() {
            for s in queue {
                for name in s.state.spec.slots_per_kernel.keys() {
                    index.intern(name);
                }
            }
        }
        let mut candidates: Vec<Candidate> = agents
            .iter()
            .map(|(id, a)| Candidate::of(&index, id, a))
            .collect();
        drop(agents);
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        let mut planned: Vec<Planned> = Vec::new();
        let mut defers: Vec<(Uuid, SessionCommand)> = Vec::new();
        let now = Utc::now();
        for (group, mut queue) in pending {
            let policy = groups
                .get(&group)
                .cloned()
                .unwrap_or_else(|| Policy::of("fifo", &serde_json::Value::Null));
            self.order(
                &policy,
                &mut queue,
                &usage.by_keypair,
                &index,
                &candidates,
                &group,
            );
            let in_group: Vec<usize> = (0..candidates.len())
                .filter(|i| candidates[*i].scaling_group == group)
                .collect();
            // Round-robin resumes after the agent that got the group's
            // last placement (from the log: the same on any manager).
            let mut cursor = in_group
                .iter()
                .copied()
                .filter(|i| candidates[*i].last_placed > 0)
                .max_by_key(|i| candidates[*i].last_placed)
                .map_or(0, |i| i + 1);
            let mut blocked = false;
            for s in queue {
                let Some(id) = s.state.id else { continue };
                if let Some(timeout) = policy.pending_timeout
                    && let Some(created) = s.created_at
                    && (now - created)
                        .to_std()
                        .is_ok_and(|waited| waited >= timeout)
                {
                    defers.push((
                        id,
                        SessionCommand::Destroy {
                            forced: false,
                            reason: "pending-timeout".into(),
                        },
                    ));
                    round.cancelled += 1;
                    continue;
                }
                if let Some(failures) = predicates(&s, &dead_or_done, &self.view, now) {
                    if failures.iter().any(|f| f.name == "dependencies-failed") {
                        defers.push((
                            id,
                            SessionCommand::Destroy {
                                forced: false,
                                reason: "dependency-failed".into(),
                            },
                        ));
                        round.cancelled += 1;
                    } else {
                        defers.push((
                            id,
                            SessionCommand::Defer {
                                status_info: "predicate-checks-failed".into(),
                                failed_predicates: failures,
                                msg: None,
                            },
                        ));
                        round.deferred += 1;
                    }
                    continue;
                }
                let quota = self
                    .view
                    .with_tenancy(|t| quota_failures(&s.state, &usage, t));
                if !quota.is_empty() {
                    defers.push((
                        id,
                        SessionCommand::Defer {
                            status_info: "predicate-checks-failed".into(),
                            failed_predicates: quota,
                            msg: None,
                        },
                    ));
                    round.deferred += 1;
                    continue;
                }
                if blocked {
                    continue;
                }
                match place(
                    &s,
                    &index,
                    &mut candidates,
                    &in_group,
                    policy.selection,
                    &mut cursor,
                ) {
                    Some(placements) => {
                        planned.push(self.plan(&s, &group, &placements)?);
                        usage.add(&s.state);
                    }
                    None => {
                        defers.push((
                            id,
                            SessionCommand::Defer {
                                status_info: "no-available-instances".into(),
                                failed_predicates: vec![],
                                msg: Some(format!(
                                    "no agent in scaling group {group:?} has room for the session"
                                )),
                            },
                        ));
                        round.deferred += 1;
                        let starving = policy.starvation_timeout.is_some_and(|t| {
                            s.created_at
                                .and_then(|c| (now - c).to_std().ok())
                                .is_some_and(|waited| waited >= t)
                        });
                        if policy.order == Order::Fifo
                            && policy.num_retries_to_skip == 0
                            && starving
                            && fits_when_empty(&s, &index, &candidates, &in_group)
                        {
                            // Keep what frees up for the starving session.
                            blocked = true;
                        }
                    }
                }
            }
        }
        let mut last = 0;
        let versions: HashMap<String, u64> = candidates
            .iter()
            .map(|c| (c.id.clone(), c.version))
            .collect();
        type Appended = (
            Vec<Uuid>,
            Result<manager_events::AppendResult, EventStoreError>,
        );
        let results: Vec<Appended> =
            futures::stream::iter(batches(planned, &versions).into_iter().map(|(ids, batch)| {
                let store = self.handler.store().clone();
                async move { (ids, store.append(batch).await) }
            }))
            .buffer_unordered(CONCURRENT_APPENDS)
            .collect()
            .await;
        for (sessions, result) in results {
            match result {
                Ok(r) => {
                    round.placed += sessions.len();
                    last = last.max(r.last_position);
                }
                Err(EventStoreError::WrongExpectedVersion { .. }) => {
                    round.conflicts += sessions.len();
                }
                Err(e) => {
                    tracing::warn!(sessions = sessions.len(), error = %e, "placements could not be appended");
                    round.conflicts += sessions.len();
                }
            }
        }
        for (id, command) in defers {
            match self
                .handler
                .transact(
                    &ActOnSession { id, command },
                    EventMetadata {
                        request_id: Some("scheduler".into()),
                        ..EventMetadata::default()
                    },
                )
                .await
            {
                Ok(t) => last = last.max(t.position.unwrap_or(0)),
                Err(e) => tracing::debug!(%id, error = %e, "deferral not recorded"),
            }
        }
        if last > 0 {
            self.view.wait_for(last, Duration::from_secs(5)).await;
        }
        Ok(round)
    }

    /// Puts a scaling group's queue in the policy's order.
    fn order(
        &self,
        policy: &Policy,
        queue: &mut [SessionEntry],
        usage: &HashMap<String, Slots>,
        index: &SlotIndex,
        candidates: &[Candidate],
        group: &str,
    ) {
        match policy.order {
            Order::Fifo => {
                queue.sort_by_key(|s| s.enqueued_at);
                if policy.num_retries_to_skip > 0 {
                    // Sessions tried too often go behind the others.
                    let n = policy.num_retries_to_skip;
                    queue.sort_by_key(|s| (s.state.retries >= n, s.enqueued_at));
                }
            }
            Order::Lifo => queue.sort_by_key(|s| std::cmp::Reverse(s.enqueued_at)),
            Order::Drf => {
                let mut total = vec![SlotAmount::ZERO; index.names.len()];
                for c in candidates.iter().filter(|c| c.scaling_group == group) {
                    for (t, cap) in total.iter_mut().zip(&c.capacity) {
                        *t = t.plus(*cap);
                    }
                }
                let share = |used: &Slots| -> i128 {
                    used.iter()
                        .filter_map(|(k, v)| {
                            let cap = total[*index.positions.get(k)?];
                            match (v, cap) {
                                (SlotAmount::Finite(u), SlotAmount::Finite(c)) if c > 0 => {
                                    Some(u.saturating_mul(1_000_000) / c)
                                }
                                _ => None,
                            }
                        })
                        .max()
                        .unwrap_or(0)
                };
                // Each owner's share once, not once per comparison.
                let shares: HashMap<&str, i128> = usage
                    .iter()
                    .map(|(ak, used)| (ak.as_str(), share(used)))
                    .collect();
                queue.sort_by_cached_key(|s| {
                    (
                        shares
                            .get(s.state.owner.access_key.as_str())
                            .copied()
                            .unwrap_or(0),
                        s.enqueued_at,
                    )
                });
            }
        }
    }

    /// A placement's events: the session's at its version, and one
    /// `KernelsPlaced` per agent it uses.
    fn plan(
        &self,
        s: &SessionEntry,
        group: &str,
        placements: &[KernelPlacement],
    ) -> Result<Planned, Problem> {
        let internal =
            |e: String| Problem::new(manager_events::ProblemKind::InternalServerError).msg(e);
        let id = s.state.id.unwrap_or_default();
        let events = s
            .state
            .decide(&SessionCommand::Schedule {
                scaling_group: group.to_owned(),
                placements: placements.to_vec(),
            })
            .map_err(|e| internal(e.to_string()))?;
        let encoded = events
            .iter()
            .map(|e| encode(e).map(|(t, p)| NewEvent::new(t, p)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| internal(e.to_string()))?;
        let per_kernel = &s.state.spec.slots_per_kernel;
        let mut by_agent: BTreeMap<&str, BTreeMap<Uuid, BTreeMap<String, String>>> =
            BTreeMap::new();
        for p in placements {
            by_agent
                .entry(p.agent_id.as_str())
                .or_default()
                .insert(p.kernel_id, per_kernel.clone());
        }
        let mut agents = Vec::with_capacity(by_agent.len());
        for (agent, kernels) in by_agent {
            let event = AgentEvent::KernelsPlaced {
                session_id: id,
                kernels,
            };
            let (t, p) = encode(&event).map_err(|e| internal(e.to_string()))?;
            agents.push((agent.to_owned(), NewEvent::new(t, p)));
        }
        Ok(Planned {
            session: id,
            stream: (session_events::stream_id(id), s.version, encoded),
            agents,
        })
    }
}

/// The predicates that hold `s` back now, if any: `reserved_time`
/// (starts_at in the future) and `dependencies` (a session it depends on
/// has not ended yet); `dependencies-failed` when one ended without
/// success, which cancels the session (waiting could never help).
fn predicates(
    s: &SessionEntry,
    live: &HashMap<Uuid, SessionStatus>,
    view: &SessionView,
    now: chrono::DateTime<Utc>,
) -> Option<Vec<PredicateFailure>> {
    let mut failures = Vec::new();
    if let Some(at) = s.state.spec.starts_at
        && at > now
    {
        failures.push(PredicateFailure {
            name: "reserved_time".into(),
            msg: format!("Before start time ({at})"),
        });
    }
    let waiting: Vec<String> = s
        .state
        .spec
        .dependencies
        .iter()
        .filter(|d| live.contains_key(d))
        .map(ToString::to_string)
        .collect();
    let failed: Vec<String> = s
        .state
        .spec
        .dependencies
        .iter()
        .filter(|d| !live.contains_key(d))
        .filter(|d| {
            view.ended(**d)
                .is_none_or(|(_, result)| result != manager_events::session::SessionResult::Success)
        })
        .map(ToString::to_string)
        .collect();
    if !failed.is_empty() {
        failures.push(PredicateFailure {
            name: "dependencies-failed".into(),
            msg: format!(
                "Dependency sessions ended without success. ({})",
                failed.join(", ")
            ),
        });
    }
    if !waiting.is_empty() {
        failures.push(PredicateFailure {
            name: "dependencies".into(),
            msg: format!(
                "Waiting dependency sessions to finish as success. ({})",
                waiting.join(", ")
            ),
        });
    }
    (!failures.is_empty()).then_some(failures)
}

/// Whether `s` would fit on the group's agents if they were empty.
fn fits_when_empty(
    s: &SessionEntry,
    index: &SlotIndex,
    candidates: &[Candidate],
    in_group: &[usize],
) -> bool {
    let mut empty: Vec<Candidate> = in_group
        .iter()
        .map(|i| {
            let c = &candidates[*i];
            Candidate {
                used: vec![SlotAmount::ZERO; c.capacity.len()],
                ..c.clone()
            }
        })
        .collect();
    let all: Vec<usize> = (0..empty.len()).collect();
    place(s, index, &mut empty, &all, Selection::Dispersed, &mut 0).is_some()
}

/// Places every kernel of `s` on agents of `in_group`, updating what the
/// chosen candidates use (and, for round-robin, the group's `cursor`);
/// `None` (and nothing changed) when it does not fit.
fn place(
    s: &SessionEntry,
    index: &SlotIndex,
    candidates: &mut [Candidate],
    in_group: &[usize],
    selection: Selection,
    cursor: &mut usize,
) -> Option<Vec<KernelPlacement>> {
    let per_kernel = slots_of(&s.state.spec.slots_per_kernel);
    let arch = &s.state.spec.image.architecture;
    let designated: HashSet<&str> = s
        .state
        .spec
        .designated_agents
        .iter()
        .map(String::as_str)
        .collect();
    let eligible = |c: &Candidate| {
        (arch.is_empty() || c.architecture.is_empty() || &c.architecture == arch)
            && (designated.is_empty() || designated.contains(c.id.as_str()))
    };
    let pool: Vec<usize> = in_group
        .iter()
        .copied()
        .filter(|i| eligible(&candidates[*i]))
        .collect();
    let concentrated = selection == Selection::Concentrated;
    let kernels = &s.state.kernels;
    let placement = |c: &Candidate, kernel: Uuid| KernelPlacement {
        kernel_id: kernel,
        agent_id: c.id.clone(),
        agent_addr: c.addr.clone(),
    };
    match s.state.spec.cluster_mode {
        ClusterMode::SingleNode => {
            let total = Request::new(index, &per_kernel, kernels.len());
            let i = match selection {
                Selection::RoundRobin => {
                    next_round_robin(candidates, &pool, *cursor, &total, |_| false)?
                }
                _ => choose(candidates, pool.iter().copied(), &total, concentrated)?,
            };
            candidates[i].take(&total);
            *cursor = i + 1;
            Some(
                kernels
                    .iter()
                    .map(|k| placement(&candidates[i], k.id))
                    .collect(),
            )
        }
        ClusterMode::MultiNode => {
            // Spread: prefer an agent not used yet by this session.
            let one = Request::new(index, &per_kernel, 1);
            let before: Vec<Vec<SlotAmount>> =
                pool.iter().map(|i| candidates[*i].used.clone()).collect();
            let (cursor_before, mut at) = (*cursor, *cursor);
            let mut used_here: HashSet<usize> = HashSet::new();
            let mut out = Vec::with_capacity(kernels.len());
            for k in kernels {
                let i = match selection {
                    Selection::RoundRobin => {
                        next_round_robin(candidates, &pool, at, &one, |i| used_here.contains(&i))
                            .or_else(|| next_round_robin(candidates, &pool, at, &one, |_| false))
                    }
                    _ => {
                        let fresh = pool.iter().copied().filter(|i| !used_here.contains(i));
                        choose(candidates, fresh, &one, concentrated).or_else(|| {
                            choose(candidates, pool.iter().copied(), &one, concentrated)
                        })
                    }
                };
                let Some(i) = i else {
                    for (j, used) in pool.iter().zip(before) {
                        candidates[*j].used = used;
                    }
                    *cursor = cursor_before;
                    return None;
                };
                candidates[i].take(&one);
                at = i + 1;
                used_here.insert(i);
                out.push(placement(&candidates[i], k.id));
            }
            *cursor = at;
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> SlotIndex {
        let mut index = SlotIndex::default();
        for name in ["cpu", "mem", "cuda.device"] {
            index.intern(name);
        }
        index
    }

    fn slots(pairs: &[(&str, &str)]) -> Slots {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SlotAmount::parse(v).unwrap()))
            .collect()
    }

    fn cand(
        index: &SlotIndex,
        id: &str,
        capacity: &[(&str, &str)],
        used: &[(&str, &str)],
    ) -> Candidate {
        let capacity = index.dense(&slots(capacity));
        let accelerators = (0..capacity.len())
            .filter(|i| index.names[*i].contains('.') && capacity[*i] > SlotAmount::ZERO)
            .collect();
        Candidate {
            id: id.into(),
            addr: String::new(),
            scaling_group: "default".into(),
            architecture: "x86_64".into(),
            capacity,
            used: index.dense(&slots(used)),
            accelerators,
            version: 1,
            last_placed: 0,
        }
    }

    fn req(index: &SlotIndex, pairs: &[(&str, &str)]) -> Request {
        Request::new(index, &slots(pairs), 1)
    }

    #[test]
    fn dispersed_takes_the_freest_agent_and_concentrated_the_fullest_that_fits() {
        let ix = index();
        let cs = vec![
            cand(&ix, "a", &[("cpu", "8")], &[("cpu", "1")]),
            cand(&ix, "b", &[("cpu", "8")], &[("cpu", "6")]),
            cand(&ix, "c", &[("cpu", "8")], &[("cpu", "7.5")]),
        ];
        let one = req(&ix, &[("cpu", "1")]);
        assert_eq!(choose(&cs, 0..3, &one, false), Some(0));
        assert_eq!(choose(&cs, 0..3, &one, true), Some(1));
        let big = req(&ix, &[("cpu", "7")]);
        assert_eq!(choose(&cs, 0..3, &big, true), Some(0));
        let huge = req(&ix, &[("cpu", "9")]);
        assert_eq!(choose(&cs, 0..3, &huge, false), None);
    }

    #[test]
    fn a_request_fits_only_where_every_slot_it_asks_for_is_free() {
        let ix = index();
        let c = cand(&ix, "a", &[("cpu", "4"), ("mem", "1024")], &[("cpu", "3")]);
        assert!(c.fits(&req(&ix, &[("cpu", "1"), ("mem", "1024")])));
        assert!(!c.fits(&req(&ix, &[("cpu", "1.5")])));
        // A slot the agent lacks fits only a request of zero.
        assert!(c.fits(&req(&ix, &[("cpu", "1"), ("cuda.device", "0")])));
        assert!(!c.fits(&req(&ix, &[("cuda.device", "1")])));
    }

    #[test]
    fn agents_with_unused_accelerators_go_last_and_ties_go_to_the_first_id() {
        let ix = index();
        let cs = vec![
            cand(&ix, "a", &[("cpu", "8"), ("cuda.device", "2")], &[]),
            cand(&ix, "b", &[("cpu", "4")], &[]),
            cand(&ix, "c", &[("cpu", "4")], &[]),
        ];
        let cpu = req(&ix, &[("cpu", "1")]);
        assert_eq!(choose(&cs, 0..3, &cpu, false), Some(1));
        let gpu = req(&ix, &[("cpu", "1"), ("cuda.device", "1")]);
        assert_eq!(choose(&cs, 0..3, &gpu, false), Some(0));
    }

    #[test]
    fn round_robin_resumes_after_the_cursor_and_wraps_around() {
        let ix = index();
        let cs = vec![
            cand(&ix, "a", &[("cpu", "4")], &[]),
            cand(&ix, "b", &[("cpu", "4")], &[("cpu", "4")]),
            cand(&ix, "c", &[("cpu", "4")], &[]),
        ];
        let one = req(&ix, &[("cpu", "1")]);
        let pool = [0, 1, 2];
        assert_eq!(next_round_robin(&cs, &pool, 0, &one, |_| false), Some(0));
        assert_eq!(next_round_robin(&cs, &pool, 1, &one, |_| false), Some(2));
        assert_eq!(next_round_robin(&cs, &pool, 3, &one, |_| false), Some(0));
        assert_eq!(next_round_robin(&cs, &pool, 1, &one, |i| i == 2), Some(0));
        let huge = req(&ix, &[("cpu", "5")]);
        assert_eq!(next_round_robin(&cs, &pool, 0, &huge, |_| false), None);
    }
}
