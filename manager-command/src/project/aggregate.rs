//! The project aggregate.

use std::collections::BTreeSet;

use manager_events::project::{ProjectEvent, ProjectFields, ProjectPatch};
use manager_events::{Problem, ProblemKind};
use uuid::Uuid;

use crate::aggregate::Aggregate;

/// Commands on a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectCommand {
    /// Creates it (name uniqueness within the domain is the workflow's).
    Create {
        /// Its id.
        id: Uuid,
        /// Its fields.
        fields: ProjectFields,
    },
    /// Changes some fields.
    Modify(ProjectPatch),
    /// Soft delete.
    Deactivate,
    /// Hard delete; refused while it has members.
    Purge,
    /// Adds a user (the workflow checks the user).
    AddMember(Uuid),
    /// Removes a user.
    RemoveMember(Uuid),
}

/// Why a project command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    /// A field breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The project exists already.
    #[error("integrity error: the project already exists")]
    AlreadyExists,
    /// No such project.
    #[error("no such project")]
    NotFound,
    /// Users still belong to it.
    #[error("the project still has {0} member(s)")]
    HasMembers(usize),
    /// Members cannot join an inactive project.
    #[error("the project is inactive")]
    Inactive,
}

impl From<ProjectError> for Problem {
    fn from(err: ProjectError) -> Problem {
        let kind = match err {
            ProjectError::Invalid { .. } => ProblemKind::InvalidApiParams,
            ProjectError::NotFound => ProblemKind::ObjectNotFound("user group (or project)"),
            _ => ProblemKind::GenericBadRequest,
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A project's state as folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Project {
    /// `None` until created.
    pub id: Option<Uuid>,
    /// Its fields.
    pub fields: Option<ProjectFields>,
    /// Its members.
    pub members: BTreeSet<Uuid>,
    /// Purged for good.
    pub purged: bool,
}

impl Project {
    /// The fields of a project that exists and was not purged.
    pub fn live(&self) -> Option<&ProjectFields> {
        if self.purged {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

fn check(f: &ProjectFields) -> Result<(), ProjectError> {
    let name_ok = !f.name.trim().is_empty()
        && f.name.chars().count() <= 64
        && !f.name.chars().any(char::is_control);
    if !name_ok {
        return Err(ProjectError::Invalid {
            field: "name",
            reason: "use 1-64 characters without control characters",
        });
    }
    if f.domain_name.trim().is_empty() {
        return Err(ProjectError::Invalid {
            field: "domain_name",
            reason: "it is empty",
        });
    }
    if f.resource_policy.trim().is_empty() {
        return Err(ProjectError::Invalid {
            field: "resource_policy",
            reason: "it is empty",
        });
    }
    for v in f.total_resource_slots.values() {
        if v.parse::<f64>().map_or(true, |n| !n.is_finite() || n < 0.0) {
            return Err(ProjectError::Invalid {
                field: "total_resource_slots",
                reason: "quotas are non-negative numbers",
            });
        }
    }
    Ok(())
}

impl Aggregate for Project {
    const STREAM_TYPE: &'static str = manager_events::project::STREAM_TYPE;
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = ProjectError;

    fn apply(&mut self, event: &ProjectEvent) {
        match event {
            ProjectEvent::ProjectCreated { id, fields } => {
                self.id = Some(*id);
                self.fields = Some(fields.clone());
            }
            ProjectEvent::ProjectModified(p) => {
                if let Some(f) = self.fields.as_mut() {
                    if let Some(v) = &p.description {
                        f.description = v.clone();
                    }
                    if let Some(v) = p.is_active {
                        f.is_active = v;
                    }
                    if let Some(v) = &p.total_resource_slots {
                        f.total_resource_slots = v.clone();
                    }
                    if let Some(v) = &p.allowed_vfolder_hosts {
                        f.allowed_vfolder_hosts = v.clone();
                    }
                    if let Some(v) = &p.integration_id {
                        f.integration_id = Some(v.clone()).filter(|v| !v.is_empty());
                    }
                    if let Some(v) = &p.resource_policy {
                        f.resource_policy = v.clone();
                    }
                }
            }
            ProjectEvent::ProjectDeactivated => {
                if let Some(f) = self.fields.as_mut() {
                    f.is_active = false;
                }
            }
            ProjectEvent::ProjectPurged => self.purged = true,
            ProjectEvent::ProjectMemberAdded { user_uuid } => {
                self.members.insert(*user_uuid);
            }
            ProjectEvent::ProjectMemberRemoved { user_uuid } => {
                self.members.remove(user_uuid);
            }
        }
    }

    fn decide(&self, command: &ProjectCommand) -> Result<Vec<ProjectEvent>, ProjectError> {
        match command {
            ProjectCommand::Create { id, fields } => {
                if self.id.is_some() {
                    return Err(ProjectError::AlreadyExists);
                }
                check(fields)?;
                Ok(vec![ProjectEvent::ProjectCreated {
                    id: *id,
                    fields: fields.clone(),
                }])
            }
            ProjectCommand::Modify(patch) => {
                let current = self.live().ok_or(ProjectError::NotFound)?;
                let mut probe = self.clone();
                probe.apply(&ProjectEvent::ProjectModified(patch.clone()));
                let next = probe.fields.unwrap_or_else(|| current.clone());
                check(&next)?;
                Ok(if next == *current {
                    vec![]
                } else {
                    vec![ProjectEvent::ProjectModified(patch.clone())]
                })
            }
            ProjectCommand::Deactivate => {
                let f = self.live().ok_or(ProjectError::NotFound)?;
                Ok(if f.is_active {
                    vec![ProjectEvent::ProjectDeactivated]
                } else {
                    vec![]
                })
            }
            ProjectCommand::Purge => {
                self.live().ok_or(ProjectError::NotFound)?;
                if !self.members.is_empty() {
                    return Err(ProjectError::HasMembers(self.members.len()));
                }
                Ok(vec![ProjectEvent::ProjectPurged])
            }
            ProjectCommand::AddMember(user) => {
                let f = self.live().ok_or(ProjectError::NotFound)?;
                if !f.is_active {
                    return Err(ProjectError::Inactive);
                }
                Ok(if self.members.contains(user) {
                    vec![]
                } else {
                    vec![ProjectEvent::ProjectMemberAdded { user_uuid: *user }]
                })
            }
            ProjectCommand::RemoveMember(user) => {
                self.live().ok_or(ProjectError::NotFound)?;
                Ok(if self.members.contains(user) {
                    vec![ProjectEvent::ProjectMemberRemoved { user_uuid: *user }]
                } else {
                    vec![]
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn fields() -> ProjectFields {
        ProjectFields {
            name: "research".into(),
            domain_name: "default".into(),
            description: String::new(),
            is_active: true,
            total_resource_slots: Default::default(),
            allowed_vfolder_hosts: Default::default(),
            integration_id: None,
            resource_policy: "default".into(),
        }
    }

    fn created() -> ProjectEvent {
        ProjectEvent::ProjectCreated {
            id: Uuid::from_u128(9),
            fields: fields(),
        }
    }

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn create_validate_and_refuse_twice() {
        Scenario::<Project>::given([])
            .when(ProjectCommand::Create {
                id: u(9),
                fields: fields(),
            })
            .then([created()]);
        Scenario::<Project>::given([created()])
            .when(ProjectCommand::Create {
                id: u(9),
                fields: fields(),
            })
            .then_error(ProjectError::AlreadyExists);
        let mut bad = fields();
        bad.name = "\u{7}".into();
        assert!(matches!(
            Project::default().decide(&ProjectCommand::Create {
                id: u(9),
                fields: bad
            }),
            Err(ProjectError::Invalid { field: "name", .. })
        ));
        let mut bad = fields();
        bad.total_resource_slots.insert("cpu".into(), "-2".into());
        assert!(
            Project::default()
                .decide(&ProjectCommand::Create {
                    id: u(9),
                    fields: bad
                })
                .is_err()
        );
    }

    #[test]
    fn members_join_active_projects_and_block_purge() {
        Scenario::<Project>::given([created()])
            .when(ProjectCommand::AddMember(u(1)))
            .then([ProjectEvent::ProjectMemberAdded { user_uuid: u(1) }]);
        Scenario::<Project>::given([
            created(),
            ProjectEvent::ProjectMemberAdded { user_uuid: u(1) },
        ])
        .when(ProjectCommand::Purge)
        .then_error(ProjectError::HasMembers(1));
        Scenario::<Project>::given([created(), ProjectEvent::ProjectDeactivated])
            .when(ProjectCommand::AddMember(u(1)))
            .then_error(ProjectError::Inactive);
        Scenario::<Project>::given([
            created(),
            ProjectEvent::ProjectMemberAdded { user_uuid: u(1) },
            ProjectEvent::ProjectMemberRemoved { user_uuid: u(1) },
        ])
        .when(ProjectCommand::Purge)
        .then([ProjectEvent::ProjectPurged]);
    }
}
