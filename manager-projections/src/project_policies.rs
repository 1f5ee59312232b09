//! The `project_resource_policies` read model.

use diesel::sql_types::{BigInt, Integer, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::project_policy::{self, ProjectPolicyEvent, ProjectPolicyFields};

use crate::runner::ProjectionError;
use crate::support::{decode_if, per_event_projector};

/// Projects project resource policy streams into `project_resource_policies`.
pub struct ProjectPoliciesProjector;

async fn upsert(
    conn: &mut AsyncPgConnection,
    name: &str,
    f: &ProjectPolicyFields,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    manager_events::prepared(
        "INSERT INTO project_resource_policies (name, max_vfolder_count, max_quota_scope_size, \
         max_network_count, created_at, modified_at, position) VALUES ($1, $2, $3, $4, $5, $5, $6) \
         ON CONFLICT (name) DO UPDATE SET max_vfolder_count = excluded.max_vfolder_count, \
         max_quota_scope_size = excluded.max_quota_scope_size, \
         max_network_count = excluded.max_network_count, \
         modified_at = excluded.modified_at, position = excluded.position",
    )
    .bind::<Text, _>(name)
    .bind::<Integer, _>(f.max_vfolder_count)
    .bind::<BigInt, _>(f.max_quota_scope_size)
    .bind::<Integer, _>(f.max_network_count)
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(i64::try_from(e.position).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<ProjectPolicyEvent>(e, project_policy::STREAM_TYPE)? else {
        return Ok(());
    };
    let name = e
        .stream_id
        .strip_prefix("project-policy:")
        .unwrap_or(&e.stream_id);
    match event {
        ProjectPolicyEvent::ProjectPolicyCreated { fields, .. }
        | ProjectPolicyEvent::ProjectPolicyModified { fields } => {
            upsert(conn, name, &fields, e).await?;
        }
        ProjectPolicyEvent::ProjectPolicyDeleted => {
            manager_events::prepared("DELETE FROM project_resource_policies WHERE name = $1")
                .bind::<Text, _>(name)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

per_event_projector!(
    ProjectPoliciesProjector,
    "project_resource_policies",
    ["project_resource_policies"],
    apply_one
);
