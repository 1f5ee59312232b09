//! User resource policies: the per-user limits that are not compute quotas
//! (vfolders, their quota scope, model-service sessions, customized images).
//! The events of a policy's stream (`user-policy:<name>`).
//!
//! A user's compute quota is *not* here: as in the reference, it is the
//! keypair resource policy of the user's main keypair.

use serde::{Deserialize, Serialize};

/// The stream type of user resource policies.
pub const STREAM_TYPE: &str = "user_resource_policy";

/// The stream id of a user resource policy.
pub fn stream_id(name: &str) -> String {
    format!("user-policy:{name}")
}

/// The fields of a user resource policy (reference: `user_resource_policies`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPolicyFields {
    /// vfolders the user may own (0: no limit).
    pub max_vfolder_count: i32,
    /// Bytes of the user's quota scope (-1 or 0: no limit).
    pub max_quota_scope_size: i64,
    /// Sessions per model service the user runs.
    pub max_session_count_per_model_session: i32,
    /// Customized images the user may publish.
    pub max_customized_image_count: i32,
}

/// Events of a user resource policy's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserPolicyEvent {
    /// The policy was created.
    UserPolicyCreated {
        /// Its name.
        name: String,
        /// Its fields.
        #[serde(flatten)]
        fields: UserPolicyFields,
    },
    /// Its fields were replaced.
    UserPolicyModified {
        /// The new fields.
        #[serde(flatten)]
        fields: UserPolicyFields,
    },
    /// Deleted.
    UserPolicyDeleted,
}
