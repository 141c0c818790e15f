//! Test support for DCC's own tests and those of crates built on it (feature `test-util`): a
//! real `redis-server` per test, on a free loopback port, killed on drop. With it the queue's Lua
//! transitions are tested against Redis itself (`cargo test -p dcc-shared`), no Docker needed.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface has free ports")
}

/// What the test suite runs on: `DCC_TEST_REDIS=cluster` makes [`Redis::start`] start a local
/// Redis Cluster (three primaries, one replica each) instead of one server, so the same tests
/// check DCC on both.
pub fn cluster_wanted() -> bool {
    std::env::var("DCC_TEST_REDIS").is_ok_and(|v| v == "cluster")
}

/// A `redis-server` on a free loopback port, or a local Redis Cluster of them.
pub struct Redis {
    /// One server, or the cluster's nodes (the first three its primaries when it was made).
    nodes: Vec<Node>,
    cluster: bool,
}

impl Redis {
    /// Starts one without persistence (a cluster of them under `DCC_TEST_REDIS=cluster`).
    pub fn start() -> Self {
        if cluster_wanted() {
            return Self::cluster(3, 1);
        }
        Self::start_with(&[])
    }

    /// Starts one with extra arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        Redis {
            nodes: vec![Node::start(extra)],
            cluster: false,
        }
    }

    /// Starts a Redis Cluster of `primaries` primaries with `replicas` replicas each, made
    /// with `redis-cli --cluster create`, and waits until every node serves every slot. Nodes
    /// notice a dead peer after a second (`cluster-node-timeout`), so a failover in a test takes
    /// seconds, not the default's fifteen.
    pub fn cluster(primaries: usize, replicas: usize) -> Self {
        Self::cluster_with(primaries, replicas, &[])
    }

    /// As [`Redis::cluster`], each node started with extra arguments.
    pub fn cluster_with(primaries: usize, replicas: usize, extra: &[&str]) -> Self {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            "--cluster-config-file",
            "nodes.conf",
            // A replica's first sync starts at once, not after Redis's 5 s wait for others.
            "--repl-diskless-sync-delay",
            "0",
        ];
        args.extend_from_slice(extra);
        let nodes: Vec<Node> = (0..primaries * (1 + replicas)).map(|_| Node::start(&args)).collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed (scripts/test.sh installs it)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let redis = Redis { nodes, cluster: true };
        for node in &redis.nodes {
            wait_for(Duration::from_secs(30), || {
                let ok = node
                    .text("CLUSTER INFO")
                    .is_some_and(|i| i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384"));
                // A replica counts for `WAIT` (`DCC_DURABILITY`) only once its first sync is
                // done: until then every durable write would answer NOT_DURABLE.
                ok && node.text("INFO replication").is_some_and(|i| {
                    let synced = |l: &str| !l.starts_with("slave") || !l.contains("ip=") || l.contains("state=online");
                    i.lines().all(synced) && (i.contains("role:master") || i.contains("master_link_status:up"))
                })
            });
        }
        redis
    }

    /// True for a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Every node (one for a server).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The index of the node serving `key`'s slot as a live primary, as the first node that
    /// answers says in `CLUSTER NODES`; node 0 for one server.
    pub fn primary_of(&self, key: &str) -> Option<usize> {
        if !self.cluster {
            return Some(0);
        }
        let node = self.nodes.iter().find(|n| n.text("PING").is_some())?;
        let slot: u16 = node.text(&format!("CLUSTER KEYSLOT {key}"))?.parse().ok()?;
        let table = node.text("CLUSTER NODES")?;
        let port = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| {
                f.len() > 8
                    && f[2].contains("master")
                    && !f[2].contains("fail")
                    && f[8..].iter().any(|r| serves(r, slot))
            })
            .and_then(|f| f[1].split('@').next()?.rsplit(':').next()?.parse::<u16>().ok())?;
        self.nodes.iter().position(|n| n.port == port)
    }

    /// A manual failover (`CLUSTER FAILOVER` on a replica of the primary serving `key`): the
    /// replica takes the slots and the old primary, alive, becomes its replica. Waits until a
    /// node other than the old primary serves `key`; the new primary's index.
    pub fn fail_over(&self, key: &str) -> usize {
        let old = self.primary_of(key).expect("a primary serves the key");
        let table = self.nodes[old].text("CLUSTER NODES").expect("CLUSTER NODES");
        let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
        let old_id = rows.iter().find(|f| f[2].contains("myself")).expect("myself")[0];
        let replica_port: u16 = rows
            .iter()
            .find(|f| f.len() > 3 && f[2].contains("slave") && f[3] == old_id)
            .and_then(|f| f[1].split('@').next()?.rsplit(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("the primary {old_id} has no replica in:\n{table}"));
        let replica = self.nodes.iter().position(|n| n.port == replica_port).expect("ours");
        let answer = self.nodes[replica].text("CLUSTER FAILOVER");
        assert_eq!(answer.as_deref(), Some("OK"), "CLUSTER FAILOVER");
        wait_for(Duration::from_secs(30), || self.primary_of(key) == Some(replica));
        replica
    }

    /// Kills node `i` (SIGKILL): on a cluster, its replica takes over its slots.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Kills the server and starts it again on the same port and folder (with AOF on, what it
    /// had acknowledged comes back). One server only.
    pub fn restart(&mut self) {
        self.single().restart();
    }

    /// The folder holding its files. One server only.
    pub fn dir(&self) -> &Path {
        self.nodes[0].dir.path()
    }

    /// Its port on 127.0.0.1. One server only.
    pub fn port(&self) -> u16 {
        self.nodes[0].port
    }

    /// Its process id (to pause it with SIGSTOP, as a lagging replica). One server only.
    pub fn pid(&self) -> u32 {
        self.nodes[0].child.id()
    }

    /// Its URL: `redis://127.0.0.1:<port>`, or `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        if !self.cluster {
            return self.nodes[0].url();
        }
        let seeds: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// A plain connection for assertions (a cluster connection on a cluster).
    pub async fn conn(&self) -> TestConn {
        if self.cluster {
            let seeds: Vec<String> = self.nodes.iter().map(Node::url).collect();
            let c = redis::cluster::ClusterClient::new(seeds)
                .expect("valid seeds")
                .get_async_connection()
                .await
                .expect("the cluster answers");
            return TestConn::Cluster(c);
        }
        let c = redis::Client::open(self.url())
            .expect("valid url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers");
        TestConn::Node(c)
    }

    /// `INFO <section>` of the server, or of every primary of a cluster one after the other
    /// (replicas left out: they replay the primaries' writes).
    pub fn info(&self, section: &str) -> String {
        self.nodes
            .iter()
            .filter(|n| n.text("INFO replication").is_some_and(|i| i.contains("role:master")))
            .filter_map(|n| n.text(&format!("INFO {section}")))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// Calls of `command` so far (`INFO commandstats`) and how many of them failed or were
    /// refused, summed over the primaries (a replica counts what it replays from its primary).
    pub fn command_calls(&self, command: &str) -> (u64, u64) {
        let info = self.info("commandstats");
        let mut total = (0, 0);
        for line in info
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("cmdstat_{command}:")))
        {
            let field = |k: &str| {
                line.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            total.0 += field("calls");
            total.1 += field("failed_calls") + field("rejected_calls");
        }
        total
    }

    /// Every key (tests only: KEYS is fine on a test server; on a cluster, every primary's).
    pub async fn all_keys(&self) -> Vec<String> {
        let mut c = self.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.expect("KEYS");
        keys
    }

    /// Stops the server (SIGKILL). One server only.
    pub fn kill(&mut self) {
        self.single().kill();
    }

    fn single(&mut self) -> &mut Node {
        assert!(!self.cluster, "a test for one server ran on a cluster");
        &mut self.nodes[0]
    }
}

