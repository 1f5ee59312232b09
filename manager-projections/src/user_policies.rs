//! The `user_resource_policies` read model.

use diesel::sql_types::{BigInt, Integer, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::user_policy::{self, UserPolicyEvent, UserPolicyFields};

use crate::runner::ProjectionError;
use crate::support::{decode_if, per_event_projector};

/// Projects user resource policy streams into `user_resource_policies`.
pub struct UserPoliciesProjector;

async fn upsert(
    conn: &mut AsyncPgConnection,
    name: &str,
    f: &UserPolicyFields,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    manager_events::prepared(
        "INSERT INTO user_resource_policies (name, max_vfolder_count, max_quota_scope_size, \
         max_session_count_per_model_session, max_customized_image_count, created_at, modified_at, \
         position) VALUES ($1, $2, $3, $4, $5, $6, $6, $7) \
         ON CONFLICT (name) DO UPDATE SET max_vfolder_count = excluded.max_vfolder_count, \
         max_quota_scope_size = excluded.max_quota_scope_size, \
         max_session_count_per_model_session = excluded.max_session_count_per_model_session, \
         max_customized_image_count = excluded.max_customized_image_count, \
         modified_at = excluded.modified_at, position = excluded.position",
    )
    .bind::<Text, _>(name)
    .bind::<Integer, _>(f.max_vfolder_count)
    .bind::<BigInt, _>(f.max_quota_scope_size)
    .bind::<Integer, _>(f.max_session_count_per_model_session)
    .bind::<Integer, _>(f.max_customized_image_count)
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(i64::try_from(e.position).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<UserPolicyEvent>(e, user_policy::STREAM_TYPE)? else {
        return Ok(());
    };
    let name = e
        .stream_id
        .strip_prefix("user-policy:")
        .unwrap_or(&e.stream_id);
    match event {
        UserPolicyEvent::UserPolicyCreated { fields, .. }
        | UserPolicyEvent::UserPolicyModified { fields } => {
            upsert(conn, name, &fields, e).await?;
        }
        UserPolicyEvent::UserPolicyDeleted => {
            manager_events::prepared("DELETE FROM user_resource_policies WHERE name = $1")
                .bind::<Text, _>(name)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

per_event_projector!(
    UserPoliciesProjector,
    "user_resource_policies",
    ["user_resource_policies"],
    apply_one
);
