//! The process backend: each kernel is a tree of local processes.
//!
//! A kernel works in `{scratch_dir}/{kernel_id}`. Its **main process** —
//! the kernel's `startup_command` run by `sh -c`, or else
//! `process.main_command` (`sleep infinity`), which only keeps the kernel
//! alive between executions — leads a process group of its own. When it
//! exits without being asked, the backend reports
//! [`BackendEvent::Exited`] with its exit code (128 + the signal number when
//! a signal killed it), and the agent reports the kernel terminated.
//!
//! Each **execution** (`execute` in `query` or `batch` mode) is a process of
//! the kernel's runtime (`python3 -c CODE`, `sh -c CODE`, chosen by the
//! image's name) in the kernel's directory and environment, leading a
//! process group of its own, so that `interrupt_kernel` can send SIGINT to
//! the execution and everything it started — and only to them, as a
//! terminal's Ctrl-C would. Its stdout and stderr become the console items
//! of the answers and are appended to the kernel's log (`get_logs`). An
//! execution still running after the flush timeout is answered `continued`;
//! `continue` collects more of its output, `input` writes a line to its
//! stdin.
//!
//! **Destroying** a kernel sends SIGTERM to its main process group and to the
//! group of every execution it ran, waits up to `process.kill_grace_ms` for
//! every process in them to be gone, then sends SIGKILL. A process that
//! leaves its group on purpose (`setsid`) escapes this; a container runtime
//! would use a cgroup.
//!
//! If the agent's runtime goes away without a shutdown (a panic), the main
//! and execution processes are killed with it when
//! `process.destroy_on_shutdown` is set (their descendants are not).
//!
//! Linux only: group membership is read from `/proc`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_rpc::execute::{ConsoleItem, ExecuteMode, ExecuteRequest, ExecuteResult, ExecuteStatus};
use agent_rpc::kernel::KernelConfig;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use uuid::Uuid;

use super::BackendEvent;
use crate::config::ProcessConfig;
use crate::error::BackendError;

/// How long an execution's output is still read after it exited (its pipes
/// may be held open by something it left running).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How long a bootstrap script may run.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a destruction looks whether the processes are gone.
const POLL: Duration = Duration::from_millis(20);

/// Runs kernels as local process trees for one agent.
#[derive(Debug)]
pub struct ProcessBackend {
    config: ProcessConfig,
    events: mpsc::UnboundedSender<BackendEvent>,
    generations: AtomicU64,
}

/// A kernel: its main process, its executions, its log.
#[derive(Debug)]
pub struct ProcessKernel {
    kernel_id: Uuid,
    generation: u64,
    pid: i32,
    workdir: PathBuf,
    runtime: Vec<String>,
    env: Vec<(String, String)>,
    exit: watch::Receiver<Option<i32>>,
    stopping: Arc<AtomicBool>,
    runs: Mutex<HashMap<String, Arc<Run>>>,
    /// Process groups of every execution started, still possibly alive.
    groups: Mutex<Vec<i32>>,
    log: Arc<LogBuffer>,
}

/// One execution.
#[derive(Debug)]
struct Run {
    pid: i32,
    pending: Mutex<Pending>,
    exit: watch::Receiver<Option<i32>>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    limit: usize,
}

/// Output not yet answered.
#[derive(Debug, Default)]
struct Pending {
    items: Vec<ConsoleItem>,
    bytes: usize,
    dropped: usize,
}

/// The tail of a kernel's output.
#[derive(Debug)]
struct LogBuffer {
    text: Mutex<String>,
    limit: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogBuffer {
    fn append(&self, s: &str) {
        let mut text = lock(&self.text);
        text.push_str(s);
        if text.len() > self.limit {
            let mut cut = text.len() - self.limit;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text.drain(..cut);
        }
    }
}

impl Run {
    fn push(&self, stream: &str, data: &str) {
        let mut p = lock(&self.pending);
        p.bytes += data.len();
        match p.items.last_mut() {
            Some(last) if last.stream == stream => last.data.push_str(data),
            _ => p.items.push(ConsoleItem {
                stream: stream.to_owned(),
                data: data.to_owned(),
            }),
        }
        while p.bytes > self.limit && p.items.len() > 1 {
            let first = p.items.remove(0);
            p.bytes -= first.data.len();
            p.dropped += first.data.len();
        }
    }

