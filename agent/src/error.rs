//! The agent's errors: [`AgentError`] for starting and running agents, and
//! [`BackendError`] for what a backend could not do to a kernel (turned into
//! a [`RemoteError`] for the manager).

use agent_rpc::{RemoteError, ServerError};

use crate::config::ConfigError;

/// Why agents could not be started or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable. Fix it and start again.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The RPC server could not bind (address in use, bad endpoint).
    #[error(transparent)]
    Rpc(#[from] ServerError),
    /// Redis could not be set up (a bad URL: an unreachable Redis is not an
    /// error, the agent keeps retrying).
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The backend could not be set up (e.g. the scratch directory).
    #[error("backend: {0}")]
    Backend(#[from] BackendError),
}

/// What a backend could not do to a kernel.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A failure the dummy backend was configured to inject. The manager
    /// sees it as an internal (retryable) error.
    #[error("injected failure: {0}")]
    Injected(&'static str),
    /// A process could not be started, signalled or waited for; a directory
    /// could not be made or removed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The request cannot be carried out as given (e.g. an unknown run).
    #[error("{0}")]
    Invalid(String),
    /// The kernel is gone (it exited, or is being destroyed).
    #[error("{0}")]
    Gone(String),
}

impl BackendError {
    /// An [`BackendError::Io`] saying what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> BackendError {
        BackendError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<BackendError> for RemoteError {
    fn from(e: BackendError) -> RemoteError {
        match e {
            BackendError::Injected(_) | BackendError::Io { .. } => {
                RemoteError::internal(e.to_string())
            }
            BackendError::Invalid(m) => RemoteError::invalid_argument(m),
            BackendError::Gone(m) => RemoteError::FailedPrecondition { message: m },
        }
    }
}
