//! Agent-wide payloads: health, the kernel registry sync, the local config.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `health` (the reference's `ping`): is the agent there and who is it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HealthRequest {
    /// Echoed back.
    #[serde(default)]
    pub message: String,
}

/// Answer to `health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// The agent's id.
    pub agent_id: String,
    /// The agent's software version.
    #[serde(default)]
    pub agent_version: String,
    /// The request's message.
    #[serde(default)]
    pub message: String,
}

/// A kernel and its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KernelRef {
    /// The kernel.
    pub kernel_id: Uuid,
    /// Its session.
    pub session_id: Uuid,
}

/// `sync_kernel_registry`: the manager says which kernels it believes run on
/// this agent; the agent reports what it really runs, and reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncKernelRegistryRequest {
    /// The kernels the manager believes the agent runs.
    #[serde(default)]
    pub kernels: Vec<KernelRef>,
}

/// Answer to `sync_kernel_registry`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncKernelRegistryResponse {
    /// What the agent really runs (after reconciling).
    #[serde(default)]
    pub running: Vec<KernelRef>,
    /// Kernels the manager named that the agent does not run
    /// (`already-terminated`).
    #[serde(default)]
    pub already_terminated: Vec<KernelRef>,
    /// Kernels the agent ran that the manager did not name; the agent has
    /// destroyed them (`not-found-in-manager`).
    #[serde(default)]
    pub destroyed_unknown: Vec<KernelRef>,
}

/// Answer to `get_local_config`: the agent's settings the manager needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocalConfig {
    /// The agent's id.
    #[serde(default)]
    pub agent_id: String,
    /// Its region.
    #[serde(default)]
    pub region: String,
    /// Its scaling group.
    #[serde(default)]
    pub scaling_group: String,
    /// Where it writes abuse reports, if it does.
    #[serde(default)]
    pub abuse_report_path: Option<String>,
    /// The agent watcher's settings (no secrets).
    #[serde(default)]
    pub watcher: BTreeMap<String, String>,
}
