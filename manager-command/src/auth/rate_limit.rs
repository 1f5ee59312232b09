//! Per-keypair rate limiting in Redis, as the reference does it: a rolling
//! window (900 s) per access key, limited to the keypair's `rate_limit`.
//!
//! Each request adds a member to a sorted set scored by the Redis server's
//! clock (`TIME`, so managers with skewed clocks agree), trims members older
//! than the window and counts the rest — all in one Lua script, so concurrent
//! requests on many managers are counted exactly. Like the reference, refused
//! requests count too: a client that keeps hammering while over the limit
//! stays over it.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::config::{Config, PerformanceConfig, ReconnectPolicy};
use fred::types::scripts::Script;
use manager_events::{Problem, ProblemKind};

/// The reference's window: 15 minutes.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(900);

const SCRIPT: &str = r#"
local key = KEYS[1]
local window_us = tonumber(ARGV[1])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local seq = redis.call('INCR', KEYS[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now_us - window_us)
redis.call('ZADD', key, now_us, tostring(seq))
redis.call('PEXPIRE', key, math.ceil(window_us / 1000))
local last_write = tonumber(redis.call('GET', KEYS[3]) or '0')
return {redis.call('ZCARD', key), last_write}
"#;

/// Raises a caller's last-write position (never lowers it) and renews its
/// expiry.
const RECORD_WRITE: &str = r#"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local position = tonumber(ARGV[1])
if position > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"#;

/// How long a caller's last write is remembered. Read models catch up in
/// milliseconds; this only bounds the keys kept for idle callers.
pub const LAST_WRITE_TTL_SECS: u64 = 300;

/// Why the limiter could not decide.
#[derive(Debug, thiserror::Error)]
#[error("rate limiter (Redis): {0}")]
pub struct RateLimitError(#[from] fred::error::Error);

impl From<RateLimitError> for Problem {
    fn from(err: RateLimitError) -> Problem {
        Problem::new(ProblemKind::ServiceUnavailable).msg(err.to_string())
    }
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// The keypair's limit per window.
    pub limit: u64,
    /// Requests left in the current window (0 when refused).
    pub remaining: u64,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Whether the request may proceed (it is within the limit, counting itself).
    pub allowed: bool,
    /// The log position of the caller's last write, read in the same round
    /// trip (see [`RateLimiter::record_write`]).
    pub last_write: Option<u64>,
}

impl RateDecision {
    /// The headers every authenticated response carries.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("X-RateLimit-Limit", self.limit.to_string()),
            ("X-RateLimit-Remaining", self.remaining.to_string()),
            ("X-RateLimit-Window", self.window_secs.to_string()),
        ]
    }

    /// The 429 for a refused request.
    pub fn problem(&self) -> Problem {
        Problem::new(ProblemKind::RateLimitExceeded)
    }
}

/// Counts requests per access key in Redis.
#[derive(Clone)]
pub struct RateLimiter {
    client: Client,
    script: Script,
    record: Script,
    window: Duration,
    prefix: String,
}

impl RateLimiter {
    /// Connects to Redis at `url` (e.g. `redis://127.0.0.1:8111`). The client
    /// reconnects forever with backoff (100 ms to 5 s) after Redis restarts,
    /// and each command gives up after 2 s, so an outage answers 503 quickly
    /// instead of hanging requests.
    pub async fn connect(url: &str) -> Result<Self, RateLimitError> {
        let performance = PerformanceConfig {
            default_command_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let reconnect = ReconnectPolicy::new_exponential(0, 100, 5_000, 2);
        let client = Client::new(
            Config::from_url(url)?,
            Some(performance),
            None,
            Some(reconnect),
        );
        client.init().await?;
        Ok(Self::new(client))
    }

    /// A limiter over an existing client, with the reference's 900 s window.
    pub fn new(client: Client) -> Self {
        RateLimiter {
            client,
            script: Script::from_lua(SCRIPT),
            record: Script::from_lua(RECORD_WRITE),
            window: DEFAULT_WINDOW,
            prefix: "ratelimit".into(),
        }
    }

    /// Changes the window (tests, or a deliberately different policy).
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(1));
        self
    }

    /// Changes the key prefix (keeps tests, or several clusters sharing one
    /// Redis, apart).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Counts one request of `access_key` and says whether it is within
    /// `limit` requests per window. A limit of 0 means unlimited (not counted).
    pub async fn check(
        &self,
        access_key: &str,
        limit: u64,
    ) -> Result<RateDecision, RateLimitError> {
        let window_secs = self.window.as_secs().max(1);
        if limit == 0 {
            use fred::interfaces::KeysInterface;
            let last: Option<u64> = self.client.get(self.last_write_key(access_key)).await?;
            return Ok(RateDecision {
                limit: u64::MAX,
                remaining: u64::MAX,
                window_secs,
                allowed: true,
                last_write: last.filter(|p| *p > 0),
            });
        }
        let keys = vec![
            format!("{}:{access_key}", self.prefix),
            format!("{}:__seq", self.prefix),
            self.last_write_key(access_key),
        ];
        let window_us = i64::try_from(self.window.as_micros()).unwrap_or(i64::MAX);
        let (count, last_write): (i64, i64) = self
            .script
            .evalsha_with_reload(&self.client, keys, vec![window_us])
            .await?;
        let count = u64::try_from(count).unwrap_or(u64::MAX);
        Ok(RateDecision {
            limit,
            remaining: limit.saturating_sub(count),
            window_secs,
            allowed: count <= limit,
            last_write: u64::try_from(last_write).ok().filter(|p| *p > 0),
        })
    }

    fn last_write_key(&self, access_key: &str) -> String {
        format!("{}:lastwrite:{access_key}", self.prefix)
    }

    /// Records that `access_key` wrote up to log `position`, so that its
    /// next reads — on any manager — wait for the read models to show it.
    pub async fn record_write(
        &self,
        access_key: &str,
        position: u64,
    ) -> Result<(), RateLimitError> {
        let _: i64 = self
            .record
            .evalsha_with_reload(
                &self.client,
                vec![self.last_write_key(access_key)],
                vec![position.to_string(), LAST_WRITE_TTL_SECS.to_string()],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_verdicts() {
        let d = RateDecision {
            limit: 10,
            remaining: 3,
            window_secs: 900,
            allowed: true,
            last_write: None,
        };
        assert_eq!(d.headers()[1], ("X-RateLimit-Remaining", "3".to_owned()));
        assert_eq!(d.problem().status(), 429);
    }
}
