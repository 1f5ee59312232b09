//! Projects (the reference's "groups"): sets of users inside a domain that
//! share vfolders, quotas and scaling groups. The events of a project's stream
//! (`project:<uuid>`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream type of projects.
pub const STREAM_TYPE: &str = "project";

/// The stream id of a project.
pub fn stream_id(id: &Uuid) -> String {
    format!("project:{id}")
}

/// The settable fields of a project (reference: `groups` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectFields {
    /// Name, unique within its domain.
    pub name: String,
    /// Its domain.
    pub domain_name: String,
    /// Free text.
    pub description: String,
    /// Inactive projects refuse new sessions and members.
    pub is_active: bool,
    /// Quota per slot name as a decimal string; absent slots are unlimited.
    pub total_resource_slots: BTreeMap<String, String>,
    /// vfolder host → permissions.
    pub allowed_vfolder_hosts: BTreeMap<String, BTreeSet<String>>,
    /// Id in an external system.
    pub integration_id: Option<String>,
    /// Name of the project resource policy.
    pub resource_policy: String,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    /// New description.
    pub description: Option<String>,
    /// Activate or deactivate.
    pub is_active: Option<bool>,
    /// New quota (replaces the whole map).
    pub total_resource_slots: Option<BTreeMap<String, String>>,
    /// New vfolder host permissions (replaces the whole map).
    pub allowed_vfolder_hosts: Option<BTreeMap<String, BTreeSet<String>>>,
    /// New integration id; an empty string clears it.
    pub integration_id: Option<String>,
    /// New project resource policy.
    pub resource_policy: Option<String>,
}

/// Events of a project's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectEvent {
    /// The project was created.
    ProjectCreated {
        /// Its id.
        id: Uuid,
        /// Its fields.
        #[serde(flatten)]
        fields: ProjectFields,
    },
    /// Some fields changed.
    ProjectModified(ProjectPatch),
    /// Marked inactive (the reference's `delete_group`).
    ProjectDeactivated,
    /// Removed for good (the reference's `purge_group`).
    ProjectPurged,
    /// A user joined.
    ProjectMemberAdded {
        /// The user.
        user_uuid: Uuid,
    },
    /// A user left.
    ProjectMemberRemoved {
        /// The user.
        user_uuid: Uuid,
    },
}
