//! Who may do what. With API keys configured (`DCC_API_KEYS`, `DCC_API_KEYS_FILE`), every route
//! but `/healthz`, `/readyz`, 2018's probes (`/healthcheck`, `/ready`, `/checks`) and the dashboard
//! page needs `Authorization: Bearer <key>`; the key
//! names a tenant and a role (see [`crate::tenants`]). What each role may call is decided here, in
//! one place; which jobs it sees (its own tenant's) is decided where jobs are loaded. Without
//! keys every caller is the local admin.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, Code};
use crate::state::AppState;
use crate::tenants::{Principal, Role};

/// The key a request presents.
fn presented(req: &Request) -> Option<String> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(String::from)
        // Browsers cannot set headers on a WebSocket: it may carry the key as `?access_token=`
        // (on `/` too: the 2018 WebSocket).
        .or_else(|| {
            matches!(req.uri().path(), "/api/v1/ws" | "/")
                .then(|| req.uri().query().unwrap_or_default())
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
                .map(String::from)
        })
}

/// Whether `role` may call `method path` at all (ownership of jobs is checked later).
pub fn permits(role: Role, method: &Method, path: &str) -> bool {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if crate::compat::is_adapter_path(path) {
        // The 2018 adapter's calls are checked per v1 request it makes on the caller's behalf.
        return true;
    }
    let fleet_change = path.starts_with("/api/v1/workers/") && !reads;
    // Metrics name every tenant and count the whole fleet: operators only.
    let admin_only = fleet_change || path == "/metrics";
    match role {
        Role::Admin => true,
        Role::Submit => !admin_only,
        Role::Read => reads && !admin_only,
    }
}

/// The middleware: resolves the caller into a [`Principal`] (a request extension) and refuses
/// what its role may not do.
pub async fn require_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = matches!(path, "/healthz" | "/readyz" | "/") || crate::compat::PUBLIC_PROBES.contains(&path);
    let principal = if let Some(p) = req.extensions().get::<Principal>() {
        // Set by the 2018 adapter on a v1 request it makes for its caller (a request from the
        // network never carries one).
        p.clone()
    } else if !state.keys.enabled() {
        Principal::local()
    } else {
        match presented(&req).and_then(|k| state.keys.find(&k)) {
            Some(p) => p,
            None if public => return next.run(req).await,
            None => {
                let mut r = ApiError::new(
                    Code::Unauthorized,
                    "this server needs an API key: send `Authorization: Bearer <key>`",
                )
                .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                return r;
            }
        }
    };
    if !permits(principal.role, req.method(), req.uri().path()) {
        return ApiError::new(
            Code::Forbidden,
            format!(
                "the key of {:?} has the role {:?}, which may not {} {}",
                principal.tenant,
                principal.role,
                req.method(),
                req.uri().path()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_permit_what_they_say() {
        let post = Method::POST;
        let get = Method::GET;
        assert!(permits(Role::Admin, &post, "/api/v1/workers/w1/drain"));
        assert!(!permits(Role::Submit, &post, "/api/v1/workers/w1/drain"));
        assert!(!permits(Role::Submit, &post, "/api/v1/workers/w1/undrain"));
        assert!(permits(Role::Submit, &post, "/api/v1/jobs"));
        assert!(permits(Role::Submit, &Method::DELETE, "/api/v1/jobs/x"));
        assert!(permits(Role::Read, &get, "/api/v1/jobs/x"));
        assert!(permits(Role::Read, &get, "/api/v1/ws"));
        assert!(!permits(Role::Read, &post, "/api/v1/jobs"));
        assert!(!permits(Role::Read, &post, "/api/v1/jobs/x/cancel"));
        assert!(!permits(Role::Read, &post, "/api/v1/run"));
        assert!(!permits(Role::Submit, &get, "/metrics") && permits(Role::Admin, &get, "/metrics"));
    }
}
