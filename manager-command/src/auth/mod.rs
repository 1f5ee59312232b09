//! Authentication of API requests.
//!
//! - [`signature`]: Backend.AI's HMAC-SHA256 request signing, reproduced
//!   exactly as the reference manager verifies it (the date window, the
//!   header grammar, the string to sign, the derived key, the error order).
//! - [`rate_limit`]: the per-keypair rolling-window limit, counted in Redis.
//! - [`middleware`]: puts them together for every request.

pub mod middleware;
pub mod rate_limit;
pub mod signature;
