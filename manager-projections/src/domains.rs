//! The `domains` read model: one row per live domain, as GraphQL `domain` and
//! `domains` serve it.

use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::domain::{self, DomainEvent};

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector};

/// Projects domain streams into `domains`.
pub struct DomainsProjector;

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<DomainEvent>(e, domain::STREAM_TYPE)? else {
        return Ok(());
    };
    let name = e.stream_id.strip_prefix("domain:").unwrap_or(&e.stream_id);
    let position = i64::try_from(e.position).unwrap_or(i64::MAX);
    match event {
        DomainEvent::DomainCreated {
            name: created,
            fields,
        } => {
            manager_events::prepared(
                "INSERT INTO domains (name, description, is_active, total_resource_slots, \
                 allowed_vfolder_hosts, allowed_docker_registries, integration_id, created_at, \
                 modified_at, position) \
                 VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7, $8, $8, $9)",
            )
            .bind::<Text, _>(created)
            .bind::<Text, _>(fields.description)
            .bind::<Bool, _>(fields.is_active)
            .bind::<Text, _>(json(&fields.total_resource_slots)?)
            .bind::<Text, _>(json(&fields.allowed_vfolder_hosts)?)
            .bind::<Text, _>(json(&fields.allowed_docker_registries)?)
            .bind::<Nullable<Text>, _>(fields.integration_id)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        DomainEvent::DomainModified(patch) => {
            manager_events::prepared(
                "UPDATE domains SET \
                 description = coalesce($2, description), \
                 is_active = coalesce($3, is_active), \
                 total_resource_slots = coalesce($4::jsonb, total_resource_slots), \
                 allowed_vfolder_hosts = coalesce($5::jsonb, allowed_vfolder_hosts), \
                 allowed_docker_registries = coalesce($6::jsonb, allowed_docker_registries), \
                 integration_id = CASE WHEN $7::text IS NULL THEN integration_id \
                                       ELSE nullif($7::text, '') END, \
                 modified_at = $8, position = $9 \
                 WHERE name = $1",
            )
            .bind::<Text, _>(name)
            .bind::<Nullable<Text>, _>(patch.description)
            .bind::<Nullable<Bool>, _>(patch.is_active)
            .bind::<Nullable<Text>, _>(patch.total_resource_slots.as_ref().map(json).transpose()?)
            .bind::<Nullable<Text>, _>(patch.allowed_vfolder_hosts.as_ref().map(json).transpose()?)
            .bind::<Nullable<Text>, _>(
                patch
                    .allowed_docker_registries
                    .as_ref()
                    .map(json)
                    .transpose()?,
            )
            .bind::<Nullable<Text>, _>(patch.integration_id)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        DomainEvent::DomainDeactivated => {
            manager_events::prepared("UPDATE domains SET is_active = false, modified_at = $2, position = $3 WHERE name = $1")
                .bind::<Text, _>(name)
                .bind::<Timestamptz, _>(e.recorded_at)
                .bind::<BigInt, _>(position)
                .execute(conn)
                .await?;
        }
        DomainEvent::DomainPurged => {
            manager_events::prepared("DELETE FROM domains WHERE name = $1")
                .bind::<Text, _>(name)
                .execute(conn)
                .await?;
        }
        DomainEvent::DomainMemberJoined { .. } | DomainEvent::DomainMemberLeft { .. } => {}
    }
    Ok(())
}

per_event_projector!(DomainsProjector, "domains", ["domains"], apply_one);
