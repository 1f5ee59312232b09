//! Who may talk: the MAC, the time window and the replay guard, and what
//! happens to messages that fail them.
//!
//! Every receiver (server and client alike) runs each incoming message
//! through an [`Authenticator`]: the envelope and MAC must hold
//! ([`wire::open`]), the timestamp must lie within `window` of the receiver's
//! clock, and the nonce must not have been seen. A message failing any check is
//! *not answered*: it is logged (`tracing` warn), counted in the metric
//! `agent_rpc_rejected_total{side, reason}` and in the receiver's
//! [`Rejections`], and dropped.
//!
//! The nonce cache remembers every accepted nonce for as long as its timestamp
//! is inside the window; older messages are refused by the window check
//! anyway. It is bounded: when full it forgets the oldest nonce and from then
//! on refuses every message not newer than it (fail closed), so a flood can
//! cost availability but never lets a replay through. Clocks must agree within
//! the window (run NTP).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wire::{self, ClusterKey, Header, NONCE_LEN};

/// Why a message was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Wrong number of frames, wrong frame sizes, wrong magic, unknown kind.
    Malformed,
    /// The body is larger than the configured maximum.
    TooLarge,
    /// The MAC does not match: another cluster key, or tampering.
    BadMac,
    /// The timestamp is outside the receiver's window (or older than what the
    /// full nonce cache can vouch for).
    Stale,
    /// The nonce was seen before: a replayed message.
    Replayed,
    /// A request arrived at a client or a response at a server.
    UnexpectedKind,
    /// The request's deadline had passed when it arrived: nobody waits for it.
    Expired,
}

