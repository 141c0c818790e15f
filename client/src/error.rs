//! What a call to the v1 API can fail with.

use dcc_shared::api::ErrorBody;
use http::StatusCode;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server said no, in the contract's words: a status and an error body with its stable
    /// code (`NOT_FOUND`, `WAIT_TIMEOUT`, …).
    #[error("{} {}{}: {}", status.as_u16(), body.error.code, field_note(&body.error.field), body.error.message)]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The error body.
        body: ErrorBody,
        /// Its `Retry-After` in seconds (429 RATE_LIMITED, 503 NO_WORKER, NOT_DURABLE …).
        retry_after: Option<u32>,
    },
    /// An answer that is not the contract's: a proxy's error page, a body that is not the
    /// expected JSON. Nothing is known of what happened to the request.
    #[error("unexpected answer ({}): {why}", status.as_u16())]
    Unexpected {
        /// The HTTP status.
        status: StatusCode,
        /// What was wrong with it (the start of its text, or the decoding error).
        why: String,
    },
    /// No answer: the server could not be reached, or the connection broke.
    #[error("cannot reach the DCC server{}: {why}", at.as_deref().map(|a| format!(" at {a}")).unwrap_or_default())]
    Transport {
        /// The server's address, when the transport has one.
        at: Option<String>,
        /// What failed.
        why: String,
    },
}

fn field_note(field: &Option<String>) -> String {
    field.as_deref().map(|f| format!(" ({f})")).unwrap_or_default()
}

impl Error {
    /// The contract's error code of an [`Error::Api`] answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }

    /// Whether this is the contract's answer with `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code() == Some(code)
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } | Error::Unexpected { status, .. } => Some(*status),
            Error::Transport { .. } => None,
        }
    }

    /// The job an error answer names (`WAIT_TIMEOUT`, `NOT_DURABLE`).
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => body.job_id.as_deref(),
            _ => None,
        }
    }

    /// The answer's `Retry-After`, in seconds.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
