//! Configuration: defaults, then a TOML file, then `AGENT_*` environment
//! variables, then command-line flags, each overriding the one before.
//!
//! Every key can be set from the environment as `AGENT_<TABLE>__<KEY>`, e.g.
//! `AGENT_REDIS__URL` or `AGENT_RPC__CLUSTER_KEY`, and from the command line
//! with `--set table.key=value` (slots with `--slot name=amount`). See
//! `agent.sample.toml` at the repository root for a commented file whose
//! values are the defaults.
//!
//! Which keys a running agent takes up again on SIGHUP is said in
//! [`Config::reloadable_differences`]; the others need a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_rpc::ClusterKey;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::slots::{Amount, SlotType, valid_slot_name};

/// The built-in development cluster key, used when none is configured (the
/// agent warns at start). Never use it on a real cluster.
pub const DEVELOPMENT_CLUSTER_KEY: &str = "development-agent-rpc-key-do-not-use-in-production";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[agent]`: who the agent is and which backend runs its kernels.
    pub agent: AgentConfig,
    /// `[rpc]`: the agent RPC listener and its key.
    pub rpc: RpcConfig,
    /// `[redis]`: where heartbeats and notices go.
    pub redis: RedisConfig,
    /// `[heartbeat]`: how often the agent says it is alive.
    pub heartbeat: HeartbeatConfig,
    /// `[slots]`: the capacity the agent declares, slot name → amount.
    /// Default `cpu = 4`, `mem = "16g"`. Env `AGENT_SLOTS__<NAME>`, or
    /// `--slot name=amount`.
    pub slots: BTreeMap<String, SlotValue>,
    /// `[slot_types]`: slot name → `count`, `bytes` or `unique`, for slots
    /// whose type is not the default (`mem` and `*.mem` are bytes, all
    /// others count).
    pub slot_types: BTreeMap<String, String>,
    /// `[dummy]`: the fake backend's delays and failure rates.
    pub dummy: DummyConfig,
    /// `[process]`: the local-process backend.
    pub process: ProcessConfig,
    /// `[logging]`: log level and format.
    pub logging: LoggingConfig,
}

/// Which backend runs the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Fake kernels: nothing runs, delays and failures are configured.
    /// For scale tests.
    #[default]
    Dummy,
    /// Each kernel is a local process tree in its own working directory.
    Process,
}

/// `[agent]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's id; with `count` > 1 the agents are `{id}-0` …
    /// `{id}-{count-1}`. Default (empty): `i-{hostname}`.
    /// Env `AGENT_AGENT__ID`.
    pub id: String,
    /// Its region. Default `local`. Env `AGENT_AGENT__REGION`.
    pub region: String,
    /// The scaling group it asks to join. Default `default`.
    /// Env `AGENT_AGENT__SCALING_GROUP`.
    pub scaling_group: String,
    /// The host users reach kernels' service ports at; empty for none.
    /// Env `AGENT_AGENT__PUBLIC_HOST`.
    pub public_host: String,
    /// `dummy` or `process`. Default `dummy`. Env `AGENT_AGENT__BACKEND`.
    pub backend: BackendKind,
    /// Agents run by this process, each with its own id, RPC port,
    /// heartbeat key and notices (scale tests). Default 1.
    /// Env `AGENT_AGENT__COUNT`.
    pub count: u32,
    /// Where abuse reports are written, as `get_local_config` reports it;
    /// empty for none. Env `AGENT_AGENT__ABUSE_REPORT_PATH`.
    pub abuse_report_path: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            id: String::new(),
            region: "local".to_owned(),
            scaling_group: "default".to_owned(),
            public_host: String::new(),
            backend: BackendKind::Dummy,
            count: 1,
            abuse_report_path: String::new(),
        }
    }
}

