//! 2018's plain HTTP routes (reference §2.2) that tooling written for it still calls: `/wait`
//! and `/status` (the 2018 test runner polls `/wait` before anything else), the job-running
//! health check `/monitor` (also `/test`, `/check`) and `/monitor/jobcount`, and a job's files at
//! 2018's storage paths (`/<jobId>/result.json`, `/<jobId>/stdout`, `/<jobId>/stderr`,
//! `/<jobId>/outputs/<path>`). What is not served says why (`docs/compat.md`). Everything about a
//! job is asked of v1 as the caller, so keys, tenants and roles hold as on every other route.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcc_client::{Body as V1Body, ListQuery};
use dcc_shared::clock::{now_ms, parse_rfc3339};
use dcc_shared::job::JobState;
use serde::Deserialize;
use serde_json::{Value, json};

use super::client::{V1, job_path};
use super::{caller, result_json_of};
use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The longest `/wait` holds a request: 2018's per-route socket timeout.
const WAIT_LIMIT: Duration = Duration::from_secs(120);
/// How often `/wait` asks again (2018's pace).
const WAIT_EVERY: Duration = Duration::from_secs(1);
/// `/monitor`'s defaults and bounds, in seconds (2018's defaults).
const WITHIN_DEFAULT: u64 = 180;
const WITHIN_MAX: u64 = 7 * 24 * 3600;
const TIMEOUT_DEFAULT: u64 = 30;
const TIMEOUT_MAX: u64 = 120;

/// Whether Redis and storage answer: what `/readyz` says.
async fn ready(state: &AppState) -> bool {
    crate::routes::fleet::readyz(State(state.clone())).await.status() == StatusCode::OK
}

/// `GET /wait`: answers 200 once the server is ready, asking every second (2018's long poll);
/// 503 after two minutes of not being ready.
pub async fn wait(State(state): State<AppState>) -> Response {
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if ready(&state).await {
            return StatusCode::OK.into_response();
        }
        if tokio::time::Instant::now() + WAIT_EVERY > deadline {
            let why = format!("not ready after {} s (see /readyz)", WAIT_LIMIT.as_secs());
            return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
        }
        tokio::time::sleep(WAIT_EVERY).await;
    }
}

/// `GET /status`: 2018's start-up state, `{"status":"Ready"}` once Redis and storage answer. A
/// serving DCC is past every earlier 2018 state but the connections, so the only other answer is
/// the first of those that fails (`CreateStorageDriver`, `ConnectingToRedis`). Always 200, as
/// 2018.
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let status = match (state.queue.ping().await, state.storage.check().await) {
        (Ok(()), Ok(())) => "Ready",
        (_, Err(_)) => "CreateStorageDriver",
        (Err(_), Ok(())) => "ConnectingToRedis",
    };
    Json(json!({ "status": status }))
}

/// `/monitor`'s query (seconds).
#[derive(Deserialize)]
pub struct MonitorQuery {
    within: Option<u64>,
    timeout: Option<u64>,
}

/// The monitor jobs in flight, one per tenant at most (2018 ran at most one).
static IN_FLIGHT: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Default::default);

fn in_flight() -> std::sync::MutexGuard<'static, HashMap<String, String>> {
    IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner())
}

