//! Worker registration and health. Each worker keeps a hash with a TTL (its health key) fresh by
//! heartbeat, and its id in a zset of known workers. A missing health key means the worker is
//! gone (crashed or stopped); the listing prunes such ids.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Result;
use crate::clock::{Millis, parse_rfc3339, rfc3339};
use crate::job::QueueName;
use crate::job::view::{WaitReason, Waiting};
use crate::queue::Queue;

/// A worker's health as the API and the scaler see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    /// Claiming and running jobs.
    Healthy,
    /// Alive but unable to run jobs (Docker not answering, disk full, …); claims nothing.
    Unhealthy,
    /// Finishing its running jobs, claiming nothing new.
    Draining,
}

impl Health {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "HEALTHY",
            Health::Unhealthy => "UNHEALTHY",
            Health::Draining => "DRAINING",
        }
    }
}

/// What a worker reports about itself on every beat; also what `GET /api/v1/workers` shows of
/// it (times as RFC 3339, the instance nonce left out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = WorkerView)]
pub struct WorkerInfo {
    /// The worker's id (`DCC_WORKER_ID`, else the host name).
    pub id: String,
    /// `HEALTHY`, `UNHEALTHY` or `DRAINING`.
    pub health: Health,
    /// CPU slots in all.
    pub cpus: u32,
    /// GPUs in all.
    pub gpus: u32,
    /// CPU slots free now.
    pub free_cpu_slots: u32,
    /// Memory (MiB) it gives to jobs; each running job reserves its `memoryMb` (0: not
    /// reported, by a worker of an older version).
    pub memory_mb: u64,
    /// Memory (MiB) not reserved by running jobs.
    pub free_memory_mb: u64,
    /// GPUs free now.
    pub free_gpus: u32,
    /// Jobs running now.
    pub running_jobs: u32,
    /// Its last heartbeat.
    #[serde(serialize_with = "as_rfc3339", deserialize_with = "from_rfc3339")]
    #[schema(value_type = String)]
    pub last_seen: Millis,
    /// When it started.
    #[serde(serialize_with = "as_rfc3339", deserialize_with = "from_rfc3339")]
    #[schema(value_type = String)]
    pub started_at: Millis,
    /// The DCC version it runs.
    pub version: String,
    /// Random per process: tells a restarted worker from a second one using the same id.
    #[serde(skip, default)]
    pub instance: String,
    /// Why it is unhealthy, when it is (`null` otherwise).
    #[serde(serialize_with = "empty_as_null", deserialize_with = "null_as_empty")]
    #[schema(value_type = Option<String>)]
    pub reason: String,
    /// GPU models, when detection could tell.
    pub gpu_models: Vec<String>,
    /// Since when it has run nothing; `null` while it runs jobs. The scaler drains workers idle
    /// for long enough.
    #[serde(serialize_with = "opt_rfc3339", deserialize_with = "from_opt_rfc3339")]
    #[schema(value_type = Option<String>)]
    pub idle_since: Option<Millis>,
    /// How the worker moves job files: `bind` (host folders bound in) or `copy` (through the
    /// Docker API); null for a worker of an older version.
    #[serde(serialize_with = "empty_as_null", deserialize_with = "null_as_empty")]
    #[schema(value_type = Option<String>)]
    pub files_mode: String,
    /// Warm containers it holds ready for fast jobs (idle; see `DCC_WARM_POOL`).
    pub warm_containers: u32,
}

fn as_rfc3339<S: serde::Serializer>(ms: &Millis, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ms))
}

fn opt_rfc3339<S: serde::Serializer>(ms: &Option<Millis>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&rfc3339(*ms)),
        None => s.serialize_none(),
    }
}

fn from_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Millis, D::Error> {
    let text = String::deserialize(d)?;
    parse_rfc3339(&text).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text}")))
}

fn from_opt_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Millis>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => parse_rfc3339(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text}"))),
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_null<S: serde::Serializer>(v: &str, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(v)
    }
}

