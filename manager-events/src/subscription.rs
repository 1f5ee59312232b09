//! Subscriptions: every event, in global order, from a checkpoint on.
//!
//! A subscription reads the log by position. Because positions are dense and
//! assigned in commit order (see [`crate::writer`]), "everything after the last
//! position I saw" is exact: nothing can commit later with a lower position, so
//! a subscriber never skips an event, and never sees one twice.
//!
//! Subscribers are *woken* by PostgreSQL LISTEN/NOTIFY — one dedicated
//! connection per store, one NOTIFY per append transaction, carrying the new
//! head position — and by appends made through the same store. The
//! notification is only a hint: when it is lost (connection drop, listener
//! restarting) subscribers still poll every `poll_interval_ms`.

use std::collections::VecDeque;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{Stream, StreamExt};
use tokio::sync::watch;

use crate::error::Result;
use crate::event::RecordedEvent;
use crate::store::EventStore;

/// The notification channel appends signal on.
pub const CHANNEL: &str = "event_log";

impl EventStore {
    /// Every event with a position greater than `after_position`, in global
    /// order, forever: the stream waits for new events when it reaches the head.
    ///
    /// Resume after a restart by passing the last position you processed. An
    /// `Err` item is a failed read (say, the database restarting); the stream
    /// stays usable and retries after the poll interval. Must be called inside a
    /// tokio runtime.
    pub fn subscribe(
        &self,
        after_position: u64,
    ) -> impl Stream<Item = Result<RecordedEvent>> + Send + Unpin + 'static {
        let state = Cursor {
            store: self.clone(),
            position: after_position,
            buffer: VecDeque::new(),
            head: self.head_receiver(),
            failed: false,
        };
        futures::stream::unfold(state, Cursor::next).boxed()
    }
}

impl EventStore {
    /// Waits until an event after `position` is known to be committed (woken
    /// like subscriptions are), or until `timeout`. Returns at once when one
    /// already is. For loops that read the log themselves, such as projectors.
    pub async fn wait_for_events_after(&self, position: u64, timeout: Duration) {
        let mut head = self.head_receiver();
        if *head.borrow_and_update() > position {
            return;
        }
        let _ = tokio::time::timeout(timeout, async {
            while head.changed().await.is_ok() {
                if *head.borrow_and_update() > position {
                    break;
                }
            }
        })
        .await;
    }
}

struct Cursor {
    store: EventStore,
    position: u64,
    buffer: VecDeque<RecordedEvent>,
    head: watch::Receiver<u64>,
    failed: bool,
}

impl Cursor {
    async fn next(mut self) -> Option<(Result<RecordedEvent>, Cursor)> {
        let poll = self.store.config().poll_interval();
        let batch = self.store.config().subscription_batch.max(1);
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.position = event.position;
                return Some((Ok(event), self));
            }
            if self.failed {
                self.failed = false;
                tokio::time::sleep(poll).await;
            }
            // Mark the current head as seen *before* reading, so that a wake-up
            // arriving while we read is not lost.
            let known_head = *self.head.borrow_and_update();
            match self.store.read_all(self.position, batch).await {
                Err(err) => {
                    self.failed = true;
                    return Some((Err(err), self));
                }
                Ok(events) if !events.is_empty() => self.buffer.extend(events),
                Ok(_) if known_head > self.position => {
                    // A wake-up for a commit our read did not see yet: look again soon.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(_) => {
                    let _ = tokio::time::timeout(poll, self.head.changed()).await;
                }
            }
        }
    }
}

/// Keeps one connection LISTENing and publishes each notified head position.
/// Reconnects with backoff when the connection fails.
pub(crate) async fn listen(database_url: String, head: watch::Sender<u64>, poll: Duration) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&database_url, &head, poll).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(err) => {
                tracing::warn!(error = %err, "event log listener failed; subscribers fall back to polling until it reconnects");
                metrics::counter!("eventstore_listener_failures_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn listen_once(
    database_url: &str,
    head: &watch::Sender<u64>,
    poll: Duration,
) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = AsyncPgConnection::establish(database_url).await?;
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .await?;
    // The stream hands over every notification the connection received, even
    // those that arrived while it was not being polled.
    let idle = poll.max(Duration::from_secs(5));
    loop {
        let next = {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            tokio::time::timeout(idle, notifications.next()).await
        };
        match next {
            Ok(Some(Ok(note))) => {
                if let Ok(position) = note.payload.parse::<u64>() {
                    head.send_if_modified(|known| {
                        let newer = position > *known;
                        if newer {
                            *known = position;
                        }
                        newer
                    });
                }
            }
            Ok(Some(Err(err))) => return Err(err.into()),
            Ok(None) => return Err("notification stream ended".into()),
            Err(_) => {
                // Quiet for a while: make sure the connection is still alive.
                diesel::sql_query("SELECT 1").execute(&mut conn).await?;
            }
        }
    }
}
