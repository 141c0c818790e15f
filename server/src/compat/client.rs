//! The adapter's way into DCC: requests to the v1 API, made in-process through the same router,
//! on behalf of the caller. Every 2018 call is thus answered by the v1 handlers with their
//! checks: the caller's key and role, its tenant's jobs only, rate and quota, validation, limits.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

use super::envelope::RpcError;
use crate::state::AppState;
use crate::tenants::Principal;

/// A v1 error answer: its status and its body (`{"error": {"code", "message", …}, "jobId"?}`).
#[derive(Debug)]
pub struct V1Error {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Value,
    /// Its `Retry-After` in seconds (429 RATE_LIMITED, 503 NO_WORKER…), carried to the 2018
    /// answer.
    pub retry_after: Option<u32>,
}

impl V1Error {
    /// The v1 error code (`NOT_FOUND`, `INVALID_JOB`, …).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl From<V1Error> for RpcError {
    /// As the 2018 server did: the HTTP status is the JSON-RPC code, so a client sees the same
    /// status on the wire; `data` is the v1 error (its stable code, field and job id).
    fn from(e: V1Error) -> Self {
        let message = e.body["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| e.body.to_string());
        let mut data = e.body["error"].clone();
        if let Some(id) = e.body.get("jobId") {
            data["jobId"] = id.clone();
        }
        RpcError {
            retry_after: e.retry_after,
            ..RpcError::http(e.status, message).with_data(data)
        }
    }
}

/// The v1 API as one caller sees it.
#[derive(Clone)]
pub struct V1 {
    state: AppState,
    /// The caller, resolved by the auth middleware of the 2018 request.
    pub who: Principal,
    /// `scheme://host` of the 2018 request: the 2018 API answered absolute URLs.
    pub base: String,
}

impl V1 {
    /// The v1 API for the caller of a request with these headers.
    pub fn new(state: AppState, who: Principal, headers: &HeaderMap) -> Self {
        let host = headers
            .get("x-forwarded-host")
            .or_else(|| headers.get(header::HOST))
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .filter(|s| *s == "https")
            .unwrap_or("http");
        V1 {
            state,
            who,
            base: format!("{scheme}://{host}"),
        }
    }

    /// The server's state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// An absolute URL of a v1 path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `req` through the API as the caller; the body as JSON (a non-JSON body as a string).
    pub async fn send(&self, req: Request) -> Result<(StatusCode, Value), V1Error> {
        let (status, retry_after, bytes) = self.send_raw(req).await;
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            Ok((status, body))
        } else {
            Err(V1Error {
                status,
                body,
                retry_after,
            })
        }
    }

    /// Sends `req` through the API as the caller; the status, `Retry-After` and the body's bytes.
    async fn send_raw(&self, req: Request) -> (StatusCode, Option<u32>, bytes::Bytes) {
        let resp = self.respond(req).await;
        let status = resp.status();
        let retry_after = retry_after(&resp);
        (
            status,
            retry_after,
            axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap_or_default(),
        )
    }

    /// Sends `req` through the API as the caller.
    async fn respond(&self, mut req: Request) -> Response {
        // The auth middleware takes a principal already on the request as the caller: only
        // code in this process can put one there.
        req.extensions_mut().insert(self.who.clone());
        let router = self
            .state
            .v1_router
            .get_or_init(|| crate::app::router(self.state.clone()))
            .clone();
        match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// `method path` with an optional JSON body.
    pub async fn call(&self, method: Method, path: &str, json: Option<&Value>) -> Result<(StatusCode, Value), V1Error> {
        let mut b = Request::builder().method(method).uri(path);
        let body = match json {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(b.body(body).expect("a valid request")).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, V1Error> {
        self.call(Method::GET, path, None).await.map(|(_, v)| v)
    }

    /// The job view of `id`.
    pub async fn job(&self, id: &str) -> Result<Value, V1Error> {
        self.get(&job_path(id, "")).await
    }

    /// The first `max` bytes of a job's log (`stdout` or `stderr`) as text, cut after its last
    /// whole line (invalid UTF-8 replaced), and whether the log went on. The rest is not read.
    pub async fn log_head(&self, id: &str, stream: &str, max: usize) -> Result<(String, bool), V1Error> {
        let req = Request::get(job_path(id, &format!("/{stream}")))
            .body(Body::empty())
            .expect("a valid request");
        let resp = self.respond(req).await;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = retry_after(&resp);
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(V1Error {
                status,
                body,
                retry_after,
            });
        }
        let size = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let mut buf = Vec::with_capacity(size.unwrap_or(0).min(max));
        let mut data = resp.into_body().into_data_stream();
        let mut cut = false;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| V1Error {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: serde_json::json!({"error": {"code": "UNAVAILABLE", "message": format!("reading the {stream} of {id} failed: {e}")}}),
                retry_after: None,
            })?;
            let room = max - buf.len();
            if chunk.len() > room {
                buf.extend_from_slice(&chunk[..room]);
                cut = true;
                break;
            }
            buf.extend_from_slice(&chunk);
        }
        if cut && let Some(end) = buf.iter().rposition(|b| *b == b'\n') {
            buf.truncate(end + 1);
        }
        // Valid UTF-8 (the usual case) becomes the text without a copy.
        let text = String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok((text, cut))
    }
}

/// The seconds of an answer's `Retry-After` (v1 sends seconds, never a date).
fn retry_after(resp: &Response) -> Option<u32> {
    resp.headers().get(header::RETRY_AFTER)?.to_str().ok()?.parse().ok()
}

/// The v1 path of job `id` followed by `rest` (the id percent-encoded: it came from a client).
pub fn job_path(id: &str, rest: &str) -> String {
    format!("/api/v1/jobs/{}{rest}", encoded(id))
}

/// Everything but RFC 3986's unreserved characters (job ids keep their `-`, `.`, `_`).
const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` percent-encoded for a path segment or a query value.
pub fn encoded(text: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(text, RESERVED)
}