/// What a capacity beat says, less when it says it: a worker whose capacity is what it last
/// wrote skips the beat. A busy worker whose every ended job hands its room to the next claim
/// reads the same "no room, N running" at each beat; writing it again would cost Redis a round
/// trip and four commands every [`CAPACITY_BEAT_GAP`] per worker for nothing (`last_seen` is
/// still written by every full heartbeat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    free_cpu_slots: u32,
    free_memory_mb: u64,
    free_gpus: u32,
    running_jobs: u32,
    idle_since: Option<Millis>,
    warm_containers: u32,
}

impl WorkerInfo {
    /// The capacity this health key holds (see [`Capacity`]).
    pub fn capacity(&self) -> Capacity {
        Capacity {
            free_cpu_slots: self.free_cpu_slots,
            free_memory_mb: self.free_memory_mb,
            free_gpus: self.free_gpus,
            running_jobs: self.running_jobs,
            idle_since: self.idle_since,
            warm_containers: self.warm_containers,
        }
    }

    /// The health-key fields that change between heartbeats (what a capacity beat writes).
    fn changing_fields(&self) -> [(&'static str, String); 7] {
        [
            ("free_cpu_slots", self.free_cpu_slots.to_string()),
            ("free_memory_mb", self.free_memory_mb.to_string()),
            ("free_gpus", self.free_gpus.to_string()),
            ("running_jobs", self.running_jobs.to_string()),
            ("last_seen", self.last_seen.to_string()),
            ("idle_since", self.idle_since.unwrap_or(0).to_string()),
            ("warm_containers", self.warm_containers.to_string()),
        ]
    }

    fn from_hash(m: &HashMap<String, String>) -> Option<Self> {
        let n = |k: &str| m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let health = match m.get("health")?.as_str() {
            "HEALTHY" => Health::Healthy,
            "DRAINING" => Health::Draining,
            _ => Health::Unhealthy,
        };
        Some(WorkerInfo {
            id: m.get("id")?.clone(),
            health,
            cpus: n("cpus") as u32,
            gpus: n("gpus") as u32,
            free_cpu_slots: n("free_cpu_slots") as u32,
            memory_mb: n("memory_mb") as u64,
            free_memory_mb: n("free_memory_mb") as u64,
            free_gpus: n("free_gpus") as u32,
            running_jobs: n("running_jobs") as u32,
            last_seen: n("last_seen"),
            started_at: n("started_at"),
            version: m.get("version").cloned().unwrap_or_default(),
            instance: m.get("instance").cloned().unwrap_or_default(),
            reason: m.get("reason").cloned().unwrap_or_default(),
            idle_since: m
                .get("idle_since")
                .and_then(|v| v.parse().ok())
                .filter(|v: &i64| *v > 0),
            gpu_models: m
                .get("gpu_models")
                .and_then(|v| serde_json::from_str(v).ok())
                .unwrap_or_default(),
            files_mode: m.get("files_mode").cloned().unwrap_or_default(),
            warm_containers: n("warm_containers") as u32,
        })
    }
}

/// Health keys read per round trip by [`Queue::workers`].
const WORKERS_PER_READ: usize = 100;

/// Shortest time between two capacity beats of one worker. A busy worker's free slots change
/// with every claim and every end; beating each change would write its health key twice per job
/// (a fleet of 1,000 busy workers: thousands of writes a second that nobody reads). Readers (the
/// workers view, the scaler) see a change within this.
pub const CAPACITY_BEAT_GAP: std::time::Duration = std::time::Duration::from_millis(500);

impl Queue {
    /// Writes the fields of a worker's health key that change between heartbeats (free room,
    /// running jobs, idle start, warm containers, last seen), between two full [`Queue::beat`]s.
    /// The TTL is set again so a key that expired meanwhile is not left without one.
    pub async fn beat_capacity(&self, w: &WorkerInfo, ttl: Duration) -> Result<()> {
        let key = self.keys().worker(&w.id);
        let mut conn = self.conn().await?;
        let fields = w.changing_fields();
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .pexpire(&key, ttl.as_millis() as i64)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Writes a worker's health key with a TTL, and its id in the worker set (one MULTI). A drain
    /// flag set for it gets the same TTL, so the flag dies with the worker.
    pub async fn beat(&self, w: &WorkerInfo, ttl: Duration) -> Result<()> {
        let k = self.keys();
        let key = k.worker(&w.id);
        let mut conn = self.conn().await?;
        let mut fields: Vec<(&str, String)> = vec![
            ("id", w.id.clone()),
            ("health", w.health.as_str().into()),
            ("cpus", w.cpus.to_string()),
            ("gpus", w.gpus.to_string()),
            ("memory_mb", w.memory_mb.to_string()),
            ("started_at", w.started_at.to_string()),
            ("version", w.version.clone()),
            ("instance", w.instance.clone()),
            ("reason", w.reason.clone()),
            ("gpu_models", serde_json::to_string(&w.gpu_models).unwrap_or_default()),
            ("files_mode", w.files_mode.clone()),
        ];
        fields.extend(w.changing_fields());
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .pexpire(&key, ttl.as_millis() as i64)
            .pexpire(k.drain(&w.id), ttl.as_millis() as i64)
            .zadd(k.workers(), &w.id, w.last_seen)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes a worker's health key and registration (clean shutdown).
    pub async fn unregister(&self, id: &str) -> Result<()> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        redis::pipe()
            .atomic()
            .del(k.worker(id))
            .del(k.drain(id))
            .zrem(k.workers(), id)
            .query_async::<()>(&mut conn)
            .await?;
        self.leave_idle(id).await
    }

    /// Takes a worker out of the idle workers a new job may wake (it drains or cannot run jobs:
    /// the job should wake a worker that claims). Its next claim that finds nothing puts it back.
    pub async fn leave_idle(&self, id: &str) -> Result<()> {
        for q in self.each_shard() {
            let k = q.keys();
            let mut conn = q.conn().await?;
            redis::pipe()
                .zrem(k.idle(QueueName::Cpu), id)
                .zrem(k.idle(QueueName::Gpu), id)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// One worker's health key, if it is alive.
    pub async fn worker(&self, id: &str) -> Result<Option<WorkerInfo>> {
        let mut conn = self.conn().await?;
        let m: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys().worker(id))
            .query_async(&mut conn)
            .await?;
        Ok(WorkerInfo::from_hash(&m))
    }

    /// Every live worker; ids whose health key expired are pruned from the set.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(k.workers())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // In rounds: one pipeline of a thousand health keys is a reply big enough to outlast the
        // client's response timeout on a busy Redis (the fleet bench saw it), and holds Redis
        // for the whole of it.
        let mut maps: Vec<HashMap<String, String>> = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(WORKERS_PER_READ) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGETALL").arg(k.worker(id));
            }
            let part: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
            maps.extend(part);
        }
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, m) in ids.iter().zip(maps) {
            match WorkerInfo::from_hash(&m) {
                Some(w) => out.push(w),
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            let _: () = redis::cmd("ZREM")
                .arg(k.workers())
                .arg(&gone)
                .query_async(&mut conn)
                .await?;
        }
        Ok(out)
    }
}

