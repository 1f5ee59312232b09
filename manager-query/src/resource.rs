//! REST reads of resource presets (prefix `/resource`).
//!
//! - `GET /resource/presets`: every preset, its slots filled out to the
//!   known slots.
//! - `POST /resource/check-presets`: the caller's limits, usage and what
//!   remains — per keypair, project and domain, and per scaling group the
//!   caller may use — and which presets could be allocated now.
//!
//! Slot maps always hold every known slot ([`KNOWN_SLOTS`]) as decimal
//! strings, unlimited as `"Infinity"`; slots the cluster does not know are
//! dropped, from usage as from limits. Arithmetic is exact ([`SlotAmount`]).
//! Both endpoints read only read models.
//!
//! # Where the numbers come from
//! - Keypair, project and domain usage (`occupancy`): the sum of the
//!   `occupying_slots` of the scope's sessions whose status holds quota
//!   ([`SessionStatus::holds_quota`]: SCHEDULED to RUNNING, RESTARTING,
//!   RUNNING_DEGRADED; not PENDING, TERMINATING or ended) — the rule the
//!   scheduler's quota predicates apply, so what remains here is what the
//!   scheduler would still admit.
//! - A scaling group's `using` (`scaling_group_usage`): the
//!   `occupied_slots` of the caller's (its user's) kernels in that group
//!   that hold their agent's slots ([`KernelStatus::holds_agent_slots`]).
//! - A scaling group's `remaining` (`alive_agents_free_slots`): over its
//!   ALIVE agents, `available_slots` less what their kernels hold
//!   (`agent_occupancy`), capped by the keypair's remaining.
//! - A preset is allocatable when one ALIVE agent of an allowed group has
//!   its slots free and the keypair's remaining covers it.
//!
//! Being a read sent as a POST, the endpoint waits (bounded) for the read
//! models to show the caller's last write itself, as GET reads do in the
//! middleware ([`crate::freshness`]): a session the caller has just destroyed
//! (TERMINATING) no longer counts against its quotas, though its kernels
//! hold their agents' slots until they are gone.

use std::collections::BTreeMap;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Bool, Nullable, Text};
use manager_events::agent::AgentStatus;
use manager_events::auth::AuthContext;
use manager_events::session::{KernelStatus, SessionStatus};
use manager_events::slots::{KNOWN_SLOTS, SlotAmount, known_slot_names};
use manager_events::{PgPool, Problem, ProblemKind};
use serde_json::{Map, Value, json};

use crate::freshness::{Freshness, LastWrite, STALE_HEADER};

/// Slot name → amount.
pub type Slots = BTreeMap<String, SlotAmount>;

/// Every known slot at `amount`.
fn filled(amount: SlotAmount) -> Slots {
    known_slot_names()
        .map(|slot| (slot.to_owned(), amount))
        .collect()
}

/// Reads a stored amount. Amounts were validated when they were written;
/// older quotas may still be in a float notation (`1e3`), which is read as
/// the nearest millionth.
fn stored_amount(text: &str) -> Option<SlotAmount> {
    SlotAmount::parse(text).ok().or_else(|| {
        let v = text.trim().parse::<f64>().ok().filter(|v| v.is_finite())?;
        // Rounded to millionths; `as` saturates, and quotas are far below.
        Some(SlotAmount::Finite((v * 1e6).round() as i128))
    })
}

/// A stored slot map (JSON object of decimal strings or numbers) limited to
/// the known slots; a known slot it lacks takes `fill`. This is the
/// reference's `ResourceSlot.from_policy`: `fill` is 0 for a `LIMITED`
/// keypair policy and unlimited for an `UNLIMITED` one, for projects and for
/// domains.
fn limits(stored: &str, fill: SlotAmount) -> Slots {
    let given: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
    known_slot_names()
        .map(|slot| {
            let amount = match given.get(slot) {
                Some(Value::String(s)) => stored_amount(s),
                Some(Value::Number(n)) => stored_amount(&n.to_string()),
                _ => None,
            };
            (slot.to_owned(), amount.unwrap_or(fill))
        })
        .collect()
}

