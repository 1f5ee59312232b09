//! `GET /session/{name}`: one session's information (API spec §4.2), read
//! from the `sessions` and `kernels` read models.
//!
//! # Lookup (spec §4.9)
//! The reference is looked up among the **caller's** live sessions (status
//! neither TERMINATED nor CANCELLED): as a session id first when it parses
//! as a UUID, then as a name. `owner_access_key` is accepted and ignored,
//! as the reference's handler ignores it. No match is 404 `object-not-found`
//! ("No such session.", msg `Session (id=<ref>) does not exist.`); more than
//! one is 404 `too-many-sessions-matched` with `data.matches`.
//!
//! # The answer, as the reference shapes it
//! - The slot maps (`occupiedSlots` of the main kernel, `occupyingSlots`,
//!   `requestedSlots`), `occupiedShares`, `environ` and `resourceOpts` are
//!   Python `repr()` strings of dicts (`{'cpu': Decimal('1')}`), not JSON:
//!   the reference answers `str()` of its column values.
//! - `statusInfo` and `containerId` are `str()` of their value too: `"None"`
//!   while unset. `creationTime`/`terminationTime` are `str(datetime)`
//!   (`2024-01-15 12:30:45.123456+00:00`), `age` is milliseconds.
//! - What is not tracked answers as the reference does for a session that
//!   has none: `numQueriesExecuted` 0, `lastStat` null, `idleChecks` `{}`,
//!   `occupiedShares` `{}` (a legacy column). `environ` is `"None"`: the
//!   read model does not keep the session's environment.
//!
//! Read-your-writes comes from the middleware every GET goes through
//! ([`crate::freshness::read_your_writes`]).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Timelike, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use manager_events::auth::AuthContext;
use manager_events::{PgPool, Problem, ProblemKind};
use serde_json::{Value, json};
use uuid::Uuid;

/// The columns of one answer: the session and its main kernel.
const INFO_SELECT: &str = "SELECT s.id, s.name, s.status, s.created_at, s.terminated_at, \
     s.domain_name, s.group_id, s.user_uuid, coalesce(k.image, s.image) AS image, \
     coalesce(k.architecture, s.architecture) AS architecture, \
     coalesce(k.registry, s.registry) AS registry, s.tag, k.container_id, \
     coalesce(k.occupied_slots, '{}'::jsonb) AS kernel_slots, s.occupying_slots, \
     s.requested_slots, s.resource_opts, s.status_info, s.status_data \
     FROM sessions s LEFT JOIN kernels k ON k.id = s.main_kernel_id \
     WHERE s.access_key = $1 AND s.status NOT IN ('TERMINATED', 'CANCELLED') AND ";

/// A session as `GET /session/{name}` shows it.
#[derive(Debug, QueryableByName)]
struct InfoRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    terminated_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    domain_name: String,
    #[diesel(sql_type = SqlUuid)]
    group_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    user_uuid: Uuid,
    #[diesel(sql_type = Text)]
    image: String,
    #[diesel(sql_type = Text)]
    architecture: String,
    #[diesel(sql_type = Text)]
    registry: String,
    #[diesel(sql_type = Nullable<Text>)]
    tag: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    container_id: Option<String>,
    #[diesel(sql_type = Jsonb)]
    kernel_slots: Value,
    #[diesel(sql_type = Jsonb)]
    occupying_slots: Value,
    #[diesel(sql_type = Jsonb)]
    requested_slots: Value,
    #[diesel(sql_type = Jsonb)]
    resource_opts: Value,
    #[diesel(sql_type = Nullable<Text>)]
    status_info: Option<String>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    status_data: Option<Value>,
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::new(ProblemKind::ServiceUnavailable).msg(e.to_string())
}

/// 404 for a reference that names no session of the caller.
pub fn not_found(reference: &str) -> Problem {
    Problem::new(ProblemKind::ObjectNotFound("session"))
        .msg(format!("Session (id={reference}) does not exist."))
}

/// The caller's live sessions `reference` names: by id first (when it is a
/// UUID), then by name.
async fn lookup(pool: &PgPool, access_key: &str, reference: &str) -> Result<Vec<InfoRow>, Problem> {
    let mut conn = pool.get().await.map_err(unavailable)?;
    if let Ok(id) = reference.parse::<Uuid>() {
        let rows: Vec<InfoRow> = manager_events::prepared(format!("{INFO_SELECT}s.id = $2"))
            .bind::<Text, _>(access_key)
            .bind::<SqlUuid, _>(id)
            .load(&mut conn)
            .await
            .map_err(unavailable)?;
        if !rows.is_empty() {
            return Ok(rows);
        }
    }
    manager_events::prepared(format!(
        "{INFO_SELECT}s.name = $2 ORDER BY s.created_at, s.id LIMIT 20"
    ))
    .bind::<Text, _>(access_key)
    .bind::<Text, _>(reference)
    .load(&mut conn)
    .await
    .map_err(unavailable)
}

