//! GraphQL at `/admin/gql` and `/admin/graphql` (API spec §5), with juniper.
//!
//! Queries read the read models with the reference's scoping per role;
//! mutations send commands through the [`CommandPort`] and never touch the
//! write side directly. Field names are snake_case as the reference's;
//! introspection is off unless configured.
//!
//! `/admin/gql` always answers 200 with `{"data": ..., "errors": [...]}`;
//! the legacy `/admin/graphql` answers the bare `data`, or 400 problem+json
//! (`graphql-error`) with the errors as `data`.

mod agents;
mod cache;
mod eager;
mod images;
mod mutation;
mod query;
mod scalars;
mod sessions;
mod sql;
mod types;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use juniper::{DefaultScalarValue, EmptySubscription, InputValue, RootNode, Variables};
use manager_events::auth::AuthContext;
use manager_events::port::{AdminCommand, CommandPort, Submitted};
use manager_events::secrets::KeyStore;
use manager_events::{PgPool, Problem, ProblemKind};
use serde::Deserialize;

pub use cache::ResponseCache;
pub use eager::Eager;
pub use mutation::Mutation;
pub use query::{KEYPAIR_FIELDS, Query, USER_FIELDS};
pub use scalars::{BigInt, DateTime, JsonString};

use crate::freshness::{Freshness, LastWrite};

/// The schema.
pub type Schema = RootNode<Query, Mutation, EmptySubscription<Context>>;

/// Builds the schema; introspection only when `introspection` is set.
pub fn schema(introspection: bool) -> Schema {
    let schema = Schema::new(Query, Mutation, EmptySubscription::new());
    if introspection {
        schema
    } else {
        schema.disable_introspection()
    }
}

/// What the GraphQL endpoints share across requests.
pub struct GraphQl {
    /// The schema (kept for the life of the process: validated documents
    /// refer to it).
    schema: &'static Schema,
    /// The read models.
    pool: PgPool,
    /// Opens secret keys when a client selects `secret_key`.
    keys: KeyStore,
    /// Where mutations go.
    commands: Arc<dyn CommandPort>,
    /// Waits for the read models after a mutation.
    freshness: Arc<Freshness>,
    /// Documents parsed and validated before.
    operations: Operations,
    /// Query responses kept while the read models stand still.
    cache: ResponseCache,
}

impl GraphQl {
    /// The endpoints' shared state. The schema is kept for the life of the
    /// process (one per server).
    pub fn new(
        schema: Schema,
        pool: PgPool,
        keys: KeyStore,
        commands: Arc<dyn CommandPort>,
        freshness: Arc<Freshness>,
        cache: ResponseCache,
    ) -> Self {
        GraphQl {
            schema: Box::leak(Box::new(schema)),
            pool,
            keys,
            commands,
            freshness,
            operations: Operations::default(),
            cache,
        }
    }
}

type Operation<'a> = juniper::ValidatedOperation<'a, Query, Mutation, EmptySubscription<Context>>;

