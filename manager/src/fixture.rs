//! Fixture files: domains, users, keypairs, projects, resource policies,
//! scaling groups, resource presets and images to create at start-up (the
//! default admin and user of a development cluster) — created by commands,
//! so they are events like everything else. Populating skips what exists, so
//! it can run on every `just run`.

use std::fmt;

use anyhow::{Context, anyhow};
use manager_command::aggregate::Aggregate;
use manager_command::domain::{self, Domain, DomainCommand, DomainFields};
use manager_command::handler::CommandHandler;
use manager_command::image::{self, AliasImage, Image, ImageFields, RegisterImage};
use manager_command::keypair::{self, CreateKeypair, Keypair, NewKeypair};
use manager_command::policy::{KeypairPolicy, KeypairPolicyCommand, default_fields};
use manager_command::project::{AddProjectMembers, CreateProject, ProjectFields};
use manager_command::project_policy::{self, ProjectPolicy, ProjectPolicyCommand};
use manager_command::reservation::Reservation;
use manager_command::resource_preset::{self, ResourcePreset, ResourcePresetCommand};
use manager_command::scaling_group::{
    self, AssociateScalingGroup, ScalingGroup, ScalingGroupCommand,
};
use manager_command::user::{CreateUser, UserFields, UserRole, UserStatus, password};
use manager_command::user_policy::{self, UserPolicy, UserPolicyCommand};
use manager_events::project_policy::ProjectPolicyFields;
use manager_events::resource_preset::ResourcePresetFields;
use manager_events::scaling_group::{ScalingGroupFields, ScalingGroupTarget};
use manager_events::secrets::KeyStore;
use manager_events::user_policy::UserPolicyFields;
use manager_events::{EventMetadata, EventStore, reservation};
use serde::Deserialize;
use uuid::Uuid;

/// A fixture file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Domains to create.
    #[serde(default)]
    pub domains: Vec<FixtureDomain>,
    /// Keypair resource policies to create (with the reference's defaults).
    #[serde(default)]
    pub keypair_resource_policies: Vec<FixturePolicy>,
    /// User resource policies to create.
    #[serde(default)]
    pub user_resource_policies: Vec<FixtureUserPolicy>,
    /// Project resource policies to create.
    #[serde(default)]
    pub project_resource_policies: Vec<FixtureProjectPolicy>,
    /// Users to create.
    #[serde(default)]
    pub users: Vec<FixtureUser>,
    /// Keypairs to create.
    #[serde(default)]
    pub keypairs: Vec<FixtureKeypair>,
    /// Projects to create, with their members.
    #[serde(default)]
    pub projects: Vec<FixtureProject>,
    /// Scaling groups to create, with the domains that may use them.
    #[serde(default)]
    pub scaling_groups: Vec<FixtureScalingGroup>,
    /// Resource presets to create.
    #[serde(default)]
    pub resource_presets: Vec<FixturePreset>,
    /// Images to register, with their aliases.
    #[serde(default)]
    pub images: Vec<FixtureImage>,
}

/// An image of a fixture (registered as a registry scan would).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureImage {
    /// Canonical name, `registry/image:tag`.
    pub name: String,
    /// CPU architecture (default `x86_64`).
    #[serde(default = "default_architecture")]
    pub architecture: String,
    /// The registry's name (`cr.backend.ai`).
    pub registry: String,
    /// The repository within it (`stable/python`).
    pub image: String,
    /// The tag.
    pub tag: String,
    /// Content digest of the image config.
    #[serde(default)]
    pub digest: Option<String>,
    /// Size in bytes.
    #[serde(default)]
    pub size_bytes: u64,
    /// `compute` (default), `system` or `service`.
    #[serde(default = "default_image_kind")]
    pub kind: String,
    /// Docker labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Slot name → bounds; amounts are JSON strings or numbers, `mem` in
    /// bytes; `max` left out is unbounded.
    #[serde(default)]
    pub resources: std::collections::BTreeMap<String, FixtureSlotLimits>,
    /// Aliases that name it (`python`).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// The bounds of one slot of a [`FixtureImage`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSlotLimits {
    /// The least a kernel may ask for (default 0).
    #[serde(default)]
    pub min: Option<serde_json::Value>,
    /// The most a kernel may ask for (default unbounded).
    #[serde(default)]
    pub max: Option<serde_json::Value>,
}

fn default_architecture() -> String {
    image::DEFAULT_ARCHITECTURE.to_owned()
}

