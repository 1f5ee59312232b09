//! Compute sessions and their containers (kernels): `compute_session`,
//! `compute_session_list`, `compute_container` and `compute_container_list`
//! (API spec §5.3, §5.4), read from the `sessions` and `kernels` read models.
//!
//! # Scoping (the reference's `scoped_query`)
//! - A superadmin sees every session; `domain_name`, `group_id` and
//!   `access_key` narrow the list.
//! - A domain admin sees its domain's sessions; a `domain_name` other than
//!   its own is "Forbidden operation.".
//! - Anyone else sees the sessions of the calling keypair only; another
//!   `domain_name` or `access_key` is "Forbidden operation.".
//!
//! A session's containers are its own; its `dependencies` are the sessions
//! it depends on that the caller may see. A container is visible when its
//! session is.
//!
//! # Lists
//! `compute_session_list` is ordered, unless the client orders it, as the
//! reference orders it: most recently created or ended first (ties by id).
//! `status` is a comma-separated list of session status names; since the
//! 23.09 clients know no PREPARED or CREATING (they are steps of what they
//! call PREPARING), asking for PREPARING also finds sessions in those two.
//! `filter` and `order` take the fields of [`SESSION_FIELDS`]; `agent_ids`
//! (also `agent_id`, `agents`) compares with the session's agents joined by
//! commas (`agent_ids == "i-a"` for a session on one agent, `contains` to
//! find one of several).
//!
//! `compute_container_list(session_id)` lists one session's containers,
//! ordered by `local_rank` (the main container first) unless ordered
//! otherwise; `role` narrows it to a cluster role (`main`, `sub`); `filter`
//! and `order` take [`CONTAINER_FIELDS`].
//!
//! # What is not tracked yet
//! Live and last statistics, abuse reports, commit status, inference
//! metrics and the query count answer as the reference does for a session
//! that has none: null, a null per container for `abusing_reports`, `{}`
//! for `idle_checks` (no idle checker configured), 0 for `num_queries`.
//! `main_kernel_role` is `COMPUTE` (image roles are not read yet), and
//! `created_user_*` and `cluster_template` are null, as in the reference.
//!
//! Every field is read from the read models, so responses may be kept by
//! the response cache (see `cache.rs`).

use std::collections::HashMap;

