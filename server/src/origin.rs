//! Browser safety: a web page the user happens to visit must not drive DCC through the user's
//! browser (a keyless stack on a developer's machine, or a browser holding a key).
//!
//! - A request carrying an `Origin` that is neither this server's own (the dashboard) nor listed
//!   in `DCC_ALLOWED_ORIGINS` may not change state: every method but GET/HEAD, the WebSocket
//!   upgrades (browsers do not apply CORS to WebSockets) and every method of the 2018 routes
//!   (which run `deleteAllJobs` or `submitJobJson` on GET, as 2018 did) get
//!   `403 ORIGIN_NOT_ALLOWED`. So does such a request without `Origin` that `Sec-Fetch-Site`
//!   marks as sent by another site (an `<img>`, a link: no `Origin` on those).
//! - Listed origins get CORS: preflights are answered, answers carry `Access-Control-Allow-Origin`.
//! - JSON bodies must say `Content-Type: application/json` (see `submit`), which a cross-site
//!   form or a `text/plain` fetch cannot send without a preflight.
//!
//! Requests without `Origin` (curl, the CLI, other services) are not browsers' and pass.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// The middleware.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let listed = origin
        .as_ref()
        .is_some_and(|o| state.config.allowed_origins.iter().any(|a| a == o));
    if let Some(o) = &origin
        && req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(o, listed);
    }
    if changes_state(&req) && !allowed(&req, origin.as_deref(), listed) {
        return match &origin {
            Some(o) => refused(o),
            None => ApiError::new(
                Code::OriginNotAllowed,
                "a page of another site (Sec-Fetch-Site) may not change anything here; use the API from the server's own page, a listed origin (DCC_ALLOWED_ORIGINS) or outside a browser",
            ),
        }
        .into_response();
    }
    let mut resp = next.run(req).await;
    if listed && let Some(v) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

/// Whether a request may change state: every method but GET/HEAD; a WebSocket upgrade (`/api/v1/ws`,
/// and 2018's on `/`); and every method of the 2018 routes that run methods on GET.
fn changes_state(req: &Request) -> bool {
    let path = req.uri().path();
    !matches!(*req.method(), Method::GET | Method::HEAD)
        || path == "/api/v1/ws"
        || (path == "/" && crate::compat::ws2018::is_upgrade(req))
        || crate::compat::runs_methods_on_get(path)
}

/// Whether a state-changing request comes from a page allowed to send it. With `Origin`: the
/// server's own or a listed one. Without (an `<img>`, a link, a no-cors GET: browsers send
/// `Origin` only with CORS requests and non-GET methods): not when `Sec-Fetch-Site` says another
/// site sent it; clients that are not browsers send neither and pass.
fn allowed(req: &Request, origin: Option<&str>, listed: bool) -> bool {
    match origin {
        Some(o) => listed || same_origin(req.headers(), o),
        None => !matches!(
            req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()),
            Some("cross-site" | "same-site")
        ),
    }
}

/// Whether `origin` is this server itself (`scheme://` + the request's `Host`).
fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

fn refused(origin: &str) -> ApiError {
    ApiError::new(
        Code::OriginNotAllowed,
        format!(
            "requests from the web origin {origin:?} may not change anything here; an operator can allow it with DCC_ALLOWED_ORIGINS"
        ),
    )
}

fn preflight(origin: &str, listed: bool) -> Response {
    let v = match HeaderValue::from_str(origin) {
        Ok(v) if listed => v,
        _ => return refused(origin).into_response(),
    };
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE_SECS.into());
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_is_scheme_and_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h, "http://127.0.0.1:8080"));
        assert!(same_origin(&h, "https://127.0.0.1:8080"));
        assert!(!same_origin(&h, "http://127.0.0.1:8081"));
        assert!(!same_origin(&h, "http://evil.example"));
        assert!(!same_origin(&h, "null"));
    }
}
