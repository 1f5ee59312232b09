//! Domains: the top of the tenancy tree (domain → projects, users → keypairs).
//!
//! A domain's stream is `domain:<name>`: the name is the domain's identity, so
//! "names are unique" is the log's own `NoStream` check on creation and needs
//! no separate index. Users and projects join and leave a domain through events
//! on its stream (`DomainMemberJoined`/`Left`), appended atomically with their
//! own creation and deletion, so a domain that still has members cannot be
//! purged.

mod aggregate;

pub use aggregate::{
    Domain, DomainCommand, DomainError, DomainEvent, DomainFields, DomainPatch, MemberKind,
    valid_name,
};

pub use manager_events::domain::stream_id;
