//! The domain aggregate.

use std::collections::{BTreeMap, BTreeSet};

pub use manager_events::domain::{DomainEvent, DomainFields, DomainPatch, MemberKind};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;

/// Commands on a domain.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainCommand {
    /// Creates the domain; refused if the name is taken.
    Create {
        /// The name (its identity).
        name: String,
        /// Initial fields.
        fields: DomainFields,
    },
    /// Changes some fields.
    Modify(DomainPatch),
    /// Soft delete, as the reference's `delete_domain`: marks it inactive.
    Deactivate,
    /// Hard delete, as `purge_domain`: refused while users or projects remain.
    Purge,
    /// Records a user or project joining (appended with its creation).
    AddMember {
        /// User or project.
        kind: MemberKind,
        /// Its id.
        id: String,
    },
    /// Records a user or project leaving (appended with its purge).
    RemoveMember {
        /// User or project.
        kind: MemberKind,
        /// Its id.
        id: String,
    },
}

/// Why a domain command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The name breaks the naming rule.
    #[error(
        "invalid domain name {0:?}: use 1-64 ASCII letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    InvalidName(String),
    /// A slot quota is not a non-negative decimal.
    #[error("invalid quota for slot {slot:?}: {value:?} is not a non-negative number")]
    InvalidSlot {
        /// The slot name.
        slot: String,
        /// The offending value.
        value: String,
    },
    /// A domain with this name exists (or existed and was purged).
    #[error("domain {0:?} already exists")]
    AlreadyExists(String),
    /// No such domain.
    #[error("no such domain")]
    NotFound,
    /// Users or projects still belong to it.
    #[error("domain {name:?} still has {users} user(s) and {projects} project(s)")]
    HasMembers {
        /// The domain.
        name: String,
        /// Users left.
        users: usize,
        /// Projects left.
        projects: usize,
    },
    /// New members cannot join an inactive domain.
    #[error("domain {0:?} is inactive")]
    Inactive(String),
}

