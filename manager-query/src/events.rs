//! Server-sent event streams: `GET /events/session` (API spec §4.8) and
//! `GET /events/background-task` (§4.10).
//!
//! # Where session events come from
//! A session stream follows the **event log**, not the read models: each
//! request subscribes with [`EventStore::subscribe`] from the log's head as
//! it is when the request arrives, so it sees every session event committed
//! after that, in log order, and nothing from before. Each
//! [`SessionEvent`] becomes the frames the reference sends for it
//! ([`frames`]):
//!
//! | event | frames |
//! |---|---|
//! | `SessionEnqueued` | `session_enqueued` |
//! | `SessionScheduled` | `session_scheduled` |
//! | `SessionCancelled` | `kernel_cancelled` per kernel, `session_cancelled` |
//! | `KernelsTransitioned` | `kernel_<status>` per kernel (PREPARING, PULLING, CREATING, RUNNING → `kernel_started`, TERMINATING, TERMINATED, CANCELLED), then the session's event when its status changed |
//! | `KernelStarted` | `kernel_started`, then `session_started` when the session runs |
//! | `SessionResultRecorded` | `session_success` / `session_failure` with `exitCode` |
//!
//! A session status's event is [`SessionStatus::event_name`], limited to
//! the ones the 23.09 reference forwards ([`FORWARDED_SESSION_EVENTS`]:
//! not `session_preparing`). `exitCode` is set for `kernel_terminating`,
//! `kernel_terminated`, `session_success` and `session_failure`.
//!
//! The frames need each session's name, owner and kernels. A stream keeps
//! them in memory per session, from the `SessionEnqueued` events it sees;
//! a session enqueued before the stream began is read once from the
//! `sessions`/`kernels` read models (or, should the projection not have
//! reached it yet, from its own stream in the log). A session is forgotten
//! once it is terminated or cancelled.
//!
//! # Filters and visibility
//! `sessionId` picks one session; otherwise `name`/`sessionName` picks the
//! session of that name owned by `ownerAccessKey` (default: the caller;
//! `owner_access_key` is accepted as an alias, as client 23.9.10 sends it
//! with `-o`); `*` is every session. `group`/`groupName` narrows to a
//! project (by name; unknown → 404). `scope` is `*`, `session` (only
//! `session_*` frames) or `kernel` (only `kernel_*`). A superadmin sees every
//! session, a domain admin its domain's, anyone else its own (as user);
//! a non-admin asking for another `ownerAccessKey` is 403.
//!
//! # How a stream ends
//! The reference's stream never ends on its own. Here a stream for **one
//! session** (`sessionId`, or a name other than `*`) ends with
//! `event: server_close` / `data: {}` right after that session's
//! `session_terminated` or `session_cancelled` (also when its scope hides
//! those frames), which is what `backend.ai session events NAME` users
//! expect: the command returns when the session is gone. A `sessionId`
//! stream of a session already dead ends at once the same way. A stream for
//! `*` runs until the client leaves. Every stream also ends with
//! `server_close` when the server shuts down ([`EventStreams::new`]'s
//! `closing`), so that clients do not reconnect to a server going away.
//! A comment line `: ping` is sent every 15 s, which also notices clients
//! that left. The gauge `session_event_streams_open` counts open streams.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use diesel::QueryableByName;
use diesel::sql_types::{Integer, Text, Uuid as SqlUuid};
use futures::{Stream, StreamExt};
use manager_events::auth::AuthContext;
use manager_events::codec::decode;
use manager_events::session::{
    self, KernelStatus, Owner, SessionEvent, SessionResult, SessionSpec, SessionStatus,
};
use manager_events::user::UserRole;
use manager_events::{EventStore, Problem, ProblemKind, RecordedEvent};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use uuid::Uuid;

/// How often a stream sends `: ping` (the reference's interval).
pub const PING_INTERVAL: Duration = Duration::from_secs(15);

/// The session events the 23.09 reference forwards to this stream.
pub const FORWARDED_SESSION_EVENTS: [&str; 8] = [
    "session_enqueued",
    "session_scheduled",
    "session_started",
    "session_cancelled",
    "session_terminating",
    "session_terminated",
    "session_success",
    "session_failure",
];

