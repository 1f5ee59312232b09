//! Agents: `agent` and `agent_list` for superadmins, `agent_summary` and
//! `agent_summary_list` for everyone (API spec §5.3).
//!
//! Scoping. `agent` and `agent_list` answer superadmins only; anyone else
//! gets the reference's "Forbidden operation. (superadmin privilege
//! required)" and a null field. The summaries show a superadmin every
//! agent, and anyone else only the agents of the active scaling groups the
//! caller may use: those associated with the caller's domain, with the
//! calling keypair, or with a project the caller belongs to. A
//! `scaling_group` argument narrows that set, never widens it. Summaries
//! carry no address, region or version, and their `filter` and `order`
//! accept only the fields a summary shows.
//!
//! Every field is read from the `agents` read model, `occupied_slots` from
//! `agent_occupancy` (kept by the sessions' projector), or is a constant
//! while live statistics are not collected, so responses may be kept by the
//! response cache. A field that comes to read Redis or ask an agent must
//! keep its responses out of it (see `cache.rs`).

use chrono::{DateTime as ChronoTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Jsonb, Nullable, Text, Timestamptz};
use juniper::{FieldResult, ID};

use super::Context;
use super::Eager;
use super::scalars::JsonString;
use super::sql::{Conditions, gql_error, page};
use super::types::{Agent, AgentList, AgentSummary, AgentSummaryList};
use crate::minilang::{Field, FieldType, Fields, Param};

/// Filterable and orderable fields of `agent_list` (spec §5.2).
pub const AGENT_FIELDS: Fields = Fields(&[
    Field::new("id", "a.id", FieldType::Text),
    Field::new("status", "a.status", FieldType::Enum),
    Field::new("status_changed", "a.status_changed", FieldType::Timestamp),
    Field::new("region", "a.region", FieldType::Text),
    Field::new("scaling_group", "a.scaling_group", FieldType::Text),
    Field::new("schedulable", "a.schedulable", FieldType::Bool),
    Field::filter_only("addr", "a.addr", FieldType::Text),
    Field::new("first_contact", "a.first_contact", FieldType::Timestamp),
    Field::new("lost_at", "a.lost_at", FieldType::Timestamp),
    Field::new("version", "a.version", FieldType::Text),
    Field::order_only("available_slots", "a.available_slots", FieldType::Text),
    Field::order_only("occupied_slots", OCCUPIED, FieldType::Text),
]);

/// Filterable and orderable fields of `agent_summary_list`: only what a
/// summary shows.
pub const AGENT_SUMMARY_FIELDS: Fields = Fields(&[
    Field::new("id", "a.id", FieldType::Text),
    Field::new("status", "a.status", FieldType::Enum),
    Field::new("scaling_group", "a.scaling_group", FieldType::Text),
    Field::new("schedulable", "a.schedulable", FieldType::Bool),
    Field::new("architecture", "a.architecture", FieldType::Text),
    Field::order_only("available_slots", "a.available_slots", FieldType::Text),
    Field::order_only("occupied_slots", OCCUPIED, FieldType::Text),
]);

/// The statuses `status` arguments accept: the reference's, and ours.
const STATUSES: &[&str] = &[
    "ALIVE",
    "LOST",
    "RESTARTING",
    "TERMINATED",
    "DECOMMISSIONED",
];

/// Pages are ordered by id unless the client orders them (and ties by id).
const DEFAULT_ORDER: &str = "a.id";

/// What an agent's kernels hold: kept in `agent_occupancy` by the sessions'
/// projector (an agent holding nothing has no row there, and reads `{}`).
const OCCUPIED: &str = "coalesce(o.occupied_slots, '{}'::jsonb)";

/// Agents with what their kernels hold.
const AGENTS_FROM: &str = "agents a LEFT JOIN agent_occupancy o ON o.agent_id = a.id";

const AGENT_COLUMNS: &str = "a.id, a.status, a.status_changed, a.first_contact, a.lost_at, a.region, \
    a.scaling_group, a.schedulable, a.available_slots, \
    coalesce(o.occupied_slots, '{}'::jsonb) AS occupied_slots, a.addr, a.version, \
    a.architecture, a.compute_plugins, a.auto_terminate_abusing_kernel";

const SUMMARY_COLUMNS: &str = "a.id, a.status, a.scaling_group, a.schedulable, a.available_slots, \
    coalesce(o.occupied_slots, '{}'::jsonb) AS occupied_slots, a.architecture";

/// A row of `agents`.
#[derive(Debug, QueryableByName)]
struct AgentRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    status_changed: ChronoTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    first_contact: ChronoTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    lost_at: Option<ChronoTime<Utc>>,
    #[diesel(sql_type = Text)]
    region: String,
    #[diesel(sql_type = Text)]
    scaling_group: String,
    #[diesel(sql_type = Bool)]
    schedulable: bool,
    #[diesel(sql_type = Jsonb)]
    available_slots: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    occupied_slots: serde_json::Value,
    #[diesel(sql_type = Text)]
    addr: String,
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    architecture: String,
    #[diesel(sql_type = Jsonb)]
    compute_plugins: serde_json::Value,
    #[diesel(sql_type = Bool)]
    auto_terminate_abusing_kernel: bool,
}

