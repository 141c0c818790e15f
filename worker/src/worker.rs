//! The worker: a claim loop that takes jobs while slots are free, a heartbeat that renews the
//! leases of running attempts and the worker's health key, and a watch on job events that wakes
//! the claim loop when work arrives and stops containers of cancelled or deleted jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcc_shared::clock::{REDIS_TIME, now_ms};
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
use crate::gpu::{self, GpuPool};
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use crate::{WorkerError, docker, health, staging};

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
    /// CPUs of the host (`DCC_CPUS` or the CPU count).
    pub cpus: u32,
    /// CPU-queue slots; default CPUs − GPUs.
    pub cpu_slots: Option<u32>,
    /// Memory (MiB) given to jobs; `None`: the Docker host's memory.
    pub memory_mb: Option<u64>,
    /// GPUs, overriding detection (`DCC_GPUS`).
    pub gpus: Option<u32>,
    /// `DCC_GPU_MODE` as configured (`auto` is resolved at start).
    pub gpu_mode: String,
    /// Where the device nodes are.
    pub gpu_device_dir: std::path::PathBuf,
    /// Driver folders bound in `devices` mode.
    pub gpu_driver_binds: Vec<String>,
    /// `LD_LIBRARY_PATH` in `devices` mode.
    pub gpu_ld_library_path: Option<String>,
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
    /// When the lease was last known held (claimed or renewed).
    renewed: std::time::Instant,
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
    /// Memory (MiB) for jobs; each running job holds its `memoryMb`.
    memory: Slots,
    /// When the last running attempt ended (ms): the worker's idle start.
    idle_since: AtomicI64,
    /// Free GPUs (specific indexes).
    gpus: GpuPool,
    /// GPU models, for the health key.
    gpu_models: Vec<String>,
    /// The GPU device nodes whose disappearance makes the worker unhealthy.
    gpu_devices: gpu::WatchedDevices,
    running: Mutex<HashMap<JobId, Running>>,
    /// Signalled by events that mean "there may be work".
    wake: Notify,
    /// Signalled when free capacity changes, so the health key (read by `/api/v1/workers` and
    /// the scaler) is fresh without waiting for the next heartbeat.
    capacity_changed: Notify,
    /// Signalled when a running attempt ends (for the drain).
    ended: Notify,
    /// False while the self-check fails (Docker, disk): claim nothing.
    healthy: AtomicBool,
    /// Set while a drain is asked through Redis: claim nothing, finish what runs. Reversible
    /// (undrain), unlike `stopping`.
    draining: AtomicBool,
    /// Set once the process is shutting down: never claims again.
    stopping: AtomicBool,
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

/// Refuses to start when `DCC_DOCKER_RUNTIME` names a runtime the daemon does not have.
async fn check_runtime(docker: &bollard::Docker, runtime: Option<&str>) -> Result<(), WorkerError> {
    let Some(rt) = runtime else { return Ok(()) };
    let known: Vec<String> = docker
        .info()
        .await?
        .runtimes
        .map(|r| r.into_keys().collect())
        .unwrap_or_default();
    if known.iter().any(|k| k == rt) {
        return Ok(());
    }
    Err(WorkerError::Runtime(rt.to_string(), known.join(", ")))
}

