//! The `agents` read model: one row per agent that ever made contact, with
//! its status, what it says about itself and its capacity.
//!
//! Rows are never deleted: a decommissioned agent stays listed with status
//! `DECOMMISSIONED`, as lost and terminated ones stay listed in the
//! reference. `occupied_slots` is not written here (the sessions' projector
//! keeps it), and `schedulable` keeps its default until an event toggles it.
//!
//! Status times follow the reference's `mark_agent_terminated` and revive:
//! every status change sets `status_changed` to the event's time; `LOST` and
//! `TERMINATED` also set `lost_at`; a rejoin clears it.

use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::agent::{self, AgentCapacity, AgentDescription, AgentEvent, AgentStatus};

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector};

/// Projects agent streams into `agents`.
pub struct AgentsProjector;

fn position(e: &RecordedEvent) -> i64 {
    i64::try_from(e.position).unwrap_or(i64::MAX)
}

/// First contact. Written as an upsert so that a second registration in the
/// same stream (a re-registration the write side might record) refreshes
/// the row instead of failing the batch; the first contact time is kept.
async fn register(
    conn: &mut AsyncPgConnection,
    id: &str,
    instance: uuid::Uuid,
    d: &AgentDescription,
    c: &AgentCapacity,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    manager_events::prepared(
        "INSERT INTO agents (id, status, status_changed, first_contact, lost_at, region, scaling_group, \
         available_slots, addr, public_host, version, architecture, compute_plugins, \
         auto_terminate_abusing_kernel, instance, position) \
         VALUES ($1, $2, $3, $3, NULL, $4, $5, $6::jsonb, $7, $8, $9, $10, $11::jsonb, $12, $13, $14) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, status_changed = excluded.status_changed, \
         lost_at = NULL, region = excluded.region, scaling_group = excluded.scaling_group, \
         available_slots = excluded.available_slots, addr = excluded.addr, public_host = excluded.public_host, \
         version = excluded.version, architecture = excluded.architecture, \
         compute_plugins = excluded.compute_plugins, \
         auto_terminate_abusing_kernel = excluded.auto_terminate_abusing_kernel, \
         instance = excluded.instance, position = excluded.position",
    )
    .bind::<Text, _>(id)
    .bind::<Text, _>(AgentStatus::Alive.as_str())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<Text, _>(&d.region)
    .bind::<Text, _>(&d.scaling_group)
    .bind::<Text, _>(json(&c.available_slots)?)
    .bind::<Text, _>(&d.addr)
    .bind::<Nullable<Text>, _>(d.public_host.as_deref())
    .bind::<Text, _>(&d.version)
    .bind::<Text, _>(&d.architecture)
    .bind::<Text, _>(json(&d.compute_plugins)?)
    .bind::<Bool, _>(d.auto_terminate_abusing_kernel)
    .bind::<SqlUuid, _>(instance)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    Ok(())
}

/// A status change at the event's time. `lost` says what becomes of
/// `lost_at`: set to the event's time (`Some(true)`), cleared
/// (`Some(false)`), or set only if not set yet (`None`).
async fn set_status(
    conn: &mut AsyncPgConnection,
    id: &str,
    status: AgentStatus,
    lost: Option<bool>,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let lost_at = match lost {
        Some(true) => "$3",
        Some(false) => "NULL",
        None => "coalesce(lost_at, $3)",
    };
    manager_events::prepared(format!(
        "UPDATE agents SET status = $2, status_changed = $3, lost_at = {lost_at}, position = $4 \
         WHERE id = $1"
    ))
    .bind::<Text, _>(id)
    .bind::<Text, _>(status.as_str())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<AgentEvent>(e, agent::STREAM_TYPE)? else {
        return Ok(());
    };
    let id = e.stream_id.strip_prefix("agent:").unwrap_or(&e.stream_id);
    match event {
        AgentEvent::AgentRegistered {
            id: _,
            instance,
            description,
            capacity,
        } => register(conn, id, instance, &description, &capacity, e).await?,
        AgentEvent::AgentCapacityChanged { capacity } => {
            manager_events::prepared(
                "UPDATE agents SET available_slots = $2::jsonb, position = $3 WHERE id = $1",
            )
            .bind::<Text, _>(id)
            .bind::<Text, _>(json(&capacity.available_slots)?)
            .bind::<BigInt, _>(position(e))
            .execute(conn)
            .await?;
        }
        AgentEvent::AgentDescriptionChanged { description: d } => {
            manager_events::prepared(
                "UPDATE agents SET region = $2, scaling_group = $3, addr = $4, public_host = $5, \
                 version = $6, architecture = $7, compute_plugins = $8::jsonb, \
                 auto_terminate_abusing_kernel = $9, position = $10 WHERE id = $1",
            )
            .bind::<Text, _>(id)
            .bind::<Text, _>(&d.region)
            .bind::<Text, _>(&d.scaling_group)
            .bind::<Text, _>(&d.addr)
            .bind::<Nullable<Text>, _>(d.public_host.as_deref())
            .bind::<Text, _>(&d.version)
            .bind::<Text, _>(&d.architecture)
            .bind::<Text, _>(json(&d.compute_plugins)?)
            .bind::<Bool, _>(d.auto_terminate_abusing_kernel)
            .bind::<BigInt, _>(position(e))
            .execute(conn)
            .await?;
        }
        AgentEvent::AgentLost { .. } => {
            set_status(conn, id, AgentStatus::Lost, Some(true), e).await?;
        }
        AgentEvent::AgentStopped { .. } => {
            set_status(conn, id, AgentStatus::Terminated, Some(true), e).await?;
        }
        AgentEvent::AgentDecommissioned { .. } => {
            set_status(conn, id, AgentStatus::Decommissioned, None, e).await?;
        }
        // Occupancy is the sessions' business: their projector keeps
        // `occupied_slots` from the kernels that hold each agent's slots.
        AgentEvent::KernelsPlaced { .. } => {}
        AgentEvent::AgentRejoined { instance, addr, .. } => {
            manager_events::prepared(
                "UPDATE agents SET status = $2, status_changed = $3, lost_at = NULL, addr = $4, \
                 instance = $5, position = $6 WHERE id = $1",
            )
            .bind::<Text, _>(id)
            .bind::<Text, _>(AgentStatus::Alive.as_str())
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<Text, _>(addr)
            .bind::<SqlUuid, _>(instance)
            .bind::<BigInt, _>(position(e))
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

per_event_projector!(AgentsProjector, "agents", ["agents"], apply_one);
