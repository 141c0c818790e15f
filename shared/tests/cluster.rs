//! What only a Redis Cluster does to the queue (the rest of the queue tests run on one as well,
//! under `DCC_TEST_REDIS=cluster`).

use std::time::Duration;

use dcc_shared::events::{Event, Events};
use dcc_shared::job::{JobId, JobRequest, Lane, Limits, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::{Claim, Claimant};
use dcc_shared::queue::enqueue::NewJob;
use dcc_shared::testing::Redis;
use serde_json::json;

const T0: i64 = 1_800_000_000_000;

/// Waits for the next resync (a subscription made or made again).
async fn resync(rx: &mut tokio::sync::broadcast::Receiver<Event>, within: Duration) {
    tokio::time::timeout(within, async { while !matches!(rx.recv().await, Ok(Event::Resync)) {} })
        .await
        .expect("a resync in time");
}

/// A manual failover leaves the old primary alive as a replica, and the wake-ups (`SPUBLISH` on
/// the worker's shard channel) count the subscribers on the new primary only: one left on the
/// old node would be dropped from the idle workers at every wake-up. The subscription moves to
/// the new primary by itself.
#[tokio::test]
async fn a_manual_failover_moves_subscriptions_to_the_new_primary() {
    let redis = Redis::cluster(3, 1);
    let q = Queue::new(&redis.url(), "t").unwrap();
    let events = Events::spawn(&redis.url(), q.keys().worker_events("w"));
    let mut rx = events.subscribe();
    resync(&mut rx, Duration::from_secs(10)).await;
    let channel = q.keys().worker_events("w");
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

    // Two idle workers: "w" with more room is woken; "small" (nobody listens for it) stays idle
    // unless "w" counted as gone.
    for (worker, slots) in [("w", 8), ("small", 2)] {
        let who = Claimant {
            worker,
            free_slots: slots,
            total_slots: slots,
            free_memory_mb: 1 << 20,
            total_memory_mb: 1 << 20,
            lease: Duration::from_secs(30),
        };
        let c = q.claim(QueueName::Cpu, &who, T0).await.unwrap();
        assert!(matches!(c, Claim::Empty), "{c:?}");
    }
    let valid = JobRequest::from_value(json!({"image": "x"}))
        .unwrap()
        .validate(&Limits::default())
        .unwrap();
    let id = JobId::parse("j").unwrap();
    let job = NewJob {
        id: &id,
        spec: &valid.spec,
        lane: Lane::Normal,
        def_hash: "h",
        inputs_prefix: "p/",
        tenant: "t1",
        quota: Default::default(),
        retention: Duration::from_secs(60),
    };
    q.enqueue(job, T0 + 1).await.unwrap();
    let mut c = redis.conn().await;
    let idle: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.keys().idle(QueueName::Cpu))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        idle,
        vec!["small".to_string()],
        "only the woken worker left the idle set"
    );
    let woke = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Job(ev)) = rx.recv().await
                && ev.job_id == "j"
            {
                return;
            }
        }
    })
    .await;
    assert!(woke.is_ok(), "the worker heard its wake-up on the new primary");
}
