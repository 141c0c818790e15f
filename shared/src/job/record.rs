//! A job as stored in Redis (one HASH per job). The API's view of it is in [`super::view`].
//!
//! Hash fields (all strings): `spec` (JSON of [`JobSpec`]), `state`, `queue`, `lane`, `attempt`,
//! `max_attempts`, `slots`, `gpus`, `created_ms`, `started_ms`, `finished_ms`, `exit_code`,
//! `error_code`, `error_msg`, `worker`, `digest`, `stats` (JSON of [`RunStats`]), `outputs`
//! (JSON list of [`OutputFile`]), `def_hash`, `inputs_prefix`, and for jobs with a webhook the
//! `notify_*` fields of [`NotifyRecord`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::id::JobId;
use super::notify::NotifyRecord;
use super::spec::JobSpec;
use super::state::{JobState, Lane, QueueName};
use crate::clock::Millis;
use crate::{Error, Result};

/// Why a job ended badly: a stable code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    /// Stable code, e.g. `IMAGE_NOT_FOUND`.
    pub code: String,
    /// Human sentence, often with the Docker daemon's own message.
    pub message: String,
}

/// One stored output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to `/outputs`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// What the worker measured for the attempt that finished.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunStats {
    /// Fetching inputs from storage and copying them into the container.
    pub inputs_ms: u64,
    /// Pulling the image (0 when it was present).
    pub pull_ms: u64,
    /// Creating the container (Docker's create call).
    #[serde(default)]
    pub create_ms: u64,
    /// Starting it (Docker's start call: namespaces, cgroups, the process).
    #[serde(default)]
    pub start_ms: u64,
    /// Started to exited.
    pub run_ms: u64,
    /// Copying outputs and logs out to storage.
    pub outputs_ms: u64,
    /// Peak memory Docker reported for the container (0 when it ran too briefly to sample).
    pub max_memory_bytes: u64,
    /// CPU time the container used, in seconds.
    pub cpu_secs: f64,
    /// Whether the job ran in a warm container (created and started before it was claimed;
    /// `create_ms` and `start_ms` are then 0).
    #[serde(default)]
    pub warm: bool,
    /// Entries under `/outputs` that were not read: symbolic links, FIFOs, sockets, devices,
    /// names no output may have. Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub outputs_skipped: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An array parent's counts of its children (its record's `next_index`, `c_*` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArrayCounts {
    /// Children made so far (claimed at least once); the rest wait.
    pub made: u32,
    /// Running now.
    pub running: u32,
    /// Ended `succeeded`.
    pub succeeded: u32,
    /// Ended `failed`.
    pub failed: u32,
    /// Ended `timed_out`.
    pub timed_out: u32,
    /// Ended `cancelled` (a cancelled parent counts its children never made here).
    pub cancelled: u32,
}

impl ArrayCounts {
    /// Children that ended.
    pub fn ended(&self) -> u32 {
        self.succeeded + self.failed + self.timed_out + self.cancelled
    }
}

/// Which array an array child belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildOf {
    /// The parent (the job that was submitted).
    pub parent: JobId,
    /// Its index, 0 to size - 1.
    pub index: u32,
}

/// A job read back from Redis.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// The id.
    pub id: JobId,
    /// Current state.
    pub state: JobState,
    /// Its queue.
    pub queue: QueueName,
    /// Its lane inside the queue.
    pub lane: Lane,
    /// Current (or last) attempt number; 0 before the first claim.
    pub attempt: u32,
    /// Worker CPU slots it holds.
    pub slots: u32,
    /// When it was accepted.
    pub created_ms: Millis,
    /// When the current (or last) attempt started.
    pub started_ms: Option<Millis>,
    /// When it reached its terminal state.
    pub finished_ms: Option<Millis>,
    /// Exit code of the container, when it exited on its own.
    pub exit_code: Option<i64>,
    /// Why it ended badly.
    pub error: Option<JobError>,
    /// The worker running it, or that ran it last.
    pub worker: Option<String>,
    /// Image id (`sha256:…`) the container ran.
    pub image_digest: Option<String>,
    /// Timing and resource statistics of the finished attempt.
    pub stats: Option<RunStats>,
    /// Stored outputs.
    pub outputs: Vec<OutputFile>,
    /// The normalized definition.
    pub spec: JobSpec,
    /// Storage prefix of its staged inputs.
    pub inputs_prefix: String,
    /// Hash of its definition, for the same-id rule.
    pub def_hash: String,
    /// The tenant that submitted it (the API key's name; `""` before tenants existed).
    pub tenant: String,
    /// Its webhook delivery, when it has `notify`.
    pub notify: Option<NotifyRecord>,
    /// Dependencies (`dependsOn`) not yet ended: while above 0 the job is queued but in no
    /// lane (no worker can claim it).
    pub blocked: u32,
    /// For an array parent: its children's counts.
    pub array: Option<ArrayCounts>,
    /// For an array child: its parent and index (its `spec` is the parent's).
    pub child_of: Option<ChildOf>,
}