/// The gauge of open session streams.
pub const OPEN_STREAMS_GAUGE: &str = "session_event_streams_open";

/// The frames after which a session is over.
const ENDING: [&str; 2] = ["session_terminated", "session_cancelled"];

/// What the SSE endpoints need: the log to follow and the server's
/// shutdown. Give it to the app as `web::Data<EventStreams>`.
#[derive(Clone)]
pub struct EventStreams {
    store: EventStore,
    closing: watch::Receiver<bool>,
    ping: Duration,
}

impl EventStreams {
    /// Streams over `store`'s log; every open stream sends `server_close`
    /// and ends once `closing` turns true (or its sender is dropped).
    pub fn new(store: EventStore, closing: watch::Receiver<bool>) -> Self {
        metrics::describe_gauge!(
            OPEN_STREAMS_GAUGE,
            "Session event streams (GET /events/session) open now."
        );
        EventStreams {
            store,
            closing,
            ping: PING_INTERVAL,
        }
    }

    /// Pings every `every` instead of [`PING_INTERVAL`].
    pub fn with_ping_interval(mut self, every: Duration) -> Self {
        self.ping = every;
        self
    }
}

/// Which frames a stream carries, by their name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every frame.
    All,
    /// `session_*` frames only.
    Session,
    /// `kernel_*` frames only.
    Kernel,
}

impl Scope {
    /// Reads the `scope` parameter.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "*" => Some(Scope::All),
            "session" => Some(Scope::Session),
            "kernel" => Some(Scope::Kernel),
            _ => None,
        }
    }

    /// Whether a frame named `event` goes out.
    pub fn admits(self, event: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Session => event.starts_with("session_"),
            Scope::Kernel => event.starts_with("kernel_"),
        }
    }
}

/// One kernel of a session, as frames name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFacts {
    /// The kernel's id.
    pub id: Uuid,
    /// `main` or `sub`.
    pub cluster_role: String,
    /// Its index within its role (from 1).
    pub cluster_idx: i64,
}

/// What a stream knows of a session: enough to filter and to fill frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// Its current name.
    pub name: String,
    /// Its owner's keypair.
    pub access_key: String,
    /// Its owner's domain.
    pub domain_name: String,
    /// Its project.
    pub project_id: Uuid,
    /// Its owner.
    pub user_id: Uuid,
    /// Its kernels, the main kernel first.
    pub kernels: Vec<KernelFacts>,
}

impl SessionFacts {
    /// The facts an enqueue states.
    pub fn enqueued(owner: &Owner, spec: &SessionSpec) -> Self {
        SessionFacts {
            name: spec.name.clone(),
            access_key: owner.access_key.clone(),
            domain_name: owner.domain_name.clone(),
            project_id: owner.project_id,
            user_id: owner.user_id,
            kernels: spec
                .kernels
                .iter()
                .map(|k| KernelFacts {
                    id: k.id,
                    cluster_role: k.cluster_role.clone(),
                    cluster_idx: i64::from(k.cluster_idx),
                })
                .collect(),
        }
    }
}

/// One SSE frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The event's name (`session_started`…).
    pub event: &'static str,
    /// Its data, a JSON object.
    pub data: Value,
}

impl Frame {
    /// `event: <name>\ndata: <json>\n\n`.
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!("event: {}\ndata: {}\n\n", self.event, self.data))
    }
}

/// The frame that ends a stream.
fn server_close() -> Bytes {
    Bytes::from_static(b"event: server_close\ndata: {}\n\n")
}

fn session_frame(
    event: &'static str,
    id: Uuid,
    facts: &SessionFacts,
    reason: &str,
    exit_code: Option<i32>,
) -> Frame {
    let mut data = Map::new();
    data.insert("reason".into(), json!(reason));
    data.insert("sessionName".into(), json!(facts.name));
    data.insert("ownerAccessKey".into(), json!(facts.access_key));
    data.insert("sessionId".into(), json!(id.to_string()));
    data.insert("exitCode".into(), json!(exit_code));
    if let Some(main) = facts.kernels.first() {
        data.insert("kernelId".into(), json!(main.id.to_string()));
    }
    Frame {
        event,
        data: Value::Object(data),
    }
}

