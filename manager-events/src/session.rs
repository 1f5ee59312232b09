//! Compute sessions and their kernels. The events of a session's stream
//! (`session:<uuid>`); a session owns its kernels' lifecycle.
//!
//! # Statuses
//! Kernels move through [`KernelStatus`]; a session's status is **derived**
//! from its kernels' statuses by one pure, order-independent rule,
//! [`derive_session_status`]. The log records the outcome: every event that
//! changes a session's status says so (`session_status`), so readers (the
//! read models, the event streams) never have to re-derive it.
//!
//! # What holds capacity
//! - A kernel holds its agent's capacity from SCHEDULED until it is
//!   TERMINATED, CANCELLED or in ERROR ([`KernelStatus::holds_agent_slots`]).
//!   The slots are reserved by [`crate::agent::AgentEvent::KernelsPlaced`]
//!   on the agent's stream, appended atomically with the session's
//!   [`SessionEvent::SessionScheduled`]; they are freed by the kernel's own
//!   transition on the session's stream.
//! - A session counts against its owner's quotas and concurrency limit
//!   while it is SCHEDULED to RUNNING ([`SessionStatus::holds_quota`]): not
//!   while PENDING, and no longer once it is going away (TERMINATING) or
//!   gone (TERMINATED, CANCELLED, ERROR).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream type of sessions.
pub const STREAM_TYPE: &str = "session";

/// The reservation scope of session names: the value is
/// `<access key>/<name>`, claimed at enqueue and released when the session
/// is dead, so a name is unique among its owner's live sessions.
pub const NAME_SCOPE: &str = "session-name";

/// The stream id of a session.
pub fn stream_id(id: Uuid) -> String {
    format!("session:{id}")
}

/// The reserved value of a session name.
pub fn name_key(access_key: &str, name: &str) -> String {
    format!("{access_key}/{name}")
}

/// Resource slots: slot name → amount as a decimal string.
pub type SlotMap = BTreeMap<String, String>;

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionType {
    /// Used interactively (code execution, apps).
    #[default]
    Interactive,
    /// Runs its startup command and ends.
    Batch,
    /// Serves a model.
    Inference,
}

impl SessionType {
    /// As the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionType::Interactive => "interactive",
            SessionType::Batch => "batch",
            SessionType::Inference => "inference",
        }
    }
}

/// How a session's kernels are spread over agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterMode {
    /// All kernels on one agent.
    #[default]
    SingleNode,
    /// Kernels may span agents.
    MultiNode,
}

impl ClusterMode {
    /// As the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterMode::SingleNode => "single-node",
            ClusterMode::MultiNode => "multi-node",
        }
    }
}

/// A kernel's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KernelStatus {
    /// Waiting for the scheduler.
    Pending,
    /// Placed on an agent; the agent has not been asked yet.
    Scheduled,
    /// The agent is preparing it.
    Preparing,
    /// The agent is pulling its image.
    Pulling,
    /// Its image is on the agent.
    Prepared,
    /// The agent is creating its container.
    Creating,
    /// It runs.
    Running,
    /// It is being restarted.
    Restarting,
    /// It is being destroyed.
    Terminating,
    /// It is gone.
    Terminated,
    /// It failed.
    Error,
    /// It was never started.
    Cancelled,
}

