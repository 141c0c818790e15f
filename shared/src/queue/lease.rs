//! The lease: what a worker holds while it runs an attempt. [`Queue::claim`] hands one out
//! (see [`super::claim`]); the worker renews it on every heartbeat, gives it back with
//! [`Queue::release`] when it cannot finish, or ends it with [`Queue::finish`]. Every write a
//! worker makes about a job is fenced by it: an attempt whose lease went elsewhere writes nothing.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Queue, ms};
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobId, Lane, QueueName};

static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("lease_now.lua"), include_str!("renew.lua"))));

static RELEASE: LazyLock<super::Publishing> = LazyLock::new(|| moving_script!("release.lua"));

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
        let this = self.for_job(&lease.job);
        let k = this.keys();
        let mut conn = this.conn().await?;
        let r: i64 = RENEW
            .key(k.job(&lease.job))
            .key(k.running(lease.queue))
            .arg(lease.job.as_str())
            .arg(lease.attempt)
            .arg(&lease.worker)
            .arg(now)
            .arg(ms(length))
            .invoke_async(&mut conn)
            .await?;
        Ok(if r == 1 { Renewed::Held } else { Renewed::Lost })
    }

    /// `running` → `queued` without using up an attempt: puts the job `lease` holds back at the
    /// head of its lane (a drain ran out of time, the worker is stopping, the GPUs it needs were
    /// taken). `false` when the lease was already lost.
    pub async fn release(&self, lease: &Lease, now: Millis) -> Result<bool> {
        let this = self.for_job(&lease.job);
        let k = this.keys();
        let mut conn = this.conn().await?;
        let r: i64 = RELEASE
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