fn kernel_frame(
    event: &'static str,
    id: Uuid,
    facts: &SessionFacts,
    kernel: Uuid,
    reason: &str,
    exit_code: Option<i32>,
) -> Frame {
    let mut frame = session_frame(event, id, facts, reason, exit_code);
    if let Value::Object(data) = &mut frame.data {
        data.insert("kernelId".into(), json!(kernel.to_string()));
        if let Some(k) = facts.kernels.iter().find(|k| k.id == kernel) {
            if !k.cluster_role.is_empty() {
                data.insert("clusterRole".into(), json!(k.cluster_role));
            }
            if k.cluster_idx != 0 {
                data.insert("clusterIdx".into(), json!(k.cluster_idx));
            }
        }
    }
    frame
}

/// The kernel event the reference sends for a kernel entering `status`.
fn kernel_event(status: KernelStatus) -> Option<&'static str> {
    Some(match status {
        KernelStatus::Preparing => "kernel_preparing",
        KernelStatus::Pulling => "kernel_pulling",
        KernelStatus::Creating => "kernel_creating",
        KernelStatus::Running => "kernel_started",
        KernelStatus::Terminating => "kernel_terminating",
        KernelStatus::Terminated => "kernel_terminated",
        KernelStatus::Cancelled => "kernel_cancelled",
        _ => return None,
    })
}

/// The session event the reference sends for a session entering `status`.
fn session_event(status: SessionStatus) -> Option<&'static str> {
    status
        .event_name()
        .filter(|name| FORWARDED_SESSION_EVENTS.contains(name))
}

/// The frames for one event of session `id`, whose facts (as of this
/// event) are `facts`. Pure: the whole mapping of the log to the stream.
pub fn frames(id: Uuid, facts: &SessionFacts, event: &SessionEvent) -> Vec<Frame> {
    let session = |name, reason: &str, exit| session_frame(name, id, facts, reason, exit);
    let kernel = |name, k, reason: &str, exit| kernel_frame(name, id, facts, k, reason, exit);
    match event {
        SessionEvent::SessionEnqueued { .. } => vec![session("session_enqueued", "", None)],
        SessionEvent::SessionScheduled { .. } => vec![session("session_scheduled", "", None)],
        SessionEvent::SessionCancelled { reason } => {
            let mut out: Vec<Frame> = facts
                .kernels
                .iter()
                .map(|k| kernel("kernel_cancelled", k.id, reason, None))
                .collect();
            out.push(session("session_cancelled", reason, None));
            out
        }
        SessionEvent::KernelsTransitioned {
            kernels,
            status,
            reason,
            exit_code,
            session_status,
            ..
        } => {
            let mut out = Vec::new();
            if let Some(name) = kernel_event(*status) {
                let exit = match status {
                    KernelStatus::Terminating | KernelStatus::Terminated => *exit_code,
                    _ => None,
                };
                out.extend(kernels.iter().map(|k| kernel(name, *k, reason, exit)));
            }
            if let Some(name) = session_status.and_then(session_event) {
                let exit = if name == "session_failure" {
                    *exit_code
                } else {
                    None
                };
                out.push(session(name, reason, exit));
            }
            out
        }
        SessionEvent::KernelStarted {
            kernel_id,
            session_status,
            ..
        } => {
            let mut out = vec![kernel("kernel_started", *kernel_id, "", None)];
            if let Some(name) = session_status.and_then(session_event) {
                out.push(session(name, "", None));
            }
            out
        }
        SessionEvent::SessionResultRecorded { result, exit_code } => match result {
            SessionResult::Success => vec![session("session_success", "", *exit_code)],
            SessionResult::Failure => vec![session("session_failure", "", *exit_code)],
            SessionResult::Undefined => Vec::new(),
        },
        SessionEvent::SchedulingDeferred { .. } | SessionEvent::SessionRenamed { .. } => Vec::new(),
    }
}

