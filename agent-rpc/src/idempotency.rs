//! Running a keyed call at most once: [`IdempotencyCache`].
//!
//! The manager's side effects are at-least-once: a call whose answer was lost
//! is sent again with the same idempotency key (the id of the event that
//! caused it). The agent must then not do the work twice. The cache remembers
//! each key's finished answer for a while (bounded in count and age), and
//! while a key's work is running, a second call with that key waits for the
//! first one's answer instead of starting its own.
//!
//! The cache lives in one process: it guards against retries and duplicate
//! deliveries, not against an agent restart (after which the agent's own
//! state — does the kernel exist? — must answer).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Remembers the answers of keyed calls, and joins concurrent calls with the
/// same key. Cheap to clone (the clones share the cache).
pub struct IdempotencyCache<V> {
    inner: Arc<Mutex<State<V>>>,
    capacity: usize,
    ttl: Duration,
    retain: fn(&V) -> bool,
}

impl<V> Clone for IdempotencyCache<V> {
    fn clone(&self) -> Self {
        IdempotencyCache {
            inner: Arc::clone(&self.inner),
            capacity: self.capacity,
            ttl: self.ttl,
            retain: self.retain,
        }
    }
}

impl<V> std::fmt::Debug for IdempotencyCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

struct State<V> {
    done: HashMap<String, (Instant, V)>,
    /// Keys in the order they finished, to forget the oldest first.
    order: VecDeque<(Instant, String)>,
    in_flight: HashMap<String, watch::Receiver<Option<V>>>,
}

/// How [`IdempotencyCache::run`] got its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This call ran the work.
    Ran,
    /// A finished answer was remembered.
    Cached,
    /// Another call with the same key was running; this one waited for it.
    Joined,
}

enum Step<V> {
    Done(V),
    Wait(watch::Receiver<Option<V>>),
    Run(watch::Sender<Option<V>>, watch::Receiver<Option<V>>),
}

impl<V: Clone + Send + Sync + 'static> IdempotencyCache<V> {
    /// A cache of at most `capacity` finished answers, each kept for `ttl`.
    /// Every answer is remembered; see [`with_policy`](Self::with_policy).
    pub fn new(capacity: usize, ttl: Duration) -> IdempotencyCache<V> {
        IdempotencyCache::with_policy(capacity, ttl, |_| true)
    }

    /// Like [`new`](Self::new), but only answers for which `retain` is true
    /// are remembered (e.g. not transient errors, so a retry runs again).
    /// Calls joined to a running call get its answer either way.
    pub fn with_policy(
        capacity: usize,
        ttl: Duration,
        retain: fn(&V) -> bool,
    ) -> IdempotencyCache<V> {
        IdempotencyCache {
            inner: Arc::new(Mutex::new(State {
                done: HashMap::new(),
                order: VecDeque::new(),
                in_flight: HashMap::new(),
            })),
            capacity: capacity.max(1),
            ttl,
            retain,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<V>> {
        // A panic while holding the lock leaves the maps consistent (every
        // critical section is a few map operations), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn purge(&self, st: &mut State<V>, now: Instant) {
        while let Some((t, key)) = st.order.front() {
            let expired = *t + self.ttl <= now;
            if !expired && st.done.len() <= self.capacity {
                break;
            }
            let (t, key) = (*t, key.clone());
            st.order.pop_front();
            if st.done.get(&key).is_some_and(|(at, _)| *at == t) {
                st.done.remove(&key);
            }
        }
    }

    /// The remembered answer for `key`, if any.
    pub fn get(&self, key: &str) -> Option<V> {
        let mut st = self.lock();
        self.purge(&mut st, Instant::now());
        st.done.get(key).map(|(_, v)| v.clone())
    }

    /// How many finished answers are remembered.
    pub fn len(&self) -> usize {
        let mut st = self.lock();
        self.purge(&mut st, Instant::now());
        st.done.len()
    }

    /// Whether no answer is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `work` for `key` unless its answer is remembered or another call
    /// with `key` is running (then waits for that one's answer).
    ///
    /// If the call running the work is dropped before it finishes, a waiting
    /// call takes over and runs its own `work`.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> (V, Outcome)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let (tx, rx) = loop {
            let step = {
                let mut st = self.lock();
                self.purge(&mut st, Instant::now());
                if let Some((_, v)) = st.done.get(key) {
                    Step::Done(v.clone())
                } else if let Some(rx) = st.in_flight.get(key) {
                    Step::Wait(rx.clone())
                } else {
                    let (tx, rx) = watch::channel(None);
                    st.in_flight.insert(key.to_owned(), rx.clone());
                    Step::Run(tx, rx)
                }
            };
            match step {
                Step::Done(v) => return (v, Outcome::Cached),
                Step::Wait(mut rx) => loop {
                    if let Some(v) = rx.borrow_and_update().clone() {
                        return (v, Outcome::Joined);
                    }
                    if rx.changed().await.is_err() {
                        // The runner was dropped without an answer (or
                        // answered and left): look again.
                        if let Some(v) = rx.borrow().clone() {
                            return (v, Outcome::Joined);
                        }
                        break;
                    }
                },
                Step::Run(tx, rx) => break (tx, rx),
            }
        };

        let mut guard = InFlight {
            cache: self,
            key,
            rx,
            armed: true,
        };
        let value = work().await;
        {
            let mut st = self.lock();
            st.in_flight.remove(key);
            if (self.retain)(&value) {
                let now = Instant::now();
                st.done.insert(key.to_owned(), (now, value.clone()));
                st.order.push_back((now, key.to_owned()));
                self.purge(&mut st, now);
            }
        }
        guard.armed = false;
        drop(guard);
        tx.send_replace(Some(value.clone()));
        (value, Outcome::Ran)
    }
}

