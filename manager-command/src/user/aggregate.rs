//! The user aggregate.

use manager_events::user::{UserEvent, UserFields, UserPatch, UserStatus};
use manager_events::{Problem, ProblemKind};
use uuid::Uuid;

use crate::aggregate::Aggregate;

/// Commands on a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Creates the user (uniqueness of email and username is the workflow's).
    Create {
        /// Its id.
        uuid: Uuid,
        /// Its fields.
        fields: UserFields,
        /// Argon2 hash of its password.
        password_hash: String,
    },
    /// Changes some fields.
    Modify(UserPatch),
    /// Sets a new password (already hashed).
    ChangePassword {
        /// Argon2 hash of the new password.
        password_hash: String,
    },
    /// Sets (or clears) the main access key.
    SetMainAccessKey(Option<String>),
    /// Records a keypair of the user.
    AddKeypair(String),
    /// Forgets a keypair of the user.
    RemoveKeypair(String),
    /// Soft delete.
    Delete,
    /// Hard delete.
    Purge,
}

/// Why a user command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A field breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The user exists already.
    #[error("integrity error: the user already exists")]
    AlreadyExists,
    /// No such user.
    #[error("no such user")]
    NotFound,
}

impl From<UserError> for Problem {
    fn from(err: UserError) -> Problem {
        let kind = match err {
            UserError::Invalid { .. } => ProblemKind::InvalidApiParams,
            UserError::AlreadyExists => ProblemKind::GenericBadRequest,
            UserError::NotFound => ProblemKind::ObjectNotFound("user"),
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A user's state as folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    /// `None` until created.
    pub uuid: Option<Uuid>,
    /// Its fields (meaningful once created).
    pub fields: Option<UserFields>,
    /// Argon2 hash of its password.
    pub password_hash: String,
    /// Purged for good.
    pub purged: bool,
    /// The main access key.
    pub main_access_key: Option<String>,
    /// Access keys of the user's keypairs.
    pub keypairs: std::collections::BTreeSet<String>,
}

impl User {
    /// The fields of a user that exists and was not purged.
    pub fn live(&self) -> Option<&UserFields> {
        if self.purged {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

fn invalid(field: &'static str, reason: &'static str) -> UserError {
    UserError::Invalid { field, reason }
}

fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    required: bool,
) -> Result<(), UserError> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "it is empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(field, "it is too long"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(field, "it contains control characters"));
    }
    Ok(())
}

fn check_email(email: &str) -> Result<(), UserError> {
    check_text("email", email, 254, true)?;
    let well_formed = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    };
    if well_formed {
        Ok(())
    } else {
        Err(invalid("email", "it is not an e-mail address"))
    }
}

fn check_client_ips(ips: &Option<Vec<String>>) -> Result<(), UserError> {
    for ip in ips.iter().flatten() {
        let (addr, prefix) = match ip.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (ip.as_str(), None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| invalid("allowed_client_ip", "not an IP address or CIDR"))?;
        if let Some(prefix) = prefix {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u8>() {
                Ok(p) if p <= max => {}
                _ => return Err(invalid("allowed_client_ip", "not an IP address or CIDR")),
            }
        }
    }
    Ok(())
}

fn check_fields(f: &UserFields) -> Result<(), UserError> {
    check_email(&f.email)?;
    check_text("username", &f.username, 64, true)?;
    check_text("full_name", &f.full_name, 64, false)?;
    check_text("description", &f.description, 500, false)?;
    check_text("domain_name", &f.domain_name, 64, true)?;
    check_text("resource_policy", &f.resource_policy, 256, true)?;
    check_client_ips(&f.allowed_client_ip)
}

impl Aggregate for User {
    const STREAM_TYPE: &'static str = manager_events::user::STREAM_TYPE;
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    fn apply(&mut self, event: &UserEvent) {
        match event {
            UserEvent::UserCreated {
                uuid,
                fields,
                password_hash,
            } => {
                self.uuid = Some(*uuid);
                self.fields = Some(fields.clone());
                self.password_hash = password_hash.clone();
            }
            UserEvent::UserModified(p) => {
                if let Some(f) = self.fields.as_mut() {
                    if let Some(v) = &p.full_name {
                        f.full_name = v.clone();
                    }
                    if let Some(v) = &p.description {
                        f.description = v.clone();
                    }
                    if let Some(v) = p.need_password_change {
                        f.need_password_change = v;
                    }
                    if let Some(v) = p.status {
                        f.status = v;
                    }
                    if let Some(v) = p.role {
                        f.role = v;
                    }
                    if let Some(v) = &p.resource_policy {
                        f.resource_policy = v.clone();
                    }
                    if let Some(v) = &p.allowed_client_ip {
                        f.allowed_client_ip = Some(v.clone()).filter(|v| !v.is_empty());
                    }
                    if let Some(v) = p.sudo_session_enabled {
                        f.sudo_session_enabled = v;
                    }
                }
            }
            UserEvent::UserPasswordChanged { password_hash } => {
                self.password_hash = password_hash.clone()
            }
            UserEvent::UserMainAccessKeySet { access_key } => {
                self.main_access_key = access_key.clone()
            }
            UserEvent::UserKeypairAdded { access_key } => {
                self.keypairs.insert(access_key.clone());
            }
            UserEvent::UserKeypairRemoved { access_key } => {
                self.keypairs.remove(access_key);
            }
            UserEvent::UserDeleted => {
                if let Some(f) = self.fields.as_mut() {
                    f.status = UserStatus::Deleted;
                }
            }
            UserEvent::UserPurged => self.purged = true,
        }
    }

