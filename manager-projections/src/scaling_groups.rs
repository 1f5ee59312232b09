//! The `scaling_groups` read model and its association tables
//! (`sgroups_for_domains`, `sgroups_for_groups`, `sgroups_for_keypairs`).

use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use manager_events::RecordedEvent;
use manager_events::scaling_group::{
    self, ScalingGroupEvent, ScalingGroupFields, ScalingGroupTarget,
};

use crate::runner::ProjectionError;
use crate::support::{decode_if, json, per_event_projector};

/// Projects scaling group streams.
pub struct ScalingGroupsProjector;

async fn upsert(
    conn: &mut AsyncPgConnection,
    name: &str,
    f: &ScalingGroupFields,
    e: &RecordedEvent,
) -> Result<(), ProjectionError> {
    manager_events::prepared(
        "INSERT INTO scaling_groups (name, description, is_active, is_public, driver, driver_opts, scheduler, \
         scheduler_opts, use_host_network, wsproxy_addr, created_at, modified_at, position) \
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8::jsonb, $9, $10, $11, $11, $12) \
         ON CONFLICT (name) DO UPDATE SET description = excluded.description, is_active = excluded.is_active, \
         is_public = excluded.is_public, driver = excluded.driver, driver_opts = excluded.driver_opts, \
         scheduler = excluded.scheduler, scheduler_opts = excluded.scheduler_opts, \
         use_host_network = excluded.use_host_network, wsproxy_addr = excluded.wsproxy_addr, \
         modified_at = excluded.modified_at, position = excluded.position",
    )
    .bind::<Text, _>(name)
    .bind::<Text, _>(&f.description)
    .bind::<Bool, _>(f.is_active)
    .bind::<Bool, _>(f.is_public)
    .bind::<Text, _>(&f.driver)
    .bind::<Text, _>(json(&f.driver_opts)?)
    .bind::<Text, _>(&f.scheduler)
    .bind::<Text, _>(json(&f.scheduler_opts)?)
    .bind::<Bool, _>(f.use_host_network)
    .bind::<Nullable<Text>, _>(f.wsproxy_addr.as_deref())
    .bind::<Timestamptz, _>(e.recorded_at)
    .bind::<BigInt, _>(i64::try_from(e.position).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

async fn associate(
    conn: &mut AsyncPgConnection,
    name: &str,
    target: &ScalingGroupTarget,
    add: bool,
) -> Result<(), ProjectionError> {
    use ScalingGroupTarget::{Domain, Keypair, Project};
    let sql = match (target, add) {
        (Domain(_), true) => {
            "INSERT INTO sgroups_for_domains (scaling_group, domain) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        }
        (Domain(_), false) => {
            "DELETE FROM sgroups_for_domains WHERE scaling_group = $1 AND domain = $2"
        }
        (Keypair(_), true) => {
            "INSERT INTO sgroups_for_keypairs (scaling_group, access_key) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        }
        (Keypair(_), false) => {
            "DELETE FROM sgroups_for_keypairs WHERE scaling_group = $1 AND access_key = $2"
        }
        (Project(_), true) => {
            "INSERT INTO sgroups_for_groups (scaling_group, \"group\") VALUES ($1, $2) ON CONFLICT DO NOTHING"
        }
        (Project(_), false) => {
            "DELETE FROM sgroups_for_groups WHERE scaling_group = $1 AND \"group\" = $2"
        }
    };
    let query = manager_events::prepared(sql).bind::<Text, _>(name.to_owned());
    let query = match target {
        Domain(d) | Keypair(d) => query.bind::<Text, _>(d.clone()),
        Project(p) => query.bind::<SqlUuid, _>(*p),
    };
    query.execute(conn).await?;
    Ok(())
}

async fn apply_one(conn: &mut AsyncPgConnection, e: &RecordedEvent) -> Result<(), ProjectionError> {
    let Some(event) = decode_if::<ScalingGroupEvent>(e, scaling_group::STREAM_TYPE)? else {
        return Ok(());
    };
    let name = e
        .stream_id
        .strip_prefix("scaling-group:")
        .unwrap_or(&e.stream_id);
    match event {
        ScalingGroupEvent::ScalingGroupCreated { fields, .. }
        | ScalingGroupEvent::ScalingGroupModified { fields } => {
            upsert(conn, name, &fields, e).await?;
        }
        ScalingGroupEvent::ScalingGroupDeleted => {
            manager_events::prepared("DELETE FROM scaling_groups WHERE name = $1")
                .bind::<Text, _>(name)
                .execute(conn)
                .await?;
        }
        ScalingGroupEvent::ScalingGroupAssociated { target } => {
            associate(conn, name, &target, true).await?
        }
        ScalingGroupEvent::ScalingGroupDisassociated { target } => {
            associate(conn, name, &target, false).await?
        }
    }
    Ok(())
}

per_event_projector!(
    ScalingGroupsProjector,
    "scaling_groups",
    [
        "scaling_groups",
        "sgroups_for_domains",
        "sgroups_for_groups",
        "sgroups_for_keypairs"
    ],
    apply_one
);
