//! The command port's implementation: administrative commands from the read
//! side's GraphQL mutations (and the fixture loader), authorised here and
//! run through the [`CommandHandler`].
//!
//! # Authorisation
//! Superadmins may run every command. Domain admins may create, change,
//! deactivate and purge projects of their own domain — and nothing else
//! here, as the reference. Other roles may run none. A refusal names the
//! mutation: `no permission to execute create_user`.
//!
//! # Idempotency
//! A client's `Idempotency-Key` is scoped to its access key before it reaches
//! the log (where keys are global), so two clients cannot collide. The ids of
//! what a keyed request creates (a user's UUID, a keypair's access key) are
//! derived from the scoped key, so a retry knows them without the first
//! response.
//!
//! # Read-your-writes
//! After a command appends, its position is recorded per access key in Redis
//! (see [`RateLimiter::record_write`]); the caller's later reads wait for it.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use manager_events::auth::AuthContext;
use manager_events::port::{AdminCommand, CommandPort, PortFuture, Submitted};
use manager_events::project::ProjectPatch;
use manager_events::secrets::KeyStore;
use manager_events::user::UserRole;
use manager_events::{EventMetadata, Problem, ProblemKind, reservation};

use crate::auth::rate_limit::RateLimiter;
use crate::domain::{self, Domain, DomainCommand};
use crate::handler::{CommandHandler, Transacted, Tx, Workflow};
use crate::keypair::{
    self, CreateKeypair, DeleteKeypair, Keypair, KeypairCommand, NewKeypair, generate_access_key,
    generate_secret_key,
};
use crate::policy::{self, KeypairPolicy, KeypairPolicyCommand};
use crate::project::{
    self, AddProjectMembers, CreateProject, Project, ProjectCommand, PurgeProject,
    RemoveProjectMembers,
};
use crate::project_policy::{self, ProjectPolicy, ProjectPolicyCommand};
use crate::reservation::Reservation;
use crate::resource_preset::{self, ResourcePreset, ResourcePresetCommand};
use crate::scaling_group::{self, AssociateScalingGroup, ScalingGroup, ScalingGroupCommand};
use crate::user::{self, CreateUser, DeleteUser, PurgeUser, User, UserCommand, password};
use crate::user_policy::{self, UserPolicy, UserPolicyCommand};

/// The keypair resource policy of the keypair `create_user` makes.
pub const MAIN_KEYPAIR_POLICY: &str = "default";
/// The rate limit of the keypair `create_user` makes (the reference's).
pub const MAIN_KEYPAIR_RATE_LIMIT: i64 = 10_000;

/// Runs administrative commands for authenticated callers.
#[derive(Clone)]
pub struct CommandService {
    handler: CommandHandler,
    keys: KeyStore,
    writes: Option<RateLimiter>,
}

/// Runs two workflows in one attempt (one atomic append).
struct Both<A, B>(A, B);

impl<A: Workflow, B: Workflow> Workflow for Both<A, B> {
    type Output = (A::Output, B::Output);

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Self::Output, Problem> {
        let a = self.0.run(tx).await?;
        let b = self.1.run(tx).await?;
        Ok((a, b))
    }
}

/// Runs a workflow when there is one.
impl<W: Workflow> Workflow for Option<W> {
    type Output = Option<W::Output>;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Self::Output, Problem> {
        match self {
            Some(w) => w.run(tx).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Changes a user's fields and, when given, its password.
struct ModifyUser {
    uuid: Uuid,
    patch: manager_events::user::UserPatch,
    password_hash: Option<String>,
}

impl Workflow for ModifyUser {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        let id = user::stream_id(&self.uuid);
        tx.decide::<User>(&id, &UserCommand::Modify(self.patch.clone()))
            .await?;
        if let Some(hash) = &self.password_hash {
            tx.decide::<User>(
                &id,
                &UserCommand::ChangePassword {
                    password_hash: hash.clone(),
                },
            )
            .await?;
        }
        Ok(())
    }
}

/// Changes a project's fields (when the patch changes anything).
struct ModifyProject {
    id: Uuid,
    patch: ProjectPatch,
}

impl Workflow for ModifyProject {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        if self.patch != ProjectPatch::default() {
            tx.decide::<Project>(
                &project::stream_id(&self.id),
                &ProjectCommand::Modify(self.patch.clone()),
            )
            .await?;
        }
        Ok(())
    }
}

/// Hashes a password on the blocking pool: Argon2 takes tens of
/// milliseconds of CPU, which would stall every other request of the HTTP
/// worker that runs it.
async fn hash_off_thread(clear: String) -> Result<String, Problem> {
    tokio::task::spawn_blocking(move || password::hash(&clear))
        .await
        .map_err(|e| Problem::new(ProblemKind::InternalServerError).msg(e.to_string()))?
}

fn forbidden(command: &AdminCommand) -> Problem {
    Problem::new(ProblemKind::GenericForbidden)
        .msg(format!("no permission to execute {}", command.field_name()))
}

/// An id derived from a scoped idempotency key.
fn derived(scoped_key: &str, what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(scoped_key.as_bytes());
    h.update([0]);
    h.update(what.as_bytes());
    h.finalize().into()
}

fn derived_uuid(scoped_key: Option<&str>, what: &str) -> Uuid {
    match scoped_key {
        Some(k) => {
            let d = derived(k, what);
            let mut b = [0u8; 16];
            b.copy_from_slice(&d[..16]);
            uuid::Builder::from_random_bytes(b).into_uuid()
        }
        None => Uuid::new_v4(),
    }
}

fn derived_access_key(scoped_key: Option<&str>, what: &str) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    match scoped_key {
        Some(k) => {
            let d = derived(k, what);
            let tail: String = d[..16]
                .iter()
                .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
                .collect();
            format!("AKIA{tail}")
        }
        None => generate_access_key(),
    }
}

