//! The `keypairs` read model: one row per keypair not deleted, with its secret
//! still sealed (opening it needs the key store and the cluster key).

use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::keypair::{self, KeypairEvent};

use crate::runner::ProjectionError;
use crate::support::{decode_if, per_event_projector};

/// Projects keypair streams into `keypairs`.
pub struct KeypairsProjector;

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<KeypairEvent>(e, keypair::STREAM_TYPE)? else {
        return Ok(());
    };
    let ak = e.stream_id.strip_prefix("keypair:").unwrap_or(&e.stream_id);
    let position = i64::try_from(e.position).unwrap_or(i64::MAX);
    match event {
        KeypairEvent::KeypairCreated {
            access_key,
            fields: f,
            sealed_secret_key,
        } => {
            manager_events::prepared(
                "INSERT INTO keypairs (access_key, user_uuid, user_email, is_active, is_admin, resource_policy, \
                 rate_limit, sealed_secret_key, created_at, modified_at, position) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
            )
            .bind::<Text, _>(access_key)
            .bind::<SqlUuid, _>(f.user_uuid)
            .bind::<Text, _>(f.user_email)
            .bind::<Bool, _>(f.is_active)
            .bind::<Bool, _>(f.is_admin)
            .bind::<Text, _>(f.resource_policy)
            .bind::<BigInt, _>(f.rate_limit)
            .bind::<Text, _>(sealed_secret_key)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        KeypairEvent::KeypairModified(p) => {
            manager_events::prepared(
                "UPDATE keypairs SET is_active = coalesce($2, is_active), is_admin = coalesce($3, is_admin), \
                 resource_policy = coalesce($4, resource_policy), rate_limit = coalesce($5, rate_limit), \
                 modified_at = $6, position = $7 WHERE access_key = $1",
            )
            .bind::<Text, _>(ak)
            .bind::<Nullable<Bool>, _>(p.is_active)
            .bind::<Nullable<Bool>, _>(p.is_admin)
            .bind::<Nullable<Text>, _>(p.resource_policy)
            .bind::<Nullable<BigInt>, _>(p.rate_limit)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        KeypairEvent::KeypairDeleted => {
            manager_events::prepared("DELETE FROM keypairs WHERE access_key = $1")
                .bind::<Text, _>(ak)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

per_event_projector!(KeypairsProjector, "keypairs", ["keypairs"], apply_one);
