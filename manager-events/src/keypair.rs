//! Keypairs: the access key / secret key pairs that sign API requests. The
//! events of a keypair's stream (`keypair:<access key>`).
//!
//! The secret key is never in an event in clear text: events carry it sealed
//! with the keypair's data key (see [`crate::secrets`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream type of keypairs.
pub const STREAM_TYPE: &str = "keypair";

/// The stream id of a keypair.
pub fn stream_id(access_key: &str) -> String {
    format!("keypair:{access_key}")
}

/// The settable fields of a keypair (reference: `keypairs` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeypairFields {
    /// The owner.
    pub user_uuid: Uuid,
    /// The owner's e-mail (the reference's `user_id`).
    pub user_email: String,
    /// May sign requests.
    pub is_active: bool,
    /// Acts with admin rights.
    pub is_admin: bool,
    /// Name of the keypair resource policy.
    pub resource_policy: String,
    /// Requests per 15-minute window (0: unlimited).
    pub rate_limit: i64,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeypairPatch {
    /// Activate or deactivate.
    pub is_active: Option<bool>,
    /// Grant or revoke admin rights.
    pub is_admin: Option<bool>,
    /// New resource policy.
    pub resource_policy: Option<String>,
    /// New rate limit.
    pub rate_limit: Option<i64>,
}

/// Events of a keypair's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeypairEvent {
    /// The keypair was created.
    KeypairCreated {
        /// Its access key.
        access_key: String,
        /// Its fields.
        #[serde(flatten)]
        fields: KeypairFields,
        /// The secret key, sealed with the keypair's data key (base64).
        sealed_secret_key: String,
    },
    /// Some fields changed.
    KeypairModified(KeypairPatch),
    /// Deleted; its data key is shredded, so its secret is gone for good.
    KeypairDeleted,
}
