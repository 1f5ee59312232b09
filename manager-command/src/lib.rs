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
//! - [`auth`]: request authentication — Backend.AI's HMAC request signing.
//!
//! The command framework and the identity aggregates (domains, projects, users,
//! keypairs, policies) arrive next; see the issue tracker.

pub mod auth;
