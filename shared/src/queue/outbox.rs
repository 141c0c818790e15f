//! Completion webhooks waiting to be sent: the outbox zset the end scripts fill
//! (`notify.lua`), taken under a delivery lease by any server and settled by the one that took
//! it. The sending itself (HTTP, signature, backoff) is the server's (`dcc_server::webhook`).

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Queue, ms};
use crate::Result;
use crate::clock::Millis;
use crate::job::JobId;

static TAKE: LazyLock<Script> =
    LazyLock::new(|| Script::new(concat!(include_str!("lease_now.lua"), include_str!("outbox_take.lua"))));
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("lease_now.lua"),
        include_str!("outbox_settle.lua")
    ))
});

/// One delivery a server has taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The job whose view is sent.
    pub job: JobId,
    /// Which POST this is (1 for the first); fences [`Queue::settle_delivery`].
    pub attempt: u32,
}

/// How a delivery went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settle {
    /// The receiver answered 2xx: never sent again.
    Delivered,
    /// It failed; try again after `after`.
    Retry {
        /// Wait before the next try.
        after: Duration,
        /// Why this one failed.
        error: String,
    },
    /// It failed for good (out of attempts, or a URL that may not be reached).
    Failed {
        /// Why.
        error: String,
    },
}

impl Queue {
    /// Takes up to `max` due deliveries (of any shard); none is due for another server until
    /// `lease` has passed. `now` 0: Redis's clock.
    pub async fn take_deliveries(&self, now: Millis, lease: Duration, max: usize) -> Result<Vec<Delivery>> {
        // From a shard drawn at random first, so a busy shard does not keep the others waiting.
        let n = self.shard_count();
        let first = if n == 1 { 0 } else { rand::random_range(0..n) };
        let mut out = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            if out.len() >= max {
                break;
            }
            out.extend(self.shard(i).take_deliveries_here(now, lease, max - out.len()).await?);
        }
        Ok(out)
    }

    async fn take_deliveries_here(&self, now: Millis, lease: Duration, max: usize) -> Result<Vec<Delivery>> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let flat: Vec<String> = TAKE
            .key(k.outbox())
            .arg(k.job_prefix())
            .arg(now)
            .arg(ms(lease))
            .arg(max)
            .invoke_async(&mut conn)
            .await?;
        Ok(flat
            .chunks(2)
            .filter_map(|p| match p {
                [id, attempt] => Some(Delivery {
                    job: JobId::parse(id).ok()?,
                    attempt: attempt.parse().ok()?,
                }),
                _ => None,
            })
            .collect())
    }

    /// Records how `d` went; `false` when another server has taken it since (its lease ran
    /// out) or the job is gone. `now` 0: Redis's clock.
    pub async fn settle_delivery(&self, d: &Delivery, how: &Settle, now: Millis) -> Result<bool> {
        let this = self.for_job(&d.job);
        let k = this.keys();
        let mut conn = this.conn().await?;
        let (word, after, error) = match how {
            Settle::Delivered => ("delivered", 0, ""),
            Settle::Retry { after, error } => ("retry", ms(*after), error.as_str()),
            Settle::Failed { error } => ("failed", 0, error.as_str()),
        };
        let r: i64 = SETTLE
            .key(k.outbox())
            .key(k.job(&d.job))
            .arg(d.job.as_str())
            .arg(d.attempt)
            .arg(word)
            .arg(now)
            .arg(after)
            .arg(error)
            .invoke_async(&mut conn)
            .await?;
        Ok(r == 1)
    }

    /// Deliveries in the outbox (due now, waiting for a retry, or being sent), in every shard.
    pub async fn outbox_len(&self) -> Result<u64> {
        let mut total = 0;
        for q in self.each_shard() {
            let mut conn = q.conn().await?;
            total += redis::cmd("ZCARD")
                .arg(q.keys().outbox())
                .query_async::<u64>(&mut conn)
                .await?;
        }
        Ok(total)
    }
}
