//! Agents (compute nodes): what the cluster knows of each and whether it is
//! alive. The events of an agent's stream (`agent:<id>`).
//!
//! Agents describe themselves (heartbeat keys and notices in Redis, see
//! `agent_rpc::notice`); the manager turns what changed into these events.
//! A heartbeat that changes nothing appends nothing. Liveness: an agent whose
//! heartbeat key expired is [`AgentEvent::AgentLost`]; one that says goodbye
//! is [`AgentEvent::AgentStopped`]; either comes back as
//! [`AgentEvent::AgentRejoined`] — possibly from a new address, which then
//! replaces the old one (the stale address is never called again).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream type of agents.
pub const STREAM_TYPE: &str = "agent";

/// The stream id of an agent.
pub fn stream_id(id: &str) -> String {
    format!("agent:{id}")
}

/// An agent's status, as the reference names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AgentStatus {
    /// Heartbeating; its kernels can be scheduled.
    Alive,
    /// Its heartbeat expired. Its kernels are left as they are (they may
    /// still run); nothing new is scheduled on it.
    Lost,
    /// It said goodbye (graceful shutdown).
    Terminated,
    /// An operator removed it from the cluster.
    Decommissioned,
}

impl AgentStatus {
    /// The name the API shows (`ALIVE`, `LOST`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Alive => "ALIVE",
            AgentStatus::Lost => "LOST",
            AgentStatus::Terminated => "TERMINATED",
            AgentStatus::Decommissioned => "DECOMMISSIONED",
        }
    }
}

/// What an agent says about itself, besides its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentDescription {
    /// Its RPC address (`tcp://host:port`).
    pub addr: String,
    /// Its region.
    #[serde(default)]
    pub region: String,
    /// The scaling group it asks to join.
    #[serde(default)]
    pub scaling_group: String,
    /// CPU architecture (`x86_64`, `aarch64`).
    #[serde(default)]
    pub architecture: String,
    /// The agent software's version.
    #[serde(default)]
    pub version: String,
    /// The RPC protocol version it speaks.
    #[serde(default)]
    pub protocol_version: u16,
    /// Compute plugins: per plugin, its `version` and other facts.
    #[serde(default)]
    pub compute_plugins: BTreeMap<String, BTreeMap<String, String>>,
    /// Where users reach its kernels' service ports.
    #[serde(default)]
    pub public_host: Option<String>,
    /// Whether it kills kernels reported for abuse.
    #[serde(default)]
    pub auto_terminate_abusing_kernel: bool,
}

/// What an agent can hold: amount per slot (decimal strings) and each slot's
/// type (`count`, `bytes`, `unique`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentCapacity {
    /// Capacity per slot.
    #[serde(default)]
    pub available_slots: BTreeMap<String, String>,
    /// Each slot's type.
    #[serde(default)]
    pub slot_types: BTreeMap<String, String>,
}

/// Events of an agent's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// First contact: the agent joined the cluster (status ALIVE).
    AgentRegistered {
        /// Its id (agent-chosen).
        id: String,
        /// The agent process that made contact.
        instance: Uuid,
        /// What it says about itself.
        #[serde(flatten)]
        description: AgentDescription,
        /// What it can hold.
        #[serde(flatten)]
        capacity: AgentCapacity,
    },
    /// Its capacity changed.
    AgentCapacityChanged {
        /// The new capacity.
        #[serde(flatten)]
        capacity: AgentCapacity,
    },
    /// What it says about itself changed (address, scaling group, version…).
    AgentDescriptionChanged {
        /// The new description.
        #[serde(flatten)]
        description: AgentDescription,
    },
    /// Its heartbeat expired (status LOST).
    AgentLost {
        /// Why (`heartbeat-expired`).
        reason: String,
    },
    /// It said goodbye (status TERMINATED).
    AgentStopped {
        /// Why (`shutdown`).
        reason: String,
    },
    /// A lost or stopped agent is back (status ALIVE).
    AgentRejoined {
        /// The agent process now answering (a new one after a restart).
        instance: Uuid,
        /// Where it listens now.
        addr: String,
        /// Why (`heartbeat-resumed`, `self-started`).
        reason: String,
    },
    /// The scheduler placed kernels of a session here: their slots are
    /// taken until each kernel's own transition on the session's stream
    /// frees them (see [`crate::session`]). Appended atomically with the
    /// session's `SessionScheduled`, against this stream's version, so two
    /// schedulers can never promise the same capacity twice.
    KernelsPlaced {
        /// The session.
        session_id: Uuid,
        /// The slots each kernel takes.
        kernels: BTreeMap<Uuid, BTreeMap<String, String>>,
    },
    /// An operator removed it from the cluster. Its heartbeats alone do not
    /// bring it back; if its process starts again (an `agent_started`
    /// notice) it rejoins.
    AgentDecommissioned {
        /// Why.
        reason: String,
    },
}