    fn take_output(&self) -> Vec<ConsoleItem> {
        let mut p = lock(&self.pending);
        let mut items = std::mem::take(&mut p.items);
        if p.dropped > 0 {
            items.insert(
                0,
                ConsoleItem {
                    stream: "stderr".into(),
                    data: format!("[agent: {} bytes of output dropped]\n", p.dropped),
                },
            );
        }
        p.bytes = 0;
        p.dropped = 0;
        items
    }

    /// Waits up to `flush` for the execution to end; its exit code if it did.
    async fn wait(&self, flush: Duration) -> Option<i32> {
        let mut exit = self.exit.clone();
        match tokio::time::timeout(flush, exit.wait_for(Option::is_some)).await {
            Ok(Ok(code)) => *code,
            _ => None,
        }
    }
}

impl ProcessKernel {
    /// The main process's pid (also its process group).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Which incarnation of the kernel this is.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The kernel's working directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The kernel's output so far (its last `process.log_limit_bytes`).
    pub fn logs(&self) -> String {
        lock(&self.log.text).clone()
    }

    /// The main process's exit code, once it has exited.
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Sends SIGINT to every running execution's process group.
    pub fn interrupt(&self) -> Result<(), BackendError> {
        let runs: Vec<i32> = lock(&self.runs).values().map(|r| r.pid).collect();
        for pgid in runs {
            signal_group(pgid, Signal::SIGINT);
        }
        Ok(())
    }

    fn kernel_id(&self) -> Uuid {
        self.kernel_id
    }
}

impl ProcessBackend {
    /// A backend with `config`, reporting kernels that exit by themselves on
    /// `events`. Makes the scratch directory.
    pub fn new(
        config: ProcessConfig,
        events: mpsc::UnboundedSender<BackendEvent>,
    ) -> Result<ProcessBackend, BackendError> {
        std::fs::create_dir_all(&config.scratch_dir).map_err(|e| {
            BackendError::io(
                format!(
                    "create the scratch directory {}",
                    config.scratch_dir.display()
                ),
                e,
            )
        })?;
        Ok(ProcessBackend {
            config,
            events,
            generations: AtomicU64::new(1),
        })
    }

    /// The runtime an image runs code with: the last path component of the
    /// image name before its tag, matched against `process.runtimes`
    /// exactly, then as a prefix (`python3.11-cuda` → `python`); else the
    /// default runtime.
    pub fn runtime_for(&self, image: &str) -> Vec<String> {
        let name = image.rsplit('/').next().unwrap_or(image);
        let name = name.split(['@', ':']).next().unwrap_or(name);
        let runtimes = &self.config.runtimes;
        let chosen = runtimes.get(name).or_else(|| {
            runtimes
                .iter()
                .filter(|(k, _)| name.starts_with(k.as_str()))
                .max_by_key(|(k, _)| k.len())
                .map(|(_, v)| v)
        });
        chosen
            .or_else(|| runtimes.get(&self.config.default_runtime))
            .cloned()
            .unwrap_or_else(|| vec!["sh".to_owned(), "-c".to_owned()])
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .runtimes
            .get("sh")
            .cloned()
            .unwrap_or_else(|| vec!["sh".to_owned(), "-c".to_owned()])
    }

    /// Starts a kernel's main process in `{scratch_dir}/{kernel_id}`.
    pub async fn create(
        &self,
        kernel_id: Uuid,
        session_id: Uuid,
        config: &KernelConfig,
    ) -> Result<Arc<ProcessKernel>, BackendError> {
        let workdir = self.config.scratch_dir.join(kernel_id.to_string());
        tokio::fs::create_dir_all(&workdir)
            .await
            .map_err(|e| BackendError::io(format!("create {}", workdir.display()), e))?;
        let env = kernel_env(kernel_id, session_id, config);
        let log = Arc::new(LogBuffer {
            text: Mutex::new(String::new()),
            limit: self.config.log_limit_bytes.max(1024),
        });

        if let Some(script) = config
            .bootstrap_script
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            self.bootstrap(script, &workdir, &env, &log).await?;
        }

