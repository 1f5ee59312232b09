//! Project resource policies: the aggregate and its deletion rule.
//!
//! Limits follow the reference's conventions: `max_vfolder_count` 0 means no
//! limit, `max_quota_scope_size` -1 (or 0) means no quota, and
//! `max_network_count` -1 means no limit.

use manager_events::project_policy::{ProjectPolicyEvent, ProjectPolicyFields};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;
use crate::policy::referenced;
use crate::user_policy::NAME_RULE;

pub use manager_events::project_policy::stream_id;

/// Commands on a project resource policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectPolicyCommand {
    /// Creates it.
    Create {
        /// Its name (its identity).
        name: String,
        /// Its fields.
        fields: ProjectPolicyFields,
    },
    /// Replaces its fields.
    Modify(ProjectPolicyFields),
    /// Deletes it (the caller checks that no project refers to it; see
    /// [`delete_project_policy`]).
    Delete,
}

/// Why a project resource policy command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectPolicyError {
    /// A field breaks a rule (400 `invalid-api-params`).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The name is taken (400 `generic-bad-request`).
    #[error("integrity error: the project resource policy already exists")]
    AlreadyExists,
    /// No such policy (404 `object-not-found`).
    #[error("no such project resource policy")]
    NotFound,
}

impl From<ProjectPolicyError> for Problem {
    fn from(err: ProjectPolicyError) -> Problem {
        let kind = match err {
            ProjectPolicyError::Invalid { .. } => ProblemKind::InvalidApiParams,
            ProjectPolicyError::AlreadyExists => ProblemKind::GenericBadRequest,
            ProjectPolicyError::NotFound => ProblemKind::ObjectNotFound("project resource policy"),
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A project resource policy's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProjectPolicy {
    /// `None` until created.
    pub name: Option<String>,
    /// Its fields.
    pub fields: Option<ProjectPolicyFields>,
    /// Deleted.
    pub deleted: bool,
}

impl ProjectPolicy {
    /// The fields of a policy that exists and was not deleted.
    pub fn live(&self) -> Option<&ProjectPolicyFields> {
        if self.deleted {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

fn check(f: &ProjectPolicyFields) -> Result<(), ProjectPolicyError> {
    let invalid = |field, reason| Err(ProjectPolicyError::Invalid { field, reason });
    if f.max_vfolder_count < 0 {
        return invalid("max_vfolder_count", "it must not be negative (0: no limit)");
    }
    if f.max_quota_scope_size < -1 {
        return invalid(
            "max_quota_scope_size",
            "use a number of bytes, or -1 for no limit",
        );
    }
    if f.max_network_count < -1 {
        return invalid("max_network_count", "use a count, or -1 for no limit");
    }
    Ok(())
}

impl Aggregate for ProjectPolicy {
    const STREAM_TYPE: &'static str = manager_events::project_policy::STREAM_TYPE;
    type Command = ProjectPolicyCommand;
    type Event = ProjectPolicyEvent;
    type Error = ProjectPolicyError;

    fn apply(&mut self, event: &ProjectPolicyEvent) {
        match event {
            ProjectPolicyEvent::ProjectPolicyCreated { name, fields } => {
                self.name = Some(name.clone());
                self.fields = Some(fields.clone());
            }
            ProjectPolicyEvent::ProjectPolicyModified { fields } => {
                self.fields = Some(fields.clone())
            }
            ProjectPolicyEvent::ProjectPolicyDeleted => self.deleted = true,
        }
    }

    fn decide(
        &self,
        command: &ProjectPolicyCommand,
    ) -> Result<Vec<ProjectPolicyEvent>, ProjectPolicyError> {
        match command {
            ProjectPolicyCommand::Create { name, fields } => {
                if !crate::domain::valid_name(name) {
                    return Err(ProjectPolicyError::Invalid {
                        field: "name",
                        reason: NAME_RULE,
                    });
                }
                if self.name.is_some() {
                    return Err(ProjectPolicyError::AlreadyExists);
                }
                check(fields)?;
                Ok(vec![ProjectPolicyEvent::ProjectPolicyCreated {
                    name: name.clone(),
                    fields: fields.clone(),
                }])
            }
            ProjectPolicyCommand::Modify(fields) => {
                let current = self.live().ok_or(ProjectPolicyError::NotFound)?;
                check(fields)?;
                Ok(if current == fields {
                    vec![]
                } else {
                    vec![ProjectPolicyEvent::ProjectPolicyModified {
                        fields: fields.clone(),
                    }]
                })
            }
            ProjectPolicyCommand::Delete => {
                self.live().ok_or(ProjectPolicyError::NotFound)?;
                Ok(vec![ProjectPolicyEvent::ProjectPolicyDeleted])
            }
        }
    }
}

/// Deletes a project resource policy unless a project refers to it (400
/// `generic-bad-request` naming the policy).
///
/// The references are counted in the `groups` read model, so a project
/// created in the last moments (not yet projected) is not seen. (Creating a
/// project does not yet require its policy to exist, unlike a keypair's.)
pub async fn delete_project_policy(
    handler: &crate::handler::CommandHandler,
    name: &str,
    metadata: manager_events::EventMetadata,
) -> Result<Option<u64>, Problem> {
    if referenced(
        handler,
        "SELECT 1 FROM groups WHERE resource_policy = $1 LIMIT 1",
        name,
    )
    .await?
    {
        return Err(Problem::new(ProblemKind::GenericBadRequest).msg(format!(
            "projects still use the project resource policy {name:?}"
        )));
    }
    handler
        .execute::<ProjectPolicy>(&stream_id(name), ProjectPolicyCommand::Delete, metadata)
        .await
        .map(|done| done.position)
        .map_err(Into::into)
}

/// The reference's default project policy (its example fixture): no vfolder
/// count limit, no quota, 3 networks.
pub fn default_fields() -> ProjectPolicyFields {
    ProjectPolicyFields {
        max_vfolder_count: 0,
        max_quota_scope_size: -1,
        max_network_count: 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn created() -> ProjectPolicyEvent {
        ProjectPolicyEvent::ProjectPolicyCreated {
            name: "default".into(),
            fields: default_fields(),
        }
    }

    #[test]
    fn a_policy_is_created_once_with_a_valid_name() {
        Scenario::<ProjectPolicy>::given([])
            .when(ProjectPolicyCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            })
            .then([created()]);
        Scenario::<ProjectPolicy>::given([created()])
            .when(ProjectPolicyCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            })
            .then_error(ProjectPolicyError::AlreadyExists);
        Scenario::<ProjectPolicy>::given([])
            .when(ProjectPolicyCommand::Create {
                name: "-x".into(),
                fields: default_fields(),
            })
            .then_error(ProjectPolicyError::Invalid {
                field: "name",
                reason: NAME_RULE,
            });
    }

    #[test]
    fn limits_are_non_negative_and_minus_one_means_no_limit() {
        let with = |f: fn(&mut ProjectPolicyFields)| {
            let mut fields = default_fields();
            f(&mut fields);
            ProjectPolicy::default().decide(&ProjectPolicyCommand::Create {
                name: "p".into(),
                fields,
            })
        };
        assert!(with(|f| f.max_network_count = -1).is_ok());
        assert!(with(|f| f.max_quota_scope_size = -1).is_ok());
        for (bad, field) in [
            (with(|f| f.max_network_count = -2), "max_network_count"),
            (
                with(|f| f.max_quota_scope_size = -5),
                "max_quota_scope_size",
            ),
            (with(|f| f.max_vfolder_count = -1), "max_vfolder_count"),
        ] {
            assert!(
                matches!(bad, Err(ProjectPolicyError::Invalid { field: f, .. }) if f == field),
                "{field}: {bad:?}"
            );
        }
    }

    #[test]
    fn modifying_records_changes_only_and_deleting_ends_the_policy() {
        let changed = ProjectPolicyFields {
            max_network_count: -1,
            ..default_fields()
        };
        Scenario::<ProjectPolicy>::given([created()])
            .when(ProjectPolicyCommand::Modify(changed.clone()))
            .then([ProjectPolicyEvent::ProjectPolicyModified { fields: changed }]);
        Scenario::<ProjectPolicy>::given([created()])
            .when(ProjectPolicyCommand::Modify(default_fields()))
            .then([]);
        Scenario::<ProjectPolicy>::given([created()])
            .when(ProjectPolicyCommand::Delete)
            .then([ProjectPolicyEvent::ProjectPolicyDeleted]);
        Scenario::<ProjectPolicy>::given([created(), ProjectPolicyEvent::ProjectPolicyDeleted])
            .when(ProjectPolicyCommand::Delete)
            .then_error(ProjectPolicyError::NotFound);
    }
}