/// `a + b`, slot by slot (over `a`'s slots).
fn add(a: &mut Slots, b: &Slots) {
    for (k, v) in a.iter_mut() {
        *v = v.plus(b.get(k).copied().unwrap_or(SlotAmount::ZERO));
    }
}

/// `a - b`, slot by slot (over `a`'s slots; a slot `b` lacks counts as 0).
fn minus(a: &Slots, b: &Slots) -> Slots {
    a.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.minus(b.get(k).copied().unwrap_or(SlotAmount::ZERO)),
            )
        })
        .collect()
}

/// Whether `have` covers `want` in every slot of `want`.
fn covers(have: &Slots, want: &Slots) -> bool {
    want.iter()
        .all(|(k, w)| have.get(k).copied().unwrap_or(SlotAmount::ZERO) >= *w)
}

/// A slot map as the reference writes it: slot → decimal string.
fn to_json(slots: &Slots) -> Value {
    Value::Object(
        slots
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::new(ProblemKind::ServiceUnavailable).msg(e.to_string())
}

type Conn = diesel_async::pooled_connection::deadpool::Object<diesel_async::AsyncPgConnection>;

async fn connection(pool: &PgPool) -> Result<Conn, Problem> {
    pool.get().await.map_err(unavailable)
}

#[derive(QueryableByName)]
struct PresetRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    resource_slots: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::BigInt>)]
    shared_memory: Option<i64>,
}

/// A preset as both endpoints show it.
struct Preset {
    name: String,
    /// Filled out to the known slots (missing: 0); other slots dropped.
    slots: Slots,
    shared_memory: Option<i64>,
}

async fn presets(conn: &mut Conn) -> Result<Vec<Preset>, Problem> {
    use diesel_async::RunQueryDsl;
    let rows: Vec<PresetRow> = manager_events::prepared(
        "SELECT name, resource_slots::text AS resource_slots, shared_memory \
         FROM resource_presets ORDER BY name",
    )
    .load(conn)
    .await
    .map_err(unavailable)?;
    Ok(rows
        .into_iter()
        .map(|r| Preset {
            slots: limits(&r.resource_slots, SlotAmount::ZERO),
            name: r.name,
            shared_memory: r.shared_memory,
        })
        .collect())
}

/// `GET /resource/presets` (auth): every resource preset by name, its
/// `resource_slots` filled out to the known slots (missing: `"0"`; slots the
/// cluster does not know are left out) and its `shared_memory` as a decimal
/// string (`null` when unset or 0, as the reference).
pub async fn list_presets(
    _ctx: AuthContext,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, Problem> {
    let mut conn = connection(&pool).await?;
    let presets: Vec<Value> = presets(&mut conn)
        .await?
        .into_iter()
        .map(|p| {
            json!({
                "name": p.name,
                "shared_memory": p.shared_memory.filter(|m| *m != 0).map(|m| m.to_string()),
                "resource_slots": to_json(&p.slots),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "presets": presets })))
}

/// Parameters of `POST /resource/check-presets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckPresetsParams {
    /// Only this scaling group (it must be one the caller may use); `None`:
    /// all of them.
    pub scaling_group: Option<String>,
    /// The project (by name, in the caller's domain) whose limits apply.
    pub group: String,
}

impl CheckPresetsParams {
    /// Reads the parameters from the JSON body when the request has one,
    /// else from the query string (the reference's rule for every
    /// parameter schema). Unknown keys and wrong types are 400
    /// `invalid-api-params` with `{key: reason}` as data.
    pub fn from_request(query: &str, body: &[u8]) -> Result<Self, Problem> {
        let invalid = |data: Value| {
            Problem::new(ProblemKind::InvalidApiParams)
                .msg("Input validation error")
                .data(data)
        };
        let params: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
            web::Query::<BTreeMap<String, String>>::from_query(query)
                .map_err(|e| invalid(json!({ "query": e.to_string() })))?
                .into_inner()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => map,
                Ok(_) => return Err(invalid(json!({ "body": "must be a JSON object" }))),
                Err(_) => {
                    return Err(Problem::new(ProblemKind::InvalidApiParams).msg("Malformed body"));
                }
            }
        };
        let mut out = CheckPresetsParams {
            scaling_group: None,
            group: "default".to_owned(),
        };
        for (key, value) in params {
            match (key.as_str(), value) {
                ("scaling_group", Value::Null) => out.scaling_group = None,
                ("scaling_group", Value::String(s)) => out.scaling_group = Some(s),
                ("group", Value::String(s)) => out.group = s,
                ("scaling_group" | "group", _) => {
                    return Err(invalid(json!({ key: "value is not a string" })));
                }
                _ => return Err(invalid(json!({ key: "is not allowed key" }))),
            }
        }
        Ok(out)
    }
}

