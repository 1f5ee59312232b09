//! Projects (the reference's "groups"): the aggregate and the workflows that
//! keep a project, its domain, its unique name and its members consistent.

mod aggregate;
mod workflows;

pub use aggregate::{Project, ProjectCommand, ProjectError};
pub use manager_events::project::{ProjectEvent, ProjectFields, ProjectPatch, stream_id};
pub use workflows::{AddProjectMembers, CreateProject, PurgeProject, RemoveProjectMembers};
