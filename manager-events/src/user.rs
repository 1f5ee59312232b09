//! Users: people (or services) who own keypairs, sessions and vfolders inside
//! a domain. The events of a user's stream (`user:<uuid>`) and their fields.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream type of users.
pub const STREAM_TYPE: &str = "user";

/// The stream id of a user.
pub fn stream_id(uuid: &Uuid) -> String {
    format!("user:{uuid}")
}

/// A user's global role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Administers the whole cluster.
    Superadmin,
    /// Administers one domain.
    Admin,
    /// A normal user.
    User,
    /// Read-only access for monitoring.
    Monitor,
}

impl UserRole {
    /// Parses the reference's spelling (`superadmin|admin|user|monitor`).
    pub fn parse(s: &str) -> Option<UserRole> {
        match s {
            "superadmin" => Some(UserRole::Superadmin),
            "admin" => Some(UserRole::Admin),
            "user" => Some(UserRole::User),
            "monitor" => Some(UserRole::Monitor),
            _ => None,
        }
    }

    /// The reference's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Superadmin => "superadmin",
            UserRole::Admin => "admin",
            UserRole::User => "user",
            UserRole::Monitor => "monitor",
        }
    }
}

/// A user's account status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserStatus {
    /// May log in and work.
    Active,
    /// Suspended by an administrator.
    Inactive,
    /// Deleted (soft); kept for history until purged.
    Deleted,
    /// Signed up, e-mail not verified yet.
    BeforeVerification,
}

impl UserStatus {
    /// Parses the reference's spelling.
    pub fn parse(s: &str) -> Option<UserStatus> {
        match s {
            "active" => Some(UserStatus::Active),
            "inactive" => Some(UserStatus::Inactive),
            "deleted" => Some(UserStatus::Deleted),
            "before-verification" => Some(UserStatus::BeforeVerification),
            _ => None,
        }
    }

    /// The reference's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Inactive => "inactive",
            UserStatus::Deleted => "deleted",
            UserStatus::BeforeVerification => "before-verification",
        }
    }
}

/// The settable fields of a user (reference: `users` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFields {
    /// Unique login name.
    pub username: String,
    /// Unique e-mail address.
    pub email: String,
    /// Display name.
    pub full_name: String,
    /// Free text.
    pub description: String,
    /// Must change the password at next login.
    pub need_password_change: bool,
    /// Account status.
    pub status: UserStatus,
    /// Global role.
    pub role: UserRole,
    /// The domain the user belongs to.
    pub domain_name: String,
    /// Name of the user resource policy.
    pub resource_policy: String,
    /// Addresses the user may call the API from (`None`: anywhere).
    pub allowed_client_ip: Option<Vec<String>>,
    /// TOTP two-factor authentication is on.
    pub totp_activated: bool,
    /// Sessions get `SUDO_SESSION_ENABLED=1`.
    pub sudo_session_enabled: bool,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New display name.
    pub full_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Must change the password at next login.
    pub need_password_change: Option<bool>,
    /// New status.
    pub status: Option<UserStatus>,
    /// New role.
    pub role: Option<UserRole>,
    /// New user resource policy.
    pub resource_policy: Option<String>,
    /// New allowed client addresses (an empty list allows any).
    pub allowed_client_ip: Option<Vec<String>>,
    /// Turns sudo sessions on or off.
    pub sudo_session_enabled: Option<bool>,
}

/// Events of a user's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The user was created.
    UserCreated {
        /// Its id.
        uuid: Uuid,
        /// Its fields.
        #[serde(flatten)]
        fields: UserFields,
        /// Argon2 PHC string of the password (never the password itself).
        password_hash: String,
    },
    /// Some fields changed.
    UserModified(UserPatch),
    /// A new password was set.
    UserPasswordChanged {
        /// Argon2 PHC string of the new password.
        password_hash: String,
    },
    /// The keypair whose resource policy sets the user's compute quota (the
    /// reference's `main_access_key`) changed; `None` when it was deleted.
    UserMainAccessKeySet {
        /// The access key.
        access_key: Option<String>,
    },
    /// A keypair of this user was created (recorded on the user's stream too,
    /// so that purging the user can delete its keypairs).
    UserKeypairAdded {
        /// The access key.
        access_key: String,
    },
    /// A keypair of this user was deleted.
    UserKeypairRemoved {
        /// The access key.
        access_key: String,
    },
    /// Marked deleted (the reference's `delete_user`).
    UserDeleted,
    /// Removed for good (the reference's `purge_user`).
    UserPurged,
}
