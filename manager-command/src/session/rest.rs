//! The session REST endpoints of the write side:
//!
//! - `POST /session` (also `/session/_/create`): enqueue, optionally hold
//!   the request until the session leaves the queue (`enqueueOnly`,
//!   `maxWaitSeconds`, the reference's `TIMEOUT` pseudo-status);
//! - `DELETE /session/{name}`: destroy (`forced`, `recursive`,
//!   `owner_access_key`);
//! - `PATCH /session/{name}`: restart;
//! - `POST /session/{name}/rename`.
//!
//! Every check that can fail is made before anything is appended: a bad
//! request changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use manager_events::auth::AuthContext;
use manager_events::scaling_group::ScalingGroupTarget;
use manager_events::session::{
    KernelSpec, Owner, SessionImage, SessionSpec, SessionStatus, SessionType, SlotMap,
};
use manager_events::slots::{SlotAmount, known_slot_names};
use manager_events::user::UserRole;
use manager_events::{EventMetadata, Problem, ProblemKind};
use serde_json::{Value, json};
use uuid::Uuid;

use super::request::{CreateRequest, Errors, to_bool};
use super::view::SessionView;
use super::{ActOnSession, EnqueueSession, Session, SessionCommand, name_holder, name_stream};
use crate::auth::rate_limit::RateLimiter;
use crate::handler::CommandHandler;
use crate::handler::{Tx, Workflow};
use crate::image::resolve_image_in;
use crate::keypair::Keypair;
use crate::policy::KeypairPolicy;
use crate::project::Project;
use crate::reservation::Reservation;
use crate::scaling_group::ScalingGroup;
use crate::user::User;

/// The default shared memory of a kernel (`resource_opts.shmem`).
pub const DEFAULT_SHMEM: i64 = 64 << 20;

/// What the session endpoints need. Cheap to clone.
#[derive(Clone)]
pub struct SessionApi {
    handler: CommandHandler,
    view: SessionView,
    writes: Option<RateLimiter>,
}

impl std::fmt::Debug for SessionApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionApi").finish_non_exhaustive()
    }
}

/// Mounts the endpoints. Each resource answers only its methods and lets
/// others through (a `GET` of the same path is the read side's).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use actix_web::guard;
    cfg.service(
        web::resource(["/session", "/session/_/create"])
            .guard(guard::Post())
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/session/{name}/rename")
            .guard(guard::Post())
            .route(web::post().to(rename)),
    )
    .service(
        web::resource("/session/{name}")
            .guard(guard::Any(guard::Delete()).or(guard::Patch()))
            .route(web::delete().to(destroy))
            .route(web::patch().to(restart)),
    );
}

fn not_found(reference: &str) -> Problem {
    Problem::new(ProblemKind::ObjectNotFound("session"))
        .msg(format!("Session (id={reference}) does not exist."))
}

fn meta(actor: &AuthContext, what: &str) -> EventMetadata {
    EventMetadata {
        actor_access_key: Some(actor.access_key.clone()),
        request_id: Some(format!("rest:{what}")),
        ..EventMetadata::default()
    }
}