use chrono::{DateTime as ChronoTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use juniper::{FieldResult, GraphQLObject, ID, LookAheadChildren, ScalarValue};
use manager_events::session::SessionStatus;
use uuid::Uuid;

use super::Context;
use super::Eager;
use super::query::FORBIDDEN;
use super::scalars::{BigInt, DateTime, JsonString};
use super::sql::{Conditions, gql_error, page};
use crate::minilang::{Field, FieldType, Fields, Param};

/// A compute session (API spec §5.4).
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ComputeSession {
    /// The session's id.
    pub id: Option<ID>,
    /// The session's id (same as `id`).
    pub session_id: Option<Uuid>,
    /// The main kernel's id.
    pub main_kernel_id: Option<Uuid>,
    /// Free text given at creation.
    pub tag: Option<String>,
    /// The name, unique among its owner's live sessions.
    pub name: Option<String>,
    /// `INTERACTIVE`, `BATCH` or `INFERENCE`.
    #[graphql(name = "type")]
    pub session_type: Option<String>,
    /// The main kernel's role (`COMPUTE`).
    pub main_kernel_role: Option<String>,
    /// The main kernel's image (canonical name).
    pub image: Option<String>,
    /// The image's architecture.
    pub architecture: Option<String>,
    /// The image's registry.
    pub registry: Option<String>,
    /// Not supported (null, as the reference).
    pub cluster_template: Option<String>,
    /// `single-node` or `multi-node`.
    pub cluster_mode: Option<String>,
    /// How many kernels it has.
    pub cluster_size: Option<i32>,
    /// The owner's domain.
    pub domain_name: Option<String>,
    /// The project's name.
    pub group_name: Option<String>,
    /// The project's id.
    pub group_id: Option<Uuid>,
    /// The owner's e-mail.
    pub user_email: Option<String>,
    /// The owner's full name.
    pub full_name: Option<String>,
    /// The owner's id.
    pub user_id: Option<Uuid>,
    /// The owner's keypair.
    pub access_key: Option<String>,
    /// Not tracked (null, as the reference).
    pub created_user_email: Option<String>,
    /// Not tracked (null, as the reference).
    pub created_user_id: Option<Uuid>,
    /// A session status name.
    pub status: Option<String>,
    /// When the status last changed.
    pub status_changed: Option<DateTime>,
    /// Why, in kebab-case (`scheduled`, `user-requested`…).
    pub status_info: Option<String>,
    /// Details: `scheduler` while pending, `error` after a failure…
    pub status_data: Option<JsonString>,
    /// When it entered each status (`{STATUS: time}`).
    pub status_history: Option<JsonString>,
    /// When it was created.
    pub created_at: Option<DateTime>,
    /// When it ended (terminated or cancelled).
    pub terminated_at: Option<DateTime>,
    /// Not before this time (batch sessions).
    pub starts_at: Option<DateTime>,
    /// When it was placed on agents.
    pub scheduled_at: Option<DateTime>,
    /// The batch command.
    pub startup_command: Option<String>,
    /// `UNDEFINED`, `SUCCESS` or `FAILURE`.
    pub result: Option<String>,
    /// Not tracked yet (null).
    pub commit_status: Option<String>,
    /// Abuse reports per container (none collected yet: nulls).
    pub abusing_reports: Option<Vec<Option<JsonString>>>,
    /// Idle checkers' reports (none configured: `{}`).
    pub idle_checks: Option<JsonString>,
    /// The agents its kernels were placed on.
    pub agent_ids: Option<Vec<Option<String>>>,
    /// Same as `agent_ids` (legacy).
    pub agents: Option<Vec<Option<String>>>,
    /// Resource options per kernel hostname.
    pub resource_opts: Option<JsonString>,
    /// The scaling group it runs in.
    pub scaling_group: Option<String>,
    /// The main kernel's service ports, once it runs.
    pub service_ports: Option<JsonString>,
    /// Names of the virtual folders mounted.
    pub mounts: Option<Vec<Option<String>>>,
    /// Names of the virtual folders mounted.
    pub vfolder_mounts: Option<Vec<Option<String>>>,
    /// What it asked for: slots per kernel × kernels.
    pub occupying_slots: Option<JsonString>,
    /// What its kernels hold now.
    pub occupied_slots: Option<JsonString>,
    /// Queries run in it (not counted yet: 0).
    pub num_queries: Option<BigInt>,
    /// Its containers (kernels), the main one first.
    pub containers: Option<Vec<Option<ComputeContainer>>>,
    /// The sessions it depends on (those the caller may see).
    pub dependencies: Option<Vec<Option<ComputeSession>>>,
    /// Not collected yet (null).
    pub inference_metrics: Option<JsonString>,
}

/// A page of compute sessions.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ComputeSessionList {
    /// The page.
    pub items: Vec<Option<ComputeSession>>,
    /// How many match, over all pages.
    pub total_count: i32,
}

/// A container: one kernel of a session (API spec §5.4).
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ComputeContainer {
    /// The kernel's id.
    pub id: Option<ID>,
    /// Legacy: `cluster_idx`.
    pub idx: Option<i32>,
    /// Legacy: `cluster_role`.
    pub role: Option<String>,
    /// Legacy: `cluster_hostname`.
    pub hostname: Option<String>,
    /// Index within its role, from 1.
    pub cluster_idx: Option<i32>,
    /// Rank among the session's kernels, from 0.
    pub local_rank: Option<i32>,
    /// `main` or `sub`.
    pub cluster_role: Option<String>,
    /// Hostname inside the cluster (`main1`, `sub1`…).
    pub cluster_hostname: Option<String>,
    /// Its session.
    pub session_id: Option<Uuid>,
    /// The image (canonical name).
    pub image: Option<String>,
    /// The image's architecture.
    pub architecture: Option<String>,
    /// The image's registry.
    pub registry: Option<String>,
    /// A kernel status name.
    pub status: Option<String>,
    /// When the status last changed.
    pub status_changed: Option<DateTime>,
    /// Why, in kebab-case.
    pub status_info: Option<String>,
    /// Details (`error`, `kernel.exit_code`…).
    pub status_data: Option<JsonString>,
    /// When it was created.
    pub created_at: Option<DateTime>,
    /// When it ended.
    pub terminated_at: Option<DateTime>,
    /// Not before this time (batch sessions).
    pub starts_at: Option<DateTime>,
    /// When it was placed on its agent.
    pub scheduled_at: Option<DateTime>,
    /// Not collected yet (null).
    pub abusing_report: Option<JsonString>,
    /// The agent it was placed on.
    pub agent: Option<String>,
    /// That agent's RPC address.
    pub agent_addr: Option<String>,
    /// What runs it on the agent, once started.
    pub container_id: Option<String>,
    /// Resource options (`shmem`…).
    pub resource_opts: Option<JsonString>,
    /// The slots it holds: as requested, as placed, then as allocated.
    pub occupied_slots: Option<JsonString>,
    /// Not collected yet (null).
    pub live_stat: Option<JsonString>,
    /// Not collected yet (null).
    pub last_stat: Option<JsonString>,
    /// Container ports opened up front.
    pub preopen_ports: Option<Vec<Option<i32>>>,
}

