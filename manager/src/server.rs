//! The HTTP listeners of `start-server` and their lifecycle.
//!
//! Two listeners: the client API (REST and, later, GraphQL) and the Prometheus
//! metrics endpoint, kept apart so that scraping never competes with clients
//! and the metrics port can stay private. On SIGINT or SIGTERM both stop
//! accepting, in-flight requests get `shutdown_timeout_secs` to finish, and the
//! event store's writer commits what it has queued before the process exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::middleware::Next;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use anyhow::Context;
use manager_command::auth::middleware::{Authenticator, authenticate, check_api_version};
use manager_events::port::{CommandPort, ReadModelProgress};
use manager_events::secrets::KeyStore;
use manager_events::{EventStore, Problem, ProblemKind};
use manager_query::freshness::{Freshness, read_your_writes};
use manager_query::graphql::GraphQl;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::config::Config;
use crate::{API_VERSION, MANAGER_VERSION};

/// A running server: its bound addresses and a way to stop it.
pub struct Running {
    /// Where the API listens (useful when the configured port was 0).
    pub api_addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    api: ServerHandle,
    metrics: ServerHandle,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
    store: EventStore,
    /// Tells open event streams to send `server_close` and end.
    close_streams: tokio::sync::watch::Sender<bool>,
}

impl Running {
    /// Stops both listeners gracefully, then drains the event store's writer.
    pub async fn stop(self) -> anyhow::Result<()> {
        // Event streams end by themselves (with `server_close`), so that the
        // graceful stop does not wait for them until its timeout.
        let _ = self.close_streams.send(true);
        self.api.stop(true).await;
        self.metrics.stop(true).await;
        for task in self.tasks {
            task.await.context("server task panicked")??;
        }
        self.store.shutdown().await;
        Ok(())
    }
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        // Real histograms (not client-side summaries), so that Prometheus can
        // aggregate them across manager instances.
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ],
        )
        .context("configuring histogram buckets")?
        .set_buckets_for_metric(
            Matcher::Full("eventstore_group_calls".to_owned()),
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        )
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// `GET /`: the unsigned version probe every client sends first.
async fn version() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "version": API_VERSION, "manager": MANAGER_VERSION }))
}

/// Any path no route serves: 404 `url-not-found` with the path as data.
async fn url_not_found(req: HttpRequest) -> HttpResponse {
    Problem::new(ProblemKind::UrlNotFound)
        .data(json!(req.path()))
        .error_response()
}

/// A known path with a method it does not serve: 405 `method-not-allowed`.
async fn method_not_allowed() -> HttpResponse {
    Problem::new(ProblemKind::MethodNotAllowed).error_response()
}

async fn render_metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// `GET /manager/announcement` (unsigned): clients require the `enabled` key.
async fn announcement(text: web::Data<Announcement>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "enabled": !text.0.is_empty(), "message": text.0 }))
}

struct Announcement(String);

/// Errors the framework answers by itself (an oversize or unreadable body, a
/// wrong method) come as plain text; clients expect problem+json everywhere,
/// so any error response that is not one already is turned into one.
async fn problem_json(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let status = res.status().as_u16();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if status < 400 || is_problem {
        return Ok(res.map_into_boxed_body());
    }
    let detail = res.response().error().map(ToString::to_string);
    let kind = match status {
        404 => ProblemKind::UrlNotFound,
        405 => ProblemKind::MethodNotAllowed,
        413 => ProblemKind::PayloadTooLarge,
        429 => ProblemKind::RateLimitExceeded,
        503 => ProblemKind::ServiceUnavailable,
        s if s >= 500 => ProblemKind::InternalServerError,
        _ => ProblemKind::InvalidApiParams,
    };
    let mut problem = Problem::new(kind);
    if let Some(detail) = detail {
        problem = problem.msg(detail);
    }
    let (req, _) = res.into_parts();
    Ok(ServiceResponse::new(req, problem.error_response()))
}

/// What the API listener is built from, besides the configuration.
pub struct Parts {
    /// Authenticates signed requests (and reads each caller's last write).
    pub authenticator: Authenticator,
    /// Opens keypair secrets for GraphQL's `secret_key`.
    pub keys: KeyStore,
    /// Where GraphQL mutations send their commands.
    pub commands: Arc<dyn CommandPort>,
    /// The progress of this process's projection runner.
    pub projected: tokio::sync::watch::Receiver<u64>,
    /// The session endpoints (`POST /session`, …).
    pub sessions: Arc<manager_command::session::rest::SessionApi>,
    /// The kernel endpoints (logs, execute).
    pub kernel_io: manager_command::session::kernel_io::KernelIo,
}

