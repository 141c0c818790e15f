//! Queues, workers, liveness and readiness.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcc_shared::clock::now_ms;
use dcc_shared::job::QueueName;
use dcc_shared::workers::{Health, WorkerView};

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Depth of both queues.
#[derive(Default, serde::Serialize, utoipa::ToSchema)]
pub struct Queues {
    /// The `cpu` queue.
    pub cpu: QueueDepth,
    /// The `gpu` queue.
    pub gpu: QueueDepth,
}

/// Depth of one queue.
#[derive(Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueDepth {
    /// Standard jobs waiting (both priorities).
    pub queued: u64,
    /// Fast jobs waiting.
    pub fast_queued: u64,
    /// Jobs running now.
    pub running: u64,
    /// Age of the oldest waiting job (0 when none waits).
    pub oldest_queued_age_ms: i64,
}

/// The live workers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Workers {
    /// Every worker whose health key is fresh.
    pub workers: Vec<WorkerView>,
}

/// The answer to a drain request.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DrainAnswer {
    /// The worker's id.
    pub id: String,
    /// `DRAINING` (the worker reports it within one heartbeat).
    pub health: Health,
}

/// The answer of `/healthz`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// The answer of `/readyz` when ready.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// `ok`: Redis answered a PING.
    pub redis: String,
    /// `ok`: the storage backend answered.
    pub storage: String,
}

/// `GET /api/v1/queues`: depth of each queue.
#[utoipa::path(get, path = "/api/v1/queues", tag = "fleet", operation_id = "queues", summary = "Depth of each queue",
    responses((status = 200, description = "Per queue", body = Queues)))]
pub async fn queues(State(state): State<AppState>) -> Result<Json<Queues>, ApiError> {
    let mut out = Queues::default();
    for (q, d) in state.queue.depths(now_ms()).await? {
        let depth = QueueDepth {
            queued: d.queued,
            fast_queued: d.fast_queued,
            running: d.running,
            oldest_queued_age_ms: d.oldest_queued_age_ms,
        };
        match q {
            QueueName::Cpu => out.cpu = depth,
            QueueName::Gpu => out.gpu = depth,
        }
    }
    Ok(Json(out))
}

/// `GET /api/v1/workers`: every live worker.
#[utoipa::path(get, path = "/api/v1/workers", tag = "fleet", operation_id = "workers", summary = "The live workers",
    responses((status = 200, description = "The live workers", body = Workers)))]
pub async fn workers(State(state): State<AppState>) -> Result<Json<Workers>, ApiError> {
    let workers = state.queue.workers().await?.iter().map(|w| w.view()).collect();
    Ok(Json(Workers { workers }))
}

/// `POST /api/v1/workers/{id}/drain`: the worker stops claiming, finishes what it runs and
/// reports `DRAINING` (within one heartbeat).
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "fleet", operation_id = "drainWorker", summary = "Ask a worker to drain",
    params(("id" = String, Path, description = "The worker's id")),
    responses((status = 202, description = "Drain requested", body = DrainAnswer),
        (status = 404, description = "NOT_FOUND: no live worker with this id", body = ErrorBody)))]
pub async fn drain(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.queue.worker(&id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no live worker with id {id:?}"),
        ));
    }
    state.queue.request_drain(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DrainAnswer {
            id,
            health: Health::Draining,
        }),
    )
        .into_response())
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "fleet", operation_id = "healthz", summary = "Liveness: the process answers", security(()),
    responses((status = 200, description = "The process answers", body = Liveness)))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok".into() })
}

/// `GET /readyz`: Redis and storage reachable (200), else 503.
#[utoipa::path(get, path = "/readyz", tag = "fleet", operation_id = "readyz", summary = "Readiness: Redis and storage reachable",
    responses((status = 200, description = "Redis and storage reachable", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let redis = state.queue.ping().await;
    let storage = state.storage.check().await;
    match (redis, storage) {
        (Ok(()), Ok(())) => Json(Readiness {
            status: "ready".into(),
            redis: "ok".into(),
            storage: "ok".into(),
        })
        .into_response(),
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
