//! The `agent` binary: help, heartbeats, SIGKILL (the key expires), SIGHUP
//! (reload), SIGTERM (goodbye).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_rpc::notice::{NoticeBody, heartbeat_key};
use fred::interfaces::KeysInterface;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use uuid::Uuid;

use crate::common::*;

struct Running {
    child: Child,
    id: String,
    prefix: String,
    config: std::path::PathBuf,
    _dir: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn signal(&self, signal: Signal) {
        kill(
            Pid::from_raw(i32::try_from(self.child.id()).unwrap()),
            signal,
        )
        .unwrap();
    }
}

fn write_config(path: &std::path::Path, id: &str, prefix: &str, cpu: u32) {
    let text = format!(
        r#"
[agent]
id = "{id}"
[rpc]
listen = "tcp://127.0.0.1:0"
cluster_key = "{CLUSTER_KEY}"
[redis]
url = "{url}"
key_prefix = "{prefix}"
[heartbeat]
interval_ms = 200
ttl_ms = 1500
[slots]
cpu = {cpu}
mem = "1g"
"#,
        url = redis_url()
    );
    std::fs::write(path, text).unwrap();
}

/// Starts the binary with a fresh config file; returns once it said it is
/// ready.
fn spawn() -> Running {
    let dir = TempDir::new();
    let tag = Uuid::new_v4().simple().to_string();
    let id = format!("i-bin-{}", &tag[..8]);
    let prefix = format!("agent-test-{tag}");
    let config = dir.0.join("agent.toml");
    write_config(&config, &id, &prefix, 4);
    let mut child = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("AGENT_LOGGING__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("agent ready"), "{line:?}");
    assert!(line.contains(&format!("first={id}")), "{line:?}");
    Running {
        child,
        id,
        prefix,
        config,
        _dir: dir,
    }
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--id",
        "--region",
        "--scaling-group",
        "--backend",
        "--count",
        "--listen",
        "--advertised-addr",
        "--cluster-key-file",
        "--redis-url",
        "--key-prefix",
        "--heartbeat-interval-ms",
        "--heartbeat-ttl-ms",
        "--slot",
        "--scratch-dir",
        "--seed",
        "--log-level",
        "--log-format",
        "--set",
        "--print-config",
    ] {
        assert!(help.contains(flag), "--help does not explain {flag}");
    }
    assert!(help.contains("agent.sample.toml"));
}

#[test]
fn flags_override_the_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args([
            "--print-config",
            "--id",
            "x1",
            "--count",
            "3",
            "--slot",
            "cuda.device=2",
            "--set",
            "dummy.create_delay_ms=9",
        ])
        .env("AGENT_AGENT__REGION", "eu")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["agent"]["id"], "x1");
    assert_eq!(config["agent"]["count"], 3);
    assert_eq!(config["agent"]["region"], "eu");
    assert_eq!(config["slots"]["cuda.device"], "2");
    assert_eq!(config["dummy"]["create_delay_ms"], 9);

    let bad = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["--print-config", "--slot", "cpu=many"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cpu"));
}

#[tokio::test]
async fn after_a_sigkill_the_heartbeat_key_expires() {
    let agent = spawn();
    let redis = redis().await;
    let key = heartbeat_key(&agent.prefix, &agent.id);
    eventually(
        Duration::from_secs(10),
        "the heartbeat key appears",
        || async { redis.exists::<bool, _>(&key).await.unwrap() },
    )
    .await;
    let ttl: i64 = redis.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 1500, "{ttl}");

    agent.signal(Signal::SIGKILL);
    let killed = std::time::Instant::now();
    // Nobody deletes it: it is still there right after the kill...
    assert!(redis.exists::<bool, _>(&key).await.unwrap());
    // ...and gone once its TTL ran out.
    eventually(Duration::from_secs(5), "the key expires", || async {
        !redis.exists::<bool, _>(&key).await.unwrap()
    })
    .await;
    let gone_after = killed.elapsed();
    assert!(gone_after > Duration::from_millis(500), "{gone_after:?}");
    assert!(gone_after < Duration::from_millis(2500), "{gone_after:?}");
    // No goodbye was said.
    let said: Vec<_> = notices(&redis, &agent.prefix)
        .await
        .into_iter()
        .filter(|n| matches!(n.body, NoticeBody::AgentTerminated { .. }))
        .collect();
    assert!(said.is_empty());
    cleanup(&redis, &agent.prefix).await;
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_says_goodbye() {
    let mut agent = spawn();
    let redis = redis().await;
    let key = heartbeat_key(&agent.prefix, &agent.id);
    eventually(
        Duration::from_secs(10),
        "the heartbeat key appears",
        || async { redis.exists::<bool, _>(&key).await.unwrap() },
    )
    .await;

    write_config(&agent.config, &agent.id, &agent.prefix, 16);
    agent.signal(Signal::SIGHUP);
    let changed = wait_notice(&redis, &agent.prefix, "agent_info_changed", |n| {
        matches!(n.body, NoticeBody::AgentInfoChanged { .. })
    })
    .await;
    let NoticeBody::AgentInfoChanged { info } = changed.body else {
        unreachable!()
    };
    assert_eq!(info.available_slots["cpu"], "16");

    agent.signal(Signal::SIGTERM);
    let status = agent.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!redis.exists::<bool, _>(&key).await.unwrap());
    let all = notices(&redis, &agent.prefix).await;
    assert_eq!(
        all.last().map(|n| &n.body),
        Some(&NoticeBody::AgentTerminated {
            reason: "shutdown".into()
        })
    );
    cleanup(&redis, &agent.prefix).await;
}
