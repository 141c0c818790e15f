//! The job state machine and the small enums around it.
//!
//! ```text
//!             submit
//!               │
//!               ▼          claim (attempt + 1, lease)
//!  ┌──────►  queued  ────────────────────────────────►  running
//!  │            │                                          │
//!  │            │ cancel                                   ├── exit 0 ─────────► succeeded
//!  │            ▼                                          ├── exit ≠ 0, error ─► failed
//!  │        cancelled  ◄──────────── cancel ───────────────┤
//!  │                                                       ├── past maxDuration ► timed_out
//!  │        lease expired, attempt < maxAttempts           │
//!  └───────────────────────────────────────────────────────┤
//!                    lease expired, attempt = maxAttempts  └─────────────────────► failed (WORKER_LOST)
//! ```
//! Terminal states never change again; only `DELETE` or retention removes them.

use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting in its queue for a worker.
    Queued,
    /// Claimed by a worker that holds a lease on it.
    Running,
    /// Ended with exit code 0 and its outputs stored.
    Succeeded,
    /// Ended with a non-zero exit code or an error (`error` says which).
    Failed,
    /// Ran past `maxDurationSecs`; its container was killed.
    TimedOut,
    /// Cancelled by a client.
    Cancelled,
}

impl JobState {
    /// The wire and Redis spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "timed_out" => JobState::TimedOut,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    /// True for states a job never leaves.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

/// The two queues; `gpus > 0` selects `gpu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QueueName {
    /// Jobs that need no GPU.
    Cpu,
    /// Jobs that need at least one GPU.
    Gpu,
}

impl QueueName {
    /// Both queues, in display order.
    pub const ALL: [QueueName; 2] = [QueueName::Cpu, QueueName::Gpu];

    /// The wire and key spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Cpu => "cpu",
            QueueName::Gpu => "gpu",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cpu" => Some(QueueName::Cpu),
            "gpu" => Some(QueueName::Gpu),
            _ => None,
        }
    }
}

/// Submission priority within a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Taken before every `normal` job of the same queue.
    High,
    /// The default.
    #[default]
    Normal,
}

/// One list inside a queue. Workers take from `fast`, then `high`, then `normal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Synchronous fast jobs (`POST /api/v1/run`), ahead of everything.
    Fast,
    /// `priority: high` standard jobs.
    High,
    /// `priority: normal` standard jobs.
    Normal,
}

impl Lane {
    /// Claim order.
    pub const ALL: [Lane; 3] = [Lane::Fast, Lane::High, Lane::Normal];

    /// The key and record spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Fast => "fast",
            Lane::High => "high",
            Lane::Normal => "normal",
        }
    }

    /// Parses the record spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fast" => Some(Lane::Fast),
            "high" => Some(Lane::High),
            "normal" => Some(Lane::Normal),
            _ => None,
        }
    }

    /// The lane a standard job of this priority waits in.
    pub fn for_priority(p: Priority) -> Self {
        match p {
            Priority::High => Lane::High,
            Priority::Normal => Lane::Normal,
        }
    }
}

/// Why a job ended other than by exit code 0. Stable strings: clients branch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The command ran and exited non-zero.
    NonzeroExit,
    /// Ran past `maxDurationSecs`.
    TimedOut,
    /// The image is neither local nor pullable.
    ImageNotFound,
    /// Docker refused to create or start the container (bad command, bad working dir, …).
    ContainerFailed,
    /// The worker could not read the staged inputs.
    InputFetchFailed,
    /// The outputs or logs could not be stored.
    OutputUploadFailed,
    /// The worker holding the job disappeared on the last attempt.
    WorkerLost,
    /// The worker could not attach the GPUs the job asked for.
    GpuUnavailable,
    /// The image is not on the worker's allow-list (`DCC_IMAGE_ALLOW`).
    ImageNotAllowed,
    /// The registry refused the pull: wrong or missing credentials (or a credential source
    /// that failed), as opposed to an image that does not exist.
    ImagePullDenied,
    /// The registry refused the pull for now: its pull rate limit was reached (Docker Hub's
    /// anonymous limit per address, met by a scale-out behind one NAT address).
    ImagePullRateLimited,
    /// The worker failed on its own side: its scratch disk (full, unwritable) or an archive it
    /// builds or reads, not the job, the image or Docker.
    WorkerFailed,
    /// A dependency of type `succeeded` ended otherwise (failed, timed out, cancelled,
    /// deleted): the job never ran.
    DependencyFailed,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NonzeroExit => "NONZERO_EXIT",
            ErrorCode::TimedOut => "TIMED_OUT",
            ErrorCode::ImageNotFound => "IMAGE_NOT_FOUND",
            ErrorCode::ContainerFailed => "CONTAINER_FAILED",
            ErrorCode::InputFetchFailed => "INPUT_FETCH_FAILED",
            ErrorCode::OutputUploadFailed => "OUTPUT_UPLOAD_FAILED",
            ErrorCode::WorkerLost => "WORKER_LOST",
            ErrorCode::GpuUnavailable => "GPU_UNAVAILABLE",
            ErrorCode::ImageNotAllowed => "IMAGE_NOT_ALLOWED",
            ErrorCode::ImagePullDenied => "IMAGE_PULL_DENIED",
            ErrorCode::ImagePullRateLimited => "IMAGE_PULL_RATE_LIMITED",
            ErrorCode::WorkerFailed => "WORKER_FAILED",
            ErrorCode::DependencyFailed => "DEPENDENCY_FAILED",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::TimedOut,
            JobState::Cancelled,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(!JobState::Running.is_terminal());
        assert!(JobState::TimedOut.is_terminal());
    }
}
