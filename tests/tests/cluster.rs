//! DCC on a real Redis Cluster (three primaries, one replica each, made by `redis-cli --cluster
//! create`): the primary holding the deployment's slot dies mid-run and the cluster itself
//! promotes its replica. Servers and workers follow (`MOVED`, a fresh slot map); with
//! `DCC_DURABILITY=replicas:1` nothing a client was told is lost, and nothing runs twice.

use std::collections::HashSet;
use std::time::Duration;

use dcc_e2e::submits::Stream;
use dcc_e2e::{Dcc, Redis, Role, eventually, sh};

#[tokio::test]
async fn a_primary_killed_mid_run_loses_no_acknowledged_job_and_runs_none_twice() {
    failover(1).await;
}

/// The same on a deployment split over three shards, one per primary: the primary killed is the
/// one holding the jobs' shard (the local admin's), which is not shard 0 — the fleet's keys (the
/// workers, the shard count) stay up while the jobs' primary fails over.
#[tokio::test]
async fn the_same_when_the_jobs_shard_is_not_shard_0() {
    failover(3).await;
}

async fn failover(shards: usize) {
    // The shard holding the test's jobs (submitted by the local admin, prefix `dcc`).
    let all = dcc_shared::keys::Keys::shards("dcc", shards);
    let key = all[dcc_shared::keys::tenant_shard("local", shards)].index();
    assert!(
        shards == 1 || key != all[0].index(),
        "pick a tenant whose jobs are not in shard 0"
    );
    let key = key.as_str();
    let mut redis = Redis::cluster(3, 1);
    let env = |b: dcc_e2e::DccBuilder| {
        b.env("DCC_LEASE_SECS", 8)
            .env("DCC_HEARTBEAT_SECS", 2)
            .env("DCC_DURABILITY", "replicas:1")
            .env("DCC_DURABILITY_TIMEOUT", "1s")
            .env("DCC_REDIS_SHARDS", shards)
    };
    let server = env(Dcc::builder(Role::ApiOnly, &redis)).start().await;
    let api = server.api();
    let worker = env(Dcc::builder(Role::Worker, &redis).storage(&server.storage))
        .start()
        .await;
    let long = api.submit_id(sh("sleep 6; echo done")).await;
    api.wait_status(&long, "running", Duration::from_secs(60)).await;
    let stream = Stream::start(&api, 2);
    stream.acked_beyond(20, "submits before the failover").await;

    let home = redis.primary_of(key).expect("a primary serves the deployment");
    redis.kill_node(home);
    let killed = std::time::Instant::now();
    eventually(
        Duration::from_secs(30),
        "the cluster to promote the replica",
        || async { redis.primary_of(key).filter(|&p| p != home) },
    )
    .await;
    let promoted = killed.elapsed().as_secs_f64();
    let before = stream.acked();
    stream
        .acked_beyond(before + 1, "a submit acknowledged after the failover")
        .await;
    let recovered = killed.elapsed().as_secs_f64();
    stream.acked_beyond(before + 20, "submits after the failover").await;
    let not_durable = stream.not_durable();
    let acked = stream.stop().await;
    eprintln!(
        "cluster failover: replica promoted {promoted:.1} s after the kill, first submit acknowledged after {recovered:.1} s; {} acknowledged, {} answered NOT_DURABLE on the way",
        acked.len(),
        not_durable
    );
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice as new");

    // Every acknowledged job is there and ends once; the running one kept its attempt.
    for id in &acked {
        let v = api.wait_status(id, "succeeded", Duration::from_secs(180)).await;
        assert_eq!(v["attempt"], 1, "{v}");
    }
    let v = api.wait_status(&long, "succeeded", Duration::from_secs(60)).await;
    assert_eq!(
        v["attempt"],
        1,
        "the failover cost the running job an attempt: {v}\n{}",
        worker.log()
    );
    assert_eq!(api.log(&long, "stdout").await, "done\n");
    let keys: Vec<String> = redis.all_keys().await;
    let tags: Vec<String> = dcc_shared::keys::shard_tags("dcc", shards);
    let stray: Vec<&String> = keys
        .iter()
        .filter(|k| !tags.iter().any(|t| k.starts_with(t.as_str())))
        .collect();
    assert!(stray.is_empty(), "keys outside the deployment's shards: {stray:?}");
}

/// An operator who names one node of a cluster as a server (it would answer `MOVED` for keys
/// elsewhere, and keep answering for the deployment's slot until a failover moves it), or a
/// server as a cluster, is told at start-up which URL to write.
#[tokio::test]
async fn a_url_of_the_wrong_kind_is_refused_at_start() {
    let cluster = Redis::cluster(3, 0);
    let said = dcc_e2e::server_refused_at_start(&[("DCC_REDIS_URL", cluster.nodes()[0].url())]).await;
    assert!(
        said.contains("names one node of a Redis Cluster") && said.contains("redis+cluster://"),
        "{said}"
    );
    let single = Redis::start_with(&[]);
    let url = format!("redis+cluster://127.0.0.1:{}", single.port());
    let said = dcc_e2e::server_refused_at_start(&[("DCC_REDIS_URL", url)]).await;
    assert!(said.contains("cluster mode off") && said.contains("redis://"), "{said}");
}
