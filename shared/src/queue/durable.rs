//! Durable acknowledgements (`DCC_DURABILITY`): a write a client is told about (a submit, a
//! recorded result, a cancel, a delete) is confirmed by replicas or the append-only file before
//! the answer goes out. Redis replicates asynchronously: without this, a failover to a replica
//! that lagged loses every write the old primary had acknowledged but not yet shipped.
//!
//! `WAIT` and `WAITAOF` count the writes of their own connection, so the confirmation goes in the
//! same pipeline as the write, right after it ([`Queue::send_confirmed`]): on a cluster a
//! failover between the two would otherwise send the wait to the promoted replica, where this
//! client had written nothing, and "confirm" a write that died with the old primary. A confirmation that does not come in time is
//! [`Error::NotDurable`]: the write happened on the primary and may or may not survive a failover,
//! so the client is told to retry (the same id makes a submit's retry safe), not "done".
//!
//! DCC waits for at most the replicas the primary has connected (a replica that stalls stays
//! connected, as the primary sees it, for `repl-timeout`, 60 s by default). Right after a failover
//! the promoted primary has none until the replacement replica syncs (minutes on ElastiCache):
//! writes are then confirmed by the primary alone rather than refused for minutes; there is no
//! replica a failover could promote meanwhile. Redis's own `min-replicas-to-write` refuses writes
//! in that window instead (DCC answers 503), for those who prefer that.

use std::str::FromStr;
use std::time::Duration;

use super::Queue;
use super::library::Call;
use crate::connection::Conn;
use crate::{Error, Result};

/// How long a reading of the primary's connected replicas is used before it is read again.
const REPLICAS_FRESH: Duration = Duration::from_secs(1);

/// The response timeout of every pooled connection (the `redis` crate's default): a command on a
/// connection whose peer vanished fails within it instead of hanging on TCP retransmissions.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// What confirms a write before a client hears of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Nothing beyond the primary's memory (Redis's default, the fastest).
    #[default]
    None,
    /// `WAIT n`: `n` replicas have the write in memory.
    Replicas(u32),
    /// `WAITAOF 1 n`: the primary's append-only file has it on disk, and `n` replicas' too.
    Aof(u32),
}

impl FromStr for Durability {
    type Err = String;

    /// `none`, `replicas:N` (N ≥ 1), `aof` or `aof:N` (with N replicas' files as well).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let count = |n: &str, min: u32| {
            n.parse::<u32>()
                .ok()
                .filter(|n| (min..=16).contains(n))
                .ok_or_else(|| format!("{s:?}: the replica count must be a whole number from {min} to 16"))
        };
        match s.split_once(':') {
            None if s == "none" => Ok(Durability::None),
            None if s == "aof" => Ok(Durability::Aof(0)),
            Some(("replicas", n)) => Ok(Durability::Replicas(count(n, 1)?)),
            Some(("aof", n)) => Ok(Durability::Aof(count(n, 0)?)),
            _ => Err(format!("{s:?} is not one of none, replicas:N, aof, aof:N")),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::None => f.write_str("none"),
            Durability::Replicas(n) => write!(f, "replicas:{n}"),
            Durability::Aof(0) => f.write_str("aof"),
            Durability::Aof(n) => write!(f, "aof:{n}"),
        }
    }
}

/// The durability setting and how long a confirmation may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurabilityPolicy {
    /// What confirms a write.
    pub mode: Durability,
    /// Longest wait for it (`DCC_DURABILITY_TIMEOUT`).
    pub timeout: Duration,
}

impl Default for DurabilityPolicy {
    fn default() -> Self {
        DurabilityPolicy {
            mode: Durability::None,
            timeout: Duration::from_secs(1),
        }
    }
}

impl Queue {
    /// Confirms the writes made so far on `conn` (see the module docs); a no-op with `none`.
    pub(crate) async fn confirm(&self, conn: &mut Conn) -> Result<()> {
        let Some(wait) = self.wait_for(conn).await? else {
            return Ok(());
        };
        // The wait outlasts the connection's usual response timeout; set it back afterwards,
        // also when this future is dropped half-way.
        let conn = LongerTimeout::new(conn, self.durability.timeout + RESPONSE_TIMEOUT);
        let reply: redis::Value = conn.0.on_home(&wait.cmd).await?;
        self.acked(&wait, reply)
    }