/// Whether the live workers can take a job of one queue needing some slots (CPU slots on the
/// `cpu` queue, GPUs on the `gpu` queue). Pure, so the API and the tests share one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Availability {
    /// At least one healthy, non-draining worker is large enough (this many).
    Ready(usize),
    /// Large enough workers exist and are not draining, but every one is unhealthy (they may
    /// recover: Docker restarting, disk freed).
    Unhealthy,
    /// Every large enough worker is draining.
    Draining,
    /// Workers of the queue exist, none with this many slots (the largest has `largest`).
    TooSmall {
        /// Slots of the largest worker of the queue.
        largest: u32,
        /// Memory (MiB) of the worker with the most.
        largest_memory_mb: u64,
    },
    /// No live worker serves the queue.
    NoWorker,
    /// Nothing live can take it, but the scaler's outlook says instances that can are coming
    /// (or can be asked for): the job is accepted and waits for them.
    Starting {
        /// About how long an instance takes to boot.
        boot_secs: u64,
    },
}

impl Availability {
    /// Whether a job could be claimed without an operator (or the scaler) doing something:
    /// false when nothing live can ever run it as the fleet stands.
    pub fn can_run(self) -> bool {
        matches!(
            self,
            Availability::Ready(_) | Availability::Unhealthy | Availability::Starting { .. }
        )
    }

