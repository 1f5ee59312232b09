//! The session aggregate: one compute session and its kernels.
//!
//! Kernel statuses move by [`KernelStatus::may_become`]; the session's status
//! is [`derive_session_status`] of its kernels, and every decision that
//! changes it says so in its last event (`session_status`). Commands that
//! come from agents (a kernel started, a kernel is gone) are idempotent and
//! tolerate arriving late or twice: a transition that is no longer possible
//! appends nothing.

use std::collections::BTreeSet;

use manager_events::session::{
    ErrorInfo, KernelPlacement, KernelStatus, Owner, PredicateFailure, ServicePort, SessionEvent,
    SessionResult, SessionSpec, SessionStatus, SessionType, SlotMap, derive_session_status,
};
use manager_events::{Problem, ProblemKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::Aggregate;

pub use manager_events::session::stream_id;

/// Why a session was destroyed when the caller gives no reason.
pub const REASON_USER_REQUESTED: &str = "user-requested";
/// Why a session was destroyed with `forced`.
pub const REASON_FORCE_TERMINATED: &str = "force-terminated";
/// Why a batch session's other kernels are stopped when its main kernel ends.
pub const REASON_TASK_FINISHED: &str = "task-finished";

/// One kernel as its session knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// The kernel.
    pub id: Uuid,
    /// `main` or `sub`.
    pub cluster_role: String,
    /// Its status.
    pub status: KernelStatus,
    /// Where it was placed.
    pub agent_id: Option<String>,
    /// The agent's address when it was placed.
    pub agent_addr: Option<String>,
    /// What runs it, once started.
    pub container_id: Option<String>,
    /// Its service ports, once started.
    pub service_ports: Vec<ServicePort>,
    /// Its exit code, when it exited by itself.
    pub exit_code: Option<i32>,
}

/// A session's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its id; `None` until enqueued.
    pub id: Option<Uuid>,
    /// The creation token.
    pub creation_id: String,
    /// Who owns it.
    pub owner: Owner,
    /// What was asked for (the name may change by renaming).
    pub spec: SessionSpec,
    /// Its status.
    pub status: SessionStatus,
    /// Why it last changed.
    pub status_info: String,
    /// Its kernels, the main kernel first.
    pub kernels: Vec<Kernel>,
    /// Scheduling tries that failed.
    pub retries: u32,
    /// The reason of the last failed try (`no-available-instances`…).
    pub deferred_reason: Option<String>,
    /// The names of the predicates that failed last.
    pub failed_predicates: Vec<String>,
    /// A batch session's outcome.
    pub result: SessionResult,
}

/// What an agent says happened to a kernel on its way up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `kernel_preparing`.
    Preparing,
    /// `kernel_pulling`.
    Pulling,
    /// The image is on the agent.
    Prepared,
    /// `kernel_creating`.
    Creating,
}

/// What an agent says of a kernel it started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Started {
    /// What runs it.
    pub container_id: String,
    /// Where its ports are reachable.
    pub kernel_host: String,
    /// REPL ports.
    pub repl_in_port: u16,
    /// REPL ports.
    pub repl_out_port: u16,
    /// Ports of the services inside.
    pub service_ports: Vec<ServicePort>,
    /// Slots really allocated (empty: as requested).
    pub occupied_slots: SlotMap,
}

