//! The session sweeper: turns time into commands. Run by the manager that
//! is the scheduler, on the driver's tick, over the [`SessionView`]:
//!
//! - kernels on an agent LOST (or stopped) for longer than
//!   `lost_agent_grace` → ERROR (`agent-lost`), which frees their slots and
//!   quota; an agent back within the grace loses nothing;
//! - sessions starting (SCHEDULED to CREATING) for longer than
//!   `start_timeout` → their unstarted kernels ERROR (`start-timeout`);
//! - sessions TERMINATING for longer than `terminate_timeout` → destroyed
//!   with `forced` (`hang-timeout`): recorded TERMINATED;
//! - sessions older than their keypair policy's `max_session_lifetime`
//!   (seconds; 0 = none) → destroyed (`idle-session-lifetime`);
//! - RUNNING interactive sessions unused (no code execution, see
//!   [`super::activity`]) for their policy's `idle_timeout` (seconds; 0 or
//!   less = none) since their last use or their start → destroyed
//!   (`idle-timeout`). Only with an [`super::activity::Activity`].
//!
//! PENDING sessions past their scaling group's `pending_timeout` are the
//! scheduler's (it sees them first). Each reason lands in `status_info`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use manager_events::session::{ErrorInfo, KernelStatus, SessionStatus};
use uuid::Uuid;

use super::SessionCommand;
use super::view::SessionView;

/// Settings of the sweeper.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// How long kernels wait for a LOST agent to come back.
    pub lost_agent_grace: Duration,
    /// How long a session may take to start.
    pub start_timeout: Duration,
    /// How long a session may take to terminate.
    pub terminate_timeout: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            lost_agent_grace: Duration::from_secs(300),
            start_timeout: Duration::from_secs(900),
            terminate_timeout: Duration::from_secs(600),
        }
    }
}

fn older(since: Option<DateTime<Utc>>, now: DateTime<Utc>, limit: Duration) -> bool {
    since
        .and_then(|t| (now - t).to_std().ok())
        .is_some_and(|age| age >= limit)
}

/// The commands a sweep at `now` sends: (session, command).
pub fn sweep(
    view: &SessionView,
    config: &SweepConfig,
    now: DateTime<Utc>,
) -> Vec<(Uuid, SessionCommand)> {
    let mut out = Vec::new();
    let mut lifetime_of: std::collections::HashMap<String, Option<Duration>> =
        std::collections::HashMap::new();
    for s in view.sessions() {
        let Some(id) = s.state.id else { continue };
        let status = s.state.status;
        // Kernels stranded on a lost agent.
        let stranded: Vec<(Uuid, String)> = s
            .state
            .kernels
            .iter()
            .filter(|k| k.status.holds_agent_slots())
            .filter_map(|k| {
                let agent = k.agent_id.as_deref()?;
                let gone = view.agent(agent)?.gone_since;
                older(gone, now, config.lost_agent_grace).then(|| (k.id, agent.to_owned()))
            })
            .collect();
        if let Some((_, agent)) = stranded.first() {
            out.push((
                id,
                SessionCommand::Fail {
                    kernel_ids: stranded.iter().map(|(k, _)| *k).collect(),
                    reason: "agent-lost".into(),
                    error: ErrorInfo {
                        src: "agent".into(),
                        name: "AgentLost".into(),
                        repr: format!(
                            "agent {agent} has been gone for more than {}s",
                            config.lost_agent_grace.as_secs()
                        ),
                        agent_id: Some(agent.clone()),
                    },
                },
            ));
            continue;
        }
        use SessionStatus as S;
        match status {
            S::Scheduled | S::Preparing | S::Pulling | S::Prepared | S::Creating
                if older(s.status_since, now, config.start_timeout) =>
            {
                let unstarted = s
                    .state
                    .kernels
                    .iter()
                    .filter(|k| k.status.holds_agent_slots() && k.status != KernelStatus::Running)
                    .map(|k| k.id)
                    .collect();
                out.push((
                    id,
                    SessionCommand::Fail {
                        kernel_ids: unstarted,
                        reason: "start-timeout".into(),
                        error: ErrorInfo {
                            src: "other".into(),
                            name: "StartTimeout".into(),
                            repr: format!(
                                "the session did not start within {}s",
                                config.start_timeout.as_secs()
                            ),
                            agent_id: None,
                        },
                    },
                ));
                continue;
            }
            S::Terminating if older(s.status_since, now, config.terminate_timeout) => {
                out.push((
                    id,
                    SessionCommand::Destroy {
                        forced: true,
                        reason: "hang-timeout".into(),
                    },
                ));
                continue;
            }
            _ => {}
        }
        if status.holds_quota() {
            let ak = s.state.owner.access_key.clone();
            let limit = *lifetime_of
                .entry(ak.clone())
                .or_insert_with(|| view.with_tenancy(|t| lifetime(t, &ak)));
            if let Some(limit) = limit
                && older(s.created_at, now, limit)
                && matches!(status, S::Running | S::RunningDegraded | S::Restarting)
            {
                out.push((
                    id,
                    SessionCommand::Destroy {
                        forced: false,
                        reason: "idle-session-lifetime".into(),
                    },
                ));
            }
        }
    }
    out
}

