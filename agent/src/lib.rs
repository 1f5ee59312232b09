//! A reference agent.
//!
//! Serves the agent RPC protocol, sends heartbeats and kernel lifecycle notices
//! to Redis, and runs kernels with a `dummy` backend (fake kernels, for scale
//! tests) or a `process` backend (real local processes).
//!
//! Nothing lives here yet: the agent arrives with the agents work.