impl KernelStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [KernelStatus; 12] = [
        KernelStatus::Pending,
        KernelStatus::Scheduled,
        KernelStatus::Preparing,
        KernelStatus::Pulling,
        KernelStatus::Prepared,
        KernelStatus::Creating,
        KernelStatus::Running,
        KernelStatus::Restarting,
        KernelStatus::Terminating,
        KernelStatus::Terminated,
        KernelStatus::Error,
        KernelStatus::Cancelled,
    ];

    /// As the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelStatus::Pending => "PENDING",
            KernelStatus::Scheduled => "SCHEDULED",
            KernelStatus::Preparing => "PREPARING",
            KernelStatus::Pulling => "PULLING",
            KernelStatus::Prepared => "PREPARED",
            KernelStatus::Creating => "CREATING",
            KernelStatus::Running => "RUNNING",
            KernelStatus::Restarting => "RESTARTING",
            KernelStatus::Terminating => "TERMINATING",
            KernelStatus::Terminated => "TERMINATED",
            KernelStatus::Error => "ERROR",
            KernelStatus::Cancelled => "CANCELLED",
        }
    }

    /// Reads an API name.
    pub fn parse(name: &str) -> Option<KernelStatus> {
        KernelStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the kernel is over (no way back).
    pub fn is_dead(self) -> bool {
        matches!(self, KernelStatus::Terminated | KernelStatus::Cancelled)
    }

    /// Whether the kernel holds its agent's capacity: from SCHEDULED until
    /// it is gone or failed.
    pub fn holds_agent_slots(self) -> bool {
        !matches!(
            self,
            KernelStatus::Pending
                | KernelStatus::Terminated
                | KernelStatus::Cancelled
                | KernelStatus::Error
        )
    }

    /// Whether a kernel may go from `self` to `next`. Dead kernels go
    /// nowhere and a failed one only to TERMINATED (when its session is
    /// destroyed); nothing goes back to PENDING; progress moves forward
    /// (PREPARING → PULLING → PREPARED → CREATING → RUNNING, steps may be
    /// skipped); a RUNNING kernel restarts and runs again; TERMINATING leads
    /// only to TERMINATED or ERROR.
    pub fn may_become(self, next: KernelStatus) -> bool {
        use KernelStatus as K;
        if self.is_dead() || next == K::Pending || next == self {
            return false;
        }
        match self {
            K::Pending => matches!(next, K::Scheduled | K::Cancelled | K::Error),
            K::Scheduled | K::Preparing | K::Pulling | K::Prepared | K::Creating => match next {
                K::Scheduled => false,
                K::Preparing | K::Pulling | K::Prepared | K::Creating | K::Running => {
                    progress(next) > progress(self)
                }
                K::Restarting => false,
                _ => true,
            },
            K::Running => matches!(
                next,
                K::Restarting | K::Terminating | K::Terminated | K::Error
            ),
            K::Restarting => matches!(next, K::Running | K::Terminating | K::Terminated | K::Error),
            K::Terminating => matches!(next, K::Terminated | K::Error),
            K::Error => next == K::Terminated,
            K::Terminated | K::Cancelled => false,
        }
    }
}

/// How far along the start a kernel is (SCHEDULED 1 … RUNNING 6).
fn progress(s: KernelStatus) -> u8 {
    match s {
        KernelStatus::Scheduled => 1,
        KernelStatus::Preparing => 2,
        KernelStatus::Pulling => 3,
        KernelStatus::Prepared => 4,
        KernelStatus::Creating => 5,
        KernelStatus::Running => 6,
        _ => 0,
    }
}

/// A session's status.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionStatus {
    /// Waiting for the scheduler.
    #[default]
    Pending,
    /// Placed; its agents have not been asked yet.
    Scheduled,
    /// Its kernels are being prepared.
    Preparing,
    /// An image is being pulled.
    Pulling,
    /// Every image is on its agent.
    Prepared,
    /// Containers are being created.
    Creating,
    /// Every kernel runs.
    Running,
    /// Being restarted.
    Restarting,
    /// Some kernels run, others are gone or failing.
    RunningDegraded,
    /// Being destroyed.
    Terminating,
    /// Every kernel is gone.
    Terminated,
    /// It failed.
    Error,
    /// It never started.
    Cancelled,
}