/// A row of `agents`, as much as a summary shows.
#[derive(Debug, QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Text)]
    scaling_group: String,
    #[diesel(sql_type = Bool)]
    schedulable: bool,
    #[diesel(sql_type = Jsonb)]
    available_slots: serde_json::Value,
    #[diesel(sql_type = Jsonb)]
    occupied_slots: serde_json::Value,
    #[diesel(sql_type = Text)]
    architecture: String,
}

/// A slot's amount (a decimal string, as slots are kept), 0 when absent.
fn amount(slots: &serde_json::Value, slot: &str) -> f64 {
    match slots.get(slot) {
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(0.0),
        Some(serde_json::Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Bytes in whole MiB, as the reference's legacy `mem_slots`.
#[allow(clippy::cast_possible_truncation)]
fn mebibytes(bytes: f64) -> i32 {
    // `as` saturates: a capacity past 2^31 MiB reads as i32::MAX.
    (bytes / 1_048_576.0).floor() as i32
}

impl From<AgentRow> for Agent {
    fn from(r: AgentRow) -> Self {
        let (avail, used) = (&r.available_slots, &r.occupied_slots);
        Agent {
            mem_slots: Some(mebibytes(amount(avail, "mem"))),
            cpu_slots: Some(amount(avail, "cpu")),
            gpu_slots: Some(amount(avail, "cuda.device")),
            tpu_slots: Some(amount(avail, "tpu.device")),
            used_mem_slots: Some(mebibytes(amount(used, "mem"))),
            used_cpu_slots: Some(amount(used, "cpu")),
            used_gpu_slots: Some(amount(used, "cuda.device")),
            used_tpu_slots: Some(amount(used, "tpu.device")),
            available_slots: Some(JsonString::of(avail)),
            occupied_slots: Some(JsonString::of(used)),
            id: Some(ID::new(r.id)),
            status: Some(r.status),
            status_changed: Some(r.status_changed.into()),
            region: Some(r.region),
            scaling_group: Some(r.scaling_group),
            schedulable: Some(r.schedulable),
            addr: Some(r.addr),
            architecture: Some(r.architecture),
            first_contact: Some(r.first_contact.into()),
            lost_at: r.lost_at.map(Into::into),
            live_stat: None,
            version: Some(r.version),
            compute_plugins: Some(JsonString::of(&r.compute_plugins)),
            hardware_metadata: None,
            auto_terminate_abusing_kernel: Some(r.auto_terminate_abusing_kernel),
            local_config: None,
            container_count: Some(0),
            cpu_cur_pct: Some(0.0),
            mem_cur_bytes: Some(0.0),
        }
    }
}

impl From<SummaryRow> for AgentSummary {
    fn from(r: SummaryRow) -> Self {
        AgentSummary {
            id: Some(ID::new(r.id)),
            status: Some(r.status),
            scaling_group: Some(r.scaling_group),
            schedulable: Some(r.schedulable),
            available_slots: Some(JsonString::of(&r.available_slots)),
            occupied_slots: Some(JsonString::of(&r.occupied_slots)),
            architecture: Some(r.architecture),
        }
    }
}

fn superadmin_only(ctx: &Context) -> FieldResult<()> {
    if ctx.actor.is_superadmin() {
        Ok(())
    } else {
        Err(gql_error(format!(
            "{} (superadmin privilege required)",
            super::query::FORBIDDEN
        )))
    }
}

/// Adds the `status` argument: one status name or several, comma-separated
/// (any case); none or empty means any status.
fn by_status(conds: &mut Conditions, status: Option<String>) -> FieldResult<()> {
    let Some(status) = status.filter(|s| !s.trim().is_empty()) else {
        return Ok(());
    };
    let mut names = Vec::new();
    for name in status.split(',').map(|s| s.trim().to_uppercase()) {
        if !STATUSES.contains(&name.as_str()) {
            return Err(gql_error(format!(
                "unknown agent status {name:?} (one of {})",
                STATUSES.join(", ")
            )));
        }
        names.push(name);
    }
    conds.bind("a.status = ANY({})", Param::TextList(names));
    Ok(())
}

/// Limits a summary query to the agents the caller may see (see the module
/// docs).
fn scope_summaries(ctx: &Context, conds: &mut Conditions) {
    if ctx.actor.is_superadmin() {
        return;
    }
    conds.bind_each(
        "a.scaling_group IN (SELECT s.name FROM scaling_groups s WHERE s.is_active AND s.name IN ( \
         SELECT d.scaling_group FROM sgroups_for_domains d WHERE d.domain = {} \
         UNION SELECT k.scaling_group FROM sgroups_for_keypairs k WHERE k.access_key = {} \
         UNION SELECT g.scaling_group FROM sgroups_for_groups g \
         JOIN association_groups_users m ON m.group_id = g.\"group\" WHERE m.user_id = {}::uuid))",
        vec![
            Param::Text(ctx.actor.domain_name.clone()),
            Param::Text(ctx.actor.access_key.clone()),
            Param::Text(ctx.actor.user_uuid.to_string()),
        ],
    );
}

/// `agent(agent_id)`: one agent, or null (superadmins).
pub(super) async fn agent(ctx: &Context, agent_id: String) -> FieldResult<Option<Agent>> {
    superadmin_only(ctx)?;
    let mut conds = Conditions::default();
    conds.bind("a.id = {}", Param::Text(agent_id));
    let mut conn = ctx.connection().await?;
    let rows: Vec<AgentRow> = conds
        .load(&mut conn, AGENT_COLUMNS, AGENTS_FROM, "")
        .await?;
    Ok(rows.into_iter().next().map(Agent::from))
}

/// `agent_list`: a page of agents (superadmins).
#[allow(clippy::too_many_arguments)]
pub(super) async fn agent_list(
    ctx: &Context,
    limit: i32,
    offset: i32,
    filter: Option<String>,
    order: Option<String>,
    scaling_group: Option<String>,
    status: Option<String>,
) -> FieldResult<Eager<AgentList>> {
    superadmin_only(ctx)?;
    let mut conds = Conditions::default();
    if let Some(sg) = scaling_group {
        conds.bind("a.scaling_group = {}", Param::Text(sg));
    }
    by_status(&mut conds, status)?;
    conds.filter(filter.as_deref(), &AGENT_FIELDS)?;
    let mut conn = ctx.connection().await?;
    let (rows, total_count) = page::<AgentRow>(
        &mut conn,
        conds,
        AGENT_COLUMNS,
        AGENTS_FROM,
        order.as_deref(),
        &AGENT_FIELDS,
        DEFAULT_ORDER,
        limit,
        offset,
    )
    .await?;
    Ok(Eager(AgentList {
        items: rows.into_iter().map(|r| Some(Agent::from(r))).collect(),
        total_count,
    }))
}

/// `agent_summary(agent_id)`: one agent the caller may see, or null.
pub(super) async fn agent_summary(
    ctx: &Context,
    agent_id: String,
) -> FieldResult<Option<AgentSummary>> {
    let mut conds = Conditions::default();
    conds.bind("a.id = {}", Param::Text(agent_id));
    scope_summaries(ctx, &mut conds);
    let mut conn = ctx.connection().await?;
    let rows: Vec<SummaryRow> = conds
        .load(&mut conn, SUMMARY_COLUMNS, AGENTS_FROM, "")
        .await?;
    Ok(rows.into_iter().next().map(AgentSummary::from))
}

/// `agent_summary_list`: a page of the agents the caller may see.
#[allow(clippy::too_many_arguments)]
pub(super) async fn agent_summary_list(
    ctx: &Context,
    limit: i32,
    offset: i32,
    filter: Option<String>,
    order: Option<String>,
    scaling_group: Option<String>,
    status: Option<String>,
) -> FieldResult<Eager<AgentSummaryList>> {
    let mut conds = Conditions::default();
    scope_summaries(ctx, &mut conds);
    if let Some(sg) = scaling_group {
        conds.bind("a.scaling_group = {}", Param::Text(sg));
    }
    by_status(&mut conds, status)?;
    conds.filter(filter.as_deref(), &AGENT_SUMMARY_FIELDS)?;
    let mut conn = ctx.connection().await?;
    let (rows, total_count) = page::<SummaryRow>(
        &mut conn,
        conds,
        SUMMARY_COLUMNS,
        AGENTS_FROM,
        order.as_deref(),
        &AGENT_SUMMARY_FIELDS,
        DEFAULT_ORDER,
        limit,
        offset,
    )
    .await?;
    Ok(Eager(AgentSummaryList {
        items: rows
            .into_iter()
            .map(|r| Some(AgentSummary::from(r)))
            .collect(),
        total_count,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_slot_fields_read_decimal_strings() {
        let slots = serde_json::json!({"cpu": "4.5", "mem": "17179869184", "cuda.device": 2});
        assert_eq!(amount(&slots, "cpu"), 4.5);
        assert_eq!(amount(&slots, "cuda.device"), 2.0);
        assert_eq!(amount(&slots, "tpu.device"), 0.0);
        assert_eq!(mebibytes(amount(&slots, "mem")), 16_384);
        assert_eq!(mebibytes(1e30), i32::MAX);
    }

    #[test]
    fn statuses_are_checked_and_listed() {
        let mut conds = Conditions::default();
        by_status(&mut conds, Some("alive, LOST".into())).unwrap();
        assert_eq!(conds.where_clause(), " WHERE a.status = ANY($1)");
        let mut conds = Conditions::default();
        by_status(&mut conds, Some(String::new())).unwrap();
        assert_eq!(conds.where_clause(), "");
        assert!(by_status(&mut Conditions::default(), Some("DEAD".into())).is_err());
    }

    #[test]
    fn several_values_bind_in_order() {
        let mut conds = Conditions::default();
        conds.bind("x = {}", Param::Int(1));
        conds.bind_each(
            "(a = {} OR b = {})",
            vec![Param::Int(2), Param::Text("t".into())],
        );
        assert_eq!(conds.where_clause(), " WHERE x = $1 AND (a = $2 OR b = $3)");
    }
}
