//! The API as OpenAPI 3.1, served at `GET /api/v1/openapi.json`. Nothing here is written by
//! hand: operations come from the `#[utoipa::path]` attribute on each handler and schemas from
//! the request/answer types the handlers really parse and serialize (`ToSchema` derives). A unit
//! test checks that the document's operations are exactly the routes the router serves
//! ([`crate::app::api_routes`]), so neither can gain a route the other lacks. Schemathesis fuzzes
//! the served API against it in the test suite.

use std::sync::OnceLock;

use axum::extract::State;
use dcc_shared::job::Limits;
use dcc_shared::job::spec::{MAX_INPUTS, MIN_CPUS, MIN_MEMORY_MB};
use serde_json::{Value, json};
use utoipa::OpenApi;

use crate::routes::{array, files, fleet, jobs, run, stats, ws};
use crate::state::AppState;
use crate::{app, submit, telemetry};

/// The generated document, before the additions of [`spec`].
#[derive(OpenApi)]
#[openapi(
    info(title = "DCC API", version = "1",
        description = "Redis-backed distributed container job queue. Guide: docs/api.md."),
    paths(
        submit::submit, jobs::list, jobs::view, jobs::delete, jobs::wait_for, jobs::cancel, array::children,
        files::stdout, files::stderr, files::output, run::run, ws::ws,
        fleet::queues, fleet::workers, stats::stats, fleet::drain, fleet::undrain, fleet::healthz, fleet::readyz,
        telemetry::metrics, serve, app::dashboard,
    ),
    tags(
        (name = "jobs", description = "Submit, follow and manage jobs"),
        (name = "live", description = "Live status"),
        (name = "fleet", description = "Queues, workers, health and metrics"),
    )
)]
struct ApiDoc;

/// Routes that answer without an API key (probes and the dashboard page, which holds no data).
const OPEN_ROUTES: &[&str] = &["/healthz", "/"];

/// The document: the generated one plus what every route shares, added in one place rather than
/// repeated on each handler: the bearer scheme, the 401 and 503 answers any keyed route can give
/// (an API key missing; Redis or storage unreachable), and the bounds of `parameters` this server
/// enforces (they come from its configuration, so they cannot be constants in an attribute).
pub fn spec(limits: &Limits) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes");
    doc["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    doc["security"] = json!([{"bearer": []}, {}]);
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, ops) in paths.iter_mut() {
            if OPEN_ROUTES.contains(&path.as_str()) {
                continue;
            }
            for op in ops.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let responses = &mut op["responses"];
                responses["401"] = json!({"description": "UNAUTHORIZED: API keys are configured and the request has none or a wrong one", "content": error});
                if path != "/api/v1/ws" {
                    responses["503"] = json!({"description": "UNAVAILABLE: Redis or storage unreachable; nothing was changed", "content": error});
                }
            }
        }
    }
    let params = &mut doc["components"]["schemas"]["ParametersRequest"]["properties"];
    for (field, min, max) in [
        ("cpus", json!(MIN_CPUS), json!(limits.max_cpus)),
        ("memoryMb", json!(MIN_MEMORY_MB), json!(limits.max_memory_mb)),
        ("gpus", json!(0), json!(limits.max_gpus)),
        ("maxDurationSecs", json!(1), json!(limits.max_duration_secs)),
        ("maxAttempts", json!(1), json!(limits.max_attempts)),
    ] {
        params[field]["minimum"] = min;
        params[field]["maximum"] = max;
    }
    doc["components"]["schemas"]["JobRequest"]["properties"]["inputs"]["maxItems"] = json!(MAX_INPUTS);
    doc
}

/// Built on first use: the document never changes while the process runs.
static SPEC: OnceLock<Value> = OnceLock::new();

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "fleet", operation_id = "openapi", summary = "This OpenAPI document",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub async fn serve(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(SPEC.get_or_init(|| spec(&state.config.limits)).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_exactly_the_routes_the_router_serves() {
        let s = spec(&limits());
        let mut documented: Vec<(String, String)> = Vec::new();
        for (p, ops) in s["paths"].as_object().unwrap() {
            for m in ops.as_object().unwrap().keys() {
                documented.push((m.clone(), p.clone()));
            }
        }
        documented.sort();
        let mut served = app::api_routes().served();
        served.sort();
        assert_eq!(documented, served);
    }

    #[test]
    fn schemas_come_from_the_types() {
        let s = spec(&limits());
        let schemas = &s["components"]["schemas"];
        // The request schema is the parser's: unknown fields are refused by both.
        assert_eq!(schemas["JobRequest"]["additionalProperties"], json!(false));
        assert_eq!(schemas["JobRequest"]["required"], json!(["image"]));
        for name in [
            "JobView",
            "ErrorBody",
            "SubmitAnswer",
            "FastAnswer",
            "JobList",
            "Queues",
            "Workers",
        ] {
            assert!(schemas[name].is_object(), "{name} missing");
        }
        let view = &schemas["JobView"]["properties"];
        for field in [
            "jobId",
            "status",
            "queue",
            "attempt",
            "createdAt",
            "stdoutUrl",
            "outputs",
            "stats",
        ] {
            assert!(view[field].is_object(), "JobView.{field} missing");
        }
        // The configured bounds are the ones stated.
        let cpus = &schemas["ParametersRequest"]["properties"]["cpus"];
        assert_eq!(
            (cpus["minimum"].as_f64(), cpus["maximum"].as_f64()),
            (Some(MIN_CPUS), Some(3.0))
        );
    }

    fn limits() -> Limits {
        Limits {
            max_cpus: 3.0,
            ..dcc_shared::config::Config::from_lookup(|_| None).unwrap().limits
        }
    }
}
