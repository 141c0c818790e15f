//! Logs and output files, streamed from storage.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dcc_shared::storage::paths;

use super::load;
use crate::error::{ApiError, Code, ErrorBody};
use crate::state::AppState;
use crate::tenants::Principal;

/// `302 Found` to a presigned link (the status clients and the contract expect for a download).
fn found(url: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

async fn log(state: AppState, who: Principal, id: String, stream: &str) -> Result<Response, ApiError> {
    let job = load(&state, &who, &id).await?;
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if job.attempt == 0 {
        return Ok((headers, "").into_response());
    }
    let name = paths::log(&job.id, job.attempt, stream);
    let storage = state.storage_for(&job);
    // S3: a short-lived presigned link, once the object exists (while running it may not yet).
    if let Some(url) = storage.presign(&name, state.config.s3_presign).await?
        && storage.exists(&name).await?
    {
        return Ok(found(&url));
    }
    match storage.get(&name).await? {
        // While running, what the worker uploaded so far; nothing yet reads as empty.
        None => Ok((headers, "").into_response()),
        Some(obj) => Ok((
            headers,
            [(header::CONTENT_LENGTH, obj.size.to_string())],
            Body::from_stream(obj.body),
        )
            .into_response()),
    }
}

/// A file's raw bytes: the schema of a download answer (the handler streams the body).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct FileBytes(Vec<u8>);

/// `GET /api/v1/jobs/{id}/stdout`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/stdout", tag = "jobs", operation_id = "stdout", summary = "A job's stdout so far",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "stdout so far (local storage)", body = String, content_type = "text/plain"),
        (status = 302, description = "S3 storage: a short-lived presigned link"),
        (status = 404, description = "NOT_FOUND", body = ErrorBody)))]
pub async fn stdout(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    log(state, who, id, "stdout").await
}

/// `GET /api/v1/jobs/{id}/stderr`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/stderr", tag = "jobs", operation_id = "stderr", summary = "A job's stderr so far",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "stderr so far (local storage)", body = String, content_type = "text/plain"),
        (status = 302, description = "S3 storage: a short-lived presigned link"),
        (status = 404, description = "NOT_FOUND", body = ErrorBody)))]
pub async fn stderr(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    log(state, who, id, "stderr").await
}

/// `GET /api/v1/jobs/{id}/outputs/{*path}`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/outputs/{path}", tag = "jobs", operation_id = "output", summary = "Download one output file",
    params(("id" = String, Path, description = "The job's id"),
        ("path" = String, Path, description = "The file's path under /outputs (may contain `/`)")),
    responses((status = 200, description = "The file (local storage)", body = FileBytes, content_type = "application/octet-stream"),
        (status = 302, description = "S3 storage: a short-lived presigned link"),
        (status = 404, description = "NOT_FOUND", body = ErrorBody)))]
pub async fn output(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let job = load(&state, &who, &id).await?;
    let not_found = || ApiError::new(Code::NotFound, format!("job {id} has no output named {name:?}"));
    if !job.outputs.iter().any(|o| o.name == name) {
        return Err(not_found());
    }
    let object = paths::output(&job.id, job.attempt, &name);
    if let Some(url) = state
        .storage_for(&job)
        .presign(&object, state.config.s3_presign)
        .await?
    {
        return Ok(found(&url));
    }
    let obj = state.storage_for(&job).get(&object).await?.ok_or_else(not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, obj.size.to_string()),
        ],
        Body::from_stream(obj.body),
    )
        .into_response())
}
