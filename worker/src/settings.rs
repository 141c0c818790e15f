//! How a worker is set up, read from the process configuration by [`WorkerSettings::from_config`]:
//! the only place that knows which `DCC_*` variables the worker uses.

use std::path::PathBuf;
use std::time::Duration;

use dcc_shared::config::Config;
use dcc_shared::queue::reap::Retention;

use crate::WorkerError;
use crate::container::HostLimits;
use crate::executor::ExecSettings;
use crate::files::{FilesMode, FilesSetting};
use crate::warm::WarmSettings;

/// How a worker is set up.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Stable id (labels, leases, health key).
    pub id: String,
    /// CPUs of the host (`DCC_CPUS` or the CPU count).
    pub cpus: u32,
    /// CPU-queue slots; default CPUs − GPUs.
    pub cpu_slots: Option<u32>,
    /// Memory (MiB) given to jobs; `None`: the Docker host's memory.
    pub memory_mb: Option<u64>,
    /// GPUs, overriding detection (`DCC_GPUS`).
    pub gpus: Option<u32>,
    /// `DCC_GPU_MODE` as configured (`auto` is resolved at start).
    pub gpu_mode: String,
    /// Where the device nodes are.
    pub gpu_device_dir: PathBuf,
    /// Driver folders bound in `devices` mode.
    pub gpu_driver_binds: Vec<String>,
    /// `LD_LIBRARY_PATH` in `devices` mode.
    pub gpu_ld_library_path: Option<String>,
    /// Lease length of a claimed attempt.
    pub lease: Duration,
    /// Interval of lease renewal and health beats.
    pub heartbeat: Duration,
    /// The drain timeout: also the longest a stopping worker with nothing left to run retries
    /// unregistering from an unreachable Redis.
    pub drain: Duration,
    /// Retention of finished jobs.
    pub retention: Retention,
    /// Executor settings.
    pub exec: ExecSettings,
    /// Concurrent container creations.
    pub docker_concurrency: usize,
    /// Free-disk threshold of the health check, in percent (0: off).
    pub disk_min_free_percent: u64,
    /// `DCC_FILES_MODE` as configured (`auto` is resolved at start into `exec.files`).
    pub files: FilesSetting,
    /// Warm containers for fast jobs.
    pub warm: WarmSettings,
    /// The Spot watch (`DCC_SPOT_IMDS`), when on.
    pub spot: Option<crate::spot::SpotSettings>,
}

impl WorkerSettings {
    /// The worker's part of the process configuration.
    pub fn from_config(c: &Config) -> Result<Self, WorkerError> {
        let cpus = c.cpus.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        });
        let id = c.worker_id.clone().unwrap_or_else(default_id);
        Ok(WorkerSettings {
            id: id.clone(),
            cpus,
            cpu_slots: c.cpu_slots,
            memory_mb: c.memory_mb,
            gpus: c.gpus,
            gpu_mode: c.gpu_mode.clone(),
            gpu_device_dir: c.gpu_device_dir.clone(),
            gpu_driver_binds: c.gpu_driver_binds.clone(),
            gpu_ld_library_path: c.gpu_ld_library_path.clone(),
            lease: c.lease,
            drain: c.drain_timeout,
            heartbeat: c.heartbeat,
            retention: c.retention(),
            exec: ExecSettings {
                // The deployment until the start reads it from Redis.
                owner: crate::docker::Owner {
                    worker: id,
                    deployment: String::new(),
                },
                limits: HostLimits {
                    pids_limit: c.pids_limit,
                    runtime: c.docker_runtime.clone(),
                },
                max_output_bytes: c.max_output_bytes,
                max_log_bytes: c.max_log_bytes,
                tmp_dir: c.tmp_dir.clone(),
                gpu: None,
                // Until the start resolves `files`.
                files: FilesMode::Copy,
                pull_timeout: c.pull_timeout,
                images: c.limits.images.clone(),
                registries: registries(c)?,
            },
            docker_concurrency: c.docker_concurrency,
            disk_min_free_percent: c.disk_min_free_percent,
            files: FilesSetting::parse(&c.files_mode)?,
            warm: WarmSettings {
                size: c.warm_pool,
                idle: c.warm_idle,
            },
            spot: c.spot_imds.clone().map(|imds| crate::spot::SpotSettings {
                imds,
                every: c.spot_poll,
            }),
        })
    }
}

/// Pull credentials: `DCC_REGISTRY_AUTH`, or the file `DCC_REGISTRY_AUTH_FILE` names.
fn registries(c: &Config) -> Result<crate::registry::Registries, WorkerError> {
    let from_file = match (&c.registry_auth, &c.registry_auth_file) {
        (Some(_), Some(_)) => {
            return Err(WorkerError::Config(
                "set DCC_REGISTRY_AUTH or DCC_REGISTRY_AUTH_FILE, not both".into(),
            ));
        }
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| WorkerError::Config(format!("DCC_REGISTRY_AUTH_FILE {}: {e}", path.display())))?,
        ),
        _ => None,
    };
    let auth = c.registry_auth.as_deref().or(from_file.as_deref());
    Ok(crate::registry::Registries::new(auth, c.docker_config.clone())?)
}

/// The host name, the default worker id.
pub fn default_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}
