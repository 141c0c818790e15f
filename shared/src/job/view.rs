//! The API's job view (`GET /api/v1/jobs/{id}`, list pages, WebSocket `finished` events, fast-job
//! answers). These types are what is serialized *and* what the OpenAPI document is derived from,
//! so the served JSON and its schema cannot disagree. They also read back (`Deserialize`), so a
//! client of the v1 API (the CLI, the 2018 adapter, tests) can work on typed views.

use serde::{Deserialize, Serialize};

use super::notify::NotifyState;
use super::record::{JobError, JobRecord, RunStats};
use super::spec::{Dependency, Encoding};
use super::state::{JobState, Lane, QueueName};
use crate::clock::rfc3339;

/// A job as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    /// The job's id (client-chosen or a generated UUIDv7).
    pub job_id: String,
    /// Where the job is in its life.
    pub status: JobState,
    /// `gpu` when the job asked for GPUs, else `cpu`.
    pub queue: QueueName,
    /// Submitted through `POST /api/v1/run` (inputs and outputs kept in Redis).
    pub fast: bool,
    /// Current (or last) attempt; 0 before the first claim.
    pub attempt: u32,
    /// Attempts allowed before a lost job fails with `WORKER_LOST`.
    pub max_attempts: u32,
    /// When the job was accepted (RFC 3339, UTC, milliseconds).
    pub created_at: String,
    /// When the current (or last) attempt started.
    pub started_at: Option<String>,
    /// When the job reached its terminal state.
    pub finished_at: Option<String>,
    /// The container's exit code, when it exited by itself.
    pub exit_code: Option<i64>,
    /// Why the job ended badly (stable code and a sentence).
    pub error: Option<JobError>,
    /// The worker running the job, or that ran it last.
    pub worker_id: Option<String>,
    /// The image as submitted.
    pub image: String,
    /// The image id (`sha256:…`) the container ran.
    pub image_digest: Option<String>,
    /// Where to read stdout (so far).
    pub stdout_url: String,
    /// Where to read stderr (so far).
    pub stderr_url: String,
    /// Files the job left under `/outputs` (regular files only).
    pub outputs: Vec<OutputView>,
    /// Timings and resource use of the finished attempt.
    pub stats: Option<StatsView>,
    /// The client's `meta`, echoed back.
    #[schema(value_type = Object)]
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The completion webhook and how its delivery went; only for jobs with `notify`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyView>,
    /// Why a queued job waits; only on `GET /api/v1/jobs/{id}` of a queued job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// The jobs it waits for (`dependsOn` as submitted); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// An array job (the parent): its size, parallelism and its children by state. Its
    /// `status` is `queued` until a child runs, `running` while any may still run, then
    /// `succeeded` when every child did, else `failed` (`CHILDREN_FAILED`) or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<ArrayView>,
    /// An array child: its parent and index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_child: Option<ArrayChildView>,
}

/// An array parent's children.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArrayView {
    /// How many.
    pub size: u32,
    /// Most running at once; absent: as many as fit.
    pub parallelism: Option<u32>,
    /// How many are in each state (`queued` counts those not yet started).
    pub children: ChildCounts,
    /// Where to page through them.
    pub children_url: String,
}

/// Children by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildCounts {
    /// Waiting for a worker (never started, or put back).
    pub queued: u32,
    /// Running.
    pub running: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Failed.
    pub failed: u32,
    /// Timed out.
    pub timed_out: u32,
    /// Cancelled.
    pub cancelled: u32,
}

/// Which array a child belongs to.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArrayChildView {
    /// The array (parent) job.
    pub parent_id: String,
    /// This child's index (its `DCC_ARRAY_INDEX`).
    pub index: u32,
}

/// A job's webhook and its delivery.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifyView {
    /// Where the job view is POSTed.
    pub url: String,
    /// Where the delivery is.
    pub state: NotifyState,
    /// POSTs started so far.
    pub attempts: u32,
    /// When the last one ended.
    pub last_attempt_at: Option<String>,
    /// Why the last one failed (cleared once delivered).
    pub last_error: Option<String>,
}

