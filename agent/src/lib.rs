//! A reference agent.
//!
//! Serves the agent RPC protocol (`agent-rpc`), tells the managers it is
//! alive and what happens to its kernels through Redis (heartbeat keys and
//! the notice stream of `agent_rpc::notice`), and runs kernels with a
//! `dummy` backend (fake kernels with configured delays and failure rates,
//! a thousand agents to a process, for scale tests) or a `process` backend
//! (each kernel a local process tree in its own directory). The binary,
//! `agent`, is a thin CLI over [`Fleet`]; `agent --help` lists its options,
//! `agent.sample.toml` at the repository root its configuration.
//!
//! # Layout
//! - [`config`]: the TOML file, `AGENT_*` environment variables, overrides.
//! - [`fleet`]: [`Fleet`], the agents of one process: RPC servers,
//!   heartbeat schedule, start and shutdown.
//! - [`agent`]: [`Agent`], one agent: the kernel registry, slot
//!   accounting, lifecycle notices, the RPC [`Handler`](agent_rpc::Handler).
//! - [`backend`]: what really happens to kernels — [`backend::dummy`] and
//!   [`backend::process`].
//! - [`report`]: the Redis side — heartbeat keys and the notice stream, one
//!   connection for all agents.
//! - [`slots`]: exact slot amounts and the capacity check.
//! - [`error`]: [`AgentError`] and [`BackendError`].
//!
//! # Guarantees
//! - **Alive means the key exists.** Every agent sets its heartbeat key every
//!   `heartbeat.interval_ms` (default 3 s) with a TTL (default three
//!   periods); the managers' liveness timeout should match the TTL. A killed
//!   agent's key expires; a gracefully stopped agent deletes it and sends
//!   `agent_terminated{reason: "shutdown"}`.
//! - **Notices in order, at least once.** Notices are queued and written in
//!   order; a failed write is retried until Redis takes it (a retry may
//!   repeat entries). The stream is capped near `redis.notice_stream_maxlen`.
//! - **Redis outages do not stop the agent.** RPC goes on being served while
//!   the client reconnects with backoff.
//! - **A repeated call does no harm**: the RPC server answers a repeated
//!   state-changing call (same idempotency key) with the first answer, and
//!   the registry makes a repeat with another key harmless too (creating an
//!   existing kernel answers it, destroying a gone one says so).
//! - **Capacity is never overcommitted**: a kernel is created only if its
//!   slots fit in what the agent declared minus what its kernels hold.

pub mod agent;
pub mod backend;
pub mod config;
pub mod error;
pub mod fleet;
pub mod report;
pub mod slots;

pub use agent::Agent;
pub use config::Config;
pub use error::{AgentError, BackendError};
pub use fleet::Fleet;
