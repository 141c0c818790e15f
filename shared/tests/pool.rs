//! The connection pool to one server: no round trip of its own while busy, and no failed call
//! after the server went away and came back (single server only: a cluster has no pool).

use std::time::{Duration, Instant};

use dcc_shared::queue::Queue;
use dcc_shared::testing::Redis;

/// `PING`s the server answered so far.
fn pings(redis: &Redis) -> u64 {
    redis.command_calls("ping").0
}

/// Until the pool's watch connection is up, every connection is checked as it is handed out.
async fn watched(redis: &Redis) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let list = || redis.nodes()[0].text("CLIENT LIST").unwrap_or_default();
    while !list().contains("resp=3") {
        assert!(
            Instant::now() < deadline,
            "the watch (RESP3) never connected: {}",
            list()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_busy_pool_hands_out_its_connections_without_a_round_trip() {
    if dcc_shared::testing::cluster_wanted() {
        return;
    }
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    q.time().await.unwrap();
    watched(&redis).await;
    let before = pings(&redis);
    for _ in 0..200 {
        q.time().await.unwrap();
    }
    let checks = pings(&redis) - before;
    // (deadpool-redis's own manager sends UNWATCH + PING before each of the 200)
    assert_eq!(checks, 0, "{checks} checks for 200 calls one after the other");
}

/// The server restarted between two calls a moment apart: the pool's connections all closed, and
/// the next call gets a new one, not a dead one (the pool's watch saw the closing; its task runs
/// on another thread while this one restarts the server, as in a server or worker process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_after_a_restart_succeeds() {
    if dcc_shared::testing::cluster_wanted() {
        return;
    }
    let mut redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    q.time().await.unwrap();
    watched(&redis).await;
    for round in 0..3 {
        q.time().await.unwrap();
        redis.restart();
        q.time()
            .await
            .unwrap_or_else(|e| panic!("round {round}: the first call after the restart: {e}"));
        watched(&redis).await;
    }
}
