//! Domains: the top of the tenancy tree (domain → projects, users → keypairs).
//! The events of a domain's stream (`domain:<name>`) and their fields.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The stream type of domains.
pub const STREAM_TYPE: &str = "domain";

/// The stream id of a domain: its name is its identity.
pub fn stream_id(name: &str) -> String {
    format!("domain:{name}")
}

/// The settable fields of a domain (reference: `domains` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainFields {
    /// Free text.
    pub description: String,
    /// Inactive domains refuse new sessions and logins.
    pub is_active: bool,
    /// Quota per slot name as a decimal string; absent slots are unlimited.
    pub total_resource_slots: BTreeMap<String, String>,
    /// vfolder host → permissions.
    pub allowed_vfolder_hosts: BTreeMap<String, BTreeSet<String>>,
    /// Registries whose images sessions of this domain may use.
    pub allowed_docker_registries: Vec<String>,
    /// Id in an external system.
    pub integration_id: Option<String>,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainPatch {
    /// New description.
    pub description: Option<String>,
    /// Activate or deactivate.
    pub is_active: Option<bool>,
    /// New quota (replaces the whole map).
    pub total_resource_slots: Option<BTreeMap<String, String>>,
    /// New vfolder host permissions (replaces the whole map).
    pub allowed_vfolder_hosts: Option<BTreeMap<String, BTreeSet<String>>>,
    /// New registry list.
    pub allowed_docker_registries: Option<Vec<String>>,
    /// New integration id; an empty string clears it.
    pub integration_id: Option<String>,
}

/// What a domain member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    /// A user (by uuid).
    User,
    /// A project (group) (by uuid).
    Project,
}

/// Events of a domain's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainEvent {
    /// The domain was created.
    DomainCreated {
        /// Its name.
        name: String,
        /// Its fields.
        #[serde(flatten)]
        fields: DomainFields,
    },
    /// Some fields changed.
    DomainModified(DomainPatch),
    /// Marked inactive.
    DomainDeactivated,
    /// Removed for good; the name may be reused by a new domain afterwards
    /// only through a new stream generation (not supported yet).
    DomainPurged,
    /// A user or project joined.
    DomainMemberJoined {
        /// User or project.
        kind: MemberKind,
        /// Its id.
        id: String,
    },
    /// A user or project left.
    DomainMemberLeft {
        /// User or project.
        kind: MemberKind,
        /// Its id.
        id: String,
    },
}