impl SessionStatus {
    /// Every status.
    pub const ALL: [SessionStatus; 13] = [
        SessionStatus::Pending,
        SessionStatus::Scheduled,
        SessionStatus::Preparing,
        SessionStatus::Pulling,
        SessionStatus::Prepared,
        SessionStatus::Creating,
        SessionStatus::Running,
        SessionStatus::Restarting,
        SessionStatus::RunningDegraded,
        SessionStatus::Terminating,
        SessionStatus::Terminated,
        SessionStatus::Error,
        SessionStatus::Cancelled,
    ];

    /// As the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Pending => "PENDING",
            SessionStatus::Scheduled => "SCHEDULED",
            SessionStatus::Preparing => "PREPARING",
            SessionStatus::Pulling => "PULLING",
            SessionStatus::Prepared => "PREPARED",
            SessionStatus::Creating => "CREATING",
            SessionStatus::Running => "RUNNING",
            SessionStatus::Restarting => "RESTARTING",
            SessionStatus::RunningDegraded => "RUNNING_DEGRADED",
            SessionStatus::Terminating => "TERMINATING",
            SessionStatus::Terminated => "TERMINATED",
            SessionStatus::Error => "ERROR",
            SessionStatus::Cancelled => "CANCELLED",
        }
    }

    /// Reads an API name.
    pub fn parse(name: &str) -> Option<SessionStatus> {
        SessionStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Dead sessions (TERMINATED, CANCELLED) are kept for history only;
    /// their name is free again.
    pub fn is_dead(self) -> bool {
        matches!(self, SessionStatus::Terminated | SessionStatus::Cancelled)
    }

    /// Whether the session counts against its owner's quotas and
    /// concurrency limit (see the module documentation).
    pub fn holds_quota(self) -> bool {
        !matches!(
            self,
            SessionStatus::Pending
                | SessionStatus::Terminating
                | SessionStatus::Terminated
                | SessionStatus::Cancelled
                | SessionStatus::Error
        )
    }

    /// The event name the reference streams for entering this status
    /// (`session_started` for RUNNING…), if it has one.
    pub fn event_name(self) -> Option<&'static str> {
        Some(match self {
            SessionStatus::Pending => "session_enqueued",
            SessionStatus::Scheduled => "session_scheduled",
            SessionStatus::Preparing => "session_preparing",
            SessionStatus::Running => "session_started",
            SessionStatus::Terminating => "session_terminating",
            SessionStatus::Terminated => "session_terminated",
            SessionStatus::Cancelled => "session_cancelled",
            SessionStatus::Error => "session_failure",
            _ => return None,
        })
    }
}

/// The session status its kernels' statuses add up to. Pure and
/// independent of the kernels' order; the first rule that matches wins:
///
/// 1. every kernel CANCELLED → CANCELLED;
/// 2. every kernel TERMINATED or CANCELLED → TERMINATED (a session is
///    terminated only when all its kernels are);
/// 3. every kernel TERMINATED, CANCELLED or ERROR → ERROR;
/// 4. some kernel TERMINATING, all others gone → TERMINATING;
/// 5. some kernel PENDING → PENDING;
/// 6. some kernel gone or going (TERMINATING, TERMINATED, CANCELLED,
///    ERROR) while others run or restart → RUNNING_DEGRADED, while others
///    are still starting → ERROR;
/// 7. some kernel RESTARTING → RESTARTING;
/// 8. otherwise the least advanced of SCHEDULED, PREPARING, PULLING,
///    PREPARED, CREATING, RUNNING.
///
/// A session without kernels is PENDING.
pub fn derive_session_status(kernels: impl IntoIterator<Item = KernelStatus>) -> SessionStatus {
    use KernelStatus as K;
    let mut seen = [false; 12];
    let mut any = false;
    for k in kernels {
        seen[k as usize] = true;
        any = true;
    }
    if !any {
        return SessionStatus::Pending;
    }
    let has = |s: K| seen[s as usize];
    let only = |set: &[K]| K::ALL.iter().all(|s| !has(*s) || set.contains(s));
    if only(&[K::Cancelled]) {
        return SessionStatus::Cancelled;
    }
    if only(&[K::Terminated, K::Cancelled]) {
        return SessionStatus::Terminated;
    }
    if only(&[K::Terminated, K::Cancelled, K::Error]) {
        return SessionStatus::Error;
    }
    if has(K::Terminating) && only(&[K::Terminating, K::Terminated, K::Cancelled, K::Error]) {
        return SessionStatus::Terminating;
    }
    if has(K::Pending) {
        return SessionStatus::Pending;
    }
    if has(K::Terminating) || has(K::Terminated) || has(K::Cancelled) || has(K::Error) {
        return if has(K::Running) || has(K::Restarting) {
            SessionStatus::RunningDegraded
        } else {
            SessionStatus::Error
        };
    }
    if has(K::Restarting) {
        return SessionStatus::Restarting;
    }
    let least = [
        (K::Scheduled, SessionStatus::Scheduled),
        (K::Preparing, SessionStatus::Preparing),
        (K::Pulling, SessionStatus::Pulling),
        (K::Prepared, SessionStatus::Prepared),
        (K::Creating, SessionStatus::Creating),
    ];
    least
        .into_iter()
        .find(|(k, _)| has(*k))
        .map_or(SessionStatus::Running, |(_, s)| s)
}

