//! Project resource policies: the per-project limits that are not compute
//! quotas (vfolders, their quota scope, networks). The events of a policy's
//! stream (`project-policy:<name>`).
//!
//! A project's compute quota is its own `total_resource_slots`, not a policy.

use serde::{Deserialize, Serialize};

/// The stream type of project resource policies.
pub const STREAM_TYPE: &str = "project_resource_policy";

/// The stream id of a project resource policy.
pub fn stream_id(name: &str) -> String {
    format!("project-policy:{name}")
}

/// The fields of a project resource policy (reference:
/// `project_resource_policies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectPolicyFields {
    /// vfolders the project may own (0: no limit).
    pub max_vfolder_count: i32,
    /// Bytes of the project's quota scope (-1 or 0: no limit).
    pub max_quota_scope_size: i64,
    /// Networks created on behalf of the project (-1: no limit).
    pub max_network_count: i32,
}

/// Events of a project resource policy's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectPolicyEvent {
    /// The policy was created.
    ProjectPolicyCreated {
        /// Its name.
        name: String,
        /// Its fields.
        #[serde(flatten)]
        fields: ProjectPolicyFields,
    },
    /// Its fields were replaced.
    ProjectPolicyModified {
        /// The new fields.
        #[serde(flatten)]
        fields: ProjectPolicyFields,
    },
    /// Deleted.
    ProjectPolicyDeleted,
}
