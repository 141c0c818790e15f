//! A fleet of simulated workers, to measure how far one Redis carries DCC (the `fleet` bench)
//! and to check, in a test, that many workers sharing one queue finish every job exactly once.
//!
//! Each simulated worker speaks to Redis as `dcc worker` does, through the same `dcc_shared`
//! calls and Lua scripts: registration and health beats (on every heartbeat and on every
//! capacity change), claims, lease renewals, finishes, its own job-event subscription, the drain
//! flag, and the upkeep tick (reaper and retention sweep) every `dcc` process runs. What it
//! leaves out needs Docker (the self-check, stray removal) and its "container" is a timer. Its
//! claim loop, lease renewal and event watch are the worker's own (`dcc_worker::loops`, through
//! [`Host`]). Each simulated worker has its own connection pool and subscription, as separate
//! worker processes would.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dcc_shared::clock::{REDIS_TIME, now_ms};
use dcc_shared::events::Events;
use dcc_shared::job::{JobId, JobState, QueueName, RunStats};
use dcc_shared::maintenance;
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::Claimed;
use dcc_shared::queue::finish::{Finished, Outcome};
use dcc_shared::queue::lease::Lease;
use dcc_shared::queue::reap::Retention;
use dcc_shared::storage::{LocalStorage, Storage};
use dcc_shared::workers::{CAPACITY_BEAT_GAP, Capacity, Health, WorkerInfo};
use dcc_worker::loops::{self, Holds, Host, Room, Seen};
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Memory (MiB) a simulated worker offers per slot.
const MEMORY_PER_SLOT_MB: u64 = 4096;

/// The shape of a simulated fleet.
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// Redis URL.
    pub redis_url: String,
    /// Key prefix (`DCC_PREFIX`).
    pub prefix: String,
    /// Simulated workers.
    pub workers: usize,
    /// CPU slots per worker, drawn uniformly.
    pub slots: RangeInclusive<u32>,
    /// How long a job "runs", drawn uniformly (ms).
    pub job_ms: RangeInclusive<u64>,
    /// `DCC_HEARTBEAT_SECS`.
    pub heartbeat: Duration,
    /// `DCC_LEASE_SECS`.
    pub lease: Duration,
    /// Retention of ended jobs.
    pub retention: Retention,
    /// Seed of the draws (slots, durations), so runs compare.
    pub seed: u64,
    /// Remember how often each job was recorded (the exactly-once check; costs memory).
    pub track_ids: bool,
    /// `DCC_HISTORY_TTL` (zero: the scripts keep no history).
    pub history: Duration,
    /// The deployment's shards (`DCC_REDIS_SHARDS`).
    pub shards: usize,
}

impl FleetSettings {
    /// `workers` workers with `dcc`'s default heartbeat, lease and retention.
    pub fn new(redis_url: &str, workers: usize) -> Self {
        FleetSettings {
            redis_url: redis_url.to_string(),
            prefix: "dcc".into(),
            workers,
            slots: 2..=8,
            job_ms: 500..=1500,
            heartbeat: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            retention: Retention {
                standard: Duration::from_secs(7 * 86400),
                fast: Duration::from_secs(60),
            },
            seed: 18,
            track_ids: false,
            history: dcc_shared::history::DEFAULT_TTL,
            shards: 1,
        }
    }
}

/// What the fleet did, counted as it happens.
#[derive(Default)]
pub struct FleetStats {
    /// Claims that got a job.
    pub claims: AtomicU64,
    /// Claims that found nothing (or nothing that fits).
    pub empty_claims: AtomicU64,
    /// Results recorded.
    pub finished: AtomicU64,
    /// Finishes refused because the lease was gone (fencing).
    pub lease_lost: AtomicU64,
    /// Redis calls that failed.
    pub errors: AtomicU64,
    /// Health-key writes (heartbeats and capacity beats).
    pub beats: AtomicU64,
    /// Lease renewals.
    pub renewals: AtomicU64,
    /// Upkeep ticks, and their total time (µs).
    pub upkeep_ticks: AtomicU64,
    /// Total time of the upkeep ticks (µs).
    pub upkeep_us: AtomicU64,
    /// Round trip of each claim that got a job (µs), with when it was taken.
    claim_us: Mutex<Vec<(Instant, u32)>>,
    /// Results recorded per job (with `track_ids`).
    recorded: Mutex<HashMap<String, u32>>,
}