/// Who owns a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Owner {
    /// The owner's keypair.
    pub access_key: String,
    /// The owner.
    pub user_id: Uuid,
    /// The project the session is for.
    pub project_id: Uuid,
    /// The owner's domain.
    pub domain_name: String,
}

/// The image of a session's kernels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionImage {
    /// Canonical name, `registry/repo:tag`.
    pub canonical: String,
    /// CPU architecture.
    pub architecture: String,
    /// The registry's name.
    #[serde(default)]
    pub registry: String,
    /// The tag.
    #[serde(default)]
    pub tag: String,
}

/// One kernel of a session, as planned at enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSpec {
    /// The kernel's id.
    pub id: Uuid,
    /// `main` or `sub`.
    pub cluster_role: String,
    /// Index within its role, from 1.
    pub cluster_idx: u32,
    /// Rank among all kernels of the session, from 0.
    pub local_rank: u32,
    /// Hostname inside the cluster (`main1`, `sub1`…).
    pub cluster_hostname: String,
}

/// What was asked for at enqueue, after validation and defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionSpec {
    /// Unique among the owner's live sessions.
    pub name: String,
    /// What the session is for.
    pub session_type: SessionType,
    /// The image its kernels run.
    pub image: SessionImage,
    /// How its kernels are spread.
    pub cluster_mode: ClusterMode,
    /// Slots each kernel asks for (every known slot, exact decimals; `mem`
    /// in bytes).
    pub slots_per_kernel: SlotMap,
    /// Resource options (`shmem`…).
    #[serde(default)]
    pub resource_opts: BTreeMap<String, String>,
    /// The scaling group it runs in (resolved at enqueue).
    pub scaling_group: String,
    /// Virtual folders to mount, by name, and where (recorded as given).
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Mount targets by folder name.
    #[serde(default)]
    pub mount_map: BTreeMap<String, String>,
    /// Environment variables.
    #[serde(default)]
    pub environ: BTreeMap<String, String>,
    /// The batch command (or the first command of an interactive session).
    #[serde(default)]
    pub startup_command: Option<String>,
    /// A script run once when each kernel starts.
    #[serde(default)]
    pub bootstrap_script: Option<String>,
    /// Sessions that must have succeeded before this one starts.
    #[serde(default)]
    pub dependencies: Vec<Uuid>,
    /// Not before this time (batch sessions).
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// Free text.
    #[serde(default)]
    pub tag: Option<String>,
    /// Where lifecycle webhooks go.
    #[serde(default)]
    pub callback_url: Option<String>,
    /// Container ports to open up front.
    #[serde(default)]
    pub preopen_ports: Vec<u16>,
    /// Agents chosen by a superadmin (one, or one per kernel).
    #[serde(default)]
    pub designated_agents: Vec<String>,
    /// Its kernels; the first is the main kernel.
    pub kernels: Vec<KernelSpec>,
}

