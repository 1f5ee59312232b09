//! The compute sessions' read models: `sessions`, `kernels`,
//! `session_dependencies`, and `agent_occupancy` (what the kernels placed on
//! each agent hold).
//!
//! # Statuses
//! The log says every status a session or kernel enters (see
//! [`manager_events::session`]): this projector never derives one. Each
//! status entered sets `status`, `status_changed` (the event's time) and its
//! key in `status_history` (`{STATUS: ISO time}`, overwritten on re-entry).
//! - `SessionEnqueued`: session and kernels PENDING.
//! - `SchedulingDeferred`: `status_info` (why) and `status_data.scheduler`
//!   (`retries`, `last_try`, `failed_predicates`, `msg`) of the session and
//!   its kernels; the status stays.
//! - `SessionScheduled`: SCHEDULED, with `status_info` `scheduled`, the
//!   agents, `scheduled_at`; `status_data` starts over as `{}`.
//! - `KernelsTransitioned`: the kernels' new status, `status_info` = the
//!   reason, the error (`status_data.error`) or exit code
//!   (`status_data.kernel.exit_code`); the session's when `session_status`
//!   says it changed.
//! - `KernelStarted`: the kernel RUNNING with its container, host, ports and
//!   the slots really allocated (none reported: as placed); the main
//!   kernel's service ports become the session's.
//! - Entering PREPARING, PULLING, PREPARED, CREATING or RUNNING without a
//!   reason or an error clears `status_info` (null) and `status_data`
//!   (`{}`), as the reference does on PREPARING: a running session does not
//!   say `scheduled`.
//! - `SessionCancelled`: session and every kernel CANCELLED.
//! - `terminated_at` is set when a session or kernel becomes TERMINATED or
//!   CANCELLED.
//!
//! # Occupancy
//! A kernel's `occupied_slots` is what it asked for at enqueue, then what
//! [`AgentEvent::KernelsPlaced`] reserved for it on its agent, then what the
//! agent really allocated (`KernelStarted.occupied_slots`, when not empty).
//! After every event touching a session's kernels, the occupancy of the
//! session and of each agent its kernels were placed on is **summed again**
//! from the kernels whose status holds agent slots
//! ([`KernelStatus::holds_agent_slots`]), exactly, with
//! [`SlotAmount`]. Summing rather than adding and subtracting makes the
//! result independent of the order in which the session's and the agent's
//! events of one placement are applied, and a kernel that stops holding
//! slots frees them by its transition alone. An agent holding nothing has
//! no `agent_occupancy` row (it reads `{}`); the `agents` table is the
//! agents' projector's, and is never written here.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{
    Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::agent::{self, AgentEvent};
use manager_events::session::{
    self, ErrorInfo, KernelPlacement, KernelStatus, Owner, PredicateFailure, SessionEvent,
    SessionSpec, SessionStatus, SlotMap,
};
use manager_events::slots::SlotAmount;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector, uuid_of};

/// Projects session streams (and the agents' `KernelsPlaced`) into
/// `sessions`, `kernels`, `session_dependencies` and `agent_occupancy`.
pub struct SessionsProjector;

fn position(e: &RecordedEvent) -> i64 {
    i64::try_from(e.position).unwrap_or(i64::MAX)
}

/// A time as `status_history` keeps it: Python's `isoformat()` of an aware
/// UTC time, as the reference writes it.
fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
}

