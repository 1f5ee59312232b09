//! The dummy backend: kernels that exist only in memory.
//!
//! Creating, destroying and executing take the configured delays and fail
//! at the configured rates (the dice are seeded per agent when
//! `dummy.seed` is set, so a scale test can be replayed). Nothing runs, so a
//! single process can host a thousand agents.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_rpc::execute::{ExecuteMode, ExecuteRequest, ExecuteResult, ExecuteStatus};
use agent_rpc::kernel::KernelConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::config::DummyConfig;
use crate::error::BackendError;

/// A fake kernel.
#[derive(Debug)]
pub struct DummyKernel {
    /// Its fake container id.
    pub container_id: String,
    /// Which incarnation it is.
    pub generation: u64,
    log: Mutex<String>,
}

impl DummyKernel {
    /// Its fake log.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn log(&self, line: &str) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push_str(line);
        log.push('\n');
    }
}

/// Fakes kernels for one agent.
#[derive(Debug)]
pub struct DummyBackend {
    config: Mutex<DummyConfig>,
    dice: Mutex<StdRng>,
    generations: AtomicU64,
}

impl DummyBackend {
    /// A backend with `config`, for agent number `index` (its dice are
    /// seeded with `seed + index`).
    pub fn new(config: DummyConfig, index: u32) -> DummyBackend {
        let dice = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed.wrapping_add(u64::from(index))),
            None => StdRng::from_os_rng(),
        };
        DummyBackend {
            config: Mutex::new(config),
            dice: Mutex::new(dice),
            generations: AtomicU64::new(1),
        }
    }

    /// Takes up new delays and failure rates (the seed is not re-applied).
    pub fn reload(&self, config: DummyConfig) {
        *self.settings() = config;
    }

    fn settings(&self) -> MutexGuard<'_, DummyConfig> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rolls the dice: whether an operation failing at `rate` fails now.
    fn fails(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let roll: f64 = self.dice.lock().unwrap_or_else(|p| p.into_inner()).random();
        roll < rate
    }

    /// Whether creating a kernel fakes a pull first (`pull_delay_ms` > 0
    /// and the image is not local).
    pub fn needs_pull(&self, config: &KernelConfig) -> bool {
        self.settings().pull_delay_ms > 0 && !config.image.is_local
    }

    /// Fakes a pull.
    pub async fn pull(&self, _config: &KernelConfig) -> Result<(), BackendError> {
        let delay = self.settings().pull_delay_ms;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok(())
    }

    /// Fakes a kernel's creation.
    pub async fn create(&self, kernel_id: Uuid) -> Result<Arc<DummyKernel>, BackendError> {
        let (delay, rate) = {
            let c = self.settings();
            (c.create_delay_ms, c.create_failure_rate)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.fails(rate) {
            return Err(BackendError::Injected("create"));
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let kernel = DummyKernel {
            container_id: format!("dummy-{}-{generation}", kernel_id.simple()),
            generation,
            log: Mutex::new(String::new()),
        };
        kernel.log(&format!("dummy kernel {kernel_id} started"));
        Ok(Arc::new(kernel))
    }

    /// Fakes a kernel's destruction; the exit code is 0.
    pub async fn destroy(&self, kernel: &DummyKernel) -> Result<Option<i32>, BackendError> {
        let (delay, rate) = {
            let c = self.settings();
            (c.destroy_delay_ms, c.destroy_failure_rate)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.fails(rate) {
            return Err(BackendError::Injected("destroy"));
        }
        kernel.log("dummy kernel terminated");
        Ok(Some(0))
    }

    /// Fakes an execution: every run finishes after the delay with exit
    /// code 0 and no output.
    pub async fn execute(
        &self,
        kernel: &DummyKernel,
        request: &ExecuteRequest,
    ) -> Result<ExecuteResult, BackendError> {
        let (delay, rate) = {
            let c = self.settings();
            (c.execute_delay_ms, c.execute_failure_rate)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.fails(rate) {
            return Err(BackendError::Injected("execute"));
        }
        if matches!(request.mode, ExecuteMode::Query | ExecuteMode::Batch) {
            kernel.log(&format!(
                "run {}: {} bytes of code",
                request.run_id,
                request.code.len()
            ));
        }
        Ok(ExecuteResult {
            run_id: request.run_id.clone(),
            status: ExecuteStatus::Finished,
            exit_code: Some(0),
            console: Vec::new(),
            options: Default::default(),
            files: Vec::new(),
        })
    }
}