fn default_image_kind() -> String {
    "compute".to_owned()
}

impl FixtureImage {
    fn fields(&self) -> anyhow::Result<ImageFields> {
        let amount = |slot: &str, which: &str, v: &Option<serde_json::Value>| match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => decimal(v).map(Some).with_context(|| {
                format!("image {}: the {which} of {slot} is not a number", self.name)
            }),
        };
        let mut resources = std::collections::BTreeMap::new();
        for (slot, limits) in &self.resources {
            resources.insert(
                slot.clone(),
                image::SlotLimits {
                    min: amount(slot, "min", &limits.min)?.unwrap_or_else(|| "0".to_owned()),
                    max: amount(slot, "max", &limits.max)?,
                },
            );
        }
        Ok(ImageFields {
            registry: self.registry.clone(),
            image: self.image.clone(),
            tag: self.tag.clone(),
            config_digest: self.digest.clone(),
            size_bytes: self.size_bytes,
            kind: self.kind.clone(),
            labels: self.labels.clone(),
            resources,
        })
    }
}

/// A user resource policy of a fixture; limits left out take the
/// reference's defaults (no vfolder count limit, no quota, 10 sessions per
/// model service, 3 customized images).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureUserPolicy {
    /// Its name.
    pub name: String,
    /// vfolders a user may own (0: no limit).
    pub max_vfolder_count: Option<i32>,
    /// Bytes of a user's quota scope (-1: no limit).
    pub max_quota_scope_size: Option<i64>,
    /// Sessions per model service.
    pub max_session_count_per_model_session: Option<i32>,
    /// Customized images a user may publish.
    pub max_customized_image_count: Option<i32>,
}

impl FixtureUserPolicy {
    fn fields(&self) -> UserPolicyFields {
        let d = user_policy::default_fields();
        UserPolicyFields {
            max_vfolder_count: self.max_vfolder_count.unwrap_or(d.max_vfolder_count),
            max_quota_scope_size: self.max_quota_scope_size.unwrap_or(d.max_quota_scope_size),
            max_session_count_per_model_session: self
                .max_session_count_per_model_session
                .unwrap_or(d.max_session_count_per_model_session),
            max_customized_image_count: self
                .max_customized_image_count
                .unwrap_or(d.max_customized_image_count),
        }
    }
}

/// A project resource policy of a fixture; limits left out take the
/// reference's defaults (no vfolder count limit, no quota, 3 networks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureProjectPolicy {
    /// Its name.
    pub name: String,
    /// vfolders a project may own (0: no limit).
    pub max_vfolder_count: Option<i32>,
    /// Bytes of a project's quota scope (-1: no limit).
    pub max_quota_scope_size: Option<i64>,
    /// Networks per project (-1: no limit).
    pub max_network_count: Option<i32>,
}

impl FixtureProjectPolicy {
    fn fields(&self) -> ProjectPolicyFields {
        let d = project_policy::default_fields();
        ProjectPolicyFields {
            max_vfolder_count: self.max_vfolder_count.unwrap_or(d.max_vfolder_count),
            max_quota_scope_size: self.max_quota_scope_size.unwrap_or(d.max_quota_scope_size),
            max_network_count: self.max_network_count.unwrap_or(d.max_network_count),
        }
    }
}

/// A resource preset of a fixture. Amounts may be JSON strings or numbers,
/// as in the reference's fixtures.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixturePreset {
    /// Its name.
    pub name: String,
    /// Slot name → amount (`cpu` and `mem` required; `mem` in bytes).
    pub resource_slots: std::collections::BTreeMap<String, serde_json::Value>,
    /// Bytes of shared memory, at most `mem`.
    #[serde(default)]
    pub shared_memory: Option<serde_json::Value>,
    /// The scaling group it is meant for.
    #[serde(default)]
    pub scaling_group_name: Option<String>,
}

/// A JSON string or number as the decimal string it spells.
fn decimal(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl FixturePreset {
    fn fields(&self) -> anyhow::Result<ResourcePresetFields> {
        let mut resource_slots = std::collections::BTreeMap::new();
        for (slot, value) in &self.resource_slots {
            let amount = decimal(value).with_context(|| {
                format!("resource preset {}: slot {slot} is not a number", self.name)
            })?;
            resource_slots.insert(slot.clone(), amount);
        }
        let shared_memory = match &self.shared_memory {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                decimal(v)
                    .and_then(|s| s.parse::<i64>().ok())
                    .with_context(|| {
                        format!(
                            "resource preset {}: shared_memory is not a number of bytes",
                            self.name
                        )
                    })?,
            ),
        };
        Ok(ResourcePresetFields {
            resource_slots,
            shared_memory,
            scaling_group_name: self.scaling_group_name.clone(),
        })
    }
}

