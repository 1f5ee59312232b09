//! The agents as the log tells them: every agent's state, folded from the
//! `agent` streams by a subscription (catch-up from the start, then live).
//!
//! The sweeper uses it to know which heartbeat keys to look at and what each
//! agent's status is; the RPC client registry uses it to know where each
//! agent listens. It is built from the log, not from the read models, so the
//! write side depends on nothing of the read side. It may lag the log by a
//! moment: whoever acts on it sends commands that the aggregate judges on
//! its real state, so a stale view costs at most a command that appends
//! nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use manager_events::agent::{AgentEvent, STREAM_TYPE};
use manager_events::codec::decode;
use manager_events::{EventStore, RecordedEvent};
use tokio::sync::watch;

use crate::agent::aggregate::Agent;
use crate::aggregate::Aggregate;

/// Every known agent's state, kept up to date from the log. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    agents: Arc<RwLock<HashMap<String, Agent>>>,
    position: Arc<watch::Sender<u64>>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new()
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("agents", &self.len())
            .field("position", &self.position())
            .finish()
    }
}

impl Directory {
    /// An empty directory at position 0.
    pub fn new() -> Self {
        Directory {
            agents: Arc::new(RwLock::new(HashMap::new())),
            position: Arc::new(watch::channel(0).0),
        }
    }

    /// One agent's state.
    pub fn get(&self, id: &str) -> Option<Agent> {
        self.agents.read().ok()?.get(id).cloned()
    }

    /// Every agent: id and state.
    pub fn all(&self) -> Vec<(String, Agent)> {
        self.agents
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// How many agents it knows.
    pub fn len(&self) -> usize {
        self.agents.read().map_or(0, |m| m.len())
    }

    /// Whether it knows no agent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The log position it has applied up to.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    /// A receiver that changes whenever the directory applies events.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// Waits until the directory has applied the log up to `position`, at
    /// most `timeout`. Returns whether it has.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.changes();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Applies one event of the log (events of other streams only move the
    /// position). An agent event that does not decode is logged and skipped:
    /// the aggregate, which decides, reads the log itself.
    pub fn observe(&self, recorded: &RecordedEvent) {
        if recorded.stream_type == STREAM_TYPE
            && let Some(id) = recorded.stream_id.strip_prefix("agent:")
        {
            match decode::<AgentEvent>(&recorded.event_type, &recorded.payload) {
                Ok(event) => {
                    if let Ok(mut agents) = self.agents.write() {
                        agents.entry(id.to_owned()).or_default().apply(&event);
                    }
                }
                Err(e) => tracing::warn!(
                    position = recorded.position,
                    stream_id = %recorded.stream_id,
                    error = %e,
                    "agent event not understood; skipped"
                ),
            }
        }
        self.position.send_if_modified(|p| {
            let newer = recorded.position > *p;
            if newer {
                *p = recorded.position;
            }
            newer
        });
    }

    /// Follows the log from the start until `stop` turns true (or its sender
    /// is dropped). Read failures are retried by the subscription.
    pub async fn follow(self, store: EventStore, mut stop: watch::Receiver<bool>) {
        let mut events = store.subscribe(self.position());
        loop {
            tokio::select! {
                next = events.next() => match next {
                    Some(Ok(recorded)) => self.observe(&recorded),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "agent directory: reading the log failed; retrying");
                    }
                    None => return,
                },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