    /// This availability, or [`Availability::Starting`] when nothing live can run the job but
    /// the scaler's `outlook` for its queue says instances that can are coming.
    pub fn or_starting(self, outlook: Option<&crate::outlook::Outlook>, units: u32, memory_mb: u64) -> Self {
        match (self, outlook) {
            (Availability::Draining | Availability::TooSmall { .. } | Availability::NoWorker, Some(o))
                if o.can_take(units, memory_mb) =>
            {
                Availability::Starting { boot_secs: o.boot_secs }
            }
            (av, _) => av,
        }
    }
}

impl Availability {
    /// Why a queued job of `queue` needing `units` slots waits, as the job view says it.
    pub fn waiting(self, queue: QueueName, units: u32, memory_mb: u64) -> Waiting {
        let what = match queue {
            QueueName::Cpu => format!("{units} CPU slot(s)"),
            QueueName::Gpu => format!("{units} GPU(s)"),
        };
        let q = queue.as_str();
        let (reason, message) = match self {
            Availability::Ready(n) => (
                WaitReason::Queued,
                format!("waiting for a free slot on one of {n} healthy {q} worker(s)"),
            ),
            Availability::Unhealthy => (
                WaitReason::WorkersUnhealthy,
                format!("every {q} worker that can take {what} reports UNHEALTHY; see GET /api/v1/workers"),
            ),
            Availability::Draining => (
                WaitReason::WorkersDraining,
                format!("every {q} worker that can take {what} is draining; undrain one or add workers"),
            ),
            Availability::TooSmall {
                largest,
                largest_memory_mb,
            } => (
                WaitReason::NoWorkerFits,
                format!(
                    "no live {q} worker has {what} and {memory_mb} MiB of memory; the largest has {largest} and {largest_memory_mb} MiB"
                ),
            ),
            Availability::NoWorker => (WaitReason::NoWorker, format!("no live worker serves the {q} queue")),
            Availability::Starting { boot_secs } => (
                WaitReason::WorkersStarting,
                format!(
                    "no live {q} worker can take {what} now; the scaler is starting one (an instance takes about {boot_secs} s to boot)"
                ),
            ),
        };
        Waiting { reason, message }
    }
}