        let argv = match config
            .startup_command
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(command) => {
                let mut argv = self.shell();
                argv.push(command.to_owned());
                argv
            }
            None => self.config.main_command.clone(),
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| BackendError::Invalid("empty main command".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&workdir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(self.config.destroy_on_shutdown)
            .spawn()
            .map_err(|e| BackendError::io(format!("start {program:?}"), e))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| BackendError::Gone("the main process exited at once".into()))?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(read_output(out, "stdout", None, Arc::clone(&log)));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(read_output(err, "stderr", None, Arc::clone(&log)));
        }

        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let (exit_tx, exit_rx) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        {
            let stopping = Arc::clone(&stopping);
            let events = self.events.clone();
            tokio::spawn(async move {
                let code = match child.wait().await {
                    Ok(status) => exit_code(status),
                    Err(e) => {
                        tracing::warn!(%kernel_id, error = %e, "cannot wait for a kernel's main process");
                        -1
                    }
                };
                let _ = exit_tx.send(Some(code));
                if !stopping.load(Ordering::SeqCst) {
                    tracing::info!(%kernel_id, exit_code = code, "kernel exited by itself");
                    let _ = events.send(BackendEvent::Exited {
                        kernel_id,
                        generation,
                        exit_code: code,
                    });
                }
            });
        }
        tracing::debug!(%kernel_id, pid, workdir = %workdir.display(), "kernel process started");
        Ok(Arc::new(ProcessKernel {
            kernel_id,
            generation,
            pid,
            workdir,
            runtime: self.runtime_for(&config.image.canonical),
            env,
            exit: exit_rx,
            stopping,
            runs: Mutex::new(HashMap::new()),
            groups: Mutex::new(Vec::new()),
            log,
        }))
    }

    async fn bootstrap(
        &self,
        script: &str,
        workdir: &Path,
        env: &[(String, String)],
        log: &LogBuffer,
    ) -> Result<(), BackendError> {
        let argv = self.shell();
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| BackendError::Invalid("empty shell runtime".into()))?;
        let run = Command::new(program)
            .args(args)
            .arg(script)
            .current_dir(workdir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(BOOTSTRAP_TIMEOUT, run).await {
            Ok(Ok(out)) => {
                log.append(&String::from_utf8_lossy(&out.stdout));
                log.append(&String::from_utf8_lossy(&out.stderr));
                if !out.status.success() {
                    log.append(&format!(
                        "[agent: the bootstrap script exited with {}]\n",
                        exit_code(out.status)
                    ));
                }
                Ok(())
            }
            Ok(Err(e)) => Err(BackendError::io("run the bootstrap script", e)),
            Err(_) => {
                log.append("[agent: the bootstrap script timed out]\n");
                Ok(())
            }
        }
    }

    /// Stops the kernel's process tree: SIGTERM, then SIGKILL after the
    /// grace; answers the main process's exit code. With `remove_scratch`
    /// (and not `process.keep_scratch`) its directory is removed too.
    pub async fn destroy(
        &self,
        kernel: &ProcessKernel,
        remove_scratch: bool,
    ) -> Result<Option<i32>, BackendError> {
        kernel.stopping.store(true, Ordering::SeqCst);
        let mut groups = vec![kernel.pid];
        groups.extend(lock(&kernel.groups).iter().copied());
        for g in &groups {
            signal_group(*g, Signal::SIGTERM);
        }
        let grace = Duration::from_millis(self.config.kill_grace_ms);
        let deadline = Instant::now() + grace;
        loop {
            let main_gone = kernel.exit_code().is_some();
            if main_gone && !groups.iter().any(|g| group_alive(*g)) {
                break;
            }
            if Instant::now() >= deadline {
                tracing::debug!(kernel_id = %kernel.kernel_id(), "kill grace over; SIGKILL");
                for g in &groups {
                    signal_group(*g, Signal::SIGKILL);
                }
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let mut exit = kernel.exit.clone();
        let code =
            match tokio::time::timeout(Duration::from_secs(10), exit.wait_for(Option::is_some))
                .await
            {
                Ok(Ok(code)) => *code,
                _ => {
                    return Err(BackendError::Gone(format!(
                        "the main process {} of kernel {} did not exit after SIGKILL",
                        kernel.pid, kernel.kernel_id
                    )));
                }
            };
        lock(&kernel.runs).clear();
        if remove_scratch && !self.config.keep_scratch {
            match tokio::fs::remove_dir_all(&kernel.workdir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(kernel_id = %kernel.kernel_id, error = %e, "cannot remove the kernel's directory");
                }
            }
        }
        Ok(code)
    }

    /// Runs code, continues a run or feeds it input; answers once the run
    /// ends or the flush timeout passes (`continued`).
    pub async fn execute(
        &self,
        kernel: &ProcessKernel,
        request: &ExecuteRequest,
    ) -> Result<ExecuteResult, BackendError> {
        if kernel.stopping.load(Ordering::SeqCst) || kernel.exit_code().is_some() {
            return Err(BackendError::Gone(format!(
                "kernel {} is not running",
                kernel.kernel_id
            )));
        }
        let flush = Duration::from_millis(
            request
                .flush_timeout_ms
                .unwrap_or(self.config.flush_timeout_ms),
        );
        let existing = lock(&kernel.runs).get(&request.run_id).cloned();
        let run = match (request.mode, existing) {
            (ExecuteMode::Query | ExecuteMode::Batch, Some(run)) => run,
            (ExecuteMode::Query, None) => {
                let mut argv = kernel.runtime.clone();
                argv.push(request.code.clone());
                self.start_run(kernel, &request.run_id, &argv)?
            }
            (ExecuteMode::Batch, None) => {
                let mut argv = self.shell();
                argv.push(batch_script(request));
                self.start_run(kernel, &request.run_id, &argv)?
            }
            (ExecuteMode::Continue, Some(run)) => run,
            (ExecuteMode::Input, Some(run)) => {
                let mut stdin = run.stdin.lock().await;
                if let Some(pipe) = stdin.as_mut() {
                    let mut line = request.code.clone();
                    line.push('\n');
                    if let Err(e) = pipe.write_all(line.as_bytes()).await {
                        tracing::debug!(error = %e, "the run does not read its input any more");
                        *stdin = None;
                    }
                }
                drop(stdin);
                run
            }
            (ExecuteMode::Continue | ExecuteMode::Input, None) => {
                return Err(BackendError::Invalid(format!(
                    "no run {:?} in kernel {}",
                    request.run_id, kernel.kernel_id
                )));
            }
        };
        let finished = run.wait(flush).await;
        let console = run.take_output();
        if finished.is_some() {
            let mut runs = lock(&kernel.runs);
            if runs
                .get(&request.run_id)
                .is_some_and(|r| Arc::ptr_eq(r, &run))
            {
                runs.remove(&request.run_id);
            }
        }
        Ok(ExecuteResult {
            run_id: request.run_id.clone(),
            status: if finished.is_some() {
                ExecuteStatus::Finished
            } else {
                ExecuteStatus::Continued
            },
            exit_code: finished,
            console,
            options: Default::default(),
            files: Vec::new(),
        })
    }

    fn start_run(
        &self,
        kernel: &ProcessKernel,
        run_id: &str,
        argv: &[String],
    ) -> Result<Arc<Run>, BackendError> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| BackendError::Invalid("empty runtime".into()))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&kernel.workdir)
            .envs(kernel.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(self.config.destroy_on_shutdown)
            .spawn()
            .map_err(|e| BackendError::io(format!("start {program:?}"), e))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| BackendError::Gone("the execution exited at once".into()))?;
        {
            let mut groups = lock(&kernel.groups);
            // Forget groups that are gone, so their ids cannot be reused by
            // someone else's processes before the kernel is destroyed.
            groups.retain(|g| group_exists(*g));
            groups.push(pid);
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let run = Arc::new(Run {
            pid,
            pending: Mutex::new(Pending::default()),
            exit: exit_rx,
            stdin: tokio::sync::Mutex::new(child.stdin.take()),
            limit: self.config.log_limit_bytes.max(1024),
        });
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(read_output(
                out,
                "stdout",
                Some(Arc::clone(&run)),
                Arc::clone(&kernel.log),
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(read_output(
                err,
                "stderr",
                Some(Arc::clone(&run)),
                Arc::clone(&kernel.log),
            )));
        }
        let kernel_id = kernel.kernel_id;
        tokio::spawn(async move {
            let code = match child.wait().await {
                Ok(status) => exit_code(status),
                Err(e) => {
                    tracing::warn!(%kernel_id, error = %e, "cannot wait for an execution");
                    -1
                }
            };
            let _ =
                tokio::time::timeout(DRAIN_AFTER_EXIT, futures::future::join_all(readers)).await;
            let _ = exit_tx.send(Some(code));
        });
        lock(&kernel.runs).insert(run_id.to_owned(), Arc::clone(&run));
        Ok(run)
    }
}

