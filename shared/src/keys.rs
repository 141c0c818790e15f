//! Every Redis key name DCC uses, built in one place. No other module formats a key.
//!
//! All keys start with `{<prefix>}:` (shard 0), or `{<prefix>:<n>}:` for the other shards of a
//! sharded deployment ([`shard_tags`]). The braces are a Redis Cluster hash tag: every key of one
//! shard hashes to the same slot, so each Lua script may touch any of them (Cluster refuses
//! scripts whose keys span slots). Everything about a job lives in its shard; the fleet's keys
//! (workers, drains, outlooks, the deployment's id and shard count) live in shard 0 whichever
//! shard a [`Keys`] is for. The prefix also isolates deployments (and tests) sharing a Redis
//! server. The full layout, with types and TTLs, is in `docs/architecture.md`.

use crate::job::{JobId, Lane, QueueName};

/// Redis Cluster's slot count.
const SLOTS: u32 = 16384;

/// The hash tags of a deployment's `shards` shards, including the braces. Shard 0 is `{prefix}`,
/// so a deployment of one shard keeps the keys it always had. Shard i > 0 is `{prefix:n}` with the
/// smallest `n` whose slot falls in the i-th of `shards` equal slot ranges counted on from shard
/// 0's range: a cluster whose primaries split the slots evenly (`redis-cli --cluster create`,
/// ElastiCache) then holds each shard on a different primary when it has `shards` of them.
pub fn shard_tags(prefix: &str, shards: usize) -> Vec<String> {
    let shards = shards.max(1);
    let range = |tag: &str| slot(tag) as usize * shards / SLOTS as usize;
    let mut tags = vec![prefix.to_string()];
    let home = range(prefix);
    let mut n = 1usize;
    for i in 1..shards {
        let want = (home + i) % shards;
        while range(&format!("{prefix}:{n}")) != want {
            n += 1;
        }
        tags.push(format!("{prefix}:{n}"));
        n += 1;
    }
    tags.into_iter().map(|t| format!("{{{t}}}")).collect()
}

/// The Redis Cluster slot of a hash tag's content (CRC16/XMODEM, as Redis computes it).
pub fn slot(tag: &str) -> u16 {
    (crc16(tag.as_bytes()) as u32 % SLOTS) as u16
}

/// CRC16/XMODEM (poly 0x1021, init 0), the checksum Redis Cluster's key slots are made of.
fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (0..8).fold(crc ^ ((b as u16) << 8), |c, _| {
            if c & 0x8000 != 0 { (c << 1) ^ 0x1021 } else { c << 1 }
        })
    })
}

/// The shard a job lives in, out of `shards`: decided by its id's part before the first `.`,
/// so an array's children (`<parent>.<index>`) and a tenant's own ids (`<tenant>.<id>`) go with
/// their parent and their tenant; a generated id is drawn until it lands in its tenant's shard
/// ([`crate::job::JobId::generate_in`]). The same function on every process and version: a job's
/// shard must never move.
pub fn shard_of(id: &str, shards: usize) -> usize {
    let routing = id.split('.').next().unwrap_or(id);
    (crc16(routing.as_bytes()) as usize) % shards.max(1)
}

/// The shard of a tenant's jobs (its generated ids, its own ids, its quota count, its rate
/// bucket): the shard its name would route to as an id.
pub fn tenant_shard(tenant: &str, shards: usize) -> usize {
    shard_of(tenant, shards)
}

/// Builds key names for one deployment prefix, for one of its shards.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The shard's hash tag including the braces, e.g. `{dcc}` or `{dcc:3}`.
    tag: String,
    /// Shard 0's tag, which the fleet's keys carry.
    fleet: String,
}

impl Keys {
    /// Keys for the deployment prefix `prefix` (e.g. `dcc`), shard 0 (all of a one-shard one).
    pub fn new(prefix: &str) -> Self {
        let tag = format!("{{{prefix}}}");
        Keys {
            fleet: tag.clone(),
            tag,
        }
    }

    /// The keys of every shard of a deployment of `shards` shards, shard 0 first.
    pub fn shards(prefix: &str, shards: usize) -> Vec<Keys> {
        let tags = shard_tags(prefix, shards);
        let fleet = tags[0].clone();
        tags.into_iter()
            .map(|tag| Keys {
                tag,
                fleet: fleet.clone(),
            })
            .collect()
    }

