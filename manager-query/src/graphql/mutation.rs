//! The mutation root: thin adapters that turn the reference's mutation
//! arguments into commands for the [`CommandPort`](manager_events::port::CommandPort)
//! and answer with the reference's `ok`/`msg` convention (spec §5.5).
//!
//! A refused command is `ok: false` with the reason in `msg`, never a
//! GraphQL error (the client treats any error as a failed request). On
//! success the payload's item is read from the read models once they show
//! the change (read-your-writes).

use std::collections::{BTreeMap, BTreeSet};

use juniper::{
    Executor, FieldResult, GraphQLInputObject, GraphQLObject, ScalarValue, graphql_object,
};
use manager_events::domain::{DomainFields, DomainPatch};
use manager_events::keypair::KeypairPatch;
use manager_events::policy::{DefaultForUnspecified, KeypairPolicyFields};
use manager_events::port::{AdminCommand, Submitted};
use manager_events::project::{ProjectFields, ProjectPatch};
use manager_events::project_policy::ProjectPolicyFields;
use manager_events::resource_preset::ResourcePresetFields;
use manager_events::scaling_group::{ScalingGroupFields, ScalingGroupTarget};
use manager_events::user::{UserFields, UserPatch, UserRole, UserStatus};
use manager_events::user_policy::UserPolicyFields;
use uuid::Uuid;

use super::Context;
use super::query::{
    by_name, domain_by_name, group_by_id, keypair_by_key, policy_by_name, policy_fields_by_name,
    presets, project_policies, scaling_group_by_name, user_policies, users_by_id,
};
use super::scalars::{BigInt, JsonString};
use super::types::{
    Domain, Group, KeyPair, KeyPairResourcePolicy, ProjectResourcePolicy, ResourcePreset,
    ScalingGroup, User, UserResourcePolicy,
};

/// A refusal, shown as `msg`.
type Refusal = String;

fn slot_map(
    field: &str,
    v: Option<&JsonString>,
) -> Result<Option<BTreeMap<String, String>>, Refusal> {
    let Some(v) = v else { return Ok(None) };
    let raw: BTreeMap<String, serde_json::Value> = v.parse(field)?;
    let mut out = BTreeMap::new();
    for (slot, amount) in raw {
        let amount = match amount {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "{field}: the amount of {slot:?} must be a number, not {other}"
                ));
            }
        };
        out.insert(slot, amount);
    }
    Ok(Some(out))
}

fn vfolder_hosts(
    field: &str,
    v: Option<&JsonString>,
) -> Result<Option<BTreeMap<String, BTreeSet<String>>>, Refusal> {
    v.map(|v| v.parse(field)).transpose()
}

fn json_object(field: &str, v: Option<&JsonString>) -> Result<Option<serde_json::Value>, Refusal> {
    match v {
        None => Ok(None),
        Some(v) => {
            let value: serde_json::Value = v.parse(field)?;
            if value.is_object() {
                Ok(Some(value))
            } else {
                Err(format!("{field}: must be a JSON object"))
            }
        }
    }
}

fn role(s: Option<&str>) -> Result<Option<UserRole>, Refusal> {
    s.map(|s| {
        UserRole::parse(&s.to_lowercase())
            .ok_or_else(|| format!("invalid role {s:?}: one of superadmin, admin, user, monitor"))
    })
    .transpose()
}

fn status(status: Option<&str>, is_active: Option<bool>) -> Result<Option<UserStatus>, Refusal> {
    match status {
        Some(s) => UserStatus::parse(&s.to_lowercase())
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "invalid status {s:?}: one of active, inactive, deleted, before-verification"
                )
            }),
        None => Ok(is_active.map(|a| {
            if a {
                UserStatus::Active
            } else {
                UserStatus::Inactive
            }
        })),
    }
}

fn uuids(field: &str, ids: Option<Vec<Option<String>>>) -> Result<Vec<Uuid>, Refusal> {
    ids.unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|s| {
            s.parse()
                .map_err(|_| format!("{field}: {s:?} is not a UUID"))
        })
        .collect()
}

fn strings(v: Option<Vec<Option<String>>>) -> Option<Vec<String>> {
    v.map(|v| v.into_iter().flatten().collect())
}

/// Arguments of `create_user`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct UserInput {
    username: String,
    password: String,
    need_password_change: bool,
    full_name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    status: Option<String>,
    domain_name: Option<String>,
    role: Option<String>,
    group_ids: Option<Vec<Option<String>>>,
    allowed_client_ip: Option<Vec<Option<String>>>,
    totp_activated: Option<bool>,
    resource_policy: Option<String>,
    sudo_session_enabled: Option<bool>,
}

impl UserInput {
    fn command(self, email: String) -> Result<AdminCommand, Refusal> {
        let status = status(self.status.as_deref(), self.is_active)?.unwrap_or(UserStatus::Active);
        Ok(AdminCommand::CreateUser {
            fields: UserFields {
                username: self.username,
                email,
                full_name: self.full_name.unwrap_or_default(),
                description: self.description.unwrap_or_default(),
                need_password_change: self.need_password_change,
                status,
                role: role(self.role.as_deref())?.unwrap_or(UserRole::User),
                domain_name: self.domain_name.unwrap_or_else(|| "default".into()),
                resource_policy: self.resource_policy.unwrap_or_else(|| "default".into()),
                allowed_client_ip: strings(self.allowed_client_ip),
                totp_activated: self.totp_activated.unwrap_or(false),
                sudo_session_enabled: self.sudo_session_enabled.unwrap_or(false),
            },
            password: self.password,
            project_ids: uuids("group_ids", self.group_ids)?,
        })
    }
}

/// Arguments of `modify_user`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyUserInput {
    username: Option<String>,
    password: Option<String>,
    need_password_change: Option<bool>,
    full_name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    status: Option<String>,
    domain_name: Option<String>,
    role: Option<String>,
    group_ids: Option<Vec<Option<String>>>,
    allowed_client_ip: Option<Vec<Option<String>>>,
    totp_activated: Option<bool>,
    resource_policy: Option<String>,
    sudo_session_enabled: Option<bool>,
}

