//! One attempt's life on this worker, from the claim that handed it a lease to the removal of
//! its container: book what the job holds (CPU slots or specific GPUs, memory) → run it in a
//! container → record the result (and claim the worker's next job in the same round trip), or
//! hand the job back → free what it held → launch that next job → remove what an unrecorded
//! attempt wrote → remove its container (a bounded number of removals trail).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use backon::Retryable;
use dcc_shared::clock::now_ms;
use dcc_shared::job::{JobRecord, Lane, QueueName};
use dcc_shared::queue::claim::Claimed;
use dcc_shared::queue::finish::{Finished, Outcome};
use dcc_shared::queue::lease::Lease;
use dcc_shared::storage::paths;
use tokio_util::sync::CancellationToken;

use crate::executor::{AttemptEnd, Leftovers};
use crate::loops::{self, Handed, Holds};
use crate::shutdown::Shutdown;
use crate::worker::{Running, Worker};

/// What a running attempt holds of its worker.
struct Held {
    /// CPU slots (CPU queue) or the number of GPUs (GPU queue).
    units: u32,
    /// The specific GPUs it runs on.
    gpu_ids: Vec<u32>,
    /// Memory (MiB) reserved for it.
    memory_mb: u32,
}

/// What an ended attempt passes on: a place for its clean-up taken before its result was
/// recorded, and the job claimed with that result (launched once this attempt's holds are free).
#[derive(Default)]
struct Passed<'a> {
    trailing: Option<tokio::sync::SemaphorePermit<'a>>,
    next: Option<Handed<'a>>,
    /// The result was not recorded: the files the attempt wrote go (after the next job is
    /// launched: it holds a lease that only a launched job renews).
    abandoned: bool,
}

/// One attempt, owned by its own task.
pub(crate) struct Attempt {
    worker: Arc<Worker>,
    lease: Lease,
    record: JobRecord,
    held: Held,
    cancel: CancellationToken,
    /// Ends the waits for an unreachable Redis (see [`Shutdown::give_up`]).
    shutdown: Shutdown,
}

impl Attempt {
    /// Books what the claimed job holds, and its lease, at once (so the next claim sees them),
    /// then runs the attempt in its own task.
    /// `sent`: when the claim was sent (the lease's deadline is no earlier than that plus its length).
    pub(crate) fn launch(worker: &Arc<Worker>, claimed: Claimed, sent: std::time::Instant, shutdown: &Shutdown) {
        let Claimed {
            lease,
            record,
            slots: units,
            memory_mb,
        } = claimed;
        let gpu_ids = match lease.queue {
            // The claim checked that `units` GPUs are free, and only the holder of the claim turn
            // takes them (the claim loop, or an attempt that claimed with its result); a job must
            // never run without the GPUs it asked for, so a miss hands it straight back.
            QueueName::Gpu => match worker.gpus.take(units) {
                Some(ids) => ids,
                None => {
                    let q = worker.queue.clone();
                    tokio::spawn(async move { q.release(&lease, now_ms()).await });
                    return;
                }
            },
            QueueName::Cpu => {
                worker.slots.take(units);
                Vec::new()
            }
        };
        let memory_mb = u32::try_from(memory_mb).unwrap_or(u32::MAX);
        worker.memory.take(memory_mb);
        let cancel = shutdown.terminate_token().child_token();
        worker.running.lock().unwrap_or_else(|p| p.into_inner()).insert(
            lease.job.clone(),
            Running {
                lease: lease.clone(),
                cancel: cancel.clone(),
                renewed: sent,
            },
        );
        worker.capacity_changed.notify_one();
        let span = tracing::info_span!("job", job_id = %lease.job, attempt = lease.attempt, gpus = ?gpu_ids);
        let attempt = Attempt {
            worker: worker.clone(),
            lease,
            record,
            held: Held {
                units,
                gpu_ids,
                memory_mb,
            },
            cancel,
            shutdown: shutdown.clone(),
        };
        tokio::spawn(tracing::Instrument::instrument(attempt.live(), span));
    }

