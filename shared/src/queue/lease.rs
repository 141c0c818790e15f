//! The lease: what a worker holds while it runs an attempt. [`Queue::claim`] hands one out
//! (see [`super::claim`]); the worker renews it on every heartbeat, gives it back with
//! [`Queue::release`] when it cannot finish, or ends it with [`Queue::finish`]. Every write a
//! worker makes about a job is fenced by it: an attempt whose lease went elsewhere writes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use super::library::Transition;
use super::{Queue, ms};
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobId, Lane, QueueName};

/// An attempt a worker holds: the fencing token of every write it makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job: JobId,
    /// Its queue (the running zset lives per queue).
    pub queue: QueueName,
    /// Its lane (fast jobs keep their files in Redis and their result briefly).
    pub lane: Lane,
    /// The attempt number the worker runs.
    pub attempt: u32,
    /// The worker.
    pub worker: String,
}

/// Leases one renewal call carries at most (a worker holding more makes several calls), so one
/// call holds Redis for a bounded time.
pub const RENEW_BATCH: usize = 100;

/// One renewal call's answer: which leases it carried (indices into the caller's slice) and what
/// became of each, in the same order, or why the call failed.
#[derive(Debug)]
pub struct RenewBatch {
    /// Indices of the leases, into the slice given to [`Queue::renew_all`].
    pub leases: Vec<usize>,
    /// Per lease, held or lost; or the call's error.
    pub answer: Result<Vec<Renewed>>,
}

/// Whether a lease is still held.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewed {
    /// The deadline moved to now + lease.
    Held,
    /// The job was cancelled, deleted, reaped or re-claimed: stop the container, write nothing.
    Lost,
}

impl Queue {
    /// Extends `lease` to `now + length` (the heartbeat).
    pub async fn renew(&self, lease: &Lease, length: Duration, now: Millis) -> Result<Renewed> {
        let batch = self.renew_here(std::slice::from_ref(lease), length, now).await?;
        Ok(batch.into_iter().next().unwrap_or(Renewed::Lost))
    }

    /// Extends every lease in `leases` to `now + length` (a worker's heartbeat): one script call
    /// per shard and per [`RENEW_BATCH`] leases, not one per lease. The answers come per call.
    pub async fn renew_all(&self, leases: &[Lease], length: Duration, now: Millis) -> Vec<RenewBatch> {
        let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, l) in leases.iter().enumerate() {
            by_shard.entry(self.shard_of(l.job.as_str())).or_default().push(i);
        }
        let mut out = Vec::new();
        for (shard, all) in by_shard {
            let q = self.shard(shard);
            for chunk in all.chunks(RENEW_BATCH) {
                let these: Vec<Lease> = chunk.iter().map(|&i| leases[i].clone()).collect();
                out.push(RenewBatch {
                    answer: q.renew_here(&these, length, now).await,
                    leases: chunk.to_vec(),
                });
            }
        }
        out
    }

    /// [`Queue::renew_all`] of leases all in this value's shard, in one call.
    async fn renew_here(&self, leases: &[Lease], length: Duration, now: Millis) -> Result<Vec<Renewed>> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let mut inv = Transition::Renew.on(self);
        inv.key(k.running(QueueName::Cpu))
            .key(k.running(QueueName::Gpu))
            .arg(now)
            .arg(ms(length));
        for l in leases {
            let queue = match l.queue {
                QueueName::Cpu => 1,
                QueueName::Gpu => 2,
            };
            inv.key(k.job(&l.job))
                .arg(l.job.as_str())
                .arg(l.attempt)
                .arg(&l.worker)
                .arg(queue);
        }
        let held: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok(held
            .into_iter()
            .map(|h| if h == 1 { Renewed::Held } else { Renewed::Lost })
            .collect())
    }

    /// `running` → `queued` without using up an attempt: puts the job `lease` holds back at the
    /// head of its lane (a drain ran out of time, the worker is stopping, the GPUs it needs were
    /// taken). `false` when the lease was already lost.
    pub async fn release(&self, lease: &Lease, now: Millis) -> Result<bool> {
        let this = self.for_job(&lease.job);
        let k = this.keys();
        let mut conn = this.conn().await?;
        let r: i64 = Transition::Release
            .on(&this)
            .key(k.job(&lease.job))
            .key(k.running(lease.queue))
            .key(k.lane(lease.queue, Lane::Fast))
            .key(k.lane(lease.queue, Lane::High))
            .key(k.lane(lease.queue, Lane::Normal))
            .key(k.idle(lease.queue))
            .arg(lease.job.as_str())
            .arg(lease.attempt)
            .arg(&lease.worker)
            .arg(now)
            .arg(k.events())
            .arg(k.worker_events_prefix())
            .arg(this.settle_context(std::time::Duration::ZERO))
            .invoke_async(&mut conn)
            .await?;
        Ok(r == 1)
    }
}