    fn decide(&self, command: &UserCommand) -> Result<Vec<UserEvent>, UserError> {
        match command {
            UserCommand::Create {
                uuid,
                fields,
                password_hash,
            } => {
                if self.uuid.is_some() {
                    return Err(UserError::AlreadyExists);
                }
                check_fields(fields)?;
                if password_hash.is_empty() {
                    return Err(invalid("password", "it is empty"));
                }
                Ok(vec![UserEvent::UserCreated {
                    uuid: *uuid,
                    fields: fields.clone(),
                    password_hash: password_hash.clone(),
                }])
            }
            UserCommand::Modify(patch) => {
                let current = self.live().ok_or(UserError::NotFound)?;
                let mut next = current.clone();
                let mut probe = self.clone();
                probe.apply(&UserEvent::UserModified(patch.clone()));
                if let Some(f) = probe.fields {
                    next = f;
                }
                check_fields(&next)?;
                if next == *current {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::UserModified(patch.clone())])
            }
            UserCommand::ChangePassword { password_hash } => {
                self.live().ok_or(UserError::NotFound)?;
                if password_hash.is_empty() {
                    return Err(invalid("password", "it is empty"));
                }
                Ok(vec![UserEvent::UserPasswordChanged {
                    password_hash: password_hash.clone(),
                }])
            }
            UserCommand::SetMainAccessKey(access_key) => {
                self.live().ok_or(UserError::NotFound)?;
                if self.main_access_key == *access_key {
                    return Ok(vec![]);
                }
                Ok(vec![UserEvent::UserMainAccessKeySet {
                    access_key: access_key.clone(),
                }])
            }
            UserCommand::AddKeypair(ak) => {
                self.live().ok_or(UserError::NotFound)?;
                Ok(if self.keypairs.contains(ak) {
                    vec![]
                } else {
                    vec![UserEvent::UserKeypairAdded {
                        access_key: ak.clone(),
                    }]
                })
            }
            UserCommand::RemoveKeypair(ak) => {
                self.live().ok_or(UserError::NotFound)?;
                Ok(if self.keypairs.contains(ak) {
                    vec![UserEvent::UserKeypairRemoved {
                        access_key: ak.clone(),
                    }]
                } else {
                    vec![]
                })
            }
            UserCommand::Delete => {
                let f = self.live().ok_or(UserError::NotFound)?;
                Ok(if f.status == UserStatus::Deleted {
                    vec![]
                } else {
                    vec![UserEvent::UserDeleted]
                })
            }
            UserCommand::Purge => {
                self.live().ok_or(UserError::NotFound)?;
                Ok(vec![UserEvent::UserPurged])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;
    use manager_events::user::UserRole;

    fn fields() -> UserFields {
        UserFields {
            username: "alice".into(),
            email: "alice@example.com".into(),
            full_name: "Alice".into(),
            description: String::new(),
            need_password_change: false,
            status: UserStatus::Active,
            role: UserRole::User,
            domain_name: "default".into(),
            resource_policy: "default".into(),
            allowed_client_ip: None,
            totp_activated: false,
            sudo_session_enabled: false,
        }
    }

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn created() -> UserEvent {
        UserEvent::UserCreated {
            uuid: id(),
            fields: fields(),
            password_hash: "$argon2id$x".into(),
        }
    }

    fn create(f: UserFields) -> UserCommand {
        UserCommand::Create {
            uuid: id(),
            fields: f,
            password_hash: "$argon2id$x".into(),
        }
    }

    #[test]
    fn a_user_is_created_once() {
        Scenario::<User>::given([])
            .when(create(fields()))
            .then([created()]);
        Scenario::<User>::given([created()])
            .when(create(fields()))
            .then_error(UserError::AlreadyExists);
    }

    #[test]
    fn fields_are_validated() {
        type Mutation = Box<dyn Fn(&mut UserFields)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|f| f.email = "no-at-sign".into()), "email"),
            (Box::new(|f| f.email = "a@b@c".into()), "email"),
            (Box::new(|f| f.email = "a b@c".into()), "email"),
            (
                Box::new(|f| f.email = format!("{}@x.y", "a".repeat(260))),
                "email",
            ),
            (Box::new(|f| f.username = "  ".into()), "username"),
            (Box::new(|f| f.username = "a\u{0}b".into()), "username"),
            (Box::new(|f| f.username = "x".repeat(65)), "username"),
            (Box::new(|f| f.domain_name = String::new()), "domain_name"),
            (
                Box::new(|f| f.allowed_client_ip = Some(vec!["10.0.0.0/33".into()])),
                "allowed_client_ip",
            ),
            (
                Box::new(|f| f.allowed_client_ip = Some(vec!["localhost".into()])),
                "allowed_client_ip",
            ),
        ];
        for (mutate, field) in cases {
            let mut f = fields();
            mutate(&mut f);
            let err = User::default().decide(&create(f)).unwrap_err();
            assert!(
                matches!(err, UserError::Invalid { field: got, .. } if got == field),
                "{field}: {err:?}"
            );
        }
        let mut ok = fields();
        ok.allowed_client_ip = Some(vec!["10.0.0.0/8".into(), "::1".into()]);
        assert!(User::default().decide(&create(ok)).is_ok());
    }

