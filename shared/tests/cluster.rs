//! What only a Redis Cluster does to the queue (the rest of the queue tests run on one as well,
//! under `DCC_TEST_REDIS=cluster`).

use std::time::Duration;

use dcc_shared::events::Events;
use dcc_shared::queue::Queue;
use dcc_shared::testing::Redis;

mod common;

/// A manual failover leaves the old primary alive as a replica, and the wake-ups (`SPUBLISH` on
/// the worker's shard channel) count the subscribers on the new primary only: one left on the
/// old node would be dropped from the idle workers at every wake-up. The subscription moves to
/// the new primary by itself.
#[tokio::test]
async fn a_manual_failover_moves_subscriptions_to_the_new_primary() {
    let redis = Redis::cluster(3, 1);
    let q = Queue::new(&redis.url(), "t").unwrap();
    let channel = q.keys().worker_events("roomy");
    let events = Events::spawn(&redis.url(), vec![channel.clone()]);
    let mut rx = events.subscribe();
    common::resync(&mut rx, Duration::from_secs(10)).await;
    let new = redis.fail_over(&q.keys().index());
    let mut on_new = redis::Client::open(redis.nodes()[new].url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let subs: Vec<(String, i64)> = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channel)
            .query_async(&mut on_new)
            .await
            .unwrap();
        if subs.first().is_some_and(|(_, n)| *n == 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription never moved to the new primary"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let idle = common::wake_roomy(&redis, &q, &mut rx).await;
    assert_eq!(
        idle,
        vec!["small".to_string()],
        "only the woken worker left the idle set"
    );
}

/// One shard's primary is down and has no replica to take over (`cluster-require-full-coverage
/// no`: the others keep serving). Readiness says Redis is not all there; a worker whose home is
/// that shard still takes the jobs of the others, and a claim where every shard failed or had
/// nothing is an error, not "empty".
#[tokio::test]
async fn a_dead_shard_fails_readiness_and_claims_pass_over_it() {
    use dcc_shared::job::{JobState, QueueName};
    use dcc_shared::keys::{shard_of, tenant_shard};
    use dcc_shared::queue::claim::{Claim, Claimant};
    const S: usize = 3;
    let mut redis = Redis::cluster_with(
        3,
        0,
        &[
            "--cluster-require-full-coverage",
            "no",
            "--cluster-node-timeout",
            "1000",
        ],
    );
    let q = Queue::new(&redis.url(), "t").unwrap().with_shards(S);
    let tenant_in = |s: usize| {
        (0..)
            .map(|n| format!("team{n}"))
            .find(|t| tenant_shard(t, S) == s)
            .unwrap()
    };
    let (dead, alive) = (1, 2);
    for s in [dead, alive] {
        let t = tenant_in(s);
        common::submit_at(
            &q,
            &t,
            &format!("{t}.1"),
            serde_json::json!({"image": "x"}),
            0,
            common::T0,
        )
        .await;
    }
    q.ping().await.expect("every shard answers");
    let node = redis
        .primary_of(&q.shard(dead).keys().index())
        .expect("shard 1's primary");
    assert_ne!(Some(node), redis.primary_of(&q.shard(alive).keys().index()));
    redis.kill_node(node);

    assert!(q.ping().await.is_err(), "readiness must see the dead shard");
    let worker = (0..).map(|n| format!("w{n}")).find(|w| shard_of(w, S) == dead).unwrap();
    let who = Claimant {
        worker: &worker,
        free_slots: 4,
        total_slots: 4,
        free_memory_mb: 1 << 20,
        total_memory_mb: 1 << 20,
        lease: common::LEASE,
    };
    let t = tenant_in(alive);
    match q.claim(QueueName::Cpu, &who, common::T0 + 1).await {
        Ok(Claim::Claimed(c)) => {
            assert_eq!(c.lease.job.as_str(), format!("{t}.1"));
            assert_eq!(c.record.state, JobState::Running);
        }
        other => panic!("expected the live shard's job, got {other:?}"),
    }
    // Nothing left where Redis answers, and one shard failed: the claim is an error.
    assert!(q.claim(QueueName::Cpu, &who, common::T0 + 2).await.is_err());
}

/// The checks of server settings at start read every shard's primary (each is configured apart):
/// a policy that may evict keys, or a smaller listpack value, set on one primary that is not
/// shard 0's is still reported. Before, only shard 0's primary was asked.
#[tokio::test]
async fn settings_of_every_shards_primary_are_checked() {
    let redis = Redis::cluster(3, 0);
    let q = Queue::new(&redis.url(), "t").unwrap().with_shards(3);
    assert_eq!(q.eviction_policy().await.unwrap().as_deref(), Some("noeviction"));
    let first = redis.primary_of(&q.shard(0).keys().index()).unwrap();
    let other = (1..3)
        .map(|i| redis.primary_of(&q.shard(i).keys().index()).unwrap())
        .find(|n| *n != first)
        .expect("the three shards are not all on one primary");
    let node = &redis.nodes()[other];
    node.text("CONFIG SET maxmemory-policy allkeys-lru").unwrap();
    node.text("CONFIG SET hash-max-listpack-value 32").unwrap();
    assert_eq!(q.eviction_policy().await.unwrap().as_deref(), Some("allkeys-lru"));
    assert_eq!(q.listpack_value().await.unwrap(), Some(32));
}