/// `[rpc]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Where the RPC server listens, `tcp://host:port`. Port 0 picks a free
    /// one; with `count` > 1, agent n listens on port + n (or each on a free
    /// port with 0). Default `tcp://0.0.0.0:6011`. Env `AGENT_RPC__LISTEN`.
    pub listen: String,
    /// The address the managers are told to call, `tcp://host:port`; empty
    /// to derive it (the listen address, with a wildcard host replaced by
    /// the address this host reaches Redis from). With `count` > 1, agent n
    /// advertises port + n (or its bound port when the port is 0).
    /// Env `AGENT_RPC__ADVERTISED_ADDR`.
    pub advertised_addr: String,
    /// The cluster key shared with the managers: its text, used as is (at
    /// least 16 bytes; 32 random bytes, e.g. `openssl rand -base64 32`,
    /// recommended). Empty with no `cluster_key_file`: a built-in
    /// development key, with a warning. Env `AGENT_RPC__CLUSTER_KEY`.
    pub cluster_key: String,
    /// A file holding the cluster key (trailing whitespace ignored); wins
    /// over `cluster_key`. Env `AGENT_RPC__CLUSTER_KEY_FILE`.
    pub cluster_key_file: String,
    /// Most requests handled at once per agent. Default 1024.
    /// Env `AGENT_RPC__MAX_IN_FLIGHT`.
    pub max_in_flight: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            listen: "tcp://0.0.0.0:6011".to_owned(),
            advertised_addr: String::new(),
            cluster_key: String::new(),
            cluster_key_file: String::new(),
            max_in_flight: 1024,
        }
    }
}

/// `[redis]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL. Default `redis://127.0.0.1:8111` (the halfstack).
    /// Env `AGENT_REDIS__URL`.
    pub url: String,
    /// Prefix of the heartbeat keys and the notice stream; must be the
    /// managers' `redis.key_prefix`. Default `ratelimit` (the manager's
    /// default). Env `AGENT_REDIS__KEY_PREFIX`.
    pub key_prefix: String,
    /// The notice stream is capped near this many entries (`XADD MAXLEN ~`).
    /// Default 100,000. Env `AGENT_REDIS__NOTICE_STREAM_MAXLEN`.
    pub notice_stream_maxlen: u64,
    /// Each Redis command gives up after this many ms (and is retried).
    /// Default 2000. Env `AGENT_REDIS__COMMAND_TIMEOUT_MS`.
    pub command_timeout_ms: u64,
    /// On shutdown, how long to wait for Redis to take the goodbyes
    /// (`agent_terminated`, the heartbeat keys' deletion) before giving up
    /// (the keys then expire by themselves). Default 5000.
    /// Env `AGENT_REDIS__SHUTDOWN_TIMEOUT_MS`.
    pub shutdown_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:8111".to_owned(),
            key_prefix: "ratelimit".to_owned(),
            notice_stream_maxlen: 100_000,
            command_timeout_ms: 2000,
            shutdown_timeout_ms: 5000,
        }
    }
}

/// `[heartbeat]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Milliseconds between two heartbeats of an agent. Default 3000.
    /// Env `AGENT_HEARTBEAT__INTERVAL_MS`.
    pub interval_ms: u64,
    /// Lifetime of the heartbeat key in ms; 0 means three intervals. The
    /// managers' liveness timeout should match it: an agent is lost once its
    /// key has expired. Default 0. Env `AGENT_HEARTBEAT__TTL_MS`.
    pub ttl_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig {
            interval_ms: 3000,
            ttl_ms: 0,
        }
    }
}

impl HeartbeatConfig {
    /// The period (at least 10 ms).
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(10))
    }

    /// The key's lifetime: `ttl_ms`, or three periods.
    pub fn ttl(&self) -> Duration {
        if self.ttl_ms == 0 {
            self.interval() * 3
        } else {
            Duration::from_millis(self.ttl_ms)
        }
    }
}

/// `[dummy]`. Each key can be set from the environment as
/// `AGENT_DUMMY__<KEY>`, e.g. `AGENT_DUMMY__CREATE_DELAY_MS=500`; a reload
/// (SIGHUP) takes up the delays and rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DummyConfig {
    /// Seed of the failure dice (agent n uses seed + n); unset for a random
    /// one. Env `AGENT_DUMMY__SEED`.
    pub seed: Option<u64>,
    /// A fake image pull per kernel, ms; 0 sends no `kernel_pulling`.
    /// Default 0.
    pub pull_delay_ms: u64,
    /// Fake kernel creation, ms. Default 100.
    pub create_delay_ms: u64,
    /// Fake kernel destruction, ms. Default 50.
    pub destroy_delay_ms: u64,
    /// Fake execution, ms. Default 10.
    pub execute_delay_ms: u64,
    /// Share of creations that fail, 0–1. Default 0.
    pub create_failure_rate: f64,
    /// Share of destructions that fail, 0–1. Default 0.
    pub destroy_failure_rate: f64,
    /// Share of executions that fail, 0–1. Default 0.
    pub execute_failure_rate: f64,
}

