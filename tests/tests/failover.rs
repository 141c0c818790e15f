//! Redis failover, as ElastiCache Multi-AZ does it: a primary with a replica behind one endpoint
//! (a TCP proxy here), the primary dies, the replica is promoted, the endpoint switches to it.
//! Replication is asynchronous: what the replica had not received when the primary died is gone,
//! unless DCC waited for it before answering (`DCC_DURABILITY`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dcc_e2e::proxy::TcpProxy;
use dcc_e2e::submits::Stream;
use dcc_e2e::{Api, Dcc, Redis, Role, eventually, sh};
use dcc_shared::job::JobId;
use dcc_shared::keys::Keys;

/// A primary and a replica of it, in sync.
async fn primary_and_replica() -> (Redis, Redis) {
    let (primary, replica, _) = primary_and_replica_via(false).await;
    (primary, replica)
}

/// A primary and its replica, in sync; with `linked`, the replication link goes through a proxy
/// the test can freeze and cut (returned).
async fn primary_and_replica_via(linked: bool) -> (Redis, Redis, Option<TcpProxy>) {
    let primary = Redis::start();
    let link = match linked {
        true => Some(TcpProxy::start(addr(&primary)).await),
        false => None,
    };
    let port = link.as_ref().map_or(primary.port(), TcpProxy::port).to_string();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
    let c = replica.conn().await;
    eventually(Duration::from_secs(20), "the replica to be in sync", || {
        let mut c = c.clone();
        async move {
            let info: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await.ok()?;
            info.contains("master_link_status:up").then_some(())
        }
    })
    .await;
    (primary, replica, link)
}

fn addr(r: &Redis) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], r.port()))
}

/// Sends SIGSTOP or SIGCONT to a Redis of the test's own.
fn signal(r: &Redis, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &r.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} failed");
}

/// Makes `replica` the primary (`REPLICAOF NO ONE`, as a failover does).
async fn promote(replica: &Redis) {
    let mut c = replica.conn().await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut c)
        .await
        .expect("promote");
}

/// Submits until one is accepted (within 10 s of the endpoint's switch); its job id.
async fn first_submit_after_the_failover(api: &Api) -> String {
    let switched = Instant::now();
    let id = eventually(
        Duration::from_secs(10),
        "a submit to succeed after the failover",
        || async {
            let a = api.try_submit(sh("echo after")).await?;
            (a.status == 201).then(|| a.body["jobId"].as_str().unwrap().to_string())
        },
    )
    .await;
    eprintln!(
        "first submit after the failover: {:.1} s",
        switched.elapsed().as_secs_f64()
    );
    id
}

/// Acknowledged ids whose job the promoted replica does not have.
async fn lost(on: &Redis, acked: &[String]) -> usize {
    let keys = Keys::new("dcc");
    let mut c = on.conn().await;
    let mut pipe = redis::pipe();
    for id in acked {
        pipe.cmd("EXISTS").arg(keys.job(&JobId::parse(id).unwrap()));
    }
    let found: Vec<i64> = pipe.query_async(&mut c).await.expect("EXISTS");
    found.iter().filter(|&&e| e == 0).count()
}

/// The scenario of the issue: submits stream in; the replica stalls (SIGSTOP, as a busy or
/// cross-AZ replica lags) for 10 s; 5 s into that the primary is killed; then the replica
/// resumes, is promoted and the endpoint switches to it. Returns (acknowledged, lost, not
/// durable answers, seconds from the switch to the next acknowledged submit).
async fn failover_under_load(durability: &str) -> (usize, usize, usize, f64) {
    let (mut primary, replica, link) = primary_and_replica_via(true).await;
    let link = link.expect("a replication link");
    let proxy = TcpProxy::start(addr(&primary)).await;
    let server = Dcc::builder(Role::ApiOnly, &primary)
        .env("DCC_REDIS_URL", proxy.url())
        .env("DCC_DURABILITY", durability)
        .env("DCC_DURABILITY_TIMEOUT", "500ms")
        .start()
        .await;
    let stream = Stream::start(&server.api(), 8);
    stream.acked_beyond(200, "submits before the fault").await;
    // The replica stalls, and so does its link: what the primary sends it from now on waits in
    // the link's buffers (a stopped process's socket would still take it in and apply it on
    // resume, and small runs then lost nothing), and is lost with the primary.
    link.freeze();
    signal(&replica, "-STOP");
    let paused = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    primary.kill();
    link.switch(SocketAddr::from(([127, 0, 0, 1], 1)));
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(paused.elapsed())).await;
    signal(&replica, "-CONT");
    promote(&replica).await;
    let before = stream.acked();
    proxy.switch(addr(&replica));
    let switched = Instant::now();
    stream
        .acked_beyond(before + 1, "a submit acknowledged after the switch")
        .await;
    let recovered = switched.elapsed().as_secs_f64();
    stream.acked_beyond(before + 200, "submits after the switch").await;
    let not_durable = stream.not_durable();
    let acked = stream.stop().await;
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice as new");
    let lost = lost(&replica, &acked).await;
    eprintln!(
        "DCC_DURABILITY={durability}: {} acknowledged, {lost} lost in the failover, {not_durable} answered NOT_DURABLE, first submit {recovered:.1} s after the switch",
        acked.len()
    );
    drop(server);
    (acked.len(), lost, not_durable, recovered)
}