/// Validated documents by text, then by operation name (looked up without
/// copying the request's text).
type KeptOperations =
    std::collections::HashMap<String, Vec<(Option<String>, Arc<Operation<'static>>)>>;

/// Distinct documents kept parsed and validated, at most.
const CACHED_DOCUMENTS: usize = 256;
/// Documents longer than this are parsed and validated on every request.
const CACHED_DOCUMENT_BYTES: usize = 16 * 1024;

/// Parsed and validated documents by text and operation name: clients send
/// the same few documents over and over (the official CLI's are fixed), and
/// parsing and validating one costs more than executing a small query. The
/// first [`CACHED_DOCUMENTS`] valid documents of up to
/// [`CACHED_DOCUMENT_BYTES`] are kept for the life of the process (never
/// evicted: a kept document is referred to by its validated form).
#[derive(Default)]
struct Operations {
    kept: std::sync::RwLock<KeptOperations>,
}

/// A document ready to execute: kept, or validated for this request only.
enum Ready<'a> {
    Kept(Arc<Operation<'static>>),
    Once(Box<Operation<'a>>),
}

impl Operations {
    fn get(&self, document: &str, operation: Option<&str>) -> Option<Arc<Operation<'static>>> {
        let kept = self.kept.read().ok()?;
        kept.get(document)?
            .iter()
            .find(|(name, _)| name.as_deref() == operation)
            .map(|(_, op)| Arc::clone(op))
    }

    fn ready<'a>(
        &self,
        schema: &'static Schema,
        document: &'a str,
        operation: Option<&'a str>,
    ) -> Result<Ready<'a>, juniper::GraphQLError> {
        if let Some(op) = self.get(document, operation) {
            return Ok(Ready::Kept(op));
        }
        let once = Operation::new(document, operation, schema)?;
        let room = document.len() <= CACHED_DOCUMENT_BYTES
            && self.kept.read().is_ok_and(|k| k.len() < CACHED_DOCUMENTS);
        if !room {
            return Ok(Ready::Once(Box::new(once)));
        }
        // Valid, and there is room: keep a copy for good.
        let text: &'static str = Box::leak(document.to_owned().into_boxed_str());
        let Ok(kept) = Operation::new(text, operation, schema) else {
            return Ok(Ready::Once(Box::new(once)));
        };
        let kept = Arc::new(kept);
        if let Ok(mut map) = self.kept.write()
            && map.len() < CACHED_DOCUMENTS
        {
            let ops = map.entry(document.to_owned()).or_default();
            if !ops.iter().any(|(name, _)| name.as_deref() == operation) {
                ops.push((operation.map(str::to_owned), Arc::clone(&kept)));
            }
        }
        Ok(Ready::Kept(kept))
    }
}

/// One request's context.
pub struct Context {
    pool: PgPool,
    keys: KeyStore,
    actor: AuthContext,
    commands: Arc<dyn CommandPort>,
    freshness: Arc<Freshness>,
    idempotency_key: Option<String>,
    mutations: AtomicUsize,
    /// The caller's last write a read of the read models must wait for
    /// (mutations only: a query waited before it ran). Taken by the first
    /// read, or made moot by the first command that appends (it lands after
    /// every write acknowledged before this request began).
    last_write: std::sync::Mutex<Option<u64>>,
}

impl juniper::Context for Context {}

impl Context {
    /// A connection to the read models, once they show the caller's writes.
    async fn connection(&self) -> juniper::FieldResult<manager_events::PgConn> {
        self.read_models().await;
        self.pool.get().await.map_err(sql::pool_error)
    }

    /// Waits (once, bounded) for the caller's last write to be projected.
    async fn read_models(&self) {
        let pending = self.last_write.lock().map_or(None, |mut w| w.take());
        if let Some(position) = pending {
            self.freshness.wait_for(position).await;
        }
    }

    /// Sends a command; on success waits until the read models show it.
    async fn submit(&self, command: AdminCommand) -> Result<Submitted, String> {
        let submitted = self.send(command).await?;
        self.shown(&submitted).await;
        Ok(submitted)
    }

    /// Sends a command without waiting for the read models.
    async fn send(&self, command: AdminCommand) -> Result<Submitted, String> {
        // Several mutations in one document share the request's key: number
        // them, so that each is deduplicated on its own.
        let key = self.idempotency_key.as_ref().map(|k| {
            match self.mutations.fetch_add(1, Ordering::Relaxed) {
                0 => k.clone(),
                n => format!("{k}#{n}"),
            }
        });
        let submitted = self
            .commands
            .submit(&self.actor, command, key)
            .await
            .map_err(|problem| problem.msg.unwrap_or_else(|| problem.kind.title()))?;
        // An append of this request lands after every write acknowledged
        // before the request began (the log is appended in order).
        if submitted.position.is_some()
            && !submitted.deduplicated
            && let Ok(mut w) = self.last_write.lock()
        {
            *w = None;
        }
        Ok(submitted)
    }

    /// Waits until the read models show `submitted` and the caller's writes.
    async fn shown(&self, submitted: &Submitted) {
        let pending = self.last_write.lock().map_or(None, |mut w| w.take());
        if let Some(position) = submitted.position.max(pending) {
            self.freshness.wait_for(position).await;
        }
    }
}

/// The request body: the reference rejects other keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    query: String,
    #[serde(default)]
    variables: Option<InputValue<DefaultScalarValue>>,
    #[serde(default, alias = "operationName")]
    operation_name: Option<String>,
}

