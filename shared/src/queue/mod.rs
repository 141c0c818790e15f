//! Every state-changing Redis operation. Nothing outside this module sends state-changing
//! commands for jobs; each transition is one Lua script stored beside its module, so a crash
//! between two commands can never leave a half-written job.
//!
//! # Layout
//! - [`enqueue`]: submit → `queued` (same-id rule included).
//! - [`claim`]: `queued` → `running`, handing out a [`lease::Lease`] with the job's record.
//! - [`lease`]: what a worker holds: renewed by its heartbeat, given back by `release` (a draining
//!   or stopping worker hands a job back without using up an attempt).
//! - [`finish`]: `running` → `succeeded | failed | timed_out`, fenced by the attempt.
//! - [`cancel`]: `queued | running` → `cancelled`.
//! - [`delete`]: every trace gone (the DELETE route and the retention sweep).
//! - [`reap`]: expired leases → `queued` (attempt + 1) or `failed` (`WORKER_LOST`).
//! - [`drain`]: asking a worker (through Redis) to stop claiming.
//! - [`outbox`]: completion webhooks of ended jobs, taken and settled by the servers sending them.
//! - [`rate`]: a tenant's submits per second (token bucket).
//! - [`read`]: reads (job, listing, queue depths, due expiries); no state changes.
//!
//! Time comes in as `now` (ms) from the caller: tests drive expiry without sleeping.

pub mod cancel;
pub mod claim;
pub mod delete;
pub mod drain;
pub mod durable;
pub mod enqueue;
pub mod finish;
pub mod handover;
pub mod lease;
pub(crate) mod library;
pub mod outbox;
pub mod rate;
pub mod read;
pub mod reap;
pub mod shards;

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SlotAddr};

use crate::connection::{Conn, Target};

use self::durable::DurabilityPolicy;
use crate::Result;
use crate::keys::Keys;

/// The `hash-max-listpack-value` DCC's Redis should have (the Terraform parameter group, the
/// test and dev servers set it): a job's record, definition included, then fits Redis's compact
/// hash encoding.
pub const RECORD_LISTPACK_VALUE: u64 = 1024;

/// How a queue reaches Redis.
#[derive(Clone)]
enum Backend {
    /// Pooled connections to one server.
    Node(crate::pool::Pool),
    /// A cluster: one multiplexed connection (made on first use; cheap clones share it), which
    /// follows failovers and slot moves on its own.
    Cluster(Arc<ClusterBackend>),
}

/// A cluster's client and its one connection.
struct ClusterBackend {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
}

impl Backend {
    fn cluster(client: ClusterClient) -> Backend {
        Backend::Cluster(Arc::new(ClusterBackend {
            client,
            conn: Default::default(),
        }))
    }
}

/// Where each shard's slot is on a cluster (its primary), computed once, not per command.
pub(crate) fn homes(shards: &[Keys]) -> Arc<[(Route, Arc<str>)]> {
    shards
        .iter()
        .map(|k| {
            let key = k.index();
            (
                Route::with_key(key.as_bytes(), SlotAddr::Master),
                Arc::from(key.as_str()),
            )
        })
        .collect()
}

/// The queue of one deployment: a connection pool and its key names. A sharded deployment's
/// queue is one value too: each call goes to the shard of the job it is about, or visits every
/// shard (claims, listings, depths); [`Queue::shard`] is the same queue seen from one shard.
#[derive(Clone)]
pub struct Queue {
    /// Connections for commands and scripts.
    backend: Backend,
    /// Key names of the shard this value is for (shard 0 unless made by [`Queue::shard`]).
    keys: Keys,
    /// Which shard that is.
    shard: usize,
    /// Every shard's key names, shard 0 first (one entry on an unsharded deployment).
    shards: Arc<[Keys]>,
    /// The primary of each shard's slot, on a cluster.
    homes: Arc<[(Route, Arc<str>)]>,
    /// Where this process's workers may be among the idle workers ([`claim::IdleMarks`]).
    idle_marks: Arc<claim::IdleMarks>,
    /// Each shard's settle context up to its retention ([`Queue::settle_context`]), made on
    /// first use; made again after the shards or the history's TTL change.
    context_heads: Arc<std::sync::OnceLock<Vec<String>>>,
    /// The key prefix the shards' tags are made of.
    prefix: String,
    /// The Redis URL, for connections that cannot be pooled (pub/sub).
    url: String,
    /// What the URL names: one server or a cluster's seeds.
    target: Target,
    /// What confirms a write before a client is told of it.
    durability: DurabilityPolicy,
    /// Each shard's primary's connected replicas, and when that was read (see [`durable`]).
    replicas: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<usize, (std::time::Instant, u32)>>>,
    /// How long a minute of history is kept (`DCC_HISTORY_TTL`; zero: none is kept).
    history_ttl: Duration,
    /// Whether this Redis refused functions: the job transitions then go as scripts
    /// ([`library`]).
    functions_refused: Arc<std::sync::atomic::AtomicBool>,
}

