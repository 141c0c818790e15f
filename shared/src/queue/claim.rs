//! `queued` → `running`: a worker takes the next job of a queue together with a lease.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::{Queue, ms};
use crate::clock::Millis;
use crate::job::{JobId, Lane, QueueName};
use crate::{Error, Result};

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("claim.lua")));

/// What a claim got.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This worker now runs `attempt` of `job` and holds its lease.
    Claimed {
        /// The job.
        job: JobId,
        /// The attempt number, the fencing token of every later write.
        attempt: u32,
        /// Worker slots the job holds (GPUs, for the GPU queue).
        slots: u32,
        /// The lane it came from (fast jobs keep their files in Redis).
        lane: Lane,
    },
    /// The next job needs more slots than are free; wait for a running job to end.
    NoFit,
    /// Nothing to run.
    Empty,
}

/// Who is claiming, and with how much room.
pub struct Claimant<'a> {
    /// Worker id (recorded on the job, checked by renew and finish).
    pub worker: &'a str,
    /// Slots free right now.
    pub free_slots: u32,
    /// All the worker's slots.
    pub total_slots: u32,
    /// Lease length.
    pub lease: Duration,
}

impl Claimant<'_> {
    /// The record field a job's needs are read from in `queue`: GPUs for the GPU queue (a
    /// GPU job holds GPU slots, one per GPU), CPU slots otherwise.
    fn need_field(queue: QueueName) -> &'static str {
        match queue {
            QueueName::Gpu => "gpus",
            QueueName::Cpu => "slots",
        }
    }
}

impl Queue {
    /// Takes the next job of `queue` (fast, then high, then normal lane).
    pub async fn claim(&self, queue: QueueName, who: &Claimant<'_>, now: Millis) -> Result<Claim> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let mut inv = CLAIM.key(k.lane(queue, Lane::Fast));
        inv.key(k.lane(queue, Lane::High))
            .key(k.lane(queue, Lane::Normal))
            .key(k.running(queue))
            .arg(k.job_prefix())
            .arg(who.worker)
            .arg(who.free_slots)
            .arg(who.total_slots)
            .arg(now)
            .arg(ms(who.lease))
            .arg(k.events())
            .arg(Claimant::need_field(queue));
        let r: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        let s = |i: usize| -> Option<String> { r.get(i).and_then(|v| redis::from_redis_value_ref(v).ok()) };
        match s(0).as_deref() {
            Some("claimed") => {
                let id = s(1).unwrap_or_default();
                let job = JobId::parse(&id).map_err(|why| Error::Corrupt { job: id.clone(), why })?;
                let attempt = s(2).and_then(|a| a.parse().ok()).unwrap_or(1);
                let slots = s(3).and_then(|a| a.parse().ok()).unwrap_or(1);
                let lane = s(4).and_then(|l| Lane::parse(&l)).unwrap_or(Lane::Normal);
                Ok(Claim::Claimed {
                    job,
                    attempt,
                    slots,
                    lane,
                })
            }
            Some("nofit") => Ok(Claim::NoFit),
            _ => Ok(Claim::Empty),
        }
    }
}
