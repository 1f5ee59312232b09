//! The command port: how the read side's GraphQL mutations (and any other
//! adapter) send commands without depending on the write side.
//!
//! `manager-command` implements [`CommandPort`]; `manager` hands the
//! implementation to `manager-query` as an `Arc<dyn CommandPort>`. A command
//! here names *what* to change in the vocabulary of the events (fields and
//! patches); the implementation authorises the caller, runs the aggregates'
//! invariants and appends. What comes back says where in the log the change
//! landed, so that the caller can wait for the read models to show it.

use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

use crate::Problem;
use crate::auth::AuthContext;
use crate::domain::{DomainFields, DomainPatch};
use crate::keypair::KeypairPatch;
use crate::policy::KeypairPolicyFields;
use crate::project::{ProjectFields, ProjectPatch};
use crate::project_policy::ProjectPolicyFields;
use crate::resource_preset::ResourcePresetFields;
use crate::scaling_group::{ScalingGroupFields, ScalingGroupTarget};
use crate::user::{UserFields, UserPatch};
use crate::user_policy::UserPolicyFields;

/// An administrative command, as an adapter hands it to the write side.
#[derive(Debug, Clone)]
pub enum AdminCommand {
    /// Creates a user with its main keypair and joins it to projects.
    CreateUser {
        /// Its fields (`email` included).
        fields: UserFields,
        /// Its clear-text password (hashed by the write side).
        password: String,
        /// Projects to join; empty joins the domain's `default` project if any.
        project_ids: Vec<Uuid>,
    },
    /// Changes a user's fields (and password, when given).
    ModifyUser {
        /// The user, by e-mail.
        email: String,
        /// What changes.
        patch: UserPatch,
        /// A new clear-text password.
        password: Option<String>,
    },
    /// Marks a user deleted and deactivates its keypairs.
    DeleteUser {
        /// The user, by e-mail.
        email: String,
    },
    /// Removes a user entirely (its keypairs and memberships too).
    PurgeUser {
        /// The user, by e-mail.
        email: String,
    },
    /// Creates a keypair (generated keys) for a user.
    CreateKeypair {
        /// The owner, by e-mail.
        user_email: String,
        /// Whether it may authenticate.
        is_active: bool,
        /// Admin flag.
        is_admin: bool,
        /// Keypair resource policy.
        resource_policy: String,
        /// Requests per 15 minutes.
        rate_limit: i64,
    },
    /// Changes a keypair.
    ModifyKeypair {
        /// Which.
        access_key: String,
        /// What changes.
        patch: KeypairPatch,
    },
    /// Deletes a keypair.
    DeleteKeypair {
        /// Which.
        access_key: String,
    },
    /// Creates a domain.
    CreateDomain {
        /// Its name.
        name: String,
        /// Its fields.
        fields: DomainFields,
    },
    /// Changes a domain.
    ModifyDomain {
        /// Which.
        name: String,
        /// What changes.
        patch: DomainPatch,
    },
    /// Deactivates a domain (the reference's `delete_domain`).
    DeleteDomain {
        /// Which.
        name: String,
    },
    /// Removes a domain that has no users and no projects left.
    PurgeDomain {
        /// Which.
        name: String,
    },
    /// Creates a project (a "group").
    CreateProject {
        /// Its fields (name and domain included).
        fields: ProjectFields,
    },
    /// Changes a project.
    ModifyProject {
        /// Which.
        id: Uuid,
        /// What changes.
        patch: ProjectPatch,
        /// Members to add.
        add_users: Vec<Uuid>,
        /// Members to remove.
        remove_users: Vec<Uuid>,
    },
    /// Deactivates a project (the reference's `delete_group`).
    DeleteProject {
        /// Which.
        id: Uuid,
    },
    /// Removes a project that has no members left.
    PurgeProject {
        /// Which.
        id: Uuid,
    },
    /// Creates a keypair resource policy.
    CreateKeypairPolicy {
        /// Its name.
        name: String,
        /// Its fields.
        fields: KeypairPolicyFields,
    },
    /// Replaces a keypair resource policy's fields.
    ModifyKeypairPolicy {
        /// Which.
        name: String,
        /// Its new fields.
        fields: KeypairPolicyFields,
    },
    /// Deletes a keypair resource policy no keypair uses.
    DeleteKeypairPolicy {
        /// Which.
        name: String,
    },
    /// Creates a user resource policy.
    CreateUserPolicy {
        /// Its name.
        name: String,
        /// Its fields.
        fields: UserPolicyFields,
    },
    /// Replaces a user resource policy's fields.
    ModifyUserPolicy {
        /// Which.
        name: String,
        /// Its new fields.
        fields: UserPolicyFields,
    },
    /// Deletes a user resource policy no user uses.
    DeleteUserPolicy {
        /// Which.
        name: String,
    },
    /// Creates a project resource policy.
    CreateProjectPolicy {
        /// Its name.
        name: String,
        /// Its fields.
        fields: ProjectPolicyFields,
    },
    /// Replaces a project resource policy's fields.
    ModifyProjectPolicy {
        /// Which.
        name: String,
        /// Its new fields.
        fields: ProjectPolicyFields,
    },
    /// Deletes a project resource policy no project uses.
    DeleteProjectPolicy {
        /// Which.
        name: String,
    },
    /// Creates a resource preset.
    CreateResourcePreset {
        /// Its name.
        name: String,
        /// Its fields.
        fields: ResourcePresetFields,
    },
    /// Replaces a resource preset's fields.
    ModifyResourcePreset {
        /// Which.
        name: String,
        /// Its new fields.
        fields: ResourcePresetFields,
    },
    /// Deletes a resource preset.
    DeleteResourcePreset {
        /// Which.
        name: String,
    },
    /// Creates a scaling group.
    CreateScalingGroup {
        /// Its name.
        name: String,
        /// Its fields.
        fields: ScalingGroupFields,
    },
    /// Replaces a scaling group's fields.
    ModifyScalingGroup {
        /// Which.
        name: String,
        /// Its new fields.
        fields: ScalingGroupFields,
    },
    /// Deletes a scaling group.
    DeleteScalingGroup {
        /// Which.
        name: String,
    },
    /// Lets a domain, project or keypair use a scaling group.
    AssociateScalingGroup {
        /// The scaling group.
        name: String,
        /// Who may use it.
        target: ScalingGroupTarget,
    },
    /// Withdraws an association.
    DisassociateScalingGroup {
        /// The scaling group.
        name: String,
        /// Who loses it.
        target: ScalingGroupTarget,
    },
}

