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