impl ModifyUserInput {
    fn command(self, email: String) -> Result<AdminCommand, Refusal> {
        for (given, what) in [
            (self.username.is_some(), "username"),
            (self.domain_name.is_some(), "domain_name"),
            (self.group_ids.is_some(), "group_ids"),
            (self.totp_activated.is_some(), "totp_activated"),
        ] {
            if given {
                return Err(format!(
                    "{what} cannot be changed by modify_user here (use the project mutations for memberships)"
                ));
            }
        }
        Ok(AdminCommand::ModifyUser {
            email,
            patch: UserPatch {
                full_name: self.full_name,
                description: self.description,
                need_password_change: self.need_password_change,
                status: status(self.status.as_deref(), self.is_active)?,
                role: role(self.role.as_deref())?,
                resource_policy: self.resource_policy,
                allowed_client_ip: strings(self.allowed_client_ip),
                sudo_session_enabled: self.sudo_session_enabled,
            },
            password: self.password,
        })
    }
}

/// Arguments of `create_keypair`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct KeyPairInput {
    is_active: Option<bool>,
    is_admin: Option<bool>,
    resource_policy: String,
    concurrency_limit: Option<i32>,
    rate_limit: i32,
}

/// Arguments of `modify_keypair`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyKeyPairInput {
    is_active: Option<bool>,
    is_admin: Option<bool>,
    resource_policy: Option<String>,
    concurrency_limit: Option<i32>,
    rate_limit: Option<i32>,
}

/// Arguments of `create_domain`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct DomainInput {
    description: Option<String>,
    is_active: Option<bool>,
    total_resource_slots: Option<JsonString>,
    allowed_vfolder_hosts: Option<JsonString>,
    allowed_docker_registries: Option<Vec<Option<String>>>,
    integration_id: Option<String>,
}

/// Arguments of `modify_domain`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyDomainInput {
    name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    total_resource_slots: Option<JsonString>,
    allowed_vfolder_hosts: Option<JsonString>,
    allowed_docker_registries: Option<Vec<Option<String>>>,
    integration_id: Option<String>,
}

/// Arguments of `create_group`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct GroupInput {
    description: Option<String>,
    is_active: Option<bool>,
    domain_name: String,
    total_resource_slots: Option<JsonString>,
    allowed_vfolder_hosts: Option<JsonString>,
    integration_id: Option<String>,
    resource_policy: Option<String>,
}

/// Arguments of `modify_group`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyGroupInput {
    name: Option<String>,
    description: Option<String>,
    is_active: Option<bool>,
    domain_name: Option<String>,
    total_resource_slots: Option<JsonString>,
    /// `add` or `remove`: what to do with `user_uuids`.
    user_update_mode: Option<String>,
    user_uuids: Option<Vec<Option<String>>>,
    allowed_vfolder_hosts: Option<JsonString>,
    integration_id: Option<String>,
    resource_policy: Option<String>,
}

/// Arguments of `create_keypair_resource_policy`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct CreateKeyPairResourcePolicyInput {
    default_for_unspecified: String,
    total_resource_slots: Option<JsonString>,
    max_session_lifetime: Option<i32>,
    max_concurrent_sessions: i32,
    max_concurrent_sftp_sessions: Option<i32>,
    max_containers_per_session: i32,
    idle_timeout: BigInt,
    allowed_vfolder_hosts: Option<JsonString>,
    max_vfolder_count: Option<i32>,
    max_vfolder_size: Option<BigInt>,
    max_quota_scope_size: Option<BigInt>,
}

/// Arguments of `modify_keypair_resource_policy`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyKeyPairResourcePolicyInput {
    default_for_unspecified: Option<String>,
    total_resource_slots: Option<JsonString>,
    max_session_lifetime: Option<i32>,
    max_concurrent_sessions: Option<i32>,
    max_concurrent_sftp_sessions: Option<i32>,
    max_containers_per_session: Option<i32>,
    idle_timeout: Option<BigInt>,
    allowed_vfolder_hosts: Option<JsonString>,
    max_vfolder_count: Option<i32>,
    max_vfolder_size: Option<BigInt>,
    max_quota_scope_size: Option<BigInt>,
}

fn default_for_unspecified(s: &str) -> Result<DefaultForUnspecified, Refusal> {
    match s.to_uppercase().as_str() {
        "LIMITED" => Ok(DefaultForUnspecified::Limited),
        "UNLIMITED" => Ok(DefaultForUnspecified::Unlimited),
        _ => Err(format!(
            "invalid default_for_unspecified {s:?}: LIMITED or UNLIMITED"
        )),
    }
}

/// Arguments of `create_scaling_group`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct CreateScalingGroupInput {
    description: Option<String>,
    is_active: Option<bool>,
    is_public: Option<bool>,
    wsproxy_addr: Option<String>,
    wsproxy_api_token: Option<String>,
    driver: String,
    driver_opts: Option<JsonString>,
    scheduler: String,
    scheduler_opts: Option<JsonString>,
    use_host_network: Option<bool>,
}

/// Arguments of `modify_scaling_group`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ModifyScalingGroupInput {
    description: Option<String>,
    is_active: Option<bool>,
    is_public: Option<bool>,
    wsproxy_addr: Option<String>,
    wsproxy_api_token: Option<String>,
    driver: Option<String>,
    driver_opts: Option<JsonString>,
    scheduler: Option<String>,
    scheduler_opts: Option<JsonString>,
    use_host_network: Option<bool>,
}

/// Arguments of `create_user_resource_policy` (missing fields take the
/// reference's defaults: no vfolder limit, no quota, 10 sessions per model
/// service, 3 customized images).
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct UserResourcePolicyInput {
    max_vfolder_count: Option<i32>,
    max_quota_scope_size: Option<BigInt>,
    max_session_count_per_model_session: Option<i32>,
    max_customized_image_count: Option<i32>,
}

/// Arguments of `create_project_resource_policy` (missing fields take the
/// reference's defaults: no vfolder limit, no quota, 3 networks).
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ProjectResourcePolicyInput {
    max_vfolder_count: Option<i32>,
    max_quota_scope_size: Option<BigInt>,
    max_network_count: Option<i32>,
}