    #[test]
    fn modify_changes_only_what_differs() {
        let same = UserPatch {
            full_name: Some("Alice".into()),
            ..UserPatch::default()
        };
        Scenario::<User>::given([created()])
            .when(UserCommand::Modify(same))
            .then([]);
        let role = UserPatch {
            role: Some(UserRole::Admin),
            ..UserPatch::default()
        };
        Scenario::<User>::given([created()])
            .when(UserCommand::Modify(role.clone()))
            .then([UserEvent::UserModified(role)]);
        Scenario::<User>::given([])
            .when(UserCommand::Modify(UserPatch::default()))
            .then_error(UserError::NotFound);
    }

    #[test]
    fn delete_is_soft_and_purge_is_final() {
        Scenario::<User>::given([created()])
            .when(UserCommand::Delete)
            .then([UserEvent::UserDeleted]);
        Scenario::<User>::given([created(), UserEvent::UserDeleted])
            .when(UserCommand::Delete)
            .then([]);
        Scenario::<User>::given([created(), UserEvent::UserDeleted])
            .when(UserCommand::Purge)
            .then([UserEvent::UserPurged]);
        Scenario::<User>::given([created(), UserEvent::UserPurged])
            .when(UserCommand::Delete)
            .then_error(UserError::NotFound);
    }
}
