//! Kernel lifecycle payloads: create, destroy, restart, interrupt, logs.
//!
//! Shaped after the reference agent's `create_kernels` / `destroy_kernel` /
//! `restart_kernel` / `interrupt_kernel` / `get_logs` (see the domain spec
//! §4.4). Maps are `BTreeMap`s so that an encoded request is the same bytes
//! every time. Resource slots are decimal strings (`"cpu" → "2"`,
//! `"mem" → "4294967296"`): exact, and the agent parses them with whatever
//! decimal type it likes.
//!
//! Every state-changing request carries an `idempotency_key`: the id of the
//! event that caused the call. See [`IdempotencyCache`](crate::IdempotencyCache).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Resource slots: slot name → amount as a decimal string.
pub type SlotMap = BTreeMap<String, String>;

/// The image a kernel runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Canonical name, `registry/repo:tag`.
    pub canonical: String,
    /// CPU architecture, e.g. `x86_64`, `aarch64`.
    pub architecture: String,
    /// Content digest of the image config, when known.
    #[serde(default)]
    pub digest: Option<String>,
    /// Name of the registry (the agent looks up its credentials itself: they
    /// never travel over this unencrypted channel).
    #[serde(default)]
    pub registry: String,
    /// The registry's URL.
    #[serde(default)]
    pub registry_url: String,
    /// Docker labels of the image.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether the image exists only on agents (never pulled).
    #[serde(default)]
    pub is_local: bool,
}

/// A virtual folder mounted into a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VFolderMount {
    /// The folder's name.
    pub name: String,
    /// The folder's id (`quota-scope/uuid`).
    pub vfid: String,
    /// Subpath inside the folder (`.` for the whole folder).
    #[serde(default)]
    pub vfsubpath: String,
    /// Path on the host.
    pub host_path: String,
    /// Path inside the kernel.
    pub kernel_path: String,
    /// `ro`, `rw` or `wd`.
    pub mount_perm: String,
    /// `general`, `model` or `data`.
    #[serde(default)]
    pub usage_mode: String,
}

/// How the kernels of a session are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterMode {
    /// All kernels on one agent.
    #[default]
    SingleNode,
    /// Kernels may span agents.
    MultiNode,
}

/// An SSH keypair the kernels of a cluster use to reach each other.
///
/// `Debug` does not show the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshKeypair {
    /// OpenSSH public key.
    pub public_key: String,
    /// PEM private key.
    pub private_key: String,
}

impl fmt::Debug for SshKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshKeypair")
            .field("public_key", &self.public_key)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// Where the kernels of a session live together.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Single- or multi-node.
    #[serde(default)]
    pub mode: ClusterMode,
    /// Number of kernels in the session.
    #[serde(default)]
    pub size: u32,
    /// Kernels per cluster role, e.g. `main → 1, sub → 3`.
    #[serde(default)]
    pub replicas: BTreeMap<String, u32>,
    /// The local network the kernels share (single-node clusters).
    #[serde(default)]
    pub network_name: Option<String>,
    /// SSH keys for kernel-to-kernel access.
    #[serde(default)]
    pub ssh_keypair: Option<SshKeypair>,
    /// Cluster hostname → (host, port) of each kernel's SSH port.
    #[serde(default)]
    pub ssh_port_mapping: BTreeMap<String, (String, u16)>,
}

/// The configuration of one kernel to create (the reference's
/// `KernelCreationConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConfig {
    /// The kernel's id, chosen by the manager.
    pub kernel_id: Uuid,
    /// The image to run.
    pub image: ImageRef,
    /// Pull policy: `digest`, `tag` or `none`.
    #[serde(default)]
    pub auto_pull: String,
    /// `interactive`, `batch` or `inference`.
    #[serde(default)]
    pub session_type: String,
    /// `main` or `sub`.
    #[serde(default)]
    pub cluster_role: String,
    /// Index within the role (1-based, as the reference).
    #[serde(default)]
    pub cluster_idx: u32,
    /// Hostname inside the cluster (`main1`, `sub2`, …).
    #[serde(default)]
    pub cluster_hostname: String,
    /// Rank among all kernels of the session.
    #[serde(default)]
    pub local_rank: u32,
    /// The slots the kernel may use.
    pub resource_slots: SlotMap,
    /// Extra resource options, e.g. `shmem`.
    #[serde(default)]
    pub resource_opts: BTreeMap<String, String>,
    /// Environment variables.
    #[serde(default)]
    pub environ: BTreeMap<String, String>,
    /// Mounted virtual folders.
    #[serde(default)]
    pub mounts: Vec<VFolderMount>,
    /// Seconds of idleness after which the agent may stop the kernel.
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    /// A script run once when the kernel starts.
    #[serde(default)]
    pub bootstrap_script: Option<String>,
    /// The command of a batch kernel.
    #[serde(default)]
    pub startup_command: Option<String>,
    /// Container ports to open up front.
    #[serde(default)]
    pub preopen_ports: Vec<u16>,
    /// Host ports already chosen (host-network clusters).
    #[serde(default)]
    pub allocated_host_ports: Vec<u16>,
    /// The scaling group the kernel is scheduled in.
    #[serde(default)]
    pub scaling_group: String,
    /// The inference endpoint it serves, if any.
    #[serde(default)]
    pub endpoint_id: Option<Uuid>,
}

