//! The `keypairs` read model: one row per keypair not deleted, with its secret
//! still sealed (opening it needs the key store and the cluster key).

use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::keypair::{self, KeypairEvent};

use crate::runner::ProjectionError;
use crate::support::decode_if;

/// Projects keypair streams into `keypairs`.
pub struct KeypairsProjector;

/// Keypairs created one after another in a batch, inserted in one statement.
#[derive(Default)]
struct Created {
    access_key: Vec<String>,
    user_uuid: Vec<uuid::Uuid>,
    user_email: Vec<String>,
    is_active: Vec<bool>,
    is_admin: Vec<bool>,
    resource_policy: Vec<String>,
    rate_limit: Vec<i64>,
    sealed_secret_key: Vec<String>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
    position: Vec<i64>,
}

impl Created {
    async fn flush(&mut self, conn: &mut AsyncPgConnection) -> Result<(), ProjectionError> {
        if self.access_key.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(self);
        manager_events::prepared(
            "INSERT INTO keypairs (access_key, user_uuid, user_email, is_active, is_admin, resource_policy, \
             rate_limit, sealed_secret_key, created_at, modified_at, position) \
             SELECT k, u, e, a, d, p, r, s, c, c, n FROM unnest($1::text[], $2::uuid[], $3::text[], \
             $4::bool[], $5::bool[], $6::text[], $7::bigint[], $8::text[], $9::timestamptz[], $10::bigint[]) \
             AS t(k, u, e, a, d, p, r, s, c, n)",
        )
        .bind::<Array<Text>, _>(rows.access_key)
        .bind::<Array<SqlUuid>, _>(rows.user_uuid)
        .bind::<Array<Text>, _>(rows.user_email)
        .bind::<Array<Bool>, _>(rows.is_active)
        .bind::<Array<Bool>, _>(rows.is_admin)
        .bind::<Array<Text>, _>(rows.resource_policy)
        .bind::<Array<BigInt>, _>(rows.rate_limit)
        .bind::<Array<Text>, _>(rows.sealed_secret_key)
        .bind::<Array<Timestamptz>, _>(rows.created_at)
        .bind::<Array<BigInt>, _>(rows.position)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Applies a batch: runs of creations become one insert each; any other
/// keypair event first writes the creations before it (order is kept).
async fn apply_batch(
    conn: &mut AsyncPgConnection,
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let mut created = Created::default();
    for e in events {
        let Some(event) = decode_if::<KeypairEvent>(e, keypair::STREAM_TYPE)? else {
            continue;
        };
        match event {
            KeypairEvent::KeypairCreated {
                access_key,
                fields: f,
                sealed_secret_key,
            } => {
                created.access_key.push(access_key);
                created.user_uuid.push(f.user_uuid);
                created.user_email.push(f.user_email);
                created.is_active.push(f.is_active);
                created.is_admin.push(f.is_admin);
                created.resource_policy.push(f.resource_policy);
                created.rate_limit.push(f.rate_limit);
                created.sealed_secret_key.push(sealed_secret_key);
                created.created_at.push(e.recorded_at);
                created
                    .position
                    .push(i64::try_from(e.position).unwrap_or(i64::MAX));
            }
            other => {
                created.flush(conn).await?;
                apply_change(conn, e, other).await?;
            }
        }
    }
    created.flush(conn).await
}

async fn apply_change(
    conn: &mut AsyncPgConnection,
    e: &RecordedEvent,
    event: KeypairEvent,
) -> Result<(), ProjectionError> {
    let ak = e.stream_id.strip_prefix("keypair:").unwrap_or(&e.stream_id);
    let position = i64::try_from(e.position).unwrap_or(i64::MAX);
    match event {
        KeypairEvent::KeypairCreated { .. } => {}
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

impl crate::runner::Projector for KeypairsProjector {
    fn name(&self) -> &'static str {
        "keypairs"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["keypairs"]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        events: &'a [RecordedEvent],
    ) -> futures::future::BoxFuture<'a, Result<(), ProjectionError>> {
        futures::FutureExt::boxed(apply_batch(conn, events))
    }
}
