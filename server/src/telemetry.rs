//! What the API server tells operators: a request id on every request (taken from the client's
//! `x-request-id` or made up, echoed in the response, and on every log line of the request),
//! one access-log line per request, and Prometheus metrics (`GET /metrics`).
//!
//! Metrics: `dcc_http_request_duration_seconds{route,method,status}` (histogram);
//! `dcc_jobs_queued`, `dcc_jobs_running`, `dcc_queue_oldest_age_seconds` `{queue}` and
//! `dcc_workers{health}` and `dcc_warm_containers` (read from Redis at scrape time); `dcc_jobs_finished_total{state}`,
//! `dcc_job_queue_wait_seconds` and `dcc_job_run_seconds` (histograms), from the job events this
//! process saw since it started (every server sees every job's events: scrape one, or use `max`);
//! `dcc_redis_errors_total`; `dcc_webhook_deliveries_total{result}` (`delivered`, `retry`,
//! `failed`: the POSTs this process made) and `dcc_webhook_outbox` (deliveries not yet settled,
//! read at scrape time).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dcc_shared::clock::now_ms;
use dcc_shared::events::{Event, Events};
use dcc_shared::job::{JobId, QueueName};
use dcc_shared::queue::Queue;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;

use crate::state::AppState;

/// Histogram buckets in seconds: from a fast API call to an hour-long job.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// The process's metrics recorder (installed once).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        // Histograms with buckets (not summaries): they aggregate across servers in Prometheus.
        let builder = builder
            .set_buckets(BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        builder
            .install_recorder()
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
    })
}

/// Counts a Redis failure (called where the API answers 503 for one).
pub fn redis_error() {
    metrics::counter!("dcc_redis_errors_total").increment(1);
}

/// A usable client-given request id: short, visible ASCII.
fn valid_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// Outermost middleware: request id, span, access log.
pub async fn request_id(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_id(v))
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.in_scope(|| tracing::info!(status, latency_ms = start.elapsed().as_secs_f64() * 1000.0, "request"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Route-level middleware: the latency histogram, labelled by the route's pattern (bounded).
pub async fn latency(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().to_string();
    let resp = next.run(req).await;
    metrics::histogram!("dcc_http_request_duration_seconds",
        "route" => route, "method" => method, "status" => resp.status().as_u16().to_string())
    .record(start.elapsed().as_secs_f64());
    resp
}

/// Counts finished jobs and their timings from the event stream, for as long as the process runs.
/// A recorded result's event carries the timings; a job ended otherwise (cancelled, reaped: rare)
/// has its record read.
pub fn spawn_job_metrics(queue: Queue, events: &Events) {
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        loop {
            let ev = match rx.recv().await {
                Ok(Event::Job(ev)) => ev,
                Ok(Event::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let Some(ended) = ev.status.ended() else { continue };
            metrics::counter!("dcc_jobs_finished_total", "state" => ended.as_str()).increment(1);
            if let Some(run) = ev.ended {
                record_timings(run.queue, run.wait_ms, Some(run.run_ms));
                continue;
            }
            let Ok(id) = JobId::parse(&ev.job_id) else { continue };
            if let Ok(Some(job)) = queue.get(&id).await {
                let wait = job.started_ms.map(|started| started - job.created_ms);
                record_timings(job.queue, wait, job.stats.as_ref().map(|s| s.run_ms));
            }
        }
    });
}

/// The queue wait and run time of one ended job.
fn record_timings(queue: QueueName, wait_ms: Option<i64>, run_ms: Option<u64>) {
    let q = queue.as_str();
    if let Some(wait) = wait_ms {
        metrics::histogram!("dcc_job_queue_wait_seconds", "queue" => q).record(wait.max(0) as f64 / 1000.0);
    }
    if let Some(run) = run_ms {
        metrics::histogram!("dcc_job_run_seconds", "queue" => q).record(run as f64 / 1000.0);
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "fleet", operation_id = "metrics", summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.queue.depths(now_ms()).await {
        Ok(depths) => {
            for (q, d) in depths {
                let q = q.as_str();
                metrics::gauge!("dcc_jobs_queued", "queue" => q).set((d.queued + d.fast_queued) as f64);
                metrics::gauge!("dcc_jobs_running", "queue" => q).set(d.running as f64);
                metrics::gauge!("dcc_queue_oldest_age_seconds", "queue" => q)
                    .set(d.oldest_queued_age_ms as f64 / 1000.0);
            }
        }
        Err(_) => redis_error(),
    }
    match state.queue.tenants_active().await {
        Ok(tenants) => {
            for (t, active, fast) in tenants {
                metrics::gauge!("dcc_tenant_jobs_active", "tenant" => t.clone()).set(active as f64);
                metrics::gauge!("dcc_tenant_fast_jobs_active", "tenant" => t).set(fast as f64);
            }
        }
        Err(_) => redis_error(),
    }
    match state.queue.outbox_len().await {
        Ok(n) => metrics::gauge!("dcc_webhook_outbox").set(n as f64),
        Err(_) => redis_error(),
    }
    match state.queue.workers().await {
        Ok(workers) => {
            for h in ["HEALTHY", "UNHEALTHY", "DRAINING"] {
                let n = workers.iter().filter(|w| w.health.as_str() == h).count();
                metrics::gauge!("dcc_workers", "health" => h).set(n as f64);
            }
            let warm: u32 = workers.iter().map(|w| w.warm_containers).sum();
            metrics::gauge!("dcc_warm_containers").set(f64::from(warm));
        }
        Err(_) => redis_error(),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        handle().render(),
    )
        .into_response()
}