impl JobRecord {
    /// The inputs its container gets: all of them, but an array child only its own per-index
    /// ones (`index/<i>/…`, see [`super::spec::PER_INDEX_DIR`]) beside the shared ones.
    pub fn run_inputs(&self) -> Vec<&str> {
        let index = self.child_of.as_ref().map(|c| c.index);
        self.spec
            .inputs
            .iter()
            .map(String::as_str)
            .filter(|name| index.is_none_or(|i| super::spec::input_is_for(name, i)))
            .collect()
    }
}

fn opt_num<T: std::str::FromStr>(m: &HashMap<String, String>, k: &str) -> Option<T> {
    m.get(k).filter(|s| !s.is_empty()).and_then(|s| s.parse().ok())
}

impl JobRecord {
    /// Reads a record from its HGETALL map; `None` when the job does not exist.
    pub fn from_hash(id: &JobId, m: HashMap<String, String>) -> Result<Option<Self>> {
        if m.is_empty() {
            return Ok(None);
        }
        let corrupt = |why: &str| Error::Corrupt {
            job: id.to_string(),
            why: why.to_string(),
        };
        let spec: JobSpec = serde_json::from_str(m.get("spec").ok_or_else(|| corrupt("no spec"))?)
            .map_err(|e| corrupt(&format!("spec: {e}")))?;
        let state = m
            .get("state")
            .and_then(|s| JobState::parse(s))
            .ok_or_else(|| corrupt("bad state"))?;
        let queue = m
            .get("queue")
            .and_then(|s| QueueName::parse(s))
            .ok_or_else(|| corrupt("bad queue"))?;
        let lane = m
            .get("lane")
            .and_then(|s| Lane::parse(s))
            .ok_or_else(|| corrupt("bad lane"))?;
        let error = match (m.get("error_code"), m.get("error_msg")) {
            (Some(c), msg) if !c.is_empty() => Some(JobError {
                code: c.clone(),
                message: msg.cloned().unwrap_or_default(),
            }),
            _ => None,
        };
        let stats = m
            .get("stats")
            .filter(|s| !s.is_empty())
            .and_then(|s| serde_json::from_str(s).ok());
        let outputs = m
            .get("outputs")
            .filter(|s| !s.is_empty())
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        Ok(Some(JobRecord {
            id: id.clone(),
            state,
            queue,
            lane,
            attempt: opt_num(&m, "attempt").unwrap_or(0),
            slots: opt_num(&m, "slots").unwrap_or(1),
            created_ms: opt_num(&m, "created_ms").unwrap_or(0),
            started_ms: opt_num(&m, "started_ms"),
            finished_ms: opt_num(&m, "finished_ms"),
            exit_code: opt_num(&m, "exit_code"),
            error,
            worker: m.get("worker").filter(|s| !s.is_empty()).cloned(),
            image_digest: m.get("digest").filter(|s| !s.is_empty()).cloned(),
            stats,
            outputs,
            spec,
            inputs_prefix: m.get("inputs_prefix").cloned().unwrap_or_default(),
            def_hash: m.get("def_hash").cloned().unwrap_or_default(),
            tenant: m.get("tenant").cloned().unwrap_or_default(),
            notify: NotifyRecord::from_hash(&m),
            blocked: opt_num(&m, "blocked").unwrap_or(0),
            array: (m.contains_key("array_size") && !m.contains_key("parent")).then(|| ArrayCounts {
                made: opt_num(&m, "next_index").unwrap_or(0),
                running: opt_num::<i64>(&m, "c_running").unwrap_or(0).max(0) as u32,
                succeeded: opt_num(&m, "c_succeeded").unwrap_or(0),
                failed: opt_num(&m, "c_failed").unwrap_or(0),
                timed_out: opt_num(&m, "c_timed_out").unwrap_or(0),
                cancelled: opt_num(&m, "c_cancelled").unwrap_or(0),
            }),
            child_of: m
                .get("parent")
                .and_then(|p| JobId::parse(p).ok())
                .map(|parent| ChildOf {
                    parent,
                    index: opt_num(&m, "index").unwrap_or(0),
                }),
        }))
    }
}
