//! The `resource_presets` read model.

use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::resource_preset::{self, ResourcePresetEvent, ResourcePresetFields};

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector};

/// Projects resource preset streams into `resource_presets`.
pub struct ResourcePresetsProjector;

async fn upsert(
    conn: &mut AsyncPgConnection,
    name: &str,
    f: &ResourcePresetFields,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    manager_events::prepared(
        "INSERT INTO resource_presets (name, resource_slots, shared_memory, scaling_group_name, \
         created_at, modified_at, position) VALUES ($1, $2::jsonb, $3, $4, $5, $5, $6) \
         ON CONFLICT (name) DO UPDATE SET resource_slots = excluded.resource_slots, \
         shared_memory = excluded.shared_memory, scaling_group_name = excluded.scaling_group_name, \
         modified_at = excluded.modified_at, position = excluded.position",
    )
    .bind::<Text, _>(name)
    .bind::<Text, _>(json(&f.resource_slots)?)
    .bind::<Nullable<BigInt>, _>(f.shared_memory)
    .bind::<Nullable<Text>, _>(f.scaling_group_name.as_deref())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(i64::try_from(e.position).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<ResourcePresetEvent>(e, resource_preset::STREAM_TYPE)? else {
        return Ok(());
    };
    let name = e
        .stream_id
        .strip_prefix("resource-preset:")
        .unwrap_or(&e.stream_id);
    match event {
        ResourcePresetEvent::ResourcePresetCreated { fields, .. }
        | ResourcePresetEvent::ResourcePresetModified { fields } => {
            upsert(conn, name, &fields, e).await?;
        }
        ResourcePresetEvent::ResourcePresetDeleted => {
            manager_events::prepared("DELETE FROM resource_presets WHERE name = $1")
                .bind::<Text, _>(name)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

per_event_projector!(
    ResourcePresetsProjector,
    "resource_presets",
    ["resource_presets"],
    apply_one
);