    /// Runs `write` (and `then` after it) in one pipeline on the shard's primary, with the
    /// confirmation `wait` of `write`'s writes right after it, on the same connection:
    /// no failover and no new connection can come between a write and its confirmation. Sent
    /// apart, on a cluster, a `WAIT` after a failover went to the promoted replica, where this
    /// client's connection had written nothing to wait for, and "confirmed" a write that may
    /// have died with the old primary. (A cheap write comes before the wait, so it also covers
    /// earlier writes when the call wrote nothing: a retried submit that found its job.) The
    /// calls' replies, an error reply as a value, and the confirmation.
    pub(crate) async fn send_confirmed(
        &self,
        wait: Wait,
        write: &Call,
        then: Option<&Call>,
        conn: &mut Conn,
    ) -> Result<(Vec<redis::Value>, Result<()>)> {
        let mut cmds = vec![
            write.cmd(),
            redis::cmd("INCR").arg(self.keys().durability_mark()).take(),
            wait.cmd.clone(),
        ];
        cmds.extend(then.map(Call::cmd));
        let conn = LongerTimeout::new(conn, self.durability.timeout + RESPONSE_TIMEOUT);
        let replies = conn.0.pipeline_on_home(&cmds).await?;
        if replies.len() != cmds.len() {
            return Err(redis::RedisError::from((redis::ErrorKind::Client, "a pipeline with replies missing")).into());
        }
        let mut replies = replies.into_iter();
        let (written, marked, waited) = (replies.next(), replies.next(), replies.next());
        // (a mark refused, OOM say, fails the confirmation, not the calls: they were answered)
        let confirmation = match marked.unwrap_or(redis::Value::Nil).extract_error() {
            Ok(_) => self.acked(&wait, waited.unwrap_or(redis::Value::Nil)),
            Err(e) => Err(e.into()),
        };
        Ok((written.into_iter().chain(replies).collect(), confirmation))
    }

    /// Runs `call` and confirms its writes as the durability asks, in one pipeline
    /// ([`Queue::send_confirmed`]); with none, the call alone.
    pub(crate) async fn run_confirmed<T: redis::FromRedisValue>(
        &self,
        call: &Call,
        conn: &mut Conn,
    ) -> Result<Confirmed<T>> {
        let Some(wait) = self.wait_for(conn).await? else {
            return Ok(Confirmed {
                reply: call.invoke_async(conn).await?,
                confirmation: Ok(()),
            });
        };
        let (mut replies, confirmation) = self.send_confirmed(wait, call, None, conn).await?;
        let reply = call.reply(replies.pop().unwrap_or(redis::Value::Nil), conn).await?;
        Ok(Confirmed {
            reply: reply.value,
            confirmation: match reply.resent {
                true => self.confirm(conn).await,
                false => confirmation,
            },
        })
    }

    /// The command that confirms a connection's writes as the durability asks, `None` when
    /// nothing is to be waited for.
    pub(crate) async fn wait_for(&self, conn: &mut Conn) -> Result<Option<Wait>> {
        let policy = self.durability;
        let wait_ms = policy.timeout.as_millis() as u64;
        let wanted = match policy.mode {
            Durability::None => return Ok(None),
            Durability::Aof(0) => 0,
            Durability::Replicas(n) | Durability::Aof(n) => n.min(self.connected_replicas(conn).await?),
        };
        let (cmd, aof) = match policy.mode {
            Durability::Replicas(_) if wanted == 0 => return Ok(None),
            Durability::Aof(_) => (redis::cmd("WAITAOF").arg(1).arg(wanted).arg(wait_ms).take(), true),
            _ => (redis::cmd("WAIT").arg(wanted).arg(wait_ms).take(), false),
        };
        Ok(Some(Wait { cmd, wanted, aof }))
    }

    /// Whether `reply`, the answer to `wait`, confirms enough.
    fn acked(&self, wait: &Wait, reply: redis::Value) -> Result<()> {
        let reply = reply.extract_error()?;
        let acked = match wait.aof {
            true => {
                let (local, replicas): (u32, u32) = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
                if local < 1 { 0 } else { replicas }
            }
            false => redis::from_redis_value(reply).map_err(redis::RedisError::from)?,
        };
        if acked < wait.wanted {
            return Err(Error::NotDurable {
                mode: self.durability.mode.to_string(),
                waited_ms: self.durability.timeout.as_millis() as u64,
            });
        }
        Ok(())
    }

    /// Replicas this shard's primary has connected now (read at most every [`REPLICAS_FRESH`];
    /// shards may be on different primaries).
    async fn connected_replicas(&self, conn: &mut Conn) -> Result<u32> {
        let cached = self
            .replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&self.shard)
            .copied();
        if let Some((at, n)) = cached
            && at.elapsed() < REPLICAS_FRESH
        {
            return Ok(n);
        }
        let info: String = conn.on_home(redis::cmd("INFO").arg("replication")).await?;
        let n = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        self.replicas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.shard, (std::time::Instant::now(), n));
        Ok(n)
    }

    /// Refuses a setting this Redis cannot honour (`WAITAOF` needs Redis 7.2 and `appendonly
    /// yes`), on a cluster on the primary of every shard (each is configured apart); `Ok` while
    /// Redis is unreachable (checked again by every write).
    pub async fn check_durability(&self) -> Result<()> {
        let Durability::Aof(_) = self.durability.mode else {
            return Ok(());
        };
        for q in self.per_server() {
            q.check_aof().await.map_err(|e| match e {
                Error::Config(m) if self.shard_count() > 1 => Error::Config(format!("{m} (shard {})", q.shard)),
                e => e,
            })?;
        }
        Ok(())
    }

    /// [`Queue::check_durability`] on this queue's shard.
    async fn check_aof(&self) -> Result<()> {
        let Ok(mut c) = self.conn().await else { return Ok(()) };
        let known: Vec<redis::Value> = match c.on_home(redis::cmd("COMMAND").arg("INFO").arg("WAITAOF")).await {
            Ok(known) => known,
            // The shard's primary is not there now (dead, or failing over): every write checks.
            Err(e) if unreachable(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if matches!(known.first(), None | Some(redis::Value::Nil)) {
            return Err(Error::Config(
                "DCC_DURABILITY=aof needs Redis 7.2 or later (WAITAOF); this server does not have it".into(),
            ));
        }
        if self.server_setting("appendonly").await?.as_deref() == Some("no") {
            return Err(Error::Config(
                "DCC_DURABILITY=aof needs `appendonly yes` on the Redis server".into(),
            ));
        }
        Ok(())
    }
}

/// Whether `e` says a node could not be reached now (or another node answered for it), not that
/// it refused the command.
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.redirect_node().is_some()
        || e.is_cluster_error()
}

