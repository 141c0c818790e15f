//! The v1 API's answer bodies beside the job view: what the server serializes, what its OpenAPI
//! document is derived from, and what a client (the CLI, the 2018 adapter, the tests) reads
//! back. One set of types for both ends, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::job::{JobState, JobView};
use crate::queue::read::QueueDepth;
use crate::workers::{Health, WorkerInfo};

/// The error body of every failed call: `{"error": {"code", "message", "field"?}, "jobId"?}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
    /// The job concerned, on `WAIT_TIMEOUT` (keep following it with this id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code from the contract, e.g. `INVALID_JOB`, `NOT_FOUND`, `UNAVAILABLE`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field to blame, as `parameters.cpus` or `inputs[1].name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The answer to a submission that queued a job (or found the same job under its id).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitAnswer {
    /// The job's id.
    pub job_id: String,
    /// Its state now (`queued` for a new job).
    pub status: JobState,
    /// Where to follow it.
    pub links: Links,
}

/// The routes of one job.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Links {
    /// The job view.
    #[serde(rename = "self")]
    pub self_: String,
    /// Long-poll until it ends.
    pub wait: String,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Cancel it (POST).
    pub cancel: String,
}

impl Links {
    /// The links of job `id` (already fit for a path: job ids are URL-safe).
    pub fn of(id: &str) -> Self {
        let base = format!("/api/v1/jobs/{id}");
        Links {
            wait: format!("{base}/wait"),
            stdout: format!("{base}/stdout"),
            stderr: format!("{base}/stderr"),
            cancel: format!("{base}/cancel"),
            self_: base,
        }
    }
}

/// A `200` submission answer: the ended job (`wait: true`) or the existing job of that id.
/// Read back, a view is told from a submit answer by its fields (a view has `queue`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SubmitOk {
    /// With `wait: true`: the job once it ended.
    Ended(Box<JobView>),
    /// The same id with the same definition was submitted before: that job.
    Existing(SubmitAnswer),
}

/// A page of the job listing.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    /// Jobs, newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to a cancel.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelAnswer {
    /// The job's id.
    pub job_id: String,
    /// `cancelled`, or the state it had already ended in.
    pub status: JobState,
}

/// The answer of `POST /api/v1/run`: the job view with the logs inline, and each output's
/// content in `outputs[].value` (base64).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FastAnswer {
    /// The ended job; its outputs carry `value` and `encoding`.
    #[serde(flatten)]
    pub job: JobView,
    /// The whole stdout (invalid UTF-8 replaced).
    pub stdout: String,
    /// The whole stderr (invalid UTF-8 replaced).
    pub stderr: String,
}

/// Depth of both queues.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Queues {
    /// The `cpu` queue.
    pub cpu: QueueDepth,
    /// The `gpu` queue.
    pub gpu: QueueDepth,
}

/// The live workers.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Workers {
    /// Every worker whose health key is fresh.
    pub workers: Vec<WorkerInfo>,
}

/// The answer to a drain request.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainAnswer {
    /// The worker's id.
    pub id: String,
    /// `DRAINING` after a drain, `HEALTHY` after an undrain: what the worker reports from its
    /// next heartbeat (`UNHEALTHY` instead, should its self-check fail).
    pub health: Health,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each answer reads back as written, so a client's `--json` prints what the server sent.
    #[test]
    fn answers_read_back_as_written() {
        fn same<T: Serialize + for<'de> Deserialize<'de>>(served: serde_json::Value) {
            let read: T = serde_json::from_value(served.clone()).unwrap();
            assert_eq!(serde_json::to_value(&read).unwrap(), served);
        }
        same::<ErrorBody>(serde_json::json!({"error": {"code": "WAIT_TIMEOUT", "message": "m"}, "jobId": "j"}));
        same::<SubmitOk>(serde_json::json!({"jobId": "j", "status": "queued", "links": Links::of("j")}));
        same::<Queues>(serde_json::json!({
            "cpu": {"queued": 1, "fastQueued": 2, "running": 3, "oldestQueuedAgeMs": 4},
            "gpu": {"queued": 0, "fastQueued": 0, "running": 0, "oldestQueuedAgeMs": 0}}));
        same::<Workers>(serde_json::json!({"workers": [{
            "id": "w1", "health": "DRAINING", "cpus": 4, "gpus": 1, "freeCpuSlots": 3, "memoryMb": 1024,
            "freeMemoryMb": 512, "freeGpus": 0, "runningJobs": 1, "lastSeen": "2026-12-02T10:00:00.25Z",
            "startedAt": "2026-12-02T09:00:00Z", "version": "0.1.0", "reason": null,
            "gpuModels": ["H200"], "idleSince": null, "filesMode": "copy", "warmContainers": 2}]}));
        let existing: SubmitOk =
            serde_json::from_value(serde_json::json!({"jobId": "j", "status": "queued", "links": Links::of("j")}))
                .unwrap();
        assert!(
            matches!(existing, SubmitOk::Existing(_)),
            "a submit answer is not a view"
        );
    }
}

