//! Expired leases: the attempt's worker stopped renewing (crashed, partitioned, paused).
//!
//! The job goes back to the head of its lane and the next claim makes it attempt + 1, or, when
//! that was the last attempt, it ends `failed` with `WORKER_LOST`. A worker that comes back
//! late finds its lease gone: renew and finish refuse it (fencing), so it can change nothing.

use std::time::Duration;

use super::library::Transition;
use super::{Queue, ms};
use crate::Result;
use crate::clock::Millis;
use crate::job::{Lane, QueueName};

/// How long ended jobs are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Standard jobs (`DCC_RETENTION`).
    pub standard: Duration,
    /// Fast jobs (`DCC_FAST_RESULT_TTL`).
    pub fast: Duration,
}

impl Retention {
    /// The retention of a job in `lane`.
    pub fn of(&self, lane: Lane) -> Duration {
        if lane == Lane::Fast { self.fast } else { self.standard }
    }
}

/// Most expired leases handled per script call, so one call never blocks Redis for long.
const BATCH: u32 = 100;

/// What one reap pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Jobs put back on their queue.
    pub requeued: u32,
    /// Jobs failed with `WORKER_LOST`.
    pub failed: u32,
}

impl Queue {
    /// Handles every lease that expired by `now`, in both queues (of every shard: each shard's
    /// leases run on its own node's clock when `now` is 0).
    pub async fn reap(&self, retention: Retention, now: Millis) -> Result<Reaped> {
        let mut total = Reaped::default();
        for q in self.each_shard() {
            let r = q.reap_here(retention, now).await?;
            total.requeued += r.requeued;
            total.failed += r.failed;
        }
        Ok(total)
    }

    async fn reap_here(&self, retention: Retention, now: Millis) -> Result<Reaped> {
        let k = self.keys();
        let mut total = Reaped::default();
        let mut conn = self.conn().await?;
        for queue in QueueName::ALL {
            loop {
                let (requeued, failed): (u32, u32) = Transition::Reap
                    .on(self)
                    .key(k.running(queue))
                    .key(k.lane(queue, Lane::Fast))
                    .key(k.lane(queue, Lane::High))
                    .key(k.lane(queue, Lane::Normal))
                    .key(k.expiry())
                    .key(k.tenants_active())
                    .key(k.idle(queue))
                    .key(k.outbox())
                    .arg(k.job_prefix())
                    .arg(now)
                    .arg(ms(retention.standard))
                    .arg(k.events())
                    .arg(BATCH)
                    .arg(ms(retention.fast))
                    .arg(k.worker_events_prefix())
                    .arg(self.settle_context(retention.standard))
                    .invoke_async(&mut conn)
                    .await?;
                total.requeued += requeued;
                total.failed += failed;
                if requeued + failed < BATCH {
                    break;
                }
            }
        }
        Ok(total)
    }
}