impl Queue {
    /// A queue on the Redis at `url` (one server, or a cluster: see [`crate::connection`]) with
    /// keys under `prefix`. Connects lazily.
    pub fn new(url: &str, prefix: &str) -> Result<Self> {
        let target = Target::parse(url)?;
        let shards: Arc<[Keys]> = Keys::shards(prefix, 1).into();
        let backend = match target.cluster_client(durable::RESPONSE_TIMEOUT)? {
            Some(client) => Backend::cluster(client),
            None => Backend::Node(crate::pool::open(url)?),
        };
        Ok(Queue {
            backend,
            keys: shards[0].clone(),
            shard: 0,
            homes: homes(&shards),
            idle_marks: Default::default(),
            context_heads: Default::default(),
            shards,
            prefix: prefix.to_string(),
            url: url.to_string(),
            target,
            durability: DurabilityPolicy::default(),
            replicas: Default::default(),
            history_ttl: crate::history::DEFAULT_TTL,
            functions_refused: Default::default(),
        })
    }

    /// The same queue, confirming client-visible writes as `policy` says (`DCC_DURABILITY`).
    /// On a cluster every command may then take as long as a confirmation (its connection has
    /// one response timeout, and `WAIT` must not outlive it).
    pub fn with_durability(mut self, policy: DurabilityPolicy) -> Self {
        self.durability = policy;
        if let Backend::Cluster(_) = self.backend
            && policy.mode != durable::Durability::None
            && let Ok(Some(client)) = self.target.cluster_client(policy.timeout + durable::RESPONSE_TIMEOUT)
        {
            self.backend = Backend::cluster(client);
        }
        self
    }

    /// The same queue, keeping each minute of history for `ttl` (`DCC_HISTORY_TTL`; zero: none).
    pub fn with_history(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self.context_heads = Default::default();
        self
    }

    /// How long a minute of history is kept (zero: history is off).
    pub fn history_ttl(&self) -> Duration {
        self.history_ttl
    }

    /// The key names of this deployment.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// What `deps.lua` needs to settle an ended job's dependents, as one script argument: the
    /// key prefixes it builds keys from, the channels it publishes on, and the retention of a
    /// dependent it fails; and where `history.lua` counts transitions, for how long.
    pub(crate) fn settle_context(&self, retention: Duration) -> String {
        // Every call but its retention the same: made once per shard (a claim, a finish and an
        // enqueue each send it), not built from a JSON value each time.
        let heads = self.context_heads.get_or_init(|| {
            self.shards
                .iter()
                .map(|k| {
                    let mut head = serde_json::json!({
                        "job": k.job_prefix(),
                        "deps": k.dependents_prefix(),
                        "lanes": k.lanes_prefix(),
                        "idle": k.idle_prefix(),
                        "events": k.events(),
                        "workers": k.worker_events_prefix(),
                        "backlog": k.backlog(),
                        "history": k.history_prefix(),
                        "history_ttl": self.history_ttl.as_secs(),
                    })
                    .to_string();
                    head.pop(); // its closing brace: `keep` follows
                    head
                })
                .collect()
        });
        format!("{},\"keep\":{}}}", heads[self.shard], ms(retention))
    }

    /// The Redis URL (for pub/sub connections).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One server or a cluster.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// A connection: a pooled one, or the cluster connection.
    pub async fn conn(&self) -> Result<Conn> {
        match &self.backend {
            Backend::Node(pool) => Ok(Conn::Node(pool.get().await?)),
            Backend::Cluster(b) => {
                let c = b.conn.get_or_try_init(|| b.client.get_async_connection()).await?;
                let (home, key) = &self.homes[self.shard];
                Ok(Conn::Cluster {
                    conn: c.clone(),
                    home: *home,
                    home_key: key.clone(),
                })
            }
        }
    }

    /// Redis's clock (ms): the fleet's one clock for leases (see [`crate::clock::REDIS_TIME`]).
    /// On a cluster, the clock of the node holding the deployment.
    pub async fn time(&self) -> Result<crate::clock::Millis> {
        let mut c = self.conn().await?;
        let (secs, micros): (i64, i64) = c.on_home(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// Bytes all fast jobs' files hold in Redis now, in every shard.
    pub async fn fast_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for q in self.each_shard() {
            let mut c = q.conn().await?;
            let n: Option<i64> = redis::cmd("GET").arg(q.keys.fast_bytes()).query_async(&mut c).await?;
            total += n.unwrap_or(0).max(0) as u64;
        }
        Ok(total)
    }

    /// This deployment's id (see [`Keys::deployment`]), made now when it has none.
    pub async fn deployment_id(&self) -> Result<String> {
        let mut c = self.conn().await?;
        let key = self.keys.deployment();
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .query_async(&mut c)
            .await?;
        let id: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut c).await?;
        Ok(id.unwrap_or(fresh))
    }