/// A page of containers.
#[derive(Debug, Clone, GraphQLObject)]
#[graphql(rename_all = "none")]
pub struct ComputeContainerList {
    /// The page.
    pub items: Vec<Option<ComputeContainer>>,
    /// How many match, over all pages.
    pub total_count: i32,
}

/// Filterable and orderable fields of `compute_session_list` (spec §5.2).
pub const SESSION_FIELDS: Fields = Fields(&[
    Field::new("id", "s.id", FieldType::Uuid),
    Field::new("type", "s.session_type", FieldType::Enum),
    Field::new("name", "s.name", FieldType::Text),
    Field::new("image", "s.image", FieldType::Text),
    Field::new(
        "agent_ids",
        "array_to_string(s.agent_ids, ',')",
        FieldType::Text,
    ),
    Field::new(
        "agent_id",
        "array_to_string(s.agent_ids, ',')",
        FieldType::Text,
    ),
    Field::new(
        "agents",
        "array_to_string(s.agent_ids, ',')",
        FieldType::Text,
    ),
    Field::new("domain_name", "s.domain_name", FieldType::Text),
    Field::new("group_name", "g.name", FieldType::Text),
    Field::new("user_email", "u.email", FieldType::Text),
    Field::new("user_id", "s.user_uuid", FieldType::Uuid),
    Field::new("full_name", "u.full_name", FieldType::Text),
    Field::new("access_key", "s.access_key", FieldType::Text),
    Field::new("scaling_group", "s.scaling_group", FieldType::Text),
    Field::new("cluster_mode", "s.cluster_mode", FieldType::Text),
    Field::new("cluster_size", "s.cluster_size", FieldType::Int),
    Field::new("status", "s.status", FieldType::Enum),
    Field::new("status_info", "s.status_info", FieldType::Text),
    Field::new("result", "s.result", FieldType::Enum),
    Field::new("created_at", "s.created_at", FieldType::Timestamp),
    Field::new("terminated_at", "s.terminated_at", FieldType::Timestamp),
    Field::new("starts_at", "s.starts_at", FieldType::Timestamp),
    Field::new("scheduled_at", "s.scheduled_at", FieldType::Timestamp),
    Field::filter_only("startup_command", "s.startup_command", FieldType::Text),
]);

/// Filterable and orderable fields of `compute_container_list`.
pub const CONTAINER_FIELDS: Fields = Fields(&[
    Field::new("image", "k.image", FieldType::Text),
    Field::new("architecture", "k.architecture", FieldType::Text),
    Field::new("agent", "k.agent", FieldType::Text),
    Field::new("agent_addr", "k.agent_addr", FieldType::Text),
    Field::new("cluster_idx", "k.cluster_idx", FieldType::Int),
    Field::new("local_rank", "k.local_rank", FieldType::Int),
    Field::new("cluster_role", "k.cluster_role", FieldType::Text),
    Field::new("cluster_hostname", "k.cluster_hostname", FieldType::Text),
    Field::new("status", "k.status", FieldType::Enum),
    Field::new("status_info", "k.status_info", FieldType::Text),
    Field::new("created_at", "k.created_at", FieldType::Timestamp),
    Field::new("status_changed", "k.status_changed", FieldType::Timestamp),
    Field::new("terminated_at", "k.terminated_at", FieldType::Timestamp),
    Field::new("scheduled_at", "k.scheduled_at", FieldType::Timestamp),
]);

/// The reference's default order, served by the `sessions_*` indexes.
const SESSION_ORDER: &str = "greatest(s.created_at, s.terminated_at) DESC, s.id";

/// Containers: the main one first.
const CONTAINER_ORDER: &str = "k.local_rank, k.id";