impl From<DomainError> for Problem {
    fn from(err: DomainError) -> Problem {
        let kind = match err {
            DomainError::NotFound => ProblemKind::ObjectNotFound("domain"),
            DomainError::InvalidName(_) | DomainError::InvalidSlot { .. } => {
                ProblemKind::InvalidApiParams
            }
            DomainError::AlreadyExists(_)
            | DomainError::HasMembers { .. }
            | DomainError::Inactive(_) => ProblemKind::GenericBadRequest,
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A domain's state as folded from its stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Domain {
    /// `None` until created.
    pub name: Option<String>,
    /// Its fields.
    pub fields: DomainFields,
    /// Purged for good.
    pub purged: bool,
    /// Current members.
    pub members: BTreeSet<(MemberKind, String)>,
}

impl Domain {
    fn live_name(&self) -> Result<&str, DomainError> {
        match &self.name {
            Some(name) if !self.purged => Ok(name),
            _ => Err(DomainError::NotFound),
        }
    }

    fn count(&self, kind: MemberKind) -> usize {
        self.members.iter().filter(|(k, _)| *k == kind).count()
    }
}

/// Names that are also stream ids (domains, policies): 1–64 ASCII letters,
/// digits, `-`, `_`, `.`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn validate_slots(slots: &BTreeMap<String, String>) -> Result<(), DomainError> {
    for (slot, value) in slots {
        let numeric = !value.is_empty()
            && value.bytes().filter(|b| *b == b'.').count() <= 1
            && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && value.bytes().any(|b| b.is_ascii_digit());
        if !numeric || slot.is_empty() {
            return Err(DomainError::InvalidSlot {
                slot: slot.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(())
}

impl Aggregate for Domain {
    const STREAM_TYPE: &'static str = manager_events::domain::STREAM_TYPE;
    type Command = DomainCommand;
    type Event = DomainEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::DomainCreated { name, fields } => {
                self.name = Some(name.clone());
                self.fields = fields.clone();
            }
            DomainEvent::DomainModified(patch) => {
                let f = &mut self.fields;
                if let Some(v) = &patch.description {
                    f.description = v.clone();
                }
                if let Some(v) = patch.is_active {
                    f.is_active = v;
                }
                if let Some(v) = &patch.total_resource_slots {
                    f.total_resource_slots = v.clone();
                }
                if let Some(v) = &patch.allowed_vfolder_hosts {
                    f.allowed_vfolder_hosts = v.clone();
                }
                if let Some(v) = &patch.allowed_docker_registries {
                    f.allowed_docker_registries = v.clone();
                }
                if let Some(v) = &patch.integration_id {
                    f.integration_id = Some(v.clone()).filter(|v| !v.is_empty());
                }
            }
            DomainEvent::DomainDeactivated => self.fields.is_active = false,
            DomainEvent::DomainPurged => self.purged = true,
            DomainEvent::DomainMemberJoined { kind, id } => {
                self.members.insert((*kind, id.clone()));
            }
            DomainEvent::DomainMemberLeft { kind, id } => {
                self.members.remove(&(*kind, id.clone()));
            }
        }
    }

    fn decide(&self, command: &DomainCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            DomainCommand::Create { name, fields } => {
                if !valid_name(name) {
                    return Err(DomainError::InvalidName(name.clone()));
                }
                if self.name.is_some() {
                    return Err(DomainError::AlreadyExists(name.clone()));
                }
                validate_slots(&fields.total_resource_slots)?;
                Ok(vec![DomainEvent::DomainCreated {
                    name: name.clone(),
                    fields: fields.clone(),
                }])
            }
            DomainCommand::Modify(patch) => {
                self.live_name()?;
                if let Some(slots) = &patch.total_resource_slots {
                    validate_slots(slots)?;
                }
                if *patch == DomainPatch::default() {
                    return Ok(vec![]);
                }
                Ok(vec![DomainEvent::DomainModified(patch.clone())])
            }
            DomainCommand::Deactivate => {
                self.live_name()?;
                Ok(if self.fields.is_active {
                    vec![DomainEvent::DomainDeactivated]
                } else {
                    vec![]
                })
            }
            DomainCommand::Purge => {
                let name = self.live_name()?;
                if !self.members.is_empty() {
                    return Err(DomainError::HasMembers {
                        name: name.to_owned(),
                        users: self.count(MemberKind::User),
                        projects: self.count(MemberKind::Project),
                    });
                }
                Ok(vec![DomainEvent::DomainPurged])
            }
            DomainCommand::AddMember { kind, id } => {
                let name = self.live_name()?;
                if !self.fields.is_active {
                    return Err(DomainError::Inactive(name.to_owned()));
                }
                if self.members.contains(&(*kind, id.clone())) {
                    return Ok(vec![]);
                }
                Ok(vec![DomainEvent::DomainMemberJoined {
                    kind: *kind,
                    id: id.clone(),
                }])
            }
            DomainCommand::RemoveMember { kind, id } => {
                self.live_name()?;
                if !self.members.contains(&(*kind, id.clone())) {
                    return Ok(vec![]);
                }
                Ok(vec![DomainEvent::DomainMemberLeft {
                    kind: *kind,
                    id: id.clone(),
                }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn created(name: &str) -> DomainEvent {
        DomainEvent::DomainCreated {
            name: name.into(),
            fields: active(),
        }
    }

    fn active() -> DomainFields {
        DomainFields {
            is_active: true,
            ..DomainFields::default()
        }
    }

    fn create(name: &str) -> DomainCommand {
        DomainCommand::Create {
            name: name.into(),
            fields: active(),
        }
    }

    fn member(id: &str) -> DomainEvent {
        DomainEvent::DomainMemberJoined {
            kind: MemberKind::User,
            id: id.into(),
        }
    }

    #[test]
    fn a_new_name_creates_a_domain() {
        Scenario::<Domain>::given([])
            .when(create("default"))
            .then([created("default")]);
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        Scenario::<Domain>::given([created("default")])
            .when(create("default"))
            .then_error(DomainError::AlreadyExists("default".into()));
        for bad in ["", "-x", "a b", "a/b", "été", &"x".repeat(65)] {
            Scenario::<Domain>::given([])
                .when(create(bad))
                .then_error(DomainError::InvalidName(bad.into()));
        }
        // A purged name is not silently reused: its stream still holds the history.
        Scenario::<Domain>::given([created("old"), DomainEvent::DomainPurged])
            .when(create("old"))
            .then_error(DomainError::AlreadyExists("old".into()));
    }

    #[test]
    fn quotas_must_be_numbers() {
        let fields = DomainFields {
            total_resource_slots: BTreeMap::from([("cpu".into(), "-1".into())]),
            ..active()
        };
        Scenario::<Domain>::given([])
            .when(DomainCommand::Create {
                name: "d".into(),
                fields,
            })
            .then_error(DomainError::InvalidSlot {
                slot: "cpu".into(),
                value: "-1".into(),
            });
        let ok = DomainPatch {
            total_resource_slots: Some(BTreeMap::from([("cuda.device".into(), "2.5".into())])),
            ..DomainPatch::default()
        };
        Scenario::<Domain>::given([created("d")])
            .when(DomainCommand::Modify(ok.clone()))
            .then([DomainEvent::DomainModified(ok)]);
        let clear = DomainPatch {
            integration_id: Some(String::new()),
            ..DomainPatch::default()
        };
        Scenario::<Domain>::given([created("d")])
            .when(DomainCommand::Modify(clear.clone()))
            .then([DomainEvent::DomainModified(clear)]);
    }

    #[test]
    fn modify_and_deactivate_need_a_live_domain_and_are_idempotent() {
        Scenario::<Domain>::given([])
            .when(DomainCommand::Modify(DomainPatch::default()))
            .then_error(DomainError::NotFound);
        Scenario::<Domain>::given([created("d")])
            .when(DomainCommand::Modify(DomainPatch::default()))
            .then([]);
        Scenario::<Domain>::given([created("d")])
            .when(DomainCommand::Deactivate)
            .then([DomainEvent::DomainDeactivated]);
        Scenario::<Domain>::given([created("d"), DomainEvent::DomainDeactivated])
            .when(DomainCommand::Deactivate)
            .then([]);
        Scenario::<Domain>::given([created("d"), DomainEvent::DomainPurged])
            .when(DomainCommand::Deactivate)
            .then_error(DomainError::NotFound);
    }

    #[test]
    fn a_domain_with_members_cannot_be_purged() {
        Scenario::<Domain>::given([created("d"), member("u1"), member("u2")])
            .when(DomainCommand::Purge)
            .then_error(DomainError::HasMembers {
                name: "d".into(),
                users: 2,
                projects: 0,
            });
        Scenario::<Domain>::given([
            created("d"),
            member("u1"),
            DomainEvent::DomainMemberLeft {
                kind: MemberKind::User,
                id: "u1".into(),
            },
        ])
        .when(DomainCommand::Purge)
        .then([DomainEvent::DomainPurged]);
    }

    #[test]
    fn members_join_only_active_domains() {
        Scenario::<Domain>::given([created("d"), DomainEvent::DomainDeactivated])
            .when(DomainCommand::AddMember {
                kind: MemberKind::Project,
                id: "p".into(),
            })
            .then_error(DomainError::Inactive("d".into()));
        Scenario::<Domain>::given([created("d"), member("u1")])
            .when(DomainCommand::AddMember {
                kind: MemberKind::User,
                id: "u1".into(),
            })
            .then([]);
    }
}
