//! `running` → `queued` without using up an attempt: the worker gives back a job it cannot finish
//! (drain timeout, instance reclaimed). Only the lease holder can release.

use std::sync::LazyLock;

use redis::Script;

use super::Queue;
use super::renew::Lease;
use crate::Result;
use crate::clock::Millis;
use crate::job::Lane;

static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("release.lua")));

impl Queue {
    /// Puts the job `lease` holds back at the head of its lane. `false` when the lease was lost.
    pub async fn release(&self, lease: &Lease, now: Millis) -> Result<bool> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let r: i64 = RELEASE
            .key(k.job(&lease.job))
            .key(k.running(lease.queue))
            .key(k.lane(lease.queue, Lane::Fast))
            .key(k.lane(lease.queue, Lane::High))
            .key(k.lane(lease.queue, Lane::Normal))
            .arg(lease.job.as_str())
            .arg(lease.attempt)
            .arg(&lease.worker)
            .arg(now)
            .arg(k.events())
            .invoke_async(&mut conn)
            .await?;
        Ok(r == 1)
    }
}
