//! The `keypair_resource_policies` read model.

use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::policy::{
    self, DefaultForUnspecified, KeypairPolicyEvent, KeypairPolicyFields,
};

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector};

/// Projects keypair resource policy streams into `keypair_resource_policies`.
pub struct KeypairPoliciesProjector;

async fn upsert(
    conn: &mut AsyncPgConnection,
    name: &str,
    f: &KeypairPolicyFields,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    let default = match f.default_for_unspecified {
        DefaultForUnspecified::Limited => "LIMITED",
        DefaultForUnspecified::Unlimited => "UNLIMITED",
    };
    manager_events::prepared(
        "INSERT INTO keypair_resource_policies (name, default_for_unspecified, total_resource_slots, \
         max_session_lifetime, max_concurrent_sessions, max_concurrent_sftp_sessions, \
         max_containers_per_session, idle_timeout, allowed_vfolder_hosts, max_vfolder_count, \
         max_vfolder_size, max_quota_scope_size, created_at, modified_at, position) \
         VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9::jsonb, $10, $11, $12, $13, $13, $14) \
         ON CONFLICT (name) DO UPDATE SET default_for_unspecified = excluded.default_for_unspecified, \
         total_resource_slots = excluded.total_resource_slots, max_session_lifetime = excluded.max_session_lifetime, \
         max_concurrent_sessions = excluded.max_concurrent_sessions, \
         max_concurrent_sftp_sessions = excluded.max_concurrent_sftp_sessions, \
         max_containers_per_session = excluded.max_containers_per_session, idle_timeout = excluded.idle_timeout, \
         allowed_vfolder_hosts = excluded.allowed_vfolder_hosts, max_vfolder_count = excluded.max_vfolder_count, \
         max_vfolder_size = excluded.max_vfolder_size, max_quota_scope_size = excluded.max_quota_scope_size, \
         modified_at = excluded.modified_at, position = excluded.position",
    )
    .bind::<Text, _>(name)
    .bind::<Text, _>(default)
    .bind::<Text, _>(json(&f.total_resource_slots)?)
    .bind::<BigInt, _>(f.max_session_lifetime)
    .bind::<BigInt, _>(f.max_concurrent_sessions)
    .bind::<BigInt, _>(f.max_concurrent_sftp_sessions)
    .bind::<BigInt, _>(f.max_containers_per_session)
    .bind::<BigInt, _>(f.idle_timeout)
    .bind::<Text, _>(json(&f.allowed_vfolder_hosts)?)
    .bind::<BigInt, _>(f.max_vfolder_count)
    .bind::<BigInt, _>(f.max_vfolder_size)
    .bind::<BigInt, _>(f.max_quota_scope_size)
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(i64::try_from(e.position).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<KeypairPolicyEvent>(e, policy::STREAM_TYPE)? else {
        return Ok(());
    };
    let name = e
        .stream_id
        .strip_prefix("keypair-policy:")
        .unwrap_or(&e.stream_id);
    match event {
        KeypairPolicyEvent::KeypairPolicyCreated { fields, .. }
        | KeypairPolicyEvent::KeypairPolicyModified { fields } => {
            upsert(conn, name, &fields, e).await?;
        }
        KeypairPolicyEvent::KeypairPolicyDeleted => {
            manager_events::prepared("DELETE FROM keypair_resource_policies WHERE name = $1")
                .bind::<Text, _>(name)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

per_event_projector!(
    KeypairPoliciesProjector,
    "keypair_resource_policies",
    ["keypair_resource_policies"],
    apply_one
);
