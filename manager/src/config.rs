//! Configuration: a TOML file, overridden by environment variables, over
//! defaults that match the halfstack.
//!
//! Every key can be set from the environment as `MANAGER_<TABLE>__<KEY>`, e.g.
//! `MANAGER_DB__URL` or `MANAGER_API__BIND`. See `manager.sample.toml` at the
//! repository root for a commented file.

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use manager_events::EventStoreConfig;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[db]`: the PostgreSQL database holding the event log and read models.
    pub db: DbConfig,
    /// `[api]`: the client-facing REST and GraphQL listener.
    pub api: ApiConfig,
    /// `[metrics]`: the Prometheus listener.
    pub metrics: MetricsConfig,
    /// `[event_store]`: limits and tuning of the event log.
    pub event_store: EventStoreConfig,
    /// `[logging]`: log level and format.
    pub logging: LoggingConfig,
    /// `[redis]`: the Redis used for rate limiting.
    pub redis: RedisConfig,
    /// `[secrets]`: the cluster key that protects keypair secrets.
    pub secrets: SecretsConfig,
    /// `[agents]`: the agent RPC key, liveness and notice ingestion.
    pub agents: AgentsConfig,
    /// Sessions: the scheduler and the kernel driver.
    pub sessions: SessionsConfig,
}

/// `[agents]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// The agent-RPC key shared with the agents (their `rpc.cluster_key`):
    /// its text, used as is, at least 16 bytes (`openssl rand -base64 32`).
    /// Not `secrets.cluster_key`, which opens keypair secrets and must never
    /// leave the managers. Empty with no `rpc_key_file`: the agents'
    /// built-in development key, with a warning. Env `MANAGER_AGENTS__RPC_KEY`.
    pub rpc_key: String,
    /// A file holding the agent-RPC key (trailing whitespace ignored); wins
    /// over `rpc_key`. Env `MANAGER_AGENTS__RPC_KEY_FILE`.
    pub rpc_key_file: String,
    /// An ALIVE agent whose heartbeat key is missing or older than this many
    /// ms is LOST. Match the agents' heartbeat TTL (default three periods of
    /// 3 s). Default 9000. Env `MANAGER_AGENTS__HEARTBEAT_TIMEOUT_MS`.
    pub heartbeat_timeout_ms: u64,
    /// Milliseconds between two liveness sweeps (and between a standby
    /// manager's attempts to become the sweeper). Default 1000.
    /// Env `MANAGER_AGENTS__SWEEP_INTERVAL_MS`.
    pub sweep_interval_ms: u64,
    /// Most notices read from the notice stream at once. Default 256.
    /// Env `MANAGER_AGENTS__NOTICE_BATCH`.
    pub notice_batch: u64,
    /// A notice left unacknowledged this many ms by another manager (one
    /// that died mid-notice) is taken over. Default 15000.
    /// Env `MANAGER_AGENTS__NOTICE_CLAIM_IDLE_MS`.
    pub notice_claim_idle_ms: u64,
}

/// `[sessions]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// The scheduler plans at least this often (ms), besides whenever the
    /// log moves; also how often a standby manager tries to become the
    /// scheduler. Default 1000. Env `MANAGER_SESSIONS__SCHEDULE_INTERVAL_MS`.
    pub schedule_interval_ms: u64,
    /// How long an agent may take to create a session's kernels (image
    /// pull included) before they are recorded ERROR (`failed-to-start`),
    /// in seconds. Default 600. Env `MANAGER_SESSIONS__CREATE_TIMEOUT_SECS`.
    pub create_timeout_secs: u64,
    /// How long an agent may take to destroy a kernel before the call is
    /// repeated, in seconds. Default 60.
    /// Env `MANAGER_SESSIONS__DESTROY_TIMEOUT_SECS`.
    pub destroy_timeout_secs: u64,
    /// Kernels on an agent LOST (or stopped) this many seconds are recorded
    /// ERROR (`agent-lost`) and their slots and quota freed; an agent back
    /// sooner loses nothing. 0: at once. Default 300.
    /// Env `MANAGER_SESSIONS__LOST_AGENT_GRACE_SECS`.
    pub lost_agent_grace_secs: u64,
    /// A session still starting (SCHEDULED to CREATING) after this many
    /// seconds has its unstarted kernels recorded ERROR (`start-timeout`).
    /// Default 900. Env `MANAGER_SESSIONS__START_TIMEOUT_SECS`.
    pub start_timeout_secs: u64,
    /// A session still TERMINATING after this many seconds is recorded
    /// TERMINATED (`hang-timeout`). Default 600.
    /// Env `MANAGER_SESSIONS__TERMINATE_TIMEOUT_SECS`.
    pub terminate_timeout_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            schedule_interval_ms: 1000,
            create_timeout_secs: 600,
            destroy_timeout_secs: 60,
            lost_agent_grace_secs: 300,
            start_timeout_secs: 900,
            terminate_timeout_secs: 600,
        }
    }
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            rpc_key: String::new(),
            rpc_key_file: String::new(),
            heartbeat_timeout_ms: 9000,
            sweep_interval_ms: 1000,
            notice_batch: 256,
            notice_claim_idle_ms: 15_000,
        }
    }
}