/// A scaling group of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureScalingGroup {
    /// Its name.
    pub name: String,
    /// `fifo`, `lifo` or `drf`.
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    /// Domains that may use it.
    #[serde(default)]
    pub domains: Vec<String>,
}

fn default_scheduler() -> String {
    "fifo".to_owned()
}

/// A project of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureProject {
    /// Its name (unique in its domain).
    pub name: String,
    /// Its domain.
    pub domain_name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// Members, by e-mail.
    #[serde(default)]
    pub members: Vec<String>,
}

/// A keypair resource policy of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixturePolicy {
    /// Its name.
    pub name: String,
}

/// A domain of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureDomain {
    /// Its name.
    pub name: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// Registries whose images its sessions may use (`cr.backend.ai`).
    #[serde(default)]
    pub allowed_docker_registries: Vec<String>,
}

/// A user of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureUser {
    /// E-mail.
    pub email: String,
    /// Login name.
    pub username: String,
    /// Clear-text password (hashed before it is stored).
    pub password: String,
    /// `superadmin`, `admin`, `user` or `monitor`.
    pub role: String,
    /// Its domain.
    pub domain_name: String,
    /// Display name.
    #[serde(default)]
    pub full_name: String,
    /// User resource policy.
    #[serde(default = "default_policy")]
    pub resource_policy: String,
}

/// A keypair of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureKeypair {
    /// The owner's e-mail.
    pub user_email: String,
    /// Access key.
    pub access_key: String,
    /// Secret key (sealed before it is stored).
    pub secret_key: String,
    /// Admin rights.
    #[serde(default)]
    pub is_admin: bool,
    /// Keypair resource policy.
    #[serde(default = "default_policy")]
    pub resource_policy: String,
    /// Requests per 15 minutes.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: i64,
}

fn default_policy() -> String {
    "default".to_owned()
}

fn default_rate_limit() -> i64 {
    10_000
}

/// What populating did.
#[derive(Debug, Default)]
pub struct Report {
    created: Vec<String>,
    existing: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fixture: created {} ({}); already present {}",
            self.created.len(),
            self.created.join(", "),
            self.existing.len()
        )
    }
}

fn meta(what: &str) -> EventMetadata {
    EventMetadata {
        request_id: Some(format!("fixture:{what}")),
        ..EventMetadata::default()
    }
}

/// The user id holding an e-mail, if any.
async fn user_by_email(handler: &CommandHandler, email: &str) -> anyhow::Result<Option<Uuid>> {
    let (res, _) = handler
        .load::<Reservation>(&reservation::stream_id("user-email", email))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(res
        .holder
        .and_then(|h| h.strip_prefix("user:").and_then(|u| u.parse().ok())))
}

/// Runs `command` (a creation) on the aggregate at `stream_id` unless it
/// already exists, and says which in the report as "`kind` `name`".
async fn create_missing<A: Aggregate>(
    handler: &CommandHandler,
    report: &mut Report,
    (kind, name): (&str, &str),
    stream_id: &str,
    exists: impl Fn(&A) -> bool,
    command: A::Command,
) -> anyhow::Result<()> {
    let what = format!("{kind} {name}");
    let (existing, _) = handler
        .load::<A>(stream_id)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if exists(&existing) {
        report.existing.push(what);
        return Ok(());
    }
    handler
        .execute::<A>(stream_id, command, meta(&kind.replace(' ', "-")))
        .await
        .map_err(|e| anyhow!("{what}: {e}"))?;
    report.created.push(what);
    Ok(())
}

