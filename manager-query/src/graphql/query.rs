//! The query root: read-model lookups with the reference's scoping per role.

use std::collections::HashMap;

use chrono::{DateTime as ChronoTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::AsyncPgConnection;
use juniper::{Executor, FieldResult, ID, ScalarValue, graphql_object};
use manager_events::user::UserStatus;
use uuid::Uuid;

use super::Context;
use super::Eager;
use super::agents;
use super::scalars::{BigInt as GqlBigInt, DateTime, JsonString};
use super::sessions;
use super::sql::{Conditions, gql_error, page};
use super::types::{
    Agent, AgentList, AgentSummary, AgentSummaryList, Domain, Group, KeyPair, KeyPairList,
    KeyPairResourcePolicy, ProjectResourcePolicy, ResourcePreset, ScalingGroup, User, UserGroup,
    UserInfo, UserList, UserResourcePolicy,
};
use crate::minilang::{Field, FieldType, Fields, Param};

/// The message of the reference for a query above the caller's role.
pub const FORBIDDEN: &str = "Forbidden operation.";

/// Filterable and orderable fields of `user_list` (spec §5.2).
pub const USER_FIELDS: Fields = Fields(&[
    Field::new("uuid", "u.uuid", FieldType::Uuid),
    Field::new("username", "u.username", FieldType::Text),
    Field::new("email", "u.email", FieldType::Text),
    Field::new(
        "need_password_change",
        "u.need_password_change",
        FieldType::Bool,
    ),
    Field::new("full_name", "u.full_name", FieldType::Text),
    Field::filter_only("description", "u.description", FieldType::Text),
    Field::new("is_active", "(u.status = 'active')", FieldType::Bool),
    Field::new("status", "u.status", FieldType::Enum),
    Field::new("status_info", "NULL::text", FieldType::Text),
    Field::new("created_at", "u.created_at", FieldType::Timestamp),
    Field::new("modified_at", "u.modified_at", FieldType::Timestamp),
    Field::new("domain_name", "u.domain_name", FieldType::Text),
    Field::new("role", "u.role", FieldType::Enum),
    Field::new("resource_policy", "u.resource_policy", FieldType::Text),
    Field::filter_only(
        "allowed_client_ip",
        "u.allowed_client_ip::text",
        FieldType::Text,
    ),
    Field::new("totp_activated", "u.totp_activated", FieldType::Bool),
    Field::new(
        "totp_activated_at",
        "NULL::timestamptz",
        FieldType::Timestamp,
    ),
    Field::new(
        "sudo_session_enabled",
        "u.sudo_session_enabled",
        FieldType::Bool,
    ),
    Field::new("main_access_key", "u.main_access_key", FieldType::Text),
]);

/// Filterable and orderable fields of `keypair_list` (spec §5.2).
pub const KEYPAIR_FIELDS: Fields = Fields(&[
    Field::new("access_key", "k.access_key", FieldType::Text),
    Field::filter_only("user_id", "k.user_email", FieldType::Text),
    Field::new("email", "k.user_email", FieldType::Text),
    Field::new("full_name", "u.full_name", FieldType::Text),
    Field::new("is_active", "k.is_active", FieldType::Bool),
    Field::new("is_admin", "k.is_admin", FieldType::Bool),
    Field::new("resource_policy", "k.resource_policy", FieldType::Text),
    Field::new("created_at", "k.created_at", FieldType::Timestamp),
    Field::new("last_used", "k.last_used", FieldType::Timestamp),
    Field::new("rate_limit", "k.rate_limit", FieldType::Int),
    Field::new("num_queries", "k.num_queries", FieldType::Int),
    Field::filter_only("ssh_public_key", "NULL::text", FieldType::Text),
]);

const USER_COLUMNS: &str = "u.uuid, u.username, u.email, u.need_password_change, u.full_name, \
    u.description, u.status, u.created_at, u.modified_at, u.domain_name, u.role, \
    u.resource_policy, u.allowed_client_ip, u.totp_activated, u.sudo_session_enabled, \
    u.main_access_key";

/// A row of `users`.
#[derive(Debug, QueryableByName)]
pub struct UserRow {
    #[diesel(sql_type = SqlUuid)]
    uuid: Uuid,
    #[diesel(sql_type = Text)]
    username: String,
    #[diesel(sql_type = Text)]
    email: String,
    #[diesel(sql_type = Bool)]
    need_password_change: bool,
    #[diesel(sql_type = Text)]
    full_name: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    modified_at: ChronoTime<Utc>,
    #[diesel(sql_type = Text)]
    domain_name: String,
    #[diesel(sql_type = Text)]
    role: String,
    #[diesel(sql_type = Text)]
    resource_policy: String,
    #[diesel(sql_type = Nullable<Jsonb>)]
    allowed_client_ip: Option<serde_json::Value>,
    #[diesel(sql_type = Bool)]
    totp_activated: bool,
    #[diesel(sql_type = Bool)]
    sudo_session_enabled: bool,
    #[diesel(sql_type = Nullable<Text>)]
    main_access_key: Option<String>,
}

impl UserRow {
    fn into_user(self, groups: Option<Vec<Option<UserGroup>>>) -> User {
        let allowed = self.allowed_client_ip.and_then(|v| {
            serde_json::from_value::<Vec<String>>(v)
                .ok()
                .map(|ips| ips.into_iter().map(Some).collect())
        });
        User {
            id: Some(ID::new(self.uuid.to_string())),
            uuid: Some(self.uuid),
            username: Some(self.username),
            email: Some(self.email),
            need_password_change: Some(self.need_password_change),
            full_name: Some(self.full_name),
            description: Some(self.description),
            is_active: Some(UserStatus::parse(&self.status) == Some(UserStatus::Active)),
            status: Some(self.status),
            status_info: None,
            created_at: Some(self.created_at.into()),
            modified_at: Some(self.modified_at.into()),
            domain_name: Some(self.domain_name),
            role: Some(self.role),
            resource_policy: Some(self.resource_policy),
            allowed_client_ip: allowed,
            totp_activated: Some(self.totp_activated),
            totp_activated_at: None,
            sudo_session_enabled: Some(self.sudo_session_enabled),
            main_access_key: self.main_access_key,
            groups,
        }
    }
}

const KEYPAIR_COLUMNS: &str = "k.access_key, k.user_uuid, k.user_email, k.is_active, k.is_admin, \
    k.resource_policy, k.rate_limit, k.sealed_secret_key, k.num_queries, k.last_used, \
    k.created_at, u.full_name, p.max_concurrent_sessions";

const KEYPAIR_FROM: &str = "keypairs k JOIN users u ON u.uuid = k.user_uuid \
    LEFT JOIN keypair_resource_policies p ON p.name = k.resource_policy";

/// A row of `keypairs` with its owner's name and its policy's limit.
#[derive(Debug, QueryableByName)]
pub struct KeypairRow {
    #[diesel(sql_type = Text)]
    access_key: String,
    #[diesel(sql_type = SqlUuid)]
    user_uuid: Uuid,
    #[diesel(sql_type = Text)]
    user_email: String,
    #[diesel(sql_type = Bool)]
    is_active: bool,
    #[diesel(sql_type = Bool)]
    is_admin: bool,
    #[diesel(sql_type = Text)]
    resource_policy: String,
    #[diesel(sql_type = BigInt)]
    rate_limit: i64,
    #[diesel(sql_type = Text)]
    sealed_secret_key: String,
    #[diesel(sql_type = BigInt)]
    num_queries: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_used: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Text)]
    full_name: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    max_concurrent_sessions: Option<i64>,
}