/// The answer of `GET /api/v1/stats`: the history of a time range, one point per step.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Start of the first step (ms since the epoch, a whole minute).
    pub from: i64,
    /// End of the last step (ms, exclusive).
    pub to: i64,
    /// Length of a step, in seconds (a whole number of minutes).
    pub step_secs: u64,
    /// The tenant whose jobs are counted; `null`: every tenant's (admins).
    pub tenant: Option<String>,
    /// Per queue, one point per step, oldest first.
    pub queues: Vec<QueueSeries>,
    /// Failed and timed-out jobs over the range, by error code and image, most first.
    pub failures: Vec<FailureCount>,
    /// Per tenant, its jobs over the range, busiest first (a tenant sees only its own).
    pub tenants: Vec<TenantTotals>,
}

/// One queue's points.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueSeries {
    /// `cpu` or `gpu`.
    pub queue: String,
    /// One per step, oldest first.
    pub points: Vec<StatsPoint>,
}

/// What happened in one step of one queue. Counts are jobs; times are estimated from fixed bins
/// (100 ms, 300 ms, 1 s, 3 s, … 1 h: within a bin's width), `null` when nothing was timed. The
/// fleet's numbers (`depth` … `busy`) are the highest sample a server took in the step, `null`
/// when none was taken (no server ran) and, for `depth` and `running`, for a tenant's key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsPoint {
    /// Start of the step (ms since the epoch).
    pub at: i64,
    /// Jobs submitted (an array is one).
    pub submitted: u64,
    /// Attempts started: first ones and retries.
    pub started: u64,
    /// Of `started`, attempts after the first (a lease lost, a worker drained).
    pub restarted: u64,
    /// Jobs that ended succeeded.
    pub succeeded: u64,
    /// Jobs that ended failed (an exit code, a worker lost, a dependency…).
    pub failed: u64,
    /// Jobs that ended timed out.
    pub timed_out: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Queue wait (submit to first start) of the jobs started in the step: median, 95th percentile.
    pub wait_p50_ms: Option<u64>,
    /// See `waitP50Ms`.
    pub wait_p95_ms: Option<u64>,
    /// Run time (start of the last attempt to its end) of the jobs that ended in the step.
    pub run_p50_ms: Option<u64>,
    /// See `runP50Ms`.
    pub run_p95_ms: Option<u64>,
    /// Jobs waiting in the queue.
    pub depth: Option<u64>,
    /// Jobs holding a lease.
    pub running: Option<u64>,
    /// Live workers serving the queue.
    pub workers: Option<u64>,
    /// Their slots in all (CPU slots on `cpu`, GPUs on `gpu`).
    pub slots: Option<u64>,
    /// Of those, taken by running jobs.
    pub busy: Option<u64>,
}

/// Failed and timed-out jobs of one error code and image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FailureCount {
    /// The error code, e.g. `NONZERO_EXIT`.
    pub code: String,
    /// The job's image.
    pub image: String,
    /// How many.
    pub count: u64,
}

/// One tenant's jobs over the range of a [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantTotals {
    /// The tenant (`""`: jobs of keys without a tenant, and of a server without keys).
    pub tenant: String,
    /// Jobs submitted.
    pub submitted: u64,
    /// Attempts started.
    pub started: u64,
    /// Jobs that ended succeeded.
    pub succeeded: u64,
    /// Jobs that ended failed or timed out.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
}
