//! The `images` and `image_aliases` read models: one row per registered
//! image (canonical name and architecture) with its fields, and one per
//! alias naming it.
//!
//! An image's `id` is `md5(<stream id>)::uuid`: derived from the log, so a
//! rebuild gives every image the id it had. A forgotten image's rows are
//! deleted (the reference deletes the row too); registered again, it comes
//! back with the same id. `installed` is not kept here: which agents hold an
//! image is not in the log.

use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::image::{self, ImageEvent, ImageFields};

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector};

/// Projects image streams into `images` and `image_aliases`.
pub struct ImagesProjector;

fn position(e: &RecordedEvent) -> i64 {
    i64::try_from(e.position).unwrap_or(i64::MAX)
}

/// `compute` when the event leaves the kind out.
fn kind(f: &ImageFields) -> &str {
    if f.kind.is_empty() {
        "compute"
    } else {
        &f.kind
    }
}

/// Registered (or registered again after being forgotten): the row is
/// written whole; a repeated registration keeps the first creation time.
async fn register(
    conn: &mut AsyncPgConnection,
    e: &RecordedEvent,
    canonical: &str,
    architecture: &str,
    f: &ImageFields,
) -> Result<(), ProjectionError> {
    manager_events::prepared(
        "INSERT INTO images (id, name, architecture, registry, image, tag, config_digest, \
         size_bytes, type, labels, resources, created_at, modified_at, position) \
         VALUES (md5($1)::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb, $12, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, architecture = excluded.architecture, \
         registry = excluded.registry, image = excluded.image, tag = excluded.tag, \
         config_digest = excluded.config_digest, size_bytes = excluded.size_bytes, \
         type = excluded.type, labels = excluded.labels, resources = excluded.resources, \
         modified_at = excluded.modified_at, position = excluded.position",
    )
    .bind::<Text, _>(&e.stream_id)
    .bind::<Text, _>(canonical)
    .bind::<Text, _>(architecture)
    .bind::<Text, _>(&f.registry)
    .bind::<Text, _>(&f.image)
    .bind::<Text, _>(&f.tag)
    .bind::<Nullable<Text>, _>(f.config_digest.as_deref())
    .bind::<BigInt, _>(i64::try_from(f.size_bytes).unwrap_or(i64::MAX))
    .bind::<Text, _>(kind(f))
    .bind::<Text, _>(json(&f.labels)?)
    .bind::<Text, _>(json(&f.resources)?)
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    Ok(())
}

async fn update(
    conn: &mut AsyncPgConnection,
    e: &RecordedEvent,
    f: &ImageFields,
) -> Result<(), ProjectionError> {
    manager_events::prepared(
        "UPDATE images SET registry = $2, image = $3, tag = $4, config_digest = $5, \
         size_bytes = $6, type = $7, labels = $8::jsonb, resources = $9::jsonb, \
         modified_at = $10, position = $11 WHERE id = md5($1)::uuid",
    )
    .bind::<Text, _>(&e.stream_id)
    .bind::<Text, _>(&f.registry)
    .bind::<Text, _>(&f.image)
    .bind::<Text, _>(&f.tag)
    .bind::<Nullable<Text>, _>(f.config_digest.as_deref())
    .bind::<BigInt, _>(i64::try_from(f.size_bytes).unwrap_or(i64::MAX))
    .bind::<Text, _>(kind(f))
    .bind::<Text, _>(json(&f.labels)?)
    .bind::<Text, _>(json(&f.resources)?)
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(position(e))
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<ImageEvent>(e, image::STREAM_TYPE)? else {
        return Ok(());
    };
    match event {
        ImageEvent::ImageRegistered {
            canonical,
            architecture,
            fields,
        } => register(conn, e, &canonical, &architecture, &fields).await?,
        ImageEvent::ImageUpdated { fields } => update(conn, e, &fields).await?,
        ImageEvent::ImageAliased { alias } => {
            manager_events::prepared(
                "INSERT INTO image_aliases (image_id, alias) VALUES (md5($1)::uuid, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(&e.stream_id)
            .bind::<Text, _>(alias)
            .execute(conn)
            .await?;
        }
        ImageEvent::ImageUnaliased { alias } => {
            manager_events::prepared(
                "DELETE FROM image_aliases WHERE image_id = md5($1)::uuid AND alias = $2",
            )
            .bind::<Text, _>(&e.stream_id)
            .bind::<Text, _>(alias)
            .execute(conn)
            .await?;
        }
        ImageEvent::ImageForgotten => {
            manager_events::prepared("DELETE FROM image_aliases WHERE image_id = md5($1)::uuid")
                .bind::<Text, _>(&e.stream_id)
                .execute(conn)
                .await?;
            manager_events::prepared("DELETE FROM images WHERE id = md5($1)::uuid")
                .bind::<Text, _>(&e.stream_id)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

per_event_projector!(
    ImagesProjector,
    "images",
    ["images", "image_aliases"],
    apply_one
);