const SESSION_COLUMNS: &str = "s.id, s.name, s.session_type, s.tag, s.main_kernel_id, s.image, \
    s.architecture, s.registry, s.cluster_mode, s.cluster_size, s.domain_name, s.group_id, \
    g.name AS group_name, s.user_uuid, u.email AS user_email, u.full_name, s.access_key, \
    s.scaling_group, s.agent_ids, s.status, s.status_changed, s.status_info, s.status_data, \
    s.status_history, s.created_at, s.terminated_at, s.starts_at, s.scheduled_at, \
    s.startup_command, s.result, s.resource_opts, s.service_ports, s.mounts, s.occupying_slots, \
    s.occupied_slots";

/// Owners' names are joined at query time (left joins: a session whose
/// project or user left the read models is still listed).
const SESSION_FROM: &str = "sessions s LEFT JOIN groups g ON g.id = s.group_id \
    LEFT JOIN users u ON u.uuid = s.user_uuid";

const DEPENDENCY_FROM: &str = "session_dependencies d JOIN sessions s ON s.id = d.depends_on \
    LEFT JOIN groups g ON g.id = s.group_id LEFT JOIN users u ON u.uuid = s.user_uuid";

const CONTAINER_COLUMNS: &str = "k.id, k.session_id, k.cluster_role, k.cluster_idx, k.local_rank, \
    k.cluster_hostname, k.image, k.architecture, k.registry, k.agent, k.agent_addr, \
    k.container_id, k.status, k.status_changed, k.status_info, k.status_data, k.created_at, \
    k.terminated_at, k.starts_at, k.scheduled_at, k.resource_opts, k.occupied_slots, \
    k.preopen_ports";

const CONTAINER_FROM: &str = "kernels k JOIN sessions s ON s.id = k.session_id";

/// A row of `sessions` with its owner's names.
#[derive(Debug, QueryableByName)]
struct SessionRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    session_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    tag: Option<String>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    main_kernel_id: Option<Uuid>,
    #[diesel(sql_type = Text)]
    image: String,
    #[diesel(sql_type = Text)]
    architecture: String,
    #[diesel(sql_type = Text)]
    registry: String,
    #[diesel(sql_type = Text)]
    cluster_mode: String,
    #[diesel(sql_type = Integer)]
    cluster_size: i32,
    #[diesel(sql_type = Text)]
    domain_name: String,
    #[diesel(sql_type = SqlUuid)]
    group_id: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    group_name: Option<String>,
    #[diesel(sql_type = SqlUuid)]
    user_uuid: Uuid,
    #[diesel(sql_type = Nullable<Text>)]
    user_email: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    full_name: Option<String>,
    #[diesel(sql_type = Text)]
    access_key: String,
    #[diesel(sql_type = Text)]
    scaling_group: String,
    #[diesel(sql_type = Array<Text>)]
    agent_ids: Vec<String>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    status_changed: ChronoTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    status_info: Option<String>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    status_data: Option<serde_json::Value>,
    #[diesel(sql_type = Jsonb)]
    status_history: serde_json::Value,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    terminated_at: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    starts_at: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    scheduled_at: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    startup_command: Option<String>,
    #[diesel(sql_type = Text)]
    result: String,
    #[diesel(sql_type = Jsonb)]
    resource_opts: serde_json::Value,
    #[diesel(sql_type = Nullable<Jsonb>)]
    service_ports: Option<serde_json::Value>,
    #[diesel(sql_type = Array<Text>)]
    mounts: Vec<String>,
    #[diesel(sql_type = Jsonb)]
    occupying_slots: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    occupied_slots: serde_json::Value,
}

/// A session another depends on, with the dependent's id.
#[derive(Debug, QueryableByName)]
struct DependencyRow {
    #[diesel(sql_type = SqlUuid)]
    parent: Uuid,
    #[diesel(embed)]
    session: SessionRow,
}

/// A row of `kernels`.
#[derive(Debug, QueryableByName)]
struct ContainerRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    session_id: Uuid,
    #[diesel(sql_type = Text)]
    cluster_role: String,
    #[diesel(sql_type = Integer)]
    cluster_idx: i32,
    #[diesel(sql_type = Integer)]
    local_rank: i32,
    #[diesel(sql_type = Text)]
    cluster_hostname: String,
    #[diesel(sql_type = Text)]
    image: String,
    #[diesel(sql_type = Text)]
    architecture: String,
    #[diesel(sql_type = Text)]
    registry: String,
    #[diesel(sql_type = Nullable<Text>)]
    agent: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    agent_addr: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    container_id: Option<String>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    status_changed: ChronoTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    status_info: Option<String>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    status_data: Option<serde_json::Value>,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    terminated_at: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    starts_at: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    scheduled_at: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Jsonb)]
    resource_opts: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    occupied_slots: serde_json::Value,
    #[diesel(sql_type = Array<Integer>)]
    preopen_ports: Vec<i32>,
}

