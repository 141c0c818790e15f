//! `queued` → `running`: a worker takes the next job of a queue together with a lease and the
//! job's record (one round trip).

use std::collections::HashMap;
use std::time::Duration;

use super::lease::Lease;
use super::library::{Call, Transition};
use super::{Queue, ms};
use crate::clock::Millis;
use crate::job::{JobId, JobRecord, Lane, QueueName};
use crate::{Error, Result};

/// Queued entries a claim looks at per lane: jobs too large for the claiming worker are stepped
/// over, up to this many (beyond, a lane whose oldest jobs all need a larger worker looks empty
/// to a small one).
pub const SCAN: u32 = 32;

/// Tenants a claim looks at per lane, in turn (beyond, tenants wait for the turns ahead).
pub const SCAN_TENANTS: u32 = 64;

/// What a claim got.
#[derive(Debug)]
pub enum Claim {
    /// This worker now runs the job and holds its lease.
    Claimed(Box<Claimed>),
    /// The next job needs more slots than are free; wait for a running job to end.
    NoFit,
    /// Nothing to run.
    Empty,
}

/// A job a worker took: its lease, its record as the claim left it, and what it holds of the
/// worker while it runs.
#[derive(Debug)]
pub struct Claimed {
    /// The lease (the attempt number in it fences every later write).
    pub lease: Lease,
    /// The job, read in the same script as the claim.
    pub record: JobRecord,
    /// Worker slots the job holds (GPUs, for the GPU queue).
    pub slots: u32,
    /// Memory (MiB) the job reserves on the worker while it runs.
    pub memory_mb: u64,
}

/// Where each worker of this process may be among a queue's idle workers, shard by shard. Only
/// a claim that found nothing puts a worker there (its script), and a wake-up or a claim that
/// takes a job takes it out. A claim sends its `ZREM` of the idle set only where the worker may
/// be in it: a busy worker, whose claims keep taking jobs, is known not to be, and its claims
/// skip that write. A shard this process has not claimed from yet, or whose last claim's answer
/// was lost, counts as maybe (an earlier process with the same worker id may have left it
/// there). On a sharded deployment, a claim that takes a job in one shard leaves the others'
/// idle sets here, with one `ZREM` each, so a full worker is not the one a job queued there
/// wakes.
#[derive(Default)]
pub(crate) struct IdleMarks(std::sync::Mutex<HashMap<(String, QueueName), Marks>>);

/// One worker's shards, a bit each.
#[derive(Default, Clone, Copy)]
struct Marks {
    /// Where it went idle (its claim found nothing) and has not left yet.
    idle: u64,
    /// Where that is known: the others count as maybe idle.
    known: u64,
}

impl IdleMarks {
    fn with<T>(&self, worker: &str, queue: QueueName, f: impl FnOnce(&mut Marks) -> T) -> T {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry((worker.to_string(), queue)).or_default())
    }

    /// Whether `worker` may be among `queue`'s idle workers in `shard`.
    fn maybe_idle(&self, worker: &str, queue: QueueName, shard: usize) -> bool {
        self.with(worker, queue, |m| {
            m.idle & (1 << shard) != 0 || m.known & (1 << shard) == 0
        })
    }

    /// What `worker`'s claim in `shard` answered: it took a job (and left the idle set there),
    /// found nothing (and joined it), or is not known (an error: it may have done either).
    fn claimed(&self, worker: &str, queue: QueueName, shard: usize, answer: Option<bool>) {
        let bit = 1 << shard;
        self.with(worker, queue, |m| match answer {
            Some(took) => {
                m.known |= bit;
                m.idle = if took { m.idle & !bit } else { m.idle | bit };
            }
            None => m.known &= !bit,
        });
    }

    /// The shards other than `shard` that `worker` is idle in: it took a job in `shard`, and
    /// the caller takes it out of those (they count as left from now on).
    fn leave_others(&self, worker: &str, queue: QueueName, shard: usize) -> Vec<usize> {
        let bits = self.with(worker, queue, |m| {
            let others = m.idle & !(1 << shard);
            m.idle &= !others;
            others
        });
        (0..u64::BITS as usize).filter(|i| bits & (1 << i) != 0).collect()
    }
}

