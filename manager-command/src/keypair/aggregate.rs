//! The keypair aggregate.

use manager_events::keypair::{KeypairEvent, KeypairFields, KeypairPatch};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;

/// Commands on a keypair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeypairCommand {
    /// Creates it (the secret is already sealed).
    Create {
        /// The access key.
        access_key: String,
        /// Its fields.
        fields: KeypairFields,
        /// The sealed secret key.
        sealed_secret_key: String,
    },
    /// Changes some fields.
    Modify(KeypairPatch),
    /// Deletes it.
    Delete,
}

/// Why a keypair command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeypairError {
    /// A field breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The access key is taken (or was used before).
    #[error("integrity error: the access key already exists")]
    AlreadyExists,
    /// No such keypair.
    #[error("no such keypair")]
    NotFound,
}

impl From<KeypairError> for Problem {
    fn from(err: KeypairError) -> Problem {
        let kind = match err {
            KeypairError::Invalid { .. } => ProblemKind::InvalidApiParams,
            KeypairError::AlreadyExists => ProblemKind::GenericBadRequest,
            KeypairError::NotFound => ProblemKind::ObjectNotFound("keypair"),
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A keypair's state as folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Keypair {
    /// `None` until created.
    pub access_key: Option<String>,
    /// Its fields.
    pub fields: Option<KeypairFields>,
    /// The sealed secret key.
    pub sealed_secret_key: String,
    /// Deleted for good.
    pub deleted: bool,
}

impl Keypair {
    /// The fields of a keypair that exists and was not deleted.
    pub fn live(&self) -> Option<&KeypairFields> {
        if self.deleted {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

/// Access keys: 1–20 ASCII letters and digits (the reference's column width).
pub fn valid_access_key(ak: &str) -> bool {
    (1..=20).contains(&ak.len()) && ak.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn check(fields: &KeypairFields) -> Result<(), KeypairError> {
    if fields.rate_limit < 0 {
        return Err(KeypairError::Invalid {
            field: "rate_limit",
            reason: "it must not be negative",
        });
    }
    if fields.resource_policy.trim().is_empty() || fields.resource_policy.len() > 256 {
        return Err(KeypairError::Invalid {
            field: "resource_policy",
            reason: "it must be 1 to 256 characters",
        });
    }
    Ok(())
}

impl Aggregate for Keypair {
    const STREAM_TYPE: &'static str = manager_events::keypair::STREAM_TYPE;
    type Command = KeypairCommand;
    type Event = KeypairEvent;
    type Error = KeypairError;

    fn apply(&mut self, event: &KeypairEvent) {
        match event {
            KeypairEvent::KeypairCreated {
                access_key,
                fields,
                sealed_secret_key,
            } => {
                self.access_key = Some(access_key.clone());
                self.fields = Some(fields.clone());
                self.sealed_secret_key = sealed_secret_key.clone();
            }
            KeypairEvent::KeypairModified(p) => {
                if let Some(f) = self.fields.as_mut() {
                    if let Some(v) = p.is_active {
                        f.is_active = v;
                    }
                    if let Some(v) = p.is_admin {
                        f.is_admin = v;
                    }
                    if let Some(v) = &p.resource_policy {
                        f.resource_policy = v.clone();
                    }
                    if let Some(v) = p.rate_limit {
                        f.rate_limit = v;
                    }
                }
            }
            KeypairEvent::KeypairDeleted => self.deleted = true,
        }
    }

    fn decide(&self, command: &KeypairCommand) -> Result<Vec<KeypairEvent>, KeypairError> {
        match command {
            KeypairCommand::Create {
                access_key,
                fields,
                sealed_secret_key,
            } => {
                if self.access_key.is_some() {
                    return Err(KeypairError::AlreadyExists);
                }
                if !valid_access_key(access_key) {
                    return Err(KeypairError::Invalid {
                        field: "access_key",
                        reason: "use 1-20 ASCII letters and digits",
                    });
                }
                check(fields)?;
                Ok(vec![KeypairEvent::KeypairCreated {
                    access_key: access_key.clone(),
                    fields: fields.clone(),
                    sealed_secret_key: sealed_secret_key.clone(),
                }])
            }
            KeypairCommand::Modify(patch) => {
                let current = self.live().ok_or(KeypairError::NotFound)?;
                let mut probe = self.clone();
                probe.apply(&KeypairEvent::KeypairModified(patch.clone()));
                let next = probe.fields.unwrap_or_else(|| current.clone());
                check(&next)?;
                Ok(if next == *current {
                    vec![]
                } else {
                    vec![KeypairEvent::KeypairModified(patch.clone())]
                })
            }
            KeypairCommand::Delete => {
                self.live().ok_or(KeypairError::NotFound)?;
                Ok(vec![KeypairEvent::KeypairDeleted])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn fields() -> KeypairFields {
        KeypairFields {
            user_uuid: uuid::Uuid::from_u128(1),
            user_email: "a@example.com".into(),
            is_active: true,
            is_admin: false,
            resource_policy: "default".into(),
            rate_limit: 10_000,
        }
    }

    fn create(ak: &str, f: KeypairFields) -> KeypairCommand {
        KeypairCommand::Create {
            access_key: ak.into(),
            fields: f,
            sealed_secret_key: "sealed".into(),
        }
    }

    fn created() -> KeypairEvent {
        KeypairEvent::KeypairCreated {
            access_key: "AKIA1".into(),
            fields: fields(),
            sealed_secret_key: "sealed".into(),
        }
    }

    #[test]
    fn access_keys_are_unique_and_well_formed() {
        Scenario::<Keypair>::given([])
            .when(create("AKIA1", fields()))
            .then([created()]);
        Scenario::<Keypair>::given([created()])
            .when(create("AKIA1", fields()))
            .then_error(KeypairError::AlreadyExists);
        Scenario::<Keypair>::given([created(), KeypairEvent::KeypairDeleted])
            .when(create("AKIA1", fields()))
            .then_error(KeypairError::AlreadyExists);
        for bad in ["", "AKIA-1", "A".repeat(21).as_str(), "ÄKIA"] {
            assert!(
                matches!(
                    Keypair::default().decide(&create(bad, fields())),
                    Err(KeypairError::Invalid {
                        field: "access_key",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let negative = KeypairFields {
            rate_limit: -1,
            ..fields()
        };
        assert!(matches!(
            Keypair::default().decide(&create("AK", negative)),
            Err(KeypairError::Invalid { .. })
        ));
    }

    #[test]
    fn modify_and_delete() {
        let admin = KeypairPatch {
            is_admin: Some(true),
            ..KeypairPatch::default()
        };
        Scenario::<Keypair>::given([created()])
            .when(KeypairCommand::Modify(admin.clone()))
            .then([KeypairEvent::KeypairModified(admin)]);
        let same = KeypairPatch {
            is_active: Some(true),
            ..KeypairPatch::default()
        };
        Scenario::<Keypair>::given([created()])
            .when(KeypairCommand::Modify(same))
            .then([]);
        Scenario::<Keypair>::given([created()])
            .when(KeypairCommand::Delete)
            .then([KeypairEvent::KeypairDeleted]);
        Scenario::<Keypair>::given([created(), KeypairEvent::KeypairDeleted])
            .when(KeypairCommand::Delete)
            .then_error(KeypairError::NotFound);
    }
}