/// The environment of a kernel's processes: the agent's own, the kernel's
/// `environ`, and the reference's `BACKENDAI_*` variables.
fn kernel_env(kernel_id: Uuid, session_id: Uuid, config: &KernelConfig) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("BACKENDAI_KERNEL_ID".into(), kernel_id.to_string()),
        ("BACKENDAI_SESSION_ID".into(), session_id.to_string()),
        (
            "BACKENDAI_KERNEL_IMAGE".into(),
            config.image.canonical.clone(),
        ),
        ("BACKENDAI_CLUSTER_ROLE".into(), config.cluster_role.clone()),
        (
            "BACKENDAI_CLUSTER_IDX".into(),
            config.cluster_idx.to_string(),
        ),
        (
            "BACKENDAI_CLUSTER_HOST".into(),
            config.cluster_hostname.clone(),
        ),
        ("BACKENDAI_SESSION_TYPE".into(), config.session_type.clone()),
    ];
    env.extend(config.environ.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// A batch run's script: its `build` step, then its `exec` step (or the
/// code), stopping at the first failure.
fn batch_script(request: &ExecuteRequest) -> String {
    let step = |k: &str| {
        request
            .options
            .get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let mut script = String::from("set -e\n");
    if let Some(build) = step("build") {
        script.push_str(&build);
        script.push('\n');
    }
    match step("exec") {
        Some(exec) => script.push_str(&exec),
        None => script.push_str(&request.code),
    }
    script.push('\n');
    script
}

/// Reads a pipe to its end, into the kernel's log and (for executions) the
/// run's pending output, keeping UTF-8 characters whole across reads.
async fn read_output(
    mut pipe: impl AsyncRead + Unpin,
    stream: &'static str,
    run: Option<Arc<Run>>,
    log: Arc<LogBuffer>,
) {
    let mut buf = vec![0u8; 8192];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        carry.extend_from_slice(&buf[..n]);
        let text = take_utf8(&mut carry);
        if !text.is_empty() {
            log.append(&text);
            if let Some(run) = &run {
                run.push(stream, &text);
            }
        }
    }
    if !carry.is_empty() {
        let text = String::from_utf8_lossy(&carry).into_owned();
        log.append(&text);
        if let Some(run) = &run {
            run.push(stream, &text);
        }
    }
}

/// Takes the longest decodable prefix of `bytes` (invalid sequences become
/// U+FFFD), leaving an incomplete trailing character for the next read.
fn take_utf8(bytes: &mut Vec<u8>) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            let s = s.to_owned();
            bytes.clear();
            s
        }
        Err(e) if e.error_len().is_none() => {
            let valid = e.valid_up_to();
            let rest = bytes.split_off(valid);
            let text = String::from_utf8_lossy(bytes).into_owned();
            *bytes = rest;
            text
        }
        Err(_) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            bytes.clear();
            text
        }
    }
}

