//! Queues, workers, liveness and readiness.

use axum::Json;
use axum::extract::State;
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
            let mut resp = ApiError::unavailable(what).into_response();
            *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            resp
        }
    }
}
