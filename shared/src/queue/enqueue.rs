//! Submit → `queued`.

use super::Queue;
use super::library::Transition;
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobId, JobSpec, Lane};

/// What the same-id rule decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job was queued.
    Created,
    /// A job with this id and the same definition exists; nothing was written.
    Exists,
    /// A job with this id and another definition exists; nothing was written.
    Conflict,
    /// The tenant has its quota of queued + running jobs; nothing was written.
    OverQuota,
    /// The tenant has its quota of queued + running fast jobs; nothing was written.
    OverFastQuota,
    /// Dependency `i` of `dependsOn` is not a job of this tenant; nothing was written.
    MissingDependency(usize),
    /// Dependency `i` is `n_to_n` but not an array of this array's size; nothing was written.
    NotTwin(usize),
    /// Dependency `i` lives in another shard than this job (an admin's own ids route by their
    /// part before the first `.`: see `docs/scaling.md`); nothing was written.
    OtherShard(usize),
    /// Created, and failed at once (`DEPENDENCY_FAILED`): a dependency that had to succeed had
    /// already ended otherwise.
    DependencyFailed,
}

/// A job ready to be queued: validated, its inputs staged.
pub struct NewJob<'a> {
    /// Its id.
    pub id: &'a JobId,
    /// Its normalized definition.
    pub spec: &'a JobSpec,
    /// Its lane (fast jobs, or the priority's lane).
    pub lane: Lane,
    /// Hash of the definition and input bytes.
    pub def_hash: &'a str,
    /// Storage prefix of its staged inputs.
    pub inputs_prefix: &'a str,
    /// The tenant submitting it.
    pub tenant: &'a str,
    /// Its quotas: queued + running jobs, and fast ones (0: none).
    pub quota: Quota,
    /// How long it is kept once ended (a job failed at once by a dependency starts now).
    pub retention: std::time::Duration,
}

/// A tenant's limits on jobs it has in the system at once (0: none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Queued + running jobs.
    pub active: u32,
    /// Queued + running fast jobs.
    pub fast: u32,
}

impl Queue {
    /// Queues a job unless its id exists.
    pub async fn enqueue(&self, job: NewJob<'_>, now: Millis) -> Result<Enqueued> {
        let queue = job.spec.parameters.queue();
        // Everything a job touches is in its shard, its dependencies included.
        let this = self.for_job(job.id);
        if let Some(i) = (job.spec.depends_on.iter()).position(|d| self.shard_of(&d.job_id) != this.shard) {
            return Ok(Enqueued::OtherShard(i));
        }
        let k = this.keys();
        let mut conn = this.conn().await?;
        let mut inv = Transition::Enqueue.on(self);
        inv.key(k.job(job.id));
        inv.key(k.tenant_lane(queue, job.lane, job.tenant))
            .key(k.index())
            .key(k.tenant_index(job.tenant))
            .key(k.tenants_active())
            .key(k.ring(queue, job.lane))
            .key(k.idle(queue))
            .key(k.expiry())
            .key(k.outbox())
            .arg(job.id.as_str())
            .arg(job.def_hash)
            .arg(now)
            .arg(k.events())
            .arg(job.tenant)
            .arg(job.quota.active)
            .arg(job.quota.fast)
            .arg(if job.lane == Lane::Fast { "1" } else { "0" })
            .arg(k.worker_events_prefix())
            .arg(job.spec.array.map_or(1, |a| a.size))
            .arg(job.spec.depends_on.len());
        for d in &job.spec.depends_on {
            inv.arg(&d.job_id).arg(d.kind.as_str());
        }
        inv.arg(this.settle_context(job.retention))
            .arg(k.history_prefix())
            .arg(this.history_ttl().as_secs());
        for (f, v) in record_fields(&job, now) {
            inv.arg(f).arg(v);
        }
        // The client hears "created" or "exists" only once the job is as durable as configured
        // (for "exists", the first submit's write: see `Queue::send_confirmed`).
        let r: String = this
            .run_confirmed(&inv, &mut conn)
            .await?
            .reply_if(|r: &String| matches!(r.as_str(), "created" | "failed" | "exists"))?;
        Ok(Enqueued::from_reply(&r))
    }
}

impl Enqueued {
    /// What enqueue.lua answered.
    fn from_reply(r: &str) -> Self {
        match r {
            "created" => Enqueued::Created,
            "exists" => Enqueued::Exists,
            "quota" => Enqueued::OverQuota,
            "fast_quota" => Enqueued::OverFastQuota,
            "failed" => Enqueued::DependencyFailed,
            r => match r.split_once(':').map(|(what, i)| (what, i.parse().ok())) {
                Some(("missing_dep", Some(i))) => Enqueued::MissingDependency(i),
                Some(("not_twin", Some(i))) => Enqueued::NotTwin(i),
                _ => Enqueued::Conflict,
            },
        }
    }
}

/// The new record's fields, as enqueue.lua writes them.
fn record_fields(job: &NewJob<'_>, now: Millis) -> Vec<(&'static str, String)> {
    let p = &job.spec.parameters;
    let mut fields = vec![
        ("spec", serde_json::to_string(job.spec).unwrap_or_default()),
        ("state", "queued".to_string()),
        ("queue", p.queue().as_str().to_string()),
        ("lane", job.lane.as_str().to_string()),
        ("attempt", "0".to_string()),
        ("max_attempts", p.max_attempts.to_string()),
        ("slots", p.slots().to_string()),
        ("gpus", p.gpus.to_string()),
        ("memory_mb", p.memory_mb.to_string()),
        ("created_ms", now.to_string()),
        ("def_hash", job.def_hash.to_string()),
        ("tenant", job.tenant.to_string()),
    ];
    // Read only to fetch inputs: a job without any does not carry it (bytes per queued job).
    if !job.spec.inputs.is_empty() {
        fields.push(("inputs_prefix", job.inputs_prefix.to_string()));
    }
    // An array parent: claims make its children from it (claim.lua, array.lua).
    if let Some(a) = job.spec.array {
        fields.push(("array_size", a.size.to_string()));
        fields.push(("array_par", a.parallelism.unwrap_or(0).to_string()));
        fields.push(("keep", super::ms(job.retention).to_string()));
    }
    // The scripts that end a job queue its webhook when they find this (notify.lua).
    if job.spec.notify.is_some() {
        fields.push(("notify_state", "waiting".to_string()));
    }
    fields
}
