//! What every handler shares.

use std::sync::Arc;

use dcc_shared::config::Config;
use dcc_shared::events::Events;
use dcc_shared::job::{JobRecord, Lane};
use dcc_shared::queue::Queue;
use dcc_shared::storage::Storage;

use crate::finished::EndedRecords;

/// Shared by all handlers; one reference count to clone (axum clones the state for every
/// middleware and handler of every request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state around `shared`.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// Redis queue and records.
    pub queue: Queue,
    /// Job files.
    pub storage: Arc<dyn Storage>,
    /// Fast jobs' files (in Redis).
    pub blobs: Arc<dyn Storage>,
    /// Job events (for waits).
    pub events: Events,
    /// Configuration.
    pub config: Arc<Config>,
    /// HTTP client for `url` inputs (connects only where `egress` allows).
    pub http: reqwest::Client,
    /// Where `url` inputs may come from.
    pub egress: crate::egress::Policy,
    /// Where completion webhooks may go (`DCC_NOTIFY_ALLOW`).
    pub notify_egress: crate::egress::Policy,
    /// API keys: who each caller is.
    pub keys: crate::tenants::Keys,
    /// Permits for requests held open (waits, fast jobs, WebSockets): `DCC_MAX_WAITERS`.
    pub waiters: Arc<tokio::sync::Semaphore>,
    /// Ended jobs' records, read once per process for all the waits and WebSockets that follow
    /// them.
    pub ended: EndedRecords,
    /// The live workers, read at most once a second for the availability checks.
    pub fleet: crate::availability::FleetView,
    /// The API's router, built once for the 2018 adapter's in-process v1 requests. It holds this
    /// state, so the state is never freed: there is one per process, for the process's life.
    pub v1_router: std::sync::OnceLock<axum::Router>,
}

impl Shared {
    /// A permit to hold a request open, or 503 `BUSY` when this process holds its maximum.
    pub fn waiter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, crate::error::ApiError> {
        self.waiters
            .clone()
            .try_acquire_owned()
            .map_err(|_| crate::error::ApiError {
                retry_after: Some(1),
                ..crate::error::ApiError::new(
                    crate::error::Code::Busy,
                    format!(
                        "this server holds its maximum of {} open waits and WebSockets (DCC_MAX_WAITERS); retry later",
                        self.config.max_waiters
                    ),
                )
            })
    }

    /// Where `job`'s files are: Redis for fast jobs, storage for the rest.
    pub fn storage_for(&self, job: &JobRecord) -> &Arc<dyn Storage> {
        if job.lane == Lane::Fast {
            &self.blobs
        } else {
            &self.storage
        }
    }
}