fn lifetime(t: &super::view::Tenancy, ak: &str) -> Option<Duration> {
    let policy = t
        .keypairs
        .get(ak)
        .and_then(|k| k.live())
        .and_then(|k| t.policies.get(&k.resource_policy))
        .and_then(|p| p.live())?;
    u64::try_from(policy.max_session_lifetime)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// A RUNNING interactive session whose owner's policy has an idle timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleCandidate {
    /// The session.
    pub session: Uuid,
    /// When it started running (the idle clock's start).
    pub since: DateTime<Utc>,
    /// Its owner's `idle_timeout`.
    pub timeout: Duration,
}

/// The sessions an idle timeout applies to: RUNNING, not batch (a batch
/// session ends by itself), whose keypair policy's `idle_timeout` is > 0.
pub fn idle_candidates(view: &SessionView) -> Vec<IdleCandidate> {
    let mut timeouts: std::collections::HashMap<String, Option<Duration>> =
        std::collections::HashMap::new();
    view.sessions()
        .into_iter()
        .filter(|s| {
            s.state.status == SessionStatus::Running
                && s.state.spec.session_type != manager_events::session::SessionType::Batch
        })
        .filter_map(|s| {
            let ak = s.state.owner.access_key.clone();
            let timeout = *timeouts.entry(ak.clone()).or_insert_with(|| {
                view.with_tenancy(|t| {
                    let policy = t
                        .keypairs
                        .get(&ak)
                        .and_then(|k| k.live())
                        .and_then(|k| t.policies.get(&k.resource_policy))
                        .and_then(|p| p.live())?;
                    u64::try_from(policy.idle_timeout)
                        .ok()
                        .filter(|s| *s > 0)
                        .map(Duration::from_secs)
                })
            });
            Some(IdleCandidate {
                session: s.state.id?,
                since: s.status_since?,
                timeout: timeout?,
            })
        })
        .collect()
}

/// The idle timeouts due at `now`, given each session's last access (unix
/// ms; none: never used since it started).
pub fn idle(
    candidates: &[IdleCandidate],
    last_access: &std::collections::HashMap<Uuid, i64>,
    now: DateTime<Utc>,
) -> Vec<(Uuid, SessionCommand)> {
    candidates
        .iter()
        .filter(|c| {
            let since_ms = c.since.timestamp_millis();
            let last = last_access
                .get(&c.session)
                .copied()
                .unwrap_or(since_ms)
                .max(since_ms);
            let idle_ms = now.timestamp_millis().saturating_sub(last);
            u128::try_from(idle_ms).is_ok_and(|ms| ms >= c.timeout.as_millis())
        })
        .map(|c| {
            (
                c.session,
                SessionCommand::Destroy {
                    forced: false,
                    reason: "idle-timeout".into(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_idle_after_its_timeout_since_its_last_use_or_its_start() {
        let start = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let c = IdleCandidate {
            session: Uuid::from_u128(1),
            since: start,
            timeout: Duration::from_secs(60),
        };
        let at = |secs: i64| DateTime::<Utc>::from_timestamp(1_000 + secs, 0).unwrap();
        let none = std::collections::HashMap::new();
        assert!(idle(std::slice::from_ref(&c), &none, at(59)).is_empty());
        assert_eq!(idle(std::slice::from_ref(&c), &none, at(60)).len(), 1);
        let used: std::collections::HashMap<Uuid, i64> = [(c.session, (1_000 + 30) * 1000)].into();
        assert!(idle(std::slice::from_ref(&c), &used, at(60)).is_empty());
        assert_eq!(idle(std::slice::from_ref(&c), &used, at(90)).len(), 1);
        // A last access before the start (an old key) counts from the start.
        let old: std::collections::HashMap<Uuid, i64> = [(c.session, 0)].into();
        assert!(idle(std::slice::from_ref(&c), &old, at(59)).is_empty());
    }
}
