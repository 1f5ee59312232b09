//! The `groups` and `association_groups_users` read models: projects and
//! their members, named as in the reference.

use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::project::{self, ProjectEvent};
use uuid::Uuid;

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector, uuid_of};

/// Projects project streams into `groups` and `association_groups_users`.
pub struct ProjectsProjector;

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<ProjectEvent>(e, project::STREAM_TYPE)? else {
        return Ok(());
    };
    let id: Uuid = uuid_of(&e.stream_id, "project:")?;
    let position = i64::try_from(e.position).unwrap_or(i64::MAX);
    match event {
        ProjectEvent::ProjectCreated { fields: f, .. } => {
            manager_events::prepared(
                "INSERT INTO groups (id, name, domain_name, description, is_active, total_resource_slots, \
                 allowed_vfolder_hosts, integration_id, resource_policy, created_at, modified_at, position) \
                 VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $10, $11)",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<Text, _>(f.name)
            .bind::<Text, _>(f.domain_name)
            .bind::<Text, _>(f.description)
            .bind::<Bool, _>(f.is_active)
            .bind::<Text, _>(json(&f.total_resource_slots)?)
            .bind::<Text, _>(json(&f.allowed_vfolder_hosts)?)
            .bind::<Nullable<Text>, _>(f.integration_id)
            .bind::<Text, _>(f.resource_policy)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        ProjectEvent::ProjectModified(p) => {
            manager_events::prepared(
                "UPDATE groups SET description = coalesce($2, description), is_active = coalesce($3, is_active), \
                 total_resource_slots = coalesce($4::jsonb, total_resource_slots), \
                 allowed_vfolder_hosts = coalesce($5::jsonb, allowed_vfolder_hosts), \
                 integration_id = CASE WHEN $6::text IS NULL THEN integration_id ELSE nullif($6::text, '') END, \
                 resource_policy = coalesce($7, resource_policy), modified_at = $8, position = $9 WHERE id = $1",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<Nullable<Text>, _>(p.description)
            .bind::<Nullable<Bool>, _>(p.is_active)
            .bind::<Nullable<Text>, _>(p.total_resource_slots.as_ref().map(json).transpose()?)
            .bind::<Nullable<Text>, _>(p.allowed_vfolder_hosts.as_ref().map(json).transpose()?)
            .bind::<Nullable<Text>, _>(p.integration_id)
            .bind::<Nullable<Text>, _>(p.resource_policy)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        ProjectEvent::ProjectDeactivated => {
            manager_events::prepared("UPDATE groups SET is_active = false, modified_at = $2, position = $3 WHERE id = $1")
                .bind::<SqlUuid, _>(id)
                .bind::<Timestamptz, _>(e.recorded_at)
                .bind::<BigInt, _>(position)
                .execute(conn)
                .await?;
        }
        ProjectEvent::ProjectPurged => {
            manager_events::prepared("DELETE FROM association_groups_users WHERE group_id = $1")
                .bind::<SqlUuid, _>(id)
                .execute(conn)
                .await?;
            manager_events::prepared("DELETE FROM groups WHERE id = $1")
                .bind::<SqlUuid, _>(id)
                .execute(conn)
                .await?;
        }
        ProjectEvent::ProjectMemberAdded { user_uuid } => {
            manager_events::prepared(
                "INSERT INTO association_groups_users (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<SqlUuid, _>(user_uuid)
            .execute(conn)
            .await?;
        }
        ProjectEvent::ProjectMemberRemoved { user_uuid } => {
            manager_events::prepared(
                "DELETE FROM association_groups_users WHERE group_id = $1 AND user_id = $2",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<SqlUuid, _>(user_uuid)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

per_event_projector!(
    ProjectsProjector,
    "projects",
    ["groups", "association_groups_users"],
    apply_one
);
