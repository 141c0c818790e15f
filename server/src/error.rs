//! The contract's error body: `{"error": {"code", "message", "field"?}}`, with the HTTP status
//! each code implies. Internal details go to the log; the client gets a sentence.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcc_shared::job::spec::SpecError;
use dcc_shared::storage::StorageError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code from the contract.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// The request field to blame.
    pub field: Option<String>,
    /// Carried by `WAIT_TIMEOUT`, so the client can keep polling.
    pub job_id: Option<String>,
    /// Seconds for a `Retry-After` header (503 `NO_WORKER`).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            job_id: None,
            retry_after: None,
        }
    }

    /// 404 for a job id.
    pub fn job_not_found(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", format!("no job with id {id:?}"))
    }

    /// 400 for a bad query parameter.
    pub fn bad_param(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
        }
    }

    /// 503: Redis or storage unreachable.
    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!("a backing service is unreachable, nothing was changed: {what}"),
        )
    }
}

/// The error body as sent (also the source of its OpenAPI schema).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
    /// The job concerned, on `WAIT_TIMEOUT` (keep following it with this id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable code from the contract, e.g. `INVALID_JOB`, `NOT_FOUND`, `UNAVAILABLE`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field to blame, as `parameters.cpus` or `inputs[1].name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                field: self.field,
            },
            job_id: self.job_id,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Json(m) => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JSON", m),
            SpecError::Invalid { field, message } => ApiError {
                field,
                ..ApiError::new(StatusCode::BAD_REQUEST, "INVALID_JOB", message)
            },
            SpecError::TooLarge { field, message } => ApiError {
                field,
                ..ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE", message)
            },
            SpecError::Unschedulable { field, message } => ApiError {
                field,
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "UNSCHEDULABLE", message)
            },
        }
    }
}

impl From<dcc_shared::Error> for ApiError {
    fn from(e: dcc_shared::Error) -> Self {
        if e.is_unavailable() {
            crate::telemetry::redis_error();
            tracing::warn!(error = %e, "backing service unavailable");
            return ApiError::unavailable(e);
        }
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "an internal error occurred; see the server log",
        )
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::TooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "TOO_LARGE",
                format!("an input is over the {limit} byte limit"),
            ),
            StorageError::Full { what } => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "BUSY",
                    format!("the server is busy, nothing was changed: {what}; retry later"),
                )
            },
            StorageError::Source(e) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                format!("reading the request body failed: {e}"),
            ),
            other => dcc_shared::Error::from(other).into(),
        }
    }
}