    /// STRING: the deployment's shard count, set by the first server that started it (see
    /// `docs/scaling.md`): every process reads it, so none can disagree on where a job lives.
    pub fn shard_count(&self) -> String {
        format!("{}:shards", self.fleet)
    }

    /// HASH: one job's record (see `job::record` for the fields).
    pub fn job(&self, id: &JobId) -> String {
        format!("{}{}", self.job_prefix(), id)
    }

    /// The part of [`Keys::job`] before the id; scripts that pop an id build the job key from it.
    pub fn job_prefix(&self) -> String {
        format!("{}:job:", self.tag)
    }

    /// HASH: a fast job's files (inputs, logs, outputs), one field per object name. Fast jobs
    /// never touch storage; this goes with the job record.
    pub fn blob(&self, id: &JobId) -> String {
        format!("{}:blob:{}", self.tag, id)
    }

    /// The base name of one lane of a queue. Jobs wait in one LIST per tenant under it
    /// ([`Keys::tenant_lane`]); the list of this exact name holds jobs queued before tenants
    /// existed (tenant `""`), and is claimed from after every tenant's.
    pub fn lane(&self, queue: QueueName, lane: Lane) -> String {
        format!("{}:queue:{}:{}", self.tag, queue.as_str(), lane.as_str())
    }

    /// LIST of one tenant's job ids waiting in one lane; LPUSH to enqueue, the oldest (at the
    /// tail) is claimed first. Scripts build it as `<lane>:t:<tenant>`.
    pub fn tenant_lane(&self, queue: QueueName, lane: Lane, tenant: &str) -> String {
        match tenant {
            "" => self.lane(queue, lane),
            t => format!("{}:t:{}", self.lane(queue, lane), t),
        }
    }

    /// LIST: the tenants with jobs waiting in one lane, in claim turn (round-robin: a tenant
    /// that got a claim goes to the back). Scripts build it as `<lane>:ring`.
    pub fn ring(&self, queue: QueueName, lane: Lane) -> String {
        format!("{}:ring", self.lane(queue, lane))
    }

    /// ZSET: workers of a queue whose last claim found nothing they could take, scored by the
    /// slots (GPUs on `gpu`) they had free then. A job that becomes claimable wakes the one with
    /// the most room (`wake.lua`) rather than every worker; a claim that takes a job removes its
    /// worker, as do a drain and a clean stop.
    pub fn idle(&self, queue: QueueName) -> String {
        format!("{}:idle:{}", self.tag, queue.as_str())
    }

    /// The part of every lane's name before `<queue>:<lane>` ([`Keys::lane`]): a script that
    /// makes a job claimable (`deps.lua`) builds its lane from it.
    pub fn lanes_prefix(&self) -> String {
        format!("{}:queue:", self.tag)
    }

    /// The part of [`Keys::idle`] before the queue's name, for the same scripts.
    pub fn idle_prefix(&self) -> String {
        format!("{}:idle:", self.tag)
    }

    /// HASH: the jobs that wait for job `id` (`dependsOn`): dependent id → `succeeded` |
    /// `ended`. Written when a dependent is queued, read and removed when `id` ends
    /// (`deps.lua`), which builds it from [`Keys::dependents_prefix`].
    pub fn dependents(&self, id: &JobId) -> String {
        format!("{}{}", self.dependents_prefix(), id)
    }

    /// The part of [`Keys::dependents`] before the id.
    pub fn dependents_prefix(&self) -> String {
        format!("{}:dependents:", self.tag)
    }

    /// HASH: array children not made yet, per queue (`<queue>`) and per queue and tenant
    /// (`<queue>:<tenant>`): queue depth beyond the lists, where an array is one entry. Kept by
    /// the scripts (`count_backlog` in active.lua), read by the depth readers.
    pub fn backlog(&self) -> String {
        format!("{}:backlog", self.tag)
    }

    /// ZSET: running jobs of a queue, scored by lease deadline (ms). The reaper reads it.
    pub fn running(&self, queue: QueueName) -> String {
        format!("{}:running:{}", self.tag, queue.as_str())
    }

