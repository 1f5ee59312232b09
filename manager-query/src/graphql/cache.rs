//! GraphQL query responses kept while the read models cannot change.
//!
//! The read models are a function of the log: when every projector has
//! applied the log up to its head `H`, and the head is still `H`, no table a
//! query reads can have changed. A query's response is therefore kept under
//! the version `H` it was computed at and served again — to the same access
//! key, for the same request body — for as long as the log's head is `H` and
//! every projector is there. Any append (from any manager) moves the head
//! and retires every kept response at once.
//!
//! Checking the version is one small query per request, so a hit costs no
//! planner work, no read-model scan and no GraphQL execution. Mutations,
//! responses with errors and responses over [`MAX_RESPONSE_BYTES`] are never
//! kept. Under a steady stream of writes the projections are seldom all at
//! the head, and the cache simply stays empty.
//!
//! This holds only while every query field is read from the read models.
//! A field computed from anything else — Redis (live usage counters), the
//! clock, an agent — must keep its responses out of the cache (or fold that
//! source's version into [`Version`]).

use std::collections::HashMap;
use std::sync::Mutex;

use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Text};
use manager_events::PgPool;
use manager_events::auth::AuthContext;

/// The largest response kept.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Bytes of responses kept at most; past this the cache starts over.
const MAX_TOTAL_BYTES: usize = 64 * 1024 * 1024;

/// Where the read models stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(i64);

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    head: i64,
    #[diesel(sql_type = BigInt)]
    low: i64,
    #[diesel(sql_type = BigInt)]
    projectors: i64,
}

/// What identifies a response: the endpoint, the caller as authenticated
/// (access key, role, domain: a caller whose role changed is another
/// caller, even while the authenticator still reuses its old lookup), the
/// request body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    legacy: bool,
    actor: AuthContext,
    body: Vec<u8>,
}

impl Key {
    /// The key of `body` sent by `actor` to one of the endpoints.
    pub fn new(legacy: bool, actor: &AuthContext, body: &[u8]) -> Self {
        Key {
            legacy,
            actor: actor.clone(),
            body: body.to_vec(),
        }
    }
}

struct Kept {
    version: Option<Version>,
    bytes: usize,
    responses: HashMap<Key, actix_web::web::Bytes>,
}

/// The cache (see the module docs). Disabled with no projector names.
pub struct ResponseCache {
    projectors: Vec<&'static str>,
    max_entries: usize,
    kept: Mutex<Kept>,
}

impl ResponseCache {
    /// A cache of at most `max_entries` responses (0 disables it), valid
    /// while every one of `projectors` has reached the log's head.
    pub fn new(projectors: Vec<&'static str>, max_entries: usize) -> Self {
        metrics::describe_gauge!(
            "graphql_cached_responses",
            "GraphQL query responses kept while the read models stand still."
        );
        metrics::gauge!("graphql_cached_responses").set(0.0);
        ResponseCache {
            projectors,
            max_entries,
            kept: Mutex::new(Kept {
                version: None,
                bytes: 0,
                responses: HashMap::new(),
            }),
        }
    }

    /// A cache that keeps nothing.
    pub fn disabled() -> Self {
        ResponseCache::new(Vec::new(), 0)
    }

    /// Whether it keeps anything.
    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && !self.projectors.is_empty()
    }

    /// The read models' version, when every projector is at the log's head
    /// (otherwise, or when the database cannot say, `None`: keep nothing).
    pub async fn version(&self, pool: &PgPool) -> Option<Version> {
        use diesel_async::RunQueryDsl;
        if !self.enabled() {
            return None;
        }
        let mut conn = pool.get().await.ok()?;
        let row: Row = manager_events::prepared(
            "SELECT h.position AS head, coalesce(min(c.position), -1) AS low, count(c.name) AS projectors \
             FROM event_log_head h LEFT JOIN projection_checkpoints c ON c.name = ANY($1) \
             GROUP BY h.position",
        )
        .bind::<Array<Text>, _>(&self.projectors)
        .get_result(&mut conn)
        .await
        .ok()?;
        let all = usize::try_from(row.projectors).ok()? == self.projectors.len();
        (all && row.low == row.head).then_some(Version(row.head))
    }

    /// The response kept for `key` at `version`.
    pub fn get(&self, version: Version, key: &Key) -> Option<actix_web::web::Bytes> {
        let kept = self.kept.lock().ok()?;
        if kept.version != Some(version) {
            return None;
        }
        kept.responses.get(key).cloned()
    }

    /// Keeps `body` for `key`, computed at `version`.
    pub fn put(&self, version: Version, key: Key, body: actix_web::web::Bytes) {
        if body.len() > MAX_RESPONSE_BYTES {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let full =
            kept.responses.len() >= self.max_entries || kept.bytes + body.len() > MAX_TOTAL_BYTES;
        if kept.version != Some(version) || full {
            if kept.version.is_some_and(|v| v.0 > version.0) {
                // Computed before the last retirement: already stale.
                return;
            }
            kept.responses.clear();
            kept.bytes = 0;
            kept.version = Some(version);
        }
        kept.bytes += key.body.len() + body.len();
        kept.responses.insert(key, body);
        metrics::gauge!("graphql_cached_responses").set(kept.responses.len() as f64);
    }
}