    /// Round trip to Redis (`/readyz`); on a cluster, to the primary of each of the deployment's
    /// shards (a node holding none of ours is not ours to report). A shard that does not answer
    /// is logged by its index.
    pub async fn ping(&self) -> Result<()> {
        for q in self.per_server() {
            // A read of a key of the shard, not a `PING`: the cluster client may send a command
            // for a node it cannot reach to another, and any node answers `PING`.
            let answered = async {
                let mut c = q.conn().await?;
                let _: i64 = redis::cmd("EXISTS").arg(q.keys().index()).query_async(&mut c).await?;
                Ok::<_, crate::Error>(())
            };
            if let Err(e) = answered.await {
                tracing::warn!(shard = q.shard, shards = self.shard_count(), error = %e, "a shard's primary does not answer");
                return Err(e);
            }
        }
        Ok(())
    }

    /// One queue per server the deployment's shards may live on, for the checks of server
    /// settings: each shard on a cluster (each may be its own primary, configured apart), the
    /// queue itself on one server (every shard there is the same server).
    pub(crate) fn per_server(&self) -> Vec<Queue> {
        match self.backend {
            Backend::Node(_) => vec![self.clone()],
            Backend::Cluster(_) => self.each_shard().collect(),
        }
    }

    /// The `maxmemory-policy` of the servers: a queue needs `noeviction`, or keys with a TTL and
    /// whole jobs can vanish under memory pressure. On a cluster, the first shard's primary set
    /// otherwise, if any (one is enough to lose jobs). `None` when CONFIG is not allowed (managed
    /// Redis).
    pub async fn eviction_policy(&self) -> Result<Option<String>> {
        let mut first = None;
        for q in self.per_server() {
            let policy = q.server_setting("maxmemory-policy").await?;
            if policy.as_deref().is_some_and(|p| p != "noeviction") {
                return Ok(policy);
            }
            first = first.or(policy);
        }
        Ok(first)
    }

    /// The `hash-max-listpack-value` of the servers (the smallest, on a cluster): job records
    /// whose values all fit it are stored compactly (about 0.9 KB a queued job at
    /// [`RECORD_LISTPACK_VALUE`], 1.7 KB at Redis's default of 64, which a job's definition
    /// always exceeds). `None` when CONFIG is not allowed (managed Redis: see the parameter group).
    pub async fn listpack_value(&self) -> Result<Option<u64>> {
        let mut values = Vec::new();
        for q in self.per_server() {
            values.push(
                q.server_setting("hash-max-listpack-value")
                    .await?
                    .and_then(|v| v.parse().ok()),
            );
        }
        Ok(values.into_iter().flatten().min())
    }

    async fn server_setting(&self, name: &str) -> Result<Option<String>> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Vec<String>> = c.on_home(redis::cmd("CONFIG").arg("GET").arg(name)).await;
        Ok(r.ok().and_then(|v| v.get(1).cloned()))
    }
}

/// Milliseconds of a duration, as stored in Redis.
pub(crate) fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

#[cfg(test)]
mod tests {
    /// The settle context is the JSON `deps.lua` and `history.lua` decode, per shard.
    #[test]
    fn settle_context_is_each_shards_json() {
        let q = super::Queue::new("redis://127.0.0.1:1", "t")
            .unwrap()
            .with_history(std::time::Duration::from_secs(60))
            .with_shards(3);
        for (i, keep) in [(0, 5u64), (2, 7)] {
            let s = q.shard(i);
            let v: serde_json::Value =
                serde_json::from_str(&s.settle_context(std::time::Duration::from_millis(keep))).unwrap();
            assert_eq!(v["keep"], keep);
            assert_eq!(v["job"], s.keys().job_prefix());
            assert_eq!(v["events"], s.keys().events());
            assert_eq!(v["history_ttl"], 60);
            assert_eq!(v.as_object().unwrap().len(), 10, "{v}");
        }
        let off = q.with_history(std::time::Duration::ZERO);
        let v: serde_json::Value = serde_json::from_str(&off.settle_context(std::time::Duration::ZERO)).unwrap();
        assert_eq!(v["history_ttl"], 0);
    }

    /// Every script that publishes spells it `redis.call('PUBLISH', …)`, so its cluster form
    /// ([`super::library`]) publishes on shard channels only.
    #[test]
    fn every_publish_has_a_sharded_form() {
        for (name, source) in [
            ("array", include_str!("array.lua")),
            ("cancel", include_str!("cancel.lua")),
            ("claim", include_str!("claim.lua")),
            ("delete", include_str!("delete.lua")),
            ("deps", include_str!("deps.lua")),
            ("enqueue", include_str!("enqueue.lua")),
            ("finish", include_str!("finish.lua")),
            ("reap", include_str!("reap.lua")),
            ("release", include_str!("release.lua")),
            ("wake", include_str!("wake.lua")),
        ] {
            let code: String = source.lines().filter(|l| !l.trim_start().starts_with("--")).collect();
            let spelled = code.matches("redis.call('PUBLISH',").count();
            assert!(spelled > 0, "{name}.lua publishes nothing");
            assert_eq!(
                code.matches("PUBLISH").count(),
                spelled,
                "{name}.lua publishes otherwise"
            );
        }
    }
}