#[derive(QueryableByName)]
struct PolicyRow {
    #[diesel(sql_type = Text)]
    default_for_unspecified: String,
    #[diesel(sql_type = Text)]
    total_resource_slots: String,
}

#[derive(QueryableByName)]
struct ProjectRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    total_resource_slots: String,
}

#[derive(QueryableByName)]
struct SlotsRow {
    #[diesel(sql_type = Text)]
    total_resource_slots: String,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Who is asking and where: the keypair, its owner's domain, and the
/// project the limits are checked in.
struct Scope<'a> {
    access_key: &'a str,
    user: uuid::Uuid,
    domain_name: &'a str,
    project: uuid::Uuid,
}

#[derive(QueryableByName)]
struct ScopedSlotsRow {
    #[diesel(sql_type = Text)]
    slots: String,
    #[diesel(sql_type = Bool)]
    keypair: bool,
    #[diesel(sql_type = Bool)]
    project: bool,
    #[diesel(sql_type = Bool)]
    domain: bool,
}

#[derive(QueryableByName)]
struct GroupSlotsRow {
    #[diesel(sql_type = Text)]
    scaling_group: String,
    #[diesel(sql_type = Text)]
    slots: String,
}

#[derive(QueryableByName)]
struct AgentRow {
    #[diesel(sql_type = Text)]
    scaling_group: String,
    #[diesel(sql_type = Text)]
    available: String,
    #[diesel(sql_type = Text)]
    occupied: String,
}

/// The session statuses that count against quotas
/// ([`SessionStatus::holds_quota`]), as stored.
fn quota_holding_statuses() -> Vec<&'static str> {
    SessionStatus::ALL
        .into_iter()
        .filter(|s| s.holds_quota())
        .map(SessionStatus::as_str)
        .collect()
}

/// The kernel statuses that hold their agent's slots
/// ([`KernelStatus::holds_agent_slots`]), as stored.
fn agent_slot_holding_statuses() -> Vec<&'static str> {
    KernelStatus::ALL
        .into_iter()
        .filter(|s| s.holds_agent_slots())
        .map(KernelStatus::as_str)
        .collect()
}

/// Slots used per keypair, project and domain: the `occupying_slots` of the
/// scope's sessions that hold quota, summed exactly over the known slots —
/// what the scheduler's quota predicates count. One read covers the three
/// scopes; each row says which of them it belongs to.
async fn occupancy(conn: &mut Conn, scope: &Scope<'_>) -> Result<(Slots, Slots, Slots), Problem> {
    use diesel::sql_types::Uuid as SqlUuid;
    use diesel_async::RunQueryDsl;
    let rows: Vec<ScopedSlotsRow> = manager_events::prepared(
        "SELECT occupying_slots::text AS slots, access_key = $1 AS keypair, \
         group_id = $2 AS project, domain_name = $3 AS domain \
         FROM sessions WHERE status = ANY($4) \
         AND (access_key = $1 OR group_id = $2 OR domain_name = $3)",
    )
    .bind::<Text, _>(scope.access_key)
    .bind::<SqlUuid, _>(scope.project)
    .bind::<Text, _>(scope.domain_name)
    .bind::<Array<Text>, _>(quota_holding_statuses())
    .load(conn)
    .await
    .map_err(unavailable)?;
    let (mut keypair, mut project, mut domain) = (
        filled(SlotAmount::ZERO),
        filled(SlotAmount::ZERO),
        filled(SlotAmount::ZERO),
    );
    for row in rows {
        let slots = limits(&row.slots, SlotAmount::ZERO);
        for (using, counts) in [
            (&mut keypair, row.keypair),
            (&mut project, row.project),
            (&mut domain, row.domain),
        ] {
            if counts {
                add(using, &slots);
            }
        }
    }
    Ok((keypair, project, domain))
}