/// How the live `workers` stand for a job of `queue` needing `units` slots and `memory_mb`.
pub fn availability(workers: &[WorkerInfo], queue: QueueName, units: u32, memory_mb: u64) -> Availability {
    let size = |w: &WorkerInfo| match queue {
        QueueName::Cpu => w.cpus,
        QueueName::Gpu => w.gpus,
    };
    let serving: Vec<&WorkerInfo> = workers.iter().filter(|w| size(w) > 0).collect();
    if serving.is_empty() {
        return Availability::NoWorker;
    }
    // A worker that does not report memory (an older version) is taken to have enough.
    let fits: Vec<&WorkerInfo> = serving
        .iter()
        .copied()
        .filter(|w| size(w) >= units && (w.memory_mb == 0 || w.memory_mb >= memory_mb))
        .collect();
    if fits.is_empty() {
        let largest = serving.iter().map(|w| size(w)).max().unwrap_or(0);
        let largest_memory_mb = serving.iter().map(|w| w.memory_mb).max().unwrap_or(0);
        return Availability::TooSmall {
            largest,
            largest_memory_mb,
        };
    }
    let active: Vec<&WorkerInfo> = fits.into_iter().filter(|w| w.health != Health::Draining).collect();
    if active.is_empty() {
        return Availability::Draining;
    }
    match active.iter().filter(|w| w.health == Health::Healthy).count() {
        0 => Availability::Unhealthy,
        n => Availability::Ready(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(cpus: u32, gpus: u32, health: Health) -> WorkerInfo {
        WorkerInfo {
            id: "w".into(),
            health,
            cpus,
            gpus,
            free_cpu_slots: cpus,
            memory_mb: 4096,
            free_memory_mb: 4096,
            free_gpus: gpus,
            running_jobs: 0,
            last_seen: 0,
            started_at: 0,
            version: String::new(),
            instance: String::new(),
            reason: String::new(),
            gpu_models: Vec::new(),
            idle_since: None,
            files_mode: String::new(),
            warm_containers: 0,
        }
    }

    /// A capacity beat is skipped only when nothing it writes changed but the time: every field
    /// it writes except `last_seen` is part of the capacity compared.
    #[test]
    fn capacity_is_every_changing_field_but_the_time() {
        let a = w(4, 1, Health::Healthy);
        let mut later = a.clone();
        later.last_seen = 10_000;
        assert_eq!(a.capacity(), later.capacity());
        let changes: [fn(&mut WorkerInfo); 6] = [
            |w| w.free_cpu_slots -= 1,
            |w| w.free_memory_mb -= 1,
            |w| w.free_gpus -= 1,
            |w| w.running_jobs += 1,
            |w| w.idle_since = Some(5),
            |w| w.warm_containers += 1,
        ];
        for change in changes {
            let mut b = a.clone();
            change(&mut b);
            let differs: Vec<&str> = a
                .changing_fields()
                .iter()
                .zip(b.changing_fields().iter())
                .filter(|(x, y)| x != y)
                .map(|(x, _)| x.0)
                .collect();
            assert_eq!(differs.len(), 1, "one written field changes");
            assert_ne!(
                a.capacity(),
                b.capacity(),
                "{differs:?} changed but the capacity did not"
            );
        }
        assert_eq!(
            a.changing_fields().len(),
            changes.len() + 1,
            "a written field is not in the capacity"
        );
    }

    #[test]
    fn availability_of_a_fleet() {
        use Availability as A;
        use Health::{Draining, Healthy, Unhealthy};
        let cpu = QueueName::Cpu;
        assert_eq!(availability(&[], cpu, 1, 100), A::NoWorker);
        assert_eq!(availability(&[w(2, 0, Healthy)], QueueName::Gpu, 1, 100), A::NoWorker);
        assert_eq!(
            availability(&[w(2, 0, Healthy)], cpu, 3, 100),
            A::TooSmall {
                largest: 2,
                largest_memory_mb: 4096
            }
        );
        assert_eq!(availability(&[w(2, 0, Draining)], cpu, 1, 100), A::Draining);
        assert_eq!(
            availability(&[w(2, 0, Draining), w(1, 0, Healthy)], cpu, 2, 100),
            A::Draining
        );
        assert_eq!(
            availability(&[w(2, 0, Unhealthy), w(4, 0, Draining)], cpu, 2, 100),
            A::Unhealthy
        );
        assert_eq!(
            availability(&[w(2, 0, Healthy), w(4, 0, Healthy)], cpu, 2, 100),
            A::Ready(2)
        );
        assert_eq!(availability(&[w(1, 2, Healthy)], QueueName::Gpu, 2, 100), A::Ready(1));
        assert_eq!(
            availability(&[w(2, 0, Healthy)], cpu, 1, 5000),
            A::TooSmall {
                largest: 2,
                largest_memory_mb: 4096
            },
            "memory"
        );
        assert!(A::Unhealthy.can_run() && A::Ready(1).can_run());
        assert!(
            !A::Draining.can_run()
                && !A::NoWorker.can_run()
                && !A::TooSmall {
                    largest: 1,
                    largest_memory_mb: 4096
                }
                .can_run()
        );
    }
}