/// The `Idempotency-Key` header, when present.
pub fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, Problem> {
    let Some(value) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            Problem::new(ProblemKind::InvalidApiParams)
                .msg("Idempotency-Key must be 1 to 255 visible ASCII characters")
        })?;
    Ok(Some(key.to_owned()))
}

type Outcome = Result<
    (
        juniper::Value<DefaultScalarValue>,
        Vec<juniper::ExecutionError<DefaultScalarValue>>,
    ),
    juniper::GraphQLError,
>;

/// What became of a request.
enum Ran {
    /// A kept response (see [`ResponseCache`]).
    Kept(web::Bytes),
    /// Executed; a query's clean response may be kept under `keep`.
    Done {
        outcome: Box<Outcome>,
        keep: Option<(cache::Version, cache::Key)>,
        /// Answered before the read models showed the caller's last write.
        stale: bool,
    },
}

impl Ready<'_> {
    fn is_query(&self) -> bool {
        let kind = match self {
            Ready::Kept(op) => op.operation_type(),
            Ready::Once(op) => op.operation_type(),
        };
        kind == juniper::OperationType::Query
    }
}

async fn run(
    gql: &GraphQl,
    actor: AuthContext,
    req: &HttpRequest,
    body: &[u8],
    legacy: bool,
) -> Result<Ran, Problem> {
    let request: Request = serde_json::from_slice(body).map_err(|e| {
        Problem::new(ProblemKind::InvalidApiParams)
            .msg(format!("Malformed GraphQL request body: {e}"))
    })?;
    let variables: Variables<DefaultScalarValue> = match &request.variables {
        None | Some(InputValue::Null) => Variables::default(),
        Some(v) => v
            .to_object_value()
            .map(|o| o.into_iter().map(|(k, v)| (k.into(), v.clone())).collect())
            .ok_or_else(|| {
                Problem::new(ProblemKind::InvalidApiParams).msg("variables must be a JSON object")
            })?,
    };
    let idempotency_key = idempotency_key(req)?;
    let ready = match gql.operations.ready(
        gql.schema,
        &request.query,
        request.operation_name.as_deref(),
    ) {
        Ok(ready) => ready,
        Err(e) => {
            return Ok(Ran::Done {
                outcome: Box::new(Err(e)),
                keep: None,
                stale: false,
            });
        }
    };
    // Read-your-writes: a query waits for the caller's last write before it
    // runs; a mutation only before it reads the read models (its commands
    // are decided on the log), see `Context::read_models`.
    let last_write = req.extensions().get::<LastWrite>().map(|w| w.0);
    let mut stale = false;
    let mut pending = None;
    if ready.is_query() {
        if let Some(position) = last_write {
            stale = !gql.freshness.wait_for(position).await;
        }
    } else {
        pending = last_write;
    }
    // Only queries are kept; mutations never pay for the version check.
    let keep = if ready.is_query() && !stale {
        match cached(gql, legacy, &actor, body).await {
            Ok(hit) => return Ok(Ran::Kept(hit)),
            Err(keep) => keep,
        }
    } else {
        None
    };
    let ctx = Context {
        pool: gql.pool.clone(),
        keys: gql.keys.clone(),
        actor,
        commands: Arc::clone(&gql.commands),
        freshness: Arc::clone(&gql.freshness),
        idempotency_key,
        mutations: AtomicUsize::new(0),
        last_write: std::sync::Mutex::new(pending),
    };
    let outcome = match &ready {
        Ready::Kept(op) => op.execute(&variables, &ctx).await,
        Ready::Once(op) => op.execute(&variables, &ctx).await,
    };
    Ok(Ran::Done {
        outcome: Box::new(outcome),
        keep,
        stale,
    })
}

/// The kept response for this request, or the version to keep it under.
async fn cached(
    gql: &GraphQl,
    legacy: bool,
    actor: &AuthContext,
    body: &[u8],
) -> Result<web::Bytes, Option<(cache::Version, cache::Key)>> {
    if !gql.cache.enabled() {
        return Err(None);
    }
    let Some(version) = gql.cache.version(&gql.pool).await else {
        return Err(None);
    };
    let key = cache::Key::new(legacy, actor, body);
    match gql.cache.get(version, &key) {
        Some(hit) => Ok(hit),
        None => Err(Some((version, key))),
    }
}