/// An exit status as a number: the exit code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// Sends `signal` to a process group; a group that is gone is fine.
fn signal_group(pgid: i32, signal: Signal) {
    if pgid <= 1 {
        return;
    }
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::debug!(pgid, ?signal, error = %e, "cannot signal a process group"),
    }
}

/// Whether a process group still has any member, zombies included.
fn group_exists(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Whether a process group has a member that is not a zombie (zombies left
/// to an init that does not reap them must not hold up a destruction).
fn group_alive(pgid: i32) -> bool {
    if !group_exists(pgid) {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp)) = parse_stat(&stat)
            && pgrp == pgid
            && !matches!(state, 'Z' | 'X')
        {
            return true;
        }
    }
    false
}

/// The state and process group of a `/proc/{pid}/stat` line.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_kept_whole_across_reads() {
        let mut carry = "hé".as_bytes()[..2].to_vec();
        assert_eq!(take_utf8(&mut carry), "h");
        carry.extend_from_slice(&"hé".as_bytes()[2..]);
        assert_eq!(take_utf8(&mut carry), "é");
        assert!(carry.is_empty());
    }

    #[test]
    fn stat_lines_parse() {
        assert_eq!(
            parse_stat("42 (we(ird) name) S 1 40 40 0 -1"),
            Some(('S', 40))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_image_name_chooses_the_runtime() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let dir = std::env::temp_dir().join(format!("agent-unit-{}", Uuid::new_v4()));
        let config = ProcessConfig {
            scratch_dir: dir.clone(),
            ..ProcessConfig::default()
        };
        let b = ProcessBackend::new(config, tx).unwrap();
        assert_eq!(
            b.runtime_for("cr.backend.ai/stable/python:3.11")[0],
            "python3"
        );
        assert_eq!(b.runtime_for("python3.11-cuda")[0], "python3");
        assert_eq!(b.runtime_for("lablup/sh")[0], "sh");
        assert_eq!(b.runtime_for("registry/r/ubuntu:22.04")[0], "sh");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_log_keeps_its_tail() {
        let log = LogBuffer {
            text: Mutex::new(String::new()),
            limit: 4,
        };
        log.append("abcdef");
        assert_eq!(*lock(&log.text), "cdef");
    }
}