    /// Run, then record (claiming the next job in the same round trip) or hand back, then free
    /// what it held, launch the job claimed with the result, and clean up. What it held is free
    /// before its container is removed (the container has exited: it uses no CPU, memory or GPU
    /// any more), so the next job starts while Docker removes this one; a bounded number of
    /// removals may trail their jobs, past which the slots wait for one of them.
    async fn live(self) {
        let (leftovers, passed) = self.run().await;
        let w = &self.worker;
        let trailing = match passed.trailing {
            Some(early) => Some(early),
            None => w.exec.trail_clean_up().await,
        };
        self.free();
        if let Some(next) = passed.next {
            next.launch(w);
        }
        if passed.abandoned {
            self.clean_abandoned().await;
        }
        if let Some(left) = leftovers {
            w.exec.clean_up(left).await;
        }
        drop(trailing);
    }

    /// Gives back what the attempt held and wakes the claim loop (and a drain waiting for it).
    fn free(&self) {
        let w = &self.worker;
        {
            let mut running = w.running.lock().unwrap_or_else(|p| p.into_inner());
            running.remove(&self.lease.job);
            if running.is_empty() {
                w.idle_since.store(now_ms(), Ordering::Relaxed);
            }
        }
        match self.lease.queue {
            QueueName::Gpu => {
                w.gpus.give(&self.held.gpu_ids);
                // Room came back: let the claim loop look again.
                w.slots.give(0);
            }
            QueueName::Cpu => w.slots.give(self.held.units),
        }
        w.memory.give(self.held.memory_mb);
        w.ended.notify_waiters();
        w.capacity_changed.notify_one();
    }

    /// Runs the attempt and records its result (or hands the job back); returns what it left,
    /// and what it passes on.
    async fn run(&self) -> (Option<Leftovers>, Passed<'_>) {
        // A drain stops claims, not claimed jobs: this one was `running` for clients before the
        // drain could have been seen, so it runs (the drain waits for it, and its timeout hands it
        // back like any other). Only a stop that ends attempts sends it straight back.
        if self.cancel.is_cancelled() {
            self.hand_back().await;
            return (None, Passed::default());
        }
        let spec = &self.record.spec;
        tracing::info!(event = "JobClaimed", image = %spec.image, "running");
        let exec = &self.worker.exec;
        let (end, leftovers) = exec
            .run(&self.record, self.lease.attempt, &self.held.gpu_ids, &self.cancel)
            .await;
        // An aborted attempt has nothing to record: its container goes now, not once an
        // unreachable Redis answers the hand-back. Otherwise it goes after the result is out:
        // nobody waits on Docker removing it.
        let leftovers = match (&end, leftovers) {
            (AttemptEnd::Aborted, Some(left)) => {
                exec.clean_up(left).await;
                None
            }
            (_, left) => left,
        };
        let passed = self.conclude(end).await;
        (leftovers, passed)
    }

