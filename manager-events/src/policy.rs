//! Keypair resource policies: the compute quota and session limits a keypair
//! is held to. The events of a policy's stream (`keypair-policy:<name>`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The stream type of keypair resource policies.
pub const STREAM_TYPE: &str = "keypair_resource_policy";

/// The stream id of a keypair resource policy.
pub fn stream_id(name: &str) -> String {
    format!("keypair-policy:{name}")
}

/// What a slot absent from `total_resource_slots` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DefaultForUnspecified {
    /// Nothing (0).
    Limited,
    /// Anything.
    Unlimited,
}

/// The fields of a keypair resource policy (reference:
/// `keypair_resource_policies`). Limits of 0 mean "no limit" where the
/// reference says so (sessions, lifetime, vfolder count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeypairPolicyFields {
    /// What unspecified slots allow.
    pub default_for_unspecified: DefaultForUnspecified,
    /// Quota per slot name, decimal strings.
    pub total_resource_slots: BTreeMap<String, String>,
    /// Seconds a session may live (0: no limit).
    pub max_session_lifetime: i64,
    /// Sessions at once (0: no limit).
    pub max_concurrent_sessions: i64,
    /// SFTP sessions at once.
    pub max_concurrent_sftp_sessions: i64,
    /// Kernels per session.
    pub max_containers_per_session: i64,
    /// Idle seconds before a session is reaped (0: off; negative: cluster default).
    pub idle_timeout: i64,
    /// vfolder host → permissions.
    pub allowed_vfolder_hosts: BTreeMap<String, BTreeSet<String>>,
    /// vfolders a user may own (0: no limit).
    pub max_vfolder_count: i64,
    /// Legacy vfolder size limit.
    pub max_vfolder_size: i64,
    /// Legacy quota scope size.
    pub max_quota_scope_size: i64,
}

/// Events of a keypair resource policy's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeypairPolicyEvent {
    /// The policy was created.
    KeypairPolicyCreated {
        /// Its name.
        name: String,
        /// Its fields.
        #[serde(flatten)]
        fields: KeypairPolicyFields,
    },
    /// Its fields were replaced.
    KeypairPolicyModified {
        /// The new fields.
        #[serde(flatten)]
        fields: KeypairPolicyFields,
    },
    /// Deleted.
    KeypairPolicyDeleted,
}
