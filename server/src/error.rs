//! The contract's error body: `{"error": {"code", "message", "field"?}}`, with the HTTP status
//! each code implies. Internal details go to the log; the client gets a sentence.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dcc_shared::job::spec::SpecError;
use dcc_shared::storage::StorageError;

/// The stable error codes of the contract (`api-v1.md`), each with the one HTTP status it
/// answers with: the only place codes meet statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The body is not JSON, or not the JSON the route takes.
    InvalidJson,
    /// The job definition breaks a rule (the field says which).
    InvalidJob,
    /// A query parameter, header or message is malformed.
    InvalidRequest,
    /// A `url` input could not be fetched at submit.
    InputFetchFailed,
    /// No API key, or an unknown one.
    Unauthorized,
    /// The key's role does not allow the route.
    Forbidden,
    /// A browser request from an origin not in `DCC_ALLOWED_ORIGINS`.
    OriginNotAllowed,
    /// A `Host` that does not name this server (DNS rebinding): not `localhost`, an address or
    /// one of `DCC_PUBLIC_HOSTS`.
    HostNotAllowed,
    /// No such job (or not the tenant's), file or route.
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// A job with this id and another definition exists.
    IdConflict,
    /// A body, input, message or request is over its limit.
    TooLarge,
    /// A body that is neither JSON nor multipart.
    UnsupportedMediaType,
    /// No worker of this deployment can ever be large enough.
    Unschedulable,
    /// The tenant's active or fast-job quota is full.
    QuotaExceeded,
    /// The tenant's submit rate is exceeded.
    RateLimited,
    /// A bug or a corrupt record; details in the server log.
    Internal,
    /// A bounded resource is full (fast-job Redis budget, open waits).
    Busy,
    /// No live worker can take the job now.
    NoWorker,
    /// Redis or storage is unreachable; nothing was changed.
    Unavailable,
    /// Written on the Redis primary, not confirmed by replicas (or the append-only file) within
    /// `DCC_DURABILITY_TIMEOUT`: it may not survive a failover; retry the same request.
    NotDurable,
    /// A wait ended before the job did; keep following it.
    WaitTimeout,
}

impl Code {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidJson => "INVALID_JSON",
            Code::InvalidJob => "INVALID_JOB",
            Code::InvalidRequest => "INVALID_REQUEST",
            Code::InputFetchFailed => "INPUT_FETCH_FAILED",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Forbidden => "FORBIDDEN",
            Code::OriginNotAllowed => "ORIGIN_NOT_ALLOWED",
            Code::HostNotAllowed => "HOST_NOT_ALLOWED",
            Code::NotFound => "NOT_FOUND",
            Code::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Code::IdConflict => "ID_CONFLICT",
            Code::TooLarge => "TOO_LARGE",
            Code::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Code::Unschedulable => "UNSCHEDULABLE",
            Code::QuotaExceeded => "QUOTA_EXCEEDED",
            Code::RateLimited => "RATE_LIMITED",
            Code::Internal => "INTERNAL",
            Code::Busy => "BUSY",
            Code::NoWorker => "NO_WORKER",
            Code::Unavailable => "UNAVAILABLE",
            Code::NotDurable => "NOT_DURABLE",
            Code::WaitTimeout => "WAIT_TIMEOUT",
        }
    }

    /// The HTTP status it answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidJson | Code::InvalidJob | Code::InvalidRequest | Code::InputFetchFailed => {
                StatusCode::BAD_REQUEST
            }
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden | Code::OriginNotAllowed => StatusCode::FORBIDDEN,
            Code::HostNotAllowed => StatusCode::MISDIRECTED_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::IdConflict => StatusCode::CONFLICT,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Unschedulable => StatusCode::UNPROCESSABLE_ENTITY,
            Code::QuotaExceeded | Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Busy | Code::NoWorker | Code::Unavailable | Code::NotDurable => StatusCode::SERVICE_UNAVAILABLE,
            Code::WaitTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// Stable code from the contract (it implies the HTTP status).
    pub code: Code,
    /// A sentence for people.
    pub message: String,
    /// The request field to blame.
    pub field: Option<String>,
    /// Carried by `WAIT_TIMEOUT` and `NOT_DURABLE`, so the client can keep polling or retry.
    pub job_id: Option<String>,
    /// Seconds for a `Retry-After` header (503 `NO_WORKER`).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with no field.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            job_id: None,
            retry_after: None,
        }
    }

    /// 404 for a job id.
    pub fn job_not_found(id: &str) -> Self {
        Self::new(Code::NotFound, format!("no job with id {id:?}"))
    }

    /// 400 for a bad query parameter.
    pub fn bad_param(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_string()),
            ..Self::new(Code::InvalidRequest, message)
        }
    }

    /// 503 `NOT_DURABLE` (see [`Code::NotDurable`]), naming the job when it is known.
    fn not_durable(id: Option<&str>, e: &dcc_shared::Error) -> Self {
        crate::telemetry::redis_error();
        tracing::warn!(job_id = id, error = %e, "write not confirmed durable");
        ApiError {
            job_id: id.map(String::from),
            retry_after: Some(1),
            ..Self::new(
                Code::NotDurable,
                format!("{e}; it may not survive a Redis failover: retry the same request (with the same job id)"),
            )
        }
    }

    /// A queue error about the job `id`: as [`From`], but `NOT_DURABLE` names the job.
    pub fn of_job(id: &str, e: dcc_shared::Error) -> Self {
        match e {
            dcc_shared::Error::NotDurable { .. } => Self::not_durable(Some(id), &e),
            e => e.into(),
        }
    }

    /// 503: Redis or storage unreachable.
    pub fn unavailable(what: impl std::fmt::Display) -> Self {
        Self::new(
            Code::Unavailable,
            format!("a backing service is unreachable, nothing was changed: {what}"),
        )
    }
}

pub use dcc_shared::api::{ErrorBody, ErrorDetail};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_string(),
                message: self.message,
                field: self.field,
            },
            job_id: self.job_id,
        };
        let mut resp = (self.code.status(), Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::Json(m) => ApiError::new(Code::InvalidJson, m),
            SpecError::Invalid { field, message } => ApiError {
                field,
                ..ApiError::new(Code::InvalidJob, message)
            },
            SpecError::TooLarge { field, message } => ApiError {
                field,
                ..ApiError::new(Code::TooLarge, message)
            },
            SpecError::Unschedulable { field, message } => ApiError {
                field,
                ..ApiError::new(Code::Unschedulable, message)
            },
        }
    }
}

impl From<dcc_shared::Error> for ApiError {
    fn from(e: dcc_shared::Error) -> Self {
        if let dcc_shared::Error::NotDurable { .. } = e {
            return ApiError::not_durable(None, &e);
        }
        if e.is_unavailable() {
            crate::telemetry::redis_error();
            tracing::warn!(error = %e, "backing service unavailable");
            return ApiError::unavailable(e);
        }
        tracing::error!(error = %e, "internal error");
        ApiError::new(Code::Internal, "an internal error occurred; see the server log")
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::TooLarge { limit } => {
                ApiError::new(Code::TooLarge, format!("an input is over the {limit} byte limit"))
            }
            StorageError::Full { what } => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    Code::Busy,
                    format!("the server is busy, nothing was changed: {what}; retry later"),
                )
            },
            StorageError::Source(e) => {
                ApiError::new(Code::InvalidRequest, format!("reading the request body failed: {e}"))
            }
            other => dcc_shared::Error::from(other).into(),
        }
    }
}
