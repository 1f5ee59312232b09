//! When a session was last used, for idle timeouts: a Redis key per
//! session, `<prefix>:session:<id>:last_access` (unix ms, expiring after a
//! day), set by every code execution through any manager. Not in the log:
//! it changes on every execution and means nothing once read.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::clients::Client;
use fred::interfaces::KeysInterface;
use fred::types::Expiration;
use uuid::Uuid;

/// How long a last-access key lives without being touched again.
const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Keys read by one `MGET`.
const MGET_CHUNK: usize = 500;

/// Reads and writes last-access times. Cheap to clone.
#[derive(Clone)]
pub struct Activity {
    redis: Client,
    prefix: String,
}

impl std::fmt::Debug for Activity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activity")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Activity {
    /// Over `redis`, with the cluster's key prefix.
    pub fn new(redis: Client, prefix: impl Into<String>) -> Self {
        Activity {
            redis,
            prefix: prefix.into(),
        }
    }

    fn key(&self, session: Uuid) -> String {
        format!("{}:session:{session}:last_access", self.prefix)
    }

    /// Records that the session was used now. A failure only delays an
    /// idle timeout's clock less: it is logged, not returned.
    pub async fn touch(&self, session: Uuid) {
        let ttl = i64::try_from(KEY_TTL.as_millis()).unwrap_or(i64::MAX);
        let result: Result<(), fred::error::Error> = self
            .redis
            .set(
                self.key(session),
                now_ms(),
                Some(Expiration::PX(ttl)),
                None,
                false,
            )
            .await;
        if let Err(e) = result {
            tracing::warn!(%session, error = %e, "could not record a session's last access");
        }
    }

    /// The last access (unix ms) of each session that has one.
    pub async fn last_access(
        &self,
        sessions: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>, fred::error::Error> {
        let reads = sessions.chunks(MGET_CHUNK).map(|chunk| {
            let keys: Vec<String> = chunk.iter().map(|s| self.key(*s)).collect();
            self.redis.mget::<Vec<Option<i64>>, _>(keys)
        });
        let values = futures::future::try_join_all(reads).await?;
        Ok(sessions
            .iter()
            .zip(values.into_iter().flatten())
            .filter_map(|(s, v)| v.map(|v| (*s, v)))
            .collect())
    }
}
