//! Resource presets: the aggregate.
//!
//! A preset names an amount of every slot a session would get (`cpu` and
//! `mem` at least; accelerator slots such as `cuda.shares` as wanted) and,
//! optionally, its shared memory, which must fit in its `mem`. Presets are
//! not referred to by anything, so deleting one is always allowed.

use manager_events::resource_preset::{ResourcePresetEvent, ResourcePresetFields};
use manager_events::slots::{SlotAmount, valid_slot_name};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;
use crate::user_policy::NAME_RULE;

pub use manager_events::resource_preset::stream_id;

/// Commands on a resource preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourcePresetCommand {
    /// Creates it.
    Create {
        /// Its name (its identity).
        name: String,
        /// Its fields.
        fields: ResourcePresetFields,
    },
    /// Replaces its fields.
    Modify(ResourcePresetFields),
    /// Deletes it.
    Delete,
}

/// Why a resource preset command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcePresetError {
    /// A field breaks a rule (400 `invalid-api-params`).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// The name is taken (400 `generic-bad-request`).
    #[error("integrity error: the resource preset already exists")]
    AlreadyExists,
    /// No such preset (404 `object-not-found`).
    #[error("no such resource preset")]
    NotFound,
}

impl From<ResourcePresetError> for Problem {
    fn from(err: ResourcePresetError) -> Problem {
        let kind = match err {
            ResourcePresetError::Invalid { .. } => ProblemKind::InvalidApiParams,
            ResourcePresetError::AlreadyExists => ProblemKind::GenericBadRequest,
            ResourcePresetError::NotFound => ProblemKind::ObjectNotFound("resource preset"),
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// A resource preset's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResourcePreset {
    /// `None` until created.
    pub name: Option<String>,
    /// Its fields.
    pub fields: Option<ResourcePresetFields>,
    /// Deleted.
    pub deleted: bool,
}

impl ResourcePreset {
    /// The fields of a preset that exists and was not deleted.
    pub fn live(&self) -> Option<&ResourcePresetFields> {
        if self.deleted {
            None
        } else {
            self.fields.as_ref()
        }
    }
}

fn check(f: &ResourcePresetFields) -> Result<(), ResourcePresetError> {
    let invalid = |field, reason| Err(ResourcePresetError::Invalid { field, reason });
    for (slot, value) in &f.resource_slots {
        if !valid_slot_name(slot) {
            return invalid(
                "resource_slots",
                "slot names are lower-case letters, digits, '_' and '.' (cpu, mem, cuda.shares)",
            );
        }
        match SlotAmount::parse(value) {
            Ok(SlotAmount::Finite(v)) if v >= 0 => {}
            _ => {
                return invalid(
                    "resource_slots",
                    "amounts are non-negative decimal numbers (at most 6 decimal places)",
                );
            }
        }
    }
    if !f.resource_slots.contains_key("cpu") {
        return invalid("resource_slots", "cpu is required");
    }
    let Some(mem) = f.resource_slots.get("mem") else {
        return invalid("resource_slots", "mem is required");
    };
    let mem = SlotAmount::parse(mem).unwrap_or(SlotAmount::ZERO);
    if !mem.is_whole() {
        return invalid("resource_slots", "mem is a whole number of bytes");
    }
    if let Some(shm) = f.shared_memory
        && (shm < 0 || SlotAmount::from_int(shm) > mem)
    {
        return invalid(
            "shared_memory",
            "it must be at least 0 and at most the preset's mem",
        );
    }
    if let Some(group) = &f.scaling_group_name
        && !crate::domain::valid_name(group)
    {
        return invalid("scaling_group_name", "it is not a scaling group name");
    }
    Ok(())
}

impl Aggregate for ResourcePreset {
    const STREAM_TYPE: &'static str = manager_events::resource_preset::STREAM_TYPE;
    type Command = ResourcePresetCommand;
    type Event = ResourcePresetEvent;
    type Error = ResourcePresetError;

    fn apply(&mut self, event: &ResourcePresetEvent) {
        match event {
            ResourcePresetEvent::ResourcePresetCreated { name, fields } => {
                self.name = Some(name.clone());
                self.fields = Some(fields.clone());
            }
            ResourcePresetEvent::ResourcePresetModified { fields } => {
                self.fields = Some(fields.clone())
            }
            ResourcePresetEvent::ResourcePresetDeleted => self.deleted = true,
        }
    }

    fn decide(
        &self,
        command: &ResourcePresetCommand,
    ) -> Result<Vec<ResourcePresetEvent>, ResourcePresetError> {
        match command {
            ResourcePresetCommand::Create { name, fields } => {
                if !crate::domain::valid_name(name) {
                    return Err(ResourcePresetError::Invalid {
                        field: "name",
                        reason: NAME_RULE,
                    });
                }
                if self.name.is_some() {
                    return Err(ResourcePresetError::AlreadyExists);
                }
                check(fields)?;
                Ok(vec![ResourcePresetEvent::ResourcePresetCreated {
                    name: name.clone(),
                    fields: fields.clone(),
                }])
            }
            ResourcePresetCommand::Modify(fields) => {
                let current = self.live().ok_or(ResourcePresetError::NotFound)?;
                check(fields)?;
                Ok(if current == fields {
                    vec![]
                } else {
                    vec![ResourcePresetEvent::ResourcePresetModified {
                        fields: fields.clone(),
                    }]
                })
            }
            ResourcePresetCommand::Delete => {
                self.live().ok_or(ResourcePresetError::NotFound)?;
                Ok(vec![ResourcePresetEvent::ResourcePresetDeleted])
            }
        }
    }
}

/// The fields of a preset of `cpu` cores and `mem` bytes, nothing else.
pub fn fields(cpu: &str, mem: &str, shared_memory: Option<i64>) -> ResourcePresetFields {
    ResourcePresetFields {
        resource_slots: [
            ("cpu".to_owned(), cpu.to_owned()),
            ("mem".to_owned(), mem.to_owned()),
        ]
        .into(),
        shared_memory,
        scaling_group_name: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn created() -> ResourcePresetEvent {
        ResourcePresetEvent::ResourcePresetCreated {
            name: "01-small".into(),
            fields: fields("8", "34359738368", None),
        }
    }

    fn create(f: ResourcePresetFields) -> Result<Vec<ResourcePresetEvent>, ResourcePresetError> {
        ResourcePreset::default().decide(&ResourcePresetCommand::Create {
            name: "p".into(),
            fields: f,
        })
    }

    fn refused_field(
        result: Result<Vec<ResourcePresetEvent>, ResourcePresetError>,
    ) -> &'static str {
        match result {
            Err(ResourcePresetError::Invalid { field, .. }) => field,
            other => panic!("accepted or refused otherwise: {other:?}"),
        }
    }

    #[test]
    fn a_preset_is_created_once_with_a_valid_name() {
        Scenario::<ResourcePreset>::given([])
            .when(ResourcePresetCommand::Create {
                name: "01-small".into(),
                fields: fields("8", "34359738368", None),
            })
            .then([created()]);
        Scenario::<ResourcePreset>::given([created()])
            .when(ResourcePresetCommand::Create {
                name: "01-small".into(),
                fields: fields("8", "34359738368", None),
            })
            .then_error(ResourcePresetError::AlreadyExists);
        Scenario::<ResourcePreset>::given([])
            .when(ResourcePresetCommand::Create {
                name: "small preset".into(),
                fields: fields("8", "34359738368", None),
            })
            .then_error(ResourcePresetError::Invalid {
                field: "name",
                reason: NAME_RULE,
            });
    }

    #[test]
    fn slots_need_cpu_and_mem_and_non_negative_decimals() {
        let mut gpu = fields("0.5", "1073741824", Some(1073741824));
        gpu.resource_slots
            .insert("cuda.shares".into(), "0.25".into());
        gpu.resource_slots.insert("cuda.device".into(), "0".into());
        gpu.scaling_group_name = Some("gpu".into());
        assert!(create(gpu).is_ok());
        assert!(create(fields("0", "0", Some(0))).is_ok());

        let mut no_cpu = fields("1", "1024", None);
        no_cpu.resource_slots.remove("cpu");
        let mut no_mem = fields("1", "1024", None);
        no_mem.resource_slots.remove("mem");
        let mut bad_name = fields("1", "1024", None);
        bad_name.resource_slots.insert("CUDA".into(), "1".into());
        for (case, f) in [
            ("no cpu", no_cpu),
            ("no mem", no_mem),
            ("bad slot name", bad_name),
            ("negative", fields("-1", "1024", None)),
            ("not a number", fields("many", "1024", None)),
            ("unlimited", fields("Infinity", "1024", None)),
            ("fractional bytes", fields("1", "1024.5", None)),
        ] {
            assert_eq!(refused_field(create(f)), "resource_slots", "{case}");
        }
    }

    #[test]
    fn shared_memory_fits_in_mem() {
        assert!(create(fields("1", "1024", Some(1024))).is_ok());
        assert_eq!(
            refused_field(create(fields("1", "1024", Some(1025)))),
            "shared_memory"
        );
        assert_eq!(
            refused_field(create(fields("1", "1024", Some(-1)))),
            "shared_memory"
        );
        let mut elsewhere = fields("1", "1024", None);
        elsewhere.scaling_group_name = Some("no such/group".into());
        assert_eq!(refused_field(create(elsewhere)), "scaling_group_name");
    }

    #[test]
    fn modifying_records_changes_only_and_deleting_ends_the_preset() {
        let bigger = fields("16", "34359738368", Some(1 << 30));
        Scenario::<ResourcePreset>::given([created()])
            .when(ResourcePresetCommand::Modify(bigger.clone()))
            .then([ResourcePresetEvent::ResourcePresetModified { fields: bigger }]);
        Scenario::<ResourcePreset>::given([created()])
            .when(ResourcePresetCommand::Modify(fields(
                "8",
                "34359738368",
                None,
            )))
            .then([]);
        Scenario::<ResourcePreset>::given([created()])
            .when(ResourcePresetCommand::Modify(fields("8", "1", Some(2))))
            .then_error(ResourcePresetError::Invalid {
                field: "shared_memory",
                reason: "it must be at least 0 and at most the preset's mem",
            });
        Scenario::<ResourcePreset>::given([created()])
            .when(ResourcePresetCommand::Delete)
            .then([ResourcePresetEvent::ResourcePresetDeleted]);
        Scenario::<ResourcePreset>::given([created(), ResourcePresetEvent::ResourcePresetDeleted])
            .when(ResourcePresetCommand::Delete)
            .then_error(ResourcePresetError::NotFound);
    }
}
