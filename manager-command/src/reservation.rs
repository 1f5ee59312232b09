//! The reservation aggregate: one reservable value (see
//! [`manager_events::reservation`]).

use manager_events::reservation::{self, ReservationEvent};
use manager_events::{Problem, ProblemKind};

use crate::aggregate::Aggregate;

/// Who holds a value, if anyone.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reservation {
    /// The current holder.
    pub holder: Option<String>,
}

/// Commands on a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationCommand {
    /// Takes the value for `holder`; refused if someone else holds it.
    Claim {
        /// The claimant (e.g. a user's stream id).
        holder: String,
        /// What is reserved, for the error message (e.g. "email").
        what: &'static str,
    },
    /// Frees the value if `holder` holds it.
    Release {
        /// The holder letting go.
        holder: String,
    },
}

/// Why a reservation command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservationError {
    /// Someone else holds the value.
    #[error("integrity error: the {0} is already in use")]
    Taken(&'static str),
}

impl From<ReservationError> for Problem {
    fn from(err: ReservationError) -> Problem {
        Problem::new(ProblemKind::GenericBadRequest).msg(err.to_string())
    }
}

impl Aggregate for Reservation {
    const STREAM_TYPE: &'static str = reservation::STREAM_TYPE;
    type Command = ReservationCommand;
    type Event = ReservationEvent;
    type Error = ReservationError;

    fn apply(&mut self, event: &ReservationEvent) {
        self.holder = match event {
            ReservationEvent::Claimed { holder } => Some(holder.clone()),
            ReservationEvent::Released { .. } => None,
        };
    }

    fn decide(
        &self,
        command: &ReservationCommand,
    ) -> Result<Vec<ReservationEvent>, ReservationError> {
        match command {
            ReservationCommand::Claim { holder, what } => match &self.holder {
                None => Ok(vec![ReservationEvent::Claimed {
                    holder: holder.clone(),
                }]),
                Some(h) if h == holder => Ok(vec![]),
                Some(_) => Err(ReservationError::Taken(what)),
            },
            ReservationCommand::Release { holder } => match &self.holder {
                Some(h) if h == holder => Ok(vec![ReservationEvent::Released {
                    holder: holder.clone(),
                }]),
                _ => Ok(vec![]),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Scenario;

    fn claim(h: &str) -> ReservationCommand {
        ReservationCommand::Claim {
            holder: h.into(),
            what: "email",
        }
    }

    #[test]
    fn a_value_has_one_holder_at_a_time() {
        Scenario::<Reservation>::given([])
            .when(claim("a"))
            .then([ReservationEvent::Claimed { holder: "a".into() }]);
        Scenario::<Reservation>::given([ReservationEvent::Claimed { holder: "a".into() }])
            .when(claim("b"))
            .then_error(ReservationError::Taken("email"));
        Scenario::<Reservation>::given([ReservationEvent::Claimed { holder: "a".into() }])
            .when(claim("a"))
            .then([]);
        Scenario::<Reservation>::given([
            ReservationEvent::Claimed { holder: "a".into() },
            ReservationEvent::Released { holder: "a".into() },
        ])
        .when(claim("b"))
        .then([ReservationEvent::Claimed { holder: "b".into() }]);
    }

    #[test]
    fn only_the_holder_releases() {
        Scenario::<Reservation>::given([ReservationEvent::Claimed { holder: "a".into() }])
            .when(ReservationCommand::Release { holder: "b".into() })
            .then([]);
        Scenario::<Reservation>::given([ReservationEvent::Claimed { holder: "a".into() }])
            .when(ReservationCommand::Release { holder: "a".into() })
            .then([ReservationEvent::Released { holder: "a".into() }]);
    }
}
