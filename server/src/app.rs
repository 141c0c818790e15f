//! The router, and starting the pieces of a `dcc` process: API, worker, upkeep.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::routing::{MethodRouter, delete, get, post};
use dcc_shared::config::Config;
use dcc_shared::events::Events;
use dcc_shared::queue::Queue;
use dcc_shared::storage::{self, RedisBlobs, Storage};
use dcc_worker::{Shutdown, Worker, WorkerSettings};

use crate::auth::require_key;
use crate::error::{ApiError, Code};
use crate::routes::{files, fleet, jobs, run, stats, ws};
use crate::state::AppState;
use crate::{submit, telemetry};

/// The API's routes together with a list of what they serve, so the OpenAPI document can be
/// checked against what is really routed (see `openapi`'s tests).
pub struct Routes {
    /// The routes, before layers and state.
    router: Router<AppState>,
    /// (method, path) of every route, in axum's path syntax.
    served: Vec<(&'static str, &'static str)>,
}

impl Routes {
    fn add(mut self, method: &'static str, path: &'static str, route: MethodRouter<AppState>) -> Self {
        self.served.push((method, path));
        // A second method on a known path merges into that path's method router.
        self.router = self.router.route(path, route);
        self
    }

    fn get<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("get", path, get(h))
    }

    fn post<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("post", path, post(h))
    }

    fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.add("delete", path, delete(h))
    }

    /// Every (method, path) routed, paths in OpenAPI syntax (axum's `{*rest}` is `{rest}`).
    pub fn served(&self) -> Vec<(String, String)> {
        self.served
            .iter()
            .map(|(m, p)| (m.to_string(), p.replace("{*", "{")))
            .collect()
    }
}

/// Every route of the API.
pub fn api_routes() -> Routes {
    Routes {
        router: Router::new(),
        served: Vec::new(),
    }
    .post("/api/v1/jobs", submit::submit)
    .get("/api/v1/jobs", jobs::list)
    .get("/api/v1/jobs/{id}", jobs::view)
    .delete("/api/v1/jobs/{id}", jobs::delete)
    .get("/api/v1/jobs/{id}/wait", jobs::wait_for)
    .get("/api/v1/jobs/{id}/children", crate::routes::array::children)
    .post("/api/v1/jobs/{id}/cancel", jobs::cancel)
    .get("/api/v1/jobs/{id}/stdout", files::stdout)
    .get("/api/v1/jobs/{id}/stderr", files::stderr)
    .get("/api/v1/jobs/{id}/outputs/{*path}", files::output)
    .post("/api/v1/run", run::run)
    .get("/api/v1/ws", ws::ws)
    .get("/api/v1/queues", fleet::queues)
    .get("/api/v1/workers", fleet::workers)
    .get("/api/v1/stats", stats::stats)
    .post("/api/v1/workers/{id}/drain", fleet::drain)
    .post("/api/v1/workers/{id}/undrain", fleet::undrain)
    .get("/healthz", fleet::healthz)
    .get("/readyz", fleet::readyz)
    .get("/metrics", telemetry::metrics)
    .get("/api/v1/openapi.json", crate::openapi::serve)
    .get("/", dashboard)
}

/// The API with its layers: latency metrics, API keys, body limits, request ids.
pub fn router(state: AppState) -> Router {
    api_routes()
        .router
        .merge(crate::compat::routes())
        .route_layer(axum::middleware::from_fn(telemetry::latency))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), require_key))
        // Outside the key check: a browser's preflight carries no key.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::origin::guard,
        ))
        // Outside the Origin guard, which trusts `Host` to tell the server's own page.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::host::guard))
        // Bodies are bounded per route (JSON by DCC_MAX_BODY_BYTES, each multipart input by
        // DCC_MAX_INPUT_BYTES), not by axum's blanket 2 MB default.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(telemetry::request_id))
        .with_state(state)
}

/// `GET /`: the dashboard (one self-contained page; its script calls the API with the user's key),
/// or, for a WebSocket upgrade, the 2018 job notifications (`compat::ws2018`).
#[utoipa::path(get, path = "/", tag = "fleet", operation_id = "dashboard", summary = "The dashboard (HTML)", security(()),
    responses((status = 200, description = "The dashboard page", body = String, content_type = "text/html")))]
pub async fn dashboard(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crate::compat::ws2018::is_upgrade(&req) {
        return crate::compat::ws2018::serve(state, req).await;
    }
    axum::response::Html(include_str!("dashboard/index.html")).into_response()
}

/// The answer to a path no route serves (also a 2018 storage-path route's, for a path of
/// another shape, so that route hides nothing of the usual 404).
pub(crate) async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        Code::NotFound,
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        Code::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// The shared pieces every `dcc` process opens.
pub struct Core {
    /// The configuration.
    pub config: Arc<Config>,
    /// Redis.
    pub queue: Queue,
    /// Storage.
    pub storage: Arc<dyn Storage>,
    /// Job events, subscribed on first use: a process that serves the API follows every job;
    /// a standalone worker never asks, and hears only its own channel.
    events: std::sync::OnceLock<Events>,
}

