//! Optional API keys. With `DCC_API_KEYS` set, every route but `/healthz`, `/readyz` and the
//! dashboard page needs
//! `Authorization: Bearer <key>`. Keys are compared as SHA-256 digests with a constant-time
//! equality, so neither the content nor the length of a key leaks through timing.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Equality of two digests whose time does not depend on where they differ.
fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// True when `presented` matches one of `keys` (every key is compared, match or not).
pub fn key_matches(keys: &[String], presented: &str) -> bool {
    let p = digest(presented);
    keys.iter().fold(false, |ok, k| ok | digest_eq(&digest(k), &p))
}

/// The middleware.
pub async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.config.api_keys;
    // The dashboard page holds no data (its script asks the user for the key); /healthz and
    // /readyz are for probes (a load balancer's health check sends no key), and say nothing
    // about jobs.
    if keys.is_empty() || matches!(req.uri().path(), "/healthz" | "/readyz" | "/") {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(String::from)
        // Browsers cannot set headers on a WebSocket: it may carry the key as `?access_token=`.
        .or_else(|| {
            (req.uri().path() == "/api/v1/ws")
                .then(|| req.uri().query().unwrap_or_default())
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
                .map(String::from)
        });
    match presented {
        Some(k) if key_matches(keys, &k) => next.run(req).await,
        _ => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "this server needs an API key: send `Authorization: Bearer <key>`",
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_configured_keys() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert!(key_matches(&keys, "beta"));
        assert!(!key_matches(&keys, "gamma"));
        assert!(!key_matches(&keys, ""));
        assert!(!key_matches(&keys, "alph"));
    }
}
