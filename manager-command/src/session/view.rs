//! The scheduler's memory: live sessions, agents and their occupancy,
//! scaling groups — folded from the log by a subscription, with each
//! stream's version, so that a decision made on this view can be appended
//! against exactly the versions it saw.
//!
//! Occupancy is derived from events only: a kernel takes the slots the
//! `KernelsPlaced` event of its agent's stream gave it (replaced by what
//! the agent really allocated when it started) for as long as its status
//! holds slots ([`KernelStatus::holds_agent_slots`]). Nothing is ever
//! "decremented", so nothing can drift.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use manager_events::agent::{AgentEvent, AgentStatus};
use manager_events::codec::decode;
use manager_events::scaling_group::ScalingGroupEvent;
use manager_events::session::{KernelStatus, SessionEvent, SessionResult, SessionStatus};
use manager_events::slots::SlotAmount;
use manager_events::{EventStore, RecordedEvent};
use tokio::sync::watch;
use uuid::Uuid;

use super::Session;
use crate::agent::Agent;
use crate::aggregate::Aggregate;
use crate::domain::Domain;
use crate::keypair::Keypair;
use crate::policy::KeypairPolicy;
use crate::project::Project;
use crate::scaling_group::ScalingGroup;
use crate::user::User;

/// Slot amounts by slot name, exact.
pub type Slots = BTreeMap<String, SlotAmount>;

/// Reads a slot map of decimal strings; amounts that do not parse count as
/// nothing (they were validated before they were logged).
pub fn slots_of(map: &BTreeMap<String, String>) -> Slots {
    map.iter()
        .map(|(k, v)| (k.clone(), SlotAmount::parse(v).unwrap_or(SlotAmount::ZERO)))
        .collect()
}

/// `a + b`, slot by slot.
pub fn add(a: &mut Slots, b: &Slots) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_insert(SlotAmount::ZERO);
        *e = e.plus(*v);
    }
}

/// An agent as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct AgentEntry {
    /// The aggregate's state.
    pub state: Agent,
    /// Its stream's version.
    pub version: u64,
    /// Slots held on it, by kernel.
    pub held: HashMap<Uuid, Slots>,
    /// Since when it is LOST or stopped (`None` while alive).
    pub gone_since: Option<DateTime<Utc>>,
    /// Log position of the last kernels placed on it (0: none yet); where
    /// round-robin selection resumes.
    pub last_placed: u64,
}

impl AgentEntry {
    /// Its capacity.
    pub fn capacity(&self) -> Slots {
        slots_of(&self.state.capacity.available_slots)
    }

    /// What its kernels hold.
    pub fn occupied(&self) -> Slots {
        let mut total = Slots::new();
        for s in self.held.values() {
            add(&mut total, s);
        }
        total
    }

    /// Whether new kernels may go there.
    pub fn schedulable(&self) -> bool {
        self.state.status == Some(AgentStatus::Alive)
    }
}

/// A live session as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub struct SessionEntry {
    /// The aggregate's state.
    pub state: Session,
    /// Its stream's version.
    pub version: u64,
    /// Log position of its enqueue (the queue's order).
    pub enqueued_at: u64,
    /// When it was enqueued.
    pub created_at: Option<DateTime<Utc>>,
    /// The id of its `SessionScheduled` event (the key of its kernels'
    /// creation calls).
    pub scheduled_event: Option<Uuid>,
    /// Per kernel, the id of the event that last moved it (the key of the
    /// call that follows it, e.g. its destruction).
    pub kernel_events: HashMap<Uuid, Uuid>,
    /// When its status last changed.
    pub status_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<String, AgentEntry>,
    sessions: HashMap<Uuid, SessionEntry>,
    scaling_groups: HashMap<String, ScalingGroup>,
    /// Sessions that ended: how, and their result (what dependencies look
    /// at). A few dozen bytes per session ever run.
    ended: HashMap<Uuid, (SessionStatus, SessionResult)>,
    /// Kernel → (agent, slots placed).
    placed: HashMap<Uuid, (String, Slots)>,
    /// What quotas are made of: keypairs, their policies, users (their
    /// main keypair), projects and domains.
    tenancy: Tenancy,
    /// The slot names agents report, sorted (see
    /// [`SessionView::reported_slots`]), and how many agents report each.
    reported_slots: Arc<Vec<String>>,
    slot_reporters: BTreeMap<String, usize>,
    /// Live sessions PENDING (the scheduler's queue).
    pending: std::collections::HashSet<Uuid>,
    /// Live sessions the kernel driver has work for: SCHEDULED, or with a
    /// kernel TERMINATING or RESTARTING.
    actionable: std::collections::HashSet<Uuid>,
}

