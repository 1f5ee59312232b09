//! The write side of the manager.
//!
//! Every change to the cluster enters here as a *command*: it is checked against
//! the current state of its aggregate (a session, an agent, a user, ...) and, if
//! accepted, recorded as events appended atomically to the log kept by
//! `manager-events`. This crate holds the aggregates and their command handlers,
//! the REST command endpoints, authentication and rate limiting, the scheduler,
//! the sweeper, the agent-notice ingester and the agent RPC client.
//!
//! # Layout
//! - [`aggregate`]: the `Aggregate` trait (pure `decide`/`apply`), the log
//!   encoding of events, and the given/when/then [`aggregate::Scenario`].
//! - [`handler`]: loads an aggregate (cache checked against its stream), runs
//!   a command, appends with the expected version, retries on conflict.
//! - [`auth`]: request authentication — Backend.AI's HMAC request signing.
//! - [`domain`]: the domain aggregate.
//! - [`agent`]: agents — the aggregate, the notice ingester, the liveness
//!   sweeper, the log-fed agent directory and the agent RPC clients.
//! - [`user`]: the user aggregate, password hashing, and the workflows that
//!   keep a user, its domain and its unique email/username consistent.
//! - [`keypair`]: the keypair aggregate, key generation and sealing, and the
//!   workflows that keep a keypair and its owner consistent.
//! - [`project`]: projects (the reference's groups) and their members.
//! - [`image`]: images, their aliases (reservations) and `resolve_image`.
//! - [`leadership`]: one manager at a time — an advisory lock held on a
//!   dedicated connection (the sweeper's, the scheduler's).
//! - [`policy`]: keypair resource policies.
//! - [`user_policy`], [`project_policy`]: user and project resource policies
//!   (vfolder, quota-scope, model-service, image and network limits).
//! - [`resource_preset`]: resource presets (named slot bundles).
//! - [`reservation`]: unique values (emails, usernames) across aggregates.
//! - [`scaling_group`]: scaling groups and who may use them.
//! - [`session`]: compute sessions — the aggregate, its workflows, the
//!   REST endpoints, the scheduler and the kernel starter.
//! - [`service`]: the command port the read side's GraphQL mutations use —
//!   authorisation, idempotency keys scoped to the caller, and the record of
//!   each caller's last write for read-your-writes.
//!
//! # Guarantees
//! - A command's events are appended only if the aggregate's stream is still
//!   at the version they were decided on; otherwise the command is decided
//!   again on fresh state (a bounded number of times, then 409).
//! - A command retried with the same idempotency key returns the first result
//!   and appends nothing.

pub mod agent;
pub mod aggregate;
pub mod auth;
pub mod domain;
pub mod handler;
pub mod image;
pub mod keypair;
pub mod leadership;
pub mod policy;
pub mod project;
pub mod project_policy;
pub mod reservation;
pub mod resource_preset;
pub mod scaling_group;
pub mod service;
pub mod session;
pub mod user;
pub mod user_policy;
