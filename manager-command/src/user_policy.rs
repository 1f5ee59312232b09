//! User resource policies: the aggregate and its deletion rule.
//!
//! Limits follow the reference's conventions: `max_vfolder_count` 0 means no
//! limit, `max_quota_scope_size` -1 (or 0) means no quota; the model-service
//! and customized-image counts are plain limits (0 allows none).

use manager_events::user_policy::{UserPolicyEvent, UserPolicyFields};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;
use crate::policy::referenced;

pub use manager_events::user_policy::stream_id;

/// Commands on a user resource policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserPolicyCommand {
    /// Creates it.
    Create {
        /// Its name (its identity).
        name: String,
        /// Its fields.
        fields: UserPolicyFields,
    },
    /// Replaces its fields.
    Modify(UserPolicyFields),
    /// Deletes it (the caller checks that no user refers to it; see
    /// [`delete_user_policy`]).
    Delete,
}

/// Why a user resource policy command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserPolicyError {
    /// A field breaks a rule (400 `invalid-api-params`).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The name is taken (400 `generic-bad-request`).
    #[error("integrity error: the user resource policy already exists")]
    AlreadyExists,
    /// No such policy (404 `object-not-found`).
    #[error("no such user resource policy")]
    NotFound,
}

impl From<UserPolicyError> for Problem {
    fn from(err: UserPolicyError) -> Problem {
        let kind = match err {
            UserPolicyError::Invalid { .. } => ProblemKind::InvalidApiParams,
            UserPolicyError::AlreadyExists => ProblemKind::GenericBadRequest,
            UserPolicyError::NotFound => ProblemKind::ObjectNotFound("user resource policy"),
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A user resource policy's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserPolicy {
    /// `None` until created.
    pub name: Option<String>,
    /// Its fields.
    pub fields: Option<UserPolicyFields>,
    /// Deleted.
    pub deleted: bool,
}

impl UserPolicy {
    /// The fields of a policy that exists and was not deleted.
    pub fn live(&self) -> Option<&UserPolicyFields> {
        if self.deleted {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

fn check(f: &UserPolicyFields) -> Result<(), UserPolicyError> {
    let invalid = |field, reason| Err(UserPolicyError::Invalid { field, reason });
    if f.max_vfolder_count < 0 {
        return invalid("max_vfolder_count", "it must not be negative (0: no limit)");
    }
    if f.max_quota_scope_size < -1 {
        return invalid(
            "max_quota_scope_size",
            "use a number of bytes, or -1 for no limit",
        );
    }
    if f.max_session_count_per_model_session < 0 {
        return invalid(
            "max_session_count_per_model_session",
            "it must not be negative",
        );
    }
    if f.max_customized_image_count < 0 {
        return invalid("max_customized_image_count", "it must not be negative");
    }
    Ok(())
}

/// The error for a name that cannot be a policy name.
pub(crate) const NAME_RULE: &str =
    "use 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit";

impl Aggregate for UserPolicy {
    const STREAM_TYPE: &'static str = manager_events::user_policy::STREAM_TYPE;
    type Command = UserPolicyCommand;
    type Event = UserPolicyEvent;
    type Error = UserPolicyError;

    fn apply(&mut self, event: &UserPolicyEvent) {
        match event {
            UserPolicyEvent::UserPolicyCreated { name, fields } => {
                self.name = Some(name.clone());
                self.fields = Some(fields.clone());
            }
            UserPolicyEvent::UserPolicyModified { fields } => self.fields = Some(fields.clone()),
            UserPolicyEvent::UserPolicyDeleted => self.deleted = true,
        }
    }

    fn decide(&self, command: &UserPolicyCommand) -> Result<Vec<UserPolicyEvent>, UserPolicyError> {
        match command {
            UserPolicyCommand::Create { name, fields } => {
                if !crate::domain::valid_name(name) {
                    return Err(UserPolicyError::Invalid {
                        field: "name",
                        reason: NAME_RULE,
                    });
                }
                if self.name.is_some() {
                    return Err(UserPolicyError::AlreadyExists);
                }
                check(fields)?;
                Ok(vec![UserPolicyEvent::UserPolicyCreated {
                    name: name.clone(),
                    fields: fields.clone(),
                }])
            }
            UserPolicyCommand::Modify(fields) => {
                let current = self.live().ok_or(UserPolicyError::NotFound)?;
                check(fields)?;
                Ok(if current == fields {
                    vec![]
                } else {
                    vec![UserPolicyEvent::UserPolicyModified {
                        fields: fields.clone(),
                    }]
                })
            }
            UserPolicyCommand::Delete => {
                self.live().ok_or(UserPolicyError::NotFound)?;
                Ok(vec![UserPolicyEvent::UserPolicyDeleted])
            }
        }
    }
}

/// Deletes a user resource policy unless a user refers to it (400
/// `generic-bad-request` naming the policy).
///
/// The references are counted in the `users` read model, so a user created
/// in the last moments (not yet projected) is not seen. (Creating a user does
/// not yet require its policy to exist, unlike a keypair's.)
pub async fn delete_user_policy(
    handler: &crate::handler::CommandHandler,
    name: &str,
    metadata: manager_events::EventMetadata,
) -> Result<Option<u64>, Problem> {
    if referenced(
        handler,
        "SELECT 1 FROM users WHERE resource_policy = $1 LIMIT 1",
        name,
    )
    .await?
    {
        return Err(Problem::new(ProblemKind::GenericBadRequest)
            .msg(format!("users still use the user resource policy {name:?}")));
    }
    handler
        .execute::<UserPolicy>(&stream_id(name), UserPolicyCommand::Delete, metadata)
        .await
        .map(|done| done.position)
        .map_err(Into::into)
}

/// The reference's default user policy (its example fixture and column
/// defaults): no vfolder count limit, no quota, 10 sessions per model
/// service, 3 customized images.
pub fn default_fields() -> UserPolicyFields {
    UserPolicyFields {
        max_vfolder_count: 0,
        max_quota_scope_size: -1,
        max_session_count_per_model_session: 10,
        max_customized_image_count: 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn created() -> UserPolicyEvent {
        UserPolicyEvent::UserPolicyCreated {
            name: "default".into(),
            fields: default_fields(),
        }
    }

    #[test]
    fn a_policy_is_created_once_with_a_valid_name() {
        Scenario::<UserPolicy>::given([])
            .when(UserPolicyCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            })
            .then([created()]);
        Scenario::<UserPolicy>::given([created()])
            .when(UserPolicyCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            })
            .then_error(UserPolicyError::AlreadyExists);
        Scenario::<UserPolicy>::given([])
            .when(UserPolicyCommand::Create {
                name: "a b".into(),
                fields: default_fields(),
            })
            .then_error(UserPolicyError::Invalid {
                field: "name",
                reason: NAME_RULE,
            });
    }

    #[test]
    fn limits_are_non_negative_and_minus_one_means_no_quota() {
        let with = |f: fn(&mut UserPolicyFields)| {
            let mut fields = default_fields();
            f(&mut fields);
            UserPolicy::default().decide(&UserPolicyCommand::Create {
                name: "p".into(),
                fields,
            })
        };
        assert!(with(|f| f.max_quota_scope_size = -1).is_ok());
        assert!(with(|f| f.max_quota_scope_size = 0).is_ok());
        assert!(with(|f| f.max_quota_scope_size = 1 << 40).is_ok());
        for (bad, field) in [
            (
                with(|f| f.max_quota_scope_size = -2),
                "max_quota_scope_size",
            ),
            (with(|f| f.max_vfolder_count = -1), "max_vfolder_count"),
            (
                with(|f| f.max_session_count_per_model_session = -1),
                "max_session_count_per_model_session",
            ),
            (
                with(|f| f.max_customized_image_count = -1),
                "max_customized_image_count",
            ),
        ] {
            assert!(
                matches!(bad, Err(UserPolicyError::Invalid { field: f, .. }) if f == field),
                "{field}: {bad:?}"
            );
        }
    }

    #[test]
    fn modifying_records_changes_only_and_deleting_ends_the_policy() {
        let changed = UserPolicyFields {
            max_vfolder_count: 5,
            ..default_fields()
        };
        Scenario::<UserPolicy>::given([created()])
            .when(UserPolicyCommand::Modify(changed.clone()))
            .then([UserPolicyEvent::UserPolicyModified { fields: changed }]);
        Scenario::<UserPolicy>::given([created()])
            .when(UserPolicyCommand::Modify(default_fields()))
            .then([]);
        Scenario::<UserPolicy>::given([created()])
            .when(UserPolicyCommand::Delete)
            .then([UserPolicyEvent::UserPolicyDeleted]);
        Scenario::<UserPolicy>::given([created(), UserPolicyEvent::UserPolicyDeleted])
            .when(UserPolicyCommand::Modify(default_fields()))
            .then_error(UserPolicyError::NotFound);
        Scenario::<UserPolicy>::given([])
            .when(UserPolicyCommand::Delete)
            .then_error(UserPolicyError::NotFound);
    }
}