/// The aggregates quotas and limits are read from, by stream id.
#[derive(Debug, Default, Clone)]
pub struct Tenancy {
    /// Keypairs by access key.
    pub keypairs: HashMap<String, Keypair>,
    /// Keypair resource policies by name.
    pub policies: HashMap<String, KeypairPolicy>,
    /// Users by id.
    pub users: HashMap<Uuid, User>,
    /// Projects by id.
    pub projects: HashMap<Uuid, Project>,
    /// Domains by name.
    pub domains: HashMap<String, Domain>,
}

fn fold<K, A>(map: &mut HashMap<K, A>, key: Option<K>, e: &RecordedEvent)
where
    K: std::hash::Hash + Eq,
    A: Aggregate,
{
    let Some(key) = key else { return };
    if let Ok(event) = decode::<A::Event>(&e.event_type, &e.payload) {
        map.entry(key).or_default().apply(&event);
    }
}

/// The view; cheap to clone.
#[derive(Clone)]
pub struct SessionView {
    state: Arc<RwLock<State>>,
    position: Arc<watch::Sender<u64>>,
}

impl Default for SessionView {
    fn default() -> Self {
        SessionView::new()
    }
}

impl std::fmt::Debug for SessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionView")
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl SessionView {
    /// An empty view at position 0.
    pub fn new() -> Self {
        SessionView {
            state: Arc::new(RwLock::new(State::default())),
            position: Arc::new(watch::channel(0).0),
        }
    }

    /// The log position applied up to.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// Changes whenever events are applied.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Waits until the view has applied the log up to `position`, at most
    /// `timeout`. Returns whether it has.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.changes();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// One live session.
    pub fn session(&self, id: Uuid) -> Option<SessionEntry> {
        self.state.read().ok()?.sessions.get(&id).cloned()
    }

    /// How a session that ended ended: its status and result.
    pub fn ended(&self, id: Uuid) -> Option<(SessionStatus, SessionResult)> {
        self.state.read().ok()?.ended.get(&id).copied()
    }

    /// The PENDING sessions.
    pub fn pending(&self) -> Vec<SessionEntry> {
        self.state
            .read()
            .map(|s| {
                s.pending
                    .iter()
                    .filter_map(|id| s.sessions.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The sessions the kernel driver has work for (SCHEDULED, or with a
    /// kernel TERMINATING or RESTARTING).
    pub fn actionable(&self) -> Vec<SessionEntry> {
        self.state
            .read()
            .map(|s| {
                s.actionable
                    .iter()
                    .filter_map(|id| s.sessions.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `f` over every live session under the view's read lock (no
    /// copies).
    pub fn for_each_session(&self, mut f: impl FnMut(&SessionEntry)) {
        if let Ok(s) = self.state.read() {
            s.sessions.values().for_each(&mut f);
        }
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<SessionEntry> {
        self.state
            .read()
            .map(|s| s.sessions.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every agent.
    pub fn agents(&self) -> Vec<(String, AgentEntry)> {
        self.state
            .read()
            .map(|s| {
                s.agents
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One agent.
    pub fn agent(&self, id: &str) -> Option<AgentEntry> {
        self.state.read().ok()?.agents.get(id).cloned()
    }

    /// Every scaling group that exists.
    pub fn scaling_groups(&self) -> Vec<(String, ScalingGroup)> {
        self.state
            .read()
            .map(|s| {
                s.scaling_groups
                    .iter()
                    .filter(|(_, g)| g.live().is_some())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Runs `f` over the keypairs, policies, users, projects and domains
    /// (what quotas are made of) as of now, under the view's read lock.
    pub fn with_tenancy<R>(&self, f: impl FnOnce(&Tenancy) -> R) -> R {
        match self.state.read() {
            Ok(s) => f(&s.tenancy),
            Err(_) => f(&Tenancy::default()),
        }
    }

    /// The slot names some agent reports (besides the known ones), sorted:
    /// kept up to date as agents register or change capacity, not gathered
    /// from every agent per call.
    pub fn reported_slots(&self) -> Arc<Vec<String>> {
        self.state
            .read()
            .map(|s| Arc::clone(&s.reported_slots))
            .unwrap_or_default()
    }

    /// Runs `f` over every live scaling group, by name, under the view's
    /// read lock (nothing is copied).
    pub fn with_scaling_groups<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = (&String, &ScalingGroup)>) -> R,
    ) -> R {
        match self.state.read() {
            Ok(s) => f(&mut s.scaling_groups.iter().filter(|(_, g)| g.live().is_some())),
            Err(_) => f(&mut std::iter::empty()),
        }
    }

    /// Applies one event of the log.
    pub fn observe(&self, e: &RecordedEvent) {
        if let Ok(mut state) = self.state.write() {
            state.observe(e);
        }
        self.position.send_if_modified(|p| {
            let newer = e.position > *p;
            if newer {
                *p = e.position;
            }
            newer
        });
    }

    /// Follows the log from the start until `stop` turns true.
    pub async fn follow(self, store: EventStore, mut stop: watch::Receiver<bool>) {
        let mut events = store.subscribe(self.position());
        loop {
            tokio::select! {
                next = events.next() => match next {
                    Some(Ok(recorded)) => self.observe(&recorded),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "session view: reading the log failed; retrying");
                    }
                    None => return,
                },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

impl State {
    fn observe(&mut self, e: &RecordedEvent) {
        match e.stream_type.as_str() {
            manager_events::agent::STREAM_TYPE => {
                let Some(id) = e.stream_id.strip_prefix("agent:") else {
                    return;
                };
                let Ok(event) = decode::<AgentEvent>(&e.event_type, &e.payload) else {
                    return;
                };
                let entry = self.agents.entry(id.to_owned()).or_default();
                entry.version = e.stream_version;
                if let AgentEvent::KernelsPlaced {
                    session_id: _,
                    kernels,
                } = &event
                {
                    entry.last_placed = e.position;
                    for (kernel, slots) in kernels {
                        let slots = slots_of(slots);
                        entry.held.insert(*kernel, slots.clone());
                        self.placed.insert(*kernel, (id.to_owned(), slots));
                    }
                }
                match &event {
                    AgentEvent::AgentLost { .. } | AgentEvent::AgentStopped { .. } => {
                        entry.gone_since.get_or_insert(e.recorded_at);
                    }
                    AgentEvent::AgentRejoined { .. } | AgentEvent::AgentRegistered { .. } => {
                        entry.gone_since = None;
                    }
                    _ => {}
                }
                let before: Vec<String> = entry
                    .state
                    .capacity
                    .available_slots
                    .keys()
                    .cloned()
                    .collect();
                entry.state.apply(&event);
                let after = &entry.state.capacity.available_slots;
                if !before.iter().eq(after.keys()) {
                    // Count reporters per slot name; rebuild the list only
                    // when a name appears or disappears.
                    let mut changed = false;
                    for name in &before {
                        if let Some(n) = self.slot_reporters.get_mut(name) {
                            *n -= 1;
                            if *n == 0 {
                                self.slot_reporters.remove(name);
                                changed = true;
                            }
                        }
                    }
                    for name in after.keys() {
                        let n = self.slot_reporters.entry(name.clone()).or_insert(0);
                        changed |= *n == 0;
                        *n += 1;
                    }
                    if changed {
                        self.reported_slots =
                            Arc::new(self.slot_reporters.keys().cloned().collect());
                    }
                }
            }
            manager_events::scaling_group::STREAM_TYPE => {
                let Some(name) = e.stream_id.strip_prefix("scaling-group:") else {
                    return;
                };
                if let Ok(event) = decode::<ScalingGroupEvent>(&e.event_type, &e.payload) {
                    self.scaling_groups
                        .entry(name.to_owned())
                        .or_default()
                        .apply(&event);
                }
            }
            manager_events::session::STREAM_TYPE => self.observe_session(e),
            manager_events::keypair::STREAM_TYPE => {
                let key = e.stream_id.strip_prefix("keypair:").map(str::to_owned);
                fold(&mut self.tenancy.keypairs, key, e);
            }
            manager_events::policy::STREAM_TYPE => {
                let key = e
                    .stream_id
                    .strip_prefix("keypair-policy:")
                    .map(str::to_owned);
                fold(&mut self.tenancy.policies, key, e);
            }
            manager_events::user::STREAM_TYPE => {
                let key = e
                    .stream_id
                    .strip_prefix("user:")
                    .and_then(|u| u.parse().ok());
                fold(&mut self.tenancy.users, key, e);
            }
            manager_events::project::STREAM_TYPE => {
                let key = e
                    .stream_id
                    .strip_prefix("project:")
                    .and_then(|u| u.parse().ok());
                fold(&mut self.tenancy.projects, key, e);
            }
            manager_events::domain::STREAM_TYPE => {
                let key = e.stream_id.strip_prefix("domain:").map(str::to_owned);
                fold(&mut self.tenancy.domains, key, e);
            }
            _ => {}
        }
    }

    fn observe_session(&mut self, e: &RecordedEvent) {
        let Some(id) = e
            .stream_id
            .strip_prefix("session:")
            .and_then(|s| s.parse::<Uuid>().ok())
        else {
            return;
        };
        let Ok(event) = decode::<SessionEvent>(&e.event_type, &e.payload) else {
            tracing::warn!(
                position = e.position,
                "session event not understood; skipped"
            );
            return;
        };
        if !self.sessions.contains_key(&id)
            && !matches!(event, SessionEvent::SessionEnqueued { .. })
        {
            // An ended session (or one enqueued before the log we read):
            // only a late result matters, for its dependents.
            if let SessionEvent::SessionResultRecorded { result, .. } = &event
                && let Some(ended) = self.ended.get_mut(&id)
            {
                ended.1 = *result;
            }
            return;
        }
        let entry = self.sessions.entry(id).or_default();
        entry.version = e.stream_version;
        match &event {
            SessionEvent::SessionEnqueued { .. } => {
                entry.enqueued_at = e.position;
                entry.created_at = Some(e.recorded_at);
            }
            SessionEvent::SessionScheduled { .. } => entry.scheduled_event = Some(e.event_id),
            SessionEvent::KernelsTransitioned { kernels, .. } => {
                for k in kernels {
                    entry.kernel_events.insert(*k, e.event_id);
                }
            }
            SessionEvent::KernelStarted { kernel_id, .. } => {
                entry.kernel_events.insert(*kernel_id, e.event_id);
            }
            _ => {}
        }
        let before = entry.state.status;
        entry.state.apply(&event);
        if entry.status_since.is_none() || entry.state.status != before {
            entry.status_since = Some(e.recorded_at);
        }
        // What each kernel holds now.
        if let SessionEvent::KernelStarted {
            kernel_id,
            occupied_slots,
            ..
        } = &event
            && !occupied_slots.is_empty()
            && let Some((agent, slots)) = self.placed.get_mut(kernel_id)
        {
            *slots = slots_of(occupied_slots);
            if let Some(a) = self.agents.get_mut(agent.as_str()) {
                a.held.insert(*kernel_id, slots.clone());
            }
        }
        let statuses: Vec<(Uuid, KernelStatus)> = entry
            .state
            .kernels
            .iter()
            .map(|k| (k.id, k.status))
            .collect();
        for (kernel, status) in statuses {
            if !status.holds_agent_slots()
                && let Some((agent, _)) = self.placed.remove(&kernel)
                && let Some(a) = self.agents.get_mut(agent.as_str())
            {
                a.held.remove(&kernel);
            }
        }
        let pending = entry.state.status == SessionStatus::Pending;
        let actionable = entry.state.status == SessionStatus::Scheduled
            || entry.state.kernels.iter().any(|k| {
                matches!(
                    k.status,
                    KernelStatus::Terminating | KernelStatus::Restarting
                )
            });
        let dead = matches!(
            entry.state.status,
            SessionStatus::Terminated | SessionStatus::Cancelled
        );
        if dead {
            let ended = (entry.state.status, entry.state.result);
            self.sessions.remove(&id);
            self.ended.insert(id, ended);
        }
        if pending && !dead {
            self.pending.insert(id);
        } else {
            self.pending.remove(&id);
        }
        if actionable && !dead {
            self.actionable.insert(id);
        } else {
            self.actionable.remove(&id);
        }
    }
}