/// Who is claiming, and with how much room.
pub struct Claimant<'a> {
    /// Worker id (recorded on the job, checked by renew and finish).
    pub worker: &'a str,
    /// Slots free right now.
    pub free_slots: u32,
    /// All the worker's slots.
    pub total_slots: u32,
    /// Memory (MiB) not reserved by its running jobs.
    pub free_memory_mb: u64,
    /// All the memory (MiB) it gives to jobs.
    pub total_memory_mb: u64,
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
    /// Takes the next job of `queue` (fast, then high, then normal lane). On a sharded
    /// deployment, from the worker's home shard first and from the others in turn when it has
    /// nothing this worker can take: each shard that had nothing keeps the worker among its idle
    /// workers (a job queued there wakes it), until a claim elsewhere succeeds.
    pub async fn claim(&self, queue: QueueName, who: &Claimant<'_>, now: Millis) -> Result<Claim> {
        let n = self.shard_count();
        if n == 1 {
            return self.claim_here(queue, who, now).await;
        }
        let home = self.home_of(who.worker);
        let first = self.shard(home).claim_here(queue, who, now).await;
        self.claim_past_home(queue, who, now, first).await
    }

    /// The shard a worker claims from first.
    pub(crate) fn home_of(&self, worker: &str) -> usize {
        crate::keys::shard_of(worker, self.shard_count())
    }

    /// [`Queue::claim`] once the worker's home shard answered `first`: done if it handed out a
    /// job, else the other shards in turn.
    pub(crate) async fn claim_past_home(
        &self,
        queue: QueueName,
        who: &Claimant<'_>,
        now: Millis,
        first: Result<Claim>,
    ) -> Result<Claim> {
        let n = self.shard_count();
        let home = self.home_of(who.worker);
        let (mut answer, mut failed, mut first) = (Claim::Empty, None, Some(first));
        for i in (0..n).map(|k| (home + k) % n) {
            let got = match first.take() {
                Some(home_answer) => home_answer,
                None => self.shard(i).claim_here(queue, who, now).await,
            };
            // A shard whose primary fails (over) does not keep the worker from the others.
            match got {
                Ok(Claim::Claimed(c)) => {
                    let stale = self.idle_marks.leave_others(who.worker, queue, i);
                    self.leave_idle_in(queue, who.worker, stale).await;
                    return Ok(Claim::Claimed(c));
                }
                Ok(Claim::NoFit) => answer = Claim::NoFit,
                Ok(Claim::Empty) => {}
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(answer),
        }
    }

    /// Takes `worker` out of `queue`'s idle workers in `shards`: it found a job in another. Best
    /// effort: the job is claimed already and must reach the worker; an entry left behind only
    /// wakes this worker once more.
    async fn leave_idle_in(&self, queue: QueueName, worker: &str, shards: Vec<usize>) {
        for i in shards {
            let q = self.shard(i);
            let left = async {
                let mut conn = q.conn().await?;
                redis::cmd("ZREM")
                    .arg(q.keys().idle(queue))
                    .arg(worker)
                    .query_async::<()>(&mut conn)
                    .await?;
                Ok::<_, Error>(())
            };
            if let Err(e) = left.await {
                tracing::warn!(shard = i, error = %e, "could not leave a shard's idle workers");
            }
        }
    }

    /// [`Queue::claim`] in this value's shard only.
    async fn claim_here(&self, queue: QueueName, who: &Claimant<'_>, now: Millis) -> Result<Claim> {
        let mut conn = self.conn().await?;
        let r = self.claim_call(queue, who, now).invoke_async(&mut conn).await;
        self.claimed(queue, who, r.map_err(Error::from))
    }

    /// The claim script's call in this value's shard. (It leaves the idle set only where the
    /// worker may be in it: [`IdleMarks`].)
    pub(crate) fn claim_call(&self, queue: QueueName, who: &Claimant<'_>, now: Millis) -> Call {
        let k = self.keys();
        let mut inv = Transition::Claim.on(self);
        inv.key(k.lane(queue, Lane::Fast))
            .key(k.lane(queue, Lane::High))
            .key(k.lane(queue, Lane::Normal))
            .key(k.running(queue))
            .key(k.idle(queue))
            .key(k.tenants_active())
            .key(k.expiry())
            .key(k.outbox())
            .arg(k.job_prefix())
            .arg(who.worker)
            .arg(who.free_slots)
            .arg(who.total_slots)
            .arg(now)
            .arg(ms(who.lease))
            .arg(k.events())
            .arg(Claimant::need_field(queue))
            .arg(who.free_memory_mb)
            .arg(who.total_memory_mb)
            .arg(SCAN)
            .arg(SCAN_TENANTS)
            .arg(self.settle_context(std::time::Duration::ZERO))
            .arg(k.history_prefix())
            .arg(self.history_ttl().as_secs())
            .arg(u8::from(self.idle_marks.maybe_idle(who.worker, queue, self.shard)));
        inv
    }

    /// What the claim script's reply `r` in this value's shard says (noted in the idle marks).
    pub(crate) fn claimed(&self, queue: QueueName, who: &Claimant<'_>, r: Result<Vec<redis::Value>>) -> Result<Claim> {
        let answer = r.and_then(|r| Self::parse_claim(queue, who, r));
        let took = answer.as_ref().ok().map(|c| matches!(c, Claim::Claimed(_)));
        self.idle_marks.claimed(who.worker, queue, self.shard, took);
        answer
    }

    /// What the claim script's reply `r` says.
    fn parse_claim(queue: QueueName, who: &Claimant<'_>, r: Vec<redis::Value>) -> Result<Claim> {
        let s = |i: usize| -> Option<String> { r.get(i).and_then(|v| redis::from_redis_value_ref(v).ok()) };
        match s(0).as_deref() {
            Some("claimed") => {
                let id = s(1).unwrap_or_default();
                let job = JobId::parse(&id).map_err(|why| Error::Corrupt { job: id.clone(), why })?;
                let mut hash: HashMap<String, String> = match r.get(6) {
                    Some(record) => redis::from_redis_value_ref(record).map_err(|e| Error::Corrupt {
                        job: id.clone(),
                        why: format!("claimed, its record unreadable: {e}"),
                    })?,
                    None => HashMap::new(),
                };
                // an array child's spec, read from its parent
                if let Some(spec) = s(7) {
                    hash.insert("spec".into(), spec);
                }
                let record = JobRecord::from_hash(&job, hash)?.ok_or_else(|| Error::Corrupt {
                    job: id.clone(),
                    why: "claimed but unreadable".into(),
                })?;
                let lease = Lease {
                    attempt: s(2).and_then(|a| a.parse().ok()).unwrap_or(1),
                    lane: s(4).and_then(|l| Lane::parse(&l)).unwrap_or(Lane::Normal),
                    job,
                    queue,
                    worker: who.worker.to_string(),
                };
                Ok(Claim::Claimed(Box::new(Claimed {
                    lease,
                    record,
                    slots: s(3).and_then(|a| a.parse().ok()).unwrap_or(1),
                    memory_mb: s(5).and_then(|a| a.parse().ok()).unwrap_or(0),
                })))
            }
            Some("nofit") => Ok(Claim::NoFit),
            _ => Ok(Claim::Empty),
        }
    }
}