impl FleetStats {
    /// Round trips (µs) of the successful claims taken in `[from, to)`.
    pub fn claim_latencies(&self, from: Instant, to: Instant) -> Vec<u32> {
        let g = self.claim_us.lock().unwrap();
        g.iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, us)| *us)
            .collect()
    }

    /// How often each job's result was recorded (with `track_ids`).
    pub fn recorded(&self) -> HashMap<String, u32> {
        self.recorded.lock().unwrap().clone()
    }

    fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running simulated fleet.
pub struct Fleet {
    workers: Vec<Arc<SimWorker>>,
    /// What it did.
    pub stats: Arc<FleetStats>,
    _scratch: tempfile::TempDir,
}

impl Fleet {
    /// Starts every worker: registers it (first health beat), subscribes it to job events, and
    /// starts its claim, heartbeat, event and upkeep loops.
    pub async fn start(s: &FleetSettings) -> Fleet {
        let stats = Arc::new(FleetStats::default());
        let scratch = tempfile::tempdir().expect("temp dir");
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(scratch.path()));
        let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
        let mut workers = Vec::with_capacity(s.workers);
        for i in 0..s.workers {
            let queue = Queue::new(&s.redis_url, &s.prefix)
                .expect("queue")
                .with_shards(s.shards)
                .with_history(s.history);
            let id = format!("sim-{i:04}");
            let (events, subscription) = Events::spawn_task(&s.redis_url, queue.worker_channels(&id));
            let slots = rng.random_range(s.slots.clone());
            let w = Arc::new(SimWorker {
                id,
                queue,
                events,
                storage: storage.clone(),
                settings: s.clone(),
                slots,
                free: AtomicU32::new(slots),
                free_mem: AtomicU64::new(slots as u64 * MEMORY_PER_SLOT_MB),
                running: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                claim_turn: Default::default(),
                released: Notify::new(),
                capacity_changed: Notify::new(),
                idle_since: AtomicI64::new(now_ms()),
                paused: AtomicBool::new(false),
                crashed: CancellationToken::new(),
                stats: stats.clone(),
                rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(s.seed ^ (i as u64 + 1))),
                started_at: now_ms(),
                instance: format!("sim{i}-{}", rand::random::<u32>()),
            });
            w.beat(&w.info()).await;
            workers.push((w, subscription));
        }
        // Every worker starts claiming once all are registered: making a connection takes a
        // while (on a cluster, one to each node), and the first workers would otherwise have
        // done the work before the last one joined.
        let workers = workers.into_iter().map(|(w, subscription)| {
            // The claim loop stops by itself at a crash (after a claim in flight has answered, so
            // the job it got is known as held); the others are cut wherever they are.
            tokio::spawn(loops::claim_loop(w.clone(), w.crashed.clone()));
            for task in [
                tokio::spawn(w.clone().heartbeat_loop()),
                tokio::spawn(loops::event_loop(w.clone(), w.events.clone())),
                tokio::spawn(w.clone().upkeep_loop()),
                subscription,
            ] {
                let stop = w.crashed.clone();
                tokio::spawn(async move {
                    stop.cancelled().await;
                    task.abort();
                });
            }
            w
        });
        Fleet {
            workers: workers.collect(),
            stats,
            _scratch: scratch,
        }
    }

    /// Slots of the whole fleet.
    pub fn total_slots(&self) -> u64 {
        self.workers.iter().map(|w| w.slots as u64).sum()
    }

    /// Jobs running now.
    pub fn running(&self) -> usize {
        self.workers.iter().map(|w| w.running.lock().unwrap().len()).sum()
    }

    /// Jobs worker `i` holds now (for a crashed worker: the jobs it held when it died).
    pub fn held_by(&self, i: usize) -> Vec<JobId> {
        self.workers[i].running.lock().unwrap().keys().cloned().collect()
    }

    /// Stops (or restarts) claiming on every worker; running jobs go on.
    pub fn pause(&self, paused: bool) {
        for w in &self.workers {
            w.paused.store(paused, Ordering::Relaxed);
            w.wake.notify_one();
        }
    }

    /// Worker `i` dies as a SIGKILLed worker would: no more beats, renewals or results; its
    /// jobs stay `running` until their leases expire and the reaper hands them on.
    pub fn crash(&self, i: usize) {
        self.workers[i].crashed.cancel();
    }

    /// Every worker dies at once (see [`Fleet::crash`]).
    pub fn crash_all(&self) {
        for i in 0..self.workers.len() {
            self.crash(i);
        }
    }
}