/// Arguments of `create_resource_preset` and `modify_resource_preset`.
#[derive(Debug, GraphQLInputObject)]
#[graphql(rename_all = "none")]
pub struct ResourcePresetInput {
    resource_slots: Option<JsonString>,
    /// Bytes, or a size such as `"1g"`.
    shared_memory: Option<String>,
    scaling_group_name: Option<String>,
}

/// A byte count written as digits or with a binary suffix (`k`, `m`, `g`,
/// `t`, `p`; optionally followed by `b`/`ib`), as the reference accepts.
pub fn binary_size(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (digits, shift) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 10),
        'm' => (&t[..t.len() - 1], 20),
        'g' => (&t[..t.len() - 1], 30),
        't' => (&t[..t.len() - 1], 40),
        'p' => (&t[..t.len() - 1], 50),
        _ => (t, 0),
    };
    let n: i64 = digits.trim().parse().ok()?;
    if n < 0 {
        return None;
    }
    n.checked_mul(1i64 << shift)
}

impl ResourcePresetInput {
    fn fields(self, base: Option<ResourcePreset>) -> Result<ResourcePresetFields, Refusal> {
        let mut slots = match slot_map("resource_slots", self.resource_slots.as_ref())? {
            Some(s) => s,
            None => match base.as_ref().and_then(|b| b.resource_slots.as_ref()) {
                Some(j) => j.parse("resource_slots")?,
                None => return Err("resource_slots is required".into()),
            },
        };
        if let Some(mem) = slots.get_mut("mem")
            && mem.parse::<f64>().is_err()
        {
            *mem = binary_size(mem)
                .ok_or_else(|| format!("resource_slots: mem {mem:?} is not a size"))?
                .to_string();
        }
        let shared_memory = match self.shared_memory {
            Some(s) if s.trim().is_empty() => None,
            Some(s) => {
                Some(binary_size(&s).ok_or_else(|| format!("shared_memory: {s:?} is not a size"))?)
            }
            None => base.as_ref().and_then(|b| b.shared_memory).map(|b| b.0),
        };
        Ok(ResourcePresetFields {
            resource_slots: slots,
            shared_memory,
            scaling_group_name: self
                .scaling_group_name
                .or_else(|| base.and_then(|b| b.scaling_group_name))
                .filter(|s| !s.is_empty()),
        })
    }
}