/// With `replicas:1`, nothing a client was told is lost: while the replica stalls, submits are
/// answered 503 `NOT_DURABLE` (and retried with the same id) instead of 201.
#[tokio::test]
async fn acknowledged_submits_survive_a_failover_with_replicas_1() {
    let (acked, lost, not_durable, recovered) = failover_under_load("replicas:1").await;
    assert_eq!(lost, 0, "{lost} of {acked} acknowledged submits lost");
    assert!(not_durable > 0, "the stalled replica never delayed an answer");
    assert!(
        recovered < 10.0,
        "submits took {recovered:.1} s to succeed after the switch"
    );
}

/// Without waiting (`none`, the default), the same failover loses what the stalled replica had
/// not received: the test that shows the setting matters (and that the scenario is real).
#[tokio::test]
async fn without_durability_the_same_failover_loses_acknowledged_submits() {
    let (acked, lost, not_durable, _) = failover_under_load("none").await;
    assert_eq!(not_durable, 0);
    assert!(
        lost > 0,
        "none of {acked} acknowledged submits was lost: the scenario did not bite"
    );
}

/// A failover while a job runs: the worker and the server follow the endpoint to the promoted
/// replica; the running job keeps its lease and attempt and succeeds; new jobs are taken and run.
#[tokio::test]
async fn a_failover_costs_no_running_job_its_attempt() {
    let (mut primary, replica) = primary_and_replica().await;
    let proxy = TcpProxy::start(addr(&primary)).await;
    let env = |b: dcc_e2e::DccBuilder| {
        b.env("DCC_REDIS_URL", proxy.url())
            .env("DCC_LEASE_SECS", 6)
            .env("DCC_HEARTBEAT_SECS", 2)
            .env("DCC_DURABILITY", "replicas:1")
    };
    let server = env(Dcc::builder(Role::ApiOnly, &primary)).start().await;
    let api = server.api();
    let worker = env(Dcc::builder(Role::Worker, &primary).storage(&server.storage))
        .start()
        .await;
    let id = api.submit_id(sh("sleep 6; echo done")).await;
    api.wait_status(&id, "running", Duration::from_secs(30)).await;
    primary.kill();
    promote(&replica).await;
    proxy.switch(addr(&replica));
    let next = first_submit_after_the_failover(&api).await;
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(40)).await;
    assert_eq!(
        v["attempt"],
        1,
        "the failover cost the running job an attempt: {v}\n{}",
        worker.log()
    );
    assert_eq!(api.log(&id, "stdout").await, "done\n");
    let v = api.wait_status(&next, "succeeded", Duration::from_secs(40)).await;
    assert_eq!(v["attempt"], 1);
    assert!(!worker.log().contains("LeaseExpired"), "{}", worker.log());
}

/// A failover that demotes the old primary instead of killing it (as ElastiCache's own failover
/// test does): the endpoint names the new primary, but connections made before still reach the
/// old node, which answers `PING` and refuses writes with `READONLY`. Servers and workers drop
/// them and follow the endpoint: submits succeed again within seconds, and a new job runs.
#[tokio::test]
async fn a_demoted_primary_is_left_for_the_endpoints_new_one() {
    let (primary, replica) = primary_and_replica().await;
    let proxy = TcpProxy::start(addr(&primary)).await;
    let env = |b: dcc_e2e::DccBuilder| {
        b.env("DCC_REDIS_URL", proxy.url())
            .env("DCC_LEASE_SECS", 6)
            .env("DCC_HEARTBEAT_SECS", 2)
    };
    let server = env(Dcc::builder(Role::ApiOnly, &primary)).start().await;
    let api = server.api();
    let _worker = env(Dcc::builder(Role::Worker, &primary).storage(&server.storage))
        .start()
        .await;
    // Fill the server's pool with connections to the old primary.
    let stream = Stream::start(&api, 8);
    stream.acked_beyond(16, "submits before the failover").await;
    let _ = stream.stop().await;
    promote(&replica).await;
    let mut c = primary.conn().await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(replica.port())
        .query_async(&mut c)
        .await
        .expect("demote the old primary");
    proxy.redirect(addr(&replica));
    let id = first_submit_after_the_failover(&api).await;
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(60)).await;
    assert_eq!(v["attempt"], 1, "{v}");
}

/// `aof` waits for the append-only file (`WAITAOF`): a Redis that cannot do that (before 7.2, or
/// without `appendonly yes`) is refused at start-up with a sentence saying why, not discovered
/// at the first submit.
#[tokio::test]
async fn a_durability_redis_cannot_honour_is_refused_at_start() {
    let redis = Redis::start_with(&[]);
    let said =
        dcc_e2e::server_refused_at_start(&[("DCC_REDIS_URL", redis.url()), ("DCC_DURABILITY", "aof".into())]).await;
    assert!(
        said.contains("DCC_DURABILITY=aof needs Redis 7.2")
            || said.contains("DCC_DURABILITY=aof needs `appendonly yes`"),
        "{said}"
    );
}