/// `create_kernels`: start the kernels of one session on this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKernelsRequest {
    /// The id of the event that caused the call; a repeat does nothing new.
    pub idempotency_key: String,
    /// The session the kernels belong to.
    pub session_id: Uuid,
    /// One configuration per kernel.
    pub kernels: Vec<KernelConfig>,
    /// The session's cluster.
    #[serde(default)]
    pub cluster_info: ClusterInfo,
}

/// One port a service inside a kernel listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// The service, e.g. `jupyter`.
    pub name: String,
    /// `http`, `tcp`, `pty`, `preopen`, …
    pub protocol: String,
    /// Ports inside the container.
    #[serde(default)]
    pub container_ports: Vec<u16>,
    /// The host ports they are published on.
    #[serde(default)]
    pub host_ports: Vec<u16>,
}

/// A device attached to a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedDevice {
    /// The device's id on the agent.
    pub device_id: String,
    /// Its model name.
    #[serde(default)]
    pub model_name: String,
    /// The share of it allocated, as a decimal string.
    #[serde(default)]
    pub amount: String,
}

/// What the agent made of a kernel it started (the reference's creation info).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCreationInfo {
    /// The kernel.
    pub kernel_id: Uuid,
    /// The container (or process) that runs it.
    pub container_id: String,
    /// The host the kernel's ports are reachable on.
    pub kernel_host: String,
    /// REPL input port.
    #[serde(default)]
    pub repl_in_port: u16,
    /// REPL output port.
    #[serde(default)]
    pub repl_out_port: u16,
    /// Standard input port.
    #[serde(default)]
    pub stdin_port: u16,
    /// Standard output port.
    #[serde(default)]
    pub stdout_port: u16,
    /// Ports of the services inside.
    #[serde(default)]
    pub service_ports: Vec<ServicePort>,
    /// The slots really allocated (may differ from the request).
    #[serde(default)]
    pub resource_slots: SlotMap,
    /// Devices attached, by device kind (`cuda`, …).
    #[serde(default)]
    pub attached_devices: BTreeMap<String, Vec<AttachedDevice>>,
    /// The agent's RPC address.
    #[serde(default)]
    pub agent_addr: String,
    /// The agent's scaling group.
    #[serde(default)]
    pub scaling_group: String,
}

/// Answer to `create_kernels`: one entry per kernel, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateKernelsResponse {
    /// The kernels started.
    pub kernels: Vec<KernelCreationInfo>,
}

/// `destroy_kernel`: stop a kernel and wait until it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyKernelRequest {
    /// The id of the event that caused the call.
    pub idempotency_key: String,
    /// The kernel.
    pub kernel_id: Uuid,
    /// Its session.
    pub session_id: Uuid,
    /// Why, in kebab-case (`user-requested`, `idle-timeout`, …).
    #[serde(default)]
    pub reason: String,
    /// Do not publish lifecycle events for this destruction.
    #[serde(default)]
    pub suppress_events: bool,
}

/// Answer to `destroy_kernel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestroyKernelResponse {
    /// The kernel.
    pub kernel_id: Uuid,
    /// Its exit code, when known.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The agent did not run it any more (nothing was done).
    #[serde(default)]
    pub already_terminated: bool,
}

/// `restart_kernel`: restart a kernel in place, optionally with a new config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartKernelRequest {
    /// The id of the event that caused the call.
    pub idempotency_key: String,
    /// Its session.
    pub session_id: Uuid,
    /// The kernel.
    pub kernel_id: Uuid,
    /// A new configuration, or `None` to keep the current one (boxed: it is
    /// large and rare).
    #[serde(default)]
    pub updated_config: Option<Box<KernelConfig>>,
}

/// `interrupt_kernel`: interrupt what the kernel is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptKernelRequest {
    /// The id of the event that caused the call.
    pub idempotency_key: String,
    /// Its session.
    pub session_id: Uuid,
    /// The kernel.
    pub kernel_id: Uuid,
}

/// Answer to `interrupt_kernel`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterruptKernelResponse {}

/// `get_logs`: the kernel's container log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetLogsRequest {
    /// The kernel.
    pub kernel_id: Uuid,
}

/// Answer to `get_logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetLogsResponse {
    /// The kernel.
    pub kernel_id: Uuid,
    /// The log text.
    pub logs: String,
}
