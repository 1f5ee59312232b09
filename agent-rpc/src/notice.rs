//! What agents tell the managers outside RPC, through Redis: a heartbeat key
//! per agent and one notice stream.
//!
//! - **Heartbeat key** `{prefix}:agent:{id}:heartbeat`: an agent sets it every
//!   heartbeat period with a TTL of a few periods; its value is a
//!   [`Heartbeat`] (JSON). An agent whose key has expired is lost. The key is
//!   cheap to refresh and carries no capacity, so a heartbeat that changes
//!   nothing costs the managers nothing.
//! - **Notice stream** `{prefix}:agent-notices`: an entry with one field,
//!   [`NOTICE_FIELD`], holding a [`Notice`] (JSON), sent when something
//!   changed — the agent started, its capacity or settings changed, it shuts
//!   down, a kernel moved along its lifecycle. Managers read it through one
//!   consumer group, so each notice is handled by one manager; a notice that
//!   does not parse goes to `{prefix}:agent-notices:dead`.
//!
//! JSON rather than MessagePack here: these live in Redis where operators
//! look at them with `redis-cli`, and they are small and infrequent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::kernel::KernelCreationInfo;

/// The stream field holding a notice.
pub const NOTICE_FIELD: &str = "notice";

/// The managers' consumer group on the notice stream.
pub const CONSUMER_GROUP: &str = "managers";

/// The notice stream's key.
pub fn notice_stream(prefix: &str) -> String {
    format!("{prefix}:agent-notices")
}

/// Where notices that do not parse are kept, for an operator to look at.
pub fn dead_letter_stream(prefix: &str) -> String {
    format!("{prefix}:agent-notices:dead")
}

/// An agent's heartbeat key.
pub fn heartbeat_key(prefix: &str, agent_id: &str) -> String {
    format!("{prefix}:agent:{agent_id}:heartbeat")
}

/// What an agent is and can hold, as it reports itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's id (agent-chosen, e.g. `i-hostname`).
    pub id: String,
    /// Where its RPC server listens (`tcp://host:port`).
    pub addr: String,
    /// Its region.
    #[serde(default)]
    pub region: String,
    /// The scaling group it asks to join.
    #[serde(default)]
    pub scaling_group: String,
    /// CPU architecture, e.g. `x86_64`, `aarch64`.
    #[serde(default)]
    pub architecture: String,
    /// The agent software's version.
    #[serde(default)]
    pub version: String,
    /// The RPC protocol version it speaks.
    #[serde(default)]
    pub protocol_version: u16,
    /// Capacity per slot, as decimal strings (`cpu`, `mem`, `cuda.device`…).
    #[serde(default)]
    pub available_slots: BTreeMap<String, String>,
    /// Each slot's type: `count`, `bytes` or `unique`.
    #[serde(default)]
    pub slot_types: BTreeMap<String, String>,
    /// Compute plugins: per plugin, its `version` and other facts.
    #[serde(default)]
    pub compute_plugins: BTreeMap<String, BTreeMap<String, String>>,
    /// The host users reach its kernels' service ports at.
    #[serde(default)]
    pub public_host: Option<String>,
    /// Whether it kills kernels reported for abuse.
    #[serde(default)]
    pub auto_terminate_abusing_kernel: bool,
}

/// The value of an agent's heartbeat key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The agent process: a new one on every start.
    pub instance: Uuid,
    /// Where its RPC server listens.
    pub addr: String,
    /// When it was written, unix milliseconds.
    pub sent_at_ms: i64,
    /// Kernels it runs.
    #[serde(default)]
    pub kernels: u32,
}

/// One entry of the notice stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// The agent it is about.
    pub agent_id: String,
    /// The agent process that sent it.
    pub instance: Uuid,
    /// When it was sent, unix milliseconds.
    pub sent_at_ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub body: NoticeBody,
}

/// What happened, by notice name (the reference's event names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum NoticeBody {
    /// The agent process started (`reason`: `self-started`), with all it
    /// reports about itself.
    AgentStarted {
        /// Why.
        reason: String,
        /// The agent.
        info: AgentInfo,
    },
    /// Something it reports about itself changed (capacity, address,
    /// scaling group, plugins…).
    AgentInfoChanged {
        /// The agent as it is now.
        info: AgentInfo,
    },
    /// The agent is shutting down (`reason`: `shutdown`).
    AgentTerminated {
        /// Why.
        reason: String,
    },
    /// A kernel is being prepared.
    KernelPreparing {
        /// The kernel.
        kernel_id: Uuid,
        /// Its session.
        session_id: Uuid,
        /// Why, if said.
        #[serde(default)]
        reason: String,
    },
    /// A kernel's image is being pulled.
    KernelPulling {
        /// The kernel.
        kernel_id: Uuid,
        /// Its session.
        session_id: Uuid,
        /// The image.
        #[serde(default)]
        image: String,
    },
    /// A kernel's container is being created.
    KernelCreating {
        /// The kernel.
        kernel_id: Uuid,
        /// Its session.
        session_id: Uuid,
    },
    /// A kernel runs.
    KernelStarted {
        /// The kernel.
        kernel_id: Uuid,
        /// Its session.
        session_id: Uuid,
        /// Where and how it runs.
        #[serde(default)]
        creation_info: Option<KernelCreationInfo>,
    },
    /// A kernel is gone.
    KernelTerminated {
        /// The kernel.
        kernel_id: Uuid,
        /// Its session.
        session_id: Uuid,
        /// Why (`self-terminated`, `user-requested`, `failed-to-start`…).
        #[serde(default)]
        reason: String,
        /// Its exit code, when it exited by itself.
        #[serde(default)]
        exit_code: Option<i32>,
    },
}

impl Notice {
    /// Encodes the notice for the stream.
    pub fn to_json(&self) -> String {
        // A notice is plain data: serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes a notice from the stream.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_round_trips_and_names_itself_as_the_reference_does() {
        let n = Notice {
            agent_id: "i-a".into(),
            instance: Uuid::nil(),
            sent_at_ms: 1,
            body: NoticeBody::KernelTerminated {
                kernel_id: Uuid::nil(),
                session_id: Uuid::nil(),
                reason: "self-terminated".into(),
                exit_code: Some(3),
            },
        };
        let text = n.to_json();
        assert!(text.contains("\"name\":\"kernel_terminated\""), "{text}");
        assert_eq!(Notice::from_json(&text).ok(), Some(n));
        assert!(Notice::from_json("{\"name\":\"nope\"}").is_err());
    }
}