/// Creates what the fixture describes and does not exist yet.
pub async fn populate(
    store: &EventStore,
    keys: &KeyStore,
    fixture: &Fixture,
) -> anyhow::Result<Report> {
    let handler = CommandHandler::new(store.clone());
    let mut report = Report::default();
    for d in &fixture.domains {
        let id = domain::stream_id(&d.name);
        let (existing, _) = handler
            .load::<Domain>(&id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if existing.name.is_some() {
            report.existing.push(format!("domain {}", d.name));
            continue;
        }
        let fields = DomainFields {
            description: d.description.clone(),
            is_active: true,
            allowed_docker_registries: d.allowed_docker_registries.clone(),
            ..DomainFields::default()
        };
        handler
            .execute::<Domain>(
                &id,
                DomainCommand::Create {
                    name: d.name.clone(),
                    fields,
                },
                meta("domain"),
            )
            .await
            .map_err(|e| anyhow!("domain {}: {e}", d.name))?;
        report.created.push(format!("domain {}", d.name));
    }
    for p in &fixture.keypair_resource_policies {
        let id = manager_command::policy::stream_id(&p.name);
        let (existing, _) = handler
            .load::<KeypairPolicy>(&id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if existing.name.is_some() {
            report
                .existing
                .push(format!("keypair resource policy {}", p.name));
            continue;
        }
        let command = KeypairPolicyCommand::Create {
            name: p.name.clone(),
            fields: default_fields(),
        };
        handler
            .execute::<KeypairPolicy>(&id, command, meta("keypair-resource-policy"))
            .await
            .map_err(|e| anyhow!("keypair resource policy {}: {e}", p.name))?;
        report
            .created
            .push(format!("keypair resource policy {}", p.name));
    }
    for p in &fixture.user_resource_policies {
        let command = UserPolicyCommand::Create {
            name: p.name.clone(),
            fields: p.fields(),
        };
        create_missing::<UserPolicy>(
            &handler,
            &mut report,
            ("user resource policy", &p.name),
            &user_policy::stream_id(&p.name),
            |existing| existing.name.is_some(),
            command,
        )
        .await?;
    }
    for p in &fixture.project_resource_policies {
        let command = ProjectPolicyCommand::Create {
            name: p.name.clone(),
            fields: p.fields(),
        };
        create_missing::<ProjectPolicy>(
            &handler,
            &mut report,
            ("project resource policy", &p.name),
            &project_policy::stream_id(&p.name),
            |existing| existing.name.is_some(),
            command,
        )
        .await?;
    }
    for u in &fixture.users {
        if user_by_email(&handler, &u.email).await?.is_some() {
            report.existing.push(format!("user {}", u.email));
            continue;
        }
        let role = UserRole::parse(&u.role)
            .ok_or_else(|| anyhow!("user {}: unknown role {:?}", u.email, u.role))?;
        let fields = UserFields {
            username: u.username.clone(),
            email: u.email.clone(),
            full_name: u.full_name.clone(),
            description: String::new(),
            need_password_change: false,
            status: UserStatus::Active,
            role,
            domain_name: u.domain_name.clone(),
            resource_policy: u.resource_policy.clone(),
            allowed_client_ip: None,
            totp_activated: false,
            sudo_session_enabled: false,
        };
        let password_hash =
            password::hash(&u.password).map_err(|p| anyhow!("user {}: {p}", u.email))?;
        handler
            .transact(
                &CreateUser {
                    uuid: Uuid::new_v4(),
                    fields,
                    password_hash,
                },
                meta("user"),
            )
            .await
            .map_err(|p| anyhow!("user {}: {p}", u.email))?;
        report.created.push(format!("user {}", u.email));
    }
    for k in &fixture.keypairs {
        let (existing, _) = handler
            .load::<Keypair>(&keypair::stream_id(&k.access_key))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if existing.access_key.is_some() {
            report.existing.push(format!("keypair {}", k.access_key));
            continue;
        }
        let owner = user_by_email(&handler, &k.user_email)
            .await?
            .with_context(|| format!("keypair {}: no user {}", k.access_key, k.user_email))?;
        let new = NewKeypair {
            access_key: k.access_key.clone(),
            user_uuid: owner,
            is_active: true,
            is_admin: k.is_admin,
            resource_policy: k.resource_policy.clone(),
            rate_limit: k.rate_limit,
        };
        let create = CreateKeypair::prepare(keys, new, &k.secret_key)
            .await
            .map_err(|p| anyhow!("keypair {}: {p}", k.access_key))?;
        handler
            .transact(&create, meta("keypair"))
            .await
            .map_err(|p| anyhow!("keypair {}: {p}", k.access_key))?;
        report.created.push(format!("keypair {}", k.access_key));
    }
    for p in &fixture.projects {
        let key = reservation::stream_id("project-name", &format!("{}/{}", p.domain_name, p.name));
        let (held, _) = handler
            .load::<Reservation>(&key)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let id = match held.holder.and_then(|h| {
            h.strip_prefix("project:")
                .and_then(|u| u.parse::<Uuid>().ok())
        }) {
            Some(id) => {
                report.existing.push(format!("project {}", p.name));
                id
            }
            None => {
                let fields = ProjectFields {
                    name: p.name.clone(),
                    domain_name: p.domain_name.clone(),
                    description: p.description.clone(),
                    is_active: true,
                    total_resource_slots: Default::default(),
                    allowed_vfolder_hosts: Default::default(),
                    integration_id: None,
                    resource_policy: default_policy(),
                };
                let id = Uuid::new_v4();
                handler
                    .transact(&CreateProject { id, fields }, meta("project"))
                    .await
                    .map_err(|e| anyhow!("project {}: {e}", p.name))?;
                report.created.push(format!("project {}", p.name));
                id
            }
        };
        let mut users = Vec::new();
        for email in &p.members {
            users.push(
                user_by_email(&handler, email)
                    .await?
                    .with_context(|| format!("project {}: no user {email}", p.name))?,
            );
        }
        // Adding a member twice is a no-op, so this can run every time.
        handler
            .transact(&AddProjectMembers { id, users }, meta("project-members"))
            .await
            .map_err(|e| anyhow!("project {} members: {e}", p.name))?;
    }
    for g in &fixture.scaling_groups {
        let id = scaling_group::stream_id(&g.name);
        let (existing, _) = handler
            .load::<ScalingGroup>(&id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        if existing.name.is_some() {
            report.existing.push(format!("scaling group {}", g.name));
        } else {
            let fields = ScalingGroupFields {
                scheduler: g.scheduler.clone(),
                ..scaling_group::default_fields()
            };
            handler
                .execute::<ScalingGroup>(
                    &id,
                    ScalingGroupCommand::Create {
                        name: g.name.clone(),
                        fields,
                    },
                    meta("scaling-group"),
                )
                .await
                .map_err(|e| anyhow!("scaling group {}: {e}", g.name))?;
            report.created.push(format!("scaling group {}", g.name));
        }
        for d in &g.domains {
            let associate = AssociateScalingGroup {
                name: g.name.clone(),
                target: ScalingGroupTarget::Domain(d.clone()),
            };
            handler
                .transact(&associate, meta("scaling-group-association"))
                .await
                .map_err(|e| anyhow!("scaling group {} for domain {d}: {e}", g.name))?;
        }
    }
    for p in &fixture.resource_presets {
        let command = ResourcePresetCommand::Create {
            name: p.name.clone(),
            fields: p.fields()?,
        };
        create_missing::<ResourcePreset>(
            &handler,
            &mut report,
            ("resource preset", &p.name),
            &resource_preset::stream_id(&p.name),
            |existing| existing.name.is_some(),
            command,
        )
        .await?;
    }
    for i in &fixture.images {
        populate_image(&handler, &mut report, i).await?;
    }
    Ok(report)
}

/// Registers an image with its aliases unless it is registered; adds the
/// aliases that name no image yet (an alias that names another image is
/// left where it is, as anything else that exists).
async fn populate_image(
    handler: &CommandHandler,
    report: &mut Report,
    i: &FixtureImage,
) -> anyhow::Result<()> {
    let id = image::stream_id(&i.name, &i.architecture);
    let (existing, _) = handler
        .load::<Image>(&id)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut free = Vec::new();
    for alias in &i.aliases {
        let (held, _) = handler
            .load::<Reservation>(&reservation::stream_id(image::ALIAS_SCOPE, alias))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        match held.holder {
            None => free.push(alias.clone()),
            Some(_) => report.existing.push(format!("image alias {alias}")),
        }
    }
    if !existing.live() {
        let register = RegisterImage {
            canonical: i.name.clone(),
            architecture: i.architecture.clone(),
            fields: i.fields()?,
            aliases: free.clone(),
        };
        handler
            .transact(&register, meta("image"))
            .await
            .map_err(|p| anyhow!("image {}: {p}", i.name))?;
        report.created.push(if free.is_empty() {
            format!("image {}", i.name)
        } else {
            format!("image {} (aliases {})", i.name, free.join(", "))
        });
    } else {
        report.existing.push(format!("image {}", i.name));
        for alias in &free {
            let command = AliasImage {
                alias: alias.clone(),
                canonical: i.name.clone(),
                architecture: i.architecture.clone(),
            };
            handler
                .transact(&command, meta("image-alias"))
                .await
                .map_err(|p| anyhow!("image alias {alias}: {p}"))?;
            report.created.push(format!("image alias {alias}"));
        }
    }
    Ok(())
}
