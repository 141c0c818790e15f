//! What every handler shares.

use std::sync::Arc;

use dcc_shared::config::Config;
use dcc_shared::events::Events;
use dcc_shared::job::{JobRecord, Lane};
use dcc_shared::queue::Queue;
use dcc_shared::storage::Storage;

use crate::finished::EndedRecords;

/// Shared by all handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
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
    /// Ended jobs' records, read once per process for all the waits and WebSockets that follow
    /// them.
    pub ended: EndedRecords,
}

impl AppState {
    /// Where `job`'s files are: Redis for fast jobs, storage for the rest.
    pub fn storage_for(&self, job: &JobRecord) -> &Arc<dyn Storage> {
        if job.lane == Lane::Fast {
            &self.blobs
        } else {
            &self.storage
        }
    }
}