/// Starts both listeners over an already opened event store.
pub fn start(
    config: &Config,
    store: EventStore,
    metrics: PrometheusHandle,
    parts: Parts,
) -> anyhow::Result<Running> {
    let workers = if config.api.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.api.workers
    };
    let grace = config.api.shutdown_timeout_secs;
    let pool = web::Data::new(store.pool().clone());
    let freshness = Arc::new(
        Freshness::new(
            store.pool().clone(),
            Duration::from_millis(config.api.read_your_writes_timeout_ms),
        )
        .with_local_progress(parts.projected),
    );
    let authenticator = web::Data::new(
        parts
            .authenticator
            .with_read_models(Arc::clone(&freshness) as Arc<dyn ReadModelProgress>),
    );
    let graphql = web::Data::new(GraphQl::new(
        manager_query::graphql::schema(config.api.graphql_introspection),
        store.pool().clone(),
        parts.keys,
        parts.commands,
        Arc::clone(&freshness),
        manager_query::graphql::ResponseCache::new(
            manager_projections::all()
                .iter()
                .map(|p| p.name())
                .collect(),
            config.api.graphql_cache_entries,
        ),
    ));
    let freshness = web::Data::from(freshness);
    let announcement_text = web::Data::new(Announcement(config.api.announcement.clone()));
    let sessions = web::Data::new(parts.sessions);
    let kernel_io = web::Data::new(parts.kernel_io);
    let (close_streams, streams_closing) = tokio::sync::watch::channel(false);
    let event_streams = web::Data::new(manager_query::events::EventStreams::new(
        store.clone(),
        streams_closing,
    ));
    let api = HttpServer::new(move || {
        App::new()
            .app_data(authenticator.clone())
            .app_data(pool.clone())
            .app_data(announcement_text.clone())
            .app_data(graphql.clone())
            .app_data(freshness.clone())
            .app_data(sessions.clone())
            .app_data(kernel_io.clone())
            .app_data(event_streams.clone())
            .wrap(from_fn(read_your_writes))
            .wrap(from_fn(authenticate))
            .wrap(from_fn(check_api_version))
            .wrap(DefaultHeaders::new().add(("Server", "BackendAI")))
            .wrap(from_fn(problem_json))
            .route("/manager/announcement", web::get().to(announcement))
            .configure(manager_command::session::rest::configure)
            .configure(manager_command::session::kernel_io::configure)
            .configure(manager_query::rest::configure)
            .configure(manager_query::graphql::configure)
            .service(
                web::resource(["", "/"])
                    .route(web::get().to(version))
                    .default_service(web::to(method_not_allowed)),
            )
            .default_service(web::to(url_not_found))
    })
    .workers(workers)
    .shutdown_timeout(grace)
    .disable_signals()
    .bind(config.api.bind)
    .with_context(|| format!("binding the API listener to {}", config.api.bind))?;
    let api_addr = first_addr(api.addrs())?;
    let api = api.run();

    let data = web::Data::new(metrics);
    let metrics = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(render_metrics))
    })
    .workers(1)
    .shutdown_timeout(grace)
    .disable_signals()
    .bind(config.metrics.bind)
    .with_context(|| format!("binding the metrics listener to {}", config.metrics.bind))?;
    let metrics_addr = first_addr(metrics.addrs())?;
    let metrics = metrics.run();

    let (api_handle, metrics_handle) = (api.handle(), metrics.handle());
    Ok(Running {
        api_addr,
        metrics_addr,
        api: api_handle,
        metrics: metrics_handle,
        tasks: vec![tokio::spawn(api), tokio::spawn(metrics)],
        store,
        close_streams,
    })
}

fn first_addr(addrs: Vec<SocketAddr>) -> anyhow::Result<SocketAddr> {
    addrs
        .into_iter()
        .next()
        .context("the listener bound no address")
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// How long `start-server` waits for the database at start-up before giving up.
pub const STARTUP_DB_WAIT: Duration = Duration::from_secs(30);
