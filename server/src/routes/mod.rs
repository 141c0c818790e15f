//! Handlers, one module per resource.
//!
//! # Layout
//! - [`jobs`]: view, listing, long-poll, cancel, delete.
//! - [`array`]: an array job's children.
//! - [`files`]: stdout, stderr and output files.
//! - [`fleet`]: queues, workers, health and readiness.
//! - [`run`]: fast (synchronous) jobs.
//! - [`stats`]: the history, minute by minute.
//! - [`ws`]: live status over a WebSocket.

pub mod array;
pub mod files;
pub mod fleet;
pub mod jobs;
pub mod query;
pub mod run;
pub mod stats;
pub mod ws;

use dcc_shared::job::{JobId, JobRecord};

use crate::error::ApiError;
use crate::state::AppState;
use crate::tenants::Principal;

/// The job behind a path id if `who` may see it, else 404 — also for another tenant's job, so ids
/// cannot be probed (an id that cannot be valid cannot exist either).
pub async fn load(state: &AppState, who: &Principal, id: &str) -> Result<JobRecord, ApiError> {
    // Every spelling it may be stored under, read in one round trip; the most specific wins.
    let candidates: Vec<JobId> = who.candidates(id).iter().filter_map(|s| JobId::parse(s).ok()).collect();
    let found = state.queue.get_many(&candidates).await?;
    candidates
        .iter()
        .find_map(|c| found.iter().find(|j| &j.id == c && who.owns(&j.tenant)))
        .cloned()
        .ok_or_else(|| ApiError::job_not_found(id))
}
