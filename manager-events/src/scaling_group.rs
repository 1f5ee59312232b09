//! Scaling groups ("resource groups"): sets of agents with one scheduling
//! policy, and which domains, projects and keypairs may use them. The events
//! of a scaling group's stream (`scaling-group:<name>`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream type of scaling groups.
pub const STREAM_TYPE: &str = "scaling_group";

/// The stream id of a scaling group.
pub fn stream_id(name: &str) -> String {
    format!("scaling-group:{name}")
}

/// The settable fields of a scaling group (reference: `scaling_groups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScalingGroupFields {
    /// Free text.
    pub description: String,
    /// Inactive groups are not offered to new sessions.
    pub is_active: bool,
    /// Non-public groups are offered only to system ("private") sessions.
    pub is_public: bool,
    /// Agent driver (`static`).
    pub driver: String,
    /// Driver options.
    pub driver_opts: serde_json::Value,
    /// Pending-queue policy: `fifo`, `lifo` or `drf`.
    pub scheduler: String,
    /// Scheduler options (`allowed_session_types`, `pending_timeout`,
    /// `config`, `agent_selection_strategy`, `roundrobin`).
    pub scheduler_opts: serde_json::Value,
    /// Kernels use the host network.
    pub use_host_network: bool,
    /// App proxy address.
    pub wsproxy_addr: Option<String>,
}

/// Who may use a scaling group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum ScalingGroupTarget {
    /// Every user of a domain.
    Domain(String),
    /// Every member of a project.
    Project(Uuid),
    /// One keypair.
    Keypair(String),
}

/// Events of a scaling group's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScalingGroupEvent {
    /// The scaling group was created.
    ScalingGroupCreated {
        /// Its name.
        name: String,
        /// Its fields.
        #[serde(flatten)]
        fields: ScalingGroupFields,
    },
    /// Its fields were replaced.
    ScalingGroupModified {
        /// The new fields.
        #[serde(flatten)]
        fields: ScalingGroupFields,
    },
    /// Deleted.
    ScalingGroupDeleted,
    /// A domain, project or keypair may now use it.
    ScalingGroupAssociated {
        /// Who.
        target: ScalingGroupTarget,
    },
    /// A domain, project or keypair may no longer use it.
    ScalingGroupDisassociated {
        /// Who.
        target: ScalingGroupTarget,
    },
}