impl AgentsConfig {
    /// The agent-RPC key: from `rpc_key_file`, else `rpc_key`, else the
    /// development key (`Ok((key, true))` says it is that one).
    pub fn rpc_key(&self) -> Result<(agent_rpc::ClusterKey, bool), ConfigError> {
        let (text, development) = if !self.rpc_key_file.is_empty() {
            let text = std::fs::read_to_string(&self.rpc_key_file)
                .map_err(|e| ConfigError::RpcKey(format!("reading {}: {e}", self.rpc_key_file)))?;
            (text.trim_end().to_owned(), false)
        } else if !self.rpc_key.is_empty() {
            (self.rpc_key.clone(), false)
        } else {
            (manager_command::agent::DEVELOPMENT_RPC_KEY.to_owned(), true)
        };
        let key = agent_rpc::ClusterKey::new(text.as_bytes())
            .map_err(|e| ConfigError::RpcKey(e.to_string()))?;
        Ok((key, development))
    }
}

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL. Default `redis://127.0.0.1:8111` (the halfstack).
    /// Env `MANAGER_REDIS__URL`.
    pub url: String,
    /// Prefix of every key the manager keeps in Redis (rate-limit windows,
    /// last writes); give each cluster sharing a Redis its own. Default
    /// `ratelimit`. Env `MANAGER_REDIS__KEY_PREFIX`.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:8111".to_owned(),
            key_prefix: "ratelimit".to_owned(),
        }
    }
}

/// `[secrets]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// 32 random bytes, base64 (`openssl rand -base64 32`), that wrap every
    /// keypair's data key (docs/decisions/002-secrets.md). Default: a built-in
    /// development key, which `start-server` warns about. Keep the real one
    /// out of the database and its backups. Env `MANAGER_SECRETS__CLUSTER_KEY`.
    pub cluster_key: String,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        SecretsConfig {
            cluster_key: manager_events::secrets::DEVELOPMENT_CLUSTER_KEY.to_owned(),
        }
    }
}