/// The memory (MiB) jobs may reserve on this worker: configured, else the Docker host's. Jobs
/// reserve their limit while they run, so a worker never accepts more than it has.
async fn job_memory_mb(docker: &bollard::Docker, configured: Option<u64>) -> Result<u32, WorkerError> {
    let mb = match configured {
        Some(m) => m,
        None => docker.info().await?.mem_total.unwrap_or(0).max(0) as u64 >> 20,
    };
    Ok(u32::try_from(mb).unwrap_or(u32::MAX))
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
        if settings.exec.tmp_dir.exists() {
            staging::unlock(&settings.exec.tmp_dir);
        }
        let _ = tokio::fs::remove_dir_all(&settings.exec.tmp_dir).await;
        tokio::fs::create_dir_all(&settings.exec.tmp_dir)
            .await
            .map_err(|e| WorkerError::Scratch(settings.exec.tmp_dir.display().to_string(), e))?;
        // Absolute, since bind mode hands these paths to the Docker daemon.
        settings.exec.tmp_dir = tokio::fs::canonicalize(&settings.exec.tmp_dir)
            .await
            .map_err(|e| WorkerError::Scratch(settings.exec.tmp_dir.display().to_string(), e))?;
        check_runtime(&docker, settings.exec.limits.runtime.as_deref()).await?;
        // GPUs: detect, then decide how to attach them (auto: the nvidia runtime if dockerd has it).
        let detected = gpu::detect(settings.gpus, &settings.gpu_device_dir);
        if detected.count > 0 {
            let has_runtime = docker
                .info()
                .await
                .ok()
                .and_then(|i| i.runtimes)
                .is_some_and(|r| r.contains_key("nvidia"));
            let mode = gpu::GpuMode::resolve(&settings.gpu_mode, has_runtime).map_err(WorkerError::Gpu)?;
            tracing::info!(gpus = detected.count, source = detected.source, mode = mode.as_str(), models = ?detected.models, "GPUs");
            settings.exec.gpu = Some(gpu::GpuSettings {
                mode,
                device_dir: settings.gpu_device_dir.clone(),
                driver_binds: settings.gpu_driver_binds.clone(),
                ld_library_path: settings.gpu_ld_library_path.clone(),
            });
        }
        let memory_mb = job_memory_mb(&docker, settings.memory_mb).await?;
        let cpu_slots = settings
            .cpu_slots
            .unwrap_or(settings.cpus.saturating_sub(detected.count));
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
            slots: Slots::new(cpu_slots),
            memory: Slots::new(memory_mb),
            gpus: GpuPool::new(detected.count),
            gpu_models: detected.models.clone(),
            gpu_devices: gpu::WatchedDevices::at_start(&settings.gpu_device_dir, detected.count),
            settings,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            capacity_changed: Notify::new(),
            idle_since: AtomicI64::new(now_ms()),
            ended: Notify::new(),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            started_at: now_ms(),
            instance,
        });
        w.queue.beat(&w.info(), w.settings.lease).await?;
        tracing::info!(worker = %w.settings.id, cpu_slots, memory_mb, gpus = detected.count, "worker started");
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
            gpus: self.gpus.total(),
            free_cpu_slots: self.slots.free(),
            memory_mb: self.memory.total().into(),
            free_memory_mb: self.memory.free().into(),
            free_gpus: self.gpus.free(),
            running_jobs: running,
            last_seen: now_ms(),
            started_at: self.started_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance: self.instance.clone(),
            reason: self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            gpu_models: self.gpu_models.clone(),
            idle_since: (running == 0).then(|| self.idle_since.load(Ordering::Relaxed)),
        }
    }

    /// True while the worker claims nothing: shutting down, or asked to drain.
    fn is_draining(&self) -> bool {
        self.stopping.load(Ordering::Relaxed) || self.draining.load(Ordering::Relaxed)
    }

    /// Runs until `shutdown` completes: claims until quiet (pausing while a drain is asked
    /// through Redis, which keeps the worker registered as `DRAINING` until undrained or
    /// signalled), then waits for running attempts (which `terminate` stops and hands back),
    /// then unregisters.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let beat = tokio::spawn(self.clone().heartbeat_loop());
        let watch = tokio::spawn(self.clone().event_loop());
        self.claim_loop(&shutdown).await;
        self.stopping.store(true, Ordering::Relaxed);
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
        beat.abort();
        watch.abort();
        if let Err(e) = self.queue.unregister(&self.settings.id).await {
            tracing::warn!(error = %e, "could not unregister the worker");
        }
        tracing::info!("worker stopped");
    }

    /// Free and total slots of a queue on this worker: GPUs for the GPU queue, CPU slots else.
    fn room(&self, queue: QueueName) -> (u32, u32) {
        match queue {
            QueueName::Gpu => (self.gpus.free(), self.gpus.total()),
            QueueName::Cpu => (self.slots.free(), self.slots.total()),
        }
    }

    async fn claim_loop(self: &Arc<Self>, shutdown: &Shutdown) {
        loop {
            if shutdown.is_quiet() {
                return;
            }
            if !self.healthy.load(Ordering::Relaxed) || self.is_draining() {
                // The heartbeat re-checks both, and wakes us when a drain is taken back.
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.heartbeat) => {}
                    _ = self.wake.notified() => {}
                    _ = shutdown.quieted() => return,
                }
                continue;
            }
            // GPU work first: GPUs are the scarcer resource. A worker without GPUs never claims
            // from the GPU queue, whose jobs wait for a GPU worker.
            let mut claimed = false;
            let mut failed = false;
            for queue in [QueueName::Gpu, QueueName::Cpu] {
                let (free, total) = self.room(queue);
                if free == 0 || self.is_draining() {
                    continue;
                }
                let who = Claimant {
                    worker: &self.settings.id,
                    free_slots: free,
                    total_slots: total,
                    free_memory_mb: self.memory.free().into(),
                    total_memory_mb: self.memory.total().into(),
                    lease: self.settings.lease,
                };
                match self.queue.claim(queue, &who, REDIS_TIME).await {
                    Ok(Claim::Claimed {
                        job,
                        attempt,
                        slots,
                        lane,
                        memory_mb,
                    }) => {
                        let memory_mb = u32::try_from(memory_mb).unwrap_or(u32::MAX);
                        self.launch(job, attempt, queue, (slots, memory_mb), lane, shutdown);
                        claimed = true;
                    }
                    Ok(Claim::NoFit | Claim::Empty) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "claim failed; retrying");
                        failed = true;
                    }
                }
            }
            if claimed {
                continue;
            }
            let pause = if failed { CLAIM_BACKOFF } else { POLL_FALLBACK };
            // Wait for work (a job event), for room (a job ended), or for the safety-net tick.
            tokio::select! {
                _ = self.wake.notified(), if !failed => {}
                _ = self.slots.released() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.quieted() => return,
            }
        }
    }

    /// Books the slots (or specific GPUs) and the lease at once (so the next claim sees them),
    /// then runs the attempt in its own task.
    fn launch(
        self: &Arc<Self>,
        job: JobId,
        attempt: u32,
        queue: QueueName,
        (units, memory_mb): (u32, u32),
        lane: Lane,
        shutdown: &Shutdown,
    ) {
        let gpu_ids = match queue {
            // The claim checked that `units` GPUs are free, and only this loop takes them; a job
            // must never run without the GPUs it asked for, so a miss hands it straight back.
            QueueName::Gpu => match self.gpus.take(units) {
                Some(ids) => ids,
                None => {
                    let (q, lease) = (
                        self.queue.clone(),
                        Lease {
                            job,
                            queue,
                            lane,
                            attempt,
                            worker: self.settings.id.clone(),
                        },
                    );
                    tokio::spawn(async move { q.release(&lease, now_ms()).await });
                    return;
                }
            },
            QueueName::Cpu => {
                self.slots.take(units);
                Vec::new()
            }
        };
        self.memory.take(memory_mb);
        let cancel = shutdown.terminate_token().child_token();
        let lease = Lease {
            job: job.clone(),
            queue,
            lane,
            attempt,
            worker: self.settings.id.clone(),
        };
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(
            job.clone(),
            Running {
                lease: lease.clone(),
                cancel: cancel.clone(),
                renewed: std::time::Instant::now(),
            },
        );
        self.capacity_changed.notify_one();
        let me = self.clone();
        tokio::spawn(async move {
            let gpus = format!("{gpu_ids:?}");
            let span = tracing::info_span!("job", job_id = %job, attempt, gpus);
            let _ = tracing::Instrument::instrument(me.clone().attempt(lease, cancel, gpu_ids.clone()), span).await;
            {
                let mut running = me.running.lock().unwrap_or_else(|p| p.into_inner());
                running.remove(&job);
                if running.is_empty() {
                    me.idle_since.store(now_ms(), Ordering::Relaxed);
                }
            }
            match queue {
                QueueName::Gpu => {
                    me.gpus.give(&gpu_ids);
                    // Room came back: let the claim loop look again.
                    me.slots.give(0);
                }
                QueueName::Cpu => me.slots.give(units),
            }
            me.memory.give(memory_mb);
            me.ended.notify_waiters();
            me.capacity_changed.notify_one();
        });
    }

    async fn attempt(self: Arc<Self>, lease: Lease, cancel: CancellationToken, gpu_ids: Vec<u32>) {
        if cancel.is_cancelled() || self.is_draining() {
            // Claimed while shutdown or a drain began: straight back to the queue.
            if let Err(e) = self.queue.release(&lease, now_ms()).await {
                tracing::warn!(error = %e, "could not hand the job back; its lease will expire");
            }
            return;
        }
        let record = match self.queue.get(&lease.job).await {
            Ok(Some(r)) if r.state == JobState::Running && r.attempt == lease.attempt => r,
            Ok(_) => {
                // Paused (or slow) between the claim and here: the lease went to a newer attempt
                // or the job ended. Nothing was started, so nothing is to stop.
                tracing::warn!(
                    event = "LeaseLost",
                    "lease lost before the attempt started; not running it"
                );
                return;
            }
            Err(e) => {
                // The lease stays; if Redis is really gone the reaper hands the job out again.
                tracing::warn!(error = %e, "could not read the claimed job");
                return;
            }
        };
        tracing::info!(event = "JobClaimed", image = %record.spec.image, "running");
        match self.exec.run(&record, lease.attempt, &gpu_ids, &cancel).await {
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
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.capacity_changed.notified() => {
                    // Capacity only: the full check waits for the tick.
                    if let Err(e) = self.queue.beat(&self.info(), self.settings.lease).await {
                        tracing::debug!(error = %e, "capacity beat failed");
                    }
                    continue;
                }
            }
            let problem = match health::check(
                self.exec.docker(),
                &self.settings.exec.tmp_dir,
                self.settings.disk_min_free_percent,
            )
            .await
            {
                None => self.gpu_devices.problem(),
                p => p,
            };
            let was_healthy = self.healthy.load(Ordering::Relaxed);
            if problem.is_some() == was_healthy {
                match &problem {
                    Some(p) => tracing::warn!(event = "WorkerUnhealthy", reason = p, "claiming nothing"),
                    None => tracing::info!(event = "WorkerHealthy", "claiming again"),
                }
            }
            self.healthy.store(problem.is_none(), Ordering::Relaxed);
            *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = problem.unwrap_or_default();
            self.follow_drain_flag().await;
            self.renew_leases().await;
            if let Err(e) = self.queue.beat(&self.info(), self.settings.lease).await {
                tracing::warn!(error = %e, "health beat failed");
            }
            self.remove_strays().await;
        }
    }

    /// Renews every held lease. A lease that could not be renewed for a whole lease length has
    /// expired in Redis (the reaper may have given the job to another worker): its container is
    /// stopped rather than run on as a duplicate nobody can record.
    async fn renew_leases(&self) {
        for (id, lease, cancel) in self.running_ids() {
            match self.queue.renew(&lease, self.settings.lease, REDIS_TIME).await {
                Ok(Renewed::Held) => {
                    let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(r) = g.get_mut(&id) {
                        r.renewed = std::time::Instant::now();
                    }
                }
                Ok(Renewed::Lost) => {
                    tracing::warn!(job_id = %id, event = "LeaseLost", "lease lost; stopping the container");
                    cancel.cancel();
                }
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "lease renewal failed");
                    let since = {
                        let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
                        g.get(&id).map(|r| r.renewed.elapsed())
                    };
                    if since.is_some_and(|s| s >= self.settings.lease) {
                        tracing::warn!(
                            job_id = %id,
                            event = "LeaseExpired",
                            "cut off from Redis for a whole lease: the job may run elsewhere now; stopping the container"
                        );
                        cancel.cancel();
                    }
                }
            }
        }
    }

    /// Starts or ends a drain asked through Redis (a failed read changes nothing).
    async fn follow_drain_flag(&self) {
        let Ok(asked) = self.queue.drain_requested(&self.settings.id, &self.instance).await else {
            return;
        };
        if self.draining.swap(asked, Ordering::Relaxed) != asked {
            if asked {
                tracing::info!(event = "DrainRequested", "asked to drain: no new claims");
            } else {
                tracing::info!(event = "DrainCancelled", "drain taken back: claiming again");
            }
            self.wake.notify_one();
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
