//! Backends: what really happens to a kernel.
//!
//! The [`Agent`](crate::Agent) keeps the kernel registry, the slot
//! accounting and the notices; a [`Backend`] only makes, stops and talks to
//! kernels:
//!
//! - [`dummy`]: fakes kernels with configured delays and failure rates.
//! - [`process`]: runs each kernel as a local process tree.
//!
//! A backend reports what happens on its own (a kernel's main process
//! exiting) as [`BackendEvent`]s on a channel the agent reads.

pub mod dummy;
pub mod process;

use std::sync::Arc;

use agent_rpc::execute::{ExecuteRequest, ExecuteResult};
use agent_rpc::kernel::KernelConfig;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::{Config, DummyConfig};
use crate::error::BackendError;

pub use dummy::{DummyBackend, DummyKernel};
pub use process::{ProcessBackend, ProcessKernel};

/// Something that happened to a kernel without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    /// The kernel's main process exited by itself.
    Exited {
        /// The kernel.
        kernel_id: Uuid,
        /// Which incarnation of it (a restart makes a new one).
        generation: u64,
        /// Its exit code (128 + the signal number when killed by a signal).
        exit_code: i32,
    },
}

/// The backend of one agent.
#[derive(Debug)]
pub enum Backend {
    /// Fake kernels (boxed: the dice are large).
    Dummy(Box<DummyBackend>),
    /// Local process trees.
    Process(ProcessBackend),
}

/// A kernel as its backend knows it. Cheap to clone.
#[derive(Debug, Clone)]
pub enum KernelHandle {
    /// A fake kernel.
    Dummy(Arc<DummyKernel>),
    /// A process tree.
    Process(Arc<ProcessKernel>),
}

impl KernelHandle {
    /// The id of what runs the kernel (a fake container id, or the main
    /// process's pid).
    pub fn container_id(&self) -> String {
        match self {
            KernelHandle::Dummy(k) => k.container_id.clone(),
            KernelHandle::Process(k) => k.pid().to_string(),
        }
    }

    /// Which incarnation of the kernel this is.
    pub fn generation(&self) -> u64 {
        match self {
            KernelHandle::Dummy(k) => k.generation,
            KernelHandle::Process(k) => k.generation(),
        }
    }
}

impl Backend {
    /// The backend `config` names, for agent number `index` of the process,
    /// reporting events on `events`.
    pub fn from_config(
        config: &Config,
        index: u32,
        events: mpsc::UnboundedSender<BackendEvent>,
    ) -> Result<Backend, BackendError> {
        Ok(match config.agent.backend {
            crate::config::BackendKind::Dummy => {
                Backend::Dummy(Box::new(DummyBackend::new(config.dummy.clone(), index)))
            }
            crate::config::BackendKind::Process => {
                Backend::Process(ProcessBackend::new(config.process.clone(), events)?)
            }
        })
    }

    /// `dummy` or `process`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Dummy(_) => "dummy",
            Backend::Process(_) => "process",
        }
    }

    /// Whether the kernel's image must be pulled first (then the agent sends
    /// `kernel_pulling` and calls [`pull`](Self::pull)).
    pub fn needs_pull(&self, config: &KernelConfig) -> bool {
        match self {
            Backend::Dummy(b) => b.needs_pull(config),
            Backend::Process(_) => false,
        }
    }

    /// Pulls the kernel's image.
    pub async fn pull(&self, config: &KernelConfig) -> Result<(), BackendError> {
        match self {
            Backend::Dummy(b) => b.pull(config).await,
            Backend::Process(_) => Ok(()),
        }
    }

    /// Starts a kernel.
    pub async fn create(
        &self,
        kernel_id: Uuid,
        session_id: Uuid,
        config: &KernelConfig,
    ) -> Result<KernelHandle, BackendError> {
        match self {
            Backend::Dummy(b) => Ok(KernelHandle::Dummy(b.create(kernel_id).await?)),
            Backend::Process(b) => Ok(KernelHandle::Process(
                b.create(kernel_id, session_id, config).await?,
            )),
        }
    }

    /// Stops a kernel and everything it started; answers its exit code. A
    /// kernel that already exited is cleaned up.
    pub async fn destroy(&self, kernel: &KernelHandle) -> Result<Option<i32>, BackendError> {
        match (self, kernel) {
            (Backend::Dummy(b), KernelHandle::Dummy(k)) => b.destroy(k).await,
            (Backend::Process(b), KernelHandle::Process(k)) => b.destroy(k, true).await,
            _ => Err(mismatch()),
        }
    }

    /// Stops a kernel and starts it again with `config`, keeping its
    /// working directory.
    pub async fn restart(
        &self,
        kernel: &KernelHandle,
        session_id: Uuid,
        config: &KernelConfig,
    ) -> Result<KernelHandle, BackendError> {
        match (self, kernel) {
            (Backend::Dummy(b), KernelHandle::Dummy(k)) => {
                b.destroy(k).await?;
                Ok(KernelHandle::Dummy(b.create(config.kernel_id).await?))
            }
            (Backend::Process(b), KernelHandle::Process(k)) => {
                b.destroy(k, false).await?;
                Ok(KernelHandle::Process(
                    b.create(config.kernel_id, session_id, config).await?,
                ))
            }
            _ => Err(mismatch()),
        }
    }

    /// Runs code (or continues a run, or feeds it input).
    pub async fn execute(
        &self,
        kernel: &KernelHandle,
        request: &ExecuteRequest,
    ) -> Result<ExecuteResult, BackendError> {
        match (self, kernel) {
            (Backend::Dummy(b), KernelHandle::Dummy(k)) => b.execute(k, request).await,
            (Backend::Process(b), KernelHandle::Process(k)) => b.execute(k, request).await,
            _ => Err(mismatch()),
        }
    }

    /// Interrupts what the kernel runs.
    pub async fn interrupt(&self, kernel: &KernelHandle) -> Result<(), BackendError> {
        match (self, kernel) {
            (Backend::Dummy(_), KernelHandle::Dummy(_)) => Ok(()),
            (Backend::Process(_), KernelHandle::Process(k)) => k.interrupt(),
            _ => Err(mismatch()),
        }
    }

    /// The kernel's log.
    pub fn logs(&self, kernel: &KernelHandle) -> String {
        match kernel {
            KernelHandle::Dummy(k) => k.logs(),
            KernelHandle::Process(k) => k.logs(),
        }
    }

    /// Takes up a reloaded `[dummy]` section (delays and failure rates).
    pub fn reload(&self, dummy: &DummyConfig) {
        if let Backend::Dummy(b) = self {
            b.reload(dummy.clone());
        }
    }
}

fn mismatch() -> BackendError {
    BackendError::Invalid("the kernel belongs to another backend".into())
}