fn clamp(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

/// What of a keypair the client selected that costs more than a column.
#[derive(Debug, Clone, Copy, Default)]
struct KeypairNeeds {
    secret: bool,
    projects: bool,
}

impl KeypairNeeds {
    fn of<S: ScalarValue>(sel: &juniper::LookAheadSelection<'_, S>) -> Self {
        let children = sel.children();
        KeypairNeeds {
            secret: children.has_child("secret_key"),
            projects: children.has_child("projects"),
        }
    }
}

/// Builds the keypairs of `rows`. Takes the caller's pooled connection and
/// gives it back to the pool before opening secret keys, which takes
/// connections of its own: holding one while waiting for another would let
/// concurrent requests exhaust the pool and wait on each other.
async fn keypairs_of_rows<C>(
    ctx: &Context,
    mut conn: C,
    rows: Vec<KeypairRow>,
    needs: KeypairNeeds,
) -> FieldResult<Vec<KeyPair>>
where
    C: std::ops::DerefMut<Target = AsyncPgConnection>,
{
    let projects = if needs.projects {
        let users: Vec<Uuid> = rows.iter().map(|r| r.user_uuid).collect();
        Some(groups_of(&mut conn, &users).await?)
    } else {
        None
    };
    drop(conn);
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let secret_key = if needs.secret {
            Some(
                ctx.keys
                    .open_secret(&r.access_key, &r.sealed_secret_key)
                    .await
                    .map_err(|e| {
                        tracing::warn!(access_key = %r.access_key, error = %e, "cannot open a secret key");
                        gql_error("The secret key of this keypair cannot be opened.")
                    })?,
            )
        } else {
            None
        };
        let projects = projects.as_ref().map(|p| {
            p.get(&r.user_uuid)
                .map(|gs| gs.iter().map(|g| g.name.clone()).collect())
                .unwrap_or_default()
        });
        out.push(KeyPair {
            id: Some(ID::new(r.access_key.clone())),
            user_id: Some(r.user_email.clone()),
            full_name: Some(r.full_name.clone()),
            secret_key,
            is_active: Some(r.is_active),
            is_admin: Some(r.is_admin),
            resource_policy: Some(r.resource_policy),
            created_at: Some(r.created_at.into()),
            last_used: r.last_used.map(DateTime),
            rate_limit: Some(clamp(r.rate_limit)),
            num_queries: Some(clamp(r.num_queries)),
            user: Some(r.user_uuid),
            projects,
            ssh_public_key: None,
            concurrency_used: Some(0),
            user_info: Some(UserInfo {
                email: Some(r.user_email),
                full_name: Some(r.full_name),
            }),
            concurrency_limit: r.max_concurrent_sessions.map(clamp),
            access_key: Some(r.access_key),
        });
    }
    Ok(out)
}

#[derive(Debug, QueryableByName)]
struct MembershipRow {
    #[diesel(sql_type = SqlUuid)]
    user_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
}

/// The projects of each of `users`, by name.
async fn groups_of(
    conn: &mut AsyncPgConnection,
    users: &[Uuid],
) -> FieldResult<HashMap<Uuid, Vec<UserGroup>>> {
    use diesel_async::RunQueryDsl;
    let rows: Vec<MembershipRow> = manager_events::prepared(
        // One index probe per user: planned as a join, a page's 50 users
        // get a scan of every membership (`OFFSET 0` keeps the lateral
        // subquery a per-user probe).
        "SELECT a.user_id, g.id, g.name FROM unnest($1::uuid[]) AS ids(id) \
         CROSS JOIN LATERAL (SELECT m.user_id, m.group_id FROM association_groups_users m \
         WHERE m.user_id = ids.id OFFSET 0) a \
         JOIN groups g ON g.id = a.group_id ORDER BY g.name",
    )
    .bind::<Array<SqlUuid>, _>(users)
    .load(conn)
    .await
    .map_err(super::sql::db_error)?;
    let mut map: HashMap<Uuid, Vec<UserGroup>> = HashMap::new();
    for r in rows {
        map.entry(r.user_id).or_default().push(UserGroup {
            id: Some(r.id),
            name: Some(r.name),
        });
    }
    Ok(map)
}

async fn users_of_rows(
    conn: &mut AsyncPgConnection,
    rows: Vec<UserRow>,
    with_groups: bool,
) -> FieldResult<Vec<User>> {
    let mut groups = if with_groups {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.uuid).collect();
        Some(groups_of(conn, &ids).await?)
    } else {
        None
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let gs = groups.as_mut().map(|g| {
                g.remove(&r.uuid)
                    .unwrap_or_default()
                    .into_iter()
                    .map(Some)
                    .collect()
            });
            r.into_user(gs)
        })
        .collect())
}

