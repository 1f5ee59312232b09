//! REST reads. Also mounts `GET /session/{name}` ([`crate::session_rest`])
//! and the event streams ([`crate::events`]).

use actix_web::{HttpResponse, web};
use manager_events::auth::AuthContext;
use manager_events::{PgPool, Problem, ProblemKind};
use serde_json::json;

/// Query of `GET /auth/role`.
#[derive(Debug, serde::Deserialize)]
pub struct RoleQuery {
    /// A project (group) id to report the caller's role in.
    pub group: Option<String>,
}

/// `GET /auth/role`: the caller's global and domain roles, and its role in a
/// project (`group`) it belongs to; a project it does not belong to is 404.
pub async fn auth_role(
    ctx: AuthContext,
    query: web::Query<RoleQuery>,
    pool: web::Data<PgPool>,
) -> Result<HttpResponse, Problem> {
    let group_role = match &query.group {
        None => None,
        Some(group) => {
            let group = uuid::Uuid::parse_str(group).map_err(|_| {
                Problem::new(ProblemKind::InvalidApiParams)
                    .msg("Input validation error")
                    .data(json!({"group": "not a valid UUID"}))
            })?;
            if !is_member(&pool, group, ctx.user_uuid).await? {
                return Err(Problem::new(ProblemKind::ObjectNotFound(
                    "user group (or project)",
                )));
            }
            Some("user")
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "global_role": if ctx.is_superadmin() { "superadmin" } else { "user" },
        "domain_role": if ctx.is_domain_admin() { "admin" } else { "user" },
        "group_role": group_role,
    })))
}

async fn is_member(pool: &PgPool, group: uuid::Uuid, user: uuid::Uuid) -> Result<bool, Problem> {
    use diesel::sql_types::Uuid as SqlUuid;
    use diesel_async::RunQueryDsl;
    let unavailable = |e: String| Problem::new(ProblemKind::ServiceUnavailable).msg(e);
    let mut conn = pool.get().await.map_err(|e| unavailable(e.to_string()))?;
    let n = manager_events::prepared(
        "SELECT 1 FROM association_groups_users a JOIN groups g ON g.id = a.group_id \
         WHERE a.group_id = $1 AND a.user_id = $2",
    )
    .bind::<SqlUuid, _>(group)
    .bind::<SqlUuid, _>(user)
    .execute(&mut conn)
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    Ok(n > 0)
}

/// `GET /config/resource-slots` (unsigned): every known slot name and its
/// type (`count`, `bytes` or `unique`), from
/// [`manager_events::slots::KNOWN_SLOTS`]. `cpu` and `mem` always exist;
/// accelerator slots join when agents report them.
pub async fn resource_slots() -> HttpResponse {
    HttpResponse::Ok().json(crate::resource::known_slot_types())
}

/// Registers the REST reads on an actix app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/role", web::get().to(auth_role))
        .route("/config/resource-slots", web::get().to(resource_slots))
        .route(
            "/resource/presets",
            web::get().to(crate::resource::list_presets),
        )
        .route(
            "/resource/check-presets",
            web::post().to(crate::resource::check_presets),
        )
        // Guarded, like the write side's `/session/{name}`, so that other
        // methods fall through to the routes that serve them.
        .service(
            web::resource("/session/{name}")
                .guard(actix_web::guard::Get())
                .route(web::get().to(crate::session_rest::session_info)),
        )
        .route(
            "/events/session",
            web::get().to(crate::events::session_events),
        )
        .route(
            "/events/background-task",
            web::get().to(crate::events::background_task_events),
        );
}
