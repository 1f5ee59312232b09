//! Aggregates: the consistency boundaries of the write side.
//!
//! An aggregate is pure. [`Aggregate::decide`] looks at the current state and a
//! command and returns the events that record the command's effect, or a domain
//! error; [`Aggregate::apply`] folds one event into the state. Neither does I/O,
//! so every invariant is tested given/when/then without a database (see
//! [`Scenario`]). Loading, appending and retrying live in [`crate::handler`].
//!
//! Events are one Rust enum per aggregate, defined in `manager-events` (the
//! shared vocabulary, so that projectors can read them too) and stored with
//! [`manager_events::codec`].

use manager_events::codec::{decode, encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A consistency boundary: its own stream of events, its own invariants.
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// The stream type in the log, e.g. `domain`.
    const STREAM_TYPE: &'static str;
    /// Version of the state's serialized form in snapshots. Bump it when the
    /// state's shape changes: older snapshots are then ignored (the stream is
    /// replayed) rather than misread.
    const SNAPSHOT_SCHEMA: u32 = 1;
    /// What callers ask of it.
    type Command: Send + Sync;
    /// What it records: an externally tagged serde enum (one variant per event type).
    type Event: Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync;
    /// Why a command is refused.
    type Error: std::error::Error + Clone + PartialEq + Send + Sync + 'static;

    /// Folds one event into the state.
    fn apply(&mut self, event: &Self::Event);

    /// The events that carry out `command`, or why it is refused. An empty list
    /// means "nothing to do" (the command is already satisfied).
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
}

/// Given/when/then for aggregates: given these past events, when this command,
/// then these events (or this error).
pub struct Scenario<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> Scenario<A> {
    /// Starts from the state the given events produce.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for event in events {
            state.apply(&event);
        }
        Scenario { state }
    }

    /// Decides a command against that state.
    pub fn when(self, command: A::Command) -> Outcome<A> {
        let result = self.state.decide(&command);
        if let Ok(events) = &result {
            // Every event decided must survive the log's encoding unchanged.
            for event in events {
                let round_trip = encode(event)
                    .and_then(|(t, p)| decode::<A::Event>(&t, &p))
                    .map_err(|e| e.to_string());
                assert_eq!(
                    round_trip.as_ref(),
                    Ok(event),
                    "event does not round-trip through the log"
                );
            }
        }
        Outcome { result }
    }
}

/// The result of [`Scenario::when`].
#[derive(Debug)]
pub struct Outcome<A: Aggregate> {
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Outcome<A> {
    /// Asserts the command was accepted with exactly these events.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        assert_eq!(self.result, Ok(expected));
    }

    /// Asserts the command was refused with this error.
    #[track_caller]
    pub fn then_error(self, expected: A::Error) {
        assert_eq!(self.result, Err(expected));
    }
}