macro_rules! payload {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, GraphQLObject)]
        #[graphql(rename_all = "none")]
        pub struct $name {
            /// Whether the command took effect.
            pub ok: Option<bool>,
            /// `success`, or why not.
            pub msg: Option<String>,
        }

        impl $name {
            fn of(result: Result<Submitted, Refusal>) -> Self {
                match result {
                    Ok(_) => $name { ok: Some(true), msg: Some("success".into()) },
                    Err(msg) => $name { ok: Some(false), msg: Some(msg) },
                }
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $field:ident: $ty:ty) => {
        $(#[$doc])*
        #[derive(Debug, GraphQLObject)]
        #[graphql(rename_all = "none")]
        pub struct $name {
            /// Whether the command took effect.
            pub ok: Option<bool>,
            /// `success`, or why not.
            pub msg: Option<String>,
            /// The item as it is now.
            pub $field: Option<$ty>,
        }

        impl $name {
            fn failed(msg: Refusal) -> Self {
                $name { ok: Some(false), msg: Some(msg), $field: None }
            }

            fn done(item: Option<$ty>) -> Self {
                $name { ok: Some(true), msg: Some("success".into()), $field: item }
            }
        }
    };
}

payload!(/// Result of `create_user`.
    CreateUser, user: User);
payload!(/// Result of `modify_user`.
    ModifyUser, user: User);
payload!(/// Result of `delete_user`.
    DeleteUser);
payload!(/// Result of `purge_user`.
    PurgeUser);
payload!(/// Result of `create_keypair`.
    CreateKeyPair, keypair: KeyPair);
payload!(/// Result of `modify_keypair`.
    ModifyKeyPair);
payload!(/// Result of `delete_keypair`.
    DeleteKeyPair);
payload!(/// Result of `create_domain`.
    CreateDomain, domain: Domain);
payload!(/// Result of `modify_domain`.
    ModifyDomain, domain: Domain);
payload!(/// Result of `delete_domain`.
    DeleteDomain);
payload!(/// Result of `purge_domain`.
    PurgeDomain);
payload!(/// Result of `create_group`.
    CreateGroup, group: Group);
payload!(/// Result of `modify_group`.
    ModifyGroup, group: Group);
payload!(/// Result of `delete_group`.
    DeleteGroup);
payload!(/// Result of `purge_group`.
    PurgeGroup);
payload!(/// Result of `create_keypair_resource_policy`.
    CreateKeyPairResourcePolicy, resource_policy: KeyPairResourcePolicy);
payload!(/// Result of `modify_keypair_resource_policy`.
    ModifyKeyPairResourcePolicy);
payload!(/// Result of `delete_keypair_resource_policy`.
    DeleteKeyPairResourcePolicy);
payload!(/// Result of `create_user_resource_policy`.
    CreateUserResourcePolicy, resource_policy: UserResourcePolicy);
payload!(/// Result of `modify_user_resource_policy`.
    ModifyUserResourcePolicy);
payload!(/// Result of `delete_user_resource_policy`.
    DeleteUserResourcePolicy);
payload!(/// Result of `create_project_resource_policy`.
    CreateProjectResourcePolicy, resource_policy: ProjectResourcePolicy);
payload!(/// Result of `modify_project_resource_policy`.
    ModifyProjectResourcePolicy);
payload!(/// Result of `delete_project_resource_policy`.
    DeleteProjectResourcePolicy);
payload!(/// Result of `create_resource_preset`.
    CreateResourcePreset, resource_preset: ResourcePreset);
payload!(/// Result of `modify_resource_preset`.
    ModifyResourcePreset);
payload!(/// Result of `delete_resource_preset`.
    DeleteResourcePreset);
payload!(/// Result of `create_scaling_group`.
    CreateScalingGroup, scaling_group: ScalingGroup);
payload!(/// Result of `modify_scaling_group`.
    ModifyScalingGroup);
payload!(/// Result of `delete_scaling_group`.
    DeleteScalingGroup);
payload!(/// Result of `associate_scaling_group_with_domain`.
    AssociateScalingGroupWithDomain);
payload!(/// Result of `disassociate_scaling_group_with_domain`.
    DisassociateScalingGroupWithDomain);
payload!(/// Result of `associate_scaling_group_with_user_group`.
    AssociateScalingGroupWithUserGroup);
payload!(/// Result of `disassociate_scaling_group_with_user_group`.
    DisassociateScalingGroupWithUserGroup);
payload!(/// Result of `associate_scaling_group_with_keypair`.
    AssociateScalingGroupWithKeyPair);
payload!(/// Result of `disassociate_scaling_group_with_keypair`.
    DisassociateScalingGroupWithKeyPair);

/// The mutation root.
pub struct Mutation;

#[graphql_object]
#[graphql(context = Context, rename_all = "none")]
impl Mutation {
    /// Creates a user with its main keypair (superadmins).
    async fn create_user<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        email: String,
        props: UserInput,
    ) -> FieldResult<CreateUser> {
        let submitted = match props.command(email) {
            Ok(cmd) => ctx.submit(cmd).await,
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(s) => {
                let id = s.created.as_deref().and_then(|c| c.parse::<Uuid>().ok());
                let with_groups = executor
                    .look_ahead()
                    .children()
                    .select("user")
                    .is_some_and(|u| u.children().has_child("groups"));
                let user = match id {
                    Some(id) => users_by_id(ctx, &[id], with_groups).await?.pop(),
                    None => None,
                };
                Ok(CreateUser::done(user))
            }
            Err(msg) => Ok(CreateUser::failed(msg)),
        }
    }

    /// Changes a user (superadmins).
    async fn modify_user(
        ctx: &Context,
        email: String,
        props: ModifyUserInput,
    ) -> FieldResult<ModifyUser> {
        let submitted = match props.command(email) {
            Ok(cmd) => ctx.submit(cmd).await,
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(s) => {
                let id = s.created.as_deref().and_then(|c| c.parse::<Uuid>().ok());
                let user = match id {
                    Some(id) => users_by_id(ctx, &[id], true).await?.pop(),
                    None => None,
                };
                Ok(ModifyUser::done(user))
            }
            Err(msg) => Ok(ModifyUser::failed(msg)),
        }
    }

    /// Marks a user deleted and deactivates its keypairs (superadmins).
    async fn delete_user(ctx: &Context, email: String) -> DeleteUser {
        DeleteUser::of(ctx.submit(AdminCommand::DeleteUser { email }).await)
    }

    /// Removes a user, its keypairs and memberships (superadmins).
    async fn purge_user(ctx: &Context, email: String) -> PurgeUser {
        PurgeUser::of(ctx.submit(AdminCommand::PurgeUser { email }).await)
    }

    /// Creates a keypair for a user given by e-mail (superadmins).
    async fn create_keypair<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        user_id: String,
        props: KeyPairInput,
    ) -> FieldResult<CreateKeyPair> {
        let _ = props.concurrency_limit; // deprecated; the policy decides
        let known = KeyPair {
            user_id: Some(user_id.clone()),
            is_active: Some(props.is_active.unwrap_or(true)),
            is_admin: Some(props.is_admin.unwrap_or(false)),
            rate_limit: Some(props.rate_limit),
            ..KeyPair::default()
        };
        let cmd = AdminCommand::CreateKeypair {
            user_email: user_id,
            is_active: props.is_active.unwrap_or(true),
            is_admin: props.is_admin.unwrap_or(false),
            resource_policy: props.resource_policy,
            rate_limit: i64::from(props.rate_limit),
        };
        let s = match ctx.send(cmd).await {
            Ok(s) => s,
            Err(msg) => return Ok(CreateKeyPair::failed(msg)),
        };
        let Some(sel) = executor.look_ahead().children().select("keypair") else {
            ctx.shown(&s).await;
            return Ok(CreateKeyPair::done(None));
        };
        // What the command itself knows answers without waiting for the
        // read models (the caller's next read waits for this write).
        if let (Some(ak), Some(secret)) = (&s.created, &s.secret_key)
            && let Some(keypair) = created_keypair(known, ak, secret, &sel)
        {
            return Ok(CreateKeyPair::done(Some(keypair)));
        }
        ctx.shown(&s).await;
        let keypair = match &s.created {
            Some(ak) => keypair_by_key(ctx, ak, &sel).await?,
            None => None,
        };
        Ok(CreateKeyPair::done(keypair))
    }

    /// Changes a keypair (superadmins).
    async fn modify_keypair(
        ctx: &Context,
        access_key: String,
        props: ModifyKeyPairInput,
    ) -> ModifyKeyPair {
        let _ = props.concurrency_limit;
        let cmd = AdminCommand::ModifyKeypair {
            access_key,
            patch: KeypairPatch {
                is_active: props.is_active,
                is_admin: props.is_admin,
                resource_policy: props.resource_policy,
                rate_limit: props.rate_limit.map(i64::from),
            },
        };
        ModifyKeyPair::of(ctx.submit(cmd).await)
    }

    /// Deletes a keypair (superadmins).
    async fn delete_keypair(ctx: &Context, access_key: String) -> DeleteKeyPair {
        DeleteKeyPair::of(ctx.submit(AdminCommand::DeleteKeypair { access_key }).await)
    }

    /// Creates a domain (superadmins).
    async fn create_domain(
        ctx: &Context,
        name: String,
        props: DomainInput,
    ) -> FieldResult<CreateDomain> {
        let fields = (|| -> Result<DomainFields, Refusal> {
            Ok(DomainFields {
                description: props.description.unwrap_or_default(),
                is_active: props.is_active.unwrap_or(true),
                total_resource_slots: slot_map(
                    "total_resource_slots",
                    props.total_resource_slots.as_ref(),
                )?
                .unwrap_or_default(),
                allowed_vfolder_hosts: vfolder_hosts(
                    "allowed_vfolder_hosts",
                    props.allowed_vfolder_hosts.as_ref(),
                )?
                .unwrap_or_default(),
                allowed_docker_registries: strings(props.allowed_docker_registries)
                    .unwrap_or_default(),
                integration_id: props.integration_id,
            })
        })();
        let submitted = match fields {
            Ok(fields) => {
                ctx.submit(AdminCommand::CreateDomain {
                    name: name.clone(),
                    fields,
                })
                .await
            }
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(_) => Ok(CreateDomain::done(domain_by_name(ctx, &name).await?)),
            Err(msg) => Ok(CreateDomain::failed(msg)),
        }
    }

    /// Changes a domain (superadmins). Renaming is not supported.
    async fn modify_domain(
        ctx: &Context,
        name: String,
        props: ModifyDomainInput,
    ) -> FieldResult<ModifyDomain> {
        let patch = (|| -> Result<DomainPatch, Refusal> {
            if props.name.as_ref().is_some_and(|n| *n != name) {
                return Err("a domain cannot be renamed".into());
            }
            Ok(DomainPatch {
                description: props.description,
                is_active: props.is_active,
                total_resource_slots: slot_map(
                    "total_resource_slots",
                    props.total_resource_slots.as_ref(),
                )?,
                allowed_vfolder_hosts: vfolder_hosts(
                    "allowed_vfolder_hosts",
                    props.allowed_vfolder_hosts.as_ref(),
                )?,
                allowed_docker_registries: strings(props.allowed_docker_registries),
                integration_id: props.integration_id,
            })
        })();
        let submitted = match patch {
            Ok(patch) => {
                ctx.submit(AdminCommand::ModifyDomain {
                    name: name.clone(),
                    patch,
                })
                .await
            }
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(_) => Ok(ModifyDomain::done(domain_by_name(ctx, &name).await?)),
            Err(msg) => Ok(ModifyDomain::failed(msg)),
        }
    }

    /// Deactivates a domain (superadmins).
    async fn delete_domain(ctx: &Context, name: String) -> DeleteDomain {
        DeleteDomain::of(ctx.submit(AdminCommand::DeleteDomain { name }).await)
    }

    /// Removes a domain with no users or projects left (superadmins).
    async fn purge_domain(ctx: &Context, name: String) -> PurgeDomain {
        PurgeDomain::of(ctx.submit(AdminCommand::PurgeDomain { name }).await)
    }

    /// Creates a project (domain admins in their domain, superadmins).
    async fn create_group(
        ctx: &Context,
        name: String,
        props: GroupInput,
    ) -> FieldResult<CreateGroup> {
        let fields = (|| -> Result<ProjectFields, Refusal> {
            Ok(ProjectFields {
                name,
                domain_name: props.domain_name,
                description: props.description.unwrap_or_default(),
                is_active: props.is_active.unwrap_or(true),
                total_resource_slots: slot_map(
                    "total_resource_slots",
                    props.total_resource_slots.as_ref(),
                )?
                .unwrap_or_default(),
                allowed_vfolder_hosts: vfolder_hosts(
                    "allowed_vfolder_hosts",
                    props.allowed_vfolder_hosts.as_ref(),
                )?
                .unwrap_or_default(),
                integration_id: props.integration_id.filter(|i| !i.is_empty()),
                resource_policy: props.resource_policy.unwrap_or_else(|| "default".into()),
            })
        })();
        let submitted = match fields {
            Ok(fields) => ctx.submit(AdminCommand::CreateProject { fields }).await,
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(s) => {
                let group = match s.created.as_deref().and_then(|c| c.parse::<Uuid>().ok()) {
                    Some(id) => group_by_id(ctx, id).await?,
                    None => None,
                };
                Ok(CreateGroup::done(group))
            }
            Err(msg) => Ok(CreateGroup::failed(msg)),
        }
    }

    /// Changes a project and its members (domain admins in their domain,
    /// superadmins).
    async fn modify_group(
        ctx: &Context,
        gid: Uuid,
        props: ModifyGroupInput,
    ) -> FieldResult<ModifyGroup> {
        let cmd = (|| -> Result<AdminCommand, Refusal> {
            if props.name.is_some() || props.domain_name.is_some() {
                return Err("a project cannot be renamed or moved to another domain".into());
            }
            let members = uuids("user_uuids", props.user_uuids)?;
            let (add_users, remove_users) = match props.user_update_mode.as_deref() {
                None if members.is_empty() => (Vec::new(), Vec::new()),
                Some("add") => (members, Vec::new()),
                Some("remove") => (Vec::new(), members),
                _ => {
                    return Err(
                        "user_update_mode must be \"add\" or \"remove\" with user_uuids".into(),
                    );
                }
            };
            Ok(AdminCommand::ModifyProject {
                id: gid,
                patch: ProjectPatch {
                    description: props.description,
                    is_active: props.is_active,
                    total_resource_slots: slot_map(
                        "total_resource_slots",
                        props.total_resource_slots.as_ref(),
                    )?,
                    allowed_vfolder_hosts: vfolder_hosts(
                        "allowed_vfolder_hosts",
                        props.allowed_vfolder_hosts.as_ref(),
                    )?,
                    integration_id: props.integration_id,
                    resource_policy: props.resource_policy,
                },
                add_users,
                remove_users,
            })
        })();
        let submitted = match cmd {
            Ok(cmd) => ctx.submit(cmd).await,
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(_) => Ok(ModifyGroup::done(group_by_id(ctx, gid).await?)),
            Err(msg) => Ok(ModifyGroup::failed(msg)),
        }
    }

    /// Deactivates a project.
    async fn delete_group(ctx: &Context, gid: Uuid) -> DeleteGroup {
        DeleteGroup::of(ctx.submit(AdminCommand::DeleteProject { id: gid }).await)
    }

    /// Removes a project with no members left.
    async fn purge_group(ctx: &Context, gid: Uuid) -> PurgeGroup {
        PurgeGroup::of(ctx.submit(AdminCommand::PurgeProject { id: gid }).await)
    }

    /// Creates a keypair resource policy (superadmins).
    async fn create_keypair_resource_policy(
        ctx: &Context,
        name: String,
        props: CreateKeyPairResourcePolicyInput,
    ) -> FieldResult<CreateKeyPairResourcePolicy> {
        let fields = (|| -> Result<KeypairPolicyFields, Refusal> {
            Ok(KeypairPolicyFields {
                default_for_unspecified: default_for_unspecified(&props.default_for_unspecified)?,
                total_resource_slots: slot_map(
                    "total_resource_slots",
                    props.total_resource_slots.as_ref(),
                )?
                .unwrap_or_default(),
                max_session_lifetime: i64::from(props.max_session_lifetime.unwrap_or(0)),
                max_concurrent_sessions: i64::from(props.max_concurrent_sessions),
                max_concurrent_sftp_sessions: i64::from(
                    props.max_concurrent_sftp_sessions.unwrap_or(1),
                ),
                max_containers_per_session: i64::from(props.max_containers_per_session),
                idle_timeout: props.idle_timeout.0,
                allowed_vfolder_hosts: vfolder_hosts(
                    "allowed_vfolder_hosts",
                    props.allowed_vfolder_hosts.as_ref(),
                )?
                .unwrap_or_default(),
                max_vfolder_count: i64::from(props.max_vfolder_count.unwrap_or(0)),
                max_vfolder_size: props.max_vfolder_size.map_or(0, |b| b.0),
                max_quota_scope_size: props.max_quota_scope_size.map_or(0, |b| b.0),
            })
        })();
        let submitted = match fields {
            Ok(fields) => {
                ctx.submit(AdminCommand::CreateKeypairPolicy {
                    name: name.clone(),
                    fields,
                })
                .await
            }
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(_) => Ok(CreateKeyPairResourcePolicy::done(
                policy_by_name(ctx, &name).await?,
            )),
            Err(msg) => Ok(CreateKeyPairResourcePolicy::failed(msg)),
        }
    }

    /// Changes a keypair resource policy (superadmins).
    async fn modify_keypair_resource_policy(
        ctx: &Context,
        name: String,
        props: ModifyKeyPairResourcePolicyInput,
    ) -> FieldResult<ModifyKeyPairResourcePolicy> {
        let Some(current) = policy_fields_by_name(ctx, &name).await? else {
            return Ok(ModifyKeyPairResourcePolicy::of(Err(
                "no such keypair resource policy".into(),
            )));
        };
        let fields = (|| -> Result<KeypairPolicyFields, Refusal> {
            Ok(KeypairPolicyFields {
                default_for_unspecified: match &props.default_for_unspecified {
                    Some(d) => default_for_unspecified(d)?,
                    None => current.default_for_unspecified,
                },
                total_resource_slots: slot_map(
                    "total_resource_slots",
                    props.total_resource_slots.as_ref(),
                )?
                .unwrap_or(current.total_resource_slots),
                max_session_lifetime: props
                    .max_session_lifetime
                    .map_or(current.max_session_lifetime, i64::from),
                max_concurrent_sessions: props
                    .max_concurrent_sessions
                    .map_or(current.max_concurrent_sessions, i64::from),
                max_concurrent_sftp_sessions: props
                    .max_concurrent_sftp_sessions
                    .map_or(current.max_concurrent_sftp_sessions, i64::from),
                max_containers_per_session: props
                    .max_containers_per_session
                    .map_or(current.max_containers_per_session, i64::from),
                idle_timeout: props.idle_timeout.map_or(current.idle_timeout, |b| b.0),
                allowed_vfolder_hosts: vfolder_hosts(
                    "allowed_vfolder_hosts",
                    props.allowed_vfolder_hosts.as_ref(),
                )?
                .unwrap_or(current.allowed_vfolder_hosts),
                max_vfolder_count: props
                    .max_vfolder_count
                    .map_or(current.max_vfolder_count, i64::from),
                max_vfolder_size: props
                    .max_vfolder_size
                    .map_or(current.max_vfolder_size, |b| b.0),
                max_quota_scope_size: props
                    .max_quota_scope_size
                    .map_or(current.max_quota_scope_size, |b| b.0),
            })
        })();
        Ok(ModifyKeyPairResourcePolicy::of(match fields {
            Ok(fields) => {
                ctx.submit(AdminCommand::ModifyKeypairPolicy { name, fields })
                    .await
            }
            Err(msg) => Err(msg),
        }))
    }

    /// Deletes a keypair resource policy no keypair uses (superadmins).
    async fn delete_keypair_resource_policy(
        ctx: &Context,
        name: String,
    ) -> DeleteKeyPairResourcePolicy {
        DeleteKeyPairResourcePolicy::of(
            ctx.submit(AdminCommand::DeleteKeypairPolicy { name }).await,
        )
    }

    /// Creates a user resource policy (superadmins).
    async fn create_user_resource_policy(
        ctx: &Context,
        name: String,
        props: UserResourcePolicyInput,
    ) -> FieldResult<CreateUserResourcePolicy> {
        let fields = UserPolicyFields {
            max_vfolder_count: props.max_vfolder_count.unwrap_or(0),
            max_quota_scope_size: props.max_quota_scope_size.map_or(-1, |b| b.0),
            max_session_count_per_model_session: props
                .max_session_count_per_model_session
                .unwrap_or(10),
            max_customized_image_count: props.max_customized_image_count.unwrap_or(3),
        };
        match ctx
            .submit(AdminCommand::CreateUserPolicy {
                name: name.clone(),
                fields,
            })
            .await
        {
            Ok(_) => Ok(CreateUserResourcePolicy::done(
                user_policies(ctx, by_name("p.name", &name)).await?.pop(),
            )),
            Err(msg) => Ok(CreateUserResourcePolicy::failed(msg)),
        }
    }

    /// Changes a user resource policy (superadmins).
    async fn modify_user_resource_policy(
        ctx: &Context,
        name: String,
        props: UserResourcePolicyInput,
    ) -> FieldResult<ModifyUserResourcePolicy> {
        let Some(current) = user_policies(ctx, by_name("p.name", &name)).await?.pop() else {
            return Ok(ModifyUserResourcePolicy::of(Err(
                "no such user resource policy".into(),
            )));
        };
        let fields = UserPolicyFields {
            max_vfolder_count: props
                .max_vfolder_count
                .or(current.max_vfolder_count)
                .unwrap_or(0),
            max_quota_scope_size: props
                .max_quota_scope_size
                .or(current.max_quota_scope_size)
                .map_or(-1, |b| b.0),
            max_session_count_per_model_session: props
                .max_session_count_per_model_session
                .or(current.max_session_count_per_model_session)
                .unwrap_or(10),
            max_customized_image_count: props
                .max_customized_image_count
                .or(current.max_customized_image_count)
                .unwrap_or(3),
        };
        Ok(ModifyUserResourcePolicy::of(
            ctx.submit(AdminCommand::ModifyUserPolicy { name, fields })
                .await,
        ))
    }

    /// Deletes a user resource policy no user uses (superadmins).
    async fn delete_user_resource_policy(ctx: &Context, name: String) -> DeleteUserResourcePolicy {
        DeleteUserResourcePolicy::of(ctx.submit(AdminCommand::DeleteUserPolicy { name }).await)
    }

    /// Creates a project resource policy (superadmins).
    async fn create_project_resource_policy(
        ctx: &Context,
        name: String,
        props: ProjectResourcePolicyInput,
    ) -> FieldResult<CreateProjectResourcePolicy> {
        let fields = ProjectPolicyFields {
            max_vfolder_count: props.max_vfolder_count.unwrap_or(0),
            max_quota_scope_size: props.max_quota_scope_size.map_or(-1, |b| b.0),
            max_network_count: props.max_network_count.unwrap_or(3),
        };
        match ctx
            .submit(AdminCommand::CreateProjectPolicy {
                name: name.clone(),
                fields,
            })
            .await
        {
            Ok(_) => Ok(CreateProjectResourcePolicy::done(
                project_policies(ctx, by_name("p.name", &name)).await?.pop(),
            )),
            Err(msg) => Ok(CreateProjectResourcePolicy::failed(msg)),
        }
    }

    /// Changes a project resource policy (superadmins).
    async fn modify_project_resource_policy(
        ctx: &Context,
        name: String,
        props: ProjectResourcePolicyInput,
    ) -> FieldResult<ModifyProjectResourcePolicy> {
        let Some(current) = project_policies(ctx, by_name("p.name", &name)).await?.pop() else {
            return Ok(ModifyProjectResourcePolicy::of(Err(
                "no such project resource policy".into(),
            )));
        };
        let fields = ProjectPolicyFields {
            max_vfolder_count: props
                .max_vfolder_count
                .or(current.max_vfolder_count)
                .unwrap_or(0),
            max_quota_scope_size: props
                .max_quota_scope_size
                .or(current.max_quota_scope_size)
                .map_or(-1, |b| b.0),
            max_network_count: props
                .max_network_count
                .or(current.max_network_count)
                .unwrap_or(3),
        };
        Ok(ModifyProjectResourcePolicy::of(
            ctx.submit(AdminCommand::ModifyProjectPolicy { name, fields })
                .await,
        ))
    }

    /// Deletes a project resource policy no project uses (superadmins).
    async fn delete_project_resource_policy(
        ctx: &Context,
        name: String,
    ) -> DeleteProjectResourcePolicy {
        DeleteProjectResourcePolicy::of(
            ctx.submit(AdminCommand::DeleteProjectPolicy { name }).await,
        )
    }

    /// Creates a resource preset (superadmins).
    async fn create_resource_preset(
        ctx: &Context,
        name: String,
        props: ResourcePresetInput,
    ) -> FieldResult<CreateResourcePreset> {
        let submitted = match props.fields(None) {
            Ok(fields) => {
                ctx.submit(AdminCommand::CreateResourcePreset {
                    name: name.clone(),
                    fields,
                })
                .await
            }
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(_) => Ok(CreateResourcePreset::done(
                presets(ctx, by_name("r.name", &name)).await?.pop(),
            )),
            Err(msg) => Ok(CreateResourcePreset::failed(msg)),
        }
    }

    /// Changes a resource preset (superadmins).
    async fn modify_resource_preset(
        ctx: &Context,
        name: String,
        props: ResourcePresetInput,
    ) -> FieldResult<ModifyResourcePreset> {
        let Some(current) = presets(ctx, by_name("r.name", &name)).await?.pop() else {
            return Ok(ModifyResourcePreset::of(Err(
                "no such resource preset".into()
            )));
        };
        Ok(ModifyResourcePreset::of(
            match props.fields(Some(current)) {
                Ok(fields) => {
                    ctx.submit(AdminCommand::ModifyResourcePreset { name, fields })
                        .await
                }
                Err(msg) => Err(msg),
            },
        ))
    }

    /// Deletes a resource preset (superadmins).
    async fn delete_resource_preset(ctx: &Context, name: String) -> DeleteResourcePreset {
        DeleteResourcePreset::of(
            ctx.submit(AdminCommand::DeleteResourcePreset { name })
                .await,
        )
    }

    /// Creates a scaling group (superadmins).
    async fn create_scaling_group(
        ctx: &Context,
        name: String,
        props: CreateScalingGroupInput,
    ) -> FieldResult<CreateScalingGroup> {
        let _ = props.wsproxy_api_token; // not kept: a secret that would enter the log
        let fields = (|| -> Result<ScalingGroupFields, Refusal> {
            Ok(ScalingGroupFields {
                description: props.description.unwrap_or_default(),
                is_active: props.is_active.unwrap_or(true),
                is_public: props.is_public.unwrap_or(true),
                driver: props.driver,
                driver_opts: json_object("driver_opts", props.driver_opts.as_ref())?
                    .unwrap_or_else(|| serde_json::json!({})),
                scheduler: props.scheduler,
                scheduler_opts: json_object("scheduler_opts", props.scheduler_opts.as_ref())?
                    .unwrap_or_else(|| serde_json::json!({})),
                use_host_network: props.use_host_network.unwrap_or(false),
                wsproxy_addr: props.wsproxy_addr,
            })
        })();
        let submitted = match fields {
            Ok(fields) => {
                ctx.submit(AdminCommand::CreateScalingGroup {
                    name: name.clone(),
                    fields,
                })
                .await
            }
            Err(msg) => Err(msg),
        };
        match submitted {
            Ok(_) => Ok(CreateScalingGroup::done(
                scaling_group_by_name(ctx, &name).await?,
            )),
            Err(msg) => Ok(CreateScalingGroup::failed(msg)),
        }
    }

    /// Changes a scaling group (superadmins).
    async fn modify_scaling_group(
        ctx: &Context,
        name: String,
        props: ModifyScalingGroupInput,
    ) -> FieldResult<ModifyScalingGroup> {
        let Some(current) = scaling_group_by_name(ctx, &name).await? else {
            return Ok(ModifyScalingGroup::of(Err("no such scaling group".into())));
        };
        let fields = (|| -> Result<ScalingGroupFields, Refusal> {
            let json = |j: Option<JsonString>| -> Result<serde_json::Value, Refusal> {
                j.map_or(Ok(serde_json::json!({})), |j| j.parse("options"))
            };
            Ok(ScalingGroupFields {
                description: props
                    .description
                    .or(current.description)
                    .unwrap_or_default(),
                is_active: props.is_active.or(current.is_active).unwrap_or(true),
                is_public: props.is_public.or(current.is_public).unwrap_or(true),
                driver: props.driver.or(current.driver).unwrap_or_default(),
                driver_opts: match json_object("driver_opts", props.driver_opts.as_ref())? {
                    Some(v) => v,
                    None => json(current.driver_opts)?,
                },
                scheduler: props.scheduler.or(current.scheduler).unwrap_or_default(),
                scheduler_opts: match json_object("scheduler_opts", props.scheduler_opts.as_ref())?
                {
                    Some(v) => v,
                    None => json(current.scheduler_opts)?,
                },
                use_host_network: props
                    .use_host_network
                    .or(current.use_host_network)
                    .unwrap_or(false),
                wsproxy_addr: props.wsproxy_addr.or(current.wsproxy_addr),
            })
        })();
        Ok(ModifyScalingGroup::of(match fields {
            Ok(fields) => {
                ctx.submit(AdminCommand::ModifyScalingGroup { name, fields })
                    .await
            }
            Err(msg) => Err(msg),
        }))
    }

    /// Deletes a scaling group (superadmins).
    async fn delete_scaling_group(ctx: &Context, name: String) -> DeleteScalingGroup {
        DeleteScalingGroup::of(ctx.submit(AdminCommand::DeleteScalingGroup { name }).await)
    }

    /// Lets a domain's users use a scaling group (superadmins).
    async fn associate_scaling_group_with_domain(
        ctx: &Context,
        scaling_group: String,
        domain: String,
    ) -> AssociateScalingGroupWithDomain {
        AssociateScalingGroupWithDomain::of(
            ctx.submit(AdminCommand::AssociateScalingGroup {
                name: scaling_group,
                target: ScalingGroupTarget::Domain(domain),
            })
            .await,
        )
    }

    /// Withdraws a domain's use of a scaling group (superadmins).
    async fn disassociate_scaling_group_with_domain(
        ctx: &Context,
        scaling_group: String,
        domain: String,
    ) -> DisassociateScalingGroupWithDomain {
        DisassociateScalingGroupWithDomain::of(
            ctx.submit(AdminCommand::DisassociateScalingGroup {
                name: scaling_group,
                target: ScalingGroupTarget::Domain(domain),
            })
            .await,
        )
    }

    /// Lets a project's members use a scaling group (superadmins).
    async fn associate_scaling_group_with_user_group(
        ctx: &Context,
        scaling_group: String,
        user_group: Uuid,
    ) -> AssociateScalingGroupWithUserGroup {
        AssociateScalingGroupWithUserGroup::of(
            ctx.submit(AdminCommand::AssociateScalingGroup {
                name: scaling_group,
                target: ScalingGroupTarget::Project(user_group),
            })
            .await,
        )
    }

    /// Withdraws a project's use of a scaling group (superadmins).
    async fn disassociate_scaling_group_with_user_group(
        ctx: &Context,
        scaling_group: String,
        user_group: Uuid,
    ) -> DisassociateScalingGroupWithUserGroup {
        DisassociateScalingGroupWithUserGroup::of(
            ctx.submit(AdminCommand::DisassociateScalingGroup {
                name: scaling_group,
                target: ScalingGroupTarget::Project(user_group),
            })
            .await,
        )
    }

    /// Lets one keypair use a scaling group (superadmins).
    async fn associate_scaling_group_with_keypair(
        ctx: &Context,
        scaling_group: String,
        access_key: String,
    ) -> AssociateScalingGroupWithKeyPair {
        AssociateScalingGroupWithKeyPair::of(
            ctx.submit(AdminCommand::AssociateScalingGroup {
                name: scaling_group,
                target: ScalingGroupTarget::Keypair(access_key),
            })
            .await,
        )
    }

    /// Withdraws a keypair's use of a scaling group (superadmins).
    async fn disassociate_scaling_group_with_keypair(
        ctx: &Context,
        scaling_group: String,
        access_key: String,
    ) -> DisassociateScalingGroupWithKeyPair {
        DisassociateScalingGroupWithKeyPair::of(
            ctx.submit(AdminCommand::DisassociateScalingGroup {
                name: scaling_group,
                target: ScalingGroupTarget::Keypair(access_key),
            })
            .await,
        )
    }
}

