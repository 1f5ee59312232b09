//! The read side of the manager.
//!
//! GraphQL (`/admin/gql`) and REST GET endpoints that answer only from the
//! read-model tables built by `manager-projections`, never from the event log
//! and never by writing to it. GraphQL mutations reach the write side only
//! through the command port of `manager-events`. Read-your-writes is provided
//! by waiting, for a bounded time, until the projections reach the log
//! position of the caller's last command.
//!
//! # Layout
//! - [`minilang`]: the reference's `filter` and `order` mini-languages, parsed
//!   and turned into SQL whose values are all bound parameters.
//! - [`graphql`]: the schema, its resolvers and the two endpoints.
//! - [`freshness`]: read-your-writes, waiting for the caller's last write.
//! - [`rest`]: REST reads (`GET /auth/role`, `GET /config/resource-slots`).
//! - [`resource`]: resource presets (`GET /resource/presets`,
//!   `POST /resource/check-presets`).
//! - [`session_rest`]: one session's information (`GET /session/{name}`).
//! - [`events`]: server-sent events (`GET /events/session`, followed from
//!   the event log, and `GET /events/background-task`).

pub mod events;
pub mod freshness;
pub mod graphql;
pub mod minilang;
pub mod resource;
pub mod rest;
pub mod session_rest;
