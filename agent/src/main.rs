//! `agent`: the reference agent. Run `agent --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use agent::config::{BackendKind, Config, LogFormat, Overrides};
use agent::{AgentError, Fleet};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// The reference agent: serves agent RPC to the managers, heartbeats to
/// Redis, and runs kernels with the `dummy` backend (fake kernels, many agents
/// per process) or the `process` backend (local process trees).
///
/// Configuration comes from defaults, then the TOML file (--config), then
/// AGENT_<TABLE>__<KEY> environment variables, then these flags. See
/// agent.sample.toml for every key. SIGHUP reloads the file (slots, region,
/// scaling group, public host, [dummy]); SIGTERM or SIGINT stops gracefully.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// Configuration file (TOML); without it, defaults and AGENT_* variables.
    #[arg(short, long, env = "AGENT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Agent id [agent.id]; with --count N the agents are ID-0 … ID-(N-1).
    /// Default: i-HOSTNAME.
    #[arg(long, value_name = "ID")]
    id: Option<String>,

    /// Region [agent.region]. Default: local.
    #[arg(long)]
    region: Option<String>,

    /// Scaling group the agent asks to join [agent.scaling_group].
    /// Default: default.
    #[arg(long, value_name = "GROUP")]
    scaling_group: Option<String>,

    /// Kernel backend [agent.backend]. Default: dummy.
    #[arg(long, value_enum)]
    backend: Option<BackendKind>,

    /// Run N agents in this process, each with its own id, RPC port,
    /// heartbeat key and notices [agent.count]. Default: 1.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u32>,

    /// RPC listen address, tcp://HOST:PORT [rpc.listen]; agent n of --count
    /// listens on PORT+n; port 0 picks free ports. Default: tcp://0.0.0.0:6011.
    #[arg(long, value_name = "ENDPOINT")]
    listen: Option<String>,

    /// Address the managers are told to call, tcp://HOST:PORT
    /// [rpc.advertised_addr]. Default: derived from --listen.
    #[arg(long, value_name = "ENDPOINT")]
    advertised_addr: Option<String>,

    /// File holding the cluster key shared with the managers
    /// [rpc.cluster_key_file]. (The key itself only from the file or
    /// AGENT_RPC__CLUSTER_KEY, never on the command line.)
    #[arg(long, value_name = "FILE")]
    cluster_key_file: Option<String>,

    /// Redis URL [redis.url]. Default: redis://127.0.0.1:8111.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,

    /// Prefix of the heartbeat keys and the notice stream; must equal the
    /// managers' redis.key_prefix [redis.key_prefix]. Default: ratelimit.
    #[arg(long, value_name = "PREFIX")]
    key_prefix: Option<String>,

    /// Milliseconds between heartbeats [heartbeat.interval_ms]. Default: 3000.
    #[arg(long, value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,

    /// Heartbeat key lifetime in ms, 0 for three intervals
    /// [heartbeat.ttl_ms]; the managers' liveness timeout should match.
    #[arg(long, value_name = "MS")]
    heartbeat_ttl_ms: Option<u64>,

    /// Declare a slot's capacity, e.g. --slot cpu=8 --slot mem=32g
    /// --slot cuda.device=2 [slots]; 0 removes a slot. Repeatable.
    #[arg(long = "slot", value_name = "NAME=AMOUNT")]
    slots: Vec<String>,

    /// Working directories of process kernels [process.scratch_dir].
    #[arg(long, value_name = "DIR")]
    scratch_dir: Option<PathBuf>,

    /// Seed of the dummy backend's failure dice [dummy.seed].
    #[arg(long)]
    seed: Option<u64>,

    /// Log filter [logging.level], e.g. info or agent=debug; RUST_LOG wins.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,

    /// Log format [logging.format]. Default: text.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,

    /// Set any configuration key, e.g. --set dummy.create_delay_ms=500 or
    /// --set process.kill_grace_ms=100 (values read as TOML values).
    /// Repeatable.
    #[arg(short, long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,

    /// Print the effective configuration (as JSON) and exit.
    #[arg(long)]
    print_config: bool,
}

impl Cli {
    /// Loads the configuration with every override of the command line.
    fn load(&self) -> Result<Config, AgentError> {
        let overrides = Overrides {
            set: self.set.clone(),
            slots: self.slots.clone(),
        };
        let mut c = Config::load(self.config.as_deref(), &overrides)?;
        let set = |target: &mut String, value: &Option<String>| {
            if let Some(v) = value {
                target.clone_from(v);
            }
        };
        set(&mut c.agent.id, &self.id);
        set(&mut c.agent.region, &self.region);
        set(&mut c.agent.scaling_group, &self.scaling_group);
        set(&mut c.rpc.listen, &self.listen);
        set(&mut c.rpc.advertised_addr, &self.advertised_addr);
        set(&mut c.rpc.cluster_key_file, &self.cluster_key_file);
        set(&mut c.redis.url, &self.redis_url);
        set(&mut c.redis.key_prefix, &self.key_prefix);
        set(&mut c.logging.level, &self.log_level);
        if let Some(b) = self.backend {
            c.agent.backend = b;
        }
        if let Some(n) = self.count {
            c.agent.count = n;
        }
        if let Some(ms) = self.heartbeat_interval_ms {
            c.heartbeat.interval_ms = ms;
        }
        if let Some(ms) = self.heartbeat_ttl_ms {
            c.heartbeat.ttl_ms = ms;
        }
        if let Some(dir) = &self.scratch_dir {
            c.process.scratch_dir.clone_from(dir);
        }
        if let Some(seed) = self.seed {
            c.dummy.seed = Some(seed);
        }
        if let Some(f) = self.log_format {
            c.logging.format = f;
        }
        c.validate()?;
        Ok(c)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        match serde_json::to_string_pretty(&config) {
            Ok(text) => {
                println!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("agent: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    init_logging(&config);
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut fleet = Fleet::start(config).await?;
    // One line on stdout for scripts: where the (first) agent listens.
    println!(
        "agent ready: agents={} first={} rpc={}",
        fleet.agents().len(),
        fleet.agents().first().map_or("", |a| a.id()),
        fleet.endpoints().first().map_or("", String::as_str),
    );
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                match cli.load().map_err(anyhow::Error::from).and_then(|c| Ok(fleet.reload(c)?)) {
                    Ok(ignored) if !ignored.is_empty() => tracing::warn!(?ignored, "these changes need a restart"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "reload failed; keeping the running configuration"),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    fleet.shutdown().await;
    Ok(())
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

/// Raises the soft limit of open files to the hard limit: a thousand agents
/// hold a few thousand sockets.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!(error = %e, "cannot raise the open files limit");
    }
}
