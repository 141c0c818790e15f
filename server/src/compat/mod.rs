//! The 2018 API (reference §2–3, `docs/compat.md`) as a thin adapter over v1: JSON-RPC 2.0 on
//! `POST /v1` and `POST /api/rpc` (JSON or multipart), `GET /v1` (the methods), the generated
//! `GET /v1/<method>/<required args…>?<optional args>` and `GET /api/rpc/…` routes,
//! `POST /v1/<method>` (named params as the body), each job's `result.json`, and the 2018
//! WebSocket on `/`. Every call becomes v1 requests made in-process as the caller (see
//! [`client`]); the core knows nothing of 2018.

mod client;
mod envelope;
mod http2018;
mod job2018;
mod methods;
mod result2018;
mod submit2018;
pub mod ws2018;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value};

use self::client::V1;
use self::envelope::{Call, Params, RpcError};
use self::methods::ArgKind;
use crate::state::AppState;

/// The adapter's routes.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1", get(list).post(rpc))
        .route("/api/rpc", get(list).post(rpc))
        .route("/v1/results/{id}/result.json", get(result_json))
        .route("/v1/{*call}", get(rpc_get).post(rpc_named))
        .route("/api/rpc/{*call}", get(rpc_get))
        .route("/healthcheck", get(ready))
        .route("/ready", get(ready))
        .route("/checks", get(|| async { "OK" }))
        .route("/version", get(|| async { env!("CARGO_PKG_VERSION") }))
        .route("/wait", get(http2018::wait))
        .route("/status", get(http2018::status))
        .route("/monitor", get(http2018::monitor))
        .route("/test", get(http2018::monitor))
        .route("/check", get(http2018::monitor))
        .route("/monitor/jobcount", get(http2018::monitor_jobcount))
        // 2018's storage paths of a job's files (`/<jobId>/result.json`, `/<jobId>/outputs/…`).
        .route("/{id}/{*rest}", get(http2018::file_at_path))
}

/// 2018's probes a load balancer, monitor or test runner may still call; they need no key, as
/// `/readyz` (they tell whether the server is up, nothing else).
pub const PUBLIC_PROBES: &[&str] = &["/healthcheck", "/ready", "/checks", "/wait", "/status"];

/// `GET /healthcheck`, `GET /ready`: 200 with an empty body when Redis and storage answer, else
/// 503 (what `/readyz` says, in 2018's form).
async fn ready(state: State<AppState>) -> StatusCode {
    crate::routes::fleet::readyz(state).await.status()
}

/// Whether `path` is one of the adapter's. Its calls are checked per v1 request it makes
/// (a read-only key may `POST /v1` a `job status`, not a `submitJobJson`).
pub fn is_adapter_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/") || path == "/api/rpc" || path.starts_with("/api/rpc/")
}

/// Whether `path` runs 2018 methods on GET (`/v1/<method>/…`, `/api/rpc/<method>/…`), which
/// 2018 clients call for state-changing methods too (`GET /v1/job/kill/<id>`): the Origin guard
/// treats every method there as state-changing (`origin`). The method list and `result.json`
/// only read.
pub fn runs_methods_on_get(path: &str) -> bool {
    (path.starts_with("/v1/") && !path.starts_with("/v1/results/"))
        || path.starts_with("/api/rpc/")
        // The job-running health check submits a job.
        || matches!(path, "/monitor" | "/test" | "/check")
}

fn caller(state: &AppState, req: &Request) -> V1 {
    V1::new(state.clone(), crate::tenants::of(req), req.headers())
}

/// `GET /v1`: the method definitions.
async fn list() -> Json<Value> {
    Json(methods::definitions())
}

/// Runs one call and answers its envelope.
async fn run(v1: &V1, call: Call) -> Response {
    let result = async {
        let m = methods::find(&call.method)?;
        let args = m.named(call.params)?;
        methods::call(v1, m, args).await
    }
    .await;
    envelope::answer(&call.id, result)
}

/// `POST /v1`, `POST /api/rpc`: a JSON-RPC call, or a multipart submission.
async fn rpc(State(state): State<AppState>, req: Request) -> Response {
    let v1 = caller(&state, &req);
    let ct = content_type(&req);
    if ct == "multipart/form-data" {
        let (id, r) = submit2018::multipart(&v1, req).await;
        return envelope::answer(&id, r);
    }
    let body = match json_body(&state, req, &ct).await {
        Ok(b) => b,
        Err(e) => return envelope::answer(&Value::Null, Err(e)),
    };
    match envelope::parse(&body) {
        Ok(call) => run(&v1, call).await,
        Err((id, e)) => envelope::answer(&id, Err(e)),
    }
}