/// Parameters from the query string, or from a JSON body when there is one
/// (the reference's rule).
fn params(req: &HttpRequest, body: &Bytes) -> Result<BTreeMap<String, Value>, Problem> {
    if !body.is_empty() {
        return match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(m.into_iter().collect()),
            _ => Err(Problem::new(ProblemKind::InvalidApiParams).msg("Malformed body")),
        };
    }
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|_| Problem::new(ProblemKind::InvalidApiParams).msg("Malformed query"))?;
    Ok(pairs
        .into_inner()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

fn flag(params: &BTreeMap<String, Value>, key: &str, errors: &mut Errors) -> bool {
    match params.get(key) {
        None | Some(Value::Null) => false,
        Some(v) => to_bool(v).unwrap_or_else(|| {
            errors.add(key, "must be a boolean");
            false
        }),
    }
}

fn check_known(params: &BTreeMap<String, Value>, known: &[&str], errors: &mut Errors) {
    for k in params.keys() {
        if !known.contains(&k.as_str()) {
            errors.add(k, "unknown key");
        }
    }
}

/// Who a request acts for: the caller, or (`owner_access_key`) a keypair
/// the caller may act for — any for a superadmin, one of its own domain
/// (not a superadmin's) for a domain admin, never for a user.
pub(crate) struct Acting {
    access_key: String,
    user_id: Uuid,
    domain_name: String,
    role: UserRole,
}

impl SessionApi {
    /// The endpoints over `handler`, with the scheduler's `view` (for
    /// scaling groups, known slots and waiting), recording writes for
    /// read-your-writes through `writes`.
    pub fn new(handler: CommandHandler, view: SessionView, writes: Option<RateLimiter>) -> Self {
        SessionApi {
            handler,
            view,
            writes,
        }
    }

    /// Who a request acts for (see [`Acting`]).
    pub(crate) async fn acting_for(
        &self,
        actor: &AuthContext,
        owner: Option<&str>,
    ) -> Result<Acting, Problem> {
        self.acting(actor, owner).await
    }

    /// The live session `reference` names among `acting`'s.
    pub(crate) async fn find_live(
        &self,
        acting: &Acting,
        reference: &str,
    ) -> Result<(Uuid, Session), Problem> {
        self.find(&acting.access_key, reference).await
    }

    async fn acting(&self, actor: &AuthContext, owner: Option<&str>) -> Result<Acting, Problem> {
        let Some(ak) = owner.filter(|ak| *ak != actor.access_key) else {
            return Ok(Acting {
                access_key: actor.access_key.clone(),
                user_id: actor.user_uuid,
                domain_name: actor.domain_name.clone(),
                role: actor.role,
            });
        };
        if !actor.is_domain_admin() {
            return Err(Problem::new(ProblemKind::InsufficientPrivilege)
                .msg("only administrators may act on another keypair's sessions"));
        }
        let (keypair, _) = self
            .handler
            .load::<Keypair>(&crate::keypair::stream_id(ak))
            .await
            .map_err(Problem::from)?;
        let Some(fields) = keypair.live() else {
            return Err(Problem::new(ProblemKind::ObjectNotFound("keypair"))
                .msg(format!("no keypair {ak:?}")));
        };
        let (user, _) = self
            .handler
            .load::<User>(&crate::user::stream_id(&fields.user_uuid))
            .await
            .map_err(Problem::from)?;
        let Some(u) = user.live() else {
            return Err(Problem::new(ProblemKind::ObjectNotFound("user")));
        };
        if !actor.is_superadmin()
            && (u.domain_name != actor.domain_name || u.role == UserRole::Superadmin)
        {
            return Err(Problem::new(ProblemKind::InsufficientPrivilege)
                .msg("you may act only for keypairs of your own domain"));
        }
        Ok(Acting {
            access_key: ak.to_owned(),
            user_id: fields.user_uuid,
            domain_name: u.domain_name.clone(),
            role: u.role,
        })
    }

    /// The live session `reference` names among `access_key`'s: its id
    /// first, then its name.
    async fn find(&self, access_key: &str, reference: &str) -> Result<(Uuid, Session), Problem> {
        if let Ok(id) = reference.parse::<Uuid>() {
            let (s, _) = self
                .handler
                .load::<Session>(&super::stream_id(id))
                .await
                .map_err(Problem::from)?;
            if s.exists() && s.owner.access_key == access_key && !s.status.is_dead() {
                return Ok((id, s));
            }
        }
        let (r, _) = self
            .handler
            .load::<Reservation>(&name_stream(access_key, reference))
            .await
            .map_err(Problem::from)?;
        let Some(id) = name_holder(&r) else {
            return Err(not_found(reference));
        };
        let (s, _) = self
            .handler
            .load::<Session>(&super::stream_id(id))
            .await
            .map_err(Problem::from)?;
        if !s.exists() || s.status.is_dead() {
            return Err(not_found(reference));
        }
        Ok((id, s))
    }

    async fn record(&self, actor: &AuthContext, position: Option<u64>) {
        if let (Some(position), Some(writes)) = (position, &self.writes)
            && let Err(e) = writes.record_write(&actor.access_key, position).await
        {
            tracing::warn!(error = %e, "could not record a write for read-your-writes");
        }
    }

    async fn act(
        &self,
        actor: &AuthContext,
        id: Uuid,
        command: SessionCommand,
        what: &str,
    ) -> Result<Session, Problem> {
        let done = self
            .handler
            .transact(&ActOnSession { id, command }, meta(actor, what))
            .await?;
        self.record(actor, done.position).await;
        let state = match done.output {
            Some(d) => d.state,
            None => {
                self.handler
                    .load::<Session>(&super::stream_id(id))
                    .await
                    .map_err(Problem::from)?
                    .0
            }
        };
        Ok(state)
    }

    /// The scaling group a session goes to: the one asked for, if the
    /// owner may use it; else the first (by name) the owner may use that
    /// accepts the session's type.
    fn scaling_group(
        &self,
        asked: Option<&str>,
        owner: &Owner,
        session_type: SessionType,
    ) -> Result<String, Problem> {
        let targets = [
            ScalingGroupTarget::Domain(owner.domain_name.clone()),
            ScalingGroupTarget::Project(owner.project_id),
            ScalingGroupTarget::Keypair(owner.access_key.clone()),
        ];
        let usable = |g: &ScalingGroup| {
            let Some(f) = g.live() else { return false };
            let types_ok = f
                .scheduler_opts
                .get("allowed_session_types")
                .and_then(Value::as_array)
                .is_none_or(|types| {
                    types
                        .iter()
                        .any(|t| t.as_str() == Some(session_type.as_str()))
                });
            f.is_active && types_ok && targets.iter().any(|t| g.associations.contains(t))
        };
        self.view.with_scaling_groups(|groups| {
            let mut groups: Vec<(&String, &ScalingGroup)> = groups.collect();
            groups.sort_by(|a, b| a.0.cmp(b.0));
            match asked {
                Some(name) => match groups.iter().find(|(n, _)| *n == name) {
                    Some((n, g)) if usable(g) => Ok((*n).clone()),
                    Some(_) => Err(Problem::new(ProblemKind::InvalidApiParams).msg(format!(
                        "scaling group {name:?} is not available to you for {} sessions",
                        session_type.as_str()
                    ))),
                    None => Err(Problem::new(ProblemKind::ObjectNotFound("scaling group"))
                        .msg(format!("no scaling group {name:?}"))),
                },
                None => groups
                    .iter()
                    .find(|(_, g)| usable(g))
                    .map(|(n, _)| (*n).clone())
                    .ok_or_else(|| {
                        Problem::new(ProblemKind::InvalidApiParams)
                            .msg("no scaling group is available to you for this session type")
                    }),
            }
        })
    }

    async fn enqueue(
        &self,
        actor: &AuthContext,
        req: CreateRequest,
    ) -> Result<HttpResponse, Problem> {
        let acting = self.acting(actor, req.owner_access_key.as_deref()).await?;
        if !req.agent_list.is_empty() && !actor.is_superadmin() {
            return Err(Problem::new(ProblemKind::InsufficientPrivilege)
                .msg("only superadmins may choose agents"));
        }
        if acting.domain_name != req.domain && acting.role != UserRole::Superadmin {
            return Err(Problem::new(ProblemKind::InvalidApiParams).msg(format!(
                "the owner does not belong to domain {:?}",
                req.domain
            )));
        }
        let id = Uuid::new_v4();
        let done = self
            .handler
            .transact(
                &CheckedEnqueue {
                    api: self,
                    acting: &acting,
                    req: &req,
                    id,
                },
                meta(actor, "create_session"),
            )
            .await?;
        if let Some(Enqueued::Reused(body)) = done.output {
            return Ok(HttpResponse::Created().json(body));
        }
        self.record(actor, done.position).await;
        metrics::counter!("sessions_enqueued_total").increment(1);
        if req.enqueue_only {
            return Ok(created(id, &req.name, "PENDING", json!([])));
        }
        let wait = (req.max_wait_seconds > 0).then(|| Duration::from_secs(req.max_wait_seconds));
        let (status, ports) = self
            .wait_started(id, done.position.unwrap_or(0), wait)
            .await?;
        // The caller saw the session start (or end): its next read waits
        // for the read models to show that too.
        self.record(actor, Some(self.view.position())).await;
        Ok(created(id, &req.name, &status, ports))
    }

    /// Slots per kernel: every known slot (0 when not asked), `cpu`/`mem`
    /// not asked (or 0) take the image's minimum; each within the image's
    /// bounds; `shmem` below `mem`.
    fn slots(&self, req: &CreateRequest, image: &crate::image::Image) -> Result<SlotMap, Problem> {
        let mut known: Vec<String> = known_slot_names().map(str::to_owned).collect();
        known.extend(self.view.reported_slots().iter().cloned());
        known.sort();
        known.dedup();
        let mut errors = Errors::default();
        for slot in req.resources.keys() {
            if !known.contains(slot) {
                errors.add(
                    "resources",
                    format!("Invalid resource allocation: unknown slot {slot:?}"),
                );
            }
        }
        let mut out = SlotMap::new();
        for slot in &known {
            let mut amount = req.resources.get(slot).copied().unwrap_or(SlotAmount::ZERO);
            if (slot == "cpu" || slot == "mem") && amount == SlotAmount::ZERO {
                amount = image.min_of(slot);
            }
            let (min, max) = (image.min_of(slot), image.max_of(slot));
            if amount < min {
                errors.add(
                    "resources",
                    format!("Invalid resource allocation: {slot} {amount} is below the image's minimum {min}"),
                );
            }
            if amount > max {
                errors.add(
                    "resources",
                    format!("Invalid resource allocation: {slot} {amount} is above the image's maximum {max}"),
                );
            }
            out.insert(slot.clone(), amount.to_string());
        }
        let shmem = req
            .resource_opts
            .get("shmem")
            .map(|s| super::request::parse_bytes(s))
            .unwrap_or(Some(SlotAmount::from_int(DEFAULT_SHMEM)));
        match shmem {
            None => errors.add("resource_opts", "shmem is not a size"),
            Some(shmem) => {
                let mem = out
                    .get("mem")
                    .and_then(|m| SlotAmount::parse(m).ok())
                    .unwrap_or(SlotAmount::ZERO);
                if shmem >= mem {
                    errors.add("resource_opts", "shmem must be smaller than mem");
                }
            }
        }
        errors.into_result()?;
        Ok(out)
    }

    /// Holds until the session left the queue and its start (RUNNING, or
    /// ended), or `wait` passed (`TIMEOUT`).
    async fn wait_started(
        &self,
        id: Uuid,
        position: u64,
        wait: Option<Duration>,
    ) -> Result<(String, Value), Problem> {
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut changes = self.view.changes();
        self.view.wait_for(position, Duration::from_secs(5)).await;
        loop {
            let state = match self.view.session(id) {
                Some(entry) => Some(entry.state),
                None => None,
            };
            let state = match state {
                Some(s) => s,
                // Gone from the view: it ended; the log says how.
                None => {
                    self.handler
                        .load::<Session>(&super::stream_id(id))
                        .await
                        .map_err(Problem::from)?
                        .0
                }
            };
            use SessionStatus as S;
            match state.status {
                S::Pending
                | S::Scheduled
                | S::Preparing
                | S::Pulling
                | S::Prepared
                | S::Creating => {}
                S::Running => return Ok(("RUNNING".into(), service_ports(&state))),
                other => return Ok((other.as_str().into(), json!([]))),
            }
            let changed = changes.changed();
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d, changed).await.is_err() {
                        return Ok(("TIMEOUT".into(), json!([])));
                    }
                }
                None => {
                    if changed.await.is_err() {
                        return Ok(("TIMEOUT".into(), json!([])));
                    }
                }
            }
        }
    }
}

