//! The agent aggregate: what the cluster knows of one agent and whether it is
//! alive, decided from what the agent reports (notices) and what the
//! sweeper sees (heartbeat keys).
//!
//! Every command appends only what changed: a notice or a heartbeat that
//! changes nothing appends nothing, so agents that heartbeat for months cost
//! the log nothing.

use agent_rpc::notice::AgentInfo;
use manager_events::agent::{AgentCapacity, AgentDescription, AgentEvent, AgentStatus};
use manager_events::{Problem, ProblemKind};
use uuid::Uuid;

use crate::aggregate::Aggregate;

pub use manager_events::agent::stream_id;

/// The scaling group of an agent that names none (the reference's default).
pub const DEFAULT_SCALING_GROUP: &str = "default";

/// Why an agent rejoined after its process started again.
pub const REASON_SELF_STARTED: &str = "self-started";
/// Why an agent rejoined when its heartbeat key came back.
pub const REASON_HEARTBEAT_RESUMED: &str = "heartbeat-resumed";
/// Why an agent was lost.
pub const REASON_HEARTBEAT_EXPIRED: &str = "heartbeat-expired";

/// Commands on an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentCommand {
    /// The agent process started (`agent_started` notice). An unknown agent
    /// is registered; a known one that was lost, stopped or decommissioned
    /// rejoins; one that was alive under another process rejoins too (it
    /// restarted before anyone noticed it was gone). Changed description or
    /// capacity is recorded either way.
    Started {
        /// The agent process.
        instance: Uuid,
        /// All it reports about itself.
        info: AgentInfo,
    },
    /// What it reports about itself changed (`agent_info_changed`). An
    /// unknown agent is registered.
    InfoChanged {
        /// The agent process (to register an unknown agent).
        instance: Uuid,
        /// The agent as it is now.
        info: AgentInfo,
    },
    /// The agent process said goodbye (`agent_terminated`): an ALIVE or
    /// LOST agent is stopped. Ignored unless it comes from the process the
    /// agent is known to run (a late goodbye of a process already replaced
    /// changes nothing).
    Stopped {
        /// The process saying goodbye.
        instance: Uuid,
        /// Why (`shutdown`).
        reason: String,
    },
    /// The sweeper found no fresh heartbeat (key missing or too old).
    HeartbeatExpired,
    /// The sweeper found a fresh heartbeat of an agent not alive.
    HeartbeatSeen {
        /// The process heartbeating.
        instance: Uuid,
        /// Where it listens now.
        addr: String,
    },
    /// An operator removes the agent from the cluster.
    Decommission {
        /// Why.
        reason: String,
    },
}

/// Why an agent command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentCommandError {
    /// What the agent reported breaks a rule (answer 400; a notice carrying
    /// it goes to the dead-letter stream: retrying cannot help).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
    /// No such agent (answer 404).
    #[error("no such agent")]
    NotFound,
}

impl From<AgentCommandError> for Problem {
    fn from(err: AgentCommandError) -> Problem {
        let kind = match err {
            AgentCommandError::Invalid { .. } => ProblemKind::InvalidApiParams,
            AgentCommandError::NotFound => ProblemKind::ObjectNotFound("agent"),
        };
        Problem::new(kind).msg(err.to_string())
    }
}

/// An agent's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Agent {
    /// Its id; `None` until registered.
    pub id: Option<String>,
    /// Its status; `None` until registered.
    pub status: Option<AgentStatus>,
    /// The agent process last known to run it.
    pub instance: Option<Uuid>,
    /// What it says about itself.
    pub description: AgentDescription,
    /// What it can hold.
    pub capacity: AgentCapacity,
}

impl Agent {
    /// Whether it is registered and alive.
    pub fn is_alive(&self) -> bool {
        self.status == Some(AgentStatus::Alive)
    }
}