impl RejectReason {
    /// Every reason, in a fixed order.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Malformed,
        RejectReason::TooLarge,
        RejectReason::BadMac,
        RejectReason::Stale,
        RejectReason::Replayed,
        RejectReason::UnexpectedKind,
        RejectReason::Expired,
    ];

    /// The `reason` label of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::TooLarge => "too_large",
            RejectReason::BadMac => "bad_mac",
            RejectReason::Stale => "stale",
            RejectReason::Replayed => "replayed",
            RejectReason::UnexpectedKind => "unexpected_kind",
            RejectReason::Expired => "expired",
        }
    }

    fn index(self) -> usize {
        match self {
            RejectReason::Malformed => 0,
            RejectReason::TooLarge => 1,
            RejectReason::BadMac => 2,
            RejectReason::Stale => 3,
            RejectReason::Replayed => 4,
            RejectReason::UnexpectedKind => 5,
            RejectReason::Expired => 6,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of dropped messages by reason, shared by a receiver and whoever
/// watches it (tests, health pages). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Rejections {
    counts: Arc<[AtomicU64; 7]>,
}

impl Rejections {
    /// How many messages were dropped for `reason`.
    pub fn get(&self, reason: RejectReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }

    /// How many messages were dropped in all.
    pub fn total(&self) -> u64 {
        RejectReason::ALL.iter().map(|r| self.get(*r)).sum()
    }

    /// Records one dropped message: a warning in the log, the metric
    /// `agent_rpc_rejected_total{side, reason}`, and this counter.
    pub(crate) fn record(&self, side: &'static str, reason: RejectReason, peer: &str) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("agent_rpc_rejected_total", "side" => side, "reason" => reason.as_str())
            .increment(1);
        tracing::warn!(
            side,
            reason = reason.as_str(),
            peer,
            "agent RPC message dropped"
        );
    }
}

/// Remembers recent nonces to refuse replays. See the [module docs](self).
#[derive(Debug)]
pub struct NonceCache {
    window_ms: u64,
    capacity: usize,
    by_time: BTreeSet<(u64, [u8; NONCE_LEN])>,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// Messages stamped at or before this are refused: their nonces may have
    /// been forgotten.
    floor_ms: u64,
}

impl NonceCache {
    /// A cache covering `window` either side of now, holding at most
    /// `capacity` nonces (at least 1).
    pub fn new(window: Duration, capacity: usize) -> NonceCache {
        NonceCache {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            capacity: capacity.max(1),
            by_time: BTreeSet::new(),
            seen: HashSet::new(),
            floor_ms: 0,
        }
    }

    /// Checks a message stamped `ts_ms` with `nonce` at time `now_ms`, and
    /// remembers the nonce if the message is accepted.
    pub fn check(
        &mut self,
        ts_ms: u64,
        nonce: [u8; NONCE_LEN],
        now_ms: u64,
    ) -> Result<(), RejectReason> {
        if ts_ms.abs_diff(now_ms) > self.window_ms {
            return Err(RejectReason::Stale);
        }
        // Forget what the window check already refuses.
        let horizon = now_ms.saturating_sub(self.window_ms);
        while let Some(&(t, n)) = self.by_time.first() {
            if t >= horizon {
                break;
            }
            self.by_time.pop_first();
            self.seen.remove(&n);
            self.floor_ms = self.floor_ms.max(t);
        }
        if ts_ms <= self.floor_ms && self.floor_ms > 0 {
            return Err(RejectReason::Stale);
        }
        if !self.seen.insert(nonce) {
            return Err(RejectReason::Replayed);
        }
        self.by_time.insert((ts_ms, nonce));
        while self.by_time.len() > self.capacity {
            if let Some((t, n)) = self.by_time.pop_first() {
                self.seen.remove(&n);
                self.floor_ms = self.floor_ms.max(t);
            }
        }
        Ok(())
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }
}

/// Checks incoming messages: envelope, MAC, time window, nonce. One per
/// receiving socket (it is not shared, so it needs no lock).
#[derive(Debug)]
pub struct Authenticator {
    key: ClusterKey,
    max_body: usize,
    nonces: NonceCache,
}

impl Authenticator {
    /// An authenticator for messages signed with `key`, at most `max_body`
    /// body bytes, stamped within `window` of now; it remembers at most
    /// `nonce_capacity` nonces.
    pub fn new(
        key: ClusterKey,
        max_body: usize,
        window: Duration,
        nonce_capacity: usize,
    ) -> Authenticator {
        Authenticator {
            key,
            max_body,
            nonces: NonceCache::new(window, nonce_capacity),
        }
    }

    /// Accepts or refuses the frames of one message (without a ROUTER's
    /// identity frame). On success the body is `frames[1]`.
    pub fn accept<F: AsRef<[u8]>>(&mut self, frames: &[F]) -> Result<Header, RejectReason> {
        let header = wire::open(&self.key, frames, self.max_body)?;
        self.nonces
            .check(header.timestamp_ms, header.nonce, wire::now_ms())?;
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Header, seal};

    const W: Duration = Duration::from_secs(30);

    #[test]
    fn replays_are_refused() {
        let mut c = NonceCache::new(W, 100);
        assert_eq!(c.check(1_000_000, [1; 16], 1_000_000), Ok(()));
        assert_eq!(
            c.check(1_000_000, [1; 16], 1_000_001),
            Err(RejectReason::Replayed)
        );
        assert_eq!(c.check(1_000_000, [2; 16], 1_000_001), Ok(()));
    }

    #[test]
    fn outside_the_window_is_stale() {
        let mut c = NonceCache::new(W, 100);
        let now = 10_000_000;
        assert_eq!(
            c.check(now - 30_001, [1; 16], now),
            Err(RejectReason::Stale)
        );
        assert_eq!(
            c.check(now + 30_001, [2; 16], now),
            Err(RejectReason::Stale)
        );
        assert_eq!(c.check(now - 30_000, [3; 16], now), Ok(()));
        assert_eq!(c.check(now + 30_000, [4; 16], now), Ok(()));
    }

    #[test]
    fn nonces_are_forgotten_only_once_the_window_refuses_them() {
        let mut c = NonceCache::new(W, 100);
        let t0 = 10_000_000;
        c.check(t0, [1; 16], t0).unwrap();
        // Still inside the window: remembered.
        assert_eq!(
            c.check(t0, [1; 16], t0 + 30_000),
            Err(RejectReason::Replayed)
        );
        // Outside: the window refuses it, and the cache may forget it.
        assert_eq!(c.check(t0, [1; 16], t0 + 30_001), Err(RejectReason::Stale));
        c.check(t0 + 30_001, [2; 16], t0 + 30_001).unwrap();
        assert_eq!(c.len(), 1);
        // Even if the clock jumps back, the forgotten nonce stays refused.
        assert_eq!(c.check(t0, [1; 16], t0 + 10), Err(RejectReason::Stale));
    }

    #[test]
    fn a_full_cache_fails_closed() {
        let mut c = NonceCache::new(W, 3);
        let now = 10_000_000;
        for i in 0..3u8 {
            c.check(now + u64::from(i), [i; 16], now).unwrap();
        }
        // A fourth evicts the oldest (ts = now); from then on nothing at or
        // before `now` is accepted, so the evicted nonce cannot be replayed.
        c.check(now + 10, [9; 16], now).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.check(now, [0; 16], now), Err(RejectReason::Stale));
        assert_eq!(c.check(now, [42; 16], now), Err(RejectReason::Stale));
        assert_eq!(c.check(now + 11, [43; 16], now), Ok(()));
    }

    #[test]
    fn authenticator_checks_mac_window_and_nonce() {
        let key = ClusterKey::new([5u8; 32]).unwrap();
        let mut a = Authenticator::new(key.clone(), 1024, W, 100);
        let h = Header::request(1, 0);
        let frames = seal(&key, &h, b"x".to_vec());
        assert_eq!(a.accept(&frames), Ok(h));
        assert_eq!(a.accept(&frames), Err(RejectReason::Replayed));

        let mut old = Header::request(2, 0);
        old.timestamp_ms -= 60_000;
        assert_eq!(
            a.accept(&seal(&key, &old, b"x".to_vec())),
            Err(RejectReason::Stale)
        );

        let other = ClusterKey::new([6u8; 32]).unwrap();
        assert_eq!(
            a.accept(&seal(&other, &Header::request(3, 0), b"x".to_vec())),
            Err(RejectReason::BadMac)
        );
    }

    #[test]
    fn rejections_count_by_reason() {
        let r = Rejections::default();
        r.record("test", RejectReason::BadMac, "peer");
        r.record("test", RejectReason::BadMac, "peer");
        r.record("test", RejectReason::Replayed, "peer");
        assert_eq!(r.get(RejectReason::BadMac), 2);
        assert_eq!(r.total(), 3);
    }
}