fn created(id: Uuid, name: &str, status: &str, ports: Value) -> HttpResponse {
    HttpResponse::Created().json(json!({
        "sessionId": id.to_string(),
        "sessionName": name,
        "status": status,
        "servicePorts": ports,
        "created": true,
    }))
}

/// The main kernel's service ports as the client reads them.
fn service_ports(s: &Session) -> Value {
    let ports: Vec<Value> = s
        .main_kernel()
        .map(|k| {
            k.service_ports
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "protocol": p.protocol,
                        "ports": p.container_ports,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Array(ports)
}

async fn create(
    api: web::Data<Arc<SessionApi>>,
    actor: AuthContext,
    body: Bytes,
) -> Result<HttpResponse, Problem> {
    let req = CreateRequest::parse(&body)?;
    api.enqueue(&actor, req).await
}

async fn destroy(
    api: web::Data<Arc<SessionApi>>,
    actor: AuthContext,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, Problem> {
    let params = params(&req, &body)?;
    let mut errors = Errors::default();
    check_known(
        &params,
        &["forced", "recursive", "owner_access_key"],
        &mut errors,
    );
    let forced = flag(&params, "forced", &mut errors);
    let recursive = flag(&params, "recursive", &mut errors);
    errors.into_result()?;
    let owner = params.get("owner_access_key").and_then(Value::as_str);
    let acting = api.acting(&actor, owner).await?;
    let (id, _) = api.find(&acting.access_key, &path).await?;
    let mut targets = vec![id];
    if recursive {
        // Sessions that depend on it, then theirs — as of now: the view
        // first catches up with the log.
        if let Ok(head) = api.handler.store().head_position().await {
            api.view.wait_for(head, Duration::from_secs(5)).await;
        }
        let mut i = 0;
        while i < targets.len() {
            let parent = targets[i];
            for s in api.view.sessions() {
                if let Some(sid) = s.state.id
                    && s.state.spec.dependencies.contains(&parent)
                    && !targets.contains(&sid)
                {
                    targets.push(sid);
                }
            }
            i += 1;
        }
    }
    // Dependants first, so that none is cancelled for a failed dependency
    // while its own destruction is on its way.
    targets.reverse();
    let mut stats = Vec::new();
    for target in &targets {
        let result = api
            .act(
                &actor,
                *target,
                SessionCommand::Destroy {
                    forced,
                    reason: String::new(),
                },
                "destroy_session",
            )
            .await;
        match result {
            Ok(_) => stats.push(json!({ "stats": null })),
            // A dependent that ended meanwhile is not an error.
            Err(p) if *target != id && matches!(p.kind, ProblemKind::ObjectNotFound(_)) => {}
            Err(p) => return Err(p),
        }
    }
    if recursive {
        Ok(HttpResponse::Ok().json(Value::Array(stats)))
    } else {
        Ok(HttpResponse::Ok().json(json!({ "stats": null })))
    }
}

async fn restart(
    api: web::Data<Arc<SessionApi>>,
    actor: AuthContext,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, Problem> {
    let params = params(&req, &body)?;
    let mut errors = Errors::default();
    check_known(&params, &["owner_access_key"], &mut errors);
    errors.into_result()?;
    let owner = params.get("owner_access_key").and_then(Value::as_str);
    let acting = api.acting(&actor, owner).await?;
    let (id, _) = api.find(&acting.access_key, &path).await?;
    api.act(&actor, id, SessionCommand::Restart, "restart_session")
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn rename(
    api: web::Data<Arc<SessionApi>>,
    actor: AuthContext,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, Problem> {
    let params = params(&req, &body)?;
    let mut errors = Errors::default();
    check_known(
        &params,
        &[
            "name",
            "session_name",
            "clientSessionToken",
            "owner_access_key",
        ],
        &mut errors,
    );
    let new_name = ["name", "session_name", "clientSessionToken"]
        .iter()
        .find_map(|k| params.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    if !super::request::valid_session_name(&new_name) {
        errors.add("name", "is not a valid session name");
    }
    errors.into_result()?;
    let owner = params.get("owner_access_key").and_then(Value::as_str);
    let acting = api.acting(&actor, owner).await?;
    let (id, _) = api.find(&acting.access_key, &path).await?;
    api.act(
        &actor,
        id,
        SessionCommand::Rename { name: new_name },
        "rename_session",
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What [`CheckedEnqueue`] did.
enum Enqueued {
    /// The session is in the queue.
    New,
    /// A live session of that name and image exists and `reuseIfExists`
    /// asked for it: the answer to give.
    Reused(Value),
}

/// `POST /session`'s checks and the enqueue, as one workflow: everything
/// the checks read (the project and its name, the keypair and its policy,
/// the image and its alias, the session name, the dependencies) is part of
/// the append, at the version the checks saw. The first attempt reads what
/// this manager already holds, so a request usually costs one round trip
/// to the log; if anything it read changed meanwhile, the append fails and
/// the request is checked again on fresh state. A refusal decided on
/// cached state is likewise checked again before it is given.
struct CheckedEnqueue<'a> {
    api: &'a SessionApi,
    acting: &'a Acting,
    req: &'a CreateRequest,
    id: Uuid,
}

impl Workflow for CheckedEnqueue<'_> {
    type Output = Enqueued;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Enqueued, Problem> {
        let (api, acting, req, id) = (self.api, self.acting, self.req, self.id);
        // The project.
        let res = tx
            .load::<Reservation>(&manager_events::reservation::stream_id(
                "project-name",
                &format!("{}/{}", req.domain, req.group),
            ))
            .await?;
        let project_id =
            res.holder
                .as_deref()
                .and_then(|h| h.strip_prefix("project:"))
                .and_then(|id| id.parse::<Uuid>().ok())
                .ok_or_else(|| {
                    Problem::new(ProblemKind::ObjectNotFound("user group (or project)")).msg(
                        format!("no project {:?} in domain {:?}", req.group, req.domain),
                    )
                })?;
        let project = tx
            .load::<Project>(&crate::project::stream_id(&project_id))
            .await?;
        let project_ok = project.live().is_some_and(|f| f.is_active);
        if !project_ok
            || (acting.role != UserRole::Superadmin && !project.members.contains(&acting.user_id))
        {
            return Err(Problem::new(ProblemKind::InvalidApiParams).msg(format!(
                "the owner is not a member of project {:?}",
                req.group
            )));
        }
        let owner = Owner {
            access_key: acting.access_key.clone(),
            user_id: acting.user_id,
            project_id,
            domain_name: req.domain.clone(),
        };
        // The owner's policy.
        let keypair = tx
            .load::<Keypair>(&crate::keypair::stream_id(&owner.access_key))
            .await?;
        let policy_name = keypair
            .live()
            .map(|k| k.resource_policy.clone())
            .unwrap_or_default();
        let policy = tx
            .load::<KeypairPolicy>(&crate::policy::stream_id(&policy_name))
            .await?;
        let max_kernels = policy
            .fields
            .as_ref()
            .map_or(1, |f| f.max_containers_per_session);
        if max_kernels > 0 && i64::from(req.cluster_size) > max_kernels {
            return Err(Problem::new(ProblemKind::InvalidApiParams).msg(format!(
                "your resource policy allows at most {max_kernels} kernel(s) per session"
            )));
        }
        // The image.
        let Some((_, image)) = resolve_image_in(tx, &req.image, &req.architecture).await? else {
            return Err(
                Problem::new(ProblemKind::ObjectNotFound("environment image"))
                    .msg("unknown alias or disallowed registry"),
            );
        };
        // A live session of that name? Most names are new: the first
        // attempt presumes so, and the append's check says otherwise.
        let name = name_stream(&owner.access_key, &req.name);
        tx.presume_new::<Reservation>(&name);
        let held = tx.load::<Reservation>(&name).await?;
        if let Some(existing) = name_holder(&held) {
            let s = tx.load::<Session>(&super::stream_id(existing)).await?;
            if req.reuse_if_exists && s.spec.image.canonical == image.canonical {
                return Ok(Enqueued::Reused(json!({
                    "sessionId": existing.to_string(),
                    "sessionName": s.spec.name,
                    "status": s.status.as_str(),
                    "service_ports": service_ports(&s),
                    "created": false,
                })));
            }
            return Err(Problem::new(ProblemKind::SessionAlreadyExists)
                .msg(format!(
                    "a live session named {:?} already exists",
                    req.name
                ))
                .data(json!({ "existingSessionId": existing.to_string() })));
        }
        let slots = api.slots(req, &image)?;
        let scaling_group =
            api.scaling_group(req.scaling_group.as_deref(), &owner, req.session_type)?;
        if !req.agent_list.is_empty() {
            let expected = match req.cluster_mode {
                manager_events::session::ClusterMode::SingleNode => 1,
                manager_events::session::ClusterMode::MultiNode => req.cluster_size as usize,
            };
            if req.agent_list.len() != expected {
                return Err(Problem::new(ProblemKind::InvalidApiParams)
                    .msg(format!("agent_list must name {expected} agent(s)")));
            }
        }
        let dependencies = dependencies(tx, &owner.access_key, &req.dependencies).await?;
        let kernels = (0..req.cluster_size)
            .map(|i| {
                let (role, idx) = if i == 0 { ("main", 1) } else { ("sub", i) };
                KernelSpec {
                    id: if i == 0 { id } else { Uuid::new_v4() },
                    cluster_role: role.into(),
                    cluster_idx: idx,
                    local_rank: i,
                    cluster_hostname: format!("{role}{idx}"),
                }
            })
            .collect();
        let mut resource_opts = req.resource_opts.clone();
        resource_opts
            .entry("shmem".into())
            .or_insert_with(|| DEFAULT_SHMEM.to_string());
        let spec = SessionSpec {
            name: req.name.clone(),
            session_type: req.session_type,
            image: SessionImage {
                canonical: image.canonical.clone(),
                architecture: image.architecture.clone(),
                registry: image.registry().to_owned(),
                tag: image.tag().to_owned(),
            },
            cluster_mode: req.cluster_mode,
            slots_per_kernel: slots,
            resource_opts,
            scaling_group,
            mounts: req.mounts.clone(),
            mount_map: req.mount_map.clone(),
            environ: req.environ.clone(),
            startup_command: req.startup_command.clone(),
            bootstrap_script: req.bootstrap_script.clone(),
            dependencies,
            starts_at: req.starts_at,
            tag: req.tag.clone(),
            callback_url: req.callback_url.clone(),
            preopen_ports: req.preopen_ports.clone(),
            designated_agents: req.agent_list.clone(),
            kernels,
        };
        EnqueueSession {
            id,
            creation_id: Uuid::new_v4().simple().to_string(),
            owner,
            spec,
        }
        .run(tx)
        .await?;
        Ok(Enqueued::New)
    }
}

/// Resolves dependencies (ids, or names of the owner's live sessions);
/// each must exist. What it read is checked when the enqueue commits.
async fn dependencies(
    tx: &mut Tx<'_>,
    access_key: &str,
    refs: &[String],
) -> Result<Vec<Uuid>, Problem> {
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let missing = || {
            Problem::new(ProblemKind::InvalidApiParams)
                .msg(format!("dependency {r:?} does not exist"))
        };
        let id = if let Ok(id) = r.parse::<Uuid>() {
            let s = tx.load::<Session>(&super::stream_id(id)).await?;
            if !s.exists() {
                return Err(missing());
            }
            id
        } else {
            let held = tx.load::<Reservation>(&name_stream(access_key, r)).await?;
            let id = name_holder(&held).ok_or_else(missing)?;
            let s = tx.load::<Session>(&super::stream_id(id)).await?;
            if !s.exists() || s.status.is_dead() {
                return Err(missing());
            }
            id
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}