/// Splits what an agent reports into the event vocabulary.
pub fn describe(info: &AgentInfo) -> (AgentDescription, AgentCapacity) {
    let scaling_group = if info.scaling_group.is_empty() {
        DEFAULT_SCALING_GROUP.to_owned()
    } else {
        info.scaling_group.clone()
    };
    (
        AgentDescription {
            addr: info.addr.clone(),
            region: info.region.clone(),
            scaling_group,
            architecture: info.architecture.clone(),
            version: info.version.clone(),
            protocol_version: info.protocol_version,
            compute_plugins: info.compute_plugins.clone(),
            public_host: info.public_host.clone(),
            auto_terminate_abusing_kernel: info.auto_terminate_abusing_kernel,
        },
        AgentCapacity {
            available_slots: info.available_slots.clone(),
            slot_types: info.slot_types.clone(),
        },
    )
}

fn check(info: &AgentInfo) -> Result<(), AgentCommandError> {
    if info.id.trim().is_empty() {
        return Err(AgentCommandError::Invalid {
            field: "id",
            reason: "it is empty",
        });
    }
    if info.addr.trim().is_empty() {
        return Err(AgentCommandError::Invalid {
            field: "addr",
            reason: "it is empty",
        });
    }
    Ok(())
}

/// Collects events while applying them to a scratch state, so that each
/// decision looks at the state the previous events made.
struct Decision {
    next: Agent,
    events: Vec<AgentEvent>,
}

impl Decision {
    fn new(state: &Agent) -> Self {
        Decision {
            next: state.clone(),
            events: Vec::new(),
        }
    }

    fn push(&mut self, event: AgentEvent) {
        self.next.apply(&event);
        self.events.push(event);
    }

    /// Records a changed description and capacity, if they changed.
    fn changes(&mut self, info: &AgentInfo) {
        let (description, capacity) = describe(info);
        if self.next.description != description {
            self.push(AgentEvent::AgentDescriptionChanged { description });
        }
        if self.next.capacity != capacity {
            self.push(AgentEvent::AgentCapacityChanged { capacity });
        }
    }
}

impl Aggregate for Agent {
    const STREAM_TYPE: &'static str = manager_events::agent::STREAM_TYPE;
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = AgentCommandError;

    fn apply(&mut self, event: &AgentEvent) {
        match event {
            AgentEvent::AgentRegistered {
                id,
                instance,
                description,
                capacity,
            } => {
                self.id = Some(id.clone());
                self.status = Some(AgentStatus::Alive);
                self.instance = Some(*instance);
                self.description = description.clone();
                self.capacity = capacity.clone();
            }
            AgentEvent::AgentCapacityChanged { capacity } => self.capacity = capacity.clone(),
            AgentEvent::AgentDescriptionChanged { description } => {
                self.description = description.clone()
            }
            AgentEvent::AgentLost { .. } => self.status = Some(AgentStatus::Lost),
            AgentEvent::AgentStopped { .. } => self.status = Some(AgentStatus::Terminated),
            AgentEvent::AgentRejoined { instance, addr, .. } => {
                self.status = Some(AgentStatus::Alive);
                self.instance = Some(*instance);
                self.description.addr = addr.clone();
            }
            AgentEvent::AgentDecommissioned { .. } => {
                self.status = Some(AgentStatus::Decommissioned)
            }
            // Placements are the scheduler's account (they only move this
            // stream's version, which fences concurrent schedulers).
            AgentEvent::KernelsPlaced { .. } => {}
        }
    }