/// Whose sessions a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Viewer {
    /// A superadmin: every session.
    All,
    /// A domain admin: its domain's.
    Domain(String),
    /// Anyone else: its own.
    User { domain: String, user: Uuid },
}

/// What one stream carries.
#[derive(Debug, Clone)]
struct Filter {
    viewer: Viewer,
    session_id: Option<Uuid>,
    /// A session name (with `owner`), or `None` for `*`.
    name: Option<String>,
    owner: String,
    /// The projects of `group`, or `None` for `*`.
    projects: Option<Vec<Uuid>>,
    scope: Scope,
}

impl Filter {
    /// Whether the stream is about one session (and ends with it).
    fn one_session(&self) -> bool {
        self.session_id.is_some() || self.name.is_some()
    }

    fn admits(&self, id: Uuid, facts: &SessionFacts) -> bool {
        let visible = match &self.viewer {
            Viewer::All => true,
            Viewer::Domain(d) => facts.domain_name == *d,
            Viewer::User { domain, user } => facts.domain_name == *domain && facts.user_id == *user,
        };
        let in_project = self
            .projects
            .as_ref()
            .is_none_or(|p| p.contains(&facts.project_id));
        let picked = match (self.session_id, &self.name) {
            (Some(want), _) => id == want,
            (None, Some(name)) => facts.name == *name && facts.access_key == self.owner,
            (None, None) => true,
        };
        visible && in_project && picked
    }
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::new(ProblemKind::ServiceUnavailable).msg(e.to_string())
}

fn invalid(errors: Map<String, Value>) -> Problem {
    Problem::new(ProblemKind::InvalidApiParams)
        .msg("Input validation error")
        .data(Value::Object(errors))
}

/// The query parameters, by name (a key given twice keeps its first value).
fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, Problem> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| Problem::new(ProblemKind::InvalidApiParams).msg("Malformed query"))
}

/// Reads the parameters of `GET /events/session`.
async fn filter_of(
    ctx: &AuthContext,
    req: &HttpRequest,
    store: &EventStore,
) -> Result<Filter, Problem> {
    let mut errors = Map::new();
    let (mut name, mut owner, mut session_id, mut group, mut scope) =
        (None, None, None, None, None);
    for (k, v) in query_pairs(req)? {
        let slot = match k.as_str() {
            "name" | "sessionName" => &mut name,
            "ownerAccessKey" | "owner_access_key" => &mut owner,
            "sessionId" => &mut session_id,
            "group" | "groupName" => &mut group,
            "scope" => &mut scope,
            _ => {
                errors.insert(k, json!("unknown key"));
                continue;
            }
        };
        slot.get_or_insert(v);
    }
    let session_id = match session_id.as_deref().map(str::parse::<Uuid>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            errors.insert("sessionId".into(), json!("not a valid UUID"));
            None
        }
    };
    let scope = match scope.as_deref().map_or(Some(Scope::All), Scope::parse) {
        Some(s) => s,
        None => {
            errors.insert(
                "scope".into(),
                json!("must be one of '*', 'session', 'kernel'"),
            );
            Scope::All
        }
    };
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let owner = owner.unwrap_or_else(|| ctx.access_key.clone());
    if !ctx.is_domain_admin() && owner != ctx.access_key {
        return Err(Problem::new(ProblemKind::GenericForbidden)
            .msg("you may only follow your own sessions"));
    }
    let projects = match group.filter(|g| g != "*") {
        None => None,
        Some(g) => {
            let ids = project_ids(store, &g).await?;
            if ids.is_empty() {
                return Err(Problem::new(ProblemKind::ObjectNotFound(
                    "user group (or project)",
                )));
            }
            Some(ids)
        }
    };
    let viewer = match ctx.role {
        UserRole::Superadmin => Viewer::All,
        UserRole::Admin => Viewer::Domain(ctx.domain_name.clone()),
        UserRole::User | UserRole::Monitor => Viewer::User {
            domain: ctx.domain_name.clone(),
            user: ctx.user_uuid,
        },
    };
    Ok(Filter {
        viewer,
        session_id,
        name: name.filter(|n| n != "*"),
        owner,
        projects,
        scope,
    })
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
}

