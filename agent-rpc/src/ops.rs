//! The operations: one [`Request`] variant per call, one [`Response`]
//! variant per answer.

use serde::{Deserialize, Serialize};

use crate::agent::{
    HealthRequest, HealthResponse, LocalConfig, SyncKernelRegistryRequest,
    SyncKernelRegistryResponse,
};
use crate::error::RemoteError;
use crate::execute::{ExecuteRequest, ExecuteResult};
use crate::kernel::{
    CreateKernelsRequest, CreateKernelsResponse, DestroyKernelRequest, DestroyKernelResponse,
    GetLogsRequest, GetLogsResponse, InterruptKernelRequest, InterruptKernelResponse,
    KernelCreationInfo, RestartKernelRequest,
};

/// A call from the manager to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Is the agent there? Answered by [`Response::Health`].
    Health(HealthRequest),
    /// Start the kernels of a session. Answered by [`Response::CreateKernels`].
    CreateKernels(CreateKernelsRequest),
    /// Stop a kernel. Answered by [`Response::DestroyKernel`].
    DestroyKernel(DestroyKernelRequest),
    /// Restart a kernel. Answered by [`Response::RestartKernel`].
    RestartKernel(RestartKernelRequest),
    /// Run code. Answered by [`Response::Execute`].
    Execute(ExecuteRequest),
    /// Interrupt a kernel. Answered by [`Response::InterruptKernel`].
    InterruptKernel(InterruptKernelRequest),
    /// Read a kernel's log. Answered by [`Response::GetLogs`].
    GetLogs(GetLogsRequest),
    /// Reconcile the kernel registry. Answered by [`Response::SyncKernelRegistry`].
    SyncKernelRegistry(SyncKernelRegistryRequest),
    /// Read the agent's local settings. Answered by [`Response::GetLocalConfig`].
    GetLocalConfig,
}

/// An agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// To [`Request::Health`].
    Health(HealthResponse),
    /// To [`Request::CreateKernels`].
    CreateKernels(CreateKernelsResponse),
    /// To [`Request::DestroyKernel`].
    DestroyKernel(DestroyKernelResponse),
    /// To [`Request::RestartKernel`]: the restarted kernel.
    RestartKernel(KernelCreationInfo),
    /// To [`Request::Execute`].
    Execute(ExecuteResult),
    /// To [`Request::InterruptKernel`].
    InterruptKernel(InterruptKernelResponse),
    /// To [`Request::GetLogs`].
    GetLogs(GetLogsResponse),
    /// To [`Request::SyncKernelRegistry`].
    SyncKernelRegistry(SyncKernelRegistryResponse),
    /// To [`Request::GetLocalConfig`].
    GetLocalConfig(LocalConfig),
}

/// The body of a response message.
pub type ReplyBody = Result<Response, RemoteError>;

impl Request {
    /// The operation's name, as in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Health(_) => "health",
            Request::CreateKernels(_) => "create_kernels",
            Request::DestroyKernel(_) => "destroy_kernel",
            Request::RestartKernel(_) => "restart_kernel",
            Request::Execute(_) => "execute",
            Request::InterruptKernel(_) => "interrupt_kernel",
            Request::GetLogs(_) => "get_logs",
            Request::SyncKernelRegistry(_) => "sync_kernel_registry",
            Request::GetLocalConfig => "get_local_config",
        }
    }

    /// The idempotency key of a state-changing call; `None` for reads.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Request::CreateKernels(r) => Some(&r.idempotency_key),
            Request::DestroyKernel(r) => Some(&r.idempotency_key),
            Request::RestartKernel(r) => Some(&r.idempotency_key),
            Request::Execute(r) => Some(&r.idempotency_key),
            Request::InterruptKernel(r) => Some(&r.idempotency_key),
            Request::Health(_)
            | Request::GetLogs(_)
            | Request::SyncKernelRegistry(_)
            | Request::GetLocalConfig => None,
        }
    }

    /// What makes two calls "the same call": the operation, its target and
    /// the idempotency key. `None` for reads.
    ///
    /// One event may cause several calls (a session's termination destroys
    /// each of its kernels), all carrying the event's id; the target keeps
    /// them apart, so each runs once.
    pub fn idempotency_scope(&self) -> Option<String> {
        let scope = match self {
            Request::CreateKernels(r) => {
                let mut s = format!("create_kernels/{}/", r.session_id);
                for (i, k) in r.kernels.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(&k.kernel_id.to_string());
                }
                s.push('/');
                s.push_str(&r.idempotency_key);
                s
            }
            Request::DestroyKernel(r) => {
                format!("destroy_kernel/{}/{}", r.kernel_id, r.idempotency_key)
            }
            Request::RestartKernel(r) => {
                format!("restart_kernel/{}/{}", r.kernel_id, r.idempotency_key)
            }
            Request::Execute(r) => format!(
                "execute/{}/{}/{:?}/{}",
                r.kernel_id, r.run_id, r.mode, r.idempotency_key
            ),
            Request::InterruptKernel(r) => {
                format!("interrupt_kernel/{}/{}", r.kernel_id, r.idempotency_key)
            }
            Request::Health(_)
            | Request::GetLogs(_)
            | Request::SyncKernelRegistry(_)
            | Request::GetLocalConfig => return None,
        };
        Some(scope)
    }
}

impl Response {
    /// The operation this answers.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Health(_) => "health",
            Response::CreateKernels(_) => "create_kernels",
            Response::DestroyKernel(_) => "destroy_kernel",
            Response::RestartKernel(_) => "restart_kernel",
            Response::Execute(_) => "execute",
            Response::InterruptKernel(_) => "interrupt_kernel",
            Response::GetLogs(_) => "get_logs",
            Response::SyncKernelRegistry(_) => "sync_kernel_registry",
            Response::GetLocalConfig(_) => "get_local_config",
        }
    }
}
