//! The core every DCC process shares: the job model, the Redis queue, storage and configuration.
//!
//! # Layout
//! - [`api`]: the v1 API's answer bodies, as served and as read back by clients.
//! - [`job`]: the job definition a client submits (`spec`), its validation, its state machine
//!   (`state`) and the record a job becomes in Redis (`record`).
//! - [`connection`]: where Redis is (one server or a cluster) and a connection to it.
//! - [`keys`]: every Redis key name, built in one place.
//! - [`queue`]: every state-changing Redis operation; one module and one Lua script per transition.
//! - [`events`]: the job-event channel (Redis pub/sub) that wakes waiters, workers and WebSockets.
//! - [`workers`]: worker registration and health keys.
//! - [`maintenance`]: the reaper and the retention sweep every process runs.
//! - [`storage`]: the `Storage` trait and its local-folder backend.
//! - [`config`]: typed configuration read from environment variables.
//! - [`retry`]: the backoff of every retry loop.
//! - [`clock`]: wall-clock milliseconds, passed into every time-dependent operation.
//! - [`error`]: the error types of this crate.
//! - `testing` (feature `test-util`): a real `redis-server` per test.

pub mod api;
pub mod clock;
pub mod config;
pub mod connection;
pub mod error;
pub mod events;
pub mod history;
pub mod job;
pub mod keys;
pub mod maintenance;
pub mod outlook;
pub mod pool;
pub mod queue;
pub mod retry;
pub mod storage;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod workers;

pub use error::{Error, Result};
