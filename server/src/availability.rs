//! Whether anything live can run a job. Asked before a client is made to wait for a job
//! (`POST /api/v1/run`, `wait: true`), again while it waits, and by the job view of a queued job,
//! so nobody waits for the long-poll limit on a job that no worker will take. A queue whose fleet
//! the scaler can grow ([`dcc_shared::outlook`]) counts as able to run what its instances can:
//! the job is taken and waits (`WORKERS_STARTING`) while workers boot.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcc_shared::job::view::{WaitReason, Waiting};
use dcc_shared::job::{JobId, JobRecord, JobSpec, JobState, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::workers::{Availability, WorkerInfo, availability};

use crate::error::{ApiError, Code};
use crate::state::AppState;
use crate::tenants::Principal;

/// How long a read of the fleet answers "something can run it" for this process.
const FRESH: Duration = Duration::from_secs(1);

/// The live workers as this process last read them. Reading them is one health-key read per
/// worker: per request that grows with the fleet (1,000 workers: a thousand reads for each job
/// view), so a read serves this process's requests for [`FRESH`]. Only the answer "something
/// can run it" is taken from it; "nothing can" (a 503, a waiting reason) is read fresh, so a
/// worker that just started is never missed.
#[derive(Default)]
pub struct FleetView {
    last: Mutex<Option<(Instant, Arc<Vec<WorkerInfo>>)>>,
}

impl FleetView {
    async fn read(&self, queue: &Queue, fresh: bool) -> dcc_shared::Result<Arc<Vec<WorkerInfo>>> {
        if !fresh
            && let Some((at, w)) = self.last.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(w.clone());
        }
        let w = Arc::new(queue.workers().await?);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), w.clone()));
        Ok(w)
    }
}

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
    let mem = spec.parameters.memory_mb;
    let workers = state.fleet.read(&state.queue, false).await?;
    let av = availability(&workers, queue, n, mem);
    if matches!(av, Availability::Ready(_)) {
        return Ok((av, queue, n));
    }
    let workers = state.fleet.read(&state.queue, true).await?;
    let av = availability(&workers, queue, n, mem);
    if av.can_run() {
        return Ok((av, queue, n));
    }
    // A fleet the scaler can grow takes the job: its demand is what makes the scaler grow it.
    let outlook = state.queue.outlook(queue).await?;
    Ok((av.or_starting(outlook.as_ref(), n, mem), queue, n))
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
pub async fn waiting(state: &AppState, job: &JobRecord, who: &Principal) -> Option<Waiting> {
    if job.state != JobState::Queued {
        return None;
    }
    if job.blocked > 0 {
        return Some(dependencies(state, job, who).await);
    }
    let (av, queue, n) = of(state, &job.spec).await.ok()?;
    let spec_mem = job.spec.parameters.memory_mb;
    Some(av.waiting(queue, n, spec_mem))
}

/// Why a blocked job waits: the dependencies that have not ended, in the caller's spelling.
async fn dependencies(state: &AppState, job: &JobRecord, who: &Principal) -> Waiting {
    // Their records in one round trip; a read that fails names them all.
    let ids: Vec<JobId> = job
        .spec
        .depends_on
        .iter()
        .filter_map(|d| JobId::parse(&d.job_id).ok())
        .collect();
    let ended: Vec<JobId> = match state.queue.get_many(&ids).await {
        Ok(found) => found
            .into_iter()
            .filter(|r| r.state.is_terminal())
            .map(|r| r.id)
            .collect(),
        Err(_) => Vec::new(),
    };
    let open: Vec<String> = job
        .spec
        .depends_on
        .iter()
        .filter(|d| !ended.iter().any(|e| e.as_str() == d.job_id))
        .map(|d| format!("{} (to {})", who.external(&d.job_id), d.kind.as_str()))
        .collect();
    Waiting {
        reason: WaitReason::Dependencies,
        message: format!(
            "waits for {} of its {} dependencies: {}",
            open.len(),
            job.spec.depends_on.len(),
            open.join(", ")
        ),
    }
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
