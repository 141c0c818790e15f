//! Queues, workers, liveness and readiness.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcc_shared::clock::now_ms;
use dcc_shared::job::QueueName;
use dcc_shared::workers::Health;

use crate::error::{ApiError, Code, ErrorBody};
use crate::state::AppState;
pub use dcc_shared::api::{DrainAnswer, Queues, Workers};

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
pub async fn queues(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<crate::tenants::Principal>,
) -> Result<Json<Queues>, ApiError> {
    let mut out = Queues::default();
    // A tenant sees its own jobs' counts; an admin the whole fleet's.
    let depths = if who.is_admin() {
        state.queue.depths(now_ms()).await?
    } else {
        state.queue.tenant_depths(&who.tenant, now_ms()).await?
    };
    for (q, d) in depths {
        match q {
            QueueName::Cpu => out.cpu = d,
            QueueName::Gpu => out.gpu = d,
        }
    }
    Ok(Json(out))
}

/// `GET /api/v1/workers`: every live worker.
#[utoipa::path(get, path = "/api/v1/workers", tag = "fleet", operation_id = "workers", summary = "The live workers",
    responses((status = 200, description = "The live workers", body = Workers)))]
pub async fn workers(State(state): State<AppState>) -> Result<Json<Workers>, ApiError> {
    Ok(Json(Workers {
        workers: state.queue.workers().await?,
    }))
}

/// `POST /api/v1/workers/{id}/drain`: the worker stops claiming, finishes what it runs and
/// reports `DRAINING` (within one heartbeat). The request lasts as long as that worker process:
/// undrain takes it back, and it expires with the worker.
#[utoipa::path(post, path = "/api/v1/workers/{id}/drain", tag = "fleet", operation_id = "drainWorker", summary = "Ask a worker to drain",
    params(("id" = String, Path, description = "The worker's id")),
    responses((status = 202, description = "Drain requested", body = DrainAnswer),
        (status = 403, description = "FORBIDDEN: only admin keys change the fleet", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no live worker with this id", body = ErrorBody)))]
pub async fn drain(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !state.queue.request_drain(&id).await? {
        return Err(no_worker(&id));
    }
    Ok(drain_answer(id, Health::Draining))
}

/// `POST /api/v1/workers/{id}/undrain`: takes a drain request back; the worker claims again
/// from its next heartbeat (unless it is shutting down, which cannot be undone).
#[utoipa::path(post, path = "/api/v1/workers/{id}/undrain", tag = "fleet", operation_id = "undrainWorker", summary = "Take a drain request back",
    params(("id" = String, Path, description = "The worker's id")),
    responses((status = 202, description = "Drain taken back", body = DrainAnswer),
        (status = 403, description = "FORBIDDEN: only admin keys change the fleet", body = ErrorBody),
        (status = 404, description = "NOT_FOUND: no live worker with this id", body = ErrorBody)))]
pub async fn undrain(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if !state.queue.cancel_drain(&id).await? {
        return Err(no_worker(&id));
    }
    Ok(drain_answer(id, Health::Healthy))
}

fn no_worker(id: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("no live worker with id {id:?}"))
}

fn drain_answer(id: String, health: Health) -> Response {
    (StatusCode::ACCEPTED, Json(DrainAnswer { id, health })).into_response()
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "fleet", operation_id = "healthz", summary = "Liveness: the process answers", security(()),
    responses((status = 200, description = "The process answers", body = Liveness)))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok".into() })
}

/// `GET /readyz`: Redis and storage reachable (200), else 503.
#[utoipa::path(get, path = "/readyz", tag = "fleet", operation_id = "readyz", summary = "Readiness: Redis and storage reachable", security(()),
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
            // Needs no key (load balancers probe it): name what is down, log why.
            let what = [
                r.err().map(|e| ("redis", e.to_string())),
                s.err().map(|e| ("storage", e.to_string())),
            ]
            .into_iter()
            .flatten()
            .map(|(part, why)| {
                tracing::warn!(part, error = why, "not ready");
                format!("{part} unreachable")
            })
            .collect::<Vec<_>>()
            .join("; ");
            ApiError::unavailable(what).into_response()
        }
    }
}