impl Default for DummyConfig {
    fn default() -> Self {
        DummyConfig {
            seed: None,
            pull_delay_ms: 0,
            create_delay_ms: 100,
            destroy_delay_ms: 50,
            execute_delay_ms: 10,
            create_failure_rate: 0.0,
            destroy_failure_rate: 0.0,
            execute_failure_rate: 0.0,
        }
    }
}

/// `[process]`. Each key can be set from the environment as
/// `AGENT_PROCESS__<KEY>`, e.g. `AGENT_PROCESS__SCRATCH_DIR=/var/scratch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessConfig {
    /// Each kernel works in `{scratch_dir}/{kernel_id}`. Default
    /// `/tmp/backend.ai-agent/scratches`. Env `AGENT_PROCESS__SCRATCH_DIR`.
    pub scratch_dir: PathBuf,
    /// How code runs, by runtime name: the program and its arguments, the
    /// code appended as the last one. The image chooses: the last path
    /// component of its name, before the tag (`…/python:3.11` → `python`),
    /// matched exactly, then as a prefix; else `default_runtime`.
    /// Default `{ sh = ["sh", "-c"], python = ["python3", "-c"] }`.
    pub runtimes: BTreeMap<String, Vec<String>>,
    /// The runtime of images no runtime matches. Default `sh`.
    pub default_runtime: String,
    /// The kernel's main process when it has no `startup_command`: it only
    /// keeps the kernel alive between executions. Default
    /// `["sleep", "infinity"]`.
    pub main_command: Vec<String>,
    /// After SIGTERM, ms before SIGKILL. Default 2000.
    pub kill_grace_ms: u64,
    /// How long an `execute` gathers output before answering `continued`,
    /// when the request names no `flush_timeout_ms`. Default 5000.
    pub flush_timeout_ms: u64,
    /// The kernel's log keeps its last this many bytes. Default 1 MiB.
    pub log_limit_bytes: usize,
    /// Keep a kernel's working directory after it is destroyed.
    /// Default false.
    pub keep_scratch: bool,
    /// On shutdown, destroy the kernels (they are child processes nobody
    /// would manage after the agent is gone) and report them terminated.
    /// Default true.
    pub destroy_on_shutdown: bool,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        let argv = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        ProcessConfig {
            scratch_dir: PathBuf::from("/tmp/backend.ai-agent/scratches"),
            runtimes: BTreeMap::from([
                ("python".to_owned(), argv(&["python3", "-c"])),
                ("sh".to_owned(), argv(&["sh", "-c"])),
            ]),
            default_runtime: "sh".to_owned(),
            main_command: argv(&["sleep", "infinity"]),
            kill_grace_ms: 2000,
            flush_timeout_ms: 5000,
            log_limit_bytes: 1024 * 1024,
            keep_scratch: false,
            destroy_on_shutdown: true,
        }
    }
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing` filter, e.g. `info` or `agent=debug,info`. Default
    /// `info`; `RUST_LOG` wins when set. Env `AGENT_LOGGING__LEVEL`.
    pub level: String,
    /// `text` or `json`. Default `text`. Env `AGENT_LOGGING__FORMAT`.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// A slot amount as written in the configuration: a number (`4`, `0.5`) or
/// a string (`"4"`, `"16g"`). Kept as written; read by
/// [`Config::slot_capacity`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotValue(pub String);

impl Serialize for SlotValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SlotValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SlotValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a slot amount: a number or a string like \"16g\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SlotValue, E> {
                Ok(SlotValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SlotValue, E> {
                Ok(SlotValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SlotValue, E> {
                Ok(SlotValue(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SlotValue, E> {
                Ok(SlotValue(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

fn default_slots() -> BTreeMap<String, SlotValue> {
    BTreeMap::from([
        ("cpu".to_owned(), SlotValue("4".to_owned())),
        ("mem".to_owned(), SlotValue("16g".to_owned())),
    ])
}

/// Why the configuration could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file does not exist.
    #[error("configuration file {0} not found")]
    NotFound(String),
    /// A key has the wrong type, an unknown name, or the file is not TOML.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    /// A `--set` or `--slot` argument is not `key=value`.
    #[error("invalid override {0:?}: expected key=value")]
    BadOverride(String),
    /// A value is out of its range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Value(String),
    /// The cluster key file cannot be read.
    #[error("cannot read the cluster key file {path}: {error}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// Overrides from the command line, applied over the file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `table.key=value` pairs (values read like TOML values, else strings).
    pub set: Vec<String>,
    /// `name=amount` slot declarations.
    pub slots: Vec<String>,
}

impl Config {
    /// Loads defaults, then `file` (if given), then `AGENT_*` environment
    /// variables, then `overrides`, each overriding the one before.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::NotFound(file.display().to_string()));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only AGENT_<TABLE>__<KEY> variables configure; AGENT_CONFIG and
        // other variables sharing the prefix are not keys.
        figment = figment.merge(
            Env::prefixed("AGENT_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        for pair in &overrides.set {
            let (key, value) = pair
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| ConfigError::BadOverride(pair.clone()))?;
            let value: figment::value::Value = value.parse().unwrap_or_else(|e| match e {});
            figment = figment.merge(Serialized::default(key.trim(), value));
        }
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        for pair in &overrides.slots {
            let (name, amount) = pair
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride(pair.clone()))?;
            config
                .slots
                .insert(name.trim().to_owned(), SlotValue(amount.trim().to_owned()));
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, slot names and amounts, runtimes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Value(m));
        if self.agent.count == 0 {
            return bad("agent.count must be at least 1".into());
        }
        if !self.rpc.listen.starts_with("tcp://") {
            return bad(format!(
                "rpc.listen must be tcp://host:port, not {:?}",
                self.rpc.listen
            ));
        }
        if !self.rpc.advertised_addr.is_empty() && !self.rpc.advertised_addr.starts_with("tcp://") {
            return bad(format!(
                "rpc.advertised_addr must be tcp://host:port, not {:?}",
                self.rpc.advertised_addr
            ));
        }
        self.slot_capacity()?;
        for (name, rate) in [
            ("create", self.dummy.create_failure_rate),
            ("destroy", self.dummy.destroy_failure_rate),
            ("execute", self.dummy.execute_failure_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(format!(
                    "dummy.{name}_failure_rate must be within 0..=1, not {rate}"
                ));
            }
        }
        if !self
            .process
            .runtimes
            .contains_key(&self.process.default_runtime)
        {
            return bad(format!(
                "process.default_runtime {:?} is not one of process.runtimes",
                self.process.default_runtime
            ));
        }
        if let Some((name, _)) = self.process.runtimes.iter().find(|(_, v)| v.is_empty()) {
            return bad(format!("process.runtimes.{name} names no program"));
        }
        if self.process.main_command.is_empty() {
            return bad("process.main_command names no program".into());
        }
        Ok(())
    }

    /// The declared capacity: each slot's type and amount. Zero amounts are
    /// left out (that is how a default slot is removed).
    pub fn slot_capacity(&self) -> Result<BTreeMap<String, (SlotType, Amount)>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, value) in &self.slots {
            if !valid_slot_name(name) {
                return Err(ConfigError::Value(format!(
                    "slot name {name:?}: use lower-case letters, digits, '_', '-' and '.'"
                )));
            }
            let slot_type = match self.slot_types.get(name) {
                Some(t) => SlotType::parse(t).ok_or_else(|| {
                    ConfigError::Value(format!(
                        "slot_types.{name} = {t:?}: expected count, bytes or unique"
                    ))
                })?,
                None => SlotType::default_for(name),
            };
            let amount = Amount::parse_size(&value.0)
                .map_err(|e| ConfigError::Value(format!("slots.{name}: {e}")))?;
            if !amount.is_zero() {
                out.insert(name.clone(), (slot_type, amount));
            }
        }
        Ok(out)
    }

    /// The base agent id: `agent.id`, or `i-{hostname}`.
    pub fn base_id(&self) -> String {
        if !self.agent.id.is_empty() {
            return self.agent.id.clone();
        }
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("i-{host}")
    }

    /// The cluster key: from `cluster_key_file`, else `cluster_key`, else
    /// the development key (`Ok((key, true))` says it is that one).
    pub fn cluster_key(&self) -> Result<(ClusterKey, bool), ConfigError> {
        let (text, development) = if !self.rpc.cluster_key_file.is_empty() {
            let text = std::fs::read_to_string(&self.rpc.cluster_key_file).map_err(|error| {
                ConfigError::KeyFile {
                    path: self.rpc.cluster_key_file.clone(),
                    error,
                }
            })?;
            (text.trim_end().to_owned(), false)
        } else if !self.rpc.cluster_key.is_empty() {
            (self.rpc.cluster_key.clone(), false)
        } else {
            (DEVELOPMENT_CLUSTER_KEY.to_owned(), true)
        };
        let key = ClusterKey::new(text.as_bytes())
            .map_err(|e| ConfigError::Value(format!("rpc.cluster_key: {e}")))?;
        Ok((key, development))
    }

    /// Names the keys that differ between `self` (running) and `new` (just
    /// loaded) and that a reload cannot take up: everything but `[slots]`,
    /// `[slot_types]`, `agent.region`, `agent.scaling_group`,
    /// `agent.public_host`, `agent.abuse_report_path` and `[dummy]`.
    pub fn reloadable_differences(&self, new: &Config) -> Vec<&'static str> {
        let mut fixed = Vec::new();
        if self.agent.id != new.agent.id {
            fixed.push("agent.id");
        }
        if self.agent.backend != new.agent.backend {
            fixed.push("agent.backend");
        }
        if self.agent.count != new.agent.count {
            fixed.push("agent.count");
        }
        if self.rpc != new.rpc {
            fixed.push("[rpc]");
        }
        if self.redis != new.redis {
            fixed.push("[redis]");
        }
        if self.heartbeat != new.heartbeat {
            fixed.push("[heartbeat]");
        }
        if self.process != new.process {
            fixed.push("[process]");
        }
        if self.logging != new.logging {
            fixed.push("[logging]");
        }
        fixed
    }
}

impl Default for Config {
    /// The defaults; `[slots]` is `cpu = 4`, `mem = "16g"`.
    fn default() -> Self {
        Config {
            agent: AgentConfig::default(),
            rpc: RpcConfig::default(),
            redis: RedisConfig::default(),
            heartbeat: HeartbeatConfig::default(),
            slots: default_slots(),
            slot_types: BTreeMap::new(),
            dummy: DummyConfig::default(),
            process: ProcessConfig::default(),
            logging: LoggingConfig::default(),
        }
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
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent.sample.toml");
        figment::Jail::expect_with(|_| {
            let loaded = Config::load(Some(&sample), &Overrides::default()).unwrap();
            assert_eq!(loaded, Config::default());
            Ok(())
        });
    }

    #[test]
    fn environment_and_flags_override_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "a.toml",
                "[agent]\nid = \"from-file\"\nregion = \"r1\"\n[slots]\n\"cuda.device\" = 2\nmem = \"1g\"\n",
            )?;
            jail.set_env("AGENT_AGENT__REGION", "r2");
            jail.set_env("AGENT_CONFIG", "a.toml");
            let overrides = Overrides {
                set: vec![
                    "dummy.create_delay_ms=7".into(),
                    "agent.scaling_group=gpu".into(),
                ],
                slots: vec!["cpu=0.5".into()],
            };
            let c = Config::load(Some(Path::new("a.toml")), &overrides).unwrap();
            assert_eq!(c.agent.id, "from-file");
            assert_eq!(c.agent.region, "r2");
            assert_eq!(c.agent.scaling_group, "gpu");
            assert_eq!(c.dummy.create_delay_ms, 7);
            let cap = c.slot_capacity().unwrap();
            assert_eq!(cap["cpu"].1.to_string(), "0.5");
            assert_eq!(cap["mem"], (SlotType::Bytes, Amount::from_int(1 << 30)));
            assert_eq!(cap["cuda.device"].0, SlotType::Count);
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[agent]\nidd = \"x\"\n")?;
            let err = Config::load(Some(Path::new("a.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("idd"), "{err}");
            assert!(matches!(
                Config::load(Some(Path::new("nope.toml")), &Overrides::default()),
                Err(ConfigError::NotFound(_))
            ));
            let o = Overrides {
                slots: vec!["cpu=lots".into()],
                ..Overrides::default()
            };
            assert!(Config::load(None, &o).is_err());
            let o = Overrides {
                set: vec!["dummy.create_failure_rate=2".into()],
                ..Overrides::default()
            };
            assert!(Config::load(None, &o).is_err());
            Ok(())
        });
    }
}
