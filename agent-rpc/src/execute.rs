//! Code execution payloads (`execute`), after the reference's query / batch /
//! continue / input modes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What an `execute` call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecuteMode {
    /// Run `code` in the kernel's REPL.
    Query,
    /// Run the build / exec / clean steps given in the options.
    Batch,
    /// Collect more output of a run that answered `continued`.
    Continue,
    /// Send `code` as the user's input to a run waiting for it.
    Input,
}

/// `execute`: run code in a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The id of the event that caused the call.
    pub idempotency_key: String,
    /// Its session.
    pub session_id: Uuid,
    /// The kernel.
    pub kernel_id: Uuid,
    /// The client API version the caller speaks (affects result shapes in the
    /// reference; kept for compatibility).
    #[serde(default)]
    pub api_version: u32,
    /// The run this call belongs to (the same across continue/input calls).
    pub run_id: String,
    /// What to do.
    pub mode: ExecuteMode,
    /// The code (query) or the input (input); empty otherwise.
    #[serde(default)]
    pub code: String,
    /// Mode options, e.g. batch `build` / `exec` / `clean` commands.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// How long to gather output before answering `continued`, in ms.
    #[serde(default)]
    pub flush_timeout_ms: Option<u64>,
}

/// Where a run stands after an `execute` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecuteStatus {
    /// The run is over.
    Finished,
    /// The run goes on; call again with `continue`.
    Continued,
    /// The run waits for the user's input; call again with `input`.
    WaitingInput,
    /// The batch build step is over.
    BuildFinished,
    /// The batch clean step is over.
    CleanFinished,
    /// The run exceeded its time limit.
    ExecTimeout,
}

/// One item of console output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleItem {
    /// `stdout`, `stderr`, `media`, `html`, `log`, `completion`.
    pub stream: String,
    /// The text (media is base64 or a data URL, as produced).
    pub data: String,
}

/// Answer to `execute`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteResult {
    /// The run.
    pub run_id: String,
    /// Where it stands.
    pub status: ExecuteStatus,
    /// The exit code, once finished.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Console output since the previous call.
    #[serde(default)]
    pub console: Vec<ConsoleItem>,
    /// Status options, e.g. `is_password` while waiting for input.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Files the run produced.
    #[serde(default)]
    pub files: Vec<String>,
}