/// Commands on a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "commands are built, decided once and dropped"
)]
pub enum SessionCommand {
    /// Ask for a session (it is new).
    Enqueue {
        /// Its id.
        id: Uuid,
        /// The creation token.
        creation_id: String,
        /// Who owns it.
        owner: Owner,
        /// What is asked for (validated by the caller).
        spec: SessionSpec,
    },
    /// The scheduler could not place it this time. Appends only when the
    /// reason or the failed predicates changed.
    Defer {
        /// Why (`no-available-instances`, `predicate-checks-failed`).
        status_info: String,
        /// The predicates that failed.
        failed_predicates: Vec<PredicateFailure>,
        /// A message for the user.
        msg: Option<String>,
    },
    /// Place every kernel.
    Schedule {
        /// The scaling group.
        scaling_group: String,
        /// One placement per kernel.
        placements: Vec<KernelPlacement>,
    },
    /// A kernel moved along its start.
    Progress {
        /// The kernel.
        kernel_id: Uuid,
        /// How far.
        progress: Progress,
    },
    /// A kernel runs.
    Start {
        /// The kernel.
        kernel_id: Uuid,
        /// How it runs.
        started: Started,
    },
    /// A kernel is gone (the agent says so, or answered a destroy call).
    KernelGone {
        /// The kernel.
        kernel_id: Uuid,
        /// Why.
        reason: String,
        /// Its exit code, if it exited by itself.
        exit_code: Option<i32>,
    },
    /// Kernels failed (their agent refused or never answered).
    Fail {
        /// The kernels; empty means every kernel not yet gone.
        kernel_ids: Vec<Uuid>,
        /// Why (`failed-to-start`, `agent-lost`…).
        reason: String,
        /// What went wrong.
        error: ErrorInfo,
    },
    /// Destroy the session.
    Destroy {
        /// Also sessions that are still starting, and stop waiting for
        /// agents: kernels are recorded TERMINATED at once.
        forced: bool,
        /// Why.
        reason: String,
    },
    /// Restart its kernels.
    Restart,
    /// Give it a new name.
    Rename {
        /// The new name.
        name: String,
    },
}

/// Why a session command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session (404).
    #[error("No such session.")]
    NotFound,
    /// The session exists already (a retried enqueue without its key).
    #[error("the session already exists")]
    AlreadyExists,
    /// Not possible in the session's status (403 generic-forbidden, as
    /// the reference answers a destroy it refuses).
    #[error("{0}")]
    Forbidden(String),
    /// A bad request (400).
    #[error("{0}")]
    Invalid(String),
}

impl From<SessionError> for Problem {
    fn from(err: SessionError) -> Problem {
        let kind = match &err {
            SessionError::NotFound => ProblemKind::ObjectNotFound("session"),
            SessionError::AlreadyExists => ProblemKind::Conflict,
            SessionError::Forbidden(_) => ProblemKind::GenericForbidden,
            SessionError::Invalid(_) => ProblemKind::InvalidApiParams,
        };
        Problem::new(kind).msg(err.to_string())
    }
}

impl Session {
    /// Whether it was enqueued.
    pub fn exists(&self) -> bool {
        self.id.is_some()
    }

    /// The main kernel.
    pub fn main_kernel(&self) -> Option<&Kernel> {
        self.kernels.first()
    }

    fn kernel(&self, id: Uuid) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.id == id)
    }

    /// Stamps the session's status once `events` are applied, when it
    /// changes, on the last event that moves a kernel.
    fn seal(&self, mut events: Vec<SessionEvent>) -> Vec<SessionEvent> {
        let mut next = self.clone();
        for e in &events {
            next.apply(e);
        }
        let derived = derive_session_status(next.kernels.iter().map(|k| k.status));
        if derived != self.status {
            // On the last event that moves a kernel (what follows it, such
            // as a recorded result, changes no status).
            for e in events.iter_mut().rev() {
                match e {
                    SessionEvent::KernelsTransitioned { session_status, .. }
                    | SessionEvent::KernelStarted { session_status, .. } => {
                        *session_status = Some(derived);
                        break;
                    }
                    _ => {}
                }
            }
        }
        events
    }

    /// Moves the kernels `ids` that may go to `status` there (one event).
    fn transition(
        &self,
        ids: impl IntoIterator<Item = Uuid>,
        status: KernelStatus,
        reason: &str,
        exit_code: Option<i32>,
        error: Option<ErrorInfo>,
    ) -> Option<SessionEvent> {
        let kernels: Vec<Uuid> = ids
            .into_iter()
            .filter(|id| {
                self.kernel(*id)
                    .is_some_and(|k| k.status.may_become(status))
            })
            .collect();
        (!kernels.is_empty()).then(|| SessionEvent::KernelsTransitioned {
            kernels,
            status,
            reason: reason.to_owned(),
            exit_code,
            error,
            session_status: None,
        })
    }

    fn all_ids(&self) -> Vec<Uuid> {
        self.kernels.iter().map(|k| k.id).collect()
    }

    fn destroy(&self, forced: bool, reason: &str) -> Result<Vec<SessionEvent>, SessionError> {
        use SessionStatus as S;
        let reason = if reason.is_empty() {
            if forced {
                REASON_FORCE_TERMINATED
            } else {
                REASON_USER_REQUESTED
            }
        } else {
            reason
        };
        let mut events = Vec::new();
        match self.status {
            S::Pending => {
                return Ok(vec![SessionEvent::SessionCancelled {
                    reason: reason.to_owned(),
                }]);
            }
            S::Terminated | S::Cancelled => return Err(SessionError::NotFound),
            S::Scheduled | S::Preparing | S::Pulling | S::Prepared | S::Creating if !forced => {
                return Err(SessionError::Forbidden(format!(
                    "the session is starting ({}); destroy it with forced=true to stop waiting \
                     for its agents",
                    self.status.as_str()
                )));
            }
            _ => {}
        }
        // Failed kernels hold nothing: they are simply recorded gone.
        let failed = self
            .kernels
            .iter()
            .filter(|k| k.status == KernelStatus::Error)
            .map(|k| k.id);
        events.extend(self.transition(failed, KernelStatus::Terminated, reason, None, None));
        let live = self
            .kernels
            .iter()
            .filter(|k| k.status != KernelStatus::Error)
            .map(|k| k.id);
        let target = if forced {
            KernelStatus::Terminated
        } else {
            KernelStatus::Terminating
        };
        events.extend(self.transition(live, target, reason, None, None));
        Ok(events)
    }
}