    fn decide(&self, command: &AgentCommand) -> Result<Vec<AgentEvent>, AgentCommandError> {
        let mut d = Decision::new(self);
        match command {
            AgentCommand::Started { instance, info } => {
                check(info)?;
                let same = self.instance == Some(*instance);
                match self.status {
                    None => d.push(register(*instance, info)),
                    Some(AgentStatus::Alive) if same => {}
                    // Its goodbye came first (two managers, or a claimed
                    // notice): a process does not start after it stopped.
                    Some(AgentStatus::Terminated) if same => return Ok(vec![]),
                    Some(_) => d.push(AgentEvent::AgentRejoined {
                        instance: *instance,
                        addr: info.addr.clone(),
                        reason: REASON_SELF_STARTED.to_owned(),
                    }),
                }
                d.changes(info);
            }
            AgentCommand::InfoChanged { instance, info } => {
                check(info)?;
                if self.status.is_none() {
                    d.push(register(*instance, info));
                }
                d.changes(info);
            }
            AgentCommand::Stopped { instance, reason } => {
                // A goodbye from the known process is the last word, even if
                // its key vanished (and the sweeper lost it) first.
                let running = matches!(self.status, Some(AgentStatus::Alive | AgentStatus::Lost));
                if running && self.instance == Some(*instance) {
                    d.push(AgentEvent::AgentStopped {
                        reason: reason.clone(),
                    });
                }
            }
            AgentCommand::HeartbeatExpired => {
                if self.is_alive() {
                    d.push(AgentEvent::AgentLost {
                        reason: REASON_HEARTBEAT_EXPIRED.to_owned(),
                    });
                }
            }
            AgentCommand::HeartbeatSeen { instance, addr } => {
                let back = match self.status {
                    Some(AgentStatus::Lost) => true,
                    // The key a process leaves behind after its goodbye is
                    // not a sign of life: only a new process is.
                    Some(AgentStatus::Terminated) => self.instance != Some(*instance),
                    _ => false,
                };
                if back {
                    if addr.trim().is_empty() {
                        return Err(AgentCommandError::Invalid {
                            field: "addr",
                            reason: "it is empty",
                        });
                    }
                    d.push(AgentEvent::AgentRejoined {
                        instance: *instance,
                        addr: addr.clone(),
                        reason: REASON_HEARTBEAT_RESUMED.to_owned(),
                    });
                }
            }
            AgentCommand::Decommission { reason } => match self.status {
                None => return Err(AgentCommandError::NotFound),
                Some(AgentStatus::Decommissioned) => {}
                Some(_) => d.push(AgentEvent::AgentDecommissioned {
                    reason: reason.clone(),
                }),
            },
        }
        Ok(d.events)
    }
}