fn strings(v: Vec<String>) -> Vec<Option<String>> {
    v.into_iter().map(Some).collect()
}

impl From<ContainerRow> for ComputeContainer {
    fn from(r: ContainerRow) -> Self {
        ComputeContainer {
            id: Some(ID::new(r.id.to_string())),
            idx: Some(r.cluster_idx),
            role: Some(r.cluster_role.clone()),
            hostname: Some(r.cluster_hostname.clone()),
            cluster_idx: Some(r.cluster_idx),
            local_rank: Some(r.local_rank),
            cluster_role: Some(r.cluster_role),
            cluster_hostname: Some(r.cluster_hostname),
            session_id: Some(r.session_id),
            image: Some(r.image),
            architecture: Some(r.architecture),
            registry: Some(r.registry),
            status: Some(r.status),
            status_changed: Some(r.status_changed.into()),
            status_info: r.status_info,
            status_data: r.status_data.as_ref().map(JsonString::of),
            created_at: Some(r.created_at.into()),
            terminated_at: r.terminated_at.map(Into::into),
            starts_at: r.starts_at.map(Into::into),
            scheduled_at: r.scheduled_at.map(Into::into),
            abusing_report: None,
            agent: r.agent,
            agent_addr: r.agent_addr,
            container_id: r.container_id,
            resource_opts: Some(JsonString::of(&r.resource_opts)),
            occupied_slots: Some(JsonString::of(&r.occupied_slots)),
            live_stat: None,
            last_stat: None,
            preopen_ports: Some(r.preopen_ports.into_iter().map(Some).collect()),
        }
    }
}

impl SessionRow {
    fn into_session(
        self,
        containers: Option<Vec<Option<ComputeContainer>>>,
        dependencies: Option<Vec<Option<ComputeSession>>>,
    ) -> ComputeSession {
        let size = usize::try_from(self.cluster_size).unwrap_or(0);
        ComputeSession {
            id: Some(ID::new(self.id.to_string())),
            session_id: Some(self.id),
            main_kernel_id: self.main_kernel_id,
            tag: self.tag,
            name: Some(self.name),
            session_type: Some(self.session_type.to_uppercase()),
            main_kernel_role: Some("COMPUTE".to_owned()),
            image: Some(self.image),
            architecture: Some(self.architecture),
            registry: Some(self.registry),
            cluster_template: None,
            cluster_mode: Some(self.cluster_mode),
            cluster_size: Some(self.cluster_size),
            domain_name: Some(self.domain_name),
            group_name: self.group_name,
            group_id: Some(self.group_id),
            user_email: self.user_email,
            full_name: self.full_name,
            user_id: Some(self.user_uuid),
            access_key: Some(self.access_key),
            created_user_email: None,
            created_user_id: None,
            status: Some(self.status),
            status_changed: Some(self.status_changed.into()),
            status_info: self.status_info,
            status_data: self.status_data.as_ref().map(JsonString::of),
            status_history: Some(JsonString::of(&self.status_history)),
            created_at: Some(self.created_at.into()),
            terminated_at: self.terminated_at.map(Into::into),
            starts_at: self.starts_at.map(Into::into),
            scheduled_at: self.scheduled_at.map(Into::into),
            startup_command: self.startup_command,
            result: Some(self.result),
            commit_status: None,
            abusing_reports: Some(vec![None; size]),
            idle_checks: Some(JsonString("{}".to_owned())),
            agent_ids: Some(strings(self.agent_ids.clone())),
            agents: Some(strings(self.agent_ids)),
            resource_opts: Some(JsonString::of(&self.resource_opts)),
            scaling_group: Some(self.scaling_group),
            service_ports: self.service_ports.as_ref().map(JsonString::of),
            mounts: Some(strings(self.mounts.clone())),
            vfolder_mounts: Some(strings(self.mounts)),
            occupying_slots: Some(JsonString::of(&self.occupying_slots)),
            occupied_slots: Some(JsonString::of(&self.occupied_slots)),
            num_queries: Some(BigInt(0)),
            containers,
            dependencies,
            inference_metrics: None,
        }
    }
}

