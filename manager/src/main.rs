//! `manager`: the control plane's one binary. Run `manager --help`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use manager::config::{Config, LogFormat};
use manager::server;
use manager_command::agent::{AgentServices, AgentServicesConfig, IngesterConfig, SweeperConfig};
use manager_command::auth::middleware::Authenticator;
use manager_command::auth::rate_limit::RateLimiter;
use manager_command::handler::CommandHandler;
use manager_command::service::CommandService;
use manager_command::session::driver::DriverConfig;
use manager_command::session::kernel_io::KernelIo;
use manager_command::session::notices::SessionNotices;
use manager_command::session::rest::SessionApi;
use manager_command::session::scheduler::SchedulerConfig;
use manager_command::session::sweeper::SweepConfig;
use manager_command::session::view::SessionView;
use manager_command::session::{SessionServices, SessionServicesConfig};
use manager_events::secrets::{ClusterKey, KeyStore};
use manager_events::{EventStore, migrations};
use manager_projections::ProjectionRunner;
use tracing_subscriber::EnvFilter;

/// The cluster manager: schedules compute sessions onto agents, built on an
/// event-sourced log in PostgreSQL.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML). Without it, defaults and MANAGER_* environment
    /// variables are used; see manager.sample.toml.
    #[arg(short, long, global = true, env = "MANAGER_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
    /// Migrate, then serve the API (port 8091) and /metrics (port 18080)
    /// until SIGINT or SIGTERM.
    StartServer,
    /// Recompute the event log's hash chain; exit 1 if it was tampered with.
    VerifyLog,
    /// Load fixtures (domains, users, keypairs) through commands.
    Fixture {
        #[command(subcommand)]
        command: FixtureCommand,
    },
    /// Read models: where each projector is in the log.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
}

