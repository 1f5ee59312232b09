//! Agent RPC clients, one per alive agent, at the address the log says it
//! listens at now.
//!
//! A client is made lazily, on the first call to an agent, from the
//! agent's current address in the [`Directory`]; it is replaced when the
//! address (or the agent process) changes and dropped when the agent is no
//! longer alive. Every lookup checks the directory first, so a stale
//! address is never called: a call to an agent that is lost, stopped or
//! gone fails at once with [`ClientsError::NotAlive`] instead of waiting on
//! a dead endpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use agent_rpc::{Client, ClientConfig, RpcError};
use manager_events::agent::AgentStatus;
use tokio::sync::watch;
use uuid::Uuid;

use crate::agent::directory::Directory;

/// Why no client could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The log knows no such agent.
    #[error("no agent {0}")]
    Unknown(String),
    /// The agent is not alive: nothing may be sent to it.
    #[error("agent {id} is {status}")]
    NotAlive {
        /// The agent.
        id: String,
        /// Its status (`LOST`, `TERMINATED`, `DECOMMISSIONED`).
        status: &'static str,
    },
    /// The client could not be set up (no Tokio runtime, a malformed
    /// address).
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

struct Entry {
    addr: String,
    instance: Option<Uuid>,
    client: Client,
}

/// Agent id → RPC client. Cheap to clone.
#[derive(Clone)]
pub struct AgentClients {
    directory: Directory,
    config: ClientConfig,
    clients: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for AgentClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClients")
            .field("clients", &self.len())
            .finish_non_exhaustive()
    }
}

impl AgentClients {
    /// A registry over `directory`, making clients with `config` (its
    /// cluster key must be the agents' RPC key).
    pub fn new(directory: Directory, config: ClientConfig) -> Self {
        AgentClients {
            directory,
            config,
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The client of an alive agent, at its current address. Must be called
    /// inside a Tokio runtime.
    pub fn get(&self, id: &str) -> Result<Client, ClientsError> {
        let Some(agent) = self.directory.get(id) else {
            self.forget(id);
            return Err(ClientsError::Unknown(id.to_owned()));
        };
        match agent.status {
            Some(AgentStatus::Alive) => {}
            Some(status) => {
                self.forget(id);
                return Err(ClientsError::NotAlive {
                    id: id.to_owned(),
                    status: status.as_str(),
                });
            }
            None => return Err(ClientsError::Unknown(id.to_owned())),
        }
        let addr = agent.description.addr;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = clients.get(id)
            && entry.addr == addr
            && entry.instance == agent.instance
        {
            return Ok(entry.client.clone());
        }
        let client = Client::connect(&addr, self.config.clone())?;
        tracing::debug!(agent = id, addr = %addr, "agent RPC client (re)made");
        clients.insert(
            id.to_owned(),
            Entry {
                addr,
                instance: agent.instance,
                client: client.clone(),
            },
        );
        Ok(client)
    }

    /// How many clients are held.
    pub fn len(&self) -> usize {
        self.clients.lock().map_or(0, |c| c.len())
    }

    /// Whether no client is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address the held client of `id` talks to, if one is held.
    pub fn held_addr(&self, id: &str) -> Option<String> {
        self.clients.lock().ok()?.get(id).map(|e| e.addr.clone())
    }

    fn forget(&self, id: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(id);
        }
    }

    /// Drops the clients of agents that are no longer alive or moved (the
    /// sockets close), so none lingers on a stale address.
    pub fn prune(&self) {
        let Ok(mut clients) = self.clients.lock() else {
            return;
        };
        clients.retain(|id, entry| {
            self.directory.get(id).is_some_and(|a| {
                a.is_alive() && a.description.addr == entry.addr && a.instance == entry.instance
            })
        });
    }

    /// Prunes whenever the directory changes, until `stop` turns true.
    pub async fn prune_on_changes(self, mut stop: watch::Receiver<bool>) {
        let mut changes = self.directory.changes();
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.prune();
                }
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