    /// Records the result, or hands the job back (and removes the files of that attempt, which
    /// counts for nothing); an unrecorded result's files are removed by [`Attempt::live`].
    async fn conclude(&self, end: AttemptEnd) -> Passed<'_> {
        match end {
            AttemptEnd::Done(outcome) => {
                tracing::info!(
                    event = "JobFinished",
                    state = outcome.state.as_str(),
                    exit_code = ?outcome.exit_code,
                    error = ?outcome.error.as_ref().map(|e| &e.code),
                    "finished"
                );
                let (finished, mut passed) = self.record(&outcome).await;
                passed.abandoned = finished != Some(Finished::Recorded);
                return passed;
            }
            AttemptEnd::Aborted => {
                self.hand_back().await;
                self.clean_abandoned().await;
            }
        }
        Passed::default()
    }

    /// Runs `op` until Redis answers, waiting out an unreachable one with backoff; `None` once
    /// the worker gives up waiting (a shutdown that ran out of time).
    async fn persist<T, Fut>(&self, what: &str, op: impl FnMut() -> Fut) -> Option<dcc_shared::Result<T>>
    where
        Fut: std::future::Future<Output = dcc_shared::Result<T>>,
    {
        let tries = op
            .retry(dcc_shared::retry::until_reachable())
            .when(|e: &dcc_shared::Error| e.is_unavailable())
            .notify(|e, _| tracing::warn!(error = %e, "{what} failed; retrying"));
        tokio::select! {
            r = tries => Some(r),
            _ = self.shutdown.given_up() => {
                tracing::warn!("{what}: gave up waiting for Redis; the lease will expire");
                None
            }
        }
    }

    /// Hands the job back without using up an attempt (stopped by shutdown or a drain while it
    /// still held the lease). Cancelled, deleted or reaped jobs no longer hold it: a no-op.
    async fn hand_back(&self) {
        match self
            .persist("handing the job back", || {
                self.worker.queue.release(&self.lease, now_ms())
            })
            .await
        {
            Some(Ok(true)) => tracing::info!(event = "JobReleased", "handed back to the queue"),
            Some(Ok(false)) => tracing::info!(event = "JobAborted", "stopped from outside"),
            Some(Err(e)) => tracing::warn!(error = %e, "could not hand the job back; its lease will expire"),
            None => {}
        }
    }

    /// Records a result, waiting out an unreachable Redis: a result is not dropped because Redis
    /// blinked or the worker was cut off (even when its container was stopped meanwhile, the
    /// lease may still be held). The fenced finish decides: if the lease lapsed, it is refused
    /// and the job has already gone back to the queue. When a place for this attempt's clean-up
    /// is free now, the next job is claimed with the result, in the same round trip
    /// ([`loops::finish_and_claim`]); a slow Docker daemon (every place taken) slows claims down
    /// as before.
    async fn record(&self, outcome: &Outcome) -> (Option<Finished>, Passed<'_>) {
        let w = &self.worker;
        let retention = w.settings.retention.of(self.lease.lane);
        let mut passed = Passed {
            trailing: w.exec.try_trail_clean_up(),
            ..Passed::default()
        };
        let first = match passed.trailing {
            Some(_) => {
                let holds = Holds {
                    units: self.held.units,
                    memory_mb: self.held.memory_mb.into(),
                };
                let (finished, next) = loops::finish_and_claim(&**w, &self.lease, outcome, retention, holds).await;
                if next.is_none() {
                    // Nothing to launch: the place is not held through retries of the result.
                    passed.trailing = None;
                }
                passed.next = next;
                finished
            }
            None => w.queue.finish(&self.lease, outcome, retention, now_ms()).await,
        };
        let finished = match first {
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "recording the result failed; retrying");
                self.persist("recording the result", || {
                    w.queue.finish(&self.lease, outcome, retention, now_ms())
                })
                .await
            }
            answered => Some(answered),
        };
        (Self::recorded(finished), passed)
    }

    /// What the result's recording came to, logged.
    fn recorded(finished: Option<dcc_shared::Result<Finished>>) -> Option<Finished> {
        match finished? {
            Err(e @ dcc_shared::Error::NotDurable { .. }) => {
                // Written on the primary; lost only if it fails over before replicating, and
                // then the lease comes back with it and the job runs again.
                tracing::warn!(error = %e, event = "ResultNotConfirmed", "result recorded, not confirmed by replicas");
                Some(Finished::Recorded)
            }
            Ok(Finished::LeaseLost) => {
                tracing::warn!(
                    event = "LeaseLost",
                    "result refused: this attempt no longer holds the job"
                );
                Some(Finished::LeaseLost)
            }
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(error = %e, "recording the result failed");
                None
            }
        }
    }

    /// After an attempt that recorded nothing: remove the files it wrote, unless they are the
    /// job's current ones (a cancelled attempt keeps its logs). Which they are is Redis's to say:
    /// a worker cut off from it waits until it answers.
    async fn clean_abandoned(&self) {
        let (w, lease) = (&self.worker, &self.lease);
        let prefix = match self
            .persist("checking an abandoned attempt", || w.queue.get(&lease.job))
            .await
        {
            Some(Ok(None)) => paths::job(&lease.job),
            Some(Ok(Some(r))) if r.attempt != lease.attempt || r.worker.as_deref() != Some(&lease.worker) => {
                paths::attempt(&lease.job, lease.attempt)
            }
            Some(Ok(Some(_))) | None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "could not check an abandoned attempt");
                return;
            }
        };
        let storage = if lease.lane == Lane::Fast { &w.blobs } else { &w.storage };
        if let Err(e) = storage.delete_prefix(&prefix).await {
            tracing::warn!(error = %e, prefix, "could not remove an abandoned attempt's files");
        }
    }
}
