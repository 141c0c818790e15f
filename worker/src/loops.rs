//! The loops every worker runs against the queue, written once: claiming while there is room,
//! renewing the leases it holds, and following its own event channel (wake-ups, cancels).
//! `dcc worker` ([`crate::Worker`]) is one [`Host`]; the fleet simulator of the end-to-end
//! crate, whose "container" is a timer, is another, so what the fleet test and bench measure is
//! these loops, not a copy of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dcc_shared::clock::{REDIS_TIME, now_ms};
use dcc_shared::events::{Event, EventStatus, Events};
use dcc_shared::job::{JobId, JobState, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::{Claim, Claimant, Claimed};
use dcc_shared::queue::finish::{Finished, Outcome};
use dcc_shared::queue::handover::NextClaim;
use dcc_shared::queue::lease::{Lease, Renewed};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest the claim loop sleeps without a wake-up; a safety net for a missed event.
pub const POLL_FALLBACK: Duration = Duration::from_secs(2);
/// Pause after a failed claim (Redis down) before trying again.
pub const CLAIM_BACKOFF: Duration = Duration::from_secs(1);

/// What a worker has of one queue now.
#[derive(Clone, Copy, Debug, Default)]
pub struct Room {
    /// Slots (CPU slots, or GPUs for the GPU queue) free now.
    pub free: u32,
    /// All of them (0: the worker never claims from this queue).
    pub total: u32,
    /// Memory (MiB) not reserved by running jobs.
    pub free_memory_mb: u64,
    /// All the memory (MiB) it gives to jobs.
    pub total_memory_mb: u64,
}

/// What a loop saw, for hosts that measure (the fleet bench counts these).
#[derive(Debug)]
pub enum Seen<'a> {
    /// A claim answered: it took `took`, and claimed (or not).
    Claim {
        /// How long the claim call took.
        took: Duration,
        /// Whether it handed out a job.
        claimed: bool,
    },
    /// A claim or a renewal failed.
    Failed(&'a dcc_shared::Error),
    /// A renewal answered.
    Renewal,
}

/// A worker, as the loops see it.
pub trait Host: Send + Sync + 'static {
    /// The queue it claims from.
    fn queue(&self) -> &Queue;
    /// Its id (on leases and health keys).
    fn worker_id(&self) -> &str;
    /// The lease length it claims and renews with.
    fn lease(&self) -> Duration;
    /// How long to sleep while not claiming, before looking again.
    fn heartbeat(&self) -> Duration;
    /// Whether it claims now (healthy, not draining, not paused).
    fn claiming(&self) -> bool;
    /// Its room in `queue`.
    fn room(&self, queue: QueueName) -> Room;
    /// Starts a job it claimed with a call sent at `sent`, booking what the job holds at once.
    fn launch(self: &Arc<Self>, claimed: Claimed, sent: Instant);
    /// The attempts it runs: each lease and the token that stops its container.
    fn running(&self) -> Vec<(Lease, CancellationToken)>;
    /// The lease of `job` was renewed by a call sent at `sent`.
    fn renewed(&self, _job: &JobId, _sent: Instant) {}
    /// Notified when there may be work (a queued event, a resync, a drain taken back).
    fn wake(&self) -> &Notify;
    /// Resolves when a running job gave back what it held.
    fn released(&self) -> impl Future<Output = ()> + Send;
    /// Notes what a loop saw (nothing by default).
    fn saw(&self, _seen: Seen<'_>) {}
    /// Held by whoever claims (the claim loop, or an ending attempt handing its room over)
    /// until what it claimed is launched: two claims never count the same free room.
    fn claim_turn(&self) -> &tokio::sync::Mutex<()>;
}

/// Claims while there is room, until `stop` (a claim in flight is answered first, so a job it
/// got is launched, and the host decides what to do with it). Sleeps until there may be work (a
/// job event), room (a job ended) or the safety-net tick; while not claiming, leaves the idle
/// workers (new jobs should wake workers that claim) and looks again every heartbeat.
pub async fn claim_loop<H: Host>(host: Arc<H>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if !host.claiming() {
            if let Err(e) = host.queue().leave_idle(host.worker_id()).await {
                tracing::debug!(error = %e, "could not leave the idle workers");
            }
            tokio::select! {
                _ = tokio::time::sleep(host.heartbeat()) => {}
                _ = host.wake().notified() => {}
                _ = stop.cancelled() => return,
            }
            continue;
        }
        let (claimed, failed) = {
            let _turn = host.claim_turn().lock().await;
            claim_round(&host).await
        };
        if claimed {
            continue;
        }
        let pause = if failed { CLAIM_BACKOFF } else { POLL_FALLBACK };
        tokio::select! {
            _ = host.wake().notified(), if !failed => {}
            _ = host.released() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One claim per queue with room, GPU work first (GPUs are the scarcer resource; a worker
/// without GPUs never claims from the GPU queue, whose jobs wait for a GPU worker). Returns
/// (something was claimed, a claim failed).
pub async fn claim_round<H: Host>(host: &Arc<H>) -> (bool, bool) {
    let (mut claimed, mut failed) = (false, false);
    for queue in [QueueName::Gpu, QueueName::Cpu] {
        let room = host.room(queue);
        if room.free == 0 || !host.claiming() {
            continue;
        }
        let who = Claimant {
            worker: host.worker_id(),
            free_slots: room.free,
            total_slots: room.total,
            free_memory_mb: room.free_memory_mb,
            total_memory_mb: room.total_memory_mb,
            lease: host.lease(),
        };
        let sent = Instant::now();
        let answer = host.queue().claim(queue, &who, REDIS_TIME).await;
        let took = sent.elapsed();
        match answer {
            Ok(Claim::Claimed(c)) => {
                host.saw(Seen::Claim { took, claimed: true });
                host.launch(*c, sent);
                claimed = true;
            }
            Ok(Claim::NoFit | Claim::Empty) => host.saw(Seen::Claim { took, claimed: false }),
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; retrying");
                host.saw(Seen::Failed(&e));
                failed = true;
            }
        }
    }
    (claimed, failed)
}

/// A job claimed in the same round trip as the result of the attempt whose room it takes: it
/// is launched once that attempt gave back what it held ([`Handed::launch`]); until then no
/// other claim is made, so the room is not counted twice.
pub struct Handed<'h> {
    claimed: Claimed,
    sent: Instant,
    _turn: tokio::sync::MutexGuard<'h, ()>,
}

impl Handed<'_> {
    /// Starts the job (the attempt that made room for it has freed its holds).
    pub fn launch<H: Host>(self, host: &Arc<H>) {
        host.launch(self.claimed, self.sent);
    }
}

/// What one attempt holds of its worker, counted free for the claim sent with its result.
#[derive(Clone, Copy, Debug)]
pub struct Holds {
    /// CPU slots, or GPUs on the GPU queue.
    pub units: u32,
    /// Memory (MiB).
    pub memory_mb: u64,
}

/// Records the result of the attempt `lease` holds. When the host claims, has room in that
/// queue once the attempt's `holds` are free, and no other claim is under way, the next job of
/// the queue is claimed in the same round trip ([`Queue::finish_and_claim`]): the caller frees
/// the holds, then launches it. Otherwise (or when the claim found nothing) the claim loop
/// looks once the holds are freed, as it always did.
pub async fn finish_and_claim<'h, H: Host>(
    host: &'h H,
    lease: &Lease,
    outcome: &Outcome,
    retention: Duration,
    holds: Holds,
) -> (dcc_shared::Result<Finished>, Option<Handed<'h>>) {
    // (the room is read once the turn is held: a claim that held it before took some)
    let turn = host.claiming().then(|| host.claim_turn().try_lock().ok()).flatten();
    let room = host.room(lease.queue);
    let Some(turn) = turn.filter(|_| room.total > 0) else {
        return (host.queue().finish(lease, outcome, retention, now_ms()).await, None);
    };
    let next = NextClaim {
        queue: lease.queue,
        who: Claimant {
            worker: host.worker_id(),
            free_slots: (room.free + holds.units).min(room.total),
            total_slots: room.total,
            free_memory_mb: (room.free_memory_mb + holds.memory_mb).min(room.total_memory_mb),
            total_memory_mb: room.total_memory_mb,
            lease: host.lease(),
        },
        at: REDIS_TIME,
    };
    let sent = Instant::now();
    let handover = match host
        .queue()
        .finish_and_claim(lease, outcome, retention, now_ms(), &next)
        .await
    {
        Ok(h) => h,
        Err(e) => return (Err(e), None),
    };
    let took = sent.elapsed();
    let handed = match handover.next {
        Ok(Claim::Claimed(c)) => {
            host.saw(Seen::Claim { took, claimed: true });
            Some(Handed {
                claimed: *c,
                sent,
                _turn: turn,
            })
        }
        Ok(Claim::NoFit | Claim::Empty) => {
            host.saw(Seen::Claim { took, claimed: false });
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "the claim sent with a result failed; the claim loop looks again");
            host.saw(Seen::Failed(&e));
            None
        }
    };
    (handover.finished, handed)
}

