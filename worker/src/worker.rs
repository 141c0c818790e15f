//! The worker: the [`Host`] the shared loops of [`crate::loops`] run on (claiming while slots
//! are free, renewing leases, the watch on its own event channel), its heartbeat (drain flag,
//! lease renewal, health key), its Docker loop (self-check, strays, warm pool) and the watch of
//! its leases' age that stops a cut-off attempt's container.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::Retryable;
use dcc_shared::clock::now_ms;
use dcc_shared::events::Events;
use dcc_shared::job::{JobId, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::Claimed;
use dcc_shared::queue::lease::Lease;
use dcc_shared::storage::Storage;
use dcc_shared::workers::{CAPACITY_BEAT_GAP, Capacity, Health, WorkerInfo};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::attempt::Attempt;
use crate::executor::Executor;
use crate::files::FilesMode;
use crate::gpu::{self, GpuPool};
use crate::loops::{self, Host, Room};
use crate::settings::WorkerSettings;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use crate::warm::WarmPool;
use crate::{WorkerError, docker, files, health};

/// One running attempt, as the heartbeat and the event watch see it.
pub(crate) struct Running {
    pub(crate) lease: Lease,
    pub(crate) cancel: CancellationToken,
    /// When the last claim or renewal that succeeded was sent: Redis's deadline for the lease is
    /// no earlier than this plus the lease length, whatever the round trip took.
    pub(crate) renewed: std::time::Instant,
}

/// How long after the last successful renewal was sent a worker cut off from Redis stops the
/// attempt's container: a margin (a quarter of the lease, 1 s to 10 s) before Redis can expire
/// the lease and the reaper hand the job to another worker, so two copies never run at once;
/// never before a renewal has failed twice over.
pub(crate) fn stop_after(lease: Duration, heartbeat: Duration) -> Duration {
    let margin = (lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
    lease.saturating_sub(margin).max((lease + heartbeat) / 2)
}

/// A started worker.
pub struct Worker {
    pub(crate) queue: Queue,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) blobs: Arc<dyn Storage>,
    events: Events,
    pub(crate) exec: Executor,
    pub(crate) settings: WorkerSettings,
    pub(crate) slots: Slots,
    /// Memory (MiB) for jobs; each running job holds its `memoryMb`.
    pub(crate) memory: Slots,
    /// When the last running attempt ended (ms): the worker's idle start.
    pub(crate) idle_since: AtomicI64,
    /// Free GPUs (specific indexes).
    pub(crate) gpus: GpuPool,
    /// GPU models, for the health key.
    gpu_models: Vec<String>,
    /// The GPU device nodes whose disappearance makes the worker unhealthy.
    gpu_devices: gpu::WatchedDevices,
    pub(crate) running: Mutex<HashMap<JobId, Running>>,
    /// Signalled by events that mean "there may be work".
    wake: Notify,
    /// Held by whoever claims ([`Host::claim_turn`]).
    claim_turn: tokio::sync::Mutex<()>,
    /// Signalled when free capacity changes, so the health key (read by `/api/v1/workers` and
    /// the scaler) is fresh without waiting for the next heartbeat.
    pub(crate) capacity_changed: Notify,
    /// Signalled when a running attempt ends (for the drain).
    pub(crate) ended: Notify,
    /// False while the self-check fails (Docker, disk): claim nothing.
    healthy: AtomicBool,
    /// Set while a drain is asked through Redis: claim nothing, finish what runs. Reversible
    /// (undrain), unlike `stopping`.
    draining: AtomicBool,
    /// Set once the process is shutting down: never claims again.
    stopping: AtomicBool,
    /// Why it is unhealthy.
    reason: Mutex<String>,
    /// The shutdown it runs under (set by [`Worker::run`]): attempts stop with its terminate step.
    shutdown: std::sync::OnceLock<Shutdown>,
    started_at: i64,
    instance: String,
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

/// Waits until no other live worker holds this id: a health key of this id that is still fresh is
/// either this worker's previous life (crashed, its key not yet expired: wait it out) or a live
/// twin (its beats keep coming: refuse). Redis may be down at boot (or restarting): waits for it
/// rather than exit.
async fn wait_for_own_id(queue: &Queue, settings: &WorkerSettings) -> Result<(), WorkerError> {
    let mut seen: Option<i64> = None;
    loop {
        let other = (|| queue.worker(&settings.id))
            .retry(dcc_shared::retry::until_reachable())
            .when(|e| e.is_unavailable())
            .notify(|e, _| tracing::warn!(error = %e, "Redis is not reachable; retrying"))
            .await?;
        let Some(o) = other.filter(|o| now_ms() - o.last_seen < settings.lease.as_millis() as i64) else {
            return Ok(());
        };
        if seen.is_some_and(|s| s != o.last_seen) {
            return Err(WorkerError::IdInUse(settings.id.clone()));
        }
        if seen.is_none() {
            tracing::info!("a previous worker with this id beat recently; waiting for it to expire");
        }
        seen = Some(o.last_seen);
        tokio::time::sleep(settings.heartbeat.min(Duration::from_secs(1))).await;
    }
}

/// Makes the worker's own scratch folder under `tmp_dir`, empty: files of a previous life (a
/// crash skips their clean-up) go. Absolute, since bind mode hands its paths to the daemon.
async fn fresh_scratch(tmp_dir: &std::path::Path, id: &str) -> Result<std::path::PathBuf, WorkerError> {
    let dir = tmp_dir.join(format!("dcc-{id}"));
    let err = |e| WorkerError::Scratch(dir.display().to_string(), e);
    if dir.exists() {
        files::unlock(&dir);
    }
    let _ = tokio::fs::remove_dir_all(&dir).await;
    tokio::fs::create_dir_all(&dir).await.map_err(err)?;
    tokio::fs::canonicalize(&dir).await.map_err(err)
}

/// Detects GPUs and decides how to attach them (`auto`: the nvidia runtime if dockerd has it).
async fn attach_gpus(docker: &bollard::Docker, settings: &mut WorkerSettings) -> Result<gpu::Detected, WorkerError> {
    let detected = gpu::detect(settings.gpus, &settings.gpu_device_dir);
    if detected.count == 0 {
        return Ok(detected);
    }
    let has_runtime = docker
        .info()
        .await
        .ok()
        .and_then(|i| i.runtimes)
        .is_some_and(|r| r.contains_key("nvidia"));
    let mode = gpu::GpuMode::resolve(&settings.gpu_mode, has_runtime)?;
    tracing::info!(gpus = detected.count, source = detected.source, mode = mode.as_str(), models = ?detected.models, "GPUs");
    settings.exec.gpu = Some(gpu::GpuSettings {
        mode,
        device_dir: settings.gpu_device_dir.clone(),
        driver_binds: settings.gpu_driver_binds.clone(),
        ld_library_path: settings.gpu_ld_library_path.clone(),
    });
    Ok(detected)
}

impl Worker {
    /// Connects to Docker, makes sure no other live worker uses this id, removes this worker's
    /// leftover containers and scratch files, and registers it.
    pub async fn start(
        queue: Queue,
        storage: Arc<dyn Storage>,
        blobs: Arc<dyn Storage>,
        mut settings: WorkerSettings,
    ) -> Result<Arc<Self>, WorkerError> {
        let docker = docker::connect().await?;
        wait_for_own_id(&queue, &settings).await?;
        // Its own channel only: wake-ups meant for it and cancels of its jobs, not every event.
        let events = Events::spawn(queue.url(), queue.worker_channels(&settings.id));
        settings.exec.owner.deployment = queue.deployment_id().await?;
        let removed = docker::remove_leftovers(&docker, &settings.exec.owner, |_| false).await?;
        if removed > 0 {
            tracing::info!(removed, "removed leftover containers of a previous run");
        }
        settings.exec.tmp_dir = fresh_scratch(&settings.exec.tmp_dir, &settings.id).await?;
        settings.exec.files = settings
            .files
            .resolve(&docker, &settings.exec.tmp_dir, &settings.exec.owner)
            .await;
        check_runtime(&docker, settings.exec.limits.runtime.as_deref()).await?;
        let detected = attach_gpus(&docker, &mut settings).await?;
        let memory_mb = job_memory_mb(&docker, settings.memory_mb).await?;
        let cpu_slots = settings
            .cpu_slots
            .unwrap_or(settings.cpus.saturating_sub(detected.count));
        let warm = (settings.exec.files == FilesMode::Bind)
            .then(|| {
                let (s, e) = (&settings, &settings.exec);
                WarmPool::new(
                    docker.clone(),
                    s.warm.clone(),
                    &e.owner,
                    e.limits.clone(),
                    e.tmp_dir.clone(),
                )
            })
            .flatten();
        let exec = Executor::new(
            docker,
            storage.clone(),
            blobs.clone(),
            settings.exec.clone(),
            settings.docker_concurrency,
            warm,
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
            gpu_models: detected.models,
            gpu_devices: gpu::WatchedDevices::at_start(&settings.gpu_device_dir, detected.count),
            settings,
            running: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            claim_turn: Default::default(),
            capacity_changed: Notify::new(),
            idle_since: AtomicI64::new(now_ms()),
            ended: Notify::new(),
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            shutdown: std::sync::OnceLock::new(),
            started_at: now_ms(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        });
        w.queue.beat(&w.info(), w.settings.lease).await?;
        let files = w.settings.exec.files.as_str();
        tracing::info!(worker = %w.settings.id, cpu_slots, memory_mb, gpus = detected.count, files, "worker started");
        Ok(w)
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.settings.id
    }

    fn running_count(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
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
            files_mode: self.settings.exec.files.as_str().to_string(),
            warm_containers: self.exec.warm_pool().map_or(0, |p| p.idle_count() as u32),
        }
    }

    /// True while the worker claims nothing: shutting down, or asked to drain.
    pub(crate) fn is_draining(&self) -> bool {
        self.stopping.load(Ordering::Relaxed) || self.draining.load(Ordering::Relaxed)
    }

    /// Runs until `shutdown` completes: claims until quiet (pausing while a drain is asked
    /// through Redis, which keeps the worker registered as `DRAINING` until undrained or
    /// signalled), then waits for running attempts (which `terminate` stops and hands back),
    /// then unregisters.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let _ = self.shutdown.set(shutdown.clone());
        let beat = tokio::spawn(self.clone().heartbeat_loop());
        let leases = tokio::spawn(self.clone().lease_watch());
        let watch = tokio::spawn(loops::event_loop(self.clone(), self.events.clone()));
        let spot = (self.settings.spot.clone()).map(|s| tokio::spawn(crate::spot::watch(s, shutdown.clone())));
        loops::claim_loop(self.clone(), shutdown.quiet_token().clone()).await;
        self.stopping.store(true, Ordering::Relaxed);
        if let Err(e) = self.queue.leave_idle(&self.settings.id).await {
            tracing::debug!(error = %e, "could not leave the idle workers");
        }
        tracing::info!(running = self.running_count(), "worker draining: no new claims");
        loop {
            let ended = self.ended.notified();
            if self.running_count() == 0 {
                break;
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        self.exec.clean_ups_done().await;
        if let Some(pool) = self.exec.warm_pool() {
            pool.close().await;
        }
        beat.abort();
        leases.abort();
        watch.abort();
        if let Some(s) = spot {
            s.abort();
        }
        let unregister = (|| self.queue.unregister(&self.settings.id))
            .retry(dcc_shared::retry::until_reachable())
            .when(|e| e.is_unavailable())
            .notify(|e, _| tracing::warn!(error = %e, "could not unregister the worker; retrying"));
        // Bounded: a worker told to stop leaves even while Redis is away (its key expires).
        tokio::select! {
            r = unregister => if let Err(e) = r {
                tracing::warn!(error = %e, "could not unregister the worker");
            },
            _ = tokio::time::sleep(self.settings.drain) => tracing::warn!("gave up unregistering: the health key expires by itself"),
            _ = shutdown.given_up() => tracing::warn!("gave up unregistering: the health key expires by itself"),
        }
        tracing::info!("worker stopped");
    }

    /// Resolves when the number of idle warm containers changed (never without a pool).
    async fn warm_changed(&self) {
        match self.exec.warm_pool() {
            Some(pool) => pool.changed.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Every heartbeat: follow the drain flag, renew the leases, beat the health key; nothing
    /// here waits on Docker (a stalled daemon must not cost running jobs their leases): the
    /// self-check and the removal of stray containers run on their own ([`Worker::docker_loop`]).
    /// Between beats, capacity changes re-write the health key's changing fields (read by
    /// `/api/v1/workers` and the scaler), at most every [`CAPACITY_BEAT_GAP`], so it is fresh
    /// without waiting for the tick.
    async fn heartbeat_loop(self: Arc<Self>) {
        let docker = tokio::spawn(self.clone().docker_loop());
        let _stop_docker = AbortOnDrop(docker);
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        let mut last_capacity_beat = std::time::Instant::now();
        // What the health key holds (None: unknown, after a failed write).
        let mut said: Option<Capacity> = None;
        loop {
            let ticked = tokio::select! {
                _ = tick.tick() => true,
                _ = self.capacity_changed.notified() => false,
                _ = self.warm_changed() => false,
            };
            if !ticked {
                // Changes meanwhile fold into this beat (the Notify keeps one permit).
                tokio::time::sleep(CAPACITY_BEAT_GAP.saturating_sub(last_capacity_beat.elapsed())).await;
                last_capacity_beat = std::time::Instant::now();
                let info = self.info();
                if said == Some(info.capacity()) {
                    continue;
                }
                said = match self.queue.beat_capacity(&info, self.settings.lease).await {
                    Ok(()) => Some(info.capacity()),
                    Err(e) => {
                        tracing::debug!(error = %e, "capacity beat failed");
                        None
                    }
                };
                continue;
            }
            self.follow_drain_flag().await;
            loops::renew_leases(&*self).await;
            let info = self.info();
            said = match self.queue.beat(&info, self.settings.lease).await {
                Ok(()) => Some(info.capacity()),
                Err(e) => {
                    tracing::warn!(error = %e, "health beat failed");
                    None
                }
            };
        }
    }

    /// Every heartbeat, apart from the leases: the self-check (Docker answers, disk, GPUs), then
    /// stray containers and idle warm shapes. A daemon that stalls makes the worker `UNHEALTHY`
    /// within the ping's limit (half a heartbeat, at most 5 s); the housekeeping that needs it
    /// waits, bounded, until the next tick.
    async fn docker_loop(self: Arc<Self>) {
        let beat = self.settings.heartbeat;
        let limit = (beat / 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut tick = tokio::time::interval(beat);
        loop {
            tick.tick().await;
            self.self_check(limit).await;
            if !self.healthy.load(Ordering::Relaxed) {
                continue;
            }
            let housekeeping = async {
                self.remove_strays().await;
                if let Some(pool) = self.exec.warm_pool() {
                    pool.sweep().await;
                }
            };
            if tokio::time::timeout(beat.max(limit * 4), housekeeping).await.is_err() {
                tracing::debug!("stray and warm-pool housekeeping ran out of time");
            }
        }
    }

    /// Docker, disk and GPU devices: while one fails, the worker is `UNHEALTHY` and claims nothing.
    async fn self_check(&self, limit: Duration) {
        let s = &self.settings;
        let problem = match health::check(self.exec.docker(), &s.exec.tmp_dir, s.disk_min_free_percent, limit).await {
            None => self.gpu_devices.problem(),
            p => p,
        };
        let was_healthy = self.healthy.swap(problem.is_none(), Ordering::Relaxed);
        let flipped = problem.is_some() == was_healthy;
        if flipped {
            match &problem {
                Some(p) => tracing::warn!(event = "WorkerUnhealthy", reason = p, "claiming nothing"),
                None => tracing::info!(event = "WorkerHealthy", "claiming again"),
            }
        }
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = problem.unwrap_or_default();
        if flipped {
            // Shown now, not at the next tick: the health field is in a full beat.
            if let Err(e) = self.queue.beat(&self.info(), self.settings.lease).await {
                tracing::debug!(error = %e, "health beat failed");
            }
            self.wake.notify_one();
        }
    }

    /// Stops the container of an attempt cut off from Redis [`stop_after`] its last successful
    /// renewal was sent: its lease may expire soon on Redis's clock and the job run elsewhere.
    /// Its result, if it has one by then, is still offered to the fenced finish.
    async fn lease_watch(self: Arc<Self>) {
        let stop_after = stop_after(self.settings.lease, self.settings.heartbeat);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
            for (id, r) in g.iter() {
                if !r.cancel.is_cancelled() && r.renewed.elapsed() >= stop_after {
                    tracing::warn!(
                        job_id = %id,
                        event = "LeaseExpired",
                        "cut off from Redis: the lease may expire and the job run elsewhere; stopping the container"
                    );
                    r.cancel.cancel();
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
            g.keys().any(|k| k.as_str() == job) || self.exec.warm_pool().is_some_and(|p| p.holds(job))
        };
        match docker::remove_leftovers(self.exec.docker(), &self.settings.exec.owner, running).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stray containers"),
            Err(e) => tracing::debug!(error = %e, "listing containers failed"),
        }
    }
}

impl Host for Worker {
    fn queue(&self) -> &Queue {
        &self.queue
    }

    fn worker_id(&self) -> &str {
        &self.settings.id
    }

    fn lease(&self) -> Duration {
        self.settings.lease
    }

    fn heartbeat(&self) -> Duration {
        self.settings.heartbeat
    }

    /// Healthy and neither draining nor stopping (the heartbeat re-checks both, and wakes the
    /// claim loop when a drain is taken back).
    fn claiming(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.is_draining()
    }

    /// GPUs for the GPU queue, CPU slots else; memory either way.
    fn room(&self, queue: QueueName) -> Room {
        let (free, total) = match queue {
            QueueName::Gpu => (self.gpus.free(), self.gpus.total()),
            QueueName::Cpu => (self.slots.free(), self.slots.total()),
        };
        Room {
            free,
            total,
            free_memory_mb: self.memory.free().into(),
            total_memory_mb: self.memory.total().into(),
        }
    }

    fn launch(self: &Arc<Self>, claimed: Claimed, sent: Instant) {
        let shutdown = self.shutdown.get().cloned().unwrap_or_default();
        Attempt::launch(self, claimed, sent, &shutdown);
    }

    fn running(&self) -> Vec<(Lease, CancellationToken)> {
        let g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        g.values().map(|r| (r.lease.clone(), r.cancel.clone())).collect()
    }

    fn renewed(&self, job: &JobId, sent: Instant) {
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = g.get_mut(job) {
            r.renewed = r.renewed.max(sent);
        }
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }

    async fn released(&self) {
        self.slots.released().await
    }

    fn claim_turn(&self) -> &tokio::sync::Mutex<()> {
        &self.claim_turn
    }
}

/// Aborts a task when dropped (the Docker housekeeping ends with the heartbeat loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_off_attempt_stops_before_its_lease_can_expire_and_after_two_missed_beats() {
        let s = Duration::from_secs;
        // Defaults: a quarter of the lease before it ends.
        assert_eq!(stop_after(s(30), s(10)), Duration::from_millis(22_500));
        // A short lease: at least a second of margin, never before the midpoint to the next beat.
        assert_eq!(stop_after(s(6), s(2)), Duration::from_millis(4_500));
        assert_eq!(stop_after(s(3), s(1)), s(2));
        // A long lease: at most 10 s of margin.
        assert_eq!(stop_after(s(120), s(30)), s(110));
        // A heartbeat close to the lease: halfway between them.
        assert_eq!(stop_after(s(30), s(25)), Duration::from_millis(27_500));
        for (l, h) in [(2, 1), (6, 5), (30, 1), (600, 599)] {
            let a = stop_after(s(l), s(h));
            assert!(a < s(l) && a > s(h), "{l} {h} {a:?}");
        }
    }
}