/// `POST /v1/<method>`: the body is the named params.
async fn rpc_named(State(state): State<AppState>, Path(method): Path<String>, req: Request) -> Response {
    let v1 = caller(&state, &req);
    let ct = content_type(&req);
    let body = match json_body(&state, req, &ct).await {
        Ok(b) => b,
        Err(e) => return envelope::answer(&Value::Null, Err(e)),
    };
    let params = match serde_json::from_slice::<Value>(&body) {
        _ if body.iter().all(u8::is_ascii_whitespace) => Params::None,
        Ok(Value::Object(o)) => Params::Named(o),
        Ok(_) => {
            return envelope::answer(
                &Value::Null,
                Err(RpcError::invalid_request(
                    "the body must be a JSON object of named params",
                )),
            );
        }
        Err(e) => return envelope::answer(&Value::Null, Err(RpcError::parse(format!("the body is not JSON: {e}")))),
    };
    run(
        &v1,
        Call {
            id: Value::Null,
            method,
            params,
        },
    )
    .await
}

/// `GET /v1/<method>/<required args…>?<optional args>` (and under `/api/rpc/`): path segments
/// fill the required arguments in order, the query the others by name. Ids stay text; other
/// values are read as JSON where they parse (2018 `JSON.parse`d every one).
async fn rpc_get(
    State(state): State<AppState>,
    Path(call): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let v1 = caller(&state, &req);
    let mut segments = call.split('/').filter(|s| !s.is_empty());
    let name = segments.next().unwrap_or_default().to_string();
    let m = match methods::find(&name) {
        Ok(m) => m,
        Err(e) => return envelope::answer(&Value::Null, Err(e)),
    };
    let mut named = Map::new();
    let mut required = m.args.iter().filter(|a| a.required);
    for s in segments {
        let Some(a) = required.next() else {
            let e = RpcError::invalid_params(format!(
                "{name} takes no further path segment than its required arguments"
            ));
            return envelope::answer(&Value::Null, Err(e));
        };
        named.insert(a.name.into(), read_arg(a.kind, s));
    }
    for (k, v) in query {
        // Path arguments win: `/v1/job/status/x1?command=kill` asks for the status, as its
        // path says (a link must not do what its path does not show).
        if named.contains_key(&k) {
            continue;
        }
        // A query parameter no argument has is refused by `named` below.
        let kind = m.args.iter().find(|a| a.name == k).map_or(ArgKind::Text, |a| a.kind);
        named.insert(k, read_arg(kind, &v));
    }
    run(
        &v1,
        Call {
            id: Value::Null,
            method: name,
            params: Params::Named(named),
        },
    )
    .await
}

fn read_arg(kind: ArgKind, text: &str) -> Value {
    match kind {
        ArgKind::Text => Value::String(text.into()),
        ArgKind::Json => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into())),
    }
}

/// `GET /v1/results/{id}/result.json`: the JobResult itself (2018's `resultJson` URL).
async fn result_json(State(state): State<AppState>, Path(id): Path<String>, req: Request) -> Response {
    result_json_of(&state, &id, req).await
}

/// Job `id`'s JobResult as the caller of `req` may see it; 404 until it ends.
async fn result_json_of(state: &AppState, id: &str, req: Request) -> Response {
    let v1 = caller(state, &req);
    let answer = async {
        let view = methods::view_2018(&v1, id).await?;
        if !result2018::ended(&view) {
            return Err(RpcError::http(
                StatusCode::NOT_FOUND,
                "No result yet: the job has not finished",
            ));
        }
        Ok::<_, RpcError>(result2018::job_result(&v1, &view).await?)
    }
    .await;
    match answer {
        Ok(r) => envelope::json_response(StatusCode::OK, envelope::json_bytes(&r, r.json_len_hint())),
        Err(e) => (e.status(), Json(serde_json::json!({"error": e.message}))).into_response(),
    }
}

/// The request's media type, lower case, without parameters.
fn content_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A JSON body (2018 took `application/json` and `application/json-rpc`), with v1's media type
/// check and size limit.
async fn json_body(state: &AppState, req: Request, ct: &str) -> Result<bytes::Bytes, RpcError> {
    if ct != "application/json-rpc" {
        crate::submit::require_json(&req)?;
    }
    Ok(crate::submit::read_body(state, req).await?)
}
