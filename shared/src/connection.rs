//! Where DCC's Redis is and how to reach it: one server (the default) or a Redis Cluster.
//!
//! `DCC_REDIS_URL` names one server (`redis://…`, `rediss://…`) or a cluster by its seed nodes:
//! `redis+cluster://[user:password@]host:port[,host:port…]` (`rediss+cluster://` for TLS). Every
//! key of a deployment carries one hash tag (see [`crate::keys`]), so on a cluster the whole
//! deployment lives in one slot: each script's keys are on one node, and a failover of that
//! node's primary is handled by the cluster client (it follows `MOVED` and refreshes its slot
//! map). What a command without keys must ask of *that* node (the clock, `WAIT`, `INFO`, `CONFIG`)
//! goes there with [`Conn::on_home`], never to a node the client picks at random (the cluster
//! client alone would: see there). Job events and
//! wake-ups travel on shard channels there (`SPUBLISH`/`SSUBSCRIBE`: see
//! `crate::queue::library` and [`crate::events`]).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};

use crate::{Error, Result};

/// What `DCC_REDIS_URL` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One Redis server (a primary, or an endpoint that follows one across failovers).
    Node(String),
    /// A Redis Cluster, by the URLs of its seed nodes (any live one tells the client the rest).
    Cluster(Vec<String>),
}

impl Target {
    /// Reads a `DCC_REDIS_URL`; a cluster URL becomes one `redis://` URL per seed, each with the
    /// credentials and query the cluster URL had.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::Config(format!("DCC_REDIS_URL: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("not a URL (redis://host:port or redis+cluster://host:port,host:port)"))?;
        let plain = match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" => return Ok(Target::Node(url.to_string())),
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            other => return Err(bad(&format!("unknown scheme {other:?}"))),
        };
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .map(|h| {
                if h.is_empty() || !h.contains(':') {
                    return Err(bad(&format!("cluster seed {h:?} is not host:port")));
                }
                Ok(format!("{plain}://{userinfo}{h}{tail}"))
            })
            .collect::<Result<_>>()?;
        Ok(Target::Cluster(seeds))
    }

    /// Refuses a URL of the wrong kind: `redis://` naming one node of a cluster (keys of other
    /// slots would answer `MOVED`, and the deployment's slot may move away), or
    /// `redis+cluster://` naming a server without cluster mode. Asks the first node that
    /// answers (`INFO cluster`); `Ok` while none does (checked again at the next start).
    pub async fn check(&self) -> Result<()> {
        let (nodes, want) = match self {
            Target::Node(url) => (std::slice::from_ref(url), false),
            Target::Cluster(seeds) => (seeds.as_slice(), true),
        };
        for url in nodes {
            let Ok(Ok(info)) = tokio::time::timeout(Duration::from_secs(3), cluster_info(url)).await else {
                continue;
            };
            let enabled = info.lines().any(|l| l.trim() == "cluster_enabled:1");
            return match (want, enabled) {
                (false, true) => Err(Error::Config(
                    "DCC_REDIS_URL names one node of a Redis Cluster: name the cluster, redis+cluster://host:port[,host:port…] (rediss+cluster:// for TLS)".into(),
                )),
                (true, false) => Err(Error::Config(
                    "DCC_REDIS_URL names a Redis Cluster (redis+cluster://) but the server has cluster mode off: use redis://host:port (rediss:// for TLS)".into(),
                )),
                _ => Ok(()),
            };
        }
        Ok(())
    }

    /// A cluster client for the seeds; `None` for one server.
    pub(crate) fn cluster_client(&self, response_timeout: Duration) -> Result<Option<ClusterClient>> {
        let Target::Cluster(seeds) = self else { return Ok(None) };
        ClusterClient::builder(seeds.clone())
            .connection_timeout(Duration::from_secs(3))
            .response_timeout(response_timeout)
            .build()
            .map(Some)
            .map_err(|e| Error::Config(format!("DCC_REDIS_URL: {e}")))
    }
}