/// What the caller's kernels (those of sessions of its user, as the
/// reference counts them) hold in each of `scaling_groups`: the
/// `occupied_slots` of the kernels that hold their agent's slots. Every
/// group of `scaling_groups` is in the answer, at zero when nothing runs
/// there.
async fn scaling_group_usage(
    conn: &mut Conn,
    user: uuid::Uuid,
    scaling_groups: &[String],
) -> Result<BTreeMap<String, Slots>, Problem> {
    use diesel::sql_types::Uuid as SqlUuid;
    use diesel_async::RunQueryDsl;
    let rows: Vec<GroupSlotsRow> = manager_events::prepared(
        "SELECT s.scaling_group, k.occupied_slots::text AS slots \
         FROM sessions s JOIN kernels k ON k.session_id = s.id \
         WHERE s.user_uuid = $1 AND s.scaling_group = ANY($2) AND k.status = ANY($3)",
    )
    .bind::<SqlUuid, _>(user)
    .bind::<Array<Text>, _>(scaling_groups)
    .bind::<Array<Text>, _>(agent_slot_holding_statuses())
    .load(conn)
    .await
    .map_err(unavailable)?;
    let mut usage: BTreeMap<String, Slots> = scaling_groups
        .iter()
        .map(|g| (g.clone(), filled(SlotAmount::ZERO)))
        .collect();
    for row in rows {
        if let Some(using) = usage.get_mut(&row.scaling_group) {
            add(using, &limits(&row.slots, SlotAmount::ZERO));
        }
    }
    Ok(usage)
}

/// The free slots (available minus what its kernels hold, over the known
/// slots) of every ALIVE agent in `scaling_groups`, with its scaling group.
/// An agent whose kernels hold nothing has no `agent_occupancy` row: all of
/// it is free. Free slots may be negative when an agent reports less
/// capacity than its kernels were given; they then count as such.
async fn alive_agents_free_slots(
    conn: &mut Conn,
    scaling_groups: &[String],
) -> Result<Vec<(String, Slots)>, Problem> {
    use diesel_async::RunQueryDsl;
    let rows: Vec<AgentRow> = manager_events::prepared(
        "SELECT a.scaling_group, a.available_slots::text AS available, \
         coalesce(o.occupied_slots, '{}'::jsonb)::text AS occupied \
         FROM agents a LEFT JOIN agent_occupancy o ON o.agent_id = a.id \
         WHERE a.status = $1 AND a.scaling_group = ANY($2) ORDER BY a.id",
    )
    .bind::<Text, _>(AgentStatus::Alive.as_str())
    .bind::<Array<Text>, _>(scaling_groups)
    .load(conn)
    .await
    .map_err(unavailable)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let free = minus(
                &limits(&r.available, SlotAmount::ZERO),
                &limits(&r.occupied, SlotAmount::ZERO),
            );
            (r.scaling_group, free)
        })
        .collect())
}

