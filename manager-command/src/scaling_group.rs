//! Scaling groups: the aggregate.

use std::collections::BTreeSet;

use manager_events::scaling_group::{ScalingGroupEvent, ScalingGroupFields, ScalingGroupTarget};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;

pub use manager_events::scaling_group::stream_id;

/// Commands on a scaling group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScalingGroupCommand {
    /// Creates it.
    Create {
        /// Its name (its identity).
        name: String,
        /// Its fields.
        fields: ScalingGroupFields,
    },
    /// Replaces its fields.
    Modify(ScalingGroupFields),
    /// Deletes it; refused while domains, projects or keypairs are associated.
    Delete,
    /// Lets a domain, project or keypair use it.
    Associate(ScalingGroupTarget),
    /// Stops a domain, project or keypair from using it.
    Disassociate(ScalingGroupTarget),
}

/// Why a scaling group command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScalingGroupError {
    /// A field breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The name is taken.
    #[error("integrity error: the scaling group already exists")]
    AlreadyExists,
    /// No such scaling group.
    #[error("no such scaling group")]
    NotFound,
    /// Still associated.
    #[error("the scaling group is still associated with {0} domain(s), project(s) or keypair(s)")]
    Associated(usize),
}

impl From<ScalingGroupError> for Problem {
    fn from(err: ScalingGroupError) -> Problem {
        let kind = match err {
            ScalingGroupError::Invalid { .. } => ProblemKind::InvalidApiParams,
            ScalingGroupError::NotFound => ProblemKind::ObjectNotFound("scaling group"),
            _ => ProblemKind::GenericBadRequest,
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A scaling group's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScalingGroup {
    /// `None` until created.
    pub name: Option<String>,
    /// Its fields.
    pub fields: Option<ScalingGroupFields>,
    /// Who may use it.
    pub associations: BTreeSet<ScalingGroupTarget>,
    /// Deleted.
    pub deleted: bool,
}

impl ScalingGroup {
    /// The fields of a scaling group that exists and was not deleted.
    pub fn live(&self) -> Option<&ScalingGroupFields> {
        if self.deleted {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

fn check(f: &ScalingGroupFields) -> Result<(), ScalingGroupError> {
    if !matches!(f.scheduler.as_str(), "fifo" | "lifo" | "drf") {
        return Err(ScalingGroupError::Invalid {
            field: "scheduler",
            reason: "use fifo, lifo or drf",
        });
    }
    if f.driver.trim().is_empty() {
        return Err(ScalingGroupError::Invalid {
            field: "driver",
            reason: "it is empty",
        });
    }
    if !f.scheduler_opts.is_object() || !f.driver_opts.is_object() {
        return Err(ScalingGroupError::Invalid {
            field: "scheduler_opts",
            reason: "options are JSON objects",
        });
    }
    Ok(())
}

impl Aggregate for ScalingGroup {
    const STREAM_TYPE: &'static str = manager_events::scaling_group::STREAM_TYPE;
    type Command = ScalingGroupCommand;
    type Event = ScalingGroupEvent;
    type Error = ScalingGroupError;

    fn apply(&mut self, event: &ScalingGroupEvent) {
        match event {
            ScalingGroupEvent::ScalingGroupCreated { name, fields } => {
                self.name = Some(name.clone());
                self.fields = Some(fields.clone());
            }
            ScalingGroupEvent::ScalingGroupModified { fields } => {
                self.fields = Some(fields.clone())
            }
            ScalingGroupEvent::ScalingGroupDeleted => self.deleted = true,
            ScalingGroupEvent::ScalingGroupAssociated { target } => {
                self.associations.insert(target.clone());
            }
            ScalingGroupEvent::ScalingGroupDisassociated { target } => {
                self.associations.remove(target);
            }
        }
    }

    fn decide(
        &self,
        command: &ScalingGroupCommand,
    ) -> Result<Vec<ScalingGroupEvent>, ScalingGroupError> {
        match command {
            ScalingGroupCommand::Create { name, fields } => {
                if !crate::domain::valid_name(name) {
                    return Err(ScalingGroupError::Invalid {
                        field: "name",
                        reason: "use 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit",
                    });
                }
                if self.name.is_some() {
                    return Err(ScalingGroupError::AlreadyExists);
                }
                check(fields)?;
                Ok(vec![ScalingGroupEvent::ScalingGroupCreated {
                    name: name.clone(),
                    fields: fields.clone(),
                }])
            }
            ScalingGroupCommand::Modify(fields) => {
                let current = self.live().ok_or(ScalingGroupError::NotFound)?;
                check(fields)?;
                Ok(if current == fields {
                    vec![]
                } else {
                    vec![ScalingGroupEvent::ScalingGroupModified {
                        fields: fields.clone(),
                    }]
                })
            }
            ScalingGroupCommand::Delete => {
                self.live().ok_or(ScalingGroupError::NotFound)?;
                if !self.associations.is_empty() {
                    return Err(ScalingGroupError::Associated(self.associations.len()));
                }
                Ok(vec![ScalingGroupEvent::ScalingGroupDeleted])
            }
            ScalingGroupCommand::Associate(target) => {
                self.live().ok_or(ScalingGroupError::NotFound)?;
                Ok(if self.associations.contains(target) {
                    vec![]
                } else {
                    vec![ScalingGroupEvent::ScalingGroupAssociated {
                        target: target.clone(),
                    }]
                })
            }
            ScalingGroupCommand::Disassociate(target) => {
                self.live().ok_or(ScalingGroupError::NotFound)?;
                Ok(if self.associations.contains(target) {
                    vec![ScalingGroupEvent::ScalingGroupDisassociated {
                        target: target.clone(),
                    }]
                } else {
                    vec![]
                })
            }
        }
    }
}

/// Fields of a plain scaling group: active, public, static driver, FIFO.
pub fn default_fields() -> ScalingGroupFields {
    ScalingGroupFields {
        description: String::new(),
        is_active: true,
        is_public: true,
        driver: "static".into(),
        driver_opts: serde_json::json!({}),
        scheduler: "fifo".into(),
        scheduler_opts: serde_json::json!({}),
        use_host_network: false,
        wsproxy_addr: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn created() -> ScalingGroupEvent {
        ScalingGroupEvent::ScalingGroupCreated {
            name: "default".into(),
            fields: default_fields(),
        }
    }

    #[test]
    fn scaling_groups_validate_and_track_associations() {
        Scenario::<ScalingGroup>::given([])
            .when(ScalingGroupCommand::Create {
                name: "default".into(),
                fields: default_fields(),
            })
            .then([created()]);
        let bad = ScalingGroupFields {
            scheduler: "random".into(),
            ..default_fields()
        };
        assert!(matches!(
            ScalingGroup::default().decide(&ScalingGroupCommand::Create {
                name: "x".into(),
                fields: bad
            }),
            Err(ScalingGroupError::Invalid {
                field: "scheduler",
                ..
            })
        ));
        let domain = ScalingGroupTarget::Domain("default".into());
        Scenario::<ScalingGroup>::given([created()])
            .when(ScalingGroupCommand::Associate(domain.clone()))
            .then([ScalingGroupEvent::ScalingGroupAssociated {
                target: domain.clone(),
            }]);
        Scenario::<ScalingGroup>::given([
            created(),
            ScalingGroupEvent::ScalingGroupAssociated {
                target: domain.clone(),
            },
        ])
        .when(ScalingGroupCommand::Delete)
        .then_error(ScalingGroupError::Associated(1));
        Scenario::<ScalingGroup>::given([
            created(),
            ScalingGroupEvent::ScalingGroupAssociated {
                target: domain.clone(),
            },
            ScalingGroupEvent::ScalingGroupDisassociated { target: domain },
        ])
        .when(ScalingGroupCommand::Delete)
        .then([ScalingGroupEvent::ScalingGroupDeleted]);
    }
}

/// Associates a scaling group with a domain, project or keypair that exists
/// (and is not deleted); the target's version is a precondition of the append.
#[derive(Debug, Clone)]
pub struct AssociateScalingGroup {
    /// The scaling group.
    pub name: String,
    /// Who may use it.
    pub target: ScalingGroupTarget,
}

impl crate::handler::Workflow for AssociateScalingGroup {
    type Output = ();

    async fn run(&self, tx: &mut crate::handler::Tx<'_>) -> Result<(), Problem> {
        let exists = match &self.target {
            ScalingGroupTarget::Domain(d) => {
                let domain = tx
                    .load::<crate::domain::Domain>(&crate::domain::stream_id(d))
                    .await?;
                domain.name.is_some() && !domain.purged
            }
            ScalingGroupTarget::Project(p) => tx
                .load::<crate::project::Project>(&crate::project::stream_id(p))
                .await?
                .live()
                .is_some(),
            ScalingGroupTarget::Keypair(ak) => tx
                .load::<crate::keypair::Keypair>(&crate::keypair::stream_id(ak))
                .await?
                .live()
                .is_some(),
        };
        if !exists {
            return Err(
                Problem::new(ProblemKind::ObjectNotFound("association target"))
                    .msg(format!("{:?} does not exist", self.target)),
            );
        }
        tx.decide::<ScalingGroup>(
            &stream_id(&self.name),
            &ScalingGroupCommand::Associate(self.target.clone()),
        )
        .await?;
        Ok(())
    }
}