fn submitted<T>(t: &Transacted<T>, created: Option<String>) -> Submitted {
    Submitted {
        position: t.position,
        created,
        deduplicated: t.deduplicated,
        secret_key: None,
    }
}

impl CommandService {
    /// A service over `handler`, sealing secrets with `keys`, recording
    /// writes for read-your-writes in Redis through `writes` (none: reads do
    /// not wait).
    pub fn new(handler: CommandHandler, keys: KeyStore, writes: Option<RateLimiter>) -> Self {
        CommandService {
            handler,
            keys,
            writes,
        }
    }

    /// The user holding an e-mail, if any.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<Uuid>, Problem> {
        let (res, _) = self
            .handler
            .load::<Reservation>(&reservation::stream_id("user-email", email))
            .await
            .map_err(Problem::from)?;
        Ok(res
            .holder
            .and_then(|h| h.strip_prefix("user:").and_then(|u| u.parse().ok())))
    }

    async fn existing_user(&self, email: &str) -> Result<Uuid, Problem> {
        self.user_by_email(email).await?.ok_or_else(|| {
            Problem::new(ProblemKind::ObjectNotFound("user")).msg(format!("no user {email:?}"))
        })
    }

    /// Like `existing_user`, but a user this process knows is taken on
    /// trust — only for callers whose attempt looks the e-mail up again.
    async fn known_user(&self, email: &str) -> Result<Uuid, Problem> {
        let known = self
            .handler
            .cached_state::<Reservation>(&reservation::stream_id("user-email", email))
            .and_then(|r| r.holder)
            .and_then(|h| h.strip_prefix("user:").and_then(|u| u.parse().ok()));
        match known {
            Some(uuid) => Ok(uuid),
            None => self.existing_user(email).await,
        }
    }

    /// The project named `name` in `domain`, if any.
    pub async fn project_by_name(&self, domain: &str, name: &str) -> Result<Option<Uuid>, Problem> {
        let (res, _) = self
            .handler
            .load::<Reservation>(&reservation::stream_id(
                "project-name",
                &format!("{domain}/{name}"),
            ))
            .await
            .map_err(Problem::from)?;
        Ok(res
            .holder
            .and_then(|h| h.strip_prefix("project:").and_then(|u| u.parse().ok())))
    }

    async fn project_domain(&self, id: &Uuid) -> Result<Option<String>, Problem> {
        let (p, _) = self
            .handler
            .load::<Project>(&project::stream_id(id))
            .await
            .map_err(Problem::from)?;
        Ok(p.live().map(|f| f.domain_name.clone()))
    }

    /// Whether `actor` may run `command` (see the module docs).
    async fn authorize(&self, actor: &AuthContext, command: &AdminCommand) -> Result<(), Problem> {
        match actor.role {
            UserRole::Superadmin => return Ok(()),
            UserRole::Admin => {}
            UserRole::User | UserRole::Monitor => return Err(forbidden(command)),
        }
        let domain = match command {
            AdminCommand::CreateProject { fields } => Some(fields.domain_name.clone()),
            AdminCommand::ModifyProject { id, .. }
            | AdminCommand::DeleteProject { id }
            | AdminCommand::PurgeProject { id } => self.project_domain(id).await?,
            _ => return Err(forbidden(command)),
        };
        if domain.as_deref() == Some(actor.domain_name.as_str()) {
            Ok(())
        } else {
            Err(forbidden(command))
        }
    }

    async fn run(
        &self,
        command: AdminCommand,
        meta: EventMetadata,
        scoped: Option<&str>,
    ) -> Result<Submitted, Problem> {
        let h = &self.handler;
        match command {
            AdminCommand::CreateUser {
                fields,
                password: clear,
                project_ids,
            } => {
                let uuid = derived_uuid(scoped, "user");
                let password_hash = hash_off_thread(clear).await?;
                let projects = if project_ids.is_empty() {
                    self.project_by_name(&fields.domain_name, "default")
                        .await?
                        .into_iter()
                        .collect()
                } else {
                    project_ids
                };
                let access_key = derived_access_key(scoped, "main-keypair");
                let keypair = CreateKeypair::prepare(
                    &self.keys,
                    NewKeypair {
                        access_key,
                        user_uuid: uuid,
                        is_active: true,
                        is_admin: false,
                        resource_policy: MAIN_KEYPAIR_POLICY.into(),
                        rate_limit: MAIN_KEYPAIR_RATE_LIMIT,
                    },
                    &generate_secret_key(),
                )
                .await?;
                let members: Vec<AddProjectMembers> = projects
                    .into_iter()
                    .map(|id| AddProjectMembers {
                        id,
                        users: vec![uuid],
                    })
                    .collect();
                let workflow = Both(
                    CreateUser {
                        uuid,
                        fields,
                        password_hash,
                    },
                    Both(keypair, Members(members)),
                );
                let t = h.transact(&workflow, meta).await?;
                Ok(submitted(&t, Some(uuid.to_string())))
            }
            AdminCommand::ModifyUser {
                email,
                patch,
                password: clear,
            } => {
                let uuid = self.existing_user(&email).await?;
                let password_hash = match clear {
                    Some(clear) => Some(hash_off_thread(clear).await?),
                    None => None,
                };
                let t = h
                    .transact(
                        &ModifyUser {
                            uuid,
                            patch,
                            password_hash,
                        },
                        meta,
                    )
                    .await?;
                Ok(submitted(&t, Some(uuid.to_string())))
            }
            AdminCommand::DeleteUser { email } => {
                let uuid = self.existing_user(&email).await?;
                let t = h.transact(&DeleteUser { uuid }, meta).await?;
                Ok(submitted(&t, Some(uuid.to_string())))
            }
            AdminCommand::PurgeUser { email } => {
                let uuid = self.existing_user(&email).await?;
                let t = h.transact(&PurgeUser { uuid }, meta).await?;
                for ak in t.output.iter().flatten() {
                    self.shred(ak).await;
                }
                Ok(submitted(&t, Some(uuid.to_string())))
            }
            AdminCommand::CreateKeypair {
                user_email,
                is_active,
                is_admin,
                resource_policy,
                rate_limit,
            } => {
                // Fails fast before a data key is stored; the attempt looks
                // the e-mail up again, checked with the rest.
                let user_uuid = self.known_user(&user_email).await?;
                let access_key = derived_access_key(scoped, "keypair");
                let secret_key = generate_secret_key();
                let create = CreateKeypair::prepare(
                    &self.keys,
                    NewKeypair {
                        access_key: access_key.clone(),
                        user_uuid,
                        is_active,
                        is_admin,
                        resource_policy,
                        rate_limit,
                    },
                    &secret_key,
                )
                .await?
                .owned_by_email(user_email);
                let t = h.transact(&create, meta).await?;
                let mut s = submitted(&t, Some(access_key));
                if !t.deduplicated {
                    s.secret_key = Some(secret_key);
                }
                Ok(s)
            }
            AdminCommand::ModifyKeypair { access_key, patch } => {
                let id = keypair::stream_id(&access_key);
                self.single::<Keypair>(&id, &access_key, KeypairCommand::Modify(patch), meta)
                    .await
            }
            AdminCommand::DeleteKeypair { access_key } => {
                let t = h
                    .transact(
                        &DeleteKeypair {
                            access_key: access_key.clone(),
                        },
                        meta,
                    )
                    .await?;
                self.shred(&access_key).await;
                Ok(submitted(&t, Some(access_key)))
            }
            AdminCommand::CreateDomain { name, fields } => {
                let cmd = DomainCommand::Create {
                    name: name.clone(),
                    fields,
                };
                self.single::<Domain>(&domain::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::ModifyDomain { name, patch } => {
                self.single::<Domain>(
                    &domain::stream_id(&name),
                    &name,
                    DomainCommand::Modify(patch),
                    meta,
                )
                .await
            }
            AdminCommand::DeleteDomain { name } => {
                self.single::<Domain>(
                    &domain::stream_id(&name),
                    &name,
                    DomainCommand::Deactivate,
                    meta,
                )
                .await
            }
            AdminCommand::PurgeDomain { name } => {
                self.single::<Domain>(&domain::stream_id(&name), &name, DomainCommand::Purge, meta)
                    .await
            }
            AdminCommand::CreateProject { fields } => {
                let id = derived_uuid(scoped, "project");
                let t = h.transact(&CreateProject { id, fields }, meta).await?;
                Ok(submitted(&t, Some(id.to_string())))
            }
            AdminCommand::ModifyProject {
                id,
                patch,
                add_users,
                remove_users,
            } => {
                let workflow = Both(
                    ModifyProject { id, patch },
                    Both(
                        (!add_users.is_empty()).then_some(AddProjectMembers {
                            id,
                            users: add_users,
                        }),
                        (!remove_users.is_empty()).then_some(RemoveProjectMembers {
                            id,
                            users: remove_users,
                        }),
                    ),
                );
                let t = h.transact(&workflow, meta).await?;
                Ok(submitted(&t, Some(id.to_string())))
            }
            AdminCommand::DeleteProject { id } => {
                let cmd = ProjectCommand::Deactivate;
                self.single::<Project>(&project::stream_id(&id), &id.to_string(), cmd, meta)
                    .await
            }
            AdminCommand::PurgeProject { id } => {
                let t = h.transact(&PurgeProject { id }, meta).await?;
                Ok(submitted(&t, Some(id.to_string())))
            }
            AdminCommand::CreateKeypairPolicy { name, fields } => {
                let cmd = KeypairPolicyCommand::Create {
                    name: name.clone(),
                    fields,
                };
                self.single::<KeypairPolicy>(&policy::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::ModifyKeypairPolicy { name, fields } => {
                self.single::<KeypairPolicy>(
                    &policy::stream_id(&name),
                    &name,
                    KeypairPolicyCommand::Modify(fields),
                    meta,
                )
                .await
            }
            AdminCommand::DeleteKeypairPolicy { name } => {
                let position = policy::delete_keypair_policy(h, &name, meta).await?;
                Ok(Submitted {
                    position,
                    created: Some(name),
                    ..Submitted::default()
                })
            }
            AdminCommand::CreateUserPolicy { name, fields } => {
                let cmd = UserPolicyCommand::Create {
                    name: name.clone(),
                    fields,
                };
                self.single::<UserPolicy>(&user_policy::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::ModifyUserPolicy { name, fields } => {
                let cmd = UserPolicyCommand::Modify(fields);
                self.single::<UserPolicy>(&user_policy::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::DeleteUserPolicy { name } => {
                let position = user_policy::delete_user_policy(h, &name, meta).await?;
                Ok(Submitted {
                    position,
                    created: Some(name),
                    ..Submitted::default()
                })
            }
            AdminCommand::CreateProjectPolicy { name, fields } => {
                let cmd = ProjectPolicyCommand::Create {
                    name: name.clone(),
                    fields,
                };
                self.single::<ProjectPolicy>(&project_policy::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::ModifyProjectPolicy { name, fields } => {
                let cmd = ProjectPolicyCommand::Modify(fields);
                self.single::<ProjectPolicy>(&project_policy::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::DeleteProjectPolicy { name } => {
                let position = project_policy::delete_project_policy(h, &name, meta).await?;
                Ok(Submitted {
                    position,
                    created: Some(name),
                    ..Submitted::default()
                })
            }
            AdminCommand::CreateResourcePreset { name, fields } => {
                let cmd = ResourcePresetCommand::Create {
                    name: name.clone(),
                    fields,
                };
                self.single::<ResourcePreset>(&resource_preset::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::ModifyResourcePreset { name, fields } => {
                let cmd = ResourcePresetCommand::Modify(fields);
                self.single::<ResourcePreset>(&resource_preset::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::DeleteResourcePreset { name } => {
                let cmd = ResourcePresetCommand::Delete;
                self.single::<ResourcePreset>(&resource_preset::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::CreateScalingGroup { name, fields } => {
                let cmd = ScalingGroupCommand::Create {
                    name: name.clone(),
                    fields,
                };
                self.single::<ScalingGroup>(&scaling_group::stream_id(&name), &name, cmd, meta)
                    .await
            }
            AdminCommand::ModifyScalingGroup { name, fields } => {
                self.single::<ScalingGroup>(
                    &scaling_group::stream_id(&name),
                    &name,
                    ScalingGroupCommand::Modify(fields),
                    meta,
                )
                .await
            }
            AdminCommand::DeleteScalingGroup { name } => {
                self.single::<ScalingGroup>(
                    &scaling_group::stream_id(&name),
                    &name,
                    ScalingGroupCommand::Delete,
                    meta,
                )
                .await
            }
            AdminCommand::AssociateScalingGroup { name, target } => {
                let t = h
                    .transact(
                        &AssociateScalingGroup {
                            name: name.clone(),
                            target,
                        },
                        meta,
                    )
                    .await?;
                Ok(submitted(&t, Some(name)))
            }
            AdminCommand::DisassociateScalingGroup { name, target } => {
                self.single::<ScalingGroup>(
                    &scaling_group::stream_id(&name),
                    &name,
                    ScalingGroupCommand::Disassociate(target),
                    meta,
                )
                .await
            }
        }
    }

    /// Runs one command on one aggregate; `created` names it in the answer.
    async fn single<A>(
        &self,
        stream_id: &str,
        name: &str,
        command: A::Command,
        meta: EventMetadata,
    ) -> Result<Submitted, Problem>
    where
        A: crate::aggregate::Aggregate,
        A::Error: Into<Problem>,
    {
        let t = self.handler.execute::<A>(stream_id, command, meta).await?;
        Ok(Submitted {
            position: t.position,
            created: Some(name.to_owned()),
            deduplicated: t.deduplicated,
            secret_key: None,
        })
    }

    /// Shreds a deleted keypair's data key. A failure leaves the key for a
    /// later sweep (the keypair is deleted either way).
    async fn shred(&self, access_key: &str) {
        if let Err(e) = self.keys.shred(access_key).await {
            tracing::warn!(access_key, error = %e, "could not shred the data key of a deleted keypair");
        }
    }

    /// Authorises and runs `command` for `actor`; see the module docs.
    pub async fn submit_command(
        &self,
        actor: &AuthContext,
        command: AdminCommand,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, Problem> {
        self.authorize(actor, &command).await?;
        let scoped = idempotency_key.map(|k| {
            let mut h = Sha256::new();
            h.update(actor.access_key.as_bytes());
            h.update([0]);
            h.update(k.as_bytes());
            format!("client:{}", hex::encode(h.finalize()))
        });
        let field = command.field_name();
        let meta = EventMetadata {
            actor_access_key: Some(actor.access_key.clone()),
            request_id: Some(format!("gql:{field}")),
            idempotency_key: scoped.clone(),
            ..EventMetadata::default()
        };
        let started = std::time::Instant::now();
        let mut result = self.run(command, meta, scoped.as_deref()).await;
        // A keyed retry of a command that succeeded can fail the checks made
        // before the append (a purged user's e-mail no longer resolves): the
        // first request's success stands.
        if result.is_err()
            && let Some(key) = &scoped
            && let Ok(Some(first)) = self.handler.store().idempotent_result(key).await
        {
            result = Ok(Submitted {
                position: Some(first.last_position),
                deduplicated: true,
                ..Submitted::default()
            });
        }
        metrics::histogram!("command_duration_seconds", "command" => field)
            .record(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "refused" };
        metrics::counter!("commands_total", "command" => field, "outcome" => outcome).increment(1);
        let done = result?;
        if let (Some(position), Some(writes)) = (done.position, &self.writes)
            && let Err(e) = writes.record_write(&actor.access_key, position).await
        {
            // The write is committed; only the caller's next read may miss it.
            tracing::warn!(error = %e, "could not record a write for read-your-writes");
        }
        Ok(done)
    }
}

/// Adds a new user to several projects.
struct Members(Vec<AddProjectMembers>);

impl Workflow for Members {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Problem> {
        for m in &self.0 {
            m.run(tx).await?;
        }
        Ok(())
    }
}

impl CommandPort for CommandService {
    fn submit<'a>(
        &'a self,
        actor: &'a AuthContext,
        command: AdminCommand,
        idempotency_key: Option<String>,
    ) -> PortFuture<'a, Result<Submitted, Problem>> {
        Box::pin(self.submit_command(actor, command, idempotency_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_ids_are_stable_and_unkeyed_ones_random() {
        let k = Some("client:abc");
        assert_eq!(derived_uuid(k, "user"), derived_uuid(k, "user"));
        assert_ne!(derived_uuid(k, "user"), derived_uuid(k, "project"));
        assert_ne!(derived_uuid(None, "user"), derived_uuid(None, "user"));
        let ak = derived_access_key(k, "keypair");
        assert_eq!(ak, derived_access_key(k, "keypair"));
        assert!(
            ak.starts_with("AKIA")
                && ak.len() == 20
                && ak.chars().all(|c| c.is_ascii_alphanumeric())
        );
    }
}
