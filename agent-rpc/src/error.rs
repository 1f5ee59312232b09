//! Errors: those an agent sends back ([`RemoteError`]), those a caller sees
//! ([`RpcError`]), and those of running a server ([`ServerError`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An error the agent answers with. It travels over the wire, so the manager
/// can act on its kind: each variant says what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum RemoteError {
    /// The kernel, session or thing named does not exist on the agent. Do not
    /// retry; reconcile (the kernel is gone).
    #[error("not found: {message}")]
    NotFound {
        /// What was not found.
        message: String,
    },
    /// The request is wrong (bad slots, unknown image, undecodable body). Do
    /// not retry the same request.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The thing to create exists already (with another idempotency key).
    #[error("already exists: {message}")]
    AlreadyExists {
        /// What exists.
        message: String,
    },
    /// The agent is not in a state to do it (e.g. the kernel is terminating).
    /// Retry after the state changed.
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// The state that prevents it.
        message: String,
    },
    /// The agent cannot do it now (overloaded, shutting down, out of
    /// resources). Retry later, with the same idempotency key.
    #[error("unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// The agent gave up before finishing. The work may have happened: retry
    /// with the same idempotency key to find out.
    #[error("deadline exceeded: {message}")]
    DeadlineExceeded {
        /// What was not finished.
        message: String,
    },
    /// The agent does not implement the operation.
    #[error("unimplemented: {message}")]
    Unimplemented {
        /// The operation.
        message: String,
    },
    /// The agent refuses the caller.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// Why.
        message: String,
    },
    /// A bug or an unexpected failure on the agent. Retrying may help; the
    /// agent's log says more.
    #[error("internal error: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
    /// The request's body is of a protocol version the agent does not speak;
    /// it was not read. Upgrade one side.
    #[error(
        "protocol version mismatch: the agent speaks version {supported}, the request was version {received}"
    )]
    VersionMismatch {
        /// The version the agent speaks.
        supported: u16,
        /// The version of the refused request.
        received: u16,
    },
}

impl RemoteError {
    /// [`RemoteError::NotFound`].
    pub fn not_found(message: impl Into<String>) -> RemoteError {
        RemoteError::NotFound {
            message: message.into(),
        }
    }

    /// [`RemoteError::InvalidArgument`].
    pub fn invalid_argument(message: impl Into<String>) -> RemoteError {
        RemoteError::InvalidArgument {
            message: message.into(),
        }
    }

    /// [`RemoteError::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> RemoteError {
        RemoteError::Unavailable {
            message: message.into(),
        }
    }

    /// [`RemoteError::Internal`].
    pub fn internal(message: impl Into<String>) -> RemoteError {
        RemoteError::Internal {
            message: message.into(),
        }
    }

    /// Whether the same call may succeed later: unavailable, deadline
    /// exceeded, internal. Such answers are not remembered by the
    /// [`IdempotencyCache`](crate::IdempotencyCache) policy of the server, so a
    /// retry runs again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RemoteError::Unavailable { .. }
                | RemoteError::DeadlineExceeded { .. }
                | RemoteError::Internal { .. }
        )
    }
}

/// What can go wrong with a call, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No answer within the call's deadline. The agent may be down, the key
    /// may be wrong (unauthenticated messages get no answer), or the work may
    /// still be running: retry with the same idempotency key.
    #[error("{operation}: no answer within {timeout:?}")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// The deadline the call had.
        timeout: Duration,
    },
    /// The agent answered with an error.
    #[error("{0}")]
    Remote(#[from] RemoteError),
    /// The two sides speak different protocol versions; nothing was executed.
    /// Upgrade one side.
    #[error(
        "protocol version mismatch: this side speaks version {local}, the peer version {remote}"
    )]
    VersionMismatch {
        /// This side's version.
        local: u16,
        /// The peer's version.
        remote: u16,
    },
    /// The request is larger than the configured maximum; it was not sent.
    #[error("the request has {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The request could not be encoded (a bug).
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// An authenticated answer could not be decoded: the peer has a bug or
    /// a schema this side does not know.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
    /// The agent answered with another operation's response (a bug).
    #[error("expected a {expected} response, got {got}")]
    UnexpectedResponse {
        /// The operation called.
        expected: &'static str,
        /// The operation answered.
        got: &'static str,
    },
    /// Too many calls wait to be handed to the socket (the agent does not
    /// read); this one was not sent. Retry later.
    #[error("too many calls wait to be sent to the agent")]
    QueueFull,
    /// The client's background task has stopped (the runtime is shutting
    /// down, or the socket failed).
    #[error("the RPC client is closed")]
    Closed,
    /// The socket could not be set up (bad endpoint, no Tokio runtime).
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
}

impl RpcError {
    /// Whether retrying the same call (with the same idempotency key) may
    /// succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RpcError::Timeout { .. } | RpcError::QueueFull | RpcError::Closed => true,
            RpcError::Remote(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// What can go wrong running a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket could not be bound (address in use, bad endpoint, no Tokio
    /// runtime).
    #[error("cannot bind {endpoint}: {message}")]
    Bind {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The socket failed while serving.
    #[error("the RPC socket failed: {0}")]
    Socket(String),
    /// The server task panicked or was cancelled.
    #[error("the RPC server task ended abnormally: {0}")]
    Task(String),
}
