//! The periodic upkeep every server and worker runs: reaping expired leases and sweeping jobs
//! whose retention ended. Both are idempotent and safe to run from many processes at once, so
//! there is no leader to elect and no single process whose loss stops them.

use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::clock::{Millis, REDIS_TIME};
use crate::queue::Queue;
use crate::queue::delete::{DeleteMode, Deleted};
use crate::queue::reap::{Reaped, Retention};
use crate::storage::Storage;

/// Most expired jobs removed per tick; the rest wait for the next one.
const SWEEP_BATCH: usize = 100;

/// What one tick did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Expired leases handled.
    pub reaped: Reaped,
    /// Jobs removed because their retention ended.
    pub expired: usize,
}

/// One pass of upkeep at time `now`.
pub async fn tick(queue: &Queue, storage: &dyn Storage, retention: Retention, now: Millis) -> Result<Tick> {
    let reaped = queue.reap(retention, now).await?;
    let now = if now == REDIS_TIME { queue.time().await? } else { now };
    let mut expired = 0;
    let due = queue.due_for_expiry(now, SWEEP_BATCH).await?;
    for id in due {
        match queue.get(&id).await? {
            Some(job) => {
                if queue
                    .delete(&job, storage, DeleteMode::Expired, retention.standard, now)
                    .await?
                    != Deleted::Kept
                {
                    expired += 1;
                }
            }
            None => queue.forget(&id).await?,
        }
    }
    Ok(Tick { reaped, expired })
}

/// Runs [`tick`] every `every` (with jitter, so many processes do not beat in step) until the
/// process ends. A failed tick is logged and retried at the next one.
pub fn spawn(
    queue: Queue,
    storage: Arc<dyn Storage>,
    retention: Retention,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let jitter = Duration::from_millis(rand::random_range(0..=every.as_millis() as u64 / 4));
            tokio::time::sleep(every + jitter).await;
            match tick(&queue, storage.as_ref(), retention, REDIS_TIME).await {
                Ok(t) if t != Tick::default() => tracing::info!(
                    task = "maintenance",
                    requeued = t.reaped.requeued,
                    lost = t.reaped.failed,
                    expired = t.expired,
                    "upkeep"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(task = "maintenance", error = %e, "upkeep tick failed; retrying next tick"),
            }
        }
    })
}