/// `GET /session/{name}`: the caller's live session `name` (a name or an
/// id), shaped as the reference's `get_info`.
pub async fn session_info(
    ctx: AuthContext,
    name: web::Path<String>,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, Problem> {
    let reference = name.into_inner();
    let mut rows = lookup(&pool, &ctx.access_key, &reference).await?;
    if rows.len() > 1 {
        let matches: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.id.to_string(),
                    "name": r.name,
                    "status": r.status,
                    "created_at": r.created_at.to_rfc3339_opts(SecondsFormat::Micros, false),
                })
            })
            .collect();
        return Err(
            Problem::new(ProblemKind::TooManySessionsMatched).data(json!({ "matches": matches }))
        );
    }
    let Some(row) = rows.pop() else {
        return Err(not_found(&reference));
    };
    Ok(HttpResponse::Ok().json(info(&row, Utc::now())))
}

/// The answer for one session, as of `now`.
fn info(row: &InfoRow, now: DateTime<Utc>) -> Value {
    let age = (now - row.created_at).num_milliseconds().max(0);
    json!({
        "domainName": row.domain_name,
        "groupId": row.group_id.to_string(),
        "userId": row.user_uuid.to_string(),
        "lang": row.image,
        "image": row.image,
        "architecture": row.architecture,
        "registry": row.registry,
        "tag": row.tag,
        "containerId": row.container_id.as_deref().unwrap_or("None"),
        "occupiedSlots": py_slots(&row.kernel_slots),
        "occupyingSlots": py_slots(&row.occupying_slots),
        "requestedSlots": py_slots(&row.requested_slots),
        "occupiedShares": "{}",
        "environ": "None",
        "resourceOpts": py_repr(&row.resource_opts),
        "status": row.status,
        "statusInfo": row.status_info.as_deref().unwrap_or("None"),
        "statusData": row.status_data,
        "age": age,
        "creationTime": py_datetime(row.created_at),
        "terminationTime": row.terminated_at.map(py_datetime),
        "numQueriesExecuted": 0,
        "lastStat": null,
        "idleChecks": {},
    })
}

/// `str(datetime)` of an aware UTC time: `2024-01-15 12:30:45.123456+00:00`,
/// without the fraction when it is zero (as Python prints it).
pub fn py_datetime(t: DateTime<Utc>) -> String {
    if t.nanosecond() / 1000 == 0 {
        t.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
    } else {
        format!(
            "{}.{:06}+00:00",
            t.format("%Y-%m-%d %H:%M:%S"),
            t.nanosecond() / 1000
        )
    }
}

/// `str()` of a resource-slot map: each amount a `Decimal`
/// (`{'cpu': Decimal('1'), 'mem': Decimal('1073741824')}`).
pub fn py_slots(slots: &Value) -> String {
    let Value::Object(map) = slots else {
        return py_repr(slots);
    };
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| {
            let amount = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{}: Decimal({})", py_str(k), py_str(&amount))
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// Python's `repr()` of a JSON value (dict, list, str, int/float, bool,
/// None).
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr()` of a string: single quotes unless the text has a
/// single quote and no double quote; backslashes, the quote and control
/// characters escaped.
pub fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn values_print_as_python_prints_them() {
        assert_eq!(
            py_slots(&json!({"cpu": "1", "mem": "1073741824", "cuda.shares": "0.5"})),
            "{'cpu': Decimal('1'), 'cuda.shares': Decimal('0.5'), 'mem': Decimal('1073741824')}"
        );
        assert_eq!(py_slots(&json!({})), "{}");
        assert_eq!(
            py_repr(&json!({"main1": {"shmem": "64m", "n": 2, "x": null, "b": [true, false]}})),
            "{'main1': {'b': [True, False], 'n': 2, 'shmem': '64m', 'x': None}}"
        );
        assert_eq!(py_str("it's"), "\"it's\"");
        assert_eq!(py_str("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_str("a\\b\nc\u{1}"), "'a\\\\b\\nc\\x01'");
    }

    #[test]
    fn datetimes_print_as_python_prints_them() {
        let t = Utc.with_ymd_and_hms(2024, 1, 15, 12, 30, 45).unwrap();
        assert_eq!(py_datetime(t), "2024-01-15 12:30:45+00:00");
        let t = t + chrono::Duration::microseconds(123_456);
        assert_eq!(py_datetime(t), "2024-01-15 12:30:45.123456+00:00");
    }
}
