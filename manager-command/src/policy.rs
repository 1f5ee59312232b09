//! Keypair resource policies: the aggregate and its deletion rule.

use manager_events::policy::{KeypairPolicyEvent, KeypairPolicyFields};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;

pub use manager_events::policy::{DefaultForUnspecified, stream_id};

/// Commands on a keypair resource policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeypairPolicyCommand {
    /// Creates it.
    Create {
        /// Its name (its identity).
        name: String,
        /// Its fields.
        fields: KeypairPolicyFields,
    },
    /// Replaces its fields.
    Modify(KeypairPolicyFields),
    /// Deletes it (the caller checks that no keypair refers to it).
    Delete,
}

/// Why a policy command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeypairPolicyError {
    /// A field breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The name is taken.
    #[error("integrity error: the keypair resource policy already exists")]
    AlreadyExists,
    /// No such policy.
    #[error("no such keypair resource policy")]
    NotFound,
}

impl From<KeypairPolicyError> for Problem {
    fn from(err: KeypairPolicyError) -> Problem {
        let kind = match err {
            KeypairPolicyError::Invalid { .. } => ProblemKind::InvalidApiParams,
            KeypairPolicyError::AlreadyExists => ProblemKind::GenericBadRequest,
            KeypairPolicyError::NotFound => ProblemKind::ObjectNotFound("keypair resource policy"),
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A policy's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeypairPolicy {
    /// `None` until created.
    pub name: Option<String>,
    /// Its fields.
    pub fields: Option<KeypairPolicyFields>,
    /// Deleted.
    pub deleted: bool,
}

impl KeypairPolicy {
    /// The fields of a policy that exists and was not deleted.
    pub fn live(&self) -> Option<&KeypairPolicyFields> {
        if self.deleted {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

/// Policy names follow the domain-name rule (they form the stream id too).
pub use crate::domain::valid_name;

fn check(f: &KeypairPolicyFields) -> Result<(), KeypairPolicyError> {
    let non_negative = [
        ("max_session_lifetime", f.max_session_lifetime),
        ("max_concurrent_sessions", f.max_concurrent_sessions),
        (
            "max_concurrent_sftp_sessions",
            f.max_concurrent_sftp_sessions,
        ),
        ("max_containers_per_session", f.max_containers_per_session),
        ("max_vfolder_count", f.max_vfolder_count),
        ("max_vfolder_size", f.max_vfolder_size),
        ("max_quota_scope_size", f.max_quota_scope_size),
    ];
    for (field, value) in non_negative {
        if value < 0 {
            return Err(KeypairPolicyError::Invalid {
                field,
                reason: "it must not be negative",
            });
        }
    }
    for v in f.total_resource_slots.values() {
        if v.parse::<f64>().map_or(true, |n| !n.is_finite() || n < 0.0) {
            return Err(KeypairPolicyError::Invalid {
                field: "total_resource_slots",
                reason: "quotas are non-negative numbers",
            });
        }
    }
    Ok(())
}

impl Aggregate for KeypairPolicy {
    const STREAM_TYPE: &'static str = manager_events::policy::STREAM_TYPE;
    type Command = KeypairPolicyCommand;
    type Event = KeypairPolicyEvent;
    type Error = KeypairPolicyError;

    fn apply(&mut self, event: &KeypairPolicyEvent) {
        match event {
            KeypairPolicyEvent::KeypairPolicyCreated { name, fields } => {
                self.name = Some(name.clone());
                self.fields = Some(fields.clone());
            }
            KeypairPolicyEvent::KeypairPolicyModified { fields } => {
                self.fields = Some(fields.clone())
            }
            KeypairPolicyEvent::KeypairPolicyDeleted => self.deleted = true,
        }
    }

    fn decide(
        &self,
        command: &KeypairPolicyCommand,
    ) -> Result<Vec<KeypairPolicyEvent>, KeypairPolicyError> {
        match command {
            KeypairPolicyCommand::Create { name, fields } => {
                if !valid_name(name) {
                    return Err(KeypairPolicyError::Invalid {
                        field: "name",
                        reason: "use 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit",
                    });
                }
                if self.name.is_some() {
                    return Err(KeypairPolicyError::AlreadyExists);
                }
                check(fields)?;
                Ok(vec![KeypairPolicyEvent::KeypairPolicyCreated {
                    name: name.clone(),
                    fields: fields.clone(),
                }])
            }
            KeypairPolicyCommand::Modify(fields) => {
                let current = self.live().ok_or(KeypairPolicyError::NotFound)?;
                check(fields)?;
                Ok(if current == fields {
                    vec![]
                } else {
                    vec![KeypairPolicyEvent::KeypairPolicyModified {
                        fields: fields.clone(),
                    }]
                })
            }
            KeypairPolicyCommand::Delete => {
                self.live().ok_or(KeypairPolicyError::NotFound)?;
                Ok(vec![KeypairPolicyEvent::KeypairPolicyDeleted])
            }
        }
    }
}

/// Deletes a keypair resource policy unless a keypair refers to it; answers
/// the log position of the deletion.
///
/// The references are counted in the `keypairs` read model, so a keypair
/// created in the last moments (not yet projected) is not seen; a keypair
/// being created *while* the policy is deleted is refused (its creation holds
/// the policy's version as a precondition).
pub async fn delete_keypair_policy(
    handler: &crate::handler::CommandHandler,
    name: &str,
    metadata: manager_events::EventMetadata,
) -> Result<Option<u64>, Problem> {
    if referenced(
        handler,
        "SELECT 1 FROM keypairs WHERE resource_policy = $1 LIMIT 1",
        name,
    )
    .await?
    {
        return Err(Problem::new(ProblemKind::GenericBadRequest).msg(format!(
            "keypairs still use the keypair resource policy {name:?}"
        )));
    }
    handler
        .execute::<KeypairPolicy>(&stream_id(name), KeypairPolicyCommand::Delete, metadata)
        .await
        .map(|done| done.position)
        .map_err(Into::into)
}

/// Whether a read-model row refers to `name`: `sql` selects at most one row,
/// with `$1` bound to the name. Used to refuse deleting what is still in use
/// (a policy its keypairs, users or projects name).
pub(crate) async fn referenced(
    handler: &crate::handler::CommandHandler,
    sql: &'static str,
    name: &str,
) -> Result<bool, Problem> {
    use diesel::sql_types::Text;
    use diesel_async::RunQueryDsl;
    let unavailable = |e: String| Problem::new(ProblemKind::ServiceUnavailable).msg(e);
    let mut conn = handler
        .store()
        .pool()
        .get()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let rows = manager_events::prepared(sql)
        .bind::<Text, _>(name)
        .execute(&mut conn)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(rows > 0)
}

/// Fields of a permissive policy, as the reference's example fixture has it:
/// unspecified slots unlimited, no quotas or session limits, one SFTP session,
/// one container per session, the cluster's idle timeout. (A policy created
/// through the API defaults to `LIMITED`, as the reference.)
pub fn default_fields() -> KeypairPolicyFields {
    KeypairPolicyFields {
        default_for_unspecified: DefaultForUnspecified::Unlimited,
        total_resource_slots: Default::default(),
        max_session_lifetime: 0,
        max_concurrent_sessions: 0,
        max_concurrent_sftp_sessions: 1,
        max_containers_per_session: 1,
        idle_timeout: -1,
        allowed_vfolder_hosts: Default::default(),
        max_vfolder_count: 0,
        max_vfolder_size: 0,
        max_quota_scope_size: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    #[test]
    fn policies_are_unique_valid_and_deletable() {
        let created = KeypairPolicyEvent::KeypairPolicyCreated {
            name: "default".into(),
            fields: default_fields(),
        };
        Scenario::<KeypairPolicy>::given([])
            .when(KeypairPolicyCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            })
            .then([created.clone()]);
        Scenario::<KeypairPolicy>::given([created.clone()])
            .when(KeypairPolicyCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            })
            .then_error(KeypairPolicyError::AlreadyExists);
        let negative = KeypairPolicyFields {
            max_concurrent_sessions: -1,
            ..default_fields()
        };
        assert!(matches!(
            KeypairPolicy::default().decide(&KeypairPolicyCommand::Create {
                name: "p".into(),
                fields: negative
            }),
            Err(KeypairPolicyError::Invalid {
                field: "max_concurrent_sessions",
                ..
            })
        ));
        assert!(
            KeypairPolicy::default()
                .decide(&KeypairPolicyCommand::Create {
                    name: "a b".into(),
                    fields: default_fields()
                })
                .is_err()
        );
        Scenario::<KeypairPolicy>::given([created.clone()])
            .when(KeypairPolicyCommand::Delete)
            .then([KeypairPolicyEvent::KeypairPolicyDeleted]);
        Scenario::<KeypairPolicy>::given([created, KeypairPolicyEvent::KeypairPolicyDeleted])
            .when(KeypairPolicyCommand::Delete)
            .then_error(KeypairPolicyError::NotFound);
    }
}