impl Aggregate for Session {
    const STREAM_TYPE: &'static str = manager_events::session::STREAM_TYPE;
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;

    fn apply(&mut self, event: &SessionEvent) {
        match event {
            SessionEvent::SessionEnqueued {
                id,
                creation_id,
                owner,
                spec,
            } => {
                self.id = Some(*id);
                self.creation_id = creation_id.clone();
                self.owner = owner.clone();
                self.spec = spec.clone();
                self.status = SessionStatus::Pending;
                self.kernels = spec
                    .kernels
                    .iter()
                    .map(|k| Kernel {
                        id: k.id,
                        cluster_role: k.cluster_role.clone(),
                        status: KernelStatus::Pending,
                        agent_id: None,
                        agent_addr: None,
                        container_id: None,
                        service_ports: Vec::new(),
                        exit_code: None,
                    })
                    .collect();
            }
            SessionEvent::SchedulingDeferred {
                status_info,
                retries,
                failed_predicates,
                ..
            } => {
                self.retries = *retries;
                self.status_info = status_info.clone();
                self.deferred_reason = Some(status_info.clone());
                self.failed_predicates = failed_predicates.iter().map(|p| p.name.clone()).collect();
            }
            SessionEvent::SessionScheduled {
                scaling_group,
                kernels,
            } => {
                self.spec.scaling_group = scaling_group.clone();
                for p in kernels {
                    if let Some(k) = self.kernels.iter_mut().find(|k| k.id == p.kernel_id) {
                        k.status = KernelStatus::Scheduled;
                        k.agent_id = Some(p.agent_id.clone());
                        k.agent_addr = Some(p.agent_addr.clone());
                    }
                }
                self.status = SessionStatus::Scheduled;
                self.status_info = "scheduled".into();
            }
            SessionEvent::KernelsTransitioned {
                kernels,
                status,
                reason,
                exit_code,
                session_status,
                ..
            } => {
                for k in self.kernels.iter_mut().filter(|k| kernels.contains(&k.id)) {
                    k.status = *status;
                    if exit_code.is_some() {
                        k.exit_code = *exit_code;
                    }
                }
                if let Some(s) = session_status {
                    self.status = *s;
                    self.status_info = reason.clone();
                }
            }
            SessionEvent::KernelStarted {
                kernel_id,
                container_id,
                service_ports,
                session_status,
                ..
            } => {
                if let Some(k) = self.kernels.iter_mut().find(|k| k.id == *kernel_id) {
                    k.status = KernelStatus::Running;
                    k.container_id = Some(container_id.clone());
                    k.service_ports = service_ports.clone();
                }
                if let Some(s) = session_status {
                    self.status = *s;
                    self.status_info = String::new();
                }
            }
            SessionEvent::SessionCancelled { reason } => {
                for k in &mut self.kernels {
                    k.status = KernelStatus::Cancelled;
                }
                self.status = SessionStatus::Cancelled;
                self.status_info = reason.clone();
            }
            SessionEvent::SessionResultRecorded { result, .. } => self.result = *result,
            SessionEvent::SessionRenamed { name } => self.spec.name = name.clone(),
        }
    }