/// One simulated worker.
struct SimWorker {
    id: String,
    queue: Queue,
    events: Events,
    storage: Arc<dyn Storage>,
    settings: FleetSettings,
    slots: u32,
    free: AtomicU32,
    free_mem: AtomicU64,
    running: Mutex<HashMap<JobId, (Lease, CancellationToken)>>,
    wake: Notify,
    claim_turn: tokio::sync::Mutex<()>,
    released: Notify,
    capacity_changed: Notify,
    idle_since: AtomicI64,
    paused: AtomicBool,
    crashed: CancellationToken,
    stats: Arc<FleetStats>,
    rng: Mutex<rand::rngs::StdRng>,
    started_at: i64,
    instance: String,
}

impl SimWorker {
    fn info(&self) -> WorkerInfo {
        let running = self.running.lock().unwrap().len() as u32;
        WorkerInfo {
            id: self.id.clone(),
            health: if self.paused.load(Ordering::Relaxed) {
                Health::Draining
            } else {
                Health::Healthy
            },
            cpus: self.slots,
            gpus: 0,
            free_cpu_slots: self.free.load(Ordering::Relaxed),
            memory_mb: self.slots as u64 * MEMORY_PER_SLOT_MB,
            free_memory_mb: self.free_mem.load(Ordering::Relaxed),
            free_gpus: 0,
            running_jobs: running,
            last_seen: now_ms(),
            started_at: self.started_at,
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance: self.instance.clone(),
            reason: String::new(),
            gpu_models: Vec::new(),
            idle_since: (running == 0).then(|| self.idle_since.load(Ordering::Relaxed)),
            files_mode: "bind".into(),
            warm_containers: 0,
        }
    }

    /// A full health beat of `info`; whether it was written.
    async fn beat(&self, info: &WorkerInfo) -> bool {
        FleetStats::count(&self.stats.beats);
        let written = self.queue.beat(info, self.settings.lease).await.is_ok();
        if !written {
            FleetStats::count(&self.stats.errors);
        }
        written
    }

    /// Starts the timer that stands for a container; a worker that died with a claim's answer
    /// on the wire holds the job and never runs it.
    fn start(self: &Arc<Self>, c: Claimed) {
        if self.crashed.is_cancelled() {
            let mut g = self.running.lock().unwrap();
            g.insert(c.lease.job.clone(), (c.lease.clone(), CancellationToken::new()));
            return;
        }
        self.free.fetch_sub(c.slots, Ordering::Relaxed);
        self.free_mem.fetch_sub(c.memory_mb, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        self.running
            .lock()
            .unwrap()
            .insert(c.lease.job.clone(), (c.lease.clone(), cancel.clone()));
        self.capacity_changed.notify_one();
        let ms = self.rng.lock().unwrap().random_range(self.settings.job_ms.clone());
        tokio::spawn(self.clone().run(c, cancel, Duration::from_millis(ms)));
    }

    /// One attempt: the timer stands for the container; then the result, as `Attempt::record`
    /// (with the next claim in the same round trip), its holds freed, and the job claimed with
    /// it started.
    async fn run(self: Arc<Self>, c: Claimed, cancel: CancellationToken, took: Duration) {
        let crashed = self.crashed.clone();
        let ran = tokio::select! {
            _ = tokio::time::sleep(took) => true,
            _ = cancel.cancelled() => false,
            _ = crashed.cancelled() => return,
        };
        let mut next = None;
        if ran {
            let outcome = Outcome {
                state: JobState::Succeeded,
                exit_code: Some(0),
                error: None,
                image_digest: None,
                stats: RunStats {
                    run_ms: took.as_millis() as u64,
                    ..RunStats::default()
                },
                outputs: Vec::new(),
            };
            let retention = self.settings.retention.of(c.lease.lane);
            let holds = Holds {
                units: c.slots,
                memory_mb: c.memory_mb,
            };
            let (finished, handed) = loops::finish_and_claim(&*self, &c.lease, &outcome, retention, holds).await;
            next = handed;
            match finished {
                Ok(Finished::Recorded) => {
                    FleetStats::count(&self.stats.finished);
                    if self.settings.track_ids {
                        let mut g = self.stats.recorded.lock().unwrap();
                        *g.entry(c.lease.job.as_str().to_string()).or_default() += 1;
                    }
                }
                Ok(Finished::LeaseLost) => FleetStats::count(&self.stats.lease_lost),
                Err(_) => FleetStats::count(&self.stats.errors),
            }
        }
        let empty = {
            let mut g = self.running.lock().unwrap();
            g.remove(&c.lease.job);
            g.is_empty()
        };
        if empty {
            self.idle_since.store(now_ms(), Ordering::Relaxed);
        }
        self.free.fetch_add(c.slots, Ordering::Relaxed);
        self.free_mem.fetch_add(c.memory_mb, Ordering::Relaxed);
        if let Some(next) = next {
            next.launch(&self);
        }
        self.released.notify_one();
        self.capacity_changed.notify_one();
    }

    /// As `Worker::heartbeat_loop`, without the Docker steps.
    async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.heartbeat);
        let mut last_capacity_beat = Instant::now();
        // What the health key holds (None: unknown, after a failed write).
        let mut said: Option<Capacity> = None;
        loop {
            let ticked = tokio::select! {
                _ = tick.tick() => true,
                _ = self.capacity_changed.notified() => false,
            };
            if ticked {
                if self.queue.drain_requested(&self.id, &self.instance).await.is_err() {
                    FleetStats::count(&self.stats.errors);
                }
                loops::renew_leases(&*self).await;
                let info = self.info();
                said = self.beat(&info).await.then(|| info.capacity());
                continue;
            }
            tokio::time::sleep(CAPACITY_BEAT_GAP.saturating_sub(last_capacity_beat.elapsed())).await;
            last_capacity_beat = Instant::now();
            let info = self.info();
            if said == Some(info.capacity()) {
                continue;
            }
            FleetStats::count(&self.stats.beats);
            said = match self.queue.beat_capacity(&info, self.settings.lease).await {
                Ok(()) => Some(info.capacity()),
                Err(_) => {
                    FleetStats::count(&self.stats.errors);
                    None
                }
            };
        }
    }

    /// As `Core::open`'s upkeep: every process reaps and sweeps a few times per lease.
    async fn upkeep_loop(self: Arc<Self>) {
        let every = (self.settings.lease / 3).clamp(Duration::from_millis(500), Duration::from_secs(10));
        loop {
            let jitter = Duration::from_millis(rand::random_range(0..=every.as_millis() as u64 / 4));
            tokio::time::sleep(every + jitter).await;
            let t = Instant::now();
            let r = maintenance::tick(&self.queue, self.storage.as_ref(), self.settings.retention, REDIS_TIME).await;
            self.stats
                .upkeep_us
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            FleetStats::count(&self.stats.upkeep_ticks);
            if r.is_err() {
                FleetStats::count(&self.stats.errors);
            }
        }
    }
}