/// The projects named `name` (in any domain; visibility filters the rest).
async fn project_ids(store: &EventStore, name: &str) -> Result<Vec<Uuid>, Problem> {
    use diesel_async::RunQueryDsl;
    let mut conn = store.pool().get().await.map_err(unavailable)?;
    let rows: Vec<IdRow> = manager_events::prepared("SELECT id FROM groups WHERE name = $1")
        .bind::<Text, _>(name)
        .load(&mut conn)
        .await
        .map_err(unavailable)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

#[derive(QueryableByName)]
struct SessionRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    access_key: String,
    #[diesel(sql_type = Text)]
    domain_name: String,
    #[diesel(sql_type = SqlUuid)]
    group_id: Uuid,
    #[diesel(sql_type = SqlUuid)]
    user_uuid: Uuid,
    #[diesel(sql_type = Text)]
    status: String,
}

#[derive(QueryableByName)]
struct KernelRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    cluster_role: String,
    #[diesel(sql_type = Integer)]
    cluster_idx: i32,
}

/// A session that began before the stream: its facts, and whether it is
/// dead. From the read models; from its stream in the log when the
/// projection has not reached it yet. `None` when it does not exist (or
/// the database cannot be read).
async fn load_facts(store: &EventStore, id: Uuid) -> Option<(SessionFacts, bool)> {
    match read_model_facts(store, id).await {
        Ok(Some(found)) => return Some(found),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, session = %id, "session events: reading the read models failed")
        }
    }
    log_facts(store, id).await
}

/// A session's facts, and whether it is dead, from its own stream in the
/// log (what the read models will say once they have caught up).
async fn log_facts(store: &EventStore, id: Uuid) -> Option<(SessionFacts, bool)> {
    let events = match store.read_stream(&session::stream_id(id), 0).await {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, session = %id, "session events: reading a session's stream failed");
            return None;
        }
    };
    let mut facts: Option<SessionFacts> = None;
    let mut dead = false;
    for e in events {
        match decode::<SessionEvent>(&e.event_type, &e.payload) {
            Ok(SessionEvent::SessionEnqueued { owner, spec, .. }) => {
                facts = Some(SessionFacts::enqueued(&owner, &spec));
            }
            Ok(SessionEvent::SessionRenamed { name }) => {
                if let Some(f) = &mut facts {
                    f.name = name;
                }
            }
            Ok(SessionEvent::SessionCancelled { .. }) => dead = true,
            Ok(
                SessionEvent::KernelsTransitioned {
                    session_status: Some(s),
                    ..
                }
                | SessionEvent::KernelStarted {
                    session_status: Some(s),
                    ..
                },
            ) => dead = s.is_dead(),
            _ => {}
        }
    }
    facts.map(|f| (f, dead))
}

async fn read_model_facts(
    store: &EventStore,
    id: Uuid,
) -> Result<Option<(SessionFacts, bool)>, Problem> {
    use diesel_async::RunQueryDsl;
    let mut conn = store.pool().get().await.map_err(unavailable)?;
    let Some(s) = manager_events::prepared(
        "SELECT name, access_key, domain_name, group_id, user_uuid, status \
         FROM sessions WHERE id = $1",
    )
    .bind::<SqlUuid, _>(id)
    .load::<SessionRow>(&mut conn)
    .await
    .map_err(unavailable)?
    .into_iter()
    .next() else {
        return Ok(None);
    };
    let kernels: Vec<KernelRow> = manager_events::prepared(
        "SELECT id, cluster_role, cluster_idx FROM kernels WHERE session_id = $1 \
         ORDER BY local_rank",
    )
    .bind::<SqlUuid, _>(id)
    .load(&mut conn)
    .await
    .map_err(unavailable)?;
    let dead = SessionStatus::parse(&s.status).is_some_and(SessionStatus::is_dead);
    Ok(Some((
        SessionFacts {
            name: s.name,
            access_key: s.access_key,
            domain_name: s.domain_name,
            project_id: s.group_id,
            user_id: s.user_uuid,
            kernels: kernels
                .into_iter()
                .map(|k| KernelFacts {
                    id: k.id,
                    cluster_role: k.cluster_role,
                    cluster_idx: i64::from(k.cluster_idx),
                })
                .collect(),
        },
        dead,
    )))
}

