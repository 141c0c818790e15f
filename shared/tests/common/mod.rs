//! What the queue's transition tests share: a submit with its quota, a claim by one large worker,
//! a recorded end, all against a real Redis with time passed in.
#![allow(dead_code, reason = "each test file uses a different part")]

use std::time::Duration;

use dcc_shared::events::Event;
use dcc_shared::job::{JobError, JobId, JobRecord, JobRequest, JobState, Lane, Limits, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::{Claim, Claimant, Claimed};
use dcc_shared::queue::enqueue::{Enqueued, NewJob, Quota};
use dcc_shared::queue::finish::{Finished, Outcome};
use dcc_shared::queue::lease::Lease;
use dcc_shared::testing::Redis;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;

pub const LEASE: Duration = Duration::from_secs(30);
pub const RETENTION: Duration = Duration::from_secs(3600);
pub const T0: i64 = 1_800_000_000_000;

/// Submits `job` (a v1 job JSON) as `id` for `tenant`, at most `quota` active jobs (0: none).
pub async fn submit(q: &Queue, tenant: &str, id: &str, job: Value, quota: u32) -> Enqueued {
    submit_at(q, tenant, id, job, quota, T0).await
}

/// [`submit`] at time `now`.
pub async fn submit_at(q: &Queue, tenant: &str, id: &str, job: Value, quota: u32, now: i64) -> Enqueued {
    let valid = JobRequest::from_value(job)
        .unwrap()
        .validate(&Limits::default())
        .unwrap();
    let id = JobId::parse(id).unwrap();
    let job = NewJob {
        id: &id,
        spec: &valid.spec,
        lane: Lane::for_priority(valid.spec.priority),
        def_hash: id.as_str(),
        inputs_prefix: "p/",
        tenant,
        quota: Quota { active: quota, fast: 0 },
        retention: RETENTION,
    };
    q.enqueue(job, now).await.unwrap()
}

/// Worker `w`, with room for anything.
pub fn big_worker() -> Claimant<'static> {
    Claimant {
        worker: "w",
        free_slots: 64,
        total_slots: 64,
        free_memory_mb: 1 << 30,
        total_memory_mb: 1 << 30,
        lease: LEASE,
    }
}

/// A claim from the cpu queue by a worker with room for anything ([`big_worker`]).
pub async fn claimed(q: &Queue, now: i64) -> Option<Claimed> {
    match q.claim(QueueName::Cpu, &big_worker(), now).await.unwrap() {
        Claim::Claimed(c) => Some(*c),
        _ => None,
    }
}

/// An attempt's result in `state`: exit 0, or exit 1 and `NONZERO_EXIT` unless it succeeded.
pub fn outcome(state: JobState) -> Outcome {
    Outcome {
        state,
        exit_code: Some(i64::from(state != JobState::Succeeded)),
        error: (state != JobState::Succeeded).then(|| JobError {
            code: "NONZERO_EXIT".into(),
            message: "exit 1".into(),
        }),
        image_digest: None,
        stats: Default::default(),
        outputs: vec![],
    }
}

/// Records the end of `lease`'s attempt in `state` ([`outcome`]); the finish must be recorded.
pub async fn end(q: &Queue, lease: &Lease, state: JobState, now: i64) {
    assert_eq!(
        q.finish(lease, &outcome(state), RETENTION, now).await.unwrap(),
        Finished::Recorded
    );
}

/// Job `id`'s record.
pub async fn get(q: &Queue, id: &str) -> JobRecord {
    q.get(&JobId::parse(id).unwrap()).await.unwrap().unwrap()
}

/// Waits (at most `within`) for the next resync: a subscription made, or made again.
pub async fn resync(rx: &mut Receiver<Event>, within: Duration) {
    tokio::time::timeout(within, async { while !matches!(rx.recv().await, Ok(Event::Resync)) {} })
        .await
        .expect("a resync in time");
}

/// Two workers go idle on the cpu queue (`roomy` with 8 free slots, then `small` with 2) and a
/// job is queued: `rx`, a live subscription to `roomy`'s channel, must hear its wake-up within
/// 5 s. The workers still idle after it.
pub async fn wake_roomy(redis: &Redis, q: &Queue, rx: &mut Receiver<Event>) -> Vec<String> {
    for (worker, slots) in [("roomy", 8), ("small", 2)] {
        let who = Claimant {
            worker,
            free_slots: slots,
            total_slots: slots,
            free_memory_mb: 1 << 20,
            total_memory_mb: 1 << 20,
            lease: LEASE,
        };
        let c = q.claim(QueueName::Cpu, &who, T0).await.unwrap();
        assert!(matches!(c, Claim::Empty), "{c:?}");
    }
    submit(q, "t1", "wake", json!({"image": "x"}), 0).await;
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Job(ev)) = rx.recv().await
                && ev.job_id == "wake"
            {
                return ev;
            }
        }
    })
    .await
    .expect("the roomy worker was woken");
    assert_eq!(heard.status, dcc_shared::events::EventStatus::Now(JobState::Queued));
    let mut c = redis.conn().await;
    redis::cmd("ZRANGE")
        .arg(q.keys().idle(QueueName::Cpu))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap()
}
