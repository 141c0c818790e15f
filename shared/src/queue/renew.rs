//! Heartbeat: a worker extends the lease of an attempt it still holds.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Queue, ms};
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobId, Lane, QueueName};

static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("lease_now.lua"), include_str!("renew.lua"))));

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
    /// Extends `lease` to `now + length`.
    pub async fn renew(&self, lease: &Lease, length: Duration, now: Millis) -> Result<Renewed> {
        let k = self.keys();
        let mut conn = self.conn().await?;
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
}