/// The queue split as the deployment is (`DCC_REDIS_SHARDS`, else the count stored in Redis).
/// With Redis not answering yet, the process starts on `requested` (or 1) and checks again once
/// it answers: a process that guessed wrong exits (its supervisor starts it again), rather than
/// claim from, publish on and read the wrong shards.
async fn shards(queue: Queue, requested: Option<usize>) -> anyhow::Result<Queue> {
    match queue.clone().agree_on_shards(requested).await {
        Ok(q) => Ok(q),
        Err(e @ dcc_shared::Error::Config(_)) => Err(e.into()),
        Err(e) => {
            let assumed = requested.unwrap_or(1);
            tracing::warn!(error = %e, shards = assumed, "could not read the deployment's shard count from Redis; assuming DCC_REDIS_SHARDS (or 1) until it answers");
            let later = queue.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    match later.clone().agree_on_shards(requested).await {
                        Ok(q) if q.shard_count() == assumed => return,
                        Ok(q) => tracing::error!(
                            shards = q.shard_count(),
                            assumed,
                            "the deployment has another shard count than this process assumed at start; exiting to start again"
                        ),
                        Err(e @ dcc_shared::Error::Config(_)) => tracing::error!(error = %e, "exiting"),
                        Err(_) => continue,
                    }
                    std::process::exit(78);
                }
            });
            Ok(queue.with_shards(assumed))
        }
    }
}

impl Core {
    /// Opens Redis (lazily) and storage; starts the upkeep loop.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        let queue = Queue::new(&config.redis_url, &config.prefix)?
            .with_durability(config.durability)
            .with_history(config.history_ttl);
        queue.target().check().await?;
        let queue = shards(queue, config.shards).await?;
        queue.check_durability().await?;
        match queue.install_library().await {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::info!(?dropped, "deleted other DCC versions' function libraries from Redis")
            }
            Ok(_) => {}
            // (the first call loads it; Redis may not be up yet)
            Err(e) => tracing::warn!(error = %e, "could not load DCC's function library at start"),
        }
        let storage = storage::open(&config.storage, config.s3_force_path_style).await?;
        match queue.eviction_policy().await {
            Ok(Some(p)) if p != "noeviction" => tracing::warn!(
                policy = p,
                "Redis maxmemory-policy is not noeviction: under memory pressure Redis may evict job keys and leases; set `maxmemory-policy noeviction`"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Redis is not reachable yet; requests answer 503 until it is"),
        }
        if let Ok(Some(v)) = queue.listpack_value().await
            && v < dcc_shared::queue::RECORD_LISTPACK_VALUE
        {
            tracing::warn!(
                hash_max_listpack_value = v,
                "Redis stores job records in its large hash encoding (about 1.7 KB a queued job instead of 0.9 KB); set `hash-max-listpack-value {}`",
                dcc_shared::queue::RECORD_LISTPACK_VALUE
            );
        }
        // Upkeep a few times per lease, so an expired lease is noticed well within one more lease.
        let every = (config.lease / 3).clamp(Duration::from_millis(500), Duration::from_secs(10));
        dcc_shared::maintenance::spawn(queue.clone(), storage.clone(), config.retention(), every);
        tracing::info!(storage = storage.describe(), prefix = config.prefix, "core ready");
        Ok(Core {
            config: Arc::new(config),
            queue,
            storage,
            events: std::sync::OnceLock::new(),
        })
    }

    /// Every job's events (the API's long-polls, WebSockets and metrics).
    pub fn events(&self) -> Events {
        self.events
            .get_or_init(|| Events::spawn(&self.config.redis_url, self.queue.event_channels()))
            .clone()
    }

    /// Where fast jobs keep their files.
    pub fn blobs(&self) -> Arc<dyn Storage> {
        Arc::new(RedisBlobs::new(
            self.queue.clone(),
            self.config.fast_max_output_bytes,
            self.config.fast_max_redis_bytes,
        ))
    }

    /// The HTTP state.
    pub fn app_state(&self) -> anyhow::Result<AppState> {
        let egress = crate::egress::Policy::parse("DCC_URL_INPUT_ALLOW", &self.config.url_input_allow)
            .map_err(anyhow::Error::msg)?;
        let http = egress.client(self.config.url_fetch_timeout)?;
        let notify_egress = self.notify_policy()?;
        let keys = crate::tenants::Keys::load(&self.config.api_keys, self.config.api_keys_file.clone())
            .map_err(anyhow::Error::msg)?;
        keys.spawn_reload();
        Ok(AppState::new(crate::state::Shared {
            queue: self.queue.clone(),
            storage: self.storage.clone(),
            blobs: self.blobs(),
            events: self.events(),
            config: self.config.clone(),
            http,
            egress,
            notify_egress,
            keys,
            waiters: Arc::new(tokio::sync::Semaphore::new(self.config.max_waiters)),
            ended: Default::default(),
            fleet: Default::default(),
            v1_router: Default::default(),
        }))
    }

    fn notify_policy(&self) -> anyhow::Result<crate::egress::Policy> {
        crate::egress::Policy::parse("DCC_NOTIFY_ALLOW", &self.config.notify.allow).map_err(anyhow::Error::msg)
    }

    /// Starts sending completion webhooks from the outbox (API servers; a no-op without
    /// `DCC_NOTIFY_SECRET`).
    pub fn start_webhooks(&self) -> anyhow::Result<()> {
        let sender = crate::webhook::Sender::new(self.queue.clone(), self.notify_policy()?, &self.config.notify)?;
        match sender {
            Some(s) => {
                s.spawn();
            }
            None => tracing::info!("no DCC_NOTIFY_SECRET: jobs with notify are refused, no webhooks are sent"),
        }
        Ok(())
    }

    /// Starts a worker on this process's Docker daemon.
    pub async fn start_worker(&self) -> anyhow::Result<Arc<Worker>> {
        let settings = WorkerSettings::from_config(&self.config)?;
        Ok(Worker::start(self.queue.clone(), self.storage.clone(), self.blobs(), settings).await?)
    }
}

/// Runs a worker until `shutdown` completes.
pub async fn run_worker(worker: Arc<Worker>, shutdown: Shutdown) {
    worker.run(shutdown).await
}
