//! The worker: a claim loop that takes jobs while slots are free, a heartbeat that renews the
//! leases of running attempts and the worker's health key, and a watch on job events that wakes
//! the claim loop when work arrives and stops containers of cancelled or deleted jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcc_shared::clock::now_ms;
use dcc_shared::events::{Event, Events};
use dcc_shared::job::{JobId, JobState, Lane, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::{Claim, Claimant};
use dcc_shared::queue::finish::{Finished, Outcome};
use dcc_shared::queue::reap::Retention;
use dcc_shared::queue::renew::{Lease, Renewed};
use dcc_shared::storage::{Storage, paths};
use dcc_shared::workers::{Health, WorkerInfo};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::executor::{AttemptEnd, ExecSettings, Executor};
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use crate::{WorkerError, docker, health};

/// Longest the claim loop sleeps without a wake-up; a safety net for a missed event.
const POLL_FALLBACK: Duration = Duration::from_secs(2);
/// Pause after a failed claim (Redis down) before trying again.
const CLAIM_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between tries to record a result while Redis is unreachable.
const FINISH_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a worker is set up.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Stable id (labels, leases, health key).
    pub id: String,
    /// CPU slots.
    pub cpus: u32,
    /// Lease length of a claimed attempt.
    pub lease: Duration,
    /// Interval of lease renewal and health beats.
    pub heartbeat: Duration,
    /// Retention of finished jobs.
    pub retention: Retention,
    /// Executor settings.
    pub exec: ExecSettings,
    /// Concurrent container creations.
    pub docker_concurrency: usize,
    /// Free-disk threshold of the health check, in percent (0: off).
    pub disk_min_free_percent: u64,
}

/// One running attempt.
struct Running {
    lease: Lease,
    cancel: CancellationToken,
}

/// A started worker.
pub struct Worker {
    queue: Queue,
    storage: Arc<dyn Storage>,
    blobs: Arc<dyn Storage>,
    events: Events,
    exec: Executor,
    settings: WorkerSettings,
    slots: Slots,
    running: Mutex<HashMap<JobId, Running>>,
    /// Signalled by events that mean "there may be work".
    wake: Notify,
    /// Signalled when a running attempt ends (for the drain).
    ended: Notify,
    /// False while the self-check fails (Docker, disk): claim nothing.
    healthy: AtomicBool,
    /// Set once asked to drain through Redis: claim nothing, finish what runs.
    draining: AtomicBool,
    /// Why it is unhealthy.
    reason: Mutex<String>,
    started_at: i64,
    instance: String,
}

/// Longest pause between tries to reach Redis at start-up.
const START_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The host name, the default worker id.
pub fn default_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

