//! The DCC HTTP API (`api-v1`): jobs, files, waits and the fleet views, over axum.
//!
//! # Layout
//! - [`state`]: what every handler shares (queue, storage, events, configuration).
//! - [`error`]: the contract's error body and codes.
//! - [`openapi`]: the OpenAPI document, generated from the handlers and their types (utoipa).
//! - [`auth`]: optional API keys (`DCC_API_KEYS`), compared in constant time.
//! - [`submit`]: JSON and multipart submission, input staging, the same-id rule.
//! - [`wait`]: blocking until a job ends (long-poll, `wait: true`).
//! - [`availability`]: whether anything live can run a job (answered before a client waits).
//! - [`finished`]: ended jobs' records, read once per process for every waiter.
//! - [`tenants`]: who is calling: named keys, roles, rate and quota per tenant.
//! - [`telemetry`]: request ids, access logs, Prometheus metrics.
//! - [`origin`], [`host`]: browser safety (foreign origins, DNS rebinding).
//! - [`egress`]: where `url` inputs and webhooks may connect (the SSRF guard).
//! - [`webhook`]: sending completion webhooks from the outbox, signed.
//! - [`history`]: the fleet sampled into the history (`GET /api/v1/stats`).
//! - [`routes`]: the handlers, one module per resource.
//! - [`compat`]: the 2018 JSON-RPC API and WebSocket, as an adapter over v1.
//! - [`app`]: the router, and running server and worker in one process.
//! - [`cli`]: the client commands of `dcc` (submit, run, status, logs, …), on `dcc-client`.

pub mod app;
pub mod auth;
pub mod availability;
pub mod cli;
pub mod compat;
pub mod egress;
pub mod error;
pub mod finished;
pub mod history;
pub mod host;
pub mod openapi;
pub mod origin;
pub mod routes;
pub mod state;
pub mod submit;
pub mod telemetry;
pub mod tenants;
pub mod wait;
pub mod webhook;

pub use app::router;
pub use state::AppState;