/// A kernel placed on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPlacement {
    /// The kernel.
    pub kernel_id: Uuid,
    /// The agent.
    pub agent_id: String,
    /// The agent's RPC address when the kernel was placed.
    pub agent_addr: String,
}

/// A predicate that held a session back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PredicateFailure {
    /// The predicate (`concurrency`, `keypair_resource_limit`…).
    pub name: String,
    /// What the user is told.
    pub msg: String,
}

/// A port a service inside a kernel listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// The service, e.g. `jupyter`.
    pub name: String,
    /// `http`, `tcp`, `pty`, `preopen`…
    pub protocol: String,
    /// Ports inside the container.
    #[serde(default)]
    pub container_ports: Vec<u16>,
    /// The host ports they are published on.
    #[serde(default)]
    pub host_ports: Vec<u16>,
}

/// What went wrong, for `status_data.error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// `agent` or `other`.
    pub src: String,
    /// A short name of the error.
    pub name: String,
    /// Its text.
    pub repr: String,
    /// The agent involved, if any.
    #[serde(default)]
    pub agent_id: Option<String>,
}

/// A batch session's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SessionResult {
    /// Not known (yet).
    #[default]
    Undefined,
    /// Its command exited with 0.
    Success,
    /// Its command failed.
    Failure,
}

impl SessionResult {
    /// As the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionResult::Undefined => "UNDEFINED",
            SessionResult::Success => "SUCCESS",
            SessionResult::Failure => "FAILURE",
        }
    }
}

