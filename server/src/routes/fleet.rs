//! Queues, workers, liveness and readiness.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcc_shared::clock::now_ms;
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /api/v1/queues`: depth of each queue.
pub async fn queues(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut out = serde_json::Map::new();
    for (q, d) in state.queue.depths(now_ms()).await? {
        out.insert(
            q.as_str().to_string(),
            json!({"queued": d.queued, "fastQueued": d.fast_queued, "running": d.running,
                   "oldestQueuedAgeMs": d.oldest_queued_age_ms}),
        );
    }
    Ok(Json(serde_json::Value::Object(out)))
}

/// `GET /api/v1/workers`: every live worker.
pub async fn workers(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let workers: Vec<_> = state.queue.workers().await?.iter().map(|w| w.view()).collect();
    Ok(Json(json!({ "workers": workers })))
}

/// `POST /api/v1/workers/{id}/drain`: the worker stops claiming, finishes what it runs and
/// reports `DRAINING` (within one heartbeat).
pub async fn drain(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.queue.worker(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no live worker with id {id:?}"),
        ));
    }
    state.queue.request_drain(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "health": "DRAINING"}))).into_response())
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: Redis and storage reachable (200), else 503.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let redis = state.queue.ping().await;
    let storage = state.storage.check().await;
    match (redis, storage) {
        (Ok(()), Ok(())) => Json(json!({"status": "ready", "redis": "ok", "storage": "ok"})).into_response(),
        (r, s) => {
            let what = [
                r.err().map(|e| format!("redis: {e}")),
                s.err().map(|e| format!("storage: {e}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
            ApiError::unavailable(what).into_response()
        }
    }
}
