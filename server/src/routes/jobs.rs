//! Job view, listing, long-poll, cancel and delete.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcc_shared::clock::now_ms;
use dcc_shared::job::{JobState, QueueName};
use dcc_shared::queue::cancel::Cancelled;
use dcc_shared::queue::delete::{DeleteMode, Deleted};
use dcc_shared::queue::read::ListFilter;
use serde_json::json;

use super::load;
use crate::error::ApiError;
use crate::state::AppState;
use crate::wait;

/// Page size when `limit` is absent.
const DEFAULT_PAGE: usize = 50;
/// Largest page.
const MAX_PAGE: usize = 1000;
/// `/wait` timeout when `timeoutSecs` is absent.
const DEFAULT_WAIT_SECS: u64 = 60;

/// `GET /api/v1/jobs/{id}`.
pub async fn view(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(load(&state, &id).await?.view()))
}

/// `GET /api/v1/jobs?status=&queue=&limit=&cursor=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    for k in q.keys() {
        if !["status", "queue", "limit", "cursor"].contains(&k.as_str()) {
            return Err(ApiError::bad_param(k, format!("unknown query parameter {k:?}")));
        }
    }
    let state_filter = match q.get("status").filter(|s| !s.is_empty()) {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            ApiError::bad_param(
                "status",
                "status must be one of queued, running, succeeded, failed, timed_out, cancelled",
            )
        })?),
        None => None,
    };
    let queue = match q.get("queue").filter(|s| !s.is_empty()) {
        Some(s) => Some(QueueName::parse(s).ok_or_else(|| ApiError::bad_param("queue", "queue must be cpu or gpu"))?),
        None => None,
    };
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_param("limit", format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            })?,
        None => DEFAULT_PAGE,
    };
    let page = state
        .queue
        .list(&ListFilter {
            state: state_filter,
            queue,
            limit,
            cursor: q.get("cursor").filter(|s| !s.is_empty()).cloned(),
        })
        .await?;
    let jobs: Vec<_> = page.jobs.iter().map(|j| j.view()).collect();
    Ok(Json(json!({"jobs": jobs, "nextCursor": page.next_cursor})))
}

/// `GET /api/v1/jobs/{id}/wait?timeoutSecs=`: the job view once it ends, or 504.
pub async fn wait_for(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
    let job = load(&state, &id).await?;
    let record = wait::until_ended(&state, &job.id, Duration::from_secs(secs)).await?;
    Ok(Json(record.view()))
}

/// `POST /api/v1/jobs/{id}/cancel`: 202 when it was cancelled now; 200 with the final state
/// when it had already ended (nothing changes).
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = load(&state, &id).await?;
    match state
        .queue
        .cancel(&job, state.config.retention().of(job.lane), now_ms())
        .await?
    {
        Cancelled::Done(_) => {
            Ok((StatusCode::ACCEPTED, Json(json!({"jobId": id, "status": "cancelled"}))).into_response())
        }
        Cancelled::AlreadyEnded(s) => {
            Ok((StatusCode::OK, Json(json!({"jobId": id, "status": s.as_str()}))).into_response())
        }
        Cancelled::Missing => Err(ApiError::job_not_found(&id)),
    }
}

/// `DELETE /api/v1/jobs/{id}`: cancels if needed, then removes every trace; 204.
pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let job = load(&state, &id).await?;
    if !job.state.is_terminal() {
        // Cancel first, so the worker stops the container on the event.
        state
            .queue
            .cancel(&job, state.config.retention().of(job.lane), now_ms())
            .await?;
    }
    match state
        .queue
        .delete(&job, state.storage_for(&job).as_ref(), DeleteMode::Any, now_ms())
        .await?
    {
        Deleted::Missing => Err(ApiError::job_not_found(&id)),
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