/// `GET /monitor`, `/test`, `/check`: whether jobs run. Success at once when one of the caller's
/// jobs succeeded within `within` seconds; else a small test job (`DCC_MONITOR_IMAGE`) is run
/// and waited for up to `timeout` seconds. 200 `{success: true, reason, …}`, or 500 with
/// `success: false` (2018's shape and reasons).
pub async fn monitor(State(state): State<AppState>, Query(q): Query<MonitorQuery>, req: Request) -> Response {
    let v1 = caller(&state, &req);
    let within = q.within.unwrap_or(WITHIN_DEFAULT).min(WITHIN_MAX);
    let timeout = q.timeout.unwrap_or(TIMEOUT_DEFAULT).clamp(1, TIMEOUT_MAX);
    let shape = |success: bool, reason: &str, extra: Value| {
        let mut body = json!({"success": success, "reason": reason, "within": within, "timeout": timeout});
        if let (Some(b), Value::Object(more)) = (body.as_object_mut(), extra) {
            b.extend(more);
        }
        let status = if success {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        (status, Json(body)).into_response()
    };
    match recent_success(&v1, within).await {
        Ok(Some(id)) => return shape(true, "AnotherJobFinishedRecentlyWithoutWaiting", json!({"job": id})),
        Ok(None) => {}
        Err(e) => return shape(false, "Failed", json!({"error": e})),
    }
    let id = match monitor_job(&state, &v1).await {
        Ok(id) => id,
        Err(e) => return shape(false, "FailedToSubmitTestJob", json!({"error": e})),
    };
    let ended = v1.wait(&id, timeout).await;
    let tenant = v1.who.tenant.clone();
    match ended {
        Ok(Some(view)) => {
            in_flight().remove(&tenant);
            if view.status == JobState::Succeeded {
                shape(true, "AnotherJobFinishedRecently", json!({"job": id}))
            } else {
                let error = view.error.map(|e| e.message);
                shape(false, "TestJobFailed", json!({"job": id, "error": error}))
            }
        }
        Ok(None) => {
            let running = v1.queues().await.map(|q| q.cpu.running).unwrap_or(0);
            if running > 0 {
                shape(
                    true,
                    "NoJobsFinishedRecentlyAndTimedOutButActiveJobsOnQueue",
                    json!({"job": id}),
                )
            } else {
                shape(false, "FailedTimedOutNoActiveJobs", json!({"job": id}))
            }
        }
        Err(e) => shape(false, "Failed", json!({"job": id, "error": e.to_string()})),
    }
}

/// One of the caller's jobs that succeeded within `within` seconds, newest first.
async fn recent_success(v1: &V1, within: u64) -> Result<Option<String>, String> {
    let q = ListQuery {
        status: Some(JobState::Succeeded),
        limit: Some(50),
        cursor: None,
    };
    let list = v1.list(&q).await.map_err(|e| e.to_string())?;
    let since = now_ms() - (within as i64) * 1000;
    Ok(list
        .jobs
        .into_iter()
        .find(|j| {
            j.finished_at
                .as_deref()
                .and_then(parse_rfc3339)
                .is_some_and(|t| t >= since)
        })
        .map(|j| j.job_id.to_string()))
}

/// The caller's monitor job in flight, or a new one: 2018's test (`cat /inputs/x > /outputs/y`,
/// keyword `monitor`).
async fn monitor_job(state: &AppState, v1: &V1) -> Result<String, String> {
    let tenant = v1.who.tenant.clone();
    let known = in_flight().get(&tenant).cloned();
    if let Some(id) = known {
        match v1.job(&id).await {
            Ok(view) if !view.status.is_terminal() => return Ok(id),
            _ => {
                in_flight().remove(&tenant);
            }
        }
    }
    let job = json!({
        "image": state.config.monitor_image,
        "command": ["sh", "-c", "cat /inputs/x > /outputs/y"],
        "inputs": [{"name": "x", "value": "monitor"}],
        "parameters": {"maxDurationSecs": TIMEOUT_MAX},
        "meta": {"keywords": "monitor"},
    });
    let id = v1.submit(&job).await.map_err(|e| e.to_string())?.job_id().to_string();
    in_flight().insert(tenant, id.clone());
    Ok(id)
}

/// `GET /monitor/jobcount`: `{"count": N}`, the caller's monitor jobs in flight (0 or 1).
pub async fn monitor_jobcount(State(state): State<AppState>, req: Request) -> Json<Value> {
    let v1 = caller(&state, &req);
    let id = in_flight().get(&v1.who.tenant).cloned();
    let count = match id {
        Some(id) => match v1.job(&id).await {
            Ok(view) if !view.status.is_terminal() => 1,
            _ => 0,
        },
        None => 0,
    };
    Json(json!({ "count": count }))
}

/// `GET /<jobId>/result.json`, `/<jobId>/stdout`, `/<jobId>/stderr`, `/<jobId>/outputs/<path>`:
/// the job's result or file where 2018 stored it (under its default `resultsPath`, `<jobId>/`),
/// as v1 serves it (same status, headers and body). A custom `resultsPath` was recorded, not
/// used: its paths are not served.
pub async fn file_at_path(
    State(state): State<AppState>,
    Path((id, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    if rest == "result.json" {
        return result_json_of(&state, &id, req).await;
    }
    let v1 = caller(&state, &req);
    let (what, tail) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let path = match (what, tail) {
        ("stdout" | "stderr", "") => job_path(&id, &format!("/{what}")),
        ("outputs", p) if !p.is_empty() => job_path(&id, &format!("/outputs/{p}")),
        ("inputs", _) => {
            let why = "inputs are not served back: the job's definition lists their names, and the client has them (docs/compat.md)";
            return ApiError::new(Code::NotFound, why).into_response();
        }
        _ => return crate::app::not_found(req).await.into_response(),
    };
    match v1.send(axum::http::Method::GET, &path, V1Body::Empty, None).await {
        Ok(reply) => {
            let mut response = Response::new(Body::from_stream(reply.body));
            *response.status_mut() = reply.status;
            *response.headers_mut() = reply.headers;
            response
        }
        Err(e) => ApiError::unavailable(e.to_string()).into_response(),
    }
}