    /// ZSET: every job, scored by creation time (ms); the job listing pages through it.
    pub fn index(&self) -> String {
        format!("{}:jobs", self.tag)
    }

    /// HASH: per tenant, its queued + running jobs (`<tenant>`) and fast ones (`<tenant>:fast`),
    /// kept by enqueue and every transition to an end; checked against its quotas at submit.
    pub fn tenants_active(&self) -> String {
        format!("{}:tenants:active", self.tag)
    }

    /// HASH with a TTL: one tenant's submit token bucket (`tokens`, `at`).
    pub fn rate(&self, tenant: &str) -> String {
        format!("{}:rate:{}", self.tag, tenant)
    }

    /// ZSET: one tenant's jobs, scored by creation time (ms): its own listing.
    pub fn tenant_index(&self, tenant: &str) -> String {
        format!("{}:tenant:{}:jobs", self.tag, tenant)
    }

    /// ZSET: finished jobs, scored by the time their retention ends (ms).
    pub fn expiry(&self) -> String {
        format!("{}:expiry", self.tag)
    }

    /// ZSET: the completion webhooks to deliver (job ids), scored by when the next try is due
    /// (ms). The scripts that end a job add its id; a server taking a delivery pushes the score
    /// past its delivery lease, so a server that dies mid-delivery leaves it due again.
    pub fn outbox(&self) -> String {
        format!("{}:outbox", self.tag)
    }

    /// Pub/sub channel of job events (JSON, see `events`).
    pub fn events(&self) -> String {
        format!("{}:events", self.tag)
    }

    /// STRING (JSON, with a TTL of a few scaler passes): what the scaler says the fleet of
    /// `queue` can grow to ([`crate::outlook::Outlook`]).
    pub fn outlook(&self, queue: QueueName) -> String {
        format!("{}:outlook:{}", self.fleet, queue.as_str())
    }

    /// STRING: this deployment's own id, a random one set by the first worker that asked. Workers
    /// label their containers with it, so two deployments on one Docker host (another prefix,
    /// another Redis) never take each other's containers for leftovers.
    pub fn deployment(&self) -> String {
        format!("{}:deployment", self.fleet)
    }

    /// STRING: a counter written only to move a connection's replication offset, so that a
    /// `WAIT` on it covers writes other connections made before (see `queue::durable`).
    pub fn durability_mark(&self) -> String {
        format!("{}:durability-mark", self.tag)
    }

    /// Pub/sub channel of one worker: its wake-ups (`queued` events meant for it) and the
    /// `cancelled` / `deleted` events of the jobs it runs. A worker hears nothing else, so the
    /// events of a job cost one delivery per server, not one per worker.
    pub fn worker_events(&self, id: &str) -> String {
        format!("{}{}", self.worker_events_prefix(), id)
    }

    /// The part of [`Keys::worker_events`] before the id (scripts add the worker's id).
    pub fn worker_events_prefix(&self) -> String {
        format!("{}:events:worker:", self.tag)
    }

    /// HASH with a TTL: one worker's health and capacity; its expiry means the worker is gone.
    pub fn worker(&self, id: &str) -> String {
        format!("{}:worker:{}", self.fleet, id)
    }

    /// STRING: present while an operator or the scaler asks this worker to drain.
    pub fn drain(&self, id: &str) -> String {
        format!("{}:drain:{}", self.fleet, id)
    }

    /// HASH: the scaler's memory of one autoscaling group: `last_change` (ms) and `seen:<instance>`
    /// (ms the scaler first saw each instance: the start of its health grace).
    pub fn scaler(&self, group: &str) -> String {
        format!("{}:scaler:{}", self.fleet, group)
    }

    /// STRING (integer): bytes all fast jobs' files hold in Redis (`{p}:blob:*`), kept by the
    /// blob scripts; checked against `DCC_FAST_MAX_REDIS_BYTES`.
    pub fn fast_bytes(&self) -> String {
        format!("{}:fast:bytes", self.tag)
    }

    /// HASH with a TTL (`DCC_HISTORY_TTL`): the counters and fleet samples of one minute
    /// (`minute` = ms since the epoch / 60000), see `history`. Scripts build it from
    /// [`Keys::history_prefix`] and the minute of their `now`.
    pub fn history(&self, minute: i64) -> String {
        format!("{}{minute}", self.history_prefix())
    }

