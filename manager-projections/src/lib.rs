//! Projectors: fold the event log into read-model tables.
//!
//! Each projector reads the log from its checkpoint in batches and applies a
//! batch to its tables **in the same transaction** that moves its checkpoint,
//! so an event is applied exactly once even across crashes: a crash before
//! COMMIT rolls back both the rows and the checkpoint, and the batch is applied
//! again from the same place. Projectors have no side effects outside their
//! tables. Several manager processes may run the same projectors: the
//! checkpoint row is locked (`FOR UPDATE SKIP LOCKED`) for each batch, so one
//! process applies it and the others skip.
//!
//! # Layout
//! - [`runner`]: the [`Projector`] trait and the [`ProjectionRunner`] that drives
//!   projectors, plus their status (position and lag).
//! - [`domains`]: the `domains` read model.
//! - [`users`]: the `users` read model.
//! - [`keypairs`]: the `keypairs` read model (secrets stay sealed).
//! - [`projects`]: the `groups` and `association_groups_users` read models.
//! - [`policies`]: the `keypair_resource_policies` read model.
//! - [`user_policies`], [`project_policies`]: the `user_resource_policies`
//!   and `project_resource_policies` read models.
//! - [`presets`]: the `resource_presets` read model.
//! - [`scaling_groups`]: scaling groups and their associations.
//! - [`agents`]: the `agents` read model (status, description, capacity).
//! - [`images`]: the `images` and `image_aliases` read models.
//! - [`sessions`]: the `sessions`, `kernels`, `session_dependencies` and
//!   `agent_occupancy` read models.
//! - [`rebuild`]: replaying a projector into fresh tables while the old ones
//!   keep serving, then swapping them in atomically.

pub mod agents;
pub mod domains;
pub mod images;
pub mod keypairs;
pub mod policies;
pub mod presets;
pub mod project_policies;
pub mod projects;
pub mod rebuild;
pub mod runner;
pub mod scaling_groups;
pub mod sessions;
mod support;
pub mod user_policies;
pub mod users;

pub use runner::{ProjectionError, ProjectionRunner, Projector, ProjectorStatus};

/// Every projector of the manager, in the order they are run.
pub fn all() -> Vec<std::sync::Arc<dyn Projector>> {
    vec![
        std::sync::Arc::new(domains::DomainsProjector),
        std::sync::Arc::new(users::UsersProjector),
        std::sync::Arc::new(keypairs::KeypairsProjector),
        std::sync::Arc::new(projects::ProjectsProjector),
        std::sync::Arc::new(policies::KeypairPoliciesProjector),
        std::sync::Arc::new(scaling_groups::ScalingGroupsProjector),
        std::sync::Arc::new(user_policies::UserPoliciesProjector),
        std::sync::Arc::new(project_policies::ProjectPoliciesProjector),
        std::sync::Arc::new(presets::ResourcePresetsProjector),
        std::sync::Arc::new(agents::AgentsProjector),
        std::sync::Arc::new(images::ImagesProjector),
        std::sync::Arc::new(sessions::SessionsProjector),
    ]
}