const DOMAIN_COLUMNS: &str = "d.name, d.description, d.is_active, d.created_at, d.modified_at, \
    d.total_resource_slots, d.allowed_vfolder_hosts, d.allowed_docker_registries, d.integration_id, \
    ARRAY(SELECT s.scaling_group FROM sgroups_for_domains s WHERE s.domain = d.name ORDER BY 1) AS scaling_groups";

#[derive(Debug, QueryableByName)]
struct DomainRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Bool)]
    is_active: bool,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    modified_at: ChronoTime<Utc>,
    #[diesel(sql_type = Jsonb)]
    total_resource_slots: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    allowed_vfolder_hosts: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    allowed_docker_registries: serde_json::Value,
    #[diesel(sql_type = Nullable<Text>)]
    integration_id: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    scaling_groups: Vec<String>,
}

fn strings(v: Vec<String>) -> Option<Vec<Option<String>>> {
    Some(v.into_iter().map(Some).collect())
}

impl From<DomainRow> for Domain {
    fn from(r: DomainRow) -> Self {
        let registries: Vec<String> =
            serde_json::from_value(r.allowed_docker_registries).unwrap_or_default();
        Domain {
            name: Some(r.name),
            description: Some(r.description),
            is_active: Some(r.is_active),
            created_at: Some(r.created_at.into()),
            modified_at: Some(r.modified_at.into()),
            total_resource_slots: Some(JsonString::of(&r.total_resource_slots)),
            allowed_vfolder_hosts: Some(JsonString::of(&r.allowed_vfolder_hosts)),
            allowed_docker_registries: strings(registries),
            integration_id: r.integration_id,
            scaling_groups: strings(r.scaling_groups),
        }
    }
}

const GROUP_COLUMNS: &str = "g.id, g.name, g.description, g.is_active, g.created_at, g.modified_at, \
    g.domain_name, g.total_resource_slots, g.allowed_vfolder_hosts, g.integration_id, g.resource_policy, \
    ARRAY(SELECT s.scaling_group FROM sgroups_for_groups s WHERE s.\"group\" = g.id ORDER BY 1) AS scaling_groups";

#[derive(Debug, QueryableByName)]
struct GroupRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Bool)]
    is_active: bool,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    modified_at: ChronoTime<Utc>,
    #[diesel(sql_type = Text)]
    domain_name: String,
    #[diesel(sql_type = Jsonb)]
    total_resource_slots: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    allowed_vfolder_hosts: serde_json::Value,
    #[diesel(sql_type = Nullable<Text>)]
    integration_id: Option<String>,
    #[diesel(sql_type = Text)]
    resource_policy: String,
    #[diesel(sql_type = Array<Text>)]
    scaling_groups: Vec<String>,
}

impl From<GroupRow> for Group {
    fn from(r: GroupRow) -> Self {
        Group {
            id: Some(r.id),
            name: Some(r.name),
            description: Some(r.description),
            is_active: Some(r.is_active),
            created_at: Some(r.created_at.into()),
            modified_at: Some(r.modified_at.into()),
            domain_name: Some(r.domain_name),
            total_resource_slots: Some(JsonString::of(&r.total_resource_slots)),
            allowed_vfolder_hosts: Some(JsonString::of(&r.allowed_vfolder_hosts)),
            integration_id: r.integration_id,
            resource_policy: Some(r.resource_policy),
            scaling_groups: strings(r.scaling_groups),
        }
    }
}

const POLICY_COLUMNS: &str = "p.name, p.created_at, p.default_for_unspecified, p.total_resource_slots, \
    p.max_session_lifetime, p.max_concurrent_sessions, p.max_concurrent_sftp_sessions, \
    p.max_containers_per_session, p.idle_timeout, p.allowed_vfolder_hosts, p.max_vfolder_count, \
    p.max_vfolder_size, p.max_quota_scope_size";

#[derive(Debug, QueryableByName)]
struct PolicyRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Text)]
    default_for_unspecified: String,
    #[diesel(sql_type = Jsonb)]
    total_resource_slots: serde_json::Value,
    #[diesel(sql_type = BigInt)]
    max_session_lifetime: i64,
    #[diesel(sql_type = BigInt)]
    max_concurrent_sessions: i64,
    #[diesel(sql_type = BigInt)]
    max_concurrent_sftp_sessions: i64,
    #[diesel(sql_type = BigInt)]
    max_containers_per_session: i64,
    #[diesel(sql_type = BigInt)]
    idle_timeout: i64,
    #[diesel(sql_type = Jsonb)]
    allowed_vfolder_hosts: serde_json::Value,
    #[diesel(sql_type = BigInt)]
    max_vfolder_count: i64,
    #[diesel(sql_type = BigInt)]
    max_vfolder_size: i64,
    #[diesel(sql_type = BigInt)]
    max_quota_scope_size: i64,
}

impl From<PolicyRow> for KeyPairResourcePolicy {
    fn from(r: PolicyRow) -> Self {
        KeyPairResourcePolicy {
            name: Some(r.name),
            created_at: Some(r.created_at.into()),
            default_for_unspecified: Some(r.default_for_unspecified),
            total_resource_slots: Some(JsonString::of(&r.total_resource_slots)),
            max_session_lifetime: Some(clamp(r.max_session_lifetime)),
            max_concurrent_sessions: Some(clamp(r.max_concurrent_sessions)),
            max_concurrent_sftp_sessions: Some(clamp(r.max_concurrent_sftp_sessions)),
            max_containers_per_session: Some(clamp(r.max_containers_per_session)),
            idle_timeout: Some(GqlBigInt(r.idle_timeout)),
            allowed_vfolder_hosts: Some(JsonString::of(&r.allowed_vfolder_hosts)),
            max_vfolder_count: Some(clamp(r.max_vfolder_count)),
            max_vfolder_size: Some(GqlBigInt(r.max_vfolder_size)),
            max_quota_scope_size: Some(GqlBigInt(r.max_quota_scope_size)),
        }
    }
}

const SCALING_GROUP_COLUMNS: &str = "s.name, s.description, s.is_active, s.is_public, s.created_at, \
    s.wsproxy_addr, s.driver, s.driver_opts, s.scheduler, s.scheduler_opts, s.use_host_network";

