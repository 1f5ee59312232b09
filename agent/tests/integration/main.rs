//! The agent against real Redis (the halfstack's, `redis://127.0.0.1:8111`,
//! or `AGENT_TEST_REDIS_URL`) and real ZeroMQ. Each test has its own key
//! prefix, agent ids, ports and scratch directory, so they run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod binary;
mod common;
mod dummy;
mod process;