type LogStream =
    std::pin::Pin<Box<dyn Stream<Item = manager_events::error::Result<RecordedEvent>> + Send>>;

/// One open session stream.
struct Follow {
    store: EventStore,
    events: LogStream,
    filter: Filter,
    known: HashMap<Uuid, SessionFacts>,
    pending: VecDeque<Bytes>,
    ping: tokio::time::Interval,
    closing: watch::Receiver<bool>,
    finished: bool,
}

impl Drop for Follow {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_STREAMS_GAUGE).decrement(1.0);
    }
}

enum Step {
    Close,
    Ping,
    Event(Box<RecordedEvent>),
    Nothing,
}

impl Follow {
    fn close(&mut self) {
        self.pending.push_back(server_close());
        self.finished = true;
    }

    /// The next chunk of the body; `None` ends it.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.finished {
                return None;
            }
            let step = tokio::select! {
                biased;
                _ = self.closing.wait_for(|closing| *closing) => Step::Close,
                _ = self.ping.tick() => Step::Ping,
                next = self.events.next() => match next {
                    Some(Ok(recorded)) => Step::Event(Box::new(recorded)),
                    Some(Err(e)) => {
                        // The subscription retries by itself.
                        tracing::warn!(error = %e, "session events: reading the log failed");
                        Step::Nothing
                    }
                    None => Step::Close,
                },
            };
            match step {
                Step::Close => self.close(),
                Step::Ping => self.pending.push_back(Bytes::from_static(b": ping\n\n")),
                Step::Event(recorded) => self.observe(&recorded).await,
                Step::Nothing => {}
            }
        }
    }

    async fn observe(&mut self, e: &RecordedEvent) {
        if e.stream_type != session::STREAM_TYPE {
            return;
        }
        let Some(id) = e
            .stream_id
            .strip_prefix("session:")
            .and_then(|s| s.parse::<Uuid>().ok())
        else {
            return;
        };
        if self.filter.session_id.is_some_and(|want| want != id) {
            return;
        }
        let event = match decode::<SessionEvent>(&e.event_type, &e.payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(position = e.position, error = %err, "session events: event not understood; skipped");
                return;
            }
        };
        match &event {
            SessionEvent::SessionEnqueued { owner, spec, .. } => {
                self.known.insert(id, SessionFacts::enqueued(owner, spec));
            }
            SessionEvent::SessionRenamed { name } => {
                if let Some(f) = self.known.get_mut(&id) {
                    f.name.clone_from(name);
                }
                return;
            }
            SessionEvent::SchedulingDeferred { .. } => return,
            _ => {}
        }
        if !self.known.contains_key(&id) {
            match load_facts(&self.store, id).await {
                Some((facts, _)) => {
                    self.known.insert(id, facts);
                }
                None => {
                    tracing::warn!(session = %id, "session events: a session of unknown facts; skipped");
                    return;
                }
            }
        }
        let Some(facts) = self.known.get(&id) else {
            return;
        };
        let admitted = self.filter.admits(id, facts);
        let frames = frames(id, facts, &event);
        let ends = frames.iter().any(|f| ENDING.contains(&f.event));
        if admitted {
            for f in frames.iter().filter(|f| self.filter.scope.admits(f.event)) {
                self.pending.push_back(f.encode());
            }
        }
        if ends {
            self.known.remove(&id);
            if admitted && self.filter.one_session() {
                self.close();
            }
        }
    }
}