#[derive(Debug, QueryableByName)]
struct ScalingGroupRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Bool)]
    is_active: bool,
    #[diesel(sql_type = Bool)]
    is_public: bool,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    wsproxy_addr: Option<String>,
    #[diesel(sql_type = Text)]
    driver: String,
    #[diesel(sql_type = Jsonb)]
    driver_opts: serde_json::Value,
    #[diesel(sql_type = Text)]
    scheduler: String,
    #[diesel(sql_type = Jsonb)]
    scheduler_opts: serde_json::Value,
    #[diesel(sql_type = Bool)]
    use_host_network: bool,
}

impl From<ScalingGroupRow> for ScalingGroup {
    fn from(r: ScalingGroupRow) -> Self {
        ScalingGroup {
            name: Some(r.name),
            description: Some(r.description),
            is_active: Some(r.is_active),
            is_public: Some(r.is_public),
            created_at: Some(r.created_at.into()),
            wsproxy_addr: r.wsproxy_addr,
            wsproxy_api_token: None,
            driver: Some(r.driver),
            driver_opts: Some(JsonString::of(&r.driver_opts)),
            scheduler: Some(r.scheduler),
            scheduler_opts: Some(JsonString::of(&r.scheduler_opts)),
            use_host_network: Some(r.use_host_network),
        }
    }
}

/// Loads the rows `conds` selects (`SELECT {select} FROM {from} WHERE ...
/// {tail}`) and converts each.
async fn fetch<R, T>(
    ctx: &Context,
    conds: Conditions,
    select: &str,
    from: &str,
    tail: &str,
) -> FieldResult<Vec<T>>
where
    R: QueryableByName<diesel::pg::Pg> + Send + 'static,
    T: From<R>,
{
    let mut conn = ctx.connection().await?;
    let rows: Vec<R> = conds.load(&mut conn, select, from, tail).await?;
    Ok(rows.into_iter().map(T::from).collect())
}

/// Loads users by their ids, in the order given (for mutation payloads).
pub(super) async fn users_by_id(
    ctx: &Context,
    ids: &[Uuid],
    with_groups: bool,
) -> FieldResult<Vec<User>> {
    let mut conn = ctx.connection().await?;
    let mut conds = Conditions::default();
    conds.bind(
        "u.uuid = ANY({}::uuid[])",
        Param::TextList(ids.iter().map(Uuid::to_string).collect()),
    );
    let rows: Vec<UserRow> = conds.load(&mut conn, USER_COLUMNS, "users u", "").await?;
    users_of_rows(&mut conn, rows, with_groups).await
}

/// Loads one keypair (for mutation payloads).
pub(super) async fn keypair_by_key<S: ScalarValue>(
    ctx: &Context,
    access_key: &str,
    sel: &juniper::LookAheadSelection<'_, S>,
) -> FieldResult<Option<KeyPair>> {
    let mut conn = ctx.connection().await?;
    let mut conds = Conditions::default();
    conds.bind("k.access_key = {}", Param::Text(access_key.to_owned()));
    let rows: Vec<KeypairRow> = conds
        .load(&mut conn, KEYPAIR_COLUMNS, KEYPAIR_FROM, "")
        .await?;
    Ok(keypairs_of_rows(ctx, conn, rows, KeypairNeeds::of(sel))
        .await?
        .pop())
}

/// Loads one domain (for mutation payloads and `domain`).
pub(super) async fn domain_by_name(ctx: &Context, name: &str) -> FieldResult<Option<Domain>> {
    let conds = by_name("d.name", name);
    Ok(
        fetch::<DomainRow, _>(ctx, conds, DOMAIN_COLUMNS, "domains d", "")
            .await?
            .pop(),
    )
}

/// Loads one project (for mutation payloads and `group`).
pub(super) async fn group_by_id(ctx: &Context, id: Uuid) -> FieldResult<Option<Group>> {
    let mut conds = Conditions::default();
    conds.bind("g.id = {}::uuid", Param::Text(id.to_string()));
    Ok(
        fetch::<GroupRow, _>(ctx, conds, GROUP_COLUMNS, "groups g", "")
            .await?
            .pop(),
    )
}

/// Loads one keypair resource policy.
pub(super) async fn policy_by_name(
    ctx: &Context,
    name: &str,
) -> FieldResult<Option<KeyPairResourcePolicy>> {
    let conds = by_name("p.name", name);
    let from = "keypair_resource_policies p";
    Ok(fetch::<PolicyRow, _>(ctx, conds, POLICY_COLUMNS, from, "")
        .await?
        .pop())
}

/// Loads one scaling group.
pub(super) async fn scaling_group_by_name(
    ctx: &Context,
    name: &str,
) -> FieldResult<Option<ScalingGroup>> {
    let conds = by_name("s.name", name);
    let from = "scaling_groups s";
    Ok(
        fetch::<ScalingGroupRow, _>(ctx, conds, SCALING_GROUP_COLUMNS, from, "")
            .await?
            .pop(),
    )
}

const USER_POLICY_COLUMNS: &str = "p.name, p.created_at, p.max_vfolder_count, p.max_quota_scope_size, \
    p.max_session_count_per_model_session, p.max_customized_image_count";

#[derive(Debug, QueryableByName)]
struct UserPolicyRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_vfolder_count: i32,
    #[diesel(sql_type = BigInt)]
    max_quota_scope_size: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_session_count_per_model_session: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_customized_image_count: i32,
}

impl From<UserPolicyRow> for UserResourcePolicy {
    fn from(r: UserPolicyRow) -> Self {
        UserResourcePolicy {
            id: Some(ID::new(r.name.clone())),
            name: Some(r.name),
            created_at: Some(r.created_at.into()),
            max_vfolder_count: Some(r.max_vfolder_count),
            max_quota_scope_size: Some(GqlBigInt(r.max_quota_scope_size)),
            max_session_count_per_model_session: Some(r.max_session_count_per_model_session),
            max_customized_image_count: Some(r.max_customized_image_count),
        }
    }
}

