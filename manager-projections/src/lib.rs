//! Projectors: fold the event log into read-model tables.
//!
//! Each projector reads the log from its checkpoint in batches and applies a
//! batch to its tables in the same transaction that moves its checkpoint, so an
//! event is applied exactly once even across crashes. Projectors have no side
//! effects; a rebuild replays the log into fresh tables and swaps them in.
//!
//! Nothing lives here yet: the projector runner arrives with the identity and
//! tenancy work.