impl AdminCommand {
    /// The GraphQL mutation field that sends this command, for messages
    /// such as "no permission to execute create_user".
    pub fn field_name(&self) -> &'static str {
        match self {
            AdminCommand::CreateUser { .. } => "create_user",
            AdminCommand::ModifyUser { .. } => "modify_user",
            AdminCommand::DeleteUser { .. } => "delete_user",
            AdminCommand::PurgeUser { .. } => "purge_user",
            AdminCommand::CreateKeypair { .. } => "create_keypair",
            AdminCommand::ModifyKeypair { .. } => "modify_keypair",
            AdminCommand::DeleteKeypair { .. } => "delete_keypair",
            AdminCommand::CreateDomain { .. } => "create_domain",
            AdminCommand::ModifyDomain { .. } => "modify_domain",
            AdminCommand::DeleteDomain { .. } => "delete_domain",
            AdminCommand::PurgeDomain { .. } => "purge_domain",
            AdminCommand::CreateProject { .. } => "create_group",
            AdminCommand::ModifyProject { .. } => "modify_group",
            AdminCommand::DeleteProject { .. } => "delete_group",
            AdminCommand::PurgeProject { .. } => "purge_group",
            AdminCommand::CreateKeypairPolicy { .. } => "create_keypair_resource_policy",
            AdminCommand::ModifyKeypairPolicy { .. } => "modify_keypair_resource_policy",
            AdminCommand::DeleteKeypairPolicy { .. } => "delete_keypair_resource_policy",
            AdminCommand::CreateUserPolicy { .. } => "create_user_resource_policy",
            AdminCommand::ModifyUserPolicy { .. } => "modify_user_resource_policy",
            AdminCommand::DeleteUserPolicy { .. } => "delete_user_resource_policy",
            AdminCommand::CreateProjectPolicy { .. } => "create_project_resource_policy",
            AdminCommand::ModifyProjectPolicy { .. } => "modify_project_resource_policy",
            AdminCommand::DeleteProjectPolicy { .. } => "delete_project_resource_policy",
            AdminCommand::CreateResourcePreset { .. } => "create_resource_preset",
            AdminCommand::ModifyResourcePreset { .. } => "modify_resource_preset",
            AdminCommand::DeleteResourcePreset { .. } => "delete_resource_preset",
            AdminCommand::CreateScalingGroup { .. } => "create_scaling_group",
            AdminCommand::ModifyScalingGroup { .. } => "modify_scaling_group",
            AdminCommand::DeleteScalingGroup { .. } => "delete_scaling_group",
            AdminCommand::AssociateScalingGroup { target, .. } => match target {
                ScalingGroupTarget::Domain(_) => "associate_scaling_group_with_domain",
                ScalingGroupTarget::Project(_) => "associate_scaling_group_with_user_group",
                ScalingGroupTarget::Keypair(_) => "associate_scaling_group_with_keypair",
            },
            AdminCommand::DisassociateScalingGroup { target, .. } => match target {
                ScalingGroupTarget::Domain(_) => "disassociate_scaling_group_with_domain",
                ScalingGroupTarget::Project(_) => "disassociate_scaling_group_with_user_group",
                ScalingGroupTarget::Keypair(_) => "disassociate_scaling_group_with_keypair",
            },
        }
    }
}

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitted {
    /// Log position of its last event; `None` when nothing needed to change.
    /// A query waiting for this position sees the change.
    pub position: Option<u64>,
    /// The identity of what it created, when it created something: a user's
    /// or project's UUID, a keypair's access key. Also set for the replay of
    /// an idempotent retry, so the retry can answer as the first request.
    pub created: Option<String>,
    /// True when an earlier request with the same idempotency key did the work.
    pub deduplicated: bool,
    /// The secret key of a keypair this command created (never for the
    /// replay of a retry: the log holds it sealed only), so the answer need
    /// not wait for the read models and open it again.
    pub secret_key: Option<String>,
}

/// A boxed future, so that the port can be used as a trait object.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends administrative commands on behalf of an authenticated caller.
pub trait CommandPort: Send + Sync {
    /// Authorises `actor`, runs `command` and appends its events. The
    /// idempotency key, when given, is the client's (the implementation
    /// scopes it to the caller): a retry with the same key appends nothing
    /// and reports the first result.
    fn submit<'a>(
        &'a self,
        actor: &'a AuthContext,
        command: AdminCommand,
        idempotency_key: Option<String>,
    ) -> PortFuture<'a, Result<Submitted, Problem>>;
}

/// Where the read models are against the log, for the edge of the write
/// side (which must not depend on the read side).
pub trait ReadModelProgress: Send + Sync {
    /// Waits, bounded, until the read models show every event appended so
    /// far: true when they do (a lookup that found nothing before the call
    /// is worth repeating), false when they did not catch up in time.
    fn catch_up(&self) -> PortFuture<'_, bool>;
}
