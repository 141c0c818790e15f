//! Job view, listing, long-poll, cancel and delete.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use dcc_shared::clock::now_ms;
use dcc_shared::job::{JobState, JobView, QueueName};
use dcc_shared::queue::cancel::Cancelled;
use dcc_shared::queue::delete::{DeleteMode, Deleted};
use dcc_shared::queue::read::ListFilter;

use super::load;
use crate::availability;
use crate::error::{ApiError, ErrorBody};
use crate::routes::query::Params;
use crate::state::AppState;
use crate::tenants::Principal;
use crate::wait;
pub use dcc_shared::api::{CancelAnswer, JobList};

/// Page size when `limit` is absent.
const DEFAULT_PAGE: u32 = 50;
/// `/wait` timeout when `timeoutSecs` is absent.
const DEFAULT_WAIT_SECS: u64 = 60;

/// `GET /api/v1/jobs/{id}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", operation_id = "getJob", summary = "A job's view",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job view", body = JobView),
        (status = 404, description = "NOT_FOUND", body = ErrorBody)))]
pub async fn view(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let job = load(&state, &who, &id).await?;
    let mut view = who.view(job.view());
    view.waiting = availability::waiting(&state, &job, &who).await;
    Ok(Json(view))
}

/// `GET /api/v1/jobs?status=&queue=&tenant=&limit=&cursor=`: newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", operation_id = "listJobs", summary = "List jobs, newest first",
    params(
        ("status" = Option<JobState>, Query, description = "Only jobs in this state"),
        ("queue" = Option<QueueName>, Query, description = "Only jobs of this queue"),
        ("tenant" = Option<String>, Query, description = "Only this tenant's jobs (admins; a tenant's key may name only itself)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 50)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page")),
    responses((status = 200, description = "A page, newest first", body = JobList),
        (status = 400, description = "INVALID_REQUEST: an unknown or malformed query parameter", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: a tenant's key asked for another tenant", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<JobList>, ApiError> {
    let q = Params::only(q, &["status", "queue", "tenant", "limit", "cursor"])?;
    let state_filter = match q.text("status") {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::bad_param(
                "status",
                "status must be one of queued, running, succeeded, failed, timed_out, cancelled",
            )
        })?),
        None => None,
    };
    let queue = match q.text("queue") {
        Some(s) => Some(QueueName::parse(s).ok_or_else(|| ApiError::bad_param("queue", "queue must be cpu or gpu"))?),
        None => None,
    };
    let limit = q.limit(DEFAULT_PAGE)? as usize;
    let cursor = q.text("cursor").map(String::from);
    // A cursor that does not parse would start the listing over, unnoticed, and loop a client.
    if cursor
        .as_deref()
        .is_some_and(|c| dcc_shared::queue::read::parse_cursor(c).is_none())
    {
        return Err(ApiError::bad_param(
            "cursor",
            "cursor must be the nextCursor of a previous page, unchanged",
        ));
    }
    let page = state
        .queue
        .list(&ListFilter {
            state: state_filter,
            queue,
            limit,
            cursor,
            tenant: who.tenant_filter(q.text("tenant"))?,
        })
        .await?;
    Ok(Json(JobList {
        jobs: page.jobs.iter().map(|j| who.view(j.view())).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `GET /api/v1/jobs/{id}/wait?timeoutSecs=`: the job view once it ends, or 504.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/wait", tag = "jobs", operation_id = "waitJob", summary = "Long-poll until a job ends",
    params(("id" = String, Path, description = "The job's id"),
        ("timeoutSecs" = Option<u64>, Query, minimum = 1, description = "Longest wait (default 60, at most DCC_MAX_WAIT)")),
    responses((status = 200, description = "The ended job", body = JobView),
        (status = 400, description = "INVALID_REQUEST: a bad timeoutSecs", body = ErrorBody),
        (status = 404, description = "NOT_FOUND", body = ErrorBody),
        (status = 504, description = "WAIT_TIMEOUT: still running; the body carries `jobId`", body = ErrorBody)))]
pub async fn wait_for(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<JobView>, ApiError> {
    let max = state.config.max_wait.as_secs();
    let secs = match q.get("timeoutSecs").filter(|s| !s.is_empty()) {
        Some(s) => s.parse::<u64>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::bad_param(
                "timeoutSecs",
                format!("timeoutSecs must be a whole number from 1 to {max}"),
            )
        })?,
        None => DEFAULT_WAIT_SECS.min(max),
    };
    let job = load(&state, &who, &id).await?;
    let record = wait::until_ended(&state, &job.id, Duration::from_secs(secs), wait::IfStuck::Wait)
        .await
        .map_err(|e| who.error(e))?;
    Ok(Json(who.view(record.view())))
}

/// `POST /api/v1/jobs/{id}/cancel`: 202 when it was cancelled now; 200 with the final state
/// when it had already ended (nothing changes).
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", operation_id = "cancelJob", summary = "Cancel a job",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 202, description = "Cancelled now: a queued job never starts, a running container is killed", body = CancelAnswer),
        (status = 200, description = "It had already ended; nothing changed", body = CancelAnswer),
        (status = 404, description = "NOT_FOUND", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &who, &id).await?;
    match state
        .queue
        .cancel(&job, state.config.retention().of(job.lane), now_ms())
        .await
        .map_err(|e| ApiError::of_job(&id, e))?
    {
        Cancelled::Done(_) => Ok((
            StatusCode::ACCEPTED,
            Json(CancelAnswer {
                job_id: id,
                status: JobState::Cancelled,
            }),
        )
            .into_response()),
        Cancelled::AlreadyEnded(s) => {
            Ok((StatusCode::OK, Json(CancelAnswer { job_id: id, status: s })).into_response())
        }
        Cancelled::Missing => Err(ApiError::job_not_found(&id)),
    }
}

/// `DELETE /api/v1/jobs/{id}`: cancels if needed, then removes every trace; 204.
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs", operation_id = "deleteJob", summary = "Cancel if needed, then remove every trace of a job",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 204, description = "Deleted: no key in Redis, no file in storage"),
        (status = 404, description = "NOT_FOUND", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &who, &id).await?;
    if let Some(c) = &job.child_of {
        return Err(ApiError::new(
            crate::error::Code::InvalidRequest,
            format!(
                "an array child goes with its array: delete {} (cancel stops this child alone)",
                who.external(c.parent.as_str())
            ),
        ));
    }
    if !job.state.is_terminal() {
        // Cancel first, so the worker stops the container on the event.
        state
            .queue
            .cancel(&job, state.config.retention().of(job.lane), now_ms())
            .await
            .map_err(|e| ApiError::of_job(&id, e))?;
    }
    match state
        .queue
        .delete(
            &job,
            state.storage_for(&job).as_ref(),
            DeleteMode::Any,
            state.config.retention().of(job.lane),
            now_ms(),
        )
        .await
        .map_err(|e| ApiError::of_job(&id, e))?
    {
        Deleted::Missing => Err(ApiError::job_not_found(&id)),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