/// `POST /resource/check-presets` (auth). Parameters (JSON body, or the
/// query string when the body is empty): `scaling_group` (string or null)
/// and `group` (a project name, default `default`).
///
/// Answers the caller's keypair limits (its keypair resource policy;
/// unspecified slots per `default_for_unspecified`), usage and remaining —
/// the remaining being the least of the keypair's, the project's and the
/// domain's (unspecified slots of those are unlimited) — the project's
/// limits, usage and remaining; what remains in the scaling groups the
/// caller may use (those of its domain, project and keypair, active ones),
/// in total and per group, capped by the keypair remaining; and every
/// preset with whether some ALIVE agent and the keypair remaining could
/// take it now.
///
/// A project the caller is not a member of in its domain is 404
/// `object-not-found` ("No such user group (or project)."); a scaling group
/// the caller may not use is 400 `invalid-api-params` ("Unknown scaling
/// group"). The `group_*` maps are always shown (the reference's
/// `group_resource_visibility` switch, which blanks them with `"NaN"`, is
/// not configurable yet). Answered after the read models show the caller's
/// last write, or with `X-BackendAI-Stale-Read: true` when they did not in
/// time.
pub async fn check_presets(
    ctx: AuthContext,
    req: HttpRequest,
    body: web::Bytes,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, Problem> {
    use diesel::sql_types::Uuid as SqlUuid;
    use diesel_async::RunQueryDsl;
    let params = CheckPresetsParams::from_request(req.query_string(), &body)?;
    // A read sent as a POST: the middleware waits only for GETs.
    let last_write = req.extensions().get::<LastWrite>().copied();
    let mut stale = false;
    if let (Some(LastWrite(position)), Some(freshness)) =
        (last_write, req.app_data::<web::Data<Freshness>>())
    {
        stale = !freshness.wait_for(position).await;
    }
    let mut conn = connection(&pool).await?;

    // The keypair's policy.
    let policy: Option<PolicyRow> = manager_events::prepared(
        "SELECT p.default_for_unspecified, p.total_resource_slots::text AS total_resource_slots \
         FROM keypairs k JOIN keypair_resource_policies p ON p.name = k.resource_policy \
         WHERE k.access_key = $1",
    )
    .bind::<Text, _>(&ctx.access_key)
    .load::<PolicyRow>(&mut conn)
    .await
    .map_err(unavailable)?
    .into_iter()
    .next();
    let policy = policy.ok_or_else(|| {
        Problem::new(ProblemKind::InternalServerError).msg(format!(
            "the resource policy of keypair {} is missing",
            ctx.access_key
        ))
    })?;
    let fill = if policy.default_for_unspecified == "UNLIMITED" {
        SlotAmount::Infinity
    } else {
        SlotAmount::ZERO
    };
    let keypair_limits = limits(&policy.total_resource_slots, fill);

    // The project, which the caller must belong to.
    let project: ProjectRow = manager_events::prepared(
        "SELECT g.id, g.total_resource_slots::text AS total_resource_slots \
         FROM groups g JOIN association_groups_users a ON a.group_id = g.id \
         WHERE a.user_id = $1 AND g.name = $2 AND g.domain_name = $3",
    )
    .bind::<SqlUuid, _>(ctx.user_uuid)
    .bind::<Text, _>(&params.group)
    .bind::<Text, _>(&ctx.domain_name)
    .load::<ProjectRow>(&mut conn)
    .await
    .map_err(unavailable)?
    .into_iter()
    .next()
    .ok_or_else(|| {
        Problem::new(ProblemKind::ObjectNotFound("user group (or project)"))
            .msg(format!("Unknown user group {:?}", params.group))
    })?;
    let group_limits = limits(&project.total_resource_slots, SlotAmount::Infinity);

    let domain_slots = manager_events::prepared(
        "SELECT total_resource_slots::text AS total_resource_slots FROM domains WHERE name = $1",
    )
    .bind::<Text, _>(&ctx.domain_name)
    .load::<SlotsRow>(&mut conn)
    .await
    .map_err(unavailable)?
    .into_iter()
    .next()
    .map_or_else(|| "{}".to_owned(), |r| r.total_resource_slots);
    let domain_limits = limits(&domain_slots, SlotAmount::Infinity);

    let scope = Scope {
        access_key: &ctx.access_key,
        user: ctx.user_uuid,
        domain_name: &ctx.domain_name,
        project: project.id,
    };
    let (keypair_using, group_using, domain_using) = occupancy(&mut conn, &scope).await?;
    let group_remaining = minus(&group_limits, &group_using);
    let domain_remaining = minus(&domain_limits, &domain_using);
    // The keypair can use no more than its project and domain have left.
    let keypair_remaining: Slots = minus(&keypair_limits, &keypair_using)
        .into_iter()
        .map(|(slot, kp)| {
            let least = [group_remaining.get(&slot), domain_remaining.get(&slot)]
                .into_iter()
                .flatten()
                .fold(kp, |m, v| m.min(*v));
            (slot, least)
        })
        .collect();
    let cap = |slots: Slots| -> Slots {
        slots
            .into_iter()
            .map(|(k, v)| {
                let kp = keypair_remaining
                    .get(&k)
                    .copied()
                    .unwrap_or(SlotAmount::ZERO);
                (k, v.min(kp))
            })
            .collect()
    };

    // The scaling groups the caller may use.
    let allowed: Vec<String> = manager_events::prepared(
        "SELECT name FROM scaling_groups WHERE is_active AND name IN ( \
           SELECT scaling_group FROM sgroups_for_domains WHERE domain = $1 \
           UNION SELECT scaling_group FROM sgroups_for_groups WHERE \"group\" = $2 \
           UNION SELECT scaling_group FROM sgroups_for_keypairs WHERE access_key = $3) \
         ORDER BY name",
    )
    .bind::<Text, _>(scope.domain_name)
    .bind::<SqlUuid, _>(scope.project)
    .bind::<Text, _>(scope.access_key)
    .load::<NameRow>(&mut conn)
    .await
    .map_err(unavailable)?
    .into_iter()
    .map(|r| r.name)
    .collect();
    let scaling_groups = match &params.scaling_group {
        None => allowed,
        Some(wanted) if allowed.contains(wanted) => vec![wanted.clone()],
        Some(wanted) => {
            return Err(Problem::new(ProblemKind::InvalidApiParams)
                .msg(format!("Unknown scaling group {wanted:?}")));
        }
    };

    let agents = alive_agents_free_slots(&mut conn, &scaling_groups).await?;
    let mut total_remaining = filled(SlotAmount::ZERO);
    let mut per_group: BTreeMap<String, (Slots, Slots)> =
        scaling_group_usage(&mut conn, scope.user, &scaling_groups)
            .await?
            .into_iter()
            .map(|(g, using)| (g, (using, filled(SlotAmount::ZERO))))
            .collect();
    for (group, free) in &agents {
        for (slot, amount) in free {
            if let Some(t) = total_remaining.get_mut(slot) {
                *t = t.plus(*amount);
            }
            if let Some((_, remaining)) = per_group.get_mut(group)
                && let Some(r) = remaining.get_mut(slot)
            {
                *r = r.plus(*amount);
            }
        }
    }
    let per_group: Map<String, Value> = per_group
        .into_iter()
        .map(|(name, (using, remaining))| {
            let remaining = cap(remaining);
            (
                name,
                json!({ "using": to_json(&using), "remaining": to_json(&remaining) }),
            )
        })
        .collect();
    let total_remaining = cap(total_remaining);

    let presets: Vec<Value> = presets(&mut conn)
        .await?
        .into_iter()
        .map(|p| {
            let allocatable = agents
                .iter()
                .any(|(_, free)| covers(free, &p.slots) && covers(&keypair_remaining, &p.slots));
            json!({
                "name": p.name,
                "resource_slots": to_json(&p.slots),
                "shared_memory": p.shared_memory.map(|m| m.to_string()),
                "allocatable": allocatable,
            })
        })
        .collect();

    let mut response = HttpResponse::Ok();
    if stale {
        response.insert_header((STALE_HEADER, "true"));
    }
    Ok(response.json(json!({
        "keypair_limits": to_json(&keypair_limits),
        "keypair_using": to_json(&keypair_using),
        "keypair_remaining": to_json(&keypair_remaining),
        "group_limits": to_json(&group_limits),
        "group_using": to_json(&group_using),
        "group_remaining": to_json(&group_remaining),
        "scaling_group_remaining": to_json(&total_remaining),
        "scaling_groups": per_group,
        "presets": presets,
    })))
}

/// `GET /config/resource-slots` (unsigned): every known slot name and its
/// type (`count`, `bytes` or `unique`) — [`KNOWN_SLOTS`]. `cpu` and `mem`
/// always exist; accelerator slots join when agents report them.
pub fn known_slot_types() -> Value {
    Value::Object(
        KNOWN_SLOTS
            .iter()
            .map(|(name, kind)| ((*name).to_owned(), Value::String((*kind).to_owned())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(s: &str) -> SlotAmount {
        SlotAmount::parse(s).unwrap_or(SlotAmount::ZERO)
    }

    #[test]
    fn limits_fill_out_the_known_slots_and_drop_others() {
        let l = limits(
            r#"{"cpu": "8", "cuda.shares": "2", "mem": 1e3}"#,
            SlotAmount::Infinity,
        );
        assert_eq!(
            l,
            Slots::from([
                ("cpu".to_owned(), amount("8")),
                ("mem".to_owned(), amount("1000"))
            ])
        );
        let l = limits("{}", SlotAmount::ZERO);
        assert_eq!(to_json(&l), json!({"cpu": "0", "mem": "0"}));
        let l = limits(r#"{"mem": "16g"}"#, SlotAmount::Infinity);
        assert_eq!(
            to_json(&l),
            json!({"cpu": "Infinity", "mem": "Infinity"}),
            "an unreadable amount counts as unspecified"
        );
    }

    #[test]
    fn arithmetic_over_slot_maps() {
        let a = limits(r#"{"cpu": "8", "mem": "1024"}"#, SlotAmount::ZERO);
        let b = limits(r#"{"cpu": "0.5"}"#, SlotAmount::ZERO);
        assert_eq!(
            to_json(&minus(&a, &b)),
            json!({"cpu": "7.5", "mem": "1024"})
        );
        assert!(covers(&a, &b) && !covers(&b, &a));
        let mut sum = a.clone();
        add(&mut sum, &b);
        add(&mut sum, &b);
        assert_eq!(to_json(&sum), json!({"cpu": "9", "mem": "1024"}));
        assert!(covers(&filled(SlotAmount::Infinity), &a));
    }

    #[test]
    fn parameters_come_from_the_body_or_else_the_query() {
        let p = CheckPresetsParams::from_request("", b"").unwrap();
        assert_eq!(
            p,
            CheckPresetsParams {
                scaling_group: None,
                group: "default".into()
            }
        );
        let p =
            CheckPresetsParams::from_request("group=x", br#"{"scaling_group": "gpu"}"#).unwrap();
        assert_eq!(
            (p.scaling_group.as_deref(), p.group.as_str()),
            (Some("gpu"), "default")
        );
        let p = CheckPresetsParams::from_request("group=research&scaling_group=sg", b" ").unwrap();
        assert_eq!(
            (p.scaling_group.as_deref(), p.group.as_str()),
            (Some("sg"), "research")
        );
        let p = CheckPresetsParams::from_request("", br#"{"scaling_group": null}"#).unwrap();
        assert_eq!(p.scaling_group, None);

        let e = CheckPresetsParams::from_request("", b"{oops").unwrap_err();
        assert_eq!(
            (e.kind, e.msg.as_deref()),
            (ProblemKind::InvalidApiParams, Some("Malformed body"))
        );
        let e = CheckPresetsParams::from_request("", br#"{"nope": 1}"#).unwrap_err();
        assert_eq!(e.data, Some(json!({"nope": "is not allowed key"})));
        let e = CheckPresetsParams::from_request("", br#"{"group": 3}"#).unwrap_err();
        assert_eq!(e.data, Some(json!({"group": "value is not a string"})));
        assert!(CheckPresetsParams::from_request("extra=1", b"").is_err());
    }

    #[test]
    fn usage_counts_the_statuses_the_scheduler_counts() {
        assert_eq!(
            quota_holding_statuses(),
            [
                "SCHEDULED",
                "PREPARING",
                "PULLING",
                "PREPARED",
                "CREATING",
                "RUNNING",
                "RESTARTING",
                "RUNNING_DEGRADED"
            ]
        );
        let holding = agent_slot_holding_statuses();
        assert!(holding.contains(&"TERMINATING") && holding.contains(&"SCHEDULED"));
        assert!(!holding.contains(&"PENDING") && !holding.contains(&"TERMINATED"));
    }

    #[test]
    fn slot_types_come_from_the_known_slots() {
        assert_eq!(known_slot_types(), json!({"cpu": "count", "mem": "bytes"}));
    }
}