const PROJECT_POLICY_COLUMNS: &str =
    "p.name, p.created_at, p.max_vfolder_count, p.max_quota_scope_size, p.max_network_count";

#[derive(Debug, QueryableByName)]
struct ProjectPolicyRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: ChronoTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_vfolder_count: i32,
    #[diesel(sql_type = BigInt)]
    max_quota_scope_size: i64,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    max_network_count: i32,
}

impl From<ProjectPolicyRow> for ProjectResourcePolicy {
    fn from(r: ProjectPolicyRow) -> Self {
        ProjectResourcePolicy {
            id: Some(ID::new(r.name.clone())),
            name: Some(r.name),
            created_at: Some(r.created_at.into()),
            max_vfolder_count: Some(r.max_vfolder_count),
            max_quota_scope_size: Some(GqlBigInt(r.max_quota_scope_size)),
            max_network_count: Some(r.max_network_count),
        }
    }
}

const PRESET_COLUMNS: &str = "r.name, r.resource_slots, r.shared_memory, r.scaling_group_name";

#[derive(Debug, QueryableByName)]
struct PresetRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Jsonb)]
    resource_slots: serde_json::Value,
    #[diesel(sql_type = Nullable<BigInt>)]
    shared_memory: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    scaling_group_name: Option<String>,
}

impl From<PresetRow> for ResourcePreset {
    fn from(r: PresetRow) -> Self {
        ResourcePreset {
            name: Some(r.name),
            resource_slots: Some(JsonString::of(&r.resource_slots)),
            shared_memory: r.shared_memory.map(GqlBigInt),
            scaling_group_name: r.scaling_group_name,
        }
    }
}

/// Loads user resource policies matching `conds`.
pub(super) async fn user_policies(
    ctx: &Context,
    conds: Conditions,
) -> FieldResult<Vec<UserResourcePolicy>> {
    let from = "user_resource_policies p";
    fetch::<UserPolicyRow, _>(ctx, conds, USER_POLICY_COLUMNS, from, " ORDER BY p.name").await
}

/// Loads project resource policies matching `conds`.
pub(super) async fn project_policies(
    ctx: &Context,
    conds: Conditions,
) -> FieldResult<Vec<ProjectResourcePolicy>> {
    let from = "project_resource_policies p";
    fetch::<ProjectPolicyRow, _>(ctx, conds, PROJECT_POLICY_COLUMNS, from, " ORDER BY p.name").await
}

/// Loads resource presets matching `conds`.
pub(super) async fn presets(ctx: &Context, conds: Conditions) -> FieldResult<Vec<ResourcePreset>> {
    let from = "resource_presets r";
    fetch::<PresetRow, _>(ctx, conds, PRESET_COLUMNS, from, " ORDER BY r.name").await
}

/// One row by name.
pub(super) fn by_name(column: &str, name: &str) -> Conditions {
    let mut conds = Conditions::default();
    conds.bind(&format!("{column} = {{}}"), Param::Text(name.to_owned()));
    conds
}

/// The domain a list is limited to: a superadmin's choice, an admin's own
/// domain (whatever it asked for, as the reference), `Err` for the others.
fn admin_domain(ctx: &Context, requested: Option<String>) -> FieldResult<Option<String>> {
    if ctx.actor.is_superadmin() {
        Ok(requested)
    } else if ctx.actor.is_domain_admin() {
        Ok(Some(ctx.actor.domain_name.clone()))
    } else {
        Err(gql_error(format!("{FORBIDDEN} (admin privilege required)")))
    }
}

fn superadmin_only(ctx: &Context) -> FieldResult<()> {
    if ctx.actor.is_superadmin() {
        Ok(())
    } else {
        Err(gql_error(format!(
            "{FORBIDDEN} (superadmin privilege required)"
        )))
    }
}

/// The query root.
pub struct Query;