/// What of a session the client selected that costs another query: its
/// containers, and its dependencies (with what they need in turn).
#[derive(Debug, Default, Clone)]
pub(super) struct Needs {
    containers: bool,
    dependencies: Option<Box<Needs>>,
}

impl Needs {
    /// What a session's selection (its children) needs, over every
    /// selection of a field (aliases included).
    fn of_children<S: ScalarValue>(children: &LookAheadChildren<'_, S>) -> Needs {
        let mut needs = Needs::default();
        for child in children.iter() {
            match child.field_original_name() {
                "containers" => needs.containers = true,
                "dependencies" => {
                    let inner = Needs::of_children(&child.children());
                    let merged = match needs.dependencies.take() {
                        Some(prev) => prev.union(inner),
                        None => inner,
                    };
                    needs.dependencies = Some(Box::new(merged));
                }
                _ => {}
            }
        }
        needs
    }

    fn union(self, other: Needs) -> Needs {
        Needs {
            containers: self.containers || other.containers,
            dependencies: match (self.dependencies, other.dependencies) {
                (Some(a), Some(b)) => Some(Box::new(a.union(*b))),
                (a, b) => a.or(b),
            },
        }
    }

    /// What `compute_session`'s selection needs.
    pub(super) fn of_session<S: ScalarValue>(sel: &juniper::LookAheadSelection<'_, S>) -> Needs {
        Needs::of_children(&sel.children())
    }

    /// What a `*_list`'s selection needs for its `items`.
    pub(super) fn of_list<S: ScalarValue>(sel: &juniper::LookAheadSelection<'_, S>) -> Needs {
        let mut needs = Needs::default();
        for child in sel.children().iter() {
            if child.field_original_name() == "items" {
                needs = needs.union(Needs::of_children(&child.children()));
            }
        }
        needs
    }
}

/// Who may see what (see the module docs).
#[derive(Debug, Default)]
struct Scope {
    domain_name: Option<String>,
    access_key: Option<String>,
}

impl Scope {
    /// The caller's scope, narrowed by the `domain_name` and `access_key`
    /// it asked for; asking beyond its reach is an error.
    fn of(
        ctx: &Context,
        domain_name: Option<String>,
        access_key: Option<String>,
    ) -> FieldResult<Scope> {
        let actor = &ctx.actor;
        if actor.is_superadmin() {
            return Ok(Scope {
                domain_name,
                access_key,
            });
        }
        if domain_name
            .as_ref()
            .is_some_and(|d| *d != actor.domain_name)
        {
            return Err(gql_error(FORBIDDEN));
        }
        let access_key = if actor.is_domain_admin() {
            access_key
        } else {
            if access_key.as_ref().is_some_and(|k| *k != actor.access_key) {
                return Err(gql_error(FORBIDDEN));
            }
            Some(actor.access_key.clone())
        };
        Ok(Scope {
            domain_name: Some(actor.domain_name.clone()),
            access_key,
        })
    }

    fn apply(&self, conds: &mut Conditions) {
        if let Some(d) = &self.domain_name {
            conds.bind("s.domain_name = {}", Param::Text(d.clone()));
        }
        if let Some(k) = &self.access_key {
            conds.bind("s.access_key = {}", Param::Text(k.clone()));
        }
    }
}

fn uuid_list(ids: &[Uuid]) -> Param {
    Param::TextList(ids.iter().map(Uuid::to_string).collect())
}

/// The containers of `sessions`, by session, the main one first.
async fn containers_of(
    conn: &mut AsyncPgConnection,
    sessions: &[Uuid],
) -> FieldResult<HashMap<Uuid, Vec<Option<ComputeContainer>>>> {
    let mut conds = Conditions::default();
    conds.bind("k.session_id = ANY({}::uuid[])", uuid_list(sessions));
    let rows: Vec<ContainerRow> = conds
        .load(
            conn,
            CONTAINER_COLUMNS,
            "kernels k",
            " ORDER BY k.session_id, k.local_rank, k.id",
        )
        .await?;
    let mut map: HashMap<Uuid, Vec<Option<ComputeContainer>>> = HashMap::new();
    for r in rows {
        map.entry(r.session_id)
            .or_default()
            .push(Some(ComputeContainer::from(r)));
    }
    Ok(map)
}

