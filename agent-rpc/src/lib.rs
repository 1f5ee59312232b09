//! The manager-to-agent wire protocol.
//!
//! Request/response messages over ZeroMQ, with request ids, per-call deadlines,
//! typed remote errors, protocol versioning and per-message authentication.
//! Every state-changing call carries the id of the event that caused it, so a
//! repeated call does no harm.
//!
//! Nothing lives here yet: the protocol arrives with the agents work.