/// A keypair just created, answered from what its command knew, when the
/// selection asks for nothing more (else `None`: read it back).
fn created_keypair<S: ScalarValue>(
    known: KeyPair,
    access_key: &str,
    secret_key: &str,
    sel: &juniper::LookAheadSelection<'_, S>,
) -> Option<KeyPair> {
    const KNOWN: [&str; 8] = [
        "id",
        "access_key",
        "secret_key",
        "user_id",
        "is_active",
        "is_admin",
        "rate_limit",
        "__typename",
    ];
    let children = sel.children();
    if !children
        .iter()
        .all(|c| KNOWN.contains(&c.field_original_name()))
    {
        return None;
    }
    Some(KeyPair {
        id: Some(juniper::ID::new(access_key)),
        access_key: Some(access_key.to_owned()),
        secret_key: Some(secret_key.to_owned()),
        ..known
    })
}

#[cfg(test)]
mod tests {
    use super::binary_size;

    #[test]
    fn sizes_with_binary_suffixes() {
        assert_eq!(binary_size("1024"), Some(1024));
        assert_eq!(binary_size("1k"), Some(1024));
        assert_eq!(binary_size("8g"), Some(8 << 30));
        assert_eq!(binary_size("2GiB"), Some(2 << 30));
        assert_eq!(binary_size(" 3 m "), Some(3 << 20));
        assert_eq!(binary_size("-1g"), None);
        assert_eq!(binary_size("lots"), None);
        assert_eq!(binary_size("9999999p"), None, "overflow");
    }
}
