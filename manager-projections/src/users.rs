//! The `users` read model: one row per user that was not purged.

use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::user::{self, UserEvent};
use uuid::Uuid;

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector, uuid_of};

/// Projects user streams into `users`.
pub struct UsersProjector;

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<UserEvent>(e, user::STREAM_TYPE)? else {
        return Ok(());
    };
    let id: Uuid = uuid_of(&e.stream_id, "user:")?;
    let position = i64::try_from(e.position).unwrap_or(i64::MAX);
    match event {
        UserEvent::UserCreated {
            uuid,
            fields: f,
            password_hash,
        } => {
            manager_events::prepared(
                "INSERT INTO users (uuid, username, email, password_hash, need_password_change, full_name, \
                 description, status, role, domain_name, resource_policy, allowed_client_ip, totp_activated, \
                 sudo_session_enabled, created_at, modified_at, position) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14, $15, $15, $16)",
            )
            .bind::<SqlUuid, _>(uuid)
            .bind::<Text, _>(f.username)
            .bind::<Text, _>(f.email)
            .bind::<Text, _>(password_hash)
            .bind::<Bool, _>(f.need_password_change)
            .bind::<Text, _>(f.full_name)
            .bind::<Text, _>(f.description)
            .bind::<Text, _>(f.status.as_str())
            .bind::<Text, _>(f.role.as_str())
            .bind::<Text, _>(f.domain_name)
            .bind::<Text, _>(f.resource_policy)
            .bind::<Nullable<Text>, _>(f.allowed_client_ip.as_ref().map(json).transpose()?)
            .bind::<Bool, _>(f.totp_activated)
            .bind::<Bool, _>(f.sudo_session_enabled)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        UserEvent::UserModified(p) => {
            // An empty list means "allowed from anywhere", stored as NULL.
            let ips = match &p.allowed_client_ip {
                None => None,
                Some(v) if v.is_empty() => Some("null".to_owned()),
                Some(v) => Some(json(v)?),
            };
            manager_events::prepared(
                "UPDATE users SET \
                 full_name = coalesce($2, full_name), description = coalesce($3, description), \
                 need_password_change = coalesce($4, need_password_change), status = coalesce($5, status), \
                 role = coalesce($6, role), resource_policy = coalesce($7, resource_policy), \
                 allowed_client_ip = CASE WHEN $8::text IS NULL THEN allowed_client_ip \
                                          ELSE nullif($8::jsonb, 'null'::jsonb) END, \
                 sudo_session_enabled = coalesce($9, sudo_session_enabled), \
                 modified_at = $10, position = $11 WHERE uuid = $1",
            )
            .bind::<SqlUuid, _>(id)
            .bind::<Nullable<Text>, _>(p.full_name)
            .bind::<Nullable<Text>, _>(p.description)
            .bind::<Nullable<Bool>, _>(p.need_password_change)
            .bind::<Nullable<Text>, _>(p.status.map(|s| s.as_str()))
            .bind::<Nullable<Text>, _>(p.role.map(|r| r.as_str()))
            .bind::<Nullable<Text>, _>(p.resource_policy)
            .bind::<Nullable<Text>, _>(ips)
            .bind::<Nullable<Bool>, _>(p.sudo_session_enabled)
            .bind::<Timestamptz, _>(e.recorded_at)
            .bind::<BigInt, _>(position)
            .execute(conn)
            .await?;
        }
        UserEvent::UserPasswordChanged { password_hash } => {
            manager_events::prepared("UPDATE users SET password_hash = $2, modified_at = $3, position = $4 WHERE uuid = $1")
                .bind::<SqlUuid, _>(id)
                .bind::<Text, _>(password_hash)
                .bind::<Timestamptz, _>(e.recorded_at)
                .bind::<BigInt, _>(position)
                .execute(conn)
                .await?;
        }
        UserEvent::UserMainAccessKeySet { access_key } => {
            manager_events::prepared("UPDATE users SET main_access_key = $2, modified_at = $3, position = $4 WHERE uuid = $1")
                .bind::<SqlUuid, _>(id)
                .bind::<Nullable<Text>, _>(access_key)
                .bind::<Timestamptz, _>(e.recorded_at)
                .bind::<BigInt, _>(position)
                .execute(conn)
                .await?;
        }
        // Which keypairs a user has is the keypairs read model's business.
        UserEvent::UserKeypairAdded { .. } | UserEvent::UserKeypairRemoved { .. } => {}
        UserEvent::UserDeleted => {
            manager_events::prepared("UPDATE users SET status = 'deleted', modified_at = $2, position = $3 WHERE uuid = $1")
                .bind::<SqlUuid, _>(id)
                .bind::<Timestamptz, _>(e.recorded_at)
                .bind::<BigInt, _>(position)
                .execute(conn)
                .await?;
        }
        UserEvent::UserPurged => {
            manager_events::prepared("DELETE FROM users WHERE uuid = $1")
                .bind::<SqlUuid, _>(id)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

per_event_projector!(UsersProjector, "users", ["users"], apply_one);