/// A write's reply and its confirmation ([`Queue::run_confirmed`]).
pub(crate) struct Confirmed<T> {
    reply: T,
    confirmation: Result<()>,
}

impl<T> Confirmed<T> {
    /// The reply; when `told(reply)` says the client will hear of the write, an error unless it
    /// was confirmed.
    pub(crate) fn reply_if(self, told: impl FnOnce(&T) -> bool) -> Result<T> {
        if told(&self.reply) {
            self.confirmation?;
        }
        Ok(self.reply)
    }
}

/// A confirmation to send: `WAIT` or `WAITAOF`, and how many replicas must answer.
pub(crate) struct Wait {
    cmd: redis::Cmd,
    wanted: u32,
    aof: bool,
}

/// A pooled connection whose response timeout is raised for one long command, and restored when
/// this is dropped (so the connection goes back to the pool as it came).
struct LongerTimeout<'a>(&'a mut Conn);

impl<'a> LongerTimeout<'a> {
    fn new(conn: &'a mut Conn, timeout: Duration) -> Self {
        conn.set_response_timeout(timeout);
        LongerTimeout(conn)
    }
}

impl Drop for LongerTimeout<'_> {
    fn drop(&mut self) {
        self.0.set_response_timeout(RESPONSE_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check at start lets a shard whose primary is out of reach pass (every write checks
    /// again), and fails on anything else.
    #[test]
    fn only_a_node_out_of_reach_passes_the_start_check() {
        let refused: redis::RedisError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(unreachable(&refused));
        let client: redis::RedisError = (redis::ErrorKind::Client, "a reply missing").into();
        assert!(!unreachable(&client));
    }

    #[test]
    fn parses_every_setting_and_rejects_the_rest() {
        assert_eq!("none".parse(), Ok(Durability::None));
        assert_eq!("replicas:1".parse(), Ok(Durability::Replicas(1)));
        assert_eq!("replicas:2".parse(), Ok(Durability::Replicas(2)));
        assert_eq!("aof".parse(), Ok(Durability::Aof(0)));
        assert_eq!("aof:1".parse(), Ok(Durability::Aof(1)));
        for bad in [
            "",
            "replicas",
            "replicas:0",
            "replicas:x",
            "replicas:17",
            "aof:-1",
            "wait:1",
            "NONE",
        ] {
            assert!(bad.parse::<Durability>().is_err(), "{bad:?} was accepted");
        }
        for d in [
            Durability::None,
            Durability::Replicas(3),
            Durability::Aof(0),
            Durability::Aof(2),
        ] {
            assert_eq!(d.to_string().parse(), Ok(d));
        }
    }

    /// The shard's primary dies after a write, before its replica is promoted: the cluster
    /// client has no connection to it and would send `WAIT` (and `INFO`) to another node, whose
    /// replicas would "confirm" a write they never saw. The confirmation must fail instead.
    #[tokio::test]
    async fn a_confirmation_is_never_answered_by_another_node() {
        let mut redis = crate::testing::Redis::cluster(3, 1);
        let q = Queue::new(&redis.url(), "t")
            .unwrap()
            .with_durability(DurabilityPolicy {
                mode: Durability::Replicas(1),
                timeout: Duration::from_secs(1),
            });
        let mut conn = q.conn().await.unwrap();
        let _: i64 = redis::cmd("INCR")
            .arg(q.keys().durability_mark())
            .query_async(&mut conn)
            .await
            .unwrap();
        q.confirm(&mut conn).await.expect("confirmed by the shard's replica");
        let home = redis.primary_of(&q.keys().index()).expect("the shard's primary");
        redis.kill_node(home);
        // (the replica count read a moment ago is still used: only the `WAIT` is asked)
        let after = q.confirm(&mut conn).await;
        assert!(after.is_err(), "a dead primary's write was confirmed: {after:?}");
    }
}
