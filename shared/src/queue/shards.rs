//! A deployment's queue split over shards (`DCC_REDIS_SHARDS`, docs/scaling.md "Past one
//! slot"): which shard a job, a tenant or a worker belongs to, the same queue seen from one
//! shard, and the shard count every process of a deployment agrees on.

use std::borrow::Cow;

use super::{Queue, homes};
use crate::Result;
use crate::job::JobId;
use crate::keys::Keys;

impl Queue {
    /// The same queue split over `n` shards (1 to [`crate::config::MAX_SHARDS`]), each its own hash tag
    /// ([`crate::keys::shard_tags`]). Every process of a deployment must use the same `n`:
    /// [`Queue::agree_on_shards`] reads it from Redis.
    pub fn with_shards(mut self, n: usize) -> Self {
        self.shards = Keys::shards(&self.prefix, n.clamp(1, crate::config::MAX_SHARDS)).into();
        self.homes = homes(&self.shards);
        self.context_heads = Default::default();
        self.keys = self.shards[0].clone();
        self.shard = 0;
        self
    }

    /// How many shards the deployment has.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The same queue seen from shard `i` (its keys, its node on a cluster). Fleet-wide keys
    /// stay shard 0's.
    pub fn shard(&self, i: usize) -> Queue {
        let mut q = self.clone();
        q.shard = i % self.shards.len();
        q.keys = self.shards[q.shard].clone();
        q
    }

    /// Every shard, shard 0 first.
    pub fn each_shard(&self) -> impl Iterator<Item = Queue> + '_ {
        (0..self.shards.len()).map(|i| self.shard(i))
    }

    /// The queue seen from the shard job `id` lives in.
    pub fn for_job(&self, id: &JobId) -> Cow<'_, Queue> {
        self.for_shard(self.shard_of(id.as_str()))
    }

    /// This value when it is for shard `i` already (always, unsharded), else a copy for it.
    pub(super) fn for_shard(&self, i: usize) -> Cow<'_, Queue> {
        match i == self.shard {
            true => Cow::Borrowed(self),
            false => Cow::Owned(self.shard(i)),
        }
    }

    /// The shard job `id` lives in.
    pub fn shard_of(&self, id: &str) -> usize {
        crate::keys::shard_of(id, self.shards.len())
    }

    /// The queue seen from the shard of `tenant`'s jobs.
    pub fn for_tenant(&self, tenant: &str) -> Cow<'_, Queue> {
        self.for_shard(crate::keys::tenant_shard(tenant, self.shards.len()))
    }

    /// The job event channels, one per shard ([`crate::events::Events::spawn`]).
    pub fn event_channels(&self) -> Vec<String> {
        self.shards.iter().map(|k| k.events()).collect()
    }

    /// Worker `id`'s channels, one per shard: any shard may wake it, and it may run a job of any.
    pub fn worker_channels(&self, id: &str) -> Vec<String> {
        self.shards.iter().map(|k| k.worker_events(id)).collect()
    }

    /// A fresh id for a job of `tenant`, in that tenant's shard.
    pub fn new_id(&self, tenant: &str) -> JobId {
        JobId::generate_in(crate::keys::tenant_shard(tenant, self.shards.len()), self.shards.len())
    }

    /// Reads the deployment's shard count from Redis, writing `requested` there first when the
    /// deployment has none (its first server), and returns the queue split that way. A
    /// `requested` count that differs from the stored one is refused: the jobs already queued
    /// would be looked for in the wrong shards (DCC does not reshard a live deployment).
    pub async fn agree_on_shards(self, requested: Option<usize>) -> Result<Queue> {
        let mut c = self.shard(0).conn().await?;
        let key = self.keys.shard_count();
        let stored: Option<usize> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
        if let (None, Some(n)) = (stored, requested) {
            // A deployment from before shards holds its jobs in shard 0's keys; split, most of
            // their ids would be looked for elsewhere.
            let jobs: u64 = redis::cmd("ZCARD")
                .arg(self.shards[0].index())
                .query_async(&mut c)
                .await?;
            if n > 1 && jobs > 0 {
                return Err(crate::Error::Config(format!(
                    "DCC_REDIS_SHARDS={n}, but this deployment (prefix {:?}) already holds {jobs} jobs in one \
                     shard; a shard count is set when a deployment starts. Unset DCC_REDIS_SHARDS, or use a new prefix",
                    self.prefix
                )));
            }
            let _: Option<String> = redis::cmd("SET").arg(&key).arg(n).arg("NX").query_async(&mut c).await?;
        }
        let stored: Option<usize> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
        let n = stored.unwrap_or(1);
        if let Some(r) = requested
            && r != n
        {
            return Err(crate::Error::Config(format!(
                "DCC_REDIS_SHARDS={r}, but this deployment (prefix {:?}) was started with {n} shards; \
                 its queued jobs live in those. Unset DCC_REDIS_SHARDS, or set it to {n}",
                self.prefix
            )));
        }
        Ok(self.with_shards(n))
    }
}
