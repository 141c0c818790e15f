//! Whether anything live can run a job. Asked before a client is made to wait for a job
//! (`POST /api/v1/run`, `wait: true`), again while it waits, and by the job view of a queued job,
//! so nobody waits for the long-poll limit on a job that no worker will take.

use dcc_shared::job::view::Waiting;
use dcc_shared::job::{JobRecord, JobSpec, JobState, QueueName};
use dcc_shared::workers::{Availability, availability};

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// Slots a job needs on its queue: GPUs on `gpu`, CPU slots on `cpu`.
fn units(spec: &JobSpec) -> (QueueName, u32) {
    let p = &spec.parameters;
    match p.queue() {
        QueueName::Gpu => (QueueName::Gpu, p.gpus),
        QueueName::Cpu => (QueueName::Cpu, p.slots()),
    }
}

async fn of(state: &AppState, spec: &JobSpec) -> Result<(Availability, QueueName, u32), ApiError> {
    let (queue, n) = units(spec);
    let workers = state.queue.workers().await?;
    Ok((availability(&workers, queue, n, spec.parameters.memory_mb), queue, n))
}

/// `Ok` when a live, non-draining worker large enough serves the job's queue, else 503
/// `NO_WORKER` with `Retry-After` (the heartbeat period: when the fleet can have changed).
pub async fn require(state: &AppState, spec: &JobSpec) -> Result<(), ApiError> {
    let (av, queue, n) = of(state, spec).await?;
    let spec_mem = spec.parameters.memory_mb;
    if av.can_run() {
        return Ok(());
    }
    Err(no_worker(state, av.waiting(queue, n, spec_mem)))
}

/// The 503 `NO_WORKER` answer for `why`.
pub fn no_worker(state: &AppState, why: Waiting) -> ApiError {
    ApiError {
        retry_after: Some(state.config.heartbeat.as_secs().max(1) as u32),
        ..ApiError::new(Code::NoWorker, format!("nothing can run this job now: {}", why.message))
    }
}

/// Why `job` waits, when it is queued; also `Err` → no reason (a Redis hiccup must not fail a
/// job view).
pub async fn waiting(state: &AppState, job: &JobRecord) -> Option<Waiting> {
    if job.state != JobState::Queued {
        return None;
    }
    let (av, queue, n) = of(state, &job.spec).await.ok()?;
    let spec_mem = job.spec.parameters.memory_mb;
    Some(av.waiting(queue, n, spec_mem))
}

/// For a job being waited on: `Some(why)` when it is still queued and nothing live can run it.
pub async fn stuck(state: &AppState, job: &JobRecord) -> Option<Waiting> {
    if job.state != JobState::Queued {
        return None;
    }
    let (av, queue, n) = of(state, &job.spec).await.ok()?;
    let spec_mem = job.spec.parameters.memory_mb;
    (!av.can_run()).then(|| av.waiting(queue, n, spec_mem))
}
