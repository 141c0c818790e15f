//! History as the scripts keep it, against a real Redis with time passed in: each transition
//! counted once in the minute it happened (submitted, started by wait, ended by state and run
//! time, failures by code and image, a retry, a dependency failure, a cancel), the minute's key
//! expiring, the fleet's samples beside them, and nothing at all with history off.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{RETENTION, T0, claimed, end, get, submit};
use dcc_shared::history::{MINUTE_MS, Sample, Scope, summarize};
use dcc_shared::job::{JobState, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::reap::Retention;
use dcc_shared::testing::Redis;
use serde_json::json;

async fn minute(q: &Queue, at: i64) -> HashMap<String, u64> {
    let m = at.div_euclid(MINUTE_MS);
    q.history(m, m + 1).await.unwrap().remove(0).1
}

fn only(fields: &HashMap<String, u64>, wanted: &[(&str, u64)]) {
    let want: HashMap<String, u64> = wanted.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(fields, &want);
}

#[tokio::test]
async fn each_transition_is_counted_once_in_its_minute() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let img = |cmd: &str| json!({"image": "busybox:1", "command": ["sh", "-c", cmd]});
    submit(&q, "a", "ok", img("true"), 0).await;
    submit(&q, "a", "bad", img("false"), 0).await;
    submit(
        &q,
        "a",
        "dep",
        json!({"image": "x", "dependsOn": [{"jobId": "bad"}]}),
        0,
    )
    .await;
    only(&minute(&q, T0).await, &[("cpu|a|sub", 3)]);
    // Started 1.5 s and 2 s after submit (bin 1..3 s), in the next minute.
    let t1 = T0 + MINUTE_MS;
    let ok = claimed(&q, T0 + 1500).await.unwrap().lease;
    let bad = claimed(&q, T0 + 2000).await.unwrap().lease;
    end(&q, &ok, JobState::Succeeded, t1 + 200).await;
    end(&q, &bad, JobState::Failed, t1 + 45_000).await;
    only(&minute(&q, T0).await, &[("cpu|a|sub", 3), ("cpu|a|start|3", 2)]);
    // Run times 58.7 s (bin 30..60 s) and 103 s (60..180 s); `dep` fails with `bad`, unrun.
    only(
        &minute(&q, t1).await,
        &[
            ("cpu|a|succeeded|6", 1),
            ("cpu|a|failed|7", 1),
            ("cpu|a|code|NONZERO_EXIT|busybox:1", 1),
            ("cpu|a|failed|-", 1),
            ("cpu|a|code|DEPENDENCY_FAILED|x", 1),
        ],
    );
    assert_eq!(get(&q, "dep").await.state, JobState::Failed);
}

#[tokio::test]
async fn retries_cancels_and_lost_workers_are_counted() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let job = json!({"image": "y", "parameters": {"maxAttempts": 2}});
    submit(&q, "", "r", job, 0).await;
    submit(&q, "", "c", json!({"image": "y"}), 0).await;
    let retention = Retention {
        standard: RETENTION,
        fast: RETENTION,
    };
    let t = T0 + 10 * MINUTE_MS;
    // Two attempts, both lost: the second is started again (a restart), then fails WORKER_LOST.
    claimed(&q, t).await.unwrap();
    q.reap(retention, t + 31_000).await.unwrap();
    claimed(&q, t + 32_000).await.unwrap();
    q.reap(retention, t + 63_000).await.unwrap();
    let c = get(&q, "c").await;
    q.cancel(&c, RETENTION, t + 63_500).await.unwrap();
    let m = t.div_euclid(MINUTE_MS);
    let all = q.history(m, m + 2).await.unwrap();
    let scope = Scope {
        from: t,
        to: t + 2 * MINUTE_MS,
        step_minutes: 2,
        tenant: None,
        fleet: true,
        queue: Some(QueueName::Cpu),
    };
    let p = &summarize(&all, &scope).queues[0].points[0];
    assert_eq!((p.started, p.restarted, p.failed, p.cancelled), (2, 1, 1, 1));
    assert_eq!(p.run_p50_ms, Some(45_000), "31 s: the middle of its bin (30..60 s)");
    let stats = summarize(&all, &scope);
    assert_eq!(stats.failures[0].code, "WORKER_LOST");
    assert_eq!(stats.failures[0].image, "y");
}

#[tokio::test]
async fn a_minute_expires_and_history_can_be_off() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t")
        .unwrap()
        .with_history(Duration::from_secs(3600));
    submit(&q, "a", "j", json!({"image": "z"}), 0).await;
    let key = q.keys().history(T0.div_euclid(MINUTE_MS));
    let mut c = redis.conn().await;
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut c).await.unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
    let sample = Sample {
        depth: 4,
        running: 1,
        workers: 2,
        slots: 8,
        busy: 1,
    };
    q.record_sample(T0 + 10, &[(QueueName::Cpu, sample)]).await.unwrap();
    assert_eq!(minute(&q, T0).await.get("g|cpu|slots"), Some(&8));
    let off = Queue::new(&redis.url(), "off").unwrap().with_history(Duration::ZERO);
    submit(&off, "a", "j", json!({"image": "z"}), 0).await;
    let lease = claimed(&off, T0 + 5).await.unwrap().lease;
    end(&off, &lease, JobState::Succeeded, T0 + 9).await;
    off.record_sample(T0 + 10, &[(QueueName::Cpu, sample)]).await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{off}:history:*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}