fn register(instance: Uuid, info: &AgentInfo) -> AgentEvent {
    let (description, capacity) = describe(info);
    AgentEvent::AgentRegistered {
        id: info.id.clone(),
        instance,
        description,
        capacity,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::aggregate::Scenario;

    fn info() -> AgentInfo {
        AgentInfo {
            id: "i-a".into(),
            addr: "tcp://10.0.0.1:6011".into(),
            region: "local".into(),
            scaling_group: "default".into(),
            architecture: "x86_64".into(),
            version: "0.1.0".into(),
            protocol_version: 1,
            available_slots: BTreeMap::from([
                ("cpu".into(), "4".into()),
                ("mem".into(), "17179869184".into()),
            ]),
            slot_types: BTreeMap::from([
                ("cpu".into(), "count".into()),
                ("mem".into(), "bytes".into()),
            ]),
            ..Default::default()
        }
    }

    fn a1() -> Uuid {
        Uuid::from_u128(1)
    }

    fn a2() -> Uuid {
        Uuid::from_u128(2)
    }

    fn registered() -> AgentEvent {
        register(a1(), &info())
    }

    fn lost() -> AgentEvent {
        AgentEvent::AgentLost {
            reason: REASON_HEARTBEAT_EXPIRED.into(),
        }
    }

    fn stopped() -> AgentEvent {
        AgentEvent::AgentStopped {
            reason: "shutdown".into(),
        }
    }

    fn rejoined(instance: Uuid, addr: &str, reason: &str) -> AgentEvent {
        AgentEvent::AgentRejoined {
            instance,
            addr: addr.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_first_start_registers_the_agent_and_a_repeat_changes_nothing() {
        Scenario::<Agent>::given([])
            .when(AgentCommand::Started {
                instance: a1(),
                info: info(),
            })
            .then([registered()]);
        Scenario::<Agent>::given([registered()])
            .when(AgentCommand::Started {
                instance: a1(),
                info: info(),
            })
            .then([]);
        // An info notice about an agent never heard of registers it too.
        Scenario::<Agent>::given([])
            .when(AgentCommand::InfoChanged {
                instance: a1(),
                info: info(),
            })
            .then([registered()]);
    }

    #[test]
    fn an_empty_scaling_group_is_the_default_one_and_unknown_groups_are_kept() {
        let mut i = info();
        i.scaling_group = String::new();
        let (d, _) = describe(&i);
        assert_eq!(d.scaling_group, DEFAULT_SCALING_GROUP);
        i.scaling_group = "gpu-nowhere".into();
        let (d, _) = describe(&i);
        assert_eq!(d.scaling_group, "gpu-nowhere");
    }

    #[test]
    fn changed_info_appends_only_what_changed() {
        let mut more = info();
        more.available_slots.insert("cpu".into(), "8".into());
        let (_, capacity) = describe(&more);
        Scenario::<Agent>::given([registered()])
            .when(AgentCommand::InfoChanged {
                instance: a1(),
                info: more.clone(),
            })
            .then([AgentEvent::AgentCapacityChanged {
                capacity: capacity.clone(),
            }]);
        let mut moved = more.clone();
        moved.scaling_group = "gpu".into();
        let (description, _) = describe(&moved);
        Scenario::<Agent>::given([registered()])
            .when(AgentCommand::InfoChanged {
                instance: a1(),
                info: moved.clone(),
            })
            .then([
                AgentEvent::AgentDescriptionChanged { description },
                AgentEvent::AgentCapacityChanged { capacity },
            ]);
        Scenario::<Agent>::given([registered()])
            .when(AgentCommand::InfoChanged {
                instance: a1(),
                info: info(),
            })
            .then([]);
        let mut bad = info();
        bad.id = String::new();
        Scenario::<Agent>::given([])
            .when(AgentCommand::InfoChanged {
                instance: a1(),
                info: bad,
            })
            .then_error(AgentCommandError::Invalid {
                field: "id",
                reason: "it is empty",
            });
    }

    #[test]
    fn a_restarted_agent_rejoins_from_wherever_it_is_now() {
        let mut moved = info();
        moved.addr = "tcp://10.0.0.2:6011".into();
        for gone in [lost(), stopped()] {
            Scenario::<Agent>::given([registered(), gone])
                .when(AgentCommand::Started {
                    instance: a2(),
                    info: moved.clone(),
                })
                .then([rejoined(a2(), &moved.addr, REASON_SELF_STARTED)]);
        }
        // Decommissioned agents rejoin when their process starts again.
        Scenario::<Agent>::given([
            registered(),
            AgentEvent::AgentDecommissioned {
                reason: "retired".into(),
            },
        ])
        .when(AgentCommand::Started {
            instance: a2(),
            info: info(),
        })
        .then([rejoined(a2(), &info().addr, REASON_SELF_STARTED)]);
        // Restarted before anyone noticed it was gone: a new process.
        let mut bigger = moved.clone();
        bigger.available_slots.insert("cpu".into(), "16".into());
        let (_, capacity) = describe(&bigger);
        Scenario::<Agent>::given([registered()])
            .when(AgentCommand::Started {
                instance: a2(),
                info: bigger.clone(),
            })
            .then([
                rejoined(a2(), &bigger.addr, REASON_SELF_STARTED),
                AgentEvent::AgentCapacityChanged { capacity },
            ]);
    }

    #[test]
    fn goodbyes_stop_only_the_running_process() {
        Scenario::<Agent>::given([registered()])
            .when(AgentCommand::Stopped {
                instance: a1(),
                reason: "shutdown".into(),
            })
            .then([stopped()]);
        Scenario::<Agent>::given([registered(), stopped()])
            .when(AgentCommand::Stopped {
                instance: a1(),
                reason: "shutdown".into(),
            })
            .then([]);
        // Its key went before its goodbye was read: the goodbye wins.
        Scenario::<Agent>::given([registered(), lost()])
            .when(AgentCommand::Stopped {
                instance: a1(),
                reason: "shutdown".into(),
            })
            .then([stopped()]);
        // Its start read after its goodbye changes nothing.
        Scenario::<Agent>::given([registered(), stopped()])
            .when(AgentCommand::Started {
                instance: a1(),
                info: info(),
            })
            .then([]);
        // A late goodbye of a process already replaced.
        Scenario::<Agent>::given([
            registered(),
            lost(),
            rejoined(a2(), &info().addr, REASON_SELF_STARTED),
        ])
        .when(AgentCommand::Stopped {
            instance: a1(),
            reason: "shutdown".into(),
        })
        .then([]);
    }

    #[test]
    fn liveness_follows_the_heartbeat_key() {
        Scenario::<Agent>::given([registered()])
            .when(AgentCommand::HeartbeatExpired)
            .then([lost()]);
        for not_alive in [lost(), stopped()] {
            Scenario::<Agent>::given([registered(), not_alive])
                .when(AgentCommand::HeartbeatExpired)
                .then([]);
        }
        Scenario::<Agent>::given([])
            .when(AgentCommand::HeartbeatExpired)
            .then([]);
        // Back from a partition, at the same address or a new one.
        Scenario::<Agent>::given([registered(), lost()])
            .when(AgentCommand::HeartbeatSeen {
                instance: a1(),
                addr: "tcp://10.0.0.9:6011".into(),
            })
            .then([rejoined(
                a1(),
                "tcp://10.0.0.9:6011",
                REASON_HEARTBEAT_RESUMED,
            )]);
        // A new process of a stopped agent is back; the key the old one
        // left behind is not.
        Scenario::<Agent>::given([registered(), stopped()])
            .when(AgentCommand::HeartbeatSeen {
                instance: a2(),
                addr: info().addr,
            })
            .then([rejoined(a2(), &info().addr, REASON_HEARTBEAT_RESUMED)]);
        Scenario::<Agent>::given([registered(), stopped()])
            .when(AgentCommand::HeartbeatSeen {
                instance: a1(),
                addr: info().addr,
            })
            .then([]);
        for quiet in [
            vec![registered()],
            vec![
                registered(),
                AgentEvent::AgentDecommissioned { reason: "x".into() },
            ],
            vec![],
        ] {
            Scenario::<Agent>::given(quiet)
                .when(AgentCommand::HeartbeatSeen {
                    instance: a2(),
                    addr: info().addr,
                })
                .then([]);
        }
    }

    #[test]
    fn the_new_address_replaces_the_old() {
        let mut state = Agent::default();
        for e in [
            registered(),
            lost(),
            rejoined(a1(), "tcp://10.0.0.9:6011", REASON_HEARTBEAT_RESUMED),
        ] {
            state.apply(&e);
        }
        assert_eq!(state.description.addr, "tcp://10.0.0.9:6011");
        assert!(state.is_alive());
        // The address alone moved: starting from there changes nothing more.
        let mut moved = info();
        moved.addr = "tcp://10.0.0.9:6011".into();
        assert_eq!(
            state.decide(&AgentCommand::Started {
                instance: a1(),
                info: moved
            }),
            Ok(vec![])
        );
    }

    #[test]
    fn decommissioning() {
        let retire = || AgentCommand::Decommission {
            reason: "retired".into(),
        };
        let retired = AgentEvent::AgentDecommissioned {
            reason: "retired".into(),
        };
        Scenario::<Agent>::given([])
            .when(retire())
            .then_error(AgentCommandError::NotFound);
        Scenario::<Agent>::given([registered(), lost()])
            .when(retire())
            .then([retired.clone()]);
        Scenario::<Agent>::given([registered(), retired])
            .when(retire())
            .then([]);
    }
}