    /// The part of [`Keys::history`] before the minute.
    pub fn history_prefix(&self) -> String {
        format!("{}:history:", self.tag)
    }

    /// ZSET: known worker ids, scored by last beat (ms); pruned when their health key is gone.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.fleet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // CRC16/XMODEM's check value, and slots `CLUSTER KEYSLOT` gives.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
    }

    #[test]
    fn shards_fall_in_distinct_slot_ranges_and_shard_0_keeps_its_keys() {
        for n in [1, 2, 3, 5, 16] {
            let tags = shard_tags("dcc", n);
            assert_eq!(tags[0], "{dcc}");
            let ranges: std::collections::BTreeSet<usize> = tags
                .iter()
                .map(|t| slot(t.trim_matches(|c| c == '{' || c == '}')) as usize * n / SLOTS as usize)
                .collect();
            assert_eq!(ranges.len(), n, "{tags:?}");
        }
        let shards = Keys::shards("dcc", 3);
        assert_eq!(shards[0].index(), Keys::new("dcc").index());
        // The fleet's keys are shard 0's in every shard.
        assert_eq!(shards[2].workers(), "{dcc}:workers");
        assert_eq!(shards[2].drain("w"), "{dcc}:drain:w");
        assert_ne!(shards[2].index(), shards[0].index());
    }

    #[test]
    fn a_job_goes_with_its_tenant_and_its_parent() {
        assert_eq!(shard_of("anything", 1), 0);
        for n in [2, 3, 7] {
            assert_eq!(shard_of("team-a.x1", n), tenant_shard("team-a", n));
            assert_eq!(shard_of("p.3", n), shard_of("p", n));
            assert_eq!(shard_of("team-a.x1.12", n), tenant_shard("team-a", n));
        }
    }

    #[test]
    fn exact_key_strings() {
        let k = Keys::new("dcc");
        let id = JobId::parse("abc").unwrap();
        assert_eq!(k.job(&id), "{dcc}:job:abc");
        assert_eq!(k.job_prefix(), "{dcc}:job:");
        assert_eq!(k.blob(&id), "{dcc}:blob:abc");
        assert_eq!(k.lane(QueueName::Cpu, Lane::High), "{dcc}:queue:cpu:high");
        assert_eq!(k.lane(QueueName::Gpu, Lane::Fast), "{dcc}:queue:gpu:fast");
        assert_eq!(k.lane(QueueName::Cpu, Lane::Normal), "{dcc}:queue:cpu:normal");
        assert_eq!(
            k.tenant_lane(QueueName::Cpu, Lane::Normal, "a"),
            "{dcc}:queue:cpu:normal:t:a"
        );
        assert_eq!(
            k.tenant_lane(QueueName::Cpu, Lane::Normal, ""),
            "{dcc}:queue:cpu:normal"
        );
        assert_eq!(k.ring(QueueName::Gpu, Lane::Fast), "{dcc}:queue:gpu:fast:ring");
        assert_eq!(k.running(QueueName::Gpu), "{dcc}:running:gpu");
        assert_eq!(k.index(), "{dcc}:jobs");
        assert_eq!(k.expiry(), "{dcc}:expiry");
        assert_eq!(k.events(), "{dcc}:events");
        assert_eq!(k.outbox(), "{dcc}:outbox");
        assert_eq!(k.worker_events("w1"), "{dcc}:events:worker:w1");
        assert_eq!(k.idle(QueueName::Cpu), "{dcc}:idle:cpu");
        assert_eq!(k.worker("w1"), "{dcc}:worker:w1");
        assert_eq!(k.workers(), "{dcc}:workers");
        assert_eq!(k.history(29_000_000), "{dcc}:history:29000000");
        assert_eq!(k.drain("w1"), "{dcc}:drain:w1");
        assert_eq!(k.fast_bytes(), "{dcc}:fast:bytes");
        assert_eq!(k.rate("team-a"), "{dcc}:rate:team-a");
        assert_eq!(k.tenants_active(), "{dcc}:tenants:active");
        assert_eq!(k.tenant_index("team-a"), "{dcc}:tenant:team-a:jobs");
    }
}
