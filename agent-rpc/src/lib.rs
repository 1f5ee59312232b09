//! The manager-to-agent wire protocol.
//!
//! The manager calls its agents (`create_kernels`, `destroy_kernel`,
//! `execute`, …) over ZeroMQ: a [`Client`] per agent holds a DEALER socket, the
//! agent's [`Server`] a ROUTER socket, so many calls are in flight on one
//! connection and answers come back in any order, matched by request id.
//! Bodies are MessagePack; every message in both directions is signed with the
//! cluster key. See `docs/decisions/004-agent-rpc.md` for why it is built
//! this way.
//!
//! # Layout
//! - [`ops`]: the [`Request`] and [`Response`] enums, one variant per operation.
//! - [`kernel`], [`execute`], [`agent`]: the payloads, by domain noun.
//! - [`error`]: [`RemoteError`] (sent back by the agent), [`RpcError`] (what a
//!   caller sees), [`ServerError`].
//! - [`client`]: [`Client`] and [`ClientConfig`].
//! - [`server`]: [`Server`], [`ServerConfig`], the [`Handler`] trait.
//! - [`idempotency`]: [`IdempotencyCache`], which makes a keyed call run once.
//! - [`notice`]: what agents tell the managers through Redis (heartbeat
//!   keys, the notice stream).
//! - [`wire`]: the envelope (frames, header, MAC) and the body codec.
//! - [`auth`]: the time window, the replay guard and the [`Rejections`] counters.
//! - `transport`: driving a tmq socket from one task.
//!
//! # Guarantees
//! - **Authenticated both ways.** Every message carries an HMAC-SHA256 over
//!   its header and body, a timestamp and a random nonce; the receiver checks
//!   the MAC in constant time, refuses timestamps outside its window (±30 s by
//!   default) and nonces it has seen. A message failing any check gets no
//!   answer; it is logged and counted (`agent_rpc_rejected_total{side, reason}`).
//! - **Never misread.** A body of another protocol version is refused, never
//!   decoded: the server answers [`RemoteError::VersionMismatch`], the client
//!   reports [`RpcError::VersionMismatch`].
//! - **No panic on input.** Frames are checked for count and size before
//!   anything is decoded, nothing is decoded before the MAC holds, and messages
//!   are capped in size (libzmq drops a connection sending a larger frame).
//! - **Deadlines.** A call fails with [`RpcError::Timeout`] when its deadline
//!   passes; the deadline travels with the request, and the agent drops
//!   requests that arrive after it.
//! - **At most once per idempotency key.** State-changing requests carry the
//!   id of the event that caused them; the server runs each (operation,
//!   target, key) once and answers repeats with the first answer.
//!
//! Messages are authenticated, not encrypted (the bundled libzmq has no
//! CURVE): nothing secret should travel in a body.

pub mod agent;
pub mod auth;
pub mod client;
pub mod error;
pub mod execute;
pub mod idempotency;
pub mod kernel;
pub mod notice;
pub mod ops;
pub mod server;
mod transport;
pub mod wire;

pub use auth::{RejectReason, Rejections};
pub use client::{Client, ClientConfig};
pub use error::{RemoteError, RpcError, ServerError};
pub use idempotency::{IdempotencyCache, Outcome};
pub use ops::{ReplyBody, Request, Response};
pub use server::{Handler, Server, ServerConfig, ServerHandle};
pub use wire::{ClusterKey, KeyError, PROTOCOL_VERSION};
