//! The adapter's way into DCC: the typed v1 client ([`dcc_client::Client`]) over a transport
//! that calls the same router in-process, on behalf of the caller. Every 2018 call is thus
//! answered by the v1 handlers with their checks: the caller's key and role, its tenant's jobs
//! only, rate and quota, validation, limits.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use dcc_client::{Body, Reply, Transport};
use futures_util::TryStreamExt;
use serde_json::json;
use tower::ServiceExt;

use super::envelope::RpcError;
use crate::state::AppState;
use crate::tenants::Principal;

pub use dcc_client::{Error as V1Error, job_path};

impl From<V1Error> for RpcError {
    /// As the 2018 server did: the HTTP status is the JSON-RPC code, so a client sees the same
    /// status on the wire; `data` is the v1 error (its stable code, field and job id).
    fn from(e: V1Error) -> Self {
        match e {
            V1Error::Api {
                status,
                body,
                retry_after,
            } => {
                let mut data = serde_json::to_value(&body.error).unwrap_or_default();
                if let Some(id) = body.job_id {
                    data["jobId"] = json!(id);
                }
                RpcError {
                    retry_after,
                    ..RpcError::http(status, body.error.message).with_data(data)
                }
            }
            V1Error::Unexpected { status, why } => RpcError::http(status, why),
            e @ V1Error::Transport { .. } => RpcError::http(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

/// Requests sent through this server's own v1 router, as one caller.
#[derive(Clone)]
pub struct InProcess {
    state: AppState,
    who: Principal,
}

impl Transport for InProcess {
    async fn send(&self, req: axum::http::Request<Body>) -> Result<Reply, V1Error> {
        let (parts, body) = req.into_parts();
        let body = match body {
            Body::Empty => axum::body::Body::empty(),
            Body::Bytes(b) => axum::body::Body::from(b),
            Body::Stream(s) => axum::body::Body::from_stream(s),
        };
        let mut req = Request::from_parts(parts, body);
        // The auth middleware takes a principal already on the request as the caller: only
        // code in this process can put one there.
        req.extensions_mut().insert(self.who.clone());
        let router = self
            .state
            .v1_router
            .get_or_init(|| crate::app::router(self.state.clone()))
            .clone();
        let resp = match router.oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = resp.into_parts();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: Box::pin(body.into_data_stream().map_err(std::io::Error::other)),
        })
    }
}

/// The v1 API as one caller sees it.
#[derive(Clone)]
pub struct V1 {
    client: dcc_client::Client<InProcess>,
    /// The caller, resolved by the auth middleware of the 2018 request.
    pub who: Principal,
    /// `scheme://host` of the 2018 request: the 2018 API answered absolute URLs.
    pub base: String,
}

impl std::ops::Deref for V1 {
    type Target = dcc_client::Client<InProcess>;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
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
            client: dcc_client::Client::new(InProcess {
                state,
                who: who.clone(),
            }),
            who,
            base: format!("{scheme}://{host}"),
        }
    }

    /// The server's state.
    pub fn state(&self) -> &AppState {
        &self.client.transport().state
    }

    /// An absolute URL of a v1 path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}