/// `[db]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbConfig {
    /// Connection URL. Default `postgres://postgres@127.0.0.1:8101/backend`
    /// (the halfstack). Env `MANAGER_DB__URL`.
    pub url: String,
    /// Connections in the pool. Default 16. Env `MANAGER_DB__POOL_SIZE`.
    pub pool_size: usize,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            url: "postgres://postgres@127.0.0.1:8101/backend".to_owned(),
            pool_size: 16,
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the REST/GraphQL listener. Default `0.0.0.0:8091`.
    /// Env `MANAGER_API__BIND`.
    pub bind: SocketAddr,
    /// HTTP worker threads; 0 means one per core. Default 0.
    /// Env `MANAGER_API__WORKERS`.
    pub workers: usize,
    /// Seconds to let in-flight requests finish on SIGINT/SIGTERM. Default 10.
    /// Env `MANAGER_API__SHUTDOWN_TIMEOUT_SECS`.
    pub shutdown_timeout_secs: u64,
    /// Announcement shown by clients (`GET /manager/announcement`); empty for
    /// none. Env `MANAGER_API__ANNOUNCEMENT`.
    pub announcement: String,
    /// Whether GraphQL answers introspection queries (`__schema`,
    /// `__type`). Off by default, as the reference.
    /// Env `MANAGER_API__GRAPHQL_INTROSPECTION`.
    pub graphql_introspection: bool,
    /// Milliseconds a read waits for the read models to show the caller's
    /// last write before answering anyway (with `X-BackendAI-Stale-Read:
    /// true`). Default 2000. Env `MANAGER_API__READ_YOUR_WRITES_TIMEOUT_MS`.
    pub read_your_writes_timeout_ms: u64,
    /// Milliseconds a looked-up keypair (with its opened secret) is reused
    /// for authentication; 0 looks it up on every request. A deactivated
    /// keypair or user stops authenticating at most this long after the read
    /// models show it. Default 1000. Env `MANAGER_API__AUTH_CACHE_TTL_MS`.
    pub auth_cache_ttl_ms: u64,
    /// GraphQL query responses kept while the read models stand still (no
    /// event appended since, every projector at the log's head); 0 keeps
    /// none. Default 1024. Env `MANAGER_API__GRAPHQL_CACHE_ENTRIES`.
    pub graphql_cache_entries: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 8091)),
            workers: 0,
            shutdown_timeout_secs: 10,
            announcement: String::new(),
            graphql_introspection: false,
            read_your_writes_timeout_ms: 2000,
            auth_cache_ttl_ms: 1000,
            graphql_cache_entries: 1024,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address serving `/metrics` in the Prometheus text format. Default
    /// `0.0.0.0:18080`. Env `MANAGER_METRICS__BIND`.
    pub bind: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 18080)),
        }
    }
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing` filter, e.g. `info` or `manager=debug,info`. Default `info`;
    /// `RUST_LOG` wins when set. Env `MANAGER_LOGGING__LEVEL`.
    pub level: String,
    /// `text` for people or `json` (one object a line) for log shippers.
    /// Default `text`. Env `MANAGER_LOGGING__FORMAT`.
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file does not exist.
    #[error("configuration file {0} not found")]
    NotFound(String),
    /// A key has the wrong type, an unknown name, or the file is not TOML.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// The agent-RPC key is unreadable or too short.
    #[error("agents.rpc_key: {0}")]
    RpcKey(String),
}

impl Config {
    /// Loads defaults, then `file` (if given), then `MANAGER_*` environment
    /// variables, each overriding the one before.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::NotFound(file.display().to_string()));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only MANAGER_<TABLE>__<KEY> variables configure; others that share
        // the prefix (MANAGER_CONFIG, MANAGER_TEST_DATABASE_URL, ...) are not
        // configuration keys and must not be refused as unknown ones.
        figment = figment.merge(
            Env::prefixed("MANAGER_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))
    }
}

#[cfg(test)]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail fixes the closure's error type"
)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_file_loads_and_matches_the_defaults() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manager.sample.toml");
        figment::Jail::expect_with(|_| {
            assert_eq!(Config::load(Some(&sample)).unwrap(), Config::default());
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "m.toml",
                "[db]\nurl = \"postgres://file/db\"\npool_size = 3\n",
            )?;
            jail.set_env("MANAGER_DB__URL", "postgres://env/db");
            jail.set_env("MANAGER_API__BIND", "127.0.0.1:9999");
            jail.set_env("MANAGER_CONFIG", "m.toml");
            jail.set_env("MANAGER_TEST_DATABASE_URL", "postgres://elsewhere/db");
            let c = Config::load(Some(Path::new("m.toml"))).unwrap();
            assert_eq!(c.db.url, "postgres://env/db");
            assert_eq!(c.db.pool_size, 3);
            assert_eq!(c.api.bind.port(), 9999);
            Ok(())
        });
    }

    #[test]
    fn the_agent_rpc_key_comes_from_a_file_the_value_or_the_development_default() {
        figment::Jail::expect_with(|jail| {
            let (_, development) = AgentsConfig::default().rpc_key().unwrap();
            assert!(development);
            jail.create_file("key", "a-sufficiently-long-agent-key\n")?;
            jail.set_env("MANAGER_AGENTS__RPC_KEY_FILE", "key");
            jail.set_env("MANAGER_AGENTS__HEARTBEAT_TIMEOUT_MS", "1500");
            let c = Config::load(None).unwrap();
            assert_eq!(c.agents.heartbeat_timeout_ms, 1500);
            let (_, development) = c.agents.rpc_key().unwrap();
            assert!(!development);
            let short = AgentsConfig {
                rpc_key: "short".into(),
                ..Default::default()
            };
            assert!(matches!(short.rpc_key(), Err(ConfigError::RpcKey(_))));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("m.toml", "[db]\nurll = \"x\"\n")?;
            let err = Config::load(Some(Path::new("m.toml"))).unwrap_err();
            assert!(err.to_string().contains("urll"), "{err}");
            assert!(matches!(
                Config::load(Some(Path::new("nope.toml"))),
                Err(ConfigError::NotFound(_))
            ));
            Ok(())
        });
    }
}