/// Removes a key's in-flight entry if its runner is dropped mid-way, so a
/// waiter can take over.
struct InFlight<'a, V> {
    cache: &'a IdempotencyCache<V>,
    key: &'a str,
    rx: watch::Receiver<Option<V>>,
    armed: bool,
}

impl<V> Drop for InFlight<'_, V> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.cache.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st
            .in_flight
            .get(self.key)
            .is_some_and(|rx| rx.same_channel(&self.rx))
        {
            st.in_flight.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_key_runs_once_then_answers_from_memory() {
        let cache = IdempotencyCache::<u32>::new(10, Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        let work = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            7
        };
        assert_eq!(cache.run("k", work).await, (7, Outcome::Ran));
        assert_eq!(cache.run("k", work).await, (7, Outcome::Cached));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(cache.run("other", work).await, (7, Outcome::Ran));
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_calls_with_one_key_run_once() {
        let cache = IdempotencyCache::<u32>::new(10, Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let cache = cache.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .run("k", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        5
                    })
                    .await
            }));
        }
        let mut ran = 0;
        for t in tasks {
            let (v, o) = t.await.unwrap();
            assert_eq!(v, 5);
            if o == Outcome::Ran {
                ran += 1;
            }
        }
        assert_eq!(ran, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_dropped_runner_hands_over_to_a_waiter() {
        let cache = IdempotencyCache::<u32>::new(10, Duration::from_secs(60));
        let c1 = cache.clone();
        let first = tokio::spawn(async move {
            c1.run("k", || async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                1
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let c2 = cache.clone();
        let second = tokio::spawn(async move { c2.run("k", || async { 2 }).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        let (v, o) = second.await.unwrap();
        assert_eq!((v, o), (2, Outcome::Ran));
        assert_eq!(cache.get("k"), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_and_capacity_is_bounded() {
        let cache = IdempotencyCache::<u32>::new(3, Duration::from_secs(10));
        for i in 0..5u32 {
            cache.run(&format!("k{i}"), || async move { i }).await;
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("k0"), None);
        assert_eq!(cache.get("k4"), Some(4));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(cache.is_empty());
        assert_eq!(cache.run("k4", || async { 40 }).await, (40, Outcome::Ran));
    }

    #[tokio::test]
    async fn the_policy_decides_what_is_remembered() {
        let cache =
            IdempotencyCache::<Result<u32, u32>>::with_policy(10, Duration::from_secs(60), |v| {
                v.is_ok()
            });
        assert_eq!(cache.run("k", || async { Err(1) }).await.1, Outcome::Ran);
        assert_eq!(
            cache.run("k", || async { Ok(2) }).await,
            (Ok(2), Outcome::Ran)
        );
        assert_eq!(
            cache.run("k", || async { Ok(3) }).await,
            (Ok(2), Outcome::Cached)
        );
    }
}
