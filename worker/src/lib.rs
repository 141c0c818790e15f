//! The DCC worker: claims jobs from Redis and runs each attempt as a fresh Docker container.
//!
//! # Layout
//! - [`docker`]: the daemon connection, container labels, leftover cleanup, image pulls.
//! - [`container`]: the container definition of a job (limits, network, labels).
//! - [`staging`]: inputs into the container (one tar upload), outputs out of it (one tar download).
//! - [`logs`]: stdout/stderr capture with periodic upload, and resource sampling.
//! - [`executor`]: one attempt of one job, start to finish, container always removed.
//! - [`gpu`]: GPU detection, pinning and the three ways of attaching GPUs.
//! - [`health`]: the self-check behind `HEALTHY` / `UNHEALTHY`.
//! - [`slots`]: CPU slot accounting.
//! - [`worker`]: the claim loop, heartbeat (leases + health) and the cancel watch.
//! - [`shutdown`]: the two-step quiet → terminate shutdown.

pub mod container;
pub mod docker;
pub mod executor;
pub mod gpu;
pub mod health;
pub mod logs;
pub mod shutdown;
pub mod slots;
pub mod staging;
pub mod worker;

pub use shutdown::Shutdown;
pub use worker::{Worker, WorkerSettings};

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
    /// The GPU settings are unusable.
    #[error("{0}")]
    Gpu(String),
    /// Another live worker uses the same id.
    #[error("worker id {0:?} is in use by another live worker; set DCC_WORKER_ID to a unique value")]
    IdInUse(String),
    /// `DCC_DOCKER_RUNTIME` names a runtime the daemon does not have.
    #[error(
        "DCC_DOCKER_RUNTIME={0:?} is not a runtime of this Docker daemon (it has: {1}); install and register it (e.g. `runsc install` then restart dockerd), or unset the variable"
    )]
    Runtime(String, String),
}