impl Host for SimWorker {
    fn queue(&self) -> &Queue {
        &self.queue
    }

    fn worker_id(&self) -> &str {
        &self.id
    }

    fn lease(&self) -> Duration {
        self.settings.lease
    }

    fn heartbeat(&self) -> Duration {
        self.settings.heartbeat
    }

    fn claiming(&self) -> bool {
        !self.paused.load(Ordering::Relaxed) && !self.crashed.is_cancelled()
    }

    /// CPU slots only: a simulated worker has no GPUs.
    fn room(&self, queue: QueueName) -> Room {
        match queue {
            QueueName::Gpu => Room::default(),
            QueueName::Cpu => Room {
                free: self.free.load(Ordering::Relaxed),
                total: self.slots,
                free_memory_mb: self.free_mem.load(Ordering::Relaxed),
                total_memory_mb: self.slots as u64 * MEMORY_PER_SLOT_MB,
            },
        }
    }

    fn launch(self: &Arc<Self>, claimed: Claimed, _sent: Instant) {
        self.start(claimed);
    }

    fn running(&self) -> Vec<(Lease, CancellationToken)> {
        self.running.lock().unwrap().values().cloned().collect()
    }

    fn wake(&self) -> &Notify {
        &self.wake
    }

    async fn released(&self) {
        self.released.notified().await
    }

    fn claim_turn(&self) -> &tokio::sync::Mutex<()> {
        &self.claim_turn
    }

    fn saw(&self, seen: Seen<'_>) {
        match seen {
            Seen::Claim { took, claimed: true } => {
                let us = took.as_micros().min(u32::MAX as u128) as u32;
                self.stats.claim_us.lock().unwrap().push((Instant::now() - took, us));
                FleetStats::count(&self.stats.claims);
            }
            Seen::Claim { claimed: false, .. } => FleetStats::count(&self.stats.empty_claims),
            Seen::Failed(_) => FleetStats::count(&self.stats.errors),
            Seen::Renewal => FleetStats::count(&self.stats.renewals),
        }
    }
}