#[graphql_object]
#[graphql(context = Context, rename_all = "none")]
impl Query {
    /// A user: the caller when no e-mail is given. Users see only
    /// themselves, domain admins their domain, superadmins everyone.
    async fn user<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        domain_name: Option<String>,
        email: Option<String>,
    ) -> FieldResult<Option<User>> {
        let mut conn = ctx.connection().await?;
        let mut conds = Conditions::default();
        match email {
            Some(email) => conds.bind("lower(u.email) = lower({})", Param::Text(email)),
            None => conds.bind(
                "u.uuid = {}::uuid",
                Param::Text(ctx.actor.user_uuid.to_string()),
            ),
        };
        if !ctx.actor.is_domain_admin() {
            conds.bind(
                "u.uuid = {}::uuid",
                Param::Text(ctx.actor.user_uuid.to_string()),
            );
        } else if let Some(domain) = admin_domain(ctx, domain_name)? {
            conds.bind("u.domain_name = {}", Param::Text(domain));
        }
        let rows: Vec<UserRow> = conds.load(&mut conn, USER_COLUMNS, "users u", "").await?;
        let with_groups = executor.look_ahead().children().has_child("groups");
        Ok(users_of_rows(&mut conn, rows, with_groups).await?.pop())
    }

    /// A page of users (domain admins: their domain; superadmins: all).
    #[allow(clippy::too_many_arguments)]
    async fn user_list<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        limit: i32,
        offset: i32,
        filter: Option<String>,
        order: Option<String>,
        domain_name: Option<String>,
        group_id: Option<Uuid>,
        is_active: Option<bool>,
        status: Option<String>,
    ) -> FieldResult<Eager<UserList>> {
        let domain = admin_domain(ctx, domain_name)?;
        let mut conds = Conditions::default();
        // Purged users leave the read model; deleted ones are listed (as the
        // reference) and can be filtered out with `status`.
        if let Some(d) = domain {
            conds.bind("u.domain_name = {}", Param::Text(d));
        }
        if let Some(g) = group_id {
            conds.bind(
                "u.uuid IN (SELECT a.user_id FROM association_groups_users a WHERE a.group_id = {}::uuid)",
                Param::Text(g.to_string()),
            );
        }
        if let Some(active) = is_active {
            conds.raw(if active {
                "u.status = 'active'"
            } else {
                "u.status <> 'active'"
            });
        }
        if let Some(s) = status.filter(|s| !s.is_empty()) {
            let s = UserStatus::parse(&s.to_lowercase())
                .ok_or_else(|| gql_error(format!("unknown user status {s:?}")))?;
            conds.bind("u.status = {}", Param::Text(s.as_str().to_owned()));
        }
        conds.filter(filter.as_deref(), &USER_FIELDS)?;
        let mut conn = ctx.connection().await?;
        let (rows, total_count) = page::<UserRow>(
            &mut conn,
            conds,
            USER_COLUMNS,
            "users u",
            order.as_deref(),
            &USER_FIELDS,
            "u.created_at DESC, u.uuid",
            limit,
            offset,
        )
        .await?;
        let with_groups = executor
            .look_ahead()
            .children()
            .select("items")
            .is_some_and(|items| items.children().has_child("groups"));
        let items = users_of_rows(&mut conn, rows, with_groups).await?;
        Ok(Eager(UserList {
            items: items.into_iter().map(Some).collect(),
            total_count,
        }))
    }

    /// A keypair: the caller's when no access key is given. Users see only
    /// their own keypairs, domain admins those of their domain.
    async fn keypair<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        domain_name: Option<String>,
        access_key: Option<String>,
    ) -> FieldResult<Option<KeyPair>> {
        let mut conds = Conditions::default();
        conds.bind(
            "k.access_key = {}",
            Param::Text(access_key.unwrap_or_else(|| ctx.actor.access_key.clone())),
        );
        if !ctx.actor.is_domain_admin() {
            conds.bind(
                "k.user_uuid = {}::uuid",
                Param::Text(ctx.actor.user_uuid.to_string()),
            );
        } else if let Some(domain) = admin_domain(ctx, domain_name)? {
            conds.bind("u.domain_name = {}", Param::Text(domain));
        }
        let mut conn = ctx.connection().await?;
        let rows: Vec<KeypairRow> = conds
            .load(&mut conn, KEYPAIR_COLUMNS, KEYPAIR_FROM, "")
            .await?;
        let needs = KeypairNeeds::of(&executor.look_ahead());
        Ok(keypairs_of_rows(ctx, conn, rows, needs).await?.pop())
    }

    /// A page of keypairs (users: their own; domain admins: their domain).
    #[allow(clippy::too_many_arguments)]
    async fn keypair_list<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        limit: i32,
        offset: i32,
        filter: Option<String>,
        order: Option<String>,
        domain_name: Option<String>,
        email: Option<String>,
        is_active: Option<bool>,
    ) -> FieldResult<Eager<KeyPairList>> {
        let mut conds = Conditions::default();
        if !ctx.actor.is_domain_admin() {
            conds.bind(
                "k.user_uuid = {}::uuid",
                Param::Text(ctx.actor.user_uuid.to_string()),
            );
        } else if let Some(domain) = admin_domain(ctx, domain_name)? {
            conds.bind("u.domain_name = {}", Param::Text(domain));
        }
        if let Some(email) = email {
            conds.bind("lower(k.user_email) = lower({})", Param::Text(email));
        }
        if let Some(active) = is_active {
            conds.bind("k.is_active = {}", Param::Bool(active));
        }
        conds.filter(filter.as_deref(), &KEYPAIR_FIELDS)?;
        let mut conn = ctx.connection().await?;
        let (rows, total_count) = page::<KeypairRow>(
            &mut conn,
            conds,
            KEYPAIR_COLUMNS,
            KEYPAIR_FROM,
            order.as_deref(),
            &KEYPAIR_FIELDS,
            "k.created_at DESC, k.access_key",
            limit,
            offset,
        )
        .await?;
        let needs = executor
            .look_ahead()
            .children()
            .select("items")
            .map(|items| KeypairNeeds::of(&items))
            .unwrap_or_default();
        let items = keypairs_of_rows(ctx, conn, rows, needs).await?;
        Ok(Eager(KeyPairList {
            items: items.into_iter().map(Some).collect(),
            total_count,
        }))
    }

    /// A domain: the caller's when no name is given; others only for
    /// superadmins.
    async fn domain(ctx: &Context, name: Option<String>) -> FieldResult<Option<Domain>> {
        let name = name.unwrap_or_else(|| ctx.actor.domain_name.clone());
        if name != ctx.actor.domain_name && !ctx.actor.is_superadmin() {
            return Err(gql_error(format!(
                "{FORBIDDEN} (superadmin privilege required)"
            )));
        }
        domain_by_name(ctx, &name).await
    }

    /// Every domain (superadmins).
    async fn domains(ctx: &Context, is_active: Option<bool>) -> FieldResult<Vec<Option<Domain>>> {
        superadmin_only(ctx)?;
        let mut conds = Conditions::default();
        if let Some(active) = is_active {
            conds.bind("d.is_active = {}", Param::Bool(active));
        }
        let rows =
            fetch::<DomainRow, Domain>(ctx, conds, DOMAIN_COLUMNS, "domains d", " ORDER BY d.name")
                .await?;
        Ok(rows.into_iter().map(Some).collect())
    }

    /// A project: superadmins any, domain admins those of their domain,
    /// users those they belong to.
    async fn group(
        ctx: &Context,
        id: Uuid,
        domain_name: Option<String>,
    ) -> FieldResult<Option<Group>> {
        let mut conds = Conditions::default();
        conds.bind("g.id = {}::uuid", Param::Text(id.to_string()));
        scope_groups(ctx, &mut conds, domain_name)?;
        Ok(
            fetch::<GroupRow, Group>(ctx, conds, GROUP_COLUMNS, "groups g", "")
                .await?
                .pop(),
        )
    }

    /// Projects: superadmins all (or one domain's), domain admins their
    /// domain's, users those they belong to.
    async fn groups(
        ctx: &Context,
        domain_name: Option<String>,
        is_active: Option<bool>,
    ) -> FieldResult<Vec<Option<Group>>> {
        let mut conds = Conditions::default();
        scope_groups(ctx, &mut conds, domain_name)?;
        if let Some(active) = is_active {
            conds.bind("g.is_active = {}", Param::Bool(active));
        }
        let rows = fetch::<GroupRow, Group>(
            ctx,
            conds,
            GROUP_COLUMNS,
            "groups g",
            " ORDER BY g.domain_name, g.name",
        )
        .await?;
        Ok(rows.into_iter().map(Some).collect())
    }

    /// A keypair resource policy: the caller's keypair's when no name is
    /// given; others only for superadmins or when one of the caller's
    /// keypairs uses it.
    async fn keypair_resource_policy(
        ctx: &Context,
        name: Option<String>,
    ) -> FieldResult<Option<KeyPairResourcePolicy>> {
        let mut conds = Conditions::default();
        match name {
            Some(name) => conds.bind("p.name = {}", Param::Text(name)),
            None => conds.bind(
                "p.name = (SELECT resource_policy FROM keypairs WHERE access_key = {})",
                Param::Text(ctx.actor.access_key.clone()),
            ),
        };
        scope_policies(ctx, &mut conds);
        Ok(fetch::<PolicyRow, KeyPairResourcePolicy>(
            ctx,
            conds,
            POLICY_COLUMNS,
            "keypair_resource_policies p",
            "",
        )
        .await?
        .pop())
    }

    /// Keypair resource policies: all for superadmins, else those the
    /// caller's keypairs use.
    async fn keypair_resource_policies(
        ctx: &Context,
    ) -> FieldResult<Vec<Option<KeyPairResourcePolicy>>> {
        let mut conds = Conditions::default();
        scope_policies(ctx, &mut conds);
        let rows = fetch::<PolicyRow, KeyPairResourcePolicy>(
            ctx,
            conds,
            POLICY_COLUMNS,
            "keypair_resource_policies p",
            " ORDER BY p.name",
        )
        .await?;
        Ok(rows.into_iter().map(Some).collect())
    }

    /// A user resource policy: the caller's own when no name is given;
    /// others only for superadmins.
    async fn user_resource_policy(
        ctx: &Context,
        name: Option<String>,
    ) -> FieldResult<Option<UserResourcePolicy>> {
        let mut conds = Conditions::default();
        match name {
            Some(name) => conds.bind("p.name = {}", Param::Text(name)),
            None => conds.bind(
                "p.name = (SELECT resource_policy FROM users WHERE uuid = {}::uuid)",
                Param::Text(ctx.actor.user_uuid.to_string()),
            ),
        };
        if !ctx.actor.is_superadmin() {
            conds.bind(
                "p.name = (SELECT resource_policy FROM users WHERE uuid = {}::uuid)",
                Param::Text(ctx.actor.user_uuid.to_string()),
            );
        }
        Ok(user_policies(ctx, conds).await?.pop())
    }

    /// Every user resource policy (superadmins).
    async fn user_resource_policies(ctx: &Context) -> FieldResult<Vec<Option<UserResourcePolicy>>> {
        superadmin_only(ctx)?;
        Ok(user_policies(ctx, Conditions::default())
            .await?
            .into_iter()
            .map(Some)
            .collect())
    }

    /// A project resource policy (superadmins).
    async fn project_resource_policy(
        ctx: &Context,
        name: String,
    ) -> FieldResult<Option<ProjectResourcePolicy>> {
        superadmin_only(ctx)?;
        Ok(project_policies(ctx, by_name("p.name", &name)).await?.pop())
    }

    /// Every project resource policy (superadmins).
    async fn project_resource_policies(
        ctx: &Context,
    ) -> FieldResult<Vec<Option<ProjectResourcePolicy>>> {
        superadmin_only(ctx)?;
        Ok(project_policies(ctx, Conditions::default())
            .await?
            .into_iter()
            .map(Some)
            .collect())
    }

    /// A resource preset (any caller).
    async fn resource_preset(ctx: &Context, name: String) -> FieldResult<Option<ResourcePreset>> {
        Ok(presets(ctx, by_name("r.name", &name)).await?.pop())
    }

    /// Resource presets (any caller), optionally those of one scaling group
    /// (and those for every scaling group).
    async fn resource_presets(
        ctx: &Context,
        scaling_group_name: Option<String>,
    ) -> FieldResult<Vec<Option<ResourcePreset>>> {
        let mut conds = Conditions::default();
        if let Some(sg) = scaling_group_name {
            conds.bind(
                "(r.scaling_group_name IS NULL OR r.scaling_group_name = {})",
                Param::Text(sg),
            );
        }
        Ok(presets(ctx, conds).await?.into_iter().map(Some).collect())
    }

    /// A scaling group (superadmins).
    async fn scaling_group(ctx: &Context, name: String) -> FieldResult<Option<ScalingGroup>> {
        superadmin_only(ctx)?;
        scaling_group_by_name(ctx, &name).await
    }

    /// Scaling groups (superadmins).
    async fn scaling_groups(
        ctx: &Context,
        name: Option<String>,
        is_active: Option<bool>,
    ) -> FieldResult<Vec<Option<ScalingGroup>>> {
        superadmin_only(ctx)?;
        let mut conds = Conditions::default();
        if let Some(name) = name {
            conds.bind("s.name = {}", Param::Text(name));
        }
        if let Some(active) = is_active {
            conds.bind("s.is_active = {}", Param::Bool(active));
        }
        let rows = fetch::<ScalingGroupRow, ScalingGroup>(
            ctx,
            conds,
            SCALING_GROUP_COLUMNS,
            "scaling_groups s",
            " ORDER BY s.name",
        )
        .await?;
        Ok(rows.into_iter().map(Some).collect())
    }

    /// The images the caller may see (see `images.rs` for the scoping and
    /// filters).
    async fn images(
        ctx: &Context,
        is_installed: Option<bool>,
        is_operation: juniper::Nullable<bool>,
    ) -> FieldResult<Vec<Option<super::images::Image>>> {
        super::images::images(ctx, is_installed, is_operation).await
    }

    /// The image an alias or canonical name names, or null.
    async fn image(
        ctx: &Context,
        reference: String,
        architecture: Option<String>,
    ) -> FieldResult<Option<super::images::Image>> {
        super::images::image(ctx, reference, architecture).await
    }

    /// An agent, or null (superadmins).
    async fn agent(ctx: &Context, agent_id: String) -> FieldResult<Option<Agent>> {
        agents::agent(ctx, agent_id).await
    }

    /// A page of agents (superadmins); `status` is an agent status name
    /// (or several, comma-separated).
    #[allow(clippy::too_many_arguments)]
    async fn agent_list(
        ctx: &Context,
        limit: i32,
        offset: i32,
        filter: Option<String>,
        order: Option<String>,
        scaling_group: Option<String>,
        status: Option<String>,
    ) -> FieldResult<Option<Eager<AgentList>>> {
        agents::agent_list(ctx, limit, offset, filter, order, scaling_group, status)
            .await
            .map(Some)
    }

    /// What the caller may know of an agent of a scaling group it may use,
    /// or null.
    async fn agent_summary(ctx: &Context, agent_id: String) -> FieldResult<Option<AgentSummary>> {
        agents::agent_summary(ctx, agent_id).await
    }

    /// A page of summaries of the agents of the scaling groups the caller
    /// may use (superadmins: every agent).
    #[allow(clippy::too_many_arguments)]
    async fn agent_summary_list(
        ctx: &Context,
        limit: i32,
        offset: i32,
        filter: Option<String>,
        order: Option<String>,
        scaling_group: Option<String>,
        status: Option<String>,
    ) -> FieldResult<Option<Eager<AgentSummaryList>>> {
        agents::agent_summary_list(ctx, limit, offset, filter, order, scaling_group, status)
            .await
            .map(Some)
    }

    /// A compute session the caller may see, or null (users: their
    /// keypair's; domain admins: their domain's; superadmins: any).
    async fn compute_session<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        id: Uuid,
    ) -> FieldResult<Option<Eager<sessions::ComputeSession>>> {
        let needs = sessions::Needs::of_session(&executor.look_ahead());
        sessions::compute_session(ctx, needs, id).await
    }

    /// A page of the compute sessions the caller may see; `status` is
    /// session status names, comma-separated.
    #[allow(clippy::too_many_arguments)]
    async fn compute_session_list<S: ScalarValue>(
        ctx: &Context,
        executor: &Executor<'_, '_, Context, S>,
        limit: i32,
        offset: i32,
        filter: Option<String>,
        order: Option<String>,
        domain_name: Option<String>,
        group_id: Option<String>,
        access_key: Option<String>,
        status: Option<String>,
    ) -> FieldResult<Option<Eager<sessions::ComputeSessionList>>> {
        let needs = sessions::Needs::of_list(&executor.look_ahead());
        let args = sessions::SessionListArgs {
            filter,
            order,
            domain_name,
            group_id,
            access_key,
            status,
        };
        sessions::compute_session_list(ctx, needs, limit, offset, args)
            .await
            .map(Some)
    }

    /// A container (kernel) of a session the caller may see, or null.
    async fn compute_container(
        ctx: &Context,
        id: Uuid,
    ) -> FieldResult<Option<sessions::ComputeContainer>> {
        sessions::compute_container(ctx, id).await
    }

    /// A page of one session's containers (the main one first), if the
    /// caller may see the session; `role` is a cluster role (`main`, `sub`).
    async fn compute_container_list(
        ctx: &Context,
        limit: i32,
        offset: i32,
        filter: Option<String>,
        order: Option<String>,
        session_id: ID,
        role: Option<String>,
    ) -> FieldResult<Option<Eager<sessions::ComputeContainerList>>> {
        sessions::compute_container_list(ctx, limit, offset, filter, order, &session_id, role)
            .await
            .map(Some)
    }
}