/// Builds the sessions of `rows` with what `needs` asks for: containers in
/// one query, dependencies in one query per level of nesting selected.
fn complete<'a>(
    conn: &'a mut AsyncPgConnection,
    scope: &'a Scope,
    rows: Vec<SessionRow>,
    needs: &'a Needs,
) -> BoxFuture<'a, FieldResult<Vec<ComputeSession>>> {
    Box::pin(async move {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut containers = if needs.containers && !ids.is_empty() {
            Some(containers_of(conn, &ids).await?)
        } else {
            None
        };
        let mut dependencies = match &needs.dependencies {
            Some(inner) if !ids.is_empty() => {
                let mut conds = Conditions::default();
                conds.bind("d.session_id = ANY({}::uuid[])", uuid_list(&ids));
                scope.apply(&mut conds);
                let deps: Vec<DependencyRow> = conds
                    .load(
                        conn,
                        &format!("d.session_id AS parent, {SESSION_COLUMNS}"),
                        DEPENDENCY_FROM,
                        " ORDER BY d.session_id, s.created_at, s.id",
                    )
                    .await?;
                let parents: Vec<Uuid> = deps.iter().map(|d| d.parent).collect();
                let sessions = deps.into_iter().map(|d| d.session).collect();
                let built = complete(conn, scope, sessions, inner).await?;
                let mut map: HashMap<Uuid, Vec<Option<ComputeSession>>> = HashMap::new();
                for (parent, session) in parents.into_iter().zip(built) {
                    map.entry(parent).or_default().push(Some(session));
                }
                Some(map)
            }
            _ => None,
        };
        Ok(rows
            .into_iter()
            .map(|r| {
                let mine = containers
                    .as_mut()
                    .map(|c| c.remove(&r.id).unwrap_or_default());
                let deps = dependencies
                    .as_mut()
                    .map(|d| d.remove(&r.id).unwrap_or_default());
                r.into_session(mine, deps)
            })
            .collect())
    })
}

/// Reads a UUID argument given as a string.
fn parse_uuid(what: &str, value: &str) -> FieldResult<Uuid> {
    value
        .trim()
        .parse()
        .map_err(|_| gql_error(format!("{what} must be a UUID, not {value:?}")))
}

/// Adds the `status` argument: session status names, comma-separated (any
/// case); PREPARING also matches PREPARED and CREATING (see the module
/// docs). None or empty means any status.
fn by_status(conds: &mut Conditions, status: Option<String>) -> FieldResult<()> {
    let Some(status) = status.filter(|s| !s.trim().is_empty()) else {
        return Ok(());
    };
    let mut names: Vec<String> = Vec::new();
    for name in status.split(',').map(|s| s.trim().to_uppercase()) {
        let parsed = SessionStatus::parse(&name).ok_or_else(|| {
            gql_error(format!(
                "unknown session status {name:?} (one of {})",
                SessionStatus::ALL.map(SessionStatus::as_str).join(", ")
            ))
        })?;
        let mut add = |s: SessionStatus| {
            if !names.iter().any(|n| n == s.as_str()) {
                names.push(s.as_str().to_owned());
            }
        };
        add(parsed);
        if parsed == SessionStatus::Preparing {
            add(SessionStatus::Prepared);
            add(SessionStatus::Creating);
        }
    }
    conds.bind("s.status = ANY({})", Param::TextList(names));
    Ok(())
}

/// `compute_session(id)`: one session the caller may see, or null.
pub(super) async fn compute_session(
    ctx: &Context,
    needs: Needs,
    id: Uuid,
) -> FieldResult<Option<Eager<ComputeSession>>> {
    let scope = Scope::of(ctx, None, None)?;
    let mut conds = Conditions::default();
    conds.bind("s.id = {}::uuid", Param::Text(id.to_string()));
    scope.apply(&mut conds);
    let mut conn = ctx.connection().await?;
    let rows: Vec<SessionRow> = conds
        .load(&mut conn, SESSION_COLUMNS, SESSION_FROM, "")
        .await?;
    Ok(complete(&mut conn, &scope, rows, &needs)
        .await?
        .pop()
        .map(Eager))
}