    fn decide(&self, command: &SessionCommand) -> Result<Vec<SessionEvent>, SessionError> {
        use SessionCommand as C;
        if let C::Enqueue {
            id,
            creation_id,
            owner,
            spec,
        } = command
        {
            if self.exists() {
                return Err(SessionError::AlreadyExists);
            }
            if spec.kernels.is_empty() {
                return Err(SessionError::Invalid("a session needs a kernel".into()));
            }
            let ids: BTreeSet<Uuid> = spec.kernels.iter().map(|k| k.id).collect();
            if ids.len() != spec.kernels.len() {
                return Err(SessionError::Invalid("kernel ids repeat".into()));
            }
            return Ok(vec![SessionEvent::SessionEnqueued {
                id: *id,
                creation_id: creation_id.clone(),
                owner: owner.clone(),
                spec: spec.clone(),
            }]);
        }
        if !self.exists() {
            return Err(SessionError::NotFound);
        }
        let events = match command {
            C::Enqueue { .. } => unreachable_enqueue(),
            C::Defer {
                status_info,
                failed_predicates,
                msg,
            } => {
                let names: Vec<String> = failed_predicates.iter().map(|p| p.name.clone()).collect();
                if self.status != SessionStatus::Pending
                    || (self.deferred_reason.as_deref() == Some(status_info.as_str())
                        && self.failed_predicates == names)
                {
                    vec![]
                } else {
                    vec![SessionEvent::SchedulingDeferred {
                        status_info: status_info.clone(),
                        retries: self.retries.saturating_add(1),
                        failed_predicates: failed_predicates.clone(),
                        msg: msg.clone(),
                    }]
                }
            }
            C::Schedule {
                scaling_group,
                placements,
            } => {
                if self.status != SessionStatus::Pending {
                    return Err(SessionError::Forbidden(format!(
                        "the session is {}, not PENDING",
                        self.status.as_str()
                    )));
                }
                let placed: BTreeSet<Uuid> = placements.iter().map(|p| p.kernel_id).collect();
                let ours: BTreeSet<Uuid> = self.kernels.iter().map(|k| k.id).collect();
                if placed != ours || placements.len() != self.kernels.len() {
                    return Err(SessionError::Invalid(
                        "a placement must place every kernel once".into(),
                    ));
                }
                vec![SessionEvent::SessionScheduled {
                    scaling_group: scaling_group.clone(),
                    kernels: placements.clone(),
                }]
            }
            C::Progress {
                kernel_id,
                progress,
            } => {
                let status = match progress {
                    Progress::Preparing => KernelStatus::Preparing,
                    Progress::Pulling => KernelStatus::Pulling,
                    Progress::Prepared => KernelStatus::Prepared,
                    Progress::Creating => KernelStatus::Creating,
                };
                self.transition([*kernel_id], status, "", None, None)
                    .into_iter()
                    .collect()
            }
            C::Start { kernel_id, started } => match self.kernel(*kernel_id) {
                Some(k) if k.status.may_become(KernelStatus::Running) => {
                    vec![SessionEvent::KernelStarted {
                        kernel_id: *kernel_id,
                        container_id: started.container_id.clone(),
                        kernel_host: started.kernel_host.clone(),
                        repl_in_port: started.repl_in_port,
                        repl_out_port: started.repl_out_port,
                        service_ports: started.service_ports.clone(),
                        occupied_slots: started.occupied_slots.clone(),
                        session_status: None,
                    }]
                }
                _ => vec![],
            },
            C::KernelGone {
                kernel_id,
                reason,
                exit_code,
            } => {
                let Some(kernel) = self.kernel(*kernel_id) else {
                    return Ok(vec![]);
                };
                let mut events: Vec<SessionEvent> = self
                    .transition(
                        [*kernel_id],
                        KernelStatus::Terminated,
                        reason,
                        *exit_code,
                        None,
                    )
                    .into_iter()
                    .collect();
                // Its command ended (it was not being stopped): also when
                // the agent's "terminated" notice overtook "started".
                let main_ended_by_itself = kernel.cluster_role == "main"
                    && !events.is_empty()
                    && !matches!(
                        kernel.status,
                        KernelStatus::Terminating | KernelStatus::Restarting
                    );
                if self.spec.session_type == SessionType::Batch && main_ended_by_itself {
                    let result = if *exit_code == Some(0) {
                        SessionResult::Success
                    } else {
                        SessionResult::Failure
                    };
                    // The result first: whoever reads the log sees the
                    // outcome before the session ends.
                    events.insert(
                        0,
                        SessionEvent::SessionResultRecorded {
                            result,
                            exit_code: *exit_code,
                        },
                    );
                    let others = self
                        .kernels
                        .iter()
                        .filter(|k| k.id != *kernel_id)
                        .map(|k| k.id);
                    events.extend(self.transition(
                        others,
                        KernelStatus::Terminating,
                        REASON_TASK_FINISHED,
                        None,
                        None,
                    ));
                }
                events
            }
            C::Fail {
                kernel_ids,
                reason,
                error,
            } => {
                let ids = if kernel_ids.is_empty() {
                    self.all_ids()
                } else {
                    kernel_ids.clone()
                };
                self.transition(ids, KernelStatus::Error, reason, None, Some(error.clone()))
                    .into_iter()
                    .collect()
            }
            C::Destroy { forced, reason } => self.destroy(*forced, reason)?,
            C::Restart => {
                if !matches!(
                    self.status,
                    SessionStatus::Running | SessionStatus::RunningDegraded
                ) {
                    return Err(SessionError::Forbidden(format!(
                        "only a running session can restart (it is {})",
                        self.status.as_str()
                    )));
                }
                let running = self
                    .kernels
                    .iter()
                    .filter(|k| k.status == KernelStatus::Running)
                    .map(|k| k.id);
                self.transition(running, KernelStatus::Restarting, "restarting", None, None)
                    .into_iter()
                    .collect()
            }
            C::Rename { name } => {
                if self.status != SessionStatus::Running {
                    return Err(SessionError::Invalid(
                        "Can't change name of not running session".into(),
                    ));
                }
                if *name == self.spec.name {
                    vec![]
                } else {
                    vec![SessionEvent::SessionRenamed { name: name.clone() }]
                }
            }
        };
        Ok(self.seal(events))
    }
}