/// `GET /events/session`: session and kernel lifecycle events as
/// server-sent events (see the module documentation).
pub async fn session_events(
    ctx: AuthContext,
    req: HttpRequest,
    streams: web::Data<EventStreams>,
) -> Result<HttpResponse, Problem> {
    let filter = filter_of(&ctx, &req, &streams.store).await?;
    let head = streams.store.head_position().await.map_err(unavailable)?;
    let mut follow = Follow {
        store: streams.store.clone(),
        events: Box::pin(streams.store.subscribe(head)),
        filter,
        known: HashMap::new(),
        pending: VecDeque::new(),
        ping: {
            let mut ping =
                tokio::time::interval_at(tokio::time::Instant::now() + streams.ping, streams.ping);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ping
        },
        closing: streams.closing.clone(),
        finished: false,
    };
    metrics::gauge!(OPEN_STREAMS_GAUGE).increment(1.0);
    // A session that is already over has nothing more to say. (Asked of
    // the log: the read models may not show its end yet.)
    if let Some(id) = follow.filter.session_id
        && let Some((facts, true)) = log_facts(&streams.store, id).await
        && follow.filter.admits(id, &facts)
    {
        follow.close();
    }
    if *follow.closing.borrow() {
        follow.close();
    }
    let body = futures::stream::unfold(follow, |mut f| async move {
        f.next_chunk()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), f))
    });
    Ok(sse_response().streaming(body))
}

/// The response head of a stream. (`Connection: keep-alive` is what
/// HTTP/1.1 means anyway; actix manages that header itself.)
fn sse_response() -> actix_web::HttpResponseBuilder {
    let mut r = HttpResponse::Ok();
    r.content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"));
    r
}