/// Renews every held lease (one call per shard, not one per lease); a lost one stops its
/// container. A renewal that fails is left to the worker's watch of its leases' age
/// (`Worker::lease_watch`).
pub async fn renew_leases<H: Host>(host: &H) {
    let running = host.running();
    if running.is_empty() {
        return;
    }
    let leases: Vec<Lease> = running.iter().map(|(l, _)| l.clone()).collect();
    let sent = Instant::now();
    for batch in host.queue().renew_all(&leases, host.lease(), REDIS_TIME).await {
        let answers = match batch.answer {
            Ok(answers) => answers,
            Err(e) => {
                host.saw(Seen::Failed(&e));
                for &i in &batch.leases {
                    tracing::warn!(job_id = %leases[i].job, error = %e, "lease renewal failed");
                }
                continue;
            }
        };
        for (&i, renewed) in batch.leases.iter().zip(answers) {
            let (lease, cancel) = &running[i];
            host.saw(Seen::Renewal);
            match renewed {
                Renewed::Held => host.renewed(&lease.job, sent),
                Renewed::Lost => {
                    tracing::warn!(job_id = %lease.job, event = "LeaseLost", "lease lost; stopping the container");
                    cancel.cancel();
                }
            }
        }
    }
}

/// Follows the worker's own event channel: a queued job (or a resync) wakes the claim loop; a
/// cancel or delete of a job it runs stops that attempt's container.
pub async fn event_loop<H: Host>(host: Arc<H>, events: Events) {
    let mut rx = events.subscribe();
    loop {
        match rx.recv().await {
            Ok(Event::Job(ev)) => match ev.status {
                EventStatus::Now(JobState::Queued) => host.wake().notify_one(),
                s if s.stops_the_container() => {
                    let running = host.running();
                    let target = running.iter().find(|(lease, _)| lease.job.as_str() == ev.job_id);
                    if let Some((lease, cancel)) = target
                        && (ev.attempt == 0 || ev.attempt == lease.attempt)
                    {
                        tracing::info!(job_id = %ev.job_id, "job {}; stopping its container", s.as_str());
                        cancel.cancel();
                    }
                }
                _ => {}
            },
            Ok(Event::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => host.wake().notify_one(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}