fn scope_groups(
    ctx: &Context,
    conds: &mut Conditions,
    domain_name: Option<String>,
) -> FieldResult<()> {
    if ctx.actor.is_domain_admin() {
        if let Some(domain) = admin_domain(ctx, domain_name)? {
            conds.bind("g.domain_name = {}", Param::Text(domain));
        }
    } else {
        conds.bind(
            "g.id IN (SELECT a.group_id FROM association_groups_users a WHERE a.user_id = {}::uuid)",
            Param::Text(ctx.actor.user_uuid.to_string()),
        );
        if let Some(domain) = domain_name {
            conds.bind("g.domain_name = {}", Param::Text(domain));
        }
    }
    Ok(())
}

fn scope_policies(ctx: &Context, conds: &mut Conditions) {
    if !ctx.actor.is_superadmin() {
        conds.bind(
            "p.name IN (SELECT resource_policy FROM keypairs WHERE user_uuid = {}::uuid)",
            Param::Text(ctx.actor.user_uuid.to_string()),
        );
    }
}

/// A keypair resource policy's fields as stored (the base that
/// `modify_keypair_resource_policy` patches).
pub(super) async fn policy_fields_by_name(
    ctx: &Context,
    name: &str,
) -> FieldResult<Option<manager_events::policy::KeypairPolicyFields>> {
    let conds = by_name("p.name", name);
    let from = "keypair_resource_policies p";
    Ok(fetch::<PolicyRow, _>(ctx, conds, POLICY_COLUMNS, from, "")
        .await?
        .pop())
}

impl From<PolicyRow> for manager_events::policy::KeypairPolicyFields {
    fn from(r: PolicyRow) -> Self {
        use manager_events::policy::DefaultForUnspecified;
        manager_events::policy::KeypairPolicyFields {
            default_for_unspecified: if r.default_for_unspecified == "LIMITED" {
                DefaultForUnspecified::Limited
            } else {
                DefaultForUnspecified::Unlimited
            },
            total_resource_slots: serde_json::from_value(r.total_resource_slots)
                .unwrap_or_default(),
            max_session_lifetime: r.max_session_lifetime,
            max_concurrent_sessions: r.max_concurrent_sessions,
            max_concurrent_sftp_sessions: r.max_concurrent_sftp_sessions,
            max_containers_per_session: r.max_containers_per_session,
            idle_timeout: r.idle_timeout,
            allowed_vfolder_hosts: serde_json::from_value(r.allowed_vfolder_hosts)
                .unwrap_or_default(),
            max_vfolder_count: r.max_vfolder_count,
            max_vfolder_size: r.max_vfolder_size,
            max_quota_scope_size: r.max_quota_scope_size,
        }
    }
}