/// A connection for a test's own assertions, to a server or a cluster.
#[derive(Clone)]
pub enum TestConn {
    /// To one server.
    Node(redis::aio::MultiplexedConnection),
    /// To a cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl TestConn {
    /// Raises a server connection's response timeout (a bench reading a saturated Redis); a
    /// cluster connection keeps the client's.
    pub fn set_response_timeout(&mut self, timeout: Duration) {
        if let TestConn::Node(c) = self {
            c.set_response_timeout(timeout);
        }
    }
}

impl redis::aio::ConnectionLike for TestConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            TestConn::Node(c) => c.req_packed_command(cmd),
            TestConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            TestConn::Node(c) => c.req_packed_commands(cmd, offset, count),
            TestConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            TestConn::Node(c) => c.get_db(),
            TestConn::Cluster(c) => c.get_db(),
        }
    }
}

/// One `redis-server` process on a free loopback port, killed on drop.
pub struct Node {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Node {
    /// Starts one in a folder of its own with extra arguments.
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // Another test may take a "free" port between our probe and redis-server's bind: then our
        // server exits, or we would talk to someone else's. Check the pid behind the port; retry.
        for _ in 0..10 {
            let port = free_port();
            let mut args: Vec<String> = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--dir".into(),
                dir.path().display().to_string(),
                "--maxmemory-policy".into(),
                "noeviction".into(),
                // As the Terraform parameter group.
                "--hash-max-listpack-value".into(),
                crate::queue::RECORD_LISTPACK_VALUE.to_string(),
            ];
            if !extra.contains(&"--appendonly") {
                args.extend(["--appendonly".into(), "no".into()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            if let Some(child) = Self::spawn(&args, port) {
                return Node { child, port, dir, args };
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts redis-server and waits until the port answers with this very process.
    fn spawn(args: &[String], port: u16) -> Option<Child> {
        let mut child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if server_pid(port) == Some(child.id()) {
                return Some(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server and starts it again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.args, self.port).expect("redis-server restarts on its port");
    }

    /// Its port on 127.0.0.1.
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// What a command answers as text (`INFO replication`, `CLUSTER INFO`); `None` while the
    /// node does not answer.
    pub fn text(&self, command: &str) -> Option<String> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(5)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut words = command.split_whitespace();
        let mut cmd = redis::cmd(words.next()?);
        for w in words {
            cmd.arg(w);
        }
        match cmd.query(&mut c).ok()? {
            redis::Value::Int(n) => Some(n.to_string()),
            v => redis::from_redis_value(v).ok(),
        }
    }

    /// Stops the server (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when a `CLUSTER NODES` slot range (`5461-10922` or `42`) holds `slot`.
fn serves(range: &str, slot: u16) -> bool {
    let (a, b) = range.split_once('-').unwrap_or((range, range));
    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
}

/// Polls `cond` every 50 ms until it holds; panics after `timeout`.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "the local Redis Cluster did not get there in time"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `process_id` of the Redis answering on `port`, if one does.
fn server_pid(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut buf = vec![0u8; 16384];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        let text = String::from_utf8_lossy(&buf[..got]);
        if let Some(rest) = text.split("process_id:").nth(1)
            && let Some(line) = rest.split("\r\n").next()
            && rest.contains("\r\n")
        {
            return line.trim().parse().ok();
        }
    }
    None
}