/// `Enqueue` is answered before the match; this arm cannot be reached.
fn unreachable_enqueue() -> Vec<SessionEvent> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;
    use manager_events::session::{KernelSpec, SessionImage};

    fn k(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn enqueued(kernels: u32, session_type: SessionType) -> SessionEvent {
        SessionEvent::SessionEnqueued {
            id: k(100),
            creation_id: "c".into(),
            owner: Owner::default(),
            spec: SessionSpec {
                name: "s1".into(),
                session_type,
                image: SessionImage::default(),
                kernels: (0..kernels)
                    .map(|i| KernelSpec {
                        id: k(u128::from(i) + 1),
                        cluster_role: if i == 0 { "main" } else { "sub" }.into(),
                        cluster_idx: if i == 0 { 1 } else { i },
                        local_rank: i,
                        cluster_hostname: format!("k{i}"),
                    })
                    .collect(),
                ..SessionSpec::default()
            },
        }
    }

    fn scheduled(kernels: u32) -> SessionEvent {
        SessionEvent::SessionScheduled {
            scaling_group: "default".into(),
            kernels: (0..kernels)
                .map(|i| KernelPlacement {
                    kernel_id: k(u128::from(i) + 1),
                    agent_id: "i-a".into(),
                    agent_addr: "tcp://a:6011".into(),
                })
                .collect(),
        }
    }

    fn started(kernel: u128, status: Option<SessionStatus>) -> SessionEvent {
        SessionEvent::KernelStarted {
            kernel_id: k(kernel),
            container_id: "c".into(),
            kernel_host: "h".into(),
            repl_in_port: 0,
            repl_out_port: 0,
            service_ports: vec![],
            occupied_slots: SlotMap::new(),
            session_status: status,
        }
    }

    fn start(kernel: u128) -> SessionCommand {
        SessionCommand::Start {
            kernel_id: k(kernel),
            started: Started {
                container_id: "c".into(),
                kernel_host: "h".into(),
                ..Started::default()
            },
        }
    }

    fn moved(
        kernels: &[u128],
        status: KernelStatus,
        reason: &str,
        session: Option<SessionStatus>,
    ) -> SessionEvent {
        SessionEvent::KernelsTransitioned {
            kernels: kernels.iter().map(|n| k(*n)).collect(),
            status,
            reason: reason.into(),
            exit_code: None,
            error: None,
            session_status: session,
        }
    }

    #[test]
    fn a_pending_session_is_cancelled_when_destroyed() {
        Scenario::<Session>::given([enqueued(2, SessionType::Interactive)])
            .when(SessionCommand::Destroy {
                forced: false,
                reason: String::new(),
            })
            .then([SessionEvent::SessionCancelled {
                reason: "user-requested".into(),
            }]);
    }

    #[test]
    fn a_session_runs_when_its_last_kernel_starts() {
        // One of two kernels runs: the session stays SCHEDULED (its least
        // advanced kernel), so the event carries no status change.
        Scenario::<Session>::given([enqueued(2, SessionType::Interactive), scheduled(2)])
            .when(start(1))
            .then([started(1, None)]);
        Scenario::<Session>::given([
            enqueued(2, SessionType::Interactive),
            scheduled(2),
            started(1, None),
        ])
        .when(start(2))
        .then([started(2, Some(SessionStatus::Running))]);
    }

    #[test]
    fn agent_notices_arriving_late_or_twice_change_nothing() {
        let running = [
            enqueued(1, SessionType::Interactive),
            scheduled(1),
            started(1, Some(SessionStatus::Running)),
        ];
        Scenario::<Session>::given(running.clone())
            .when(SessionCommand::Progress {
                kernel_id: k(1),
                progress: Progress::Pulling,
            })
            .then([]);
        Scenario::<Session>::given(running.clone())
            .when(start(1))
            .then([]);
        Scenario::<Session>::given(running)
            .when(SessionCommand::Progress {
                kernel_id: k(9),
                progress: Progress::Creating,
            })
            .then([]);
    }

    #[test]
    fn destroying_a_running_session_terminates_its_kernels_then_it() {
        let running = [
            enqueued(2, SessionType::Interactive),
            scheduled(2),
            started(1, None),
            started(2, Some(SessionStatus::Running)),
        ];
        Scenario::<Session>::given(running.clone())
            .when(SessionCommand::Destroy {
                forced: false,
                reason: String::new(),
            })
            .then([moved(
                &[1, 2],
                KernelStatus::Terminating,
                "user-requested",
                Some(SessionStatus::Terminating),
            )]);
        let mut terminating = running.to_vec();
        terminating.push(moved(
            &[1, 2],
            KernelStatus::Terminating,
            "user-requested",
            Some(SessionStatus::Terminating),
        ));
        // The main kernel gone alone does not end the session.
        Scenario::<Session>::given(terminating.clone())
            .when(SessionCommand::KernelGone {
                kernel_id: k(1),
                reason: "user-requested".into(),
                exit_code: None,
            })
            .then([moved(
                &[1],
                KernelStatus::Terminated,
                "user-requested",
                None,
            )]);
        terminating.push(moved(
            &[1],
            KernelStatus::Terminated,
            "user-requested",
            None,
        ));
        Scenario::<Session>::given(terminating)
            .when(SessionCommand::KernelGone {
                kernel_id: k(2),
                reason: "user-requested".into(),
                exit_code: None,
            })
            .then([moved(
                &[2],
                KernelStatus::Terminated,
                "user-requested",
                Some(SessionStatus::Terminated),
            )]);
    }

    #[test]
    fn a_starting_session_is_destroyed_only_when_forced() {
        let starting = [enqueued(1, SessionType::Interactive), scheduled(1)];
        assert!(matches!(
            Session::default()
                .with(&starting)
                .decide(&SessionCommand::Destroy {
                    forced: false,
                    reason: String::new()
                }),
            Err(SessionError::Forbidden(_))
        ));
        Scenario::<Session>::given(starting)
            .when(SessionCommand::Destroy {
                forced: true,
                reason: String::new(),
            })
            .then([moved(
                &[1],
                KernelStatus::Terminated,
                "force-terminated",
                Some(SessionStatus::Terminated),
            )]);
    }

    #[test]
    fn a_batch_session_records_its_result_when_its_command_ends() {
        let running = [
            enqueued(2, SessionType::Batch),
            scheduled(2),
            started(1, None),
            started(2, Some(SessionStatus::Running)),
        ];
        Scenario::<Session>::given(running)
            .when(SessionCommand::KernelGone {
                kernel_id: k(1),
                reason: "self-terminated".into(),
                exit_code: Some(3),
            })
            .then([
                SessionEvent::SessionResultRecorded {
                    result: SessionResult::Failure,
                    exit_code: Some(3),
                },
                SessionEvent::KernelsTransitioned {
                    kernels: vec![k(1)],
                    status: KernelStatus::Terminated,
                    reason: "self-terminated".into(),
                    exit_code: Some(3),
                    error: None,
                    session_status: None,
                },
                moved(
                    &[2],
                    KernelStatus::Terminating,
                    "task-finished",
                    Some(SessionStatus::Terminating),
                ),
            ]);
    }

    #[test]
    fn a_failed_start_is_an_error_and_destroying_it_ends_it() {
        let error = ErrorInfo {
            src: "agent".into(),
            name: "AgentError".into(),
            repr: "boom".into(),
            agent_id: Some("i-a".into()),
        };
        let failed = SessionEvent::KernelsTransitioned {
            kernels: vec![k(1)],
            status: KernelStatus::Error,
            reason: "failed-to-start".into(),
            exit_code: None,
            error: Some(error.clone()),
            session_status: Some(SessionStatus::Error),
        };
        Scenario::<Session>::given([enqueued(1, SessionType::Interactive), scheduled(1)])
            .when(SessionCommand::Fail {
                kernel_ids: vec![],
                reason: "failed-to-start".into(),
                error,
            })
            .then([failed.clone()]);
        Scenario::<Session>::given([enqueued(1, SessionType::Interactive), scheduled(1), failed])
            .when(SessionCommand::Destroy {
                forced: false,
                reason: String::new(),
            })
            .then([moved(
                &[1],
                KernelStatus::Terminated,
                "user-requested",
                Some(SessionStatus::Terminated),
            )]);
    }

    #[test]
    fn scheduling_needs_a_pending_session_and_every_kernel_placed() {
        Scenario::<Session>::given([enqueued(2, SessionType::Interactive)])
            .when(SessionCommand::Schedule {
                scaling_group: "default".into(),
                placements: match scheduled(1) {
                    SessionEvent::SessionScheduled { kernels, .. } => kernels,
                    _ => vec![],
                },
            })
            .then_error(SessionError::Invalid(
                "a placement must place every kernel once".into(),
            ));
        Scenario::<Session>::given([])
            .when(SessionCommand::Restart)
            .then_error(SessionError::NotFound);
    }

    #[test]
    fn a_deferral_is_recorded_only_when_its_reason_changes() {
        let defer = SessionCommand::Defer {
            status_info: "no-available-instances".into(),
            failed_predicates: vec![],
            msg: None,
        };
        let first = SessionEvent::SchedulingDeferred {
            status_info: "no-available-instances".into(),
            retries: 1,
            failed_predicates: vec![],
            msg: None,
        };
        Scenario::<Session>::given([enqueued(1, SessionType::Interactive)])
            .when(defer.clone())
            .then([first.clone()]);
        Scenario::<Session>::given([enqueued(1, SessionType::Interactive), first])
            .when(defer)
            .then([]);
    }

    impl Session {
        fn with(mut self, events: &[SessionEvent]) -> Session {
            for e in events {
                self.apply(e);
            }
            self
        }
    }
}
