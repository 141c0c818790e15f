//! Blocking until a job ends, driven by job events (no polling loop per waiter). The subscriber
//! is created before the first read, so an end that happens in between is not missed; a
//! periodic re-read covers a dropped event subscription.

use std::time::Duration;

use axum::http::StatusCode;
use dcc_shared::events::Event;
use dcc_shared::job::{JobId, JobRecord, JobState};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::state::AppState;

/// Re-read the record at least this often even without events.
const RECHECK: Duration = Duration::from_secs(5);

/// The ended job, or `WAIT_TIMEOUT` (504, with the job id) after `timeout`, or `NOT_FOUND`.
pub async fn until_ended(state: &AppState, id: &JobId, timeout: Duration) -> Result<JobRecord, ApiError> {
    let deadline = Instant::now() + timeout;
    let mut rx = state.events.subscribe();
    // Set when the job's own terminal event woke us: every waiter of this process then shares
    // one read of the record.
    let mut ended_at = None;
    loop {
        let record = match ended_at.take() {
            Some(at) => state.ended.get(&state.queue, id, at).await?.map(|r| (*r).clone()),
            None => state.queue.get(id).await?,
        }
        .ok_or_else(|| ApiError::job_not_found(id.as_str()))?;
        if record.state.is_terminal() {
            return Ok(record);
        }
        let recheck = (Instant::now() + RECHECK).min(deadline);
        loop {
            match tokio::time::timeout_at(recheck, rx.recv()).await {
                Err(_) if Instant::now() >= deadline => {
                    return Err(ApiError {
                        job_id: Some(id.to_string()),
                        ..ApiError::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            "WAIT_TIMEOUT",
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
                    if JobState::parse(&ev.status).is_some_and(JobState::is_terminal) {
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
