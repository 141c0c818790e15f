//! Test harness for DCC's end-to-end tests: real Redis servers, the real `dcc` binary, the real
//! Docker Engine. Each test starts its own Redis on a free loopback port and its own `dcc`
//! processes with their own worker ids, so tests run in parallel without touching each other.
//! Waits are on conditions with deadlines, never on bare sleeps.
//!
//! # Layout
//! - [`Redis`]: a `redis-server` child on a free port, killed on drop (from `dcc_shared::testing`).
//! - [`process`]: [`Dcc`], a `dcc server` or `dcc worker` child, stopped on drop (its log is
//!   printed when the test failed).
//! - [`api`]: [`Api`], a small HTTP client for the API; WebSocket and key-file helpers.
//! - [`images`]: the test images, built locally.
//! - [`containers`]: containers by label, fake GPU device nodes.
//! - [`docker_proxy`]: a proxy in front of the Docker socket that refuses chosen calls.
//! - [`store`]: [`Store`] (local folder or moto S3) and [`Moto`].
//! - [`eventually`]: polls a condition until a deadline.
//! - [`fleet`]: simulated workers (Redis only, no Docker) for the fleet bench and its test.
//! - [`proxy`]: a TCP proxy that a failover test switches from one Redis to another, and that
//!   can keep what clients send (which commands shared a round trip).

pub mod api;
pub mod containers;
pub mod docker_proxy;
pub mod fleet;
pub mod images;
pub mod process;
pub mod proxy;
pub mod store;
pub mod submits;

pub use api::*;
pub use containers::*;
pub use dcc_shared::testing::{Redis, free_port};
pub use images::*;
pub use process::*;
pub use store::*;

use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that no key of `redis` names `id` and no member, list item or hash value mentions it.
pub async fn assert_no_redis_trace(redis: &Redis, id: &str) {
    let mut c = redis.conn().await;
    for key in redis.all_keys().await {
        assert!(!key.contains(id), "key {key} remains");
        let t: String = redis::cmd("TYPE").arg(&key).query_async(&mut c).await.unwrap();
        let read = match t.as_str() {
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "hash" => redis::cmd("HVALS").arg(&key).clone(),
            _ => continue,
        };
        let members: Vec<String> = read.query_async(&mut c).await.unwrap();
        assert!(!members.iter().any(|m| m.contains(id)), "{key} still mentions {id}");
    }
}
