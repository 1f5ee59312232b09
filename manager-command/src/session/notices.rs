//! Kernel notices from agents (`kernel_preparing`, `kernel_pulling`,
//! `kernel_creating`, `kernel_started`, `kernel_terminated`) as session
//! commands. Each is idempotent: a notice handled twice, late, or after the
//! driver recorded the same fact from an RPC answer appends nothing.

use agent_rpc::notice::{Notice, NoticeBody};
use futures::future::BoxFuture;
use manager_events::{EventMetadata, ProblemKind};

use super::driver::started_of;
use super::{ActOnSession, Progress, SessionCommand};
use crate::agent::{KernelNotices, NoticeFailure};
use crate::handler::CommandHandler;

/// Turns kernel notices into session commands.
#[derive(Clone)]
pub struct SessionNotices {
    handler: CommandHandler,
}

impl std::fmt::Debug for SessionNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionNotices").finish_non_exhaustive()
    }
}

impl SessionNotices {
    /// Sends the commands through `handler`.
    pub fn new(handler: CommandHandler) -> Self {
        SessionNotices { handler }
    }
}

/// The command a notice stands for (`None`: nothing to record).
pub fn command_of(notice: &Notice) -> Option<(uuid::Uuid, SessionCommand)> {
    let progress = |kernel_id, progress| SessionCommand::Progress {
        kernel_id,
        progress,
    };
    Some(match &notice.body {
        NoticeBody::KernelPreparing {
            kernel_id,
            session_id,
            ..
        } => (*session_id, progress(*kernel_id, Progress::Preparing)),
        NoticeBody::KernelPulling {
            kernel_id,
            session_id,
            ..
        } => (*session_id, progress(*kernel_id, Progress::Pulling)),
        NoticeBody::KernelCreating {
            kernel_id,
            session_id,
        } => (*session_id, progress(*kernel_id, Progress::Creating)),
        NoticeBody::KernelStarted {
            kernel_id,
            session_id,
            creation_info,
        } => (
            *session_id,
            SessionCommand::Start {
                kernel_id: *kernel_id,
                started: creation_info.as_ref().map(started_of).unwrap_or_default(),
            },
        ),
        NoticeBody::KernelTerminated {
            kernel_id,
            session_id,
            reason,
            exit_code,
        } => (
            *session_id,
            SessionCommand::KernelGone {
                kernel_id: *kernel_id,
                reason: if reason.is_empty() {
                    "self-terminated".into()
                } else {
                    reason.clone()
                },
                exit_code: *exit_code,
            },
        ),
        NoticeBody::AgentStarted { .. }
        | NoticeBody::AgentInfoChanged { .. }
        | NoticeBody::AgentTerminated { .. } => return None,
    })
}

impl KernelNotices for SessionNotices {
    fn handle<'a>(
        &'a self,
        entry_id: &'a str,
        notice: &'a Notice,
    ) -> BoxFuture<'a, Result<(), NoticeFailure>> {
        Box::pin(async move {
            let Some((id, command)) = command_of(notice) else {
                return Ok(());
            };
            let meta = EventMetadata {
                request_id: Some(format!("notice:{entry_id}")),
                ..EventMetadata::default()
            };
            match self
                .handler
                .transact(&ActOnSession { id, command }, meta)
                .await
            {
                Ok(_) => Ok(()),
                // A kernel of a session this cluster does not know (another
                // cluster's, or the log was reset): nothing to record.
                Err(p) if matches!(p.kind, ProblemKind::ObjectNotFound(_)) => Ok(()),
                Err(p) if p.status() >= 500 || p.kind == ProblemKind::Conflict => {
                    Err(NoticeFailure::Transient(p.to_string()))
                }
                Err(p) => Err(NoticeFailure::Permanent(p.to_string())),
            }
        })
    }
}