fn json_response(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// `POST /admin/gql`: the standard GraphQL envelope, always 200.
pub async fn gql(
    actor: AuthContext,
    req: HttpRequest,
    body: web::Bytes,
    gql: web::Data<GraphQl>,
) -> HttpResponse {
    answer(run(&gql, actor, &req, &body, false).await, |ran| {
        envelope(&gql, ran)
    })
}

/// The response, marked stale when it was answered before the read models
/// showed the caller's last write (see [`crate::freshness`]).
fn answer(
    ran: Result<Ran, Problem>,
    respond: impl FnOnce(Ran) -> Result<HttpResponse, Problem>,
) -> HttpResponse {
    let stale = matches!(&ran, Ok(Ran::Done { stale: true, .. }));
    let mut res = ran.and_then(respond).unwrap_or_else(|p| p.error_response());
    if stale {
        res.headers_mut().insert(
            HeaderName::from_static("x-backendai-stale-read"),
            HeaderValue::from_static("true"),
        );
    }
    res
}

fn envelope(gql: &GraphQl, ran: Ran) -> Result<HttpResponse, Problem> {
    // Serialised straight from juniper's values: clients (the official CLI
    // among them) rely on the fields coming back in the order selected, which
    // a detour through `serde_json::Value` (a sorted map) would lose.
    let (outcome, keep) = match ran {
        Ran::Kept(hit) => return Ok(json_response(hit)),
        Ran::Done { outcome, keep, .. } => (*outcome, keep),
    };
    let clean = matches!(&outcome, Ok((_, errors)) if errors.is_empty());
    let body = match outcome {
        Ok((data, errors)) => serde_json::to_vec(&Envelope {
            data: Some(&data),
            errors: (!errors.is_empty()).then_some(&errors),
            graphql_errors: None,
        }),
        Err(err) => serde_json::to_vec(&Envelope {
            data: None,
            errors: None,
            graphql_errors: Some(&err),
        }),
    }
    .map_err(|e| Problem::new(ProblemKind::InternalServerError).msg(e.to_string()))?;
    let body = web::Bytes::from(body);
    if clean && let Some((version, key)) = keep {
        gql.cache.put(version, key, body.clone());
    }
    Ok(json_response(body))
}

/// The `/admin/gql` response body.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    data: Option<&'a juniper::Value<DefaultScalarValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a Vec<juniper::ExecutionError<DefaultScalarValue>>>,
    #[serde(rename = "errors", skip_serializing_if = "Option::is_none")]
    graphql_errors: Option<&'a juniper::GraphQLError>,
}

/// `POST /admin/graphql` (legacy): the bare `data`, or 400 `graphql-error`.
pub async fn graphql_legacy(
    actor: AuthContext,
    req: HttpRequest,
    body: web::Bytes,
    gql: web::Data<GraphQl>,
) -> HttpResponse {
    answer(run(&gql, actor, &req, &body, true).await, |ran| {
        bare(&gql, ran)
    })
}

fn bare(gql: &GraphQl, ran: Ran) -> Result<HttpResponse, Problem> {
    let (outcome, keep) = match ran {
        Ran::Kept(hit) => return Ok(json_response(hit)),
        Ran::Done { outcome, keep, .. } => (*outcome, keep),
    };
    let errors = match outcome {
        Ok((data, errors)) if errors.is_empty() => {
            let body = serde_json::to_vec(&data)
                .map_err(|e| Problem::new(ProblemKind::InternalServerError).msg(e.to_string()))?;
            let body = web::Bytes::from(body);
            if let Some((version, key)) = keep {
                gql.cache.put(version, key, body.clone());
            }
            return Ok(json_response(body));
        }
        Ok((_, errors)) => serde_json::to_value(errors),
        Err(err) => serde_json::to_value(err),
    }
    .unwrap_or(serde_json::Value::Null);
    Err(Problem::new(ProblemKind::GraphqlError).data(errors))
}

async fn method_not_allowed() -> Result<HttpResponse, Problem> {
    Err(Problem::new(ProblemKind::MethodNotAllowed))
}

/// Registers both endpoints (POST only; other methods are 405).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/gql")
            .route(web::post().to(gql))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/admin/graphql")
            .route(web::post().to(graphql_legacy))
            .default_service(web::to(method_not_allowed)),
    );
}
