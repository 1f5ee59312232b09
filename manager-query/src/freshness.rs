//! Read-your-writes: a query waits (bounded) until the read models show the
//! caller's last write.
//!
//! A command's response carries the log position of its last event, and the
//! write side remembers it per access key (in Redis, so that it holds across
//! manager processes); the authentication middleware hands it to the request
//! as [`LastWrite`]. Before answering, a read waits until every projector's
//! checkpoint has reached that position — or, after the timeout (2 s by
//! default), answers anyway with the header [`STALE_HEADER`] so the client
//! knows it may be looking at an older state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use manager_events::PgPool;
pub use manager_events::auth::LastWrite;

/// Set on a response that was answered before the read models caught up with
/// the caller's last write.
pub const STALE_HEADER: &str = "X-BackendAI-Stale-Read";

/// The default bound on the wait.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// How far the read models are known to have got, and waiting for more.
pub struct Freshness {
    pool: PgPool,
    seen: AtomicU64,
    timeout: Duration,
    /// One progress query at a time: concurrent waiters share its answer.
    polling: tokio::sync::Mutex<()>,
    /// The progress of the projection runner of this process, if it runs one.
    local: Option<tokio::sync::watch::Receiver<u64>>,
}

/// How often the database is asked while a local runner reports progress
/// (only for the case where another process applies the batches).
const POLL_WITH_LOCAL_RUNNER: Duration = Duration::from_millis(50);

#[derive(QueryableByName)]
struct Low {
    #[diesel(sql_type = BigInt)]
    position: i64,
    #[diesel(sql_type = BigInt)]
    head: i64,
}

/// Where the read models and the log are.
#[derive(Debug, Clone, Copy)]
struct Progress {
    projected: u64,
    head: u64,
}

impl Freshness {
    /// Waits at most `timeout` per read.
    pub fn new(pool: PgPool, timeout: Duration) -> Self {
        Freshness {
            pool,
            seen: AtomicU64::new(0),
            timeout,
            polling: tokio::sync::Mutex::new(()),
            local: None,
        }
    }

    /// Also follows a projection runner of this process (its lowest
    /// checkpoint), which wakes waiters as soon as a round has applied their
    /// write; the database is then asked only now and then.
    pub fn with_local_progress(mut self, progress: tokio::sync::watch::Receiver<u64>) -> Self {
        self.local = Some(progress);
        self
    }

    /// The position every projector has applied (the lowest checkpoint),
    /// and the log's head.
    async fn progress(&self) -> Option<Progress> {
        use diesel_async::RunQueryDsl;
        let mut conn = self.pool.get().await.ok()?;
        let row: Low = manager_events::prepared(
            "SELECT coalesce((SELECT min(position) FROM projection_checkpoints), 0) AS position, \
             (SELECT position FROM event_log_head) AS head",
        )
        .get_result(&mut conn)
        .await
        .ok()?;
        let projected = u64::try_from(row.position).unwrap_or(0);
        self.seen.fetch_max(projected, Ordering::AcqRel);
        Some(Progress {
            projected,
            head: u64::try_from(row.head).unwrap_or(0),
        })
    }

    /// Waits until the read models include `position`; false when the
    /// timeout passed first. A position beyond the log's head cannot be
    /// waited for (a record left from another database, say after a restore)
    /// and is ignored.
    pub async fn wait_for(&self, position: u64) -> bool {
        if self.seen.load(Ordering::Acquire) >= position {
            return true;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut local = self.local.clone();
        let mut pause = Duration::from_millis(1);
        // With a local runner, its progress usually answers first; the
        // database is the fallback for batches applied by other processes.
        let mut next_poll = tokio::time::Instant::now()
            + if local.is_some() {
                POLL_WITH_LOCAL_RUNNER
            } else {
                Duration::ZERO
            };
        loop {
            if let Some(rx) = &local {
                let p = *rx.borrow();
                if p >= position {
                    self.seen.fetch_max(p, Ordering::AcqRel);
                    return true;
                }
            }
            let now = tokio::time::Instant::now();
            if now >= next_poll {
                let _one_at_a_time = self.polling.lock().await;
                // Another waiter may have learnt enough while this one queued.
                if self.seen.load(Ordering::Acquire) >= position {
                    return true;
                }
                if let Some(p) = self.progress().await
                    && (p.projected >= position || position > p.head)
                {
                    return true;
                }
                next_poll = tokio::time::Instant::now()
                    + if local.is_some() {
                        POLL_WITH_LOCAL_RUNNER
                    } else {
                        pause
                    };
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                metrics::counter!("read_your_writes_timeouts_total").increment(1);
                return false;
            }
            let wake = next_poll.min(deadline);
            match &mut local {
                Some(rx) => {
                    if let Ok(Err(_)) = tokio::time::timeout_at(wake, rx.changed()).await {
                        // The runner is gone: poll only.
                        local = None;
                    }
                }
                None => tokio::time::sleep_until(wake).await,
            }
        }
    }
}

impl manager_events::port::ReadModelProgress for Freshness {
    fn catch_up(&self) -> manager_events::port::PortFuture<'_, bool> {
        Box::pin(async move {
            match self.progress().await {
                Some(p) => p.projected >= p.head || self.wait_for(p.head).await,
                None => false,
            }
        })
    }
}

/// The middleware: GET requests of a caller with a recorded last write wait
/// for it. (The GraphQL endpoints wait themselves, once they know whether an
/// operation reads: a mutation is decided on the log, not the read models.)
/// Wrap it inside the authentication middleware and give it
/// `web::Data<Freshness>`.
pub async fn read_your_writes(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let last = req.extensions().get::<LastWrite>().copied();
    let is_read = req.method() == Method::GET;
    let mut stale = false;
    if let (Some(LastWrite(position)), true) = (last, is_read)
        && let Some(freshness) = req.app_data::<web::Data<Freshness>>()
    {
        stale = !freshness.wait_for(position).await;
    }
    let mut res = next.call(req).await?;
    if stale {
        res.headers_mut().insert(
            HeaderName::from_static("x-backendai-stale-read"),
            HeaderValue::from_static("true"),
        );
    }
    Ok(res)
}
