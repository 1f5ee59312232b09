//! The write side of the manager.
//!
//! Every change to the cluster enters here as a *command*: it is checked against
//! the current state of its aggregate (a session, an agent, a user, ...) and, if
//! accepted, recorded as events appended atomically to the log kept by
//! `manager-events`. This crate will hold the aggregates and their command
//! handlers, the REST command endpoints, authentication and rate limiting, the
//! scheduler, the sweeper, the agent-notice ingester and the agent RPC client.
//!
//! Nothing lives here yet: the command framework arrives with the identity and
//! tenancy work (domains, projects, users, keypairs).