/// `GET /events/background-task`: progress of a background task. No
/// background tasks exist yet, so a well-formed `task_id` (or `taskId`) is
/// 404 "No such background task."; a missing or malformed one, or an
/// unknown key, is 400.
pub async fn background_task_events(
    _ctx: AuthContext,
    req: HttpRequest,
) -> Result<HttpResponse, Problem> {
    let mut errors = Map::new();
    let mut task = None;
    for (k, v) in query_pairs(&req)? {
        match k.as_str() {
            "task_id" | "taskId" => {
                task.get_or_insert(v);
            }
            _ => {
                errors.insert(k, json!("unknown key"));
            }
        }
    }
    match task.as_deref().map(str::parse::<Uuid>) {
        None => {
            errors.insert("task_id".into(), json!("is required"));
        }
        Some(Err(_)) => {
            errors.insert("task_id".into(), json!("not a valid UUID"));
        }
        Some(Ok(_)) => {}
    }
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let task = task.unwrap_or_default();
    Err(Problem::new(ProblemKind::ObjectNotFound("background task"))
        .msg(format!("no background task {task}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use manager_events::session::KernelPlacement;

    fn facts() -> SessionFacts {
        SessionFacts {
            name: "s1".into(),
            access_key: "AK".into(),
            domain_name: "default".into(),
            project_id: Uuid::nil(),
            user_id: Uuid::nil(),
            kernels: vec![
                KernelFacts {
                    id: Uuid::from_u128(1),
                    cluster_role: "main".into(),
                    cluster_idx: 1,
                },
                KernelFacts {
                    id: Uuid::from_u128(2),
                    cluster_role: "sub".into(),
                    cluster_idx: 1,
                },
            ],
        }
    }

    fn names(frames: &[Frame]) -> Vec<&'static str> {
        frames.iter().map(|f| f.event).collect()
    }

    #[test]
    fn each_event_becomes_the_references_frames() {
        let id = Uuid::from_u128(9);
        let f = facts();
        let k = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let transitioned = |status, session_status, exit_code| SessionEvent::KernelsTransitioned {
            kernels: k.to_vec(),
            status,
            reason: "user-requested".into(),
            exit_code,
            error: None,
            session_status,
        };
        let cases: Vec<(SessionEvent, Vec<&str>)> = vec![
            (
                SessionEvent::SessionScheduled {
                    scaling_group: "default".into(),
                    kernels: vec![KernelPlacement {
                        kernel_id: k[0],
                        agent_id: "i-a".into(),
                        agent_addr: "tcp://a".into(),
                    }],
                },
                vec!["session_scheduled"],
            ),
            (
                transitioned(
                    KernelStatus::Preparing,
                    Some(SessionStatus::Preparing),
                    None,
                ),
                vec!["kernel_preparing", "kernel_preparing"],
            ),
            (
                transitioned(KernelStatus::Prepared, Some(SessionStatus::Prepared), None),
                vec![],
            ),
            (
                transitioned(
                    KernelStatus::Terminated,
                    Some(SessionStatus::Terminated),
                    Some(3),
                ),
                vec![
                    "kernel_terminated",
                    "kernel_terminated",
                    "session_terminated",
                ],
            ),
            (
                SessionEvent::SessionCancelled {
                    reason: "user-requested".into(),
                },
                vec!["kernel_cancelled", "kernel_cancelled", "session_cancelled"],
            ),
            (
                SessionEvent::KernelStarted {
                    kernel_id: k[1],
                    container_id: "c".into(),
                    kernel_host: "h".into(),
                    repl_in_port: 0,
                    repl_out_port: 0,
                    service_ports: vec![],
                    occupied_slots: Default::default(),
                    session_status: Some(SessionStatus::Running),
                },
                vec!["kernel_started", "session_started"],
            ),
            (
                SessionEvent::SessionResultRecorded {
                    result: SessionResult::Failure,
                    exit_code: Some(2),
                },
                vec!["session_failure"],
            ),
            (SessionEvent::SessionRenamed { name: "x".into() }, vec![]),
        ];
        for (event, expected) in cases {
            assert_eq!(names(&frames(id, &f, &event)), expected, "{event:?}");
        }

        let out = frames(
            id,
            &f,
            &transitioned(
                KernelStatus::Terminated,
                Some(SessionStatus::Terminated),
                Some(3),
            ),
        );
        assert_eq!(
            out[1].data,
            json!({"reason": "user-requested", "sessionName": "s1", "ownerAccessKey": "AK",
                   "sessionId": id.to_string(), "exitCode": 3, "kernelId": k[1].to_string(),
                   "clusterRole": "sub", "clusterIdx": 1})
        );
        // Session frames name the main kernel and carry no exit code.
        assert_eq!(
            out[2].data,
            json!({"reason": "user-requested", "sessionName": "s1", "ownerAccessKey": "AK",
                   "sessionId": id.to_string(), "exitCode": null, "kernelId": k[0].to_string()})
        );
        assert_eq!(
            String::from_utf8(out[2].encode().to_vec()).unwrap(),
            format!("event: session_terminated\ndata: {}\n\n", out[2].data)
        );
    }

    #[test]
    fn filters_pick_by_id_or_name_and_owner_and_respect_visibility() {
        let id = Uuid::from_u128(9);
        let f = facts();
        let base = Filter {
            viewer: Viewer::All,
            session_id: None,
            name: None,
            owner: "AK".into(),
            projects: None,
            scope: Scope::All,
        };
        assert!(base.admits(id, &f));
        assert!(!base.one_session());
        let named = Filter {
            name: Some("s1".into()),
            ..base.clone()
        };
        assert!(named.admits(id, &f) && named.one_session());
        let other_owner = Filter {
            owner: "OTHER".into(),
            ..named.clone()
        };
        assert!(!other_owner.admits(id, &f));
        let by_id = Filter {
            session_id: Some(Uuid::from_u128(8)),
            ..named.clone()
        };
        assert!(!by_id.admits(id, &f));
        let foreign_domain = Filter {
            viewer: Viewer::Domain("other".into()),
            ..base.clone()
        };
        assert!(!foreign_domain.admits(id, &f));
        let another_user = Filter {
            viewer: Viewer::User {
                domain: "default".into(),
                user: Uuid::from_u128(5),
            },
            ..base.clone()
        };
        assert!(!another_user.admits(id, &f));
        let other_project = Filter {
            projects: Some(vec![Uuid::from_u128(7)]),
            ..base
        };
        assert!(!other_project.admits(id, &f));
        assert!(Scope::Session.admits("session_started"));
        assert!(!Scope::Session.admits("kernel_started"));
        assert!(Scope::Kernel.admits("kernel_started"));
        assert_eq!(Scope::parse("bogus"), None);
    }
}