#[derive(Subcommand)]
enum FixtureCommand {
    /// Create what FILE (JSON) describes, skipping what already exists, so it
    /// can run on every start. Everything goes through commands: it is all in
    /// the event log like any other change.
    Populate {
        /// The fixture file, e.g. fixtures/default.json.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Show each projector's position and how far it lags behind the log.
    Status,
    /// Replay one projector from the start of the log into fresh tables, then
    /// swap them in atomically; the old tables serve queries until then.
    Rebuild {
        /// The projector's name (see `projections status`).
        name: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("manager: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(&config);
    match run(cli.command, config).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("manager: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<std::process::ExitCode> {
    match command {
        Command::Migrate => {
            migrate(&config).await?;
        }
        Command::StartServer => {
            let metrics = server::metrics_recorder()?;
            migrate(&config).await?;
            let store = EventStore::connect(
                &config.db.url,
                config.db.pool_size,
                config.event_store.clone(),
            )?;
            let projections = ProjectionRunner::new(
                store.clone(),
                manager_projections::all(),
                config.event_store.subscription_batch,
            );
            let (stop_projections, stopped) = tokio::sync::watch::channel(false);
            let projected = projections.progress();
            let projection_task = tokio::spawn(projections.run(stopped));
            let agents = start_agents(&config, &store).await?;
            let activity = manager_command::session::activity::Activity::new(
                manager_command::agent::connect_redis(
                    &config.redis.url,
                    std::time::Duration::from_secs(2),
                )
                .await
                .with_context(|| format!("connecting to Redis at {}", config.redis.url))?,
                config.redis.key_prefix.clone(),
            );
            let sessions = start_sessions(&config, &store, &agents, activity.clone());
            let parts = server_parts(
                &config,
                &store,
                projected,
                sessions.view(),
                &agents,
                activity,
            )
            .await?;
            let running = server::start(&config, store, metrics, parts)?;
            tracing::info!(api = %running.api_addr, metrics = %running.metrics_addr, "manager started");
            // One line on stdout with the bound addresses (port 0 binds any
            // free port; supervisors and tests read the real one here).
            println!(
                "manager: listening api={} metrics={}",
                running.api_addr, running.metrics_addr
            );
            server::shutdown_signal().await?;
            tracing::info!("shutting down");
            sessions.stop().await;
            agents.stop().await;
            let _ = stop_projections.send(true);
            if let Err(e) = projection_task.await {
                tracing::error!("projection task failed: {e}");
            }
            running.stop().await?;
            tracing::info!("stopped cleanly");
        }
        Command::Fixture {
            command: FixtureCommand::Populate { file },
        } => {
            migrate(&config).await?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let fixture: manager::fixture::Fixture = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", file.display()))?;
            let store = EventStore::connect(&config.db.url, 4, config.event_store.clone())?;
            let cluster = ClusterKey::from_base64(&config.secrets.cluster_key)
                .context("secrets.cluster_key")?;
            let keys = KeyStore::new(store.pool().clone(), cluster);
            let report = manager::fixture::populate(&store, &keys, &fixture).await?;
            store.shutdown().await;
            println!("{report}");
        }
        Command::Projections {
            command: ProjectionsCommand::Status,
        } => {
            let store = EventStore::connect(&config.db.url, 2, config.event_store.clone())?;
            let runner = ProjectionRunner::new(store, manager_projections::all(), 1);
            println!(
                "{:<24} {:>12} {:>12} {:>10}",
                "PROJECTOR", "POSITION", "LOG HEAD", "LAG"
            );
            for s in runner.status().await? {
                println!(
                    "{:<24} {:>12} {:>12} {:>10}",
                    s.name,
                    s.position,
                    s.head,
                    s.lag()
                );
            }
        }
        Command::Projections {
            command: ProjectionsCommand::Rebuild { name },
        } => {
            let store = EventStore::connect(&config.db.url, 2, config.event_store.clone())?;
            let runner = ProjectionRunner::new(
                store.clone(),
                manager_projections::all(),
                config.event_store.subscription_batch,
            );
            let Some(projector) = runner
                .projectors()
                .iter()
                .find(|p| p.name() == name)
                .cloned()
            else {
                let names: Vec<&str> = runner.projectors().iter().map(|p| p.name()).collect();
                eprintln!(
                    "manager: no projector named {name:?}; there are: {}",
                    names.join(", ")
                );
                return Ok(std::process::ExitCode::from(2));
            };
            let head = store.head_position().await?;
            let started = Instant::now();
            let report = runner
                .rebuild(projector.as_ref(), |position| {
                    eprint!("\rreplayed up to {position} of {head}");
                })
                .await?;
            eprintln!();
            println!(
                "{name}: rebuilt from {} events up to position {} in {:.1}s and swapped in",
                report.events,
                report.position,
                started.elapsed().as_secs_f64()
            );
        }
        Command::VerifyLog => {
            let store = EventStore::connect(&config.db.url, 1, config.event_store.clone())?;
            let started = Instant::now();
            let report = store.verify_chain().await?;
            let secs = started.elapsed().as_secs_f64();
            return Ok(match report.problem {
                None => {
                    println!(
                        "event log intact: {} events verified up to position {} in {secs:.1}s\nhead hash: {}",
                        report.verified,
                        report.head_position,
                        hex::encode(report.head_hash)
                    );
                    std::process::ExitCode::SUCCESS
                }
                Some(problem) => {
                    println!(
                        "event log BROKEN after {} verified events: {problem}",
                        report.verified
                    );
                    std::process::ExitCode::FAILURE
                }
            });
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// What the API listener needs: the request authenticator (keypair secrets
/// opened with the cluster key, rate limits counted in Redis) and the command
/// port GraphQL mutations use.
async fn server_parts(
    config: &Config,
    store: &EventStore,
    projected: tokio::sync::watch::Receiver<u64>,
    sessions: &SessionView,
    agents: &AgentServices,
    activity: manager_command::session::activity::Activity,
) -> anyhow::Result<server::Parts> {
    let cluster =
        ClusterKey::from_base64(&config.secrets.cluster_key).context("secrets.cluster_key")?;
    if cluster.is_development() {
        tracing::warn!(
            "secrets.cluster_key is the built-in DEVELOPMENT key: anyone with this source code can open \
             keypair secrets stored by this cluster. Set MANAGER_SECRETS__CLUSTER_KEY (openssl rand -base64 32)."
        );
    }
    let limiter = RateLimiter::connect(&config.redis.url)
        .await
        .with_context(|| format!("connecting to Redis at {}", config.redis.url))?
        .with_prefix(config.redis.key_prefix.clone());
    let keys = KeyStore::new(store.pool().clone(), cluster);
    let commands = CommandService::new(
        CommandHandler::new(store.clone()),
        keys.clone(),
        Some(limiter.clone()),
    );
    let sessions = SessionApi::new(
        CommandHandler::new(store.clone()),
        sessions.clone(),
        Some(limiter.clone()),
    );
    let sessions = std::sync::Arc::new(sessions);
    Ok(server::Parts {
        kernel_io: KernelIo::new(sessions.clone(), agents.clients().clone())
            .with_activity(Some(activity)),
        sessions,
        authenticator: Authenticator::new(store.pool().clone(), keys.clone(), Some(limiter))
            .with_cache_ttl(std::time::Duration::from_millis(
                config.api.auth_cache_ttl_ms,
            )),
        keys,
        commands: std::sync::Arc::new(commands),
        projected,
    })
}

/// Starts the session side: the scheduler's view of the log, the scheduler
/// (one manager at a time acts) and the kernel driver.
fn start_sessions(
    config: &Config,
    store: &EventStore,
    agents: &AgentServices,
    activity: manager_command::session::activity::Activity,
) -> SessionServices {
    use std::time::Duration;
    let s = &config.sessions;
    SessionServices::start(
        CommandHandler::new(store.clone()),
        agents.clients().clone(),
        SessionServicesConfig {
            scheduler: SchedulerConfig {
                database_url: config.db.url.clone(),
                tick: Duration::from_millis(s.schedule_interval_ms.max(10)),
            },
            driver: DriverConfig {
                tick: Duration::from_millis(s.schedule_interval_ms.max(10)),
                create_timeout: Duration::from_secs(s.create_timeout_secs.max(1)),
                destroy_timeout: Duration::from_secs(s.destroy_timeout_secs.max(1)),
                sweep: SweepConfig {
                    lost_agent_grace: Duration::from_secs(s.lost_agent_grace_secs),
                    start_timeout: Duration::from_secs(s.start_timeout_secs.max(1)),
                    terminate_timeout: Duration::from_secs(s.terminate_timeout_secs.max(1)),
                },
            },
            activity: Some(activity),
        },
    )
}

/// Starts the agent side: the directory of agents (from the log), the
/// notice ingester, the liveness sweeper (one manager at a time acts) and
/// the agent RPC clients, keyed with the agents' RPC key.
async fn start_agents(config: &Config, store: &EventStore) -> anyhow::Result<AgentServices> {
    use std::time::Duration;
    let a = &config.agents;
    let (key, development) = a.rpc_key()?;
    if development {
        tracing::warn!(
            "agents.rpc_key is the agents' built-in DEVELOPMENT key: anyone with this source code can \
             call your agents. Set MANAGER_AGENTS__RPC_KEY (and the agents' rpc.cluster_key) to a shared secret."
        );
    }
    let prefix = config.redis.key_prefix.clone();
    let mut ingester = IngesterConfig::new(prefix.clone());
    ingester.batch = a.notice_batch.max(1);
    ingester.claim_idle = Duration::from_millis(a.notice_claim_idle_ms.max(100));
    let mut sweeper = SweeperConfig::new(prefix, config.db.url.clone());
    sweeper.heartbeat_timeout = Duration::from_millis(a.heartbeat_timeout_ms.max(1));
    sweeper.sweep_interval = Duration::from_millis(a.sweep_interval_ms.max(10));
    let handler = CommandHandler::new(store.clone());
    AgentServices::start_with(
        handler.clone(),
        AgentServicesConfig {
            redis_url: config.redis.url.clone(),
            database_url: config.db.url.clone(),
            ingester,
            sweeper,
            rpc: agent_rpc::ClientConfig::new(key),
        },
        std::sync::Arc::new(SessionNotices::new(handler)),
    )
    .await
    .with_context(|| {
        format!(
            "starting the agent services (Redis at {})",
            config.redis.url
        )
    })
}

/// Applies pending migrations, waiting for the database to come up first.
async fn migrate(config: &Config) -> anyhow::Result<()> {
    let deadline = Instant::now() + server::STARTUP_DB_WAIT;
    loop {
        match migrations::run_pending(&config.db.url).await {
            Ok(applied) if applied.is_empty() => {
                tracing::info!("database schema is up to date");
                return Ok(());
            }
            Ok(applied) => {
                tracing::info!(count = applied.len(), migrations = ?applied, "applied migrations");
                return Ok(());
            }
            Err(e) if Instant::now() < deadline && e.to_string().contains("connecting") => {
                tracing::warn!("{e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("migrating the database"),
        }
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.logging.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