/// Events of a session's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "events are transient values, decoded and folded one at a time; boxing the spec \
              would only add an allocation to every enqueue"
)]
pub enum SessionEvent {
    /// Asked for; status PENDING, every kernel PENDING.
    SessionEnqueued {
        /// The session's id.
        id: Uuid,
        /// A random token of this creation.
        creation_id: String,
        /// Who owns it.
        owner: Owner,
        /// What was asked for.
        #[serde(flatten)]
        spec: SessionSpec,
    },
    /// The scheduler tried and could not place it yet (appended only when
    /// the reason changes, not on every try).
    SchedulingDeferred {
        /// Why, in kebab-case (`no-available-instances`,
        /// `predicate-checks-failed`).
        status_info: String,
        /// Tries so far.
        retries: u32,
        /// The predicates that failed.
        #[serde(default)]
        failed_predicates: Vec<PredicateFailure>,
        /// A message for the user.
        #[serde(default)]
        msg: Option<String>,
    },
    /// Placed: every kernel SCHEDULED on its agent. Appended atomically with
    /// each agent's [`crate::agent::AgentEvent::KernelsPlaced`].
    SessionScheduled {
        /// The scaling group it was placed in.
        scaling_group: String,
        /// Where each kernel goes.
        kernels: Vec<KernelPlacement>,
    },
    /// Kernels moved to `status`.
    KernelsTransitioned {
        /// The kernels.
        kernels: Vec<Uuid>,
        /// Their new status.
        status: KernelStatus,
        /// Why, in kebab-case (`user-requested`, `failed-to-start`…).
        #[serde(default)]
        reason: String,
        /// Exit code, for TERMINATED kernels that exited by themselves.
        #[serde(default)]
        exit_code: Option<i32>,
        /// What went wrong, for ERROR.
        #[serde(default)]
        error: Option<ErrorInfo>,
        /// The session's new status, when it changed.
        #[serde(default)]
        session_status: Option<SessionStatus>,
    },
    /// A kernel runs.
    KernelStarted {
        /// The kernel.
        kernel_id: Uuid,
        /// What runs it on the agent.
        container_id: String,
        /// Where its ports are reachable.
        kernel_host: String,
        /// REPL ports.
        #[serde(default)]
        repl_in_port: u16,
        /// REPL ports.
        #[serde(default)]
        repl_out_port: u16,
        /// Ports of the services inside.
        #[serde(default)]
        service_ports: Vec<ServicePort>,
        /// The slots really allocated (empty: as requested).
        #[serde(default)]
        occupied_slots: SlotMap,
        /// The session's new status, when it changed.
        #[serde(default)]
        session_status: Option<SessionStatus>,
    },
    /// Withdrawn before it was placed: status CANCELLED, every kernel
    /// CANCELLED.
    SessionCancelled {
        /// Why (`user-requested`, `pending-timeout`…).
        reason: String,
    },
    /// A batch session's outcome.
    SessionResultRecorded {
        /// SUCCESS or FAILURE.
        result: SessionResult,
        /// The batch command's exit code.
        #[serde(default)]
        exit_code: Option<i32>,
    },
    /// Renamed.
    SessionRenamed {
        /// The new name.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use KernelStatus as K;
    use SessionStatus as S;

    #[test]
    fn a_session_status_is_the_documented_function_of_its_kernels() {
        let cases: &[(&[K], S)] = &[
            (&[K::Pending, K::Pending], S::Pending),
            (&[K::Cancelled, K::Cancelled], S::Cancelled),
            (&[K::Scheduled], S::Scheduled),
            (&[K::Running, K::Pulling, K::Creating], S::Pulling),
            (&[K::Prepared, K::Creating], S::Prepared),
            (&[K::Running, K::Running], S::Running),
            (&[K::Running, K::Restarting], S::Restarting),
            (&[K::Running, K::Terminating], S::RunningDegraded),
            (&[K::Running, K::Error], S::RunningDegraded),
            (&[K::Preparing, K::Error], S::Error),
            (&[K::Terminating, K::Terminated], S::Terminating),
            (&[K::Terminated, K::Running], S::RunningDegraded),
            (&[K::Terminated, K::Terminated], S::Terminated),
            (&[K::Terminated, K::Cancelled], S::Terminated),
            (&[K::Terminated, K::Error], S::Error),
            (&[], S::Pending),
        ];
        for (kernels, expected) in cases {
            assert_eq!(
                derive_session_status(kernels.iter().copied()),
                *expected,
                "{kernels:?}"
            );
            let reversed = kernels.iter().rev().copied();
            assert_eq!(
                derive_session_status(reversed),
                *expected,
                "{kernels:?} reversed"
            );
        }
    }

    #[test]
    fn a_session_is_terminated_only_when_every_kernel_is() {
        for other in K::ALL {
            let status = derive_session_status([K::Terminated, other]);
            if matches!(other, K::Terminated | K::Cancelled) {
                assert_eq!(status, S::Terminated);
            } else {
                assert_ne!(status, S::Terminated, "{other:?}");
            }
        }
    }

    #[test]
    fn kernel_transitions_follow_the_lifecycle() {
        assert!(K::Pending.may_become(K::Scheduled));
        assert!(!K::Pending.may_become(K::Running));
        assert!(K::Scheduled.may_become(K::Creating));
        assert!(!K::Creating.may_become(K::Pulling));
        assert!(K::Running.may_become(K::Restarting));
        assert!(K::Restarting.may_become(K::Running));
        assert!(!K::Terminating.may_become(K::Running));
        for dead in [K::Terminated, K::Cancelled] {
            for next in K::ALL {
                assert!(!dead.may_become(next), "{dead:?} -> {next:?}");
            }
        }
        let from_error: Vec<K> = K::ALL
            .into_iter()
            .filter(|n| K::Error.may_become(*n))
            .collect();
        assert_eq!(from_error, [K::Terminated]);
        for s in K::ALL {
            assert_eq!(KernelStatus::parse(s.as_str()), Some(s));
        }
        for s in S::ALL {
            assert_eq!(SessionStatus::parse(s.as_str()), Some(s));
        }
    }
}
