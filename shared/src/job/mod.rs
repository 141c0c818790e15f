//! The job model.
//!
//! # Layout
//! - [`id`]: `JobId`, validated client-chosen or generated ids.
//! - [`state`]: the state machine (`JobState`) and the queue/lane/priority enums.
//! - [`spec`]: the submitted definition, its defaults, limits and validation.
//! - [`record`]: a job as stored in Redis.
//! - [`view`]: the API's job view built from a record (also the source of its OpenAPI schema).

pub mod id;
pub mod image;
pub mod notify;
pub mod record;
pub mod spec;
pub mod state;
pub mod view;

pub use id::JobId;
pub use record::{ArrayCounts, ChildOf, JobError, JobRecord, OutputFile, RunStats};
pub use spec::{ArraySpec, InputSource, JobRequest, JobSpec, Limits, Parameters, StagedInput, ValidJob};
pub use state::{ErrorCode, JobState, Lane, Priority, QueueName};
pub use view::{ArrayChildView, ArrayView, ChildCounts, JobView, NotifyView, OutputView, StatsView};
