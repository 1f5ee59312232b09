//! Users: the aggregate, password hashing, and the workflows that keep users,
//! their domain and their unique email/username consistent.

mod aggregate;
pub mod password;
mod workflows;

pub use aggregate::{User, UserCommand, UserError};
pub use manager_events::user::{UserEvent, UserFields, UserPatch, UserRole, UserStatus, stream_id};
pub use workflows::{CreateUser, DeleteUser, PurgeUser};
