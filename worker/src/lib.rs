//! The DCC worker: claims jobs from Redis and runs each attempt as a fresh Docker container.
//!
//! A process embeds a worker through [`WorkerSettings::from_config`], [`Worker::start`],
//! [`Worker::run`] and [`Shutdown`]; the rest is the worker's own business.
//!
//! # Layout (a job's path: `worker` claims → `attempt` → `executor` → `files`)
//! - [`worker`]: the worker: its heartbeat (drain flag, leases, health key), its Docker loop
//!   (self-check, strays), its lease watch, and the [`loops::Host`] the shared loops run on.
//! - [`loops`]: claim, lease renewal and the job-event watch, written once for `dcc worker` and
//!   the fleet simulator.
//! - `attempt`: one attempt's life: book slots → run → record or hand back → clean up.
//! - `executor`: one attempt in a container, step by step, container always removed.
//! - `files`: how inputs and outputs move (`Files`, with the `copy` and `bind` modes).
//! - `container`: the container definition of a job (limits, network, labels).
//! - `docker`: the daemon connection, container labels, leftover cleanup, image pulls.
//! - `logs`: stdout/stderr capture with periodic upload, and resource sampling.
//! - `gpu`: GPU detection, pinning and the three ways of attaching GPUs.
//! - `health`: the self-check behind `HEALTHY` / `UNHEALTHY`.
//! - `slots`: CPU slot and memory accounting.
//! - `step`: why a step of an attempt failed, and the job error code each failure means.
//! - `verdict`: how a container ended and what it left → the job's state, exit code and error.
//! - [`settings`]: the worker's part of the configuration.
//! - [`shutdown`]: the two-step quiet → terminate shutdown.

mod attempt;
mod container;
mod docker;
mod executor;
mod files;
mod gpu;
mod health;
mod logs;
pub mod loops;
pub mod registry;
pub mod settings;
pub mod shutdown;
mod slots;
pub mod spot;
mod step;
mod verdict;
mod warm;

/// The warm-container agent's channel, for the benchmark's floor (a container and its agent
/// driven without DCC).
pub use warm::agent;
pub mod worker;

pub use settings::WorkerSettings;
pub use shutdown::Shutdown;
pub use worker::Worker;

/// Errors that stop a worker from starting.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The Docker daemon cannot be reached.
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// Redis or storage failed.
    #[error(transparent)]
    Shared(#[from] dcc_shared::Error),
    /// The scratch folder cannot be made.
    #[error("scratch folder {0}: {1}")]
    Scratch(String, std::io::Error),
    /// `DCC_GPU_MODE` names no mode.
    #[error("DCC_GPU_MODE={0:?}: use auto, runtime, device-requests or devices")]
    GpuMode(String),
    /// Another live worker uses the same id.
    #[error("worker id {0:?} is in use by another live worker; set DCC_WORKER_ID to a unique value")]
    IdInUse(String),
    /// A worker setting is unusable.
    #[error("{0}")]
    Config(String),
    /// `DCC_FILES_MODE` names no mode.
    #[error("DCC_FILES_MODE={0:?}: use auto, copy or bind")]
    FilesMode(String),
    /// A registry credential setting is unusable.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// `DCC_DOCKER_RUNTIME` names a runtime the daemon does not have.
    #[error(
        "DCC_DOCKER_RUNTIME={0:?} is not a runtime of this Docker daemon (it has: {1}); install and register it (e.g. `runsc install` then restart dockerd), or unset the variable"
    )]
    Runtime(String, String),
}