/// The arguments of `compute_session_list` besides the page.
#[derive(Debug, Default)]
pub(super) struct SessionListArgs {
    /// `filter`.
    pub filter: Option<String>,
    /// `order`.
    pub order: Option<String>,
    /// `domain_name`.
    pub domain_name: Option<String>,
    /// `group_id` (a UUID as a string).
    pub group_id: Option<String>,
    /// `access_key`.
    pub access_key: Option<String>,
    /// `status`.
    pub status: Option<String>,
}

/// `compute_session_list`: a page of the sessions the caller may see.
pub(super) async fn compute_session_list(
    ctx: &Context,
    needs: Needs,
    limit: i32,
    offset: i32,
    args: SessionListArgs,
) -> FieldResult<Eager<ComputeSessionList>> {
    let scope = Scope::of(ctx, args.domain_name, args.access_key)?;
    let mut conds = Conditions::default();
    scope.apply(&mut conds);
    if let Some(group) = args.group_id.filter(|g| !g.trim().is_empty()) {
        let group = parse_uuid("group_id", &group)?;
        conds.bind("s.group_id = {}::uuid", Param::Text(group.to_string()));
    }
    by_status(&mut conds, args.status)?;
    conds.filter(args.filter.as_deref(), &SESSION_FIELDS)?;
    let mut conn = ctx.connection().await?;
    let (rows, total_count) = page::<SessionRow>(
        &mut conn,
        conds,
        SESSION_COLUMNS,
        SESSION_FROM,
        args.order.as_deref(),
        &SESSION_FIELDS,
        SESSION_ORDER,
        limit,
        offset,
    )
    .await?;
    let role_scope = Scope::of(ctx, None, None)?;
    let items = complete(&mut conn, &role_scope, rows, &needs).await?;
    Ok(Eager(ComputeSessionList {
        items: items.into_iter().map(Some).collect(),
        total_count,
    }))
}

/// `compute_container(id)`: one container of a session the caller may
/// see, or null.
pub(super) async fn compute_container(
    ctx: &Context,
    id: Uuid,
) -> FieldResult<Option<ComputeContainer>> {
    let scope = Scope::of(ctx, None, None)?;
    let mut conds = Conditions::default();
    conds.bind("k.id = {}::uuid", Param::Text(id.to_string()));
    scope.apply(&mut conds);
    let mut conn = ctx.connection().await?;
    let rows: Vec<ContainerRow> = conds
        .load(&mut conn, CONTAINER_COLUMNS, CONTAINER_FROM, "")
        .await?;
    Ok(rows.into_iter().next().map(ComputeContainer::from))
}

/// `compute_container_list(session_id)`: a page of one session's
/// containers, if the caller may see the session (else an empty page).
pub(super) async fn compute_container_list(
    ctx: &Context,
    limit: i32,
    offset: i32,
    filter: Option<String>,
    order: Option<String>,
    session_id: &str,
    role: Option<String>,
) -> FieldResult<Eager<ComputeContainerList>> {
    let scope = Scope::of(ctx, None, None)?;
    let session = parse_uuid("session_id", session_id)?;
    let mut conds = Conditions::default();
    conds.bind("k.session_id = {}::uuid", Param::Text(session.to_string()));
    scope.apply(&mut conds);
    if let Some(role) = role.filter(|r| !r.trim().is_empty()) {
        conds.bind("k.cluster_role = {}", Param::Text(role));
    }
    conds.filter(filter.as_deref(), &CONTAINER_FIELDS)?;
    let mut conn = ctx.connection().await?;
    let (rows, total_count) = page::<ContainerRow>(
        &mut conn,
        conds,
        CONTAINER_COLUMNS,
        CONTAINER_FROM,
        order.as_deref(),
        &CONTAINER_FIELDS,
        CONTAINER_ORDER,
        limit,
        offset,
    )
    .await?;
    Ok(Eager(ComputeContainerList {
        items: rows
            .into_iter()
            .map(|r| Some(ComputeContainer::from(r)))
            .collect(),
        total_count,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn statuses_are_checked_and_preparing_covers_its_steps() {
        let mut conds = Conditions::default();
        by_status(&mut conds, Some("running, PREPARING,RUNNING".into())).unwrap();
        assert_eq!(conds.where_clause(), " WHERE s.status = ANY($1)");
        let mut conds = Conditions::default();
        by_status(&mut conds, Some(" ".into())).unwrap();
        assert_eq!(conds.where_clause(), "");
        let err = by_status(&mut Conditions::default(), Some("RUNNING,DEAD".into())).unwrap_err();
        assert!(err.message().contains("unknown session status \"DEAD\""));
    }
}