/// What `INFO cluster` says on the node at `url`.
async fn cluster_info(url: &str) -> redis::RedisResult<String> {
    let mut c = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    redis::cmd("INFO").arg("cluster").query_async(&mut c).await
}

/// A connection to the deployment's Redis: a pooled one to a server, or (a clone of) the
/// process's multiplexed cluster connection with the route of the deployment's slot.
pub enum Conn {
    /// To one server.
    Node(crate::pool::Connection),
    /// To a cluster; `home` is the primary of the slot every key of the deployment is in.
    Cluster {
        /// The cluster connection (cheap clones share its sockets).
        conn: ClusterConnection,
        /// The deployment's slot, on its primary.
        home: Route,
        /// A key in that slot.
        home_key: Arc<str>,
    },
}

impl Conn {
    /// Runs a command that has no key (or whose keys would not route it) on the node holding
    /// the deployment's keys: the clock, `WAIT`, `INFO`, `CONFIG GET`. On a cluster it goes in one
    /// pipeline after a read of a key in that slot, and is refused unless that read was answered:
    /// the cluster client sends a command for a node it has no live connection to (one that just
    /// died) to that node's replica or to any other node (redis-rs 1.8, `get_connection`), and a
    /// `WAIT` another primary answers would confirm writes that died with ours.
    pub async fn on_home<T: FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<T> {
        if let Conn::Node(c) = self {
            return cmd.query_async(&mut **c).await;
        }
        let reply = self
            .pipeline_on_home(std::slice::from_ref(cmd))
            .await?
            .into_iter()
            .next();
        let reply = reply.ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "a reply missing")))?;
        T::from_redis_value(reply.extract_error()?).map_err(Into::into)
    }

    /// Runs `cmds` in one pipeline on the node holding the deployment's keys, as
    /// [`Conn::on_home`] runs one command: each command's reply, an error reply as a value. On
    /// a cluster the read of a key in that slot goes first, and nothing is answered unless it
    /// was.
    pub async fn pipeline_on_home(&mut self, cmds: &[Cmd]) -> redis::RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if let Conn::Cluster { home_key, .. } = self {
            pipe.cmd("EXISTS").arg(&**home_key);
        }
        for cmd in cmds {
            pipe.add_command(cmd.clone());
        }
        match self {
            Conn::Node(c) => pipe.query_async(&mut **c).await,
            Conn::Cluster { conn, home, .. } => {
                let route = SingleNodeRoutingInfo::SpecificNode(*home);
                let mut replies = conn.route_pipeline(pipe, 0, cmds.len() + 1, route).await?.into_iter();
                // (any node but the slot's primary answers the read with MOVED, or not at all)
                replies
                    .next()
                    .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "a pipeline without replies")))?
                    .extract_error()?;
                Ok(replies.collect())
            }
        }
    }

    /// Raises (or restores) the response timeout of a server connection, for one long command.
    /// A cluster connection keeps the timeout it was made with (long enough for `WAIT`).
    pub(crate) fn set_response_timeout(&mut self, timeout: Duration) {
        if let Conn::Node(c) = self {
            c.set_response_timeout(timeout);
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Node(c) => c.req_packed_command(cmd),
            Conn::Cluster { conn, .. } => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Node(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster { conn, .. } => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Node(c) => c.get_db(),
            Conn::Cluster { conn, .. } => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_becomes_one_url_per_seed() {
        assert_eq!(
            Target::parse("redis://h:1/0").unwrap(),
            Target::Node("redis://h:1/0".into())
        );
        assert_eq!(
            Target::parse("redis+cluster://u:p@a:1,b:2/?protocol=resp3").unwrap(),
            Target::Cluster(vec![
                "redis://u:p@a:1/?protocol=resp3".into(),
                "redis://u:p@b:2/?protocol=resp3".into()
            ])
        );
        assert_eq!(
            Target::parse("rediss+cluster://a:1").unwrap(),
            Target::Cluster(vec!["rediss://a:1".into()])
        );
        for bad in [
            "a:1",
            "http://a:1",
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
