//! Blocking until a job ends, driven by job events (no polling loop per waiter). The subscriber
//! is created before the first read, so an end that happens in between is not missed; a
//! periodic re-read covers a dropped event subscription.
//!
//! A waiter that asked for it ([`IfStuck::Answer`]) is also told, at each re-read, when its job is
//! still queued and nothing live can run it (every worker gone or draining): 503 `NO_WORKER`
//! rather than hanging until the limit.

use std::time::Duration;

use dcc_shared::events::Event;
use dcc_shared::job::{JobId, JobRecord};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::availability;
use crate::error::{ApiError, Code};
use crate::state::AppState;

/// Re-read the record at least this often even without events.
const RECHECK: Duration = Duration::from_secs(5);

/// What a wait does when its queued job has no worker that could run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfStuck {
    /// Keep waiting (an explicit long-poll: the client chose its time limit).
    Wait,
    /// Answer 503 `NO_WORKER` (with the job id) at the next re-read.
    Answer,
}

/// The ended job, or `WAIT_TIMEOUT` (504, with the job id) after `timeout`, or `NOT_FOUND`, or
/// (with [`IfStuck::Answer`]) `NO_WORKER` when nothing live can run the queued job.
pub async fn until_ended(
    state: &AppState,
    id: &JobId,
    timeout: Duration,
    if_stuck: IfStuck,
) -> Result<JobRecord, ApiError> {
    let _permit = state.waiter()?;
    let deadline = Instant::now() + timeout;
    let mut rx = state.events.subscribe();
    // Set when the job's own terminal event woke us: every waiter of this process then shares
    // one read of the record.
    let mut ended_at = None;
    loop {
        let record = match ended_at.take() {
            Some(at) => state.ended.get(&state.queue, id, at).await?.map(|r| r.record.clone()),
            None => state.queue.get(id).await?,
        }
        .ok_or_else(|| ApiError::job_not_found(id.as_str()))?;
        if record.state.is_terminal() {
            return Ok(record);
        }
        if if_stuck == IfStuck::Answer
            && let Some(why) = availability::stuck(state, &record).await
        {
            return Err(ApiError {
                job_id: Some(id.to_string()),
                ..availability::no_worker(state, why)
            });
        }
        let recheck = (Instant::now() + RECHECK).min(deadline);
        loop {
            match tokio::time::timeout_at(recheck, rx.recv()).await {
                Err(_) if Instant::now() >= deadline => {
                    return Err(ApiError {
                        job_id: Some(id.to_string()),
                        ..ApiError::new(
                            Code::WaitTimeout,
                            format!(
                                "job {id} did not end within {} s; it is still {}: keep polling",
                                timeout.as_secs(),
                                record.state.as_str()
                            ),
                        )
                    });
                }
                Err(_) => break,
                Ok(Ok(Event::Job(ev))) if ev.job_id == id.as_str() => {
                    if ev.status.ended().is_some() {
                        ended_at = Some(ev.at);
                    }
                    break;
                }
                Ok(Ok(Event::Job(_))) => {}
                Ok(Ok(Event::Resync)) | Ok(Err(RecvError::Lagged(_))) => break,
                Ok(Err(RecvError::Closed)) => return Err(ApiError::unavailable("the job event stream closed")),
            }
        }
    }
}