/// Why a queued job has not started.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Waiting {
    /// Stable reason code.
    pub reason: WaitReason,
    /// A sentence for people.
    pub message: String,
}

/// The reason codes of [`Waiting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WaitReason {
    /// Healthy workers that can take it exist: it waits for a free slot (or its turn).
    Queued,
    /// The workers that could take it report `UNHEALTHY` (Docker down, disk low, GPU lost).
    WorkersUnhealthy,
    /// Every worker that could take it is draining.
    WorkersDraining,
    /// Workers of its queue exist, none large enough for what it asks.
    NoWorkerFits,
    /// No live worker can take it now, but the scaler says its queue's fleet can grow to
    /// instances that can: workers are being started for it.
    WorkersStarting,
    /// No live worker serves its queue.
    NoWorker,
    /// It waits for jobs it depends on to end (`dependsOn`); the message names them.
    Dependencies,
}

/// One output file of a job.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputView {
    /// Path relative to `/outputs`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Where to download it.
    pub url: String,
    /// The file's content, only in the answer of `POST /api/v1/run` (fast jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// How `value` is encoded (always `base64`); only beside `value`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// What the worker measured for the finished attempt.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    /// Accepted to started (the last attempt's start).
    pub queued_ms: Option<i64>,
    /// Fetching inputs from storage and copying them into the container.
    pub inputs_ms: u64,
    /// Pulling the image (0 when it was present).
    pub pull_ms: u64,
    /// Creating the container.
    pub create_ms: u64,
    /// Starting the container.
    pub start_ms: u64,
    /// Started to exited.
    pub run_ms: u64,
    /// Copying outputs and logs out to storage.
    pub outputs_ms: u64,
    /// Accepted to ended.
    pub total_ms: Option<i64>,
    /// Peak memory Docker reported (0 when the container ran too briefly to sample).
    pub max_memory_bytes: u64,
    /// CPU time the container used, in seconds.
    pub cpu_secs: f64,
    /// Whether the job ran in a warm container (a fast job; see `DCC_WARM_POOL`).
    pub warm: bool,
    /// Entries the job left under `/outputs` that were not read: symbolic links, FIFOs,
    /// sockets, devices, names no output may have (docs/security.md).
    pub outputs_skipped: u32,
}

impl JobRecord {
    /// The API's job view.
    pub fn view(&self) -> JobView {
        let base = format!("/api/v1/jobs/{}", self.id);
        let outputs = self
            .outputs
            .iter()
            .map(|o| OutputView {
                name: o.name.clone(),
                size: o.size,
                url: format!("{base}/outputs/{}", encode_path(&o.name)),
                value: None,
                encoding: None,
            })
            .collect();
        let stats = self.stats.as_ref().map(|s: &RunStats| StatsView {
            queued_ms: self.started_ms.map(|st| (st - self.created_ms).max(0)),
            inputs_ms: s.inputs_ms,
            pull_ms: s.pull_ms,
            create_ms: s.create_ms,
            start_ms: s.start_ms,
            run_ms: s.run_ms,
            outputs_ms: s.outputs_ms,
            total_ms: self.finished_ms.map(|f| (f - self.created_ms).max(0)),
            max_memory_bytes: s.max_memory_bytes,
            cpu_secs: s.cpu_secs,
            warm: s.warm,
            outputs_skipped: s.outputs_skipped,
        });
        JobView {
            job_id: self.id.to_string(),
            status: self.state,
            queue: self.queue,
            fast: self.lane == Lane::Fast,
            attempt: self.attempt,
            max_attempts: self.spec.parameters.max_attempts,
            created_at: rfc3339(self.created_ms),
            started_at: self.started_ms.map(rfc3339),
            finished_at: self.finished_ms.map(rfc3339),
            exit_code: self.exit_code,
            error: self.error.clone(),
            worker_id: self.worker.clone(),
            image: self.spec.image.clone(),
            image_digest: self.image_digest.clone(),
            stdout_url: format!("{base}/stdout"),
            stderr_url: format!("{base}/stderr"),
            outputs,
            stats,
            meta: self.spec.meta.clone(),
            // A child's spec is its parent's: the parent's webhook and dependencies are not its.
            notify: self.notify_view().filter(|_| self.child_of.is_none()),
            waiting: None,
            depends_on: match self.child_of {
                None => self.spec.depends_on.clone(),
                Some(_) => Vec::new(),
            },
            array: self.array_view(&base),
            array_child: self.child_of.as_ref().map(|c| ArrayChildView {
                parent_id: c.parent.to_string(),
                index: c.index,
            }),
        }
    }

