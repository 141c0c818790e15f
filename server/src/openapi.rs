//! The API as OpenAPI 3.0, served at `GET /api/v1/openapi.json`. It is written here, beside the
//! router, from the same route table ([`ROUTES`]): a unit test checks that every route of the table
//! is documented and nothing else is, and the e2e suite checks that every route of the table is
//! served, so the document cannot drift from the router unnoticed. Schemathesis fuzzes the served
//! API against it in the test suite.

use serde_json::{Value, json};

/// Every route the router serves: (method, OpenAPI path).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/jobs"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("delete", "/api/v1/jobs/{id}"),
    ("get", "/api/v1/jobs/{id}/wait"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("get", "/api/v1/jobs/{id}/stdout"),
    ("get", "/api/v1/jobs/{id}/stderr"),
    ("get", "/api/v1/jobs/{id}/outputs/{path}"),
    ("post", "/api/v1/run"),
    ("get", "/api/v1/ws"),
    ("get", "/api/v1/queues"),
    ("get", "/api/v1/workers"),
    ("post", "/api/v1/workers/{id}/drain"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/"),
];

fn err(desc: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(desc: &str, schema: &str) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

/// The document.
pub fn spec() -> Value {
    let common = |mut responses: serde_json::Map<String, Value>| {
        responses.insert(
            "401".into(),
            err("API keys are configured and the request has none or a wrong one (UNAUTHORIZED)"),
        );
        responses.insert("503".into(), err("Redis or storage unreachable (UNAVAILABLE)"));
        Value::Object(responses)
    };
    let r = |pairs: Vec<(&str, Value)>| {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<serde_json::Map<_, _>>()
    };
    let text = |d: &str| json!({"description": d, "content": {"text/plain": {"schema": {"type": "string"}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "DCC API", "version": "1", "description": "Redis-backed distributed container job queue. See docs/api.md."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            "/api/v1/jobs": {
                "post": {"summary": "Submit a job", "operationId": "submitJob",
                    "requestBody": {"required": true, "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
                        "multipart/form-data": {"schema": {"type": "object", "required": ["job"], "properties": {"job": {"type": "string", "description": "the job JSON; every other part is an input file"}}, "additionalProperties": {"type": "string", "format": "binary"}}}}},
                    "responses": common(r(vec![
                        ("201", ok("Queued", "SubmitAnswer")),
                        ("200", json!({"description": "With wait: the ended job; or the same id and definition: the existing job",
                            "content": {"application/json": {"schema": {"anyOf": [
                                {"$ref": "#/components/schemas/JobView"}, {"$ref": "#/components/schemas/SubmitAnswer"}]}}}})),
                        ("400", err("INVALID_JSON, INVALID_JOB, INPUT_FETCH_FAILED or INVALID_REQUEST")),
                        ("409", err("ID_CONFLICT")),
                        ("413", err("TOO_LARGE")),
                        ("504", err("WAIT_TIMEOUT (with wait: true); the body also has jobId")),
                    ]))},
                "get": {"summary": "List jobs, newest first", "operationId": "listJobs",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"$ref": "#/components/schemas/JobState"}},
                        {"name": "queue", "in": "query", "schema": {"type": "string", "enum": ["cpu", "gpu"]}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}}],
                    "responses": common(r(vec![("200", ok("A page", "JobList")), ("400", err("INVALID_REQUEST"))]))},
            },
            "/api/v1/jobs/{id}": {
                "get": {"summary": "A job", "operationId": "getJob", "parameters": [id_param()],
                    "responses": common(r(vec![("200", ok("The job view", "JobView")), ("404", err("NOT_FOUND"))]))},
                "delete": {"summary": "Cancel if needed, then remove every trace", "operationId": "deleteJob", "parameters": [id_param()],
                    "responses": common(r(vec![("204", json!({"description": "Deleted"})), ("404", err("NOT_FOUND"))]))},
            },
            "/api/v1/jobs/{id}/wait": {"get": {"summary": "Long-poll until the job ends", "operationId": "waitJob",
                "parameters": [id_param(), {"name": "timeoutSecs", "in": "query", "schema": {"type": "integer", "minimum": 1}}],
                "responses": common(r(vec![("200", ok("The ended job", "JobView")), ("400", err("INVALID_REQUEST")), ("404", err("NOT_FOUND")), ("504", err("WAIT_TIMEOUT"))]))}},
            "/api/v1/jobs/{id}/cancel": {"post": {"summary": "Cancel a job", "operationId": "cancelJob", "parameters": [id_param()],
                "responses": common(r(vec![("202", ok("Cancelled", "CancelAnswer")), ("200", ok("Had already ended", "CancelAnswer")), ("404", err("NOT_FOUND"))]))}},
            "/api/v1/jobs/{id}/stdout": {"get": {"summary": "stdout so far", "operationId": "stdout", "parameters": [id_param()],
                "responses": common(r(vec![("200", text("The log")), ("302", json!({"description": "Presigned S3 link"})), ("404", err("NOT_FOUND"))]))}},
            "/api/v1/jobs/{id}/stderr": {"get": {"summary": "stderr so far", "operationId": "stderr", "parameters": [id_param()],
                "responses": common(r(vec![("200", text("The log")), ("302", json!({"description": "Presigned S3 link"})), ("404", err("NOT_FOUND"))]))}},
            "/api/v1/jobs/{id}/outputs/{path}": {"get": {"summary": "One output file", "operationId": "output",
                "parameters": [id_param(), {"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": common(r(vec![("200", json!({"description": "The file", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}})), ("302", json!({"description": "Presigned S3 link"})), ("404", err("NOT_FOUND"))]))}},
            "/api/v1/run": {"post": {"summary": "Run a fast job synchronously", "operationId": "runFast",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}}},
                "responses": common(r(vec![("200", ok("The ended job with stdout, stderr and outputs inline", "FastAnswer")), ("400", err("INVALID_JSON or INVALID_JOB")), ("409", err("ID_CONFLICT")), ("413", err("TOO_LARGE")), ("504", err("WAIT_TIMEOUT"))]))}},
            "/api/v1/ws": {"get": {"summary": "WebSocket of job events (see docs/api.md)", "operationId": "websocket",
                "responses": {"101": {"description": "Switching protocols"}, "400": {"description": "Not a WebSocket upgrade"}, "401": err("UNAUTHORIZED")}}},
            "/api/v1/queues": {"get": {"summary": "Queue depths", "operationId": "queues", "responses": common(r(vec![("200", ok("Per queue", "Queues"))]))}},
            "/api/v1/workers": {"get": {"summary": "Live workers", "operationId": "workers", "responses": common(r(vec![("200", ok("Workers", "Workers"))]))}},
            "/api/v1/workers/{id}/drain": {"post": {"summary": "Ask a worker to drain", "operationId": "drainWorker", "parameters": [id_param()],
                "responses": common(r(vec![("202", json!({"description": "Drain requested", "content": {"application/json": {"schema": {"type": "object"}}}})), ("404", err("NOT_FOUND"))]))}},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "responses": common(r(vec![("200", json!({"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}))]))}},
            "/healthz": {"get": {"summary": "The process answers", "operationId": "healthz", "security": [], "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/readyz": {"get": {"summary": "Redis and storage reachable", "operationId": "readyz", "responses": common(r(vec![("200", json!({"description": "Ready", "content": {"application/json": {"schema": {"type": "object"}}}}))]))}},
            "/": {"get": {"summary": "The dashboard (HTML)", "operationId": "dashboard", "security": [], "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "responses": common(r(vec![("200", text("Prometheus text format"))]))}},
        }
    })
}

fn schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}},
            "jobId": {"type": "string"}}},
        "JobState": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]},
        "Input": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 255},
            "value": {"type": "string"}, "url": {"type": "string", "format": "uri"},
            "encoding": {"type": "string", "enum": ["utf8", "base64"]}}},
        "Parameters": {"type": "object", "additionalProperties": false, "properties": {
            "cpus": {"type": "number", "minimum": 0.01, "maximum": 256},
            "memoryMb": {"type": "integer", "minimum": 6},
            "gpus": {"type": "integer", "minimum": 0, "maximum": 16},
            "maxDurationSecs": {"type": "integer", "minimum": 1},
            "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 10},
            "network": {"type": "boolean"}}},
        "JobRequest": {"type": "object", "additionalProperties": false, "required": ["image"], "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
            "image": {"type": "string", "minLength": 1, "maxLength": 512},
            "command": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "workingDir": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/Input"}},
            "parameters": {"$ref": "#/components/schemas/Parameters"},
            "priority": {"type": "string", "enum": ["high", "normal"]},
            "meta": {"type": "object"},
            "wait": {"type": "boolean"}}},
        "SubmitAnswer": {"type": "object", "required": ["jobId", "status", "links"], "properties": {
            "jobId": {"type": "string"}, "status": {"$ref": "#/components/schemas/JobState"}, "links": {"type": "object"}}},
        "CancelAnswer": {"type": "object", "required": ["jobId", "status"], "properties": {
            "jobId": {"type": "string"}, "status": {"$ref": "#/components/schemas/JobState"}}},
        "JobView": {"type": "object", "required": ["jobId", "status", "queue", "attempt", "createdAt", "image", "outputs"], "properties": {
            "jobId": {"type": "string"}, "status": {"$ref": "#/components/schemas/JobState"},
            "queue": {"type": "string", "enum": ["cpu", "gpu"]}, "fast": {"type": "boolean"},
            "attempt": {"type": "integer"}, "maxAttempts": {"type": "integer"},
            "createdAt": {"type": "string"}, "startedAt": {"type": "string", "nullable": true},
            "finishedAt": {"type": "string", "nullable": true}, "exitCode": {"type": "integer", "nullable": true},
            "error": {"type": "object", "nullable": true, "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
            "workerId": {"type": "string", "nullable": true}, "image": {"type": "string"},
            "imageDigest": {"type": "string", "nullable": true}, "stdoutUrl": {"type": "string"}, "stderrUrl": {"type": "string"},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "stats": {"type": "object", "nullable": true}, "meta": {"type": "object"}}},
        "FastAnswer": {"allOf": [{"$ref": "#/components/schemas/JobView"}, {"type": "object", "properties": {
            "stdout": {"type": "string"}, "stderr": {"type": "string"}}}]},
        "JobList": {"type": "object", "required": ["jobs"], "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/JobView"}},
            "nextCursor": {"type": "string", "nullable": true}}},
        "Queue": {"type": "object", "properties": {"queued": {"type": "integer"}, "fastQueued": {"type": "integer"},
            "running": {"type": "integer"}, "oldestQueuedAgeMs": {"type": "integer"}}},
        "Queues": {"type": "object", "properties": {"cpu": {"$ref": "#/components/schemas/Queue"}, "gpu": {"$ref": "#/components/schemas/Queue"}}},
        "Workers": {"type": "object", "required": ["workers"], "properties": {"workers": {"type": "array", "items": {"type": "object"}}}},
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> axum::Json<Value> {
    axum::Json(spec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let s = spec();
        let paths = s["paths"].as_object().unwrap();
        let mut documented = Vec::new();
        for (p, ops) in paths {
            for m in ops.as_object().unwrap().keys() {
                documented.push((m.as_str(), p.as_str()));
            }
        }
        documented.sort();
        let mut routes: Vec<(&str, &str)> = ROUTES.to_vec();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
