//! REST reads.

use actix_web::{HttpResponse, web};
use manager_events::auth::AuthContext;
use manager_events::{Problem, ProblemKind};
use serde_json::json;

/// Query of `GET /auth/role`.
#[derive(Debug, serde::Deserialize)]
pub struct RoleQuery {
    /// A project (group) id to report the caller's role in.
    pub group: Option<String>,
}

/// `GET /auth/role`: the caller's global and domain roles (and project role).
pub async fn auth_role(
    ctx: AuthContext,
    query: web::Query<RoleQuery>,
) -> Result<HttpResponse, Problem> {
    if let Some(group) = &query.group {
        if uuid::Uuid::parse_str(group).is_err() {
            return Err(Problem::new(ProblemKind::InvalidApiParams)
                .msg("Input validation error")
                .data(json!({"group": "not a valid UUID"})));
        }
        // Projects arrive with the projects read model; until then no project
        // has the caller as a member.
        return Err(Problem::new(ProblemKind::ObjectNotFound(
            "user group (or project)",
        )));
    }
    Ok(HttpResponse::Ok().json(json!({
        "global_role": if ctx.is_superadmin() { "superadmin" } else { "user" },
        "domain_role": if ctx.is_domain_admin() { "admin" } else { "user" },
        "group_role": null,
    })))
}

/// `GET /config/resource-slots` (unsigned): every known slot name and its
/// type (`count`, `bytes` or `unique`). `cpu` and `mem` always exist;
/// accelerator slots join when agents report them.
pub async fn resource_slots() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "cpu": "count", "mem": "bytes" }))
}

/// Registers the REST reads on an actix app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/role", web::get().to(auth_role))
        .route("/config/resource-slots", web::get().to(resource_slots));
}