    /// The webhook and its delivery, for a job with `notify`.
    fn notify_view(&self) -> Option<NotifyView> {
        let n = self.spec.notify.as_ref()?;
        let d = self.notify.as_ref();
        Some(NotifyView {
            url: n.url.clone(),
            state: d.map(|d| d.state).unwrap_or(NotifyState::Waiting),
            attempts: d.map(|d| d.attempts).unwrap_or(0),
            last_attempt_at: d.and_then(|d| d.last_ms).map(rfc3339),
            last_error: d.and_then(|d| d.error.clone()),
        })
    }

    /// An array parent's children by state (`base`: the parent's route).
    fn array_view(&self, base: &str) -> Option<ArrayView> {
        let (c, a) = self.array.zip(self.spec.array)?;
        // Children never started by an array that ended (failed by a dependency) will not
        // start: they count as cancelled, not queued.
        let waiting = a.size.saturating_sub(c.running + c.ended());
        let gone = if self.state.is_terminal() { waiting } else { 0 };
        Some(ArrayView {
            size: a.size,
            parallelism: a.parallelism,
            children: ChildCounts {
                queued: waiting - gone,
                running: c.running,
                succeeded: c.succeeded,
                failed: c.failed,
                timed_out: c.timed_out,
                cancelled: c.cancelled + gone,
            },
            children_url: format!("{base}/children"),
        })
    }
}

/// Percent-encodes each segment of a `/`-separated path for use in a URL.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the API writes reads back into the same view, field for field.
    #[test]
    fn a_view_reads_back_as_written() {
        let served = serde_json::json!({
            "jobId": "j1", "status": "failed", "queue": "gpu", "fast": true, "attempt": 2,
            "maxAttempts": 3, "createdAt": "2026-12-02T10:00:00.000Z",
            "startedAt": "2026-12-02T10:00:01.000Z", "finishedAt": "2026-12-02T10:00:02.500Z",
            "exitCode": 3, "error": {"code": "NONZERO_EXIT", "message": "the command exited with code 3"},
            "workerId": "w1", "image": "busybox", "imageDigest": "sha256:ab",
            "stdoutUrl": "/api/v1/jobs/j1/stdout", "stderrUrl": "/api/v1/jobs/j1/stderr",
            "outputs": [{"name": "a b.txt", "size": 1, "url": "/api/v1/jobs/j1/outputs/a%20b.txt",
                         "value": "eA==", "encoding": "base64"}],
            "stats": {"queuedMs": 5, "inputsMs": 1, "pullMs": 0, "createMs": 2, "startMs": 3, "runMs": 4,
                      "outputsMs": 5, "totalMs": 20, "maxMemoryBytes": 6, "cpuSecs": 0.5, "warm": true,
                      "outputsSkipped": 1},
            "meta": {"k": "v"},
            "notify": {"url": "https://h.example/x", "state": "failed", "attempts": 5,
                       "lastAttemptAt": "2026-12-02T10:01:00.000Z", "lastError": "HTTP 500"},
            "waiting": {"reason": "WORKERS_STARTING", "message": "workers are starting"}
        });
        let view: JobView = serde_json::from_value(served.clone()).unwrap();
        assert_eq!(view.status, JobState::Failed);
        assert_eq!(
            view.waiting.as_ref().map(|w| w.reason),
            Some(WaitReason::WorkersStarting)
        );
        assert_eq!(serde_json::to_value(&view).unwrap(), served);
    }

    #[test]
    fn encodes_paths() {
        assert_eq!(encode_path("a b/c%.txt"), "a%20b/c%25.txt");
    }
}