impl Worker {
    /// Connects to Docker, makes sure no other live worker uses this id, removes this worker's
    /// leftover containers, and registers it.
    pub async fn start(
        queue: Queue,
        storage: Arc<dyn Storage>,
        blobs: Arc<dyn Storage>,
        events: Events,
        settings: WorkerSettings,
    ) -> Result<Arc<Self>, WorkerError> {
        let docker = docker::connect().await?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        // Redis may be down at boot (or restarting): wait for it rather than exit.
        let mut pause = Duration::from_millis(200);
        let mut seen: Option<i64> = None;
        loop {
            let other = match queue.worker(&settings.id).await {
                Ok(o) => o,
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "Redis is not reachable; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(START_MAX_BACKOFF);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // A health key of this id that is still fresh: either our own previous life (crashed,
            // its key not yet expired: wait it out) or a live twin (its beats keep coming: refuse).
            match other {
                Some(o) if now_ms() - o.last_seen < settings.lease.as_millis() as i64 => {
                    if seen.is_some_and(|s| s != o.last_seen) {
                        return Err(WorkerError::IdInUse(settings.id.clone()));
                    }
                    if seen.is_none() {
                        tracing::info!("a previous worker with this id beat recently; waiting for it to expire");
                    }
                    seen = Some(o.last_seen);
                    tokio::time::sleep(settings.heartbeat.min(Duration::from_secs(1))).await;
                }
                _ => break,
            }
        }
        let removed = docker::remove_leftovers(&docker, &settings.id, |_| false).await?;
        if removed > 0 {
            tracing::info!(removed, "removed leftover containers of a previous run");
        }
        // Scratch files of a previous life (a crash skips their clean-up) go too.
        let mut settings = settings;
        settings.exec.tmp_dir = settings.exec.tmp_dir.join(format!("dcc-{}", settings.id));
        let _ = tokio::fs::remove_dir_all(&settings.exec.tmp_dir).await;
        tokio::fs::create_dir_all(&settings.exec.tmp_dir)
            .await
            .map_err(|e| WorkerError::Scratch(settings.exec.tmp_dir.display().to_string(), e))?;
        let exec = Executor::new(
            docker,
            storage.clone(),
            blobs.clone(),
            settings.exec.clone(),
            settings.docker_concurrency,
        );
        let w = Arc::new(Worker {
            queue,
            storage,
            blobs,
            events,
            exec,
            slots: Slots::new(settings.cpus),
            settings,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            ended: Notify::new(),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            started_at: now_ms(),
            instance,
        });
        w.queue.beat(&w.info(), w.settings.lease).await?;
        tracing::info!(worker = %w.settings.id, cpus = w.settings.cpus, "worker started");
        Ok(w)
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    fn running_ids(&self) -> Vec<(JobId, Lease, CancellationToken)> {
        let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .map(|(k, r)| (k.clone(), r.lease.clone(), r.cancel.clone()))
            .collect()
    }

    fn info(&self) -> WorkerInfo {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).len() as u32;
        let health = if self.is_draining() {
            Health::Draining
        } else if !self.healthy.load(Ordering::Relaxed) {
            Health::Unhealthy
        } else {
            Health::Healthy
        };
        WorkerInfo {
            id: self.settings.id.clone(),
            health,
            cpus: self.slots.total(),
            gpus: 0,
            free_cpu_slots: self.slots.free(),
            free_gpus: 0,
            running_jobs: running,
            last_seen: now_ms(),
            started_at: self.started_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance: self.instance.clone(),
            reason: self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// True once the worker stopped claiming (signal or drain request).
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Runs until `shutdown` completes: claims while neither quiet nor draining, then waits for
    /// running attempts (which `terminate` stops and hands back), then unregisters. A drain asked
    /// through Redis keeps the worker registered as `DRAINING` until the process is signalled.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let beat = tokio::spawn(self.clone().heartbeat_loop());
        let watch = tokio::spawn(self.clone().event_loop());
        self.claim_loop(&shutdown).await;
        self.draining.store(true, Ordering::Relaxed);
        tracing::info!(running = self.running_ids().len(), "worker draining: no new claims");
        loop {
            let ended = self.ended.notified();
            if self.running_ids().is_empty() {
                break;
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        if !shutdown.is_quiet() {
            tracing::info!("drained; idle until the process is stopped");
            shutdown.quieted().await;
        }
        beat.abort();
        watch.abort();
        if let Err(e) = self.queue.unregister(&self.settings.id).await {
            tracing::warn!(error = %e, "could not unregister the worker");
        }
        tracing::info!("worker stopped");
    }

    async fn claim_loop(self: &Arc<Self>, shutdown: &Shutdown) {
        loop {
            if shutdown.is_quiet() || self.is_draining() {
                return;
            }
            if !self.healthy.load(Ordering::Relaxed) {
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.heartbeat) => {}
                    _ = shutdown.quieted() => return,
                }
                continue;
            }
            let free = self.slots.free();
            if free == 0 {
                tokio::select! {
                    _ = self.slots.released() => {}
                    _ = shutdown.quieted() => return,
                }
                continue;
            }
            let who = Claimant {
                worker: &self.settings.id,
                free_slots: free,
                total_slots: self.slots.total(),
                lease: self.settings.lease,
            };
            match self.queue.claim(QueueName::Cpu, &who, now_ms()).await {
                Ok(Claim::Claimed {
                    job,
                    attempt,
                    slots,
                    lane,
                }) => self.launch(job, attempt, slots, lane, shutdown),
                // Asked to drain by the heartbeat: the loop head sees it.
                Ok(_) if self.is_draining() => {}
                Ok(Claim::NoFit) => tokio::select! {
                    _ = self.slots.released() => {}
                    _ = tokio::time::sleep(POLL_FALLBACK) => {}
                    _ = shutdown.quieted() => return,
                },
                Ok(Claim::Empty) => tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL_FALLBACK) => {}
                    _ = shutdown.quieted() => return,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(CLAIM_BACKOFF) => {}
                        _ = shutdown.quieted() => return,
                    }
                }
            }
        }
    }

    /// Books the slots and the lease at once (so the next claim sees them), then runs the
    /// attempt in its own task.
    fn launch(self: &Arc<Self>, job: JobId, attempt: u32, slots: u32, lane: Lane, shutdown: &Shutdown) {
        self.slots.take(slots);
        let cancel = shutdown.terminate_token().child_token();
        let lease = Lease {
            job: job.clone(),
            queue: QueueName::Cpu,
            lane,
            attempt,
            worker: self.settings.id.clone(),
        };
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(
            job.clone(),
            Running {
                lease: lease.clone(),
                cancel: cancel.clone(),
            },
        );
        let me = self.clone();
        tokio::spawn(async move {
            let span = tracing::info_span!("job", job_id = %job, attempt);
            let _ = tracing::Instrument::instrument(me.clone().attempt(lease, cancel), span).await;
            me.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
            me.slots.give(slots);
            me.ended.notify_waiters();
        });
    }

    async fn attempt(self: Arc<Self>, lease: Lease, cancel: CancellationToken) {
        if cancel.is_cancelled() || self.is_draining() {
            // Claimed while shutdown or a drain began: straight back to the queue.
            if let Err(e) = self.queue.release(&lease, now_ms()).await {
                tracing::warn!(error = %e, "could not hand the job back; its lease will expire");
            }
            return;
        }
        let record = match self.queue.get(&lease.job).await {
            Ok(Some(r)) if r.state == JobState::Running && r.attempt == lease.attempt => r,
            Ok(_) => return,
            Err(e) => {
                // The lease stays; if Redis is really gone the reaper hands the job out again.
                tracing::warn!(error = %e, "could not read the claimed job");
                return;
            }
        };
        tracing::info!(event = "JobClaimed", image = %record.spec.image, "running");
        match self.exec.run(&record, lease.attempt, &cancel).await {
            AttemptEnd::Done(outcome) => {
                tracing::info!(
                    event = "JobFinished",
                    state = outcome.state.as_str(),
                    exit_code = ?outcome.exit_code,
                    error = ?outcome.error.as_ref().map(|e| &e.code),
                    "finished"
                );
                if self.record(&lease, &outcome, &cancel).await != Some(Finished::Recorded) {
                    self.clean_abandoned(&lease).await;
                }
            }
            AttemptEnd::Aborted => {
                // Stopped by shutdown while still holding the lease: hand it back without using
                // up an attempt. Cancelled, deleted or reaped jobs no longer hold it: a no-op.
                match self.queue.release(&lease, now_ms()).await {
                    Ok(true) => tracing::info!(event = "JobReleased", "handed back to the queue"),
                    Ok(false) => tracing::info!(event = "JobAborted", "stopped from outside"),
                    Err(e) => tracing::warn!(error = %e, "could not hand the job back; its lease will expire"),
                }
                self.clean_abandoned(&lease).await;
            }
        }
    }

    /// Records a result, retrying while Redis is unreachable: a result is not dropped because
    /// Redis blinked. If the lease lapsed meanwhile, the finish is refused (fencing) and the job
    /// has already gone back to the queue.
    async fn record(&self, lease: &Lease, outcome: &Outcome, cancel: &CancellationToken) -> Option<Finished> {
        let mut pause = Duration::from_millis(100);
        loop {
            match self
                .queue
                .finish(lease, outcome, self.settings.retention.of(lease.lane), now_ms())
                .await
            {
                Ok(f) => {
                    if f == Finished::LeaseLost {
                        tracing::warn!(
                            event = "LeaseLost",
                            "result refused: this attempt no longer holds the job"
                        );
                    }
                    return Some(f);
                }
                Err(e) if e.is_unavailable() && !cancel.is_cancelled() => {
                    tracing::warn!(error = %e, "recording the result failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(FINISH_MAX_BACKOFF);
                }
                Err(e) => {
                    tracing::error!(error = %e, "recording the result failed");
                    return None;
                }
            }
        }
    }

    /// After an attempt that recorded nothing: remove the files it wrote, unless they are the
    /// job's current ones (a cancelled attempt keeps its logs).
    async fn clean_abandoned(&self, lease: &Lease) {
        let prefix = match self.queue.get(&lease.job).await {
            Ok(None) => paths::job(&lease.job),
            Ok(Some(r)) if r.attempt != lease.attempt || r.worker.as_deref() != Some(&lease.worker) => {
                paths::attempt(&lease.job, lease.attempt)
            }
            Ok(Some(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not check an abandoned attempt");
                return;
            }
        };
        let storage = if lease.lane == Lane::Fast {
            &self.blobs
        } else {
            &self.storage
        };
        if let Err(e) = storage.delete_prefix(&prefix).await {
            tracing::warn!(error = %e, prefix, "could not remove an abandoned attempt's files");
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        loop {
            tick.tick().await;
            let problem = health::check(
                self.exec.docker(),
                &self.settings.exec.tmp_dir,
                self.settings.disk_min_free_percent,
            )
            .await;
            let was_healthy = self.healthy.load(Ordering::Relaxed);
            if problem.is_some() == was_healthy {
                match &problem {
                    Some(p) => tracing::warn!(event = "WorkerUnhealthy", reason = p, "claiming nothing"),
                    None => tracing::info!(event = "WorkerHealthy", "claiming again"),
                }
            }
            self.healthy.store(problem.is_none(), Ordering::Relaxed);
            *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = problem.unwrap_or_default();
            if !self.is_draining() && matches!(self.queue.drain_requested(&self.settings.id).await, Ok(true)) {
                tracing::info!(event = "DrainRequested", "asked to drain: no new claims");
                self.draining.store(true, Ordering::Relaxed);
                self.wake.notify_one();
            }
            for (id, lease, cancel) in self.running_ids() {
                match self.queue.renew(&lease, self.settings.lease, now_ms()).await {
                    Ok(Renewed::Held) => {}
                    Ok(Renewed::Lost) => {
                        tracing::warn!(job_id = %id, event = "LeaseLost", "lease lost; stopping the container");
                        cancel.cancel();
                    }
                    Err(e) => tracing::warn!(job_id = %id, error = %e, "lease renewal failed"),
                }
            }
            if let Err(e) = self.queue.beat(&self.info(), self.settings.lease).await {
                tracing::warn!(error = %e, "health beat failed");
            }
            self.remove_strays().await;
        }
    }

    /// Removes this worker's containers whose job it no longer runs (an attempt that died
    /// half-way, a container that survived a crash of its task).
    async fn remove_strays(&self) {
        let running = |job: &str| {
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            g.keys().any(|k| k.as_str() == job)
        };
        match docker::remove_leftovers(self.exec.docker(), &self.settings.id, running).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stray containers"),
            Err(e) => tracing::debug!(error = %e, "listing containers failed"),
        }
    }

    async fn event_loop(self: Arc<Self>) {
        let mut rx = self.events.subscribe();
        loop {
            match rx.recv().await {
                Ok(Event::Job(ev)) => match ev.status.as_str() {
                    "queued" => self.wake.notify_one(),
                    "cancelled" | "deleted" => {
                        let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(r) = g.iter().find(|(id, _)| id.as_str() == ev.job_id).map(|(_, r)| r)
                            && (ev.attempt == 0 || ev.attempt == r.lease.attempt)
                        {
                            tracing::info!(job_id = %ev.job_id, "job {}; stopping its container", ev.status);
                            r.cancel.cancel();
                        }
                    }
                    _ => {}
                },
                Ok(Event::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => self.wake.notify_one(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