fn int(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// The condition selecting kernels that hold their agent's slots, written
/// from [`KernelStatus::holds_agent_slots`]. The migration's partial index
/// `kernels_holding_agent` has the same predicate, word for word (a test
/// checks it), so the planner can use it.
static HOLDING: LazyLock<String> = LazyLock::new(|| {
    let idle: Vec<String> = KernelStatus::ALL
        .into_iter()
        .filter(|s| !s.holds_agent_slots())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("status NOT IN ({})", idle.join(", "))
});

/// `slots` × `n`, exactly.
fn times(slots: &SlotMap, n: usize) -> SlotMap {
    let n = i128::try_from(n).unwrap_or(i128::MAX);
    slots
        .iter()
        .map(|(name, amount)| {
            let total = match SlotAmount::parse(amount) {
                Ok(SlotAmount::Finite(v)) => SlotAmount::Finite(v.saturating_mul(n)).to_string(),
                Ok(SlotAmount::Infinity) => SlotAmount::Infinity.to_string(),
                Err(_) => amount.clone(),
            };
            (name.clone(), total)
        })
        .collect()
}

/// The sum of slot maps kept as JSON text (amounts as decimal strings or
/// numbers). An amount that is no number counts as nothing (the write side
/// only records validated amounts).
fn sum_slots<'a>(maps: impl IntoIterator<Item = &'a str>) -> SlotMap {
    let mut sum: BTreeMap<String, SlotAmount> = BTreeMap::new();
    for text in maps {
        let Ok(map) = serde_json::from_str::<BTreeMap<String, Value>>(text) else {
            tracing::warn!(
                slots = text,
                "a kernel's occupied slots are not a JSON object"
            );
            continue;
        };
        for (name, v) in map {
            let parsed = match &v {
                Value::String(s) => SlotAmount::parse(s).ok(),
                Value::Number(n) => SlotAmount::parse(&n.to_string()).ok(),
                _ => None,
            };
            let Some(amount) = parsed else {
                tracing::warn!(slot = %name, value = %v, "a kernel's slot amount is no number");
                continue;
            };
            let entry = sum.entry(name).or_insert(SlotAmount::ZERO);
            *entry = entry.plus(amount);
        }
    }
    sum.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

#[derive(QueryableByName)]
struct Slots {
    #[diesel(sql_type = Text)]
    slots: String,
}

#[derive(QueryableByName)]
struct AgentId {
    #[diesel(sql_type = Text)]
    agent: String,
}

/// Sums again what the session's kernels hold, and what each agent they
/// were placed on holds (see the module docs).
async fn refresh_occupancy(
    conn: &mut AsyncPgConnection,
    session_id: Uuid,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let held: Vec<Slots> = manager_events::prepared(format!(
        "SELECT occupied_slots::text AS slots FROM kernels WHERE session_id = $1 AND {}",
        *HOLDING
    ))
    .bind::<SqlUuid, _>(session_id)
    .load(conn)
    .await?;
    let total = sum_slots(held.iter().map(|s| s.slots.as_str()));
    manager_events::prepared(
        "UPDATE sessions SET occupied_slots = $2::jsonb, position = $3 WHERE id = $1",
    )
    .bind::<SqlUuid, _>(session_id)
    .bind::<Text, _>(json(&total)?)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;

    let agents: Vec<AgentId> = manager_events::prepared(
        "SELECT DISTINCT agent FROM kernels WHERE session_id = $1 AND agent IS NOT NULL",
    )
    .bind::<SqlUuid, _>(session_id)
    .load(conn)
    .await?;
    for AgentId { agent } in agents {
        let held: Vec<Slots> = manager_events::prepared(format!(
            "SELECT occupied_slots::text AS slots FROM kernels WHERE agent = $1 AND {}",
            *HOLDING
        ))
        .bind::<Text, _>(&agent)
        .load(conn)
        .await?;
        if held.is_empty() {
            manager_events::prepared("DELETE FROM agent_occupancy WHERE agent_id = $1")
                .bind::<Text, _>(&agent)
                .execute(conn)
                .await?;
        } else {
            let total = sum_slots(held.iter().map(|s| s.slots.as_str()));
            manager_events::prepared(
                "INSERT INTO agent_occupancy (agent_id, occupied_slots) VALUES ($1, $2::jsonb) \
                 ON CONFLICT (agent_id) DO UPDATE SET occupied_slots = excluded.occupied_slots",
            )
            .bind::<Text, _>(&agent)
            .bind::<Text, _>(json(&total)?)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// A new session, PENDING, with its kernels and dependencies.
async fn enqueue(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    creation_id: &str,
    owner: &Owner,
    spec: &SessionSpec,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let pending = SessionStatus::Pending.as_str();
    let history = json(&json!({ pending: iso(e.recorded_at) }))?;
    let by_host: BTreeMap<&str, &BTreeMap<String, String>> = spec
        .kernels
        .iter()
        .map(|k| (k.cluster_hostname.as_str(), &spec.resource_opts))
        .collect();
    let main_kernel = <[_]>::first(&spec.kernels).map(|k| k.id);
    manager_events::prepared(
        "INSERT INTO sessions (id, creation_id, name, session_type, tag, main_kernel_id, image, \
         architecture, registry, cluster_mode, cluster_size, domain_name, group_id, user_uuid, \
         access_key, scaling_group, status, status_changed, status_history, created_at, starts_at, \
         startup_command, callback_url, resource_opts, mounts, requested_slots, occupying_slots, \
         position) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19::jsonb, $18, $20, $21, $22, $23::jsonb, $24, $25::jsonb, $26::jsonb, $27) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(creation_id)
    .bind::<Text, _>(&spec.name)
    .bind::<Text, _>(spec.session_type.as_str())
    .bind::<Nullable<Text>, _>(spec.tag.as_deref())
    .bind::<Nullable<SqlUuid>, _>(main_kernel)
    .bind::<Text, _>(&spec.image.canonical)
    .bind::<Text, _>(&spec.image.architecture)
    .bind::<Text, _>(&spec.image.registry)
    .bind::<Text, _>(spec.cluster_mode.as_str())
    .bind::<Integer, _>(int(spec.kernels.len()))
    .bind::<Text, _>(&owner.domain_name)
    .bind::<SqlUuid, _>(owner.project_id)
    .bind::<SqlUuid, _>(owner.user_id)
    .bind::<Text, _>(&owner.access_key)
    .bind::<Text, _>(&spec.scaling_group)
    .bind::<Text, _>(pending)
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(&history)
    .bind::<Nullable<Timestamptz>, _>(spec.starts_at)
    .bind::<Nullable<Text>, _>(spec.startup_command.as_deref())
    .bind::<Nullable<Text>, _>(spec.callback_url.as_deref())
    .bind::<Text, _>(json(&by_host)?)
    .bind::<Array<Text>, _>(&spec.mounts)
    .bind::<Text, _>(json(&spec.slots_per_kernel)?)
    .bind::<Text, _>(json(&times(&spec.slots_per_kernel, spec.kernels.len()))?)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;

    let ids: Vec<Uuid> = spec.kernels.iter().map(|k| k.id).collect();
    let roles: Vec<&str> = spec
        .kernels
        .iter()
        .map(|k| k.cluster_role.as_str())
        .collect();
    let idx: Vec<i32> = spec.kernels.iter().map(|k| int(k.cluster_idx)).collect();
    let ranks: Vec<i32> = spec.kernels.iter().map(|k| int(k.local_rank)).collect();
    let hosts: Vec<&str> = spec
        .kernels
        .iter()
        .map(|k| k.cluster_hostname.as_str())
        .collect();
    let ports: Vec<i32> = spec.preopen_ports.iter().map(|p| i32::from(*p)).collect();
    let slots = json(&spec.slots_per_kernel)?;
    manager_events::prepared(
        "INSERT INTO kernels (id, session_id, cluster_role, cluster_idx, local_rank, \
         cluster_hostname, image, architecture, registry, status, status_changed, status_history, \
         created_at, starts_at, resource_opts, requested_slots, occupied_slots, preopen_ports, \
         position) \
         SELECT k.id, $6, k.role, k.idx, k.rank, k.host, $7, $8, $9, $10, $11, $12::jsonb, $11, \
         $13, $14::jsonb, $15::jsonb, $15::jsonb, $16, $17 \
         FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::text[]) \
         AS k(id, role, idx, rank, host) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Text>, _>(roles)
    .bind::<Array<Integer>, _>(idx)
    .bind::<Array<Integer>, _>(ranks)
    .bind::<Array<Text>, _>(hosts)
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(&spec.image.canonical)
    .bind::<Text, _>(&spec.image.architecture)
    .bind::<Text, _>(&spec.image.registry)
    .bind::<Text, _>(KernelStatus::Pending.as_str())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(&history)
    .bind::<Nullable<Timestamptz>, _>(spec.starts_at)
    .bind::<Text, _>(json(&spec.resource_opts)?)
    .bind::<Text, _>(&slots)
    .bind::<Array<Integer>, _>(ports)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;

    if !spec.dependencies.is_empty() {
        manager_events::prepared(
            "INSERT INTO session_dependencies (session_id, depends_on) \
             SELECT $1, d FROM unnest($2::uuid[]) AS d ON CONFLICT DO NOTHING",
        )
        .bind::<SqlUuid, _>(id)
        .bind::<Array<SqlUuid>, _>(&spec.dependencies)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// The scheduler could not place the session yet: why, for the session and
/// its kernels.
async fn deferred(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status_info: &str,
    retries: u32,
    failed: &[PredicateFailure],
    msg: Option<&str>,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let mut scheduler = json!({
        "retries": retries,
        "last_try": iso(e.recorded_at),
        "failed_predicates": failed,
    });
    if let (Some(msg), Some(obj)) = (msg, scheduler.as_object_mut()) {
        obj.insert("msg".into(), Value::String(msg.to_owned()));
    }
    let patch = json(&json!({ "scheduler": scheduler }))?;
    for table in ["sessions", "kernels"] {
        let key = if table == "sessions" {
            "id"
        } else {
            "session_id"
        };
        manager_events::prepared(format!(
            "UPDATE {table} SET status_info = $2, \
             status_data = coalesce(status_data, '{{}}'::jsonb) || $3::jsonb, position = $4 \
             WHERE {key} = $1"
        ))
        .bind::<SqlUuid, _>(id)
        .bind::<Text, _>(status_info)
        .bind::<Text, _>(&patch)
        .bind::<BigInt, _>(position(e))
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Placed: the session and its kernels SCHEDULED on their agents.
async fn scheduled(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    scaling_group: &str,
    placements: &[KernelPlacement],
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let status = SessionStatus::Scheduled.as_str();
    let mut agents: Vec<&str> = Vec::new();
    for p in placements {
        if !agents.contains(&p.agent_id.as_str()) {
            agents.push(&p.agent_id);
        }
    }
    manager_events::prepared(
        "UPDATE sessions SET status = $2, status_changed = $3, \
         status_history = status_history || jsonb_build_object($2::text, $4::text), \
         status_info = 'scheduled', status_data = '{}'::jsonb, scheduled_at = $3, \
         scaling_group = $5, agent_ids = $6, position = $7 WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(status)
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(iso(e.recorded_at))
    .bind::<Text, _>(scaling_group)
    .bind::<Array<Text>, _>(agents)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    let kernels: Vec<Uuid> = placements.iter().map(|p| p.kernel_id).collect();
    let on: Vec<&str> = placements.iter().map(|p| p.agent_id.as_str()).collect();
    let addrs: Vec<&str> = placements.iter().map(|p| p.agent_addr.as_str()).collect();
    manager_events::prepared(
        "UPDATE kernels k SET agent = p.agent, agent_addr = p.addr, status = $5, \
         status_changed = $6, status_history = k.status_history || jsonb_build_object($5::text, $7::text), \
         status_info = 'scheduled', status_data = '{}'::jsonb, scheduled_at = $6, position = $8 \
         FROM unnest($2::uuid[], $3::text[], $4::text[]) AS p(id, agent, addr) \
         WHERE k.id = p.id AND k.session_id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Array<SqlUuid>, _>(kernels)
    .bind::<Array<Text>, _>(on)
    .bind::<Array<Text>, _>(addrs)
    .bind::<Text, _>(KernelStatus::Scheduled.as_str())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(iso(e.recorded_at))
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    refresh_occupancy(conn, id, e).await
}

/// What a status change of a session writes besides the status itself.
struct Change<'a> {
    /// The new `status_info`; `None` keeps the old one.
    info: Option<&'a str>,
    /// Merged into `status_data`, when given.
    data: Option<Value>,
    /// Whether `status_info` and `status_data` start over (become `info`
    /// and `data`, an empty object when `None`) instead.
    clear: bool,
}

/// Whether entering `status` (without a reason or an error) clears the
/// last change's `status_info`/`status_data`: a kernel or session on its
/// way to RUNNING no longer says `scheduled` (the reference clears them on
/// PREPARING).
fn starts_over(status: KernelStatus) -> bool {
    matches!(
        status,
        KernelStatus::Preparing
            | KernelStatus::Pulling
            | KernelStatus::Prepared
            | KernelStatus::Creating
            | KernelStatus::Running
    )
}

/// [`starts_over`] for a session's status.
fn session_starts_over(status: SessionStatus) -> bool {
    matches!(
        status,
        SessionStatus::Preparing
            | SessionStatus::Pulling
            | SessionStatus::Prepared
            | SessionStatus::Creating
            | SessionStatus::Running
    )
}

/// The session entered `status`.
async fn set_session_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    status: SessionStatus,
    change: Change<'_>,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let data = change.data.as_ref().map(json).transpose()?;
    manager_events::prepared(
        "UPDATE sessions SET status = $2, status_changed = $3, \
         status_history = status_history || jsonb_build_object($2::text, $4::text), \
         status_info = CASE WHEN $9 THEN $5 ELSE coalesce($5, status_info) END, \
         status_data = CASE WHEN $9 THEN coalesce($6::jsonb, '{}'::jsonb) WHEN $6::jsonb IS NULL THEN status_data \
           ELSE coalesce(status_data, '{}'::jsonb) || $6::jsonb END, \
         terminated_at = CASE WHEN $7 THEN $3 ELSE terminated_at END, position = $8 \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(status.as_str())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(iso(e.recorded_at))
    .bind::<Nullable<Text>, _>(change.info)
    .bind::<Nullable<Text>, _>(data)
    .bind::<Bool, _>(status.is_dead())
    .bind::<BigInt, _>(position(e))
    .bind::<Bool, _>(change.clear)
    .execute(conn)
    .await?;
    Ok(())
}

/// Kernels of session `id` (all of them when `kernels` is `None`) entered
/// `status`.
async fn set_kernels_status(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    kernels: Option<&[Uuid]>,
    status: KernelStatus,
    change: Change<'_>,
    exit_code: Option<i32>,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let data = change.data.as_ref().map(json).transpose()?;
    manager_events::prepared(
        "UPDATE kernels SET status = $3, status_changed = $4, \
         status_history = status_history || jsonb_build_object($3::text, $5::text), \
         status_info = CASE WHEN $11 THEN $6 ELSE coalesce($6, status_info) END, \
         status_data = CASE WHEN $11 THEN coalesce($7::jsonb, '{}'::jsonb) WHEN $7::jsonb IS NULL THEN status_data \
           ELSE coalesce(status_data, '{}'::jsonb) || $7::jsonb END, \
         terminated_at = CASE WHEN $8 THEN $4 ELSE terminated_at END, \
         exit_code = coalesce($9, exit_code), position = $10 \
         WHERE session_id = $1 AND ($2::uuid[] IS NULL OR id = ANY($2::uuid[]))",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Nullable<Array<SqlUuid>>, _>(kernels)
    .bind::<Text, _>(status.as_str())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(iso(e.recorded_at))
    .bind::<Nullable<Text>, _>(change.info)
    .bind::<Nullable<Text>, _>(data)
    .bind::<Bool, _>(status.is_dead())
    .bind::<Nullable<Integer>, _>(exit_code)
    .bind::<BigInt, _>(position(e))
    .bind::<Bool, _>(change.clear)
    .execute(conn)
    .await?;
    Ok(())
}

/// `{"error": {...}}`, as the reference keeps errors in `status_data`.
fn error_data(error: &ErrorInfo) -> Value {
    let mut err = json!({ "src": error.src, "name": error.name, "repr": error.repr });
    if let (Some(agent), Some(obj)) = (&error.agent_id, err.as_object_mut()) {
        obj.insert("agent_id".into(), Value::String(agent.clone()));
    }
    json!({ "error": err })
}

/// Merges `b` into `a` (objects, one level).
fn merged(a: Option<Value>, b: Value) -> Value {
    match (a, b) {
        (Some(Value::Object(mut a)), Value::Object(b)) => {
            a.extend(b);
            Value::Object(a)
        }
        (_, b) => b,
    }
}

#[allow(clippy::too_many_arguments)]
async fn transitioned(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    kernels: &[Uuid],
    status: KernelStatus,
    reason: &str,
    exit_code: Option<i32>,
    error: Option<&ErrorInfo>,
    session_status: Option<SessionStatus>,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let info = Some(reason).filter(|r| !r.is_empty());
    let error = error.map(error_data);
    let clear = info.is_none() && error.is_none() && starts_over(status);
    let mut kernel_data = error.clone();
    if let (KernelStatus::Terminated, Some(code)) = (status, exit_code) {
        kernel_data = Some(merged(
            kernel_data,
            json!({ "kernel": { "exit_code": code } }),
        ));
    }
    set_kernels_status(
        conn,
        id,
        Some(kernels),
        status,
        Change {
            info,
            data: kernel_data,
            clear,
        },
        exit_code,
        e,
    )
    .await?;
    if let Some(s) = session_status {
        let mut data = error;
        if matches!(s, SessionStatus::Terminating | SessionStatus::Terminated) {
            let going = s.as_str().to_lowercase();
            data = Some(merged(data, json!({ "session": { "status": going } })));
        }
        let clear = info.is_none() && data.is_none() && session_starts_over(s);
        set_session_status(conn, id, s, Change { info, data, clear }, e).await?;
    }
    refresh_occupancy(conn, id, e).await
}

#[allow(clippy::too_many_arguments)]
async fn started(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    kernel: Uuid,
    container_id: &str,
    kernel_host: &str,
    repl: (u16, u16),
    service_ports: &[session::ServicePort],
    occupied: &SlotMap,
    session_status: Option<SessionStatus>,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let ports = json(&service_ports)?;
    manager_events::prepared(
        "UPDATE kernels SET status = $3, status_changed = $4, \
         status_history = status_history || jsonb_build_object($3::text, $5::text), \
         container_id = $6, kernel_host = $7, repl_in_port = $8, repl_out_port = $9, \
         service_ports = $10::jsonb, status_info = NULL, status_data = '{}'::jsonb, \
         occupied_slots = CASE WHEN $11::jsonb = '{}'::jsonb THEN occupied_slots ELSE $11::jsonb END, \
         position = $12 WHERE id = $2 AND session_id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(kernel)
    .bind::<Text, _>(KernelStatus::Running.as_str())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(iso(e.recorded_at))
    .bind::<Text, _>(container_id)
    .bind::<Text, _>(kernel_host)
    .bind::<Integer, _>(i32::from(repl.0))
    .bind::<Integer, _>(i32::from(repl.1))
    .bind::<Text, _>(&ports)
    .bind::<Text, _>(json(occupied)?)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    manager_events::prepared(
        "UPDATE sessions SET service_ports = $3::jsonb, position = $4 \
         WHERE id = $1 AND main_kernel_id = $2",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<SqlUuid, _>(kernel)
    .bind::<Text, _>(&ports)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    if let Some(s) = session_status {
        let change = Change {
            info: None,
            data: None,
            clear: session_starts_over(s),
        };
        set_session_status(conn, id, s, change, e).await?;
    }
    refresh_occupancy(conn, id, e).await
}

async fn cancelled(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    reason: &str,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let info = Some(reason).filter(|r| !r.is_empty());
    let change = || Change {
        info,
        data: None,
        clear: false,
    };
    set_session_status(conn, id, SessionStatus::Cancelled, change(), e).await?;
    set_kernels_status(conn, id, None, KernelStatus::Cancelled, change(), None, e).await?;
    refresh_occupancy(conn, id, e).await
}

/// An agent's `KernelsPlaced`: the kernels are on this agent, holding
/// these slots.
async fn placed(
    conn: &mut AsyncPgConnection,
    agent_id: &str,
    session_id: Uuid,
    kernels: &BTreeMap<Uuid, SlotMap>,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let ids: Vec<Uuid> = kernels.keys().copied().collect();
    let slots = kernels
        .values()
        .map(json)
        .collect::<Result<Vec<String>, _>>()?;
    manager_events::prepared(
        "UPDATE kernels k SET agent = $2, occupied_slots = p.slots::jsonb, position = $5 \
         FROM unnest($3::uuid[], $4::text[]) AS p(id, slots) \
         WHERE k.id = p.id AND k.session_id = $1",
    )
    .bind::<SqlUuid, _>(session_id)
    .bind::<Text, _>(agent_id)
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Text>, _>(slots)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    refresh_occupancy(conn, session_id, e).await
}

async fn apply_session(
    conn: &mut AsyncPgConnection,
    e: &RecordedEvent,
    event: SessionEvent,
) -> Result<(), ProjectionError> {
    let id = uuid_of(&e.stream_id, "session:")?;
    match event {
        SessionEvent::SessionEnqueued {
            id: _,
            creation_id,
            owner,
            spec,
        } => enqueue(conn, id, &creation_id, &owner, &spec, e).await,
        SessionEvent::SchedulingDeferred {
            status_info,
            retries,
            failed_predicates,
            msg,
        } => {
            deferred(
                conn,
                id,
                &status_info,
                retries,
                &failed_predicates,
                msg.as_deref(),
                e,
            )
            .await
        }
        SessionEvent::SessionScheduled {
            scaling_group,
            kernels,
        } => scheduled(conn, id, &scaling_group, &kernels, e).await,
        SessionEvent::KernelsTransitioned {
            kernels,
            status,
            reason,
            exit_code,
            error,
            session_status,
        } => {
            transitioned(
                conn,
                id,
                &kernels,
                status,
                &reason,
                exit_code,
                error.as_ref(),
                session_status,
                e,
            )
            .await
        }
        SessionEvent::KernelStarted {
            kernel_id,
            container_id,
            kernel_host,
            repl_in_port,
            repl_out_port,
            service_ports,
            occupied_slots,
            session_status,
        } => {
            started(
                conn,
                id,
                kernel_id,
                &container_id,
                &kernel_host,
                (repl_in_port, repl_out_port),
                &service_ports,
                &occupied_slots,
                session_status,
                e,
            )
            .await
        }
        SessionEvent::SessionCancelled { reason } => cancelled(conn, id, &reason, e).await,
        SessionEvent::SessionResultRecorded { result, .. } => {
            manager_events::prepared(
                "UPDATE sessions SET result = $2, position = $3 WHERE id = $1",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<Text, _>(result.as_str())
            .bind::<BigInt, _>(position(e))
            .execute(conn)
            .await?;
            Ok(())
        }
        SessionEvent::SessionRenamed { name } => {
            manager_events::prepared("UPDATE sessions SET name = $2, position = $3 WHERE id = $1")
                .bind::<SqlUuid, _>(id)
                .bind::<Text, _>(name)
                .bind::<BigInt, _>(position(e))
                .execute(conn)
                .await?;
            Ok(())
        }
    }
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    if e.stream_type == agent::STREAM_TYPE {
        // Of the agents' events only placements matter here; the others
        // are not even decoded.
        if e.event_type != "KernelsPlaced" {
            return Ok(());
        }
        if let Some(AgentEvent::KernelsPlaced {
            session_id,
            kernels,
        }) = decode_if::<AgentEvent>(e, agent::STREAM_TYPE)?
        {
            let agent_id = e.stream_id.strip_prefix("agent:").unwrap_or(&e.stream_id);
            placed(conn, agent_id, session_id, &kernels, e).await?;
        }
        return Ok(());
    }
    if let Some(event) = decode_if::<SessionEvent>(e, session::STREAM_TYPE)? {
        apply_session(conn, e, event).await?;
    }
    Ok(())
}

per_event_projector!(
    SessionsProjector,
    "sessions",
    [
        "sessions",
        "kernels",
        "session_dependencies",
        "agent_occupancy"
    ],
    apply_one
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_holding_condition_is_the_partial_index_predicate() {
        let up = include_str!("../../migrations/2026-11-28-000012_sessions/up.sql");
        assert!(
            up.contains(&format!("WHERE {}", *HOLDING)),
            "the migration's kernels_holding_agent predicate differs from {:?}",
            *HOLDING
        );
    }

    #[test]
    fn slot_maps_add_and_multiply_exactly() {
        let a = r#"{"cpu": "0.5", "mem": "1073741824"}"#;
        let b = r#"{"cpu": "1.25", "cuda.shares": 0.5}"#;
        let sum = sum_slots([a, b]);
        assert_eq!(
            json(&sum).unwrap(),
            r#"{"cpu":"1.75","cuda.shares":"0.5","mem":"1073741824"}"#
        );
        assert!(sum_slots([]).is_empty());
        let per: SlotMap = [
            ("cpu".into(), "0.5".into()),
            ("mem".into(), "Infinity".into()),
        ]
        .into();
        let total = times(&per, 3);
        assert_eq!(total["cpu"], "1.5");
        assert_eq!(total["mem"], "Infinity");
    }

    #[test]
    fn history_times_read_as_the_reference_writes_them() {
        use chrono::TimeZone;
        let t = Utc.timestamp_opt(1_700_000_000, 5_000).unwrap();
        assert_eq!(iso(t), "2023-11-14T22:13:20.000005+00:00");
    }
}
