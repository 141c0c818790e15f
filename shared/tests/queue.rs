//! The Lua transitions told as short stories against a real Redis, with time passed in, so
//! lease expiry and retention are driven without sleeping.

use std::sync::Arc;
use std::time::Duration;

use dcc_shared::events::{Event, EventStatus, Events};
use dcc_shared::job::{JobId, JobRequest, JobState, Lane, Limits};
use dcc_shared::maintenance;
use dcc_shared::queue::Queue;
use dcc_shared::queue::cancel::Cancelled;
use dcc_shared::queue::claim::{Claim, Claimant};
use dcc_shared::queue::enqueue::{Enqueued, NewJob};
use dcc_shared::queue::finish::{Finished, Outcome};
use dcc_shared::queue::lease::{Lease, Renewed};
use dcc_shared::queue::reap::Retention;
use dcc_shared::storage::{LocalStorage, Storage, paths};
use dcc_shared::testing::Redis;
use serde_json::json;

mod common;

const LEASE: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(3600);
const T0: i64 = 1_800_000_000_000;
const RET: Retention = Retention {
    standard: RETENTION,
    fast: RETENTION,
};

async fn enqueue(q: &Queue, id: &str, job: serde_json::Value, now: i64) -> JobId {
    enqueue_as(q, id, job, "t1", now).await
}

/// [`enqueue`] by `tenant`.
async fn enqueue_as(q: &Queue, id: &str, job: serde_json::Value, tenant: &str, now: i64) -> JobId {
    let valid = JobRequest::from_value(job)
        .unwrap()
        .validate(&Limits::default())
        .unwrap();
    let id = JobId::parse(id).unwrap();
    let r = q
        .enqueue(
            NewJob {
                id: &id,
                spec: &valid.spec,
                lane: Lane::for_priority(valid.spec.priority),
                def_hash: "h",
                inputs_prefix: "p/",
                tenant,
                quota: Default::default(),
                retention: RETENTION,
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(r, Enqueued::Created);
    id
}

fn who(worker: &str) -> Claimant<'_> {
    Claimant {
        worker,
        free_slots: 4,
        total_slots: 4,
        free_memory_mb: 1 << 20,
        total_memory_mb: 1 << 20,
        lease: LEASE,
    }
}

async fn claim(q: &Queue, worker: &str, now: i64) -> Lease {
    match q
        .claim(dcc_shared::job::QueueName::Cpu, &who(worker), now)
        .await
        .unwrap()
    {
        Claim::Claimed(c) => {
            // The record comes with the claim, as the claim left it.
            assert_eq!(c.record.state, JobState::Running);
            assert_eq!(c.record.attempt, c.lease.attempt);
            assert_eq!(c.record.worker.as_deref(), Some(worker));
            c.lease
        }
        other => panic!("expected a claim, got {other:?}"),
    }
}

/// Worker A's successful result for `lease`, sent at `now` with its next claim of the cpu queue.
async fn hand_over(q: &Queue, lease: &Lease, now: i64) -> dcc_shared::queue::handover::Handover {
    let next = dcc_shared::queue::handover::NextClaim {
        queue: dcc_shared::job::QueueName::Cpu,
        who: who("A"),
        at: now,
    };
    q.finish_and_claim(lease, &success(), RETENTION, now, &next)
        .await
        .unwrap()
}

fn success() -> Outcome {
    common::outcome(JobState::Succeeded)
}

#[tokio::test]
async fn lease_expires_job_is_retried_stale_worker_is_fenced() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let id = enqueue(&q, "j1", json!({"image": "x"}), T0).await;

    let a = claim(&q, "A", T0 + 1).await;
    assert_eq!(a.attempt, 1);
    assert_eq!(q.get(&id).await.unwrap().unwrap().state, JobState::Running);
    // A beats in time once, then goes silent.
    assert_eq!(q.renew(&a, LEASE, T0 + 10_000).await.unwrap(), Renewed::Held);
    // Before the (renewed) deadline nothing is reaped.
    assert_eq!(q.reap(RET, T0 + 30_000).await.unwrap().requeued, 0);
    // After it, the job goes back to its queue.
    let reaped = q.reap(RET, T0 + 40_001).await.unwrap();
    assert_eq!((reaped.requeued, reaped.failed), (1, 0));
    assert_eq!(q.get(&id).await.unwrap().unwrap().state, JobState::Queued);

    let b = claim(&q, "B", T0 + 41_000).await;
    assert_eq!(b.attempt, 2, "the retry is attempt 2");
    // A wakes up: its renewal and its result are refused.
    assert_eq!(q.renew(&a, LEASE, T0 + 42_000).await.unwrap(), Renewed::Lost);
    assert_eq!(
        q.finish(&a, &success(), RETENTION, T0 + 42_000).await.unwrap(),
        Finished::LeaseLost
    );
    // B records its result exactly once.
    assert_eq!(
        q.finish(&b, &success(), RETENTION, T0 + 43_000).await.unwrap(),
        Finished::Recorded
    );
    assert_eq!(
        q.finish(&b, &success(), RETENTION, T0 + 44_000).await.unwrap(),
        Finished::LeaseLost
    );
    let rec = q.get(&id).await.unwrap().unwrap();
    assert_eq!(
        (rec.state, rec.attempt, rec.worker.as_deref()),
        (JobState::Succeeded, 2, Some("B"))
    );
}

#[tokio::test]
async fn last_attempt_lost_fails_with_worker_lost() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let id = enqueue(&q, "j1", json!({"image": "x", "parameters": {"maxAttempts": 2}}), T0).await;
    claim(&q, "A", T0).await;
    q.reap(RET, T0 + 31_000).await.unwrap();
    claim(&q, "B", T0 + 32_000).await;
    let r = q.reap(RET, T0 + 63_000).await.unwrap();
    assert_eq!((r.requeued, r.failed), (0, 1));
    let rec = q.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Failed);
    assert_eq!(rec.error.unwrap().code, "WORKER_LOST");
    // Reaping again changes nothing (idempotent).
    assert_eq!(q.reap(RET, T0 + 99_000).await.unwrap().failed, 0);
}

#[tokio::test]
async fn high_before_normal_fifo_within_a_lane() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    enqueue(&q, "n1", json!({"image": "x"}), T0).await;
    enqueue(&q, "n2", json!({"image": "x"}), T0 + 1).await;
    enqueue(&q, "h1", json!({"image": "x", "priority": "high"}), T0 + 2).await;
    let order: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(claim(&q, "A", T0 + 10 + i).await.job.to_string());
        }
        v
    };
    assert_eq!(order, vec!["h1", "n1", "n2"]);
    assert!(matches!(
        q.claim(dcc_shared::job::QueueName::Cpu, &who("A"), T0 + 20)
            .await
            .unwrap(),
        Claim::Empty
    ));
}

#[tokio::test]
async fn slots_decide_what_fits() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    enqueue(&q, "big", json!({"image": "x", "parameters": {"cpus": 2}}), T0).await;
    let small_free = Claimant {
        free_slots: 1,
        total_slots: 2,
        ..who("A")
    };
    assert!(matches!(
        q.claim(dcc_shared::job::QueueName::Cpu, &small_free, T0).await.unwrap(),
        Claim::NoFit
    ));
    let too_small = Claimant {
        free_slots: 1,
        total_slots: 1,
        ..who("A")
    };
    assert!(matches!(
        q.claim(dcc_shared::job::QueueName::Cpu, &too_small, T0).await.unwrap(),
        Claim::Empty
    ));
    match q.claim(dcc_shared::job::QueueName::Cpu, &who("B"), T0).await.unwrap() {
        Claim::Claimed(c) => assert_eq!(c.slots, 2),
        other => panic!("{other:?}"),
    }
}

/// A job no worker of this size can take never blocks the jobs behind it; among the jobs that
/// fit, the oldest goes first even when it must wait for room; memory is reserved like slots.
#[tokio::test]
async fn a_job_too_large_for_the_worker_is_stepped_over_fifo_kept_among_the_rest() {
    use dcc_shared::job::QueueName::Cpu;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    enqueue(&q, "huge", json!({"image": "x", "parameters": {"cpus": 3}}), T0).await;
    enqueue(
        &q,
        "fat",
        json!({"image": "x", "parameters": {"memoryMb": 8000}}),
        T0 + 1,
    )
    .await;
    enqueue(&q, "two", json!({"image": "x", "parameters": {"cpus": 2}}), T0 + 2).await;
    enqueue(
        &q,
        "one",
        json!({"image": "x", "parameters": {"cpus": 1, "memoryMb": 100}}),
        T0 + 3,
    )
    .await;
    let small = Claimant {
        free_slots: 2,
        total_slots: 2,
        free_memory_mb: 4000,
        total_memory_mb: 4000,
        ..who("A")
    };
    let claimed = |c: Claim| match c {
        Claim::Claimed(c) => (c.lease.job.to_string(), c.memory_mb),
        other => panic!("{other:?}"),
    };
    // `huge` (3 CPUs) and `fat` (8000 MiB) can never run on A: `two` is next.
    assert_eq!(claimed(q.claim(Cpu, &small, T0).await.unwrap()), ("two".into(), 2048));
    // With one slot free, `one` fits; with too little memory free, it waits.
    let busy = Claimant {
        free_slots: 1,
        free_memory_mb: 50,
        ..small
    };
    assert!(matches!(q.claim(Cpu, &busy, T0).await.unwrap(), Claim::NoFit));
    let room = Claimant {
        free_slots: 1,
        free_memory_mb: 1000,
        ..busy
    };
    assert_eq!(claimed(q.claim(Cpu, &room, T0).await.unwrap()), ("one".into(), 100));
    assert!(matches!(q.claim(Cpu, &small, T0).await.unwrap(), Claim::Empty));
    // A large worker takes the stepped-over jobs, oldest first.
    assert_eq!(claimed(q.claim(Cpu, &who("B"), T0).await.unwrap()).0, "huge");
    let big = Claimant {
        free_memory_mb: 9000,
        total_memory_mb: 9000,
        ..who("B")
    };
    assert_eq!(claimed(q.claim(Cpu, &big, T0).await.unwrap()).0, "fat");
}

#[tokio::test]
async fn cancel_queued_never_starts_and_ended_jobs_do_not_change() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let id = enqueue(&q, "c1", json!({"image": "x"}), T0).await;
    let rec = q.get(&id).await.unwrap().unwrap();
    assert_eq!(
        q.cancel(&rec, RETENTION, T0 + 1).await.unwrap(),
        Cancelled::Done(JobState::Queued)
    );
    assert!(matches!(
        q.claim(dcc_shared::job::QueueName::Cpu, &who("A"), T0 + 2)
            .await
            .unwrap(),
        Claim::Empty
    ));
    assert_eq!(
        q.cancel(&rec, RETENTION, T0 + 3).await.unwrap(),
        Cancelled::AlreadyEnded(JobState::Cancelled)
    );

    let id2 = enqueue(&q, "c2", json!({"image": "x"}), T0).await;
    let lease = claim(&q, "A", T0 + 5).await;
    let rec2 = q.get(&id2).await.unwrap().unwrap();
    assert_eq!(
        q.cancel(&rec2, RETENTION, T0 + 6).await.unwrap(),
        Cancelled::Done(JobState::Running)
    );
    // The worker's lease is gone with the cancel.
    assert_eq!(q.renew(&lease, LEASE, T0 + 7).await.unwrap(), Renewed::Lost);
    assert_eq!(
        q.finish(&lease, &success(), RETENTION, T0 + 8).await.unwrap(),
        Finished::LeaseLost
    );
    assert_eq!(q.get(&id2).await.unwrap().unwrap().state, JobState::Cancelled);
}

#[tokio::test]
async fn retention_sweep_removes_records_and_files_when_due() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
    let q = Queue::new(&redis.url(), "t").unwrap();
    let id = enqueue(&q, "r1", json!({"image": "x"}), T0).await;
    let lease = claim(&q, "A", T0 + 1).await;
    storage
        .put_bytes(&paths::log(&id, 1, "stdout"), "hi".into())
        .await
        .unwrap();
    let retention = Duration::from_secs(60);
    q.finish(&lease, &success(), retention, T0 + 1000).await.unwrap();
    let running = enqueue(&q, "r2", json!({"image": "x"}), T0).await;

    let t = maintenance::tick(
        &q,
        storage.as_ref(),
        Retention {
            standard: retention,
            fast: retention,
        },
        T0 + 30_000,
    )
    .await
    .unwrap();
    assert_eq!(t.expired, 0);
    assert!(q.get(&id).await.unwrap().is_some());
    let t = maintenance::tick(
        &q,
        storage.as_ref(),
        Retention {
            standard: retention,
            fast: retention,
        },
        T0 + 61_001,
    )
    .await
    .unwrap();
    assert_eq!(t.expired, 1);
    assert!(q.get(&id).await.unwrap().is_none());
    assert!(storage.list(&paths::job(&id)).await.unwrap().is_empty());
    assert!(
        q.get(&running).await.unwrap().is_some(),
        "a queued job is never expired"
    );
    let keys = redis.all_keys().await;
    assert!(keys.iter().all(|k| !k.contains("r1")), "{keys:?}");
}

#[tokio::test]
async fn events_follow_every_transition_in_order() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let events = Events::spawn(&redis.url(), q.event_channels());
    let mut rx = events.subscribe();
    // The subscription announces itself with a resync once it is live.
    loop {
        if let Event::Resync = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            break;
        }
    }
    let id = enqueue(&q, "e1", json!({"image": "x"}), T0).await;
    // The scripts write the hot events as strings, not through cjson: a worker name JSON must
    // escape comes out as it went in.
    let worker = "A \"quoted\" \\ tab\there";
    let lease = claim(&q, worker, T0 + 1).await;
    let mut ran = success();
    ran.stats.run_ms = 7;
    q.finish(&lease, &ran, RETENTION, T0 + 2).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Job(ev) if ev.job_id == id.as_str() => seen.push(ev),
            _ => {}
        }
    }
    let steps: Vec<_> = seen
        .iter()
        .map(|e| (e.status, e.attempt, e.at, e.worker.as_deref()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (EventStatus::Now(JobState::Queued), 0, T0, None),
            (EventStatus::Now(JobState::Running), 1, T0 + 1, Some(worker)),
            (EventStatus::Now(JobState::Succeeded), 1, T0 + 2, Some(worker))
        ]
    );
    let ended = seen[2].ended.as_ref().expect("the finish event tells the run");
    assert_eq!(ended.queue, dcc_shared::job::QueueName::Cpu);
    assert_eq!((ended.wait_ms, ended.run_ms), (Some(1), 7));
}

#[tokio::test]
async fn a_drain_is_bound_to_one_live_worker_process_and_can_be_taken_back() {
    use dcc_shared::workers::{Health, WorkerInfo};
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    assert!(
        !q.request_drain("w1").await.unwrap(),
        "no live worker: nothing to drain"
    );
    let info = WorkerInfo {
        id: "w1".into(),
        health: Health::Healthy,
        cpus: 2,
        gpus: 0,
        free_cpu_slots: 2,
        memory_mb: 4096,
        free_memory_mb: 4096,
        free_gpus: 0,
        running_jobs: 0,
        last_seen: T0,
        started_at: T0,
        version: "t".into(),
        instance: "nonce-a".into(),
        reason: String::new(),
        gpu_models: Vec::new(),
        idle_since: None,
        files_mode: "copy".into(),
        warm_containers: 0,
    };
    q.beat(&info, LEASE).await.unwrap();
    assert!(q.request_drain("w1").await.unwrap());
    assert!(q.drain_requested("w1", "nonce-a").await.unwrap());
    assert!(
        !q.drain_requested("w1", "nonce-b").await.unwrap(),
        "another process of that id is not drained"
    );
    let mut conn = redis.conn().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg("{t}:drain:w1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= LEASE.as_millis() as i64,
        "the flag expires with the worker: {ttl}"
    );
    assert!(q.cancel_drain("w1").await.unwrap());
    assert!(!q.drain_requested("w1", "nonce-a").await.unwrap());
    q.unregister("w1").await.unwrap();
    assert!(!q.cancel_drain("w1").await.unwrap(), "gone: 404 for the API");
}

/// A tenant's quota counts its queued + running jobs: enqueue adds, every end (finish, cancel,
/// lost on the last attempt, delete) takes away, so the count never drifts.
#[tokio::test]
async fn a_tenants_quota_counts_its_jobs_until_they_end() {
    use dcc_shared::queue::enqueue::Quota;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let valid = JobRequest::from_value(json!({"image": "x", "parameters": {"maxAttempts": 1}}))
        .unwrap()
        .validate(&Limits::default())
        .unwrap();
    let submit = |id: &'static str, lane: Lane, quota: Quota| {
        let q = q.clone();
        let spec = valid.spec.clone();
        async move {
            let id = JobId::parse(id).unwrap();
            let job = NewJob {
                id: &id,
                spec: &spec,
                lane,
                def_hash: id.as_str(),
                inputs_prefix: "p/",
                tenant: "team-a",
                quota,
                retention: RETENTION,
            };
            q.enqueue(job, T0).await.unwrap()
        }
    };
    let two = Quota { active: 2, fast: 1 };
    assert_eq!(submit("a1", Lane::Normal, two).await, Enqueued::Created);
    assert_eq!(submit("a2", Lane::Fast, two).await, Enqueued::Created);
    assert_eq!(submit("a3", Lane::Normal, two).await, Enqueued::OverQuota);
    assert_eq!(
        submit("f2", Lane::Fast, Quota { active: 9, fast: 1 }).await,
        Enqueued::OverFastQuota
    );
    // a2 (fast) runs and finishes: room for one more, of either kind.
    let fast = match q.claim(dcc_shared::job::QueueName::Cpu, &who("w"), T0).await.unwrap() {
        Claim::Claimed(c) => c.lease,
        other => panic!("{other:?}"),
    };
    assert_eq!(fast.job.as_str(), "a2");
    q.finish(&fast, &success(), RETENTION, T0).await.unwrap();
    assert_eq!(submit("f3", Lane::Fast, two).await, Enqueued::Created);
    assert_eq!(submit("a4", Lane::Normal, two).await, Enqueued::OverQuota);
    // A cancel gives room back; so does a job lost on its last attempt.
    let a1 = q.get(&JobId::parse("a1").unwrap()).await.unwrap().unwrap();
    q.cancel(&a1, RETENTION, T0).await.unwrap();
    assert_eq!(submit("a5", Lane::Normal, two).await, Enqueued::Created);
    let f3 = match q.claim(dcc_shared::job::QueueName::Cpu, &who("w"), T0).await.unwrap() {
        Claim::Claimed(c) => c.lease.job,
        other => panic!("{other:?}"),
    };
    assert_eq!(f3.as_str(), "f3");
    q.reap(RET, T0 + 2 * LEASE.as_millis() as i64).await.unwrap();
    let mut conn = redis.conn().await;
    let counts: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("{t}:tenants:active")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counts.get("team-a"), Some(&1), "only a5 is queued: {counts:?}");
    assert_eq!(counts.get("team-a:fast"), Some(&0), "{counts:?}");
}

/// Tenants take turns within a lane: with tenant A's 2 000 jobs queued ahead, tenant B's job is
/// claimed within one job-slot turnover; each tenant's own jobs stay FIFO; a job queued before
/// tenants existed (in the lane's own list) is still claimed.
#[tokio::test]
async fn tenants_take_turns_fifo_within_each() {
    use dcc_shared::job::QueueName::Cpu;
    use dcc_shared::queue::enqueue::Quota;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let valid = JobRequest::from_value(json!({"image": "x"}))
        .unwrap()
        .validate(&Limits::default())
        .unwrap();
    let submit = |id: String, tenant: &'static str| {
        let q = q.clone();
        let spec = valid.spec.clone();
        async move {
            let id = JobId::parse(&id).unwrap();
            let job = NewJob {
                id: &id,
                spec: &spec,
                lane: Lane::Normal,
                def_hash: "h",
                inputs_prefix: "p/",
                tenant,
                quota: Quota::default(),
                retention: RETENTION,
            };
            assert_eq!(q.enqueue(job, T0).await.unwrap(), Enqueued::Created);
        }
    };
    for i in 0..2000 {
        submit(format!("a{i:04}"), "team-a").await;
    }
    submit("b0".into(), "team-b").await;
    submit("b1".into(), "team-b").await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("LPUSH")
        .arg("{t}:queue:cpu:normal")
        .arg("old")
        .query_async(&mut conn)
        .await
        .unwrap();
    let spec = JobRequest::from_value(json!({"image": "busybox", "command": ["true"]}))
        .unwrap()
        .validate(&Limits::default())
        .unwrap()
        .spec;
    let spec = serde_json::to_string(&spec).unwrap();
    let _: () = redis::cmd("HSET")
        .arg("{t}:job:old")
        .arg(&[
            "state", "queued", "slots", "1", "spec", &spec, "queue", "cpu", "lane", "normal",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Queued by a version that left "" out of the ring: the next reaper pass puts it there.
    q.reap(RET, T0).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..6 {
        match q.claim(Cpu, &who("w"), T0).await.unwrap() {
            Claim::Claimed(c) => order.push(c.lease.job.to_string()),
            other => panic!("{other:?}"),
        }
    }
    // The job from before tenants takes its turn (as tenant "") after the reaper pass.
    assert_eq!(order, vec!["a0000", "b0", "old", "a0001", "b1", "a0002"], "turns");
    let depths = q.depths(T0).await.unwrap();
    assert_eq!(depths[0].1.queued, 2000 - 3, "A's rest: {depths:?}");
    // B's list and the old list emptied: they left the ring.
    let ring: Vec<String> = redis::cmd("LRANGE")
        .arg("{t}:queue:cpu:normal:ring")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ring, vec!["team-a"]);
}

/// A tenant at the ring's front whose oldest job must wait for room keeps its turn and its
/// order: another tenant's job that fits goes now, and the waiting job is the next one taken
/// once there is room, before the tenant's later jobs (the claim pops the oldest job and puts
/// it back when it does not take it, and moves the front tenant back when its turn went unused).
/// And a tenant is in the ring once (a submit searches the ring only when the tenant's list was
/// empty).
#[tokio::test]
async fn a_front_tenant_whose_oldest_job_waits_keeps_its_turn_and_its_order_and_one_ring_entry() {
    use dcc_shared::job::QueueName::Cpu;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    for (id, tenant, cpus, at) in [
        ("a-big", "team-a", 2, T0),
        ("a-small", "team-a", 1, T0 + 1),
        ("b-1", "team-b", 1, T0 + 2),
        ("b-2", "team-b", 1, T0 + 3),
        ("b-big", "team-b", 2, T0 + 4),
    ] {
        enqueue_as(&q, id, json!({"image": "x", "parameters": {"cpus": cpus}}), tenant, at).await;
    }
    let room = |free_slots: u32| Claimant {
        free_slots,
        total_slots: 2,
        ..who("w")
    };
    let taken = |c: Claim| match c {
        Claim::Claimed(c) => c.lease.job.to_string(),
        other => panic!("{other:?}"),
    };
    let conn = redis.conn().await;
    let list = |key: &'static str| {
        let mut conn = conn.clone();
        async move {
            let v: Vec<String> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap();
            v
        }
    };
    // One slot free: team-a (the front) waits for room for `a-big`; team-b's oldest goes.
    assert_eq!(taken(q.claim(Cpu, &room(1), T0).await.unwrap()), "b-1");
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, ["team-a", "team-b"]);
    assert_eq!(list("{t}:queue:cpu:normal:t:team-a").await, ["a-small", "a-big"]);
    assert_eq!(taken(q.claim(Cpu, &room(1), T0).await.unwrap()), "b-2");
    // Now both tenants' oldest jobs wait: neither's turn is used, and nothing behind them
    // overtakes them.
    assert!(matches!(q.claim(Cpu, &room(1), T0).await.unwrap(), Claim::NoFit));
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, ["team-a", "team-b"]);
    assert_eq!(list("{t}:queue:cpu:normal:t:team-a").await, ["a-small", "a-big"]);
    assert_eq!(list("{t}:queue:cpu:normal:t:team-b").await, ["b-big"]);
    // Room: team-a's `a-big` first (its turn), then team-b's, then `a-small`; team-b's list
    // empties and it leaves the ring.
    assert_eq!(taken(q.claim(Cpu, &room(2), T0).await.unwrap()), "a-big");
    assert_eq!(taken(q.claim(Cpu, &room(2), T0).await.unwrap()), "b-big");
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, ["team-a"]);
    assert_eq!(taken(q.claim(Cpu, &room(2), T0).await.unwrap()), "a-small");
    assert!(matches!(q.claim(Cpu, &room(2), T0).await.unwrap(), Claim::Empty));
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, Vec::<String>::new());
    // A tenant is in the ring once, however its jobs come and go: a second job joins a list
    // that is not empty (no second entry); a cancel empties the list but leaves the tenant in
    // the ring (claims drop it), and the next job finds it there.
    let j1 = enqueue(&q, "j1", json!({"image": "x"}), T0).await;
    let j2 = enqueue(&q, "j2", json!({"image": "x"}), T0 + 1).await;
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, ["t1"]);
    for id in [&j1, &j2] {
        let rec = q.get(id).await.unwrap().unwrap();
        q.cancel(&rec, RETENTION, T0 + 2).await.unwrap();
    }
    assert_eq!(list("{t}:queue:cpu:normal:t:t1").await, Vec::<String>::new());
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, ["t1"]);
    enqueue(&q, "j3", json!({"image": "x"}), T0 + 3).await;
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, ["t1"]);
    assert_eq!(taken(q.claim(Cpu, &room(2), T0 + 4).await.unwrap()), "j3");
    assert_eq!(list("{t}:queue:cpu:normal:ring").await, Vec::<String>::new());
}

/// Every end (finish, cancel, the reaper's WORKER_LOST) queues a job's webhook once, in the
/// script that ends it; the outbox hands each delivery to one sender at a time and fences late
/// results, as it does leases.
#[tokio::test]
async fn every_end_queues_one_webhook_and_the_outbox_fences_late_senders() {
    use dcc_shared::job::notify::NotifyState;
    use dcc_shared::queue::outbox::Settle;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = LocalStorage::new(dir.path());
    let hook = json!({"url": "https://hooks.example.org/dcc"});
    let done = enqueue(&q, "done", json!({"image": "x", "notify": hook}), T0).await;
    let cancelled = enqueue(&q, "cancelled", json!({"image": "x", "notify": hook}), T0 + 1).await;
    let lost = enqueue(
        &q,
        "lost",
        json!({"image": "x", "notify": hook, "parameters": {"maxAttempts": 1}}),
        T0 + 2,
    )
    .await;
    let quiet = enqueue(&q, "quiet", json!({"image": "x"}), T0 + 3).await;
    let gone = enqueue(&q, "gone", json!({"image": "x", "notify": hook}), T0 + 4).await;
    let notify_of = |id: &JobId| {
        let (q, id) = (q.clone(), id.clone());
        async move { q.get(&id).await.unwrap().unwrap().notify }
    };
    assert_eq!(notify_of(&done).await.unwrap().state, NotifyState::Waiting);
    assert_eq!(notify_of(&quiet).await, None);

    let a = claim(&q, "A", T0 + 10).await;
    assert_eq!(a.job, done);
    q.finish(&a, &success(), RETENTION, T0 + 20).await.unwrap();
    let job = q.get(&cancelled).await.unwrap().unwrap();
    assert!(matches!(
        q.cancel(&job, RETENTION, T0 + 21).await.unwrap(),
        Cancelled::Done(_)
    ));
    let l = claim(&q, "B", T0 + 22).await;
    assert_eq!(l.job, lost);
    assert_eq!(q.reap(RET, T0 + 22 + 31_000).await.unwrap().failed, 1);
    let g = claim(&q, "C", T0 + 23).await;
    assert_eq!(g.job, quiet);
    q.finish(&g, &success(), RETENTION, T0 + 24).await.unwrap();
    let job = q.get(&gone).await.unwrap().unwrap();
    q.delete(
        &job,
        &files,
        dcc_shared::queue::delete::DeleteMode::Any,
        RETENTION,
        T0 + 25,
    )
    .await
    .unwrap();
    assert_eq!(notify_of(&done).await.unwrap().state, NotifyState::Pending);

    let now = T0 + 40_000;
    let lease = Duration::from_secs(10);
    let mut taken = q.take_deliveries(now, lease, 10).await.unwrap();
    taken.sort_by(|x, y| x.job.as_str().cmp(y.job.as_str()));
    let ids: Vec<(&str, u32)> = taken.iter().map(|d| (d.job.as_str(), d.attempt)).collect();
    assert_eq!(
        ids,
        [("cancelled", 1), ("done", 1), ("lost", 1)],
        "one per ended job with notify"
    );
    assert!(
        q.take_deliveries(now + 1, lease, 10).await.unwrap().is_empty(),
        "taken ones are leased"
    );
    assert_eq!(notify_of(&done).await.unwrap().state, NotifyState::Delivering);

    let (d_cancelled, d_done, d_lost) = (&taken[0], &taken[1], &taken[2]);
    assert!(q.settle_delivery(d_done, &Settle::Delivered, now + 2).await.unwrap());
    assert!(
        !q.settle_delivery(d_done, &Settle::Delivered, now + 3).await.unwrap(),
        "settled once"
    );
    let retry = Settle::Retry {
        after: Duration::from_secs(5),
        error: "HTTP 503".into(),
    };
    assert!(q.settle_delivery(d_cancelled, &retry, now + 2).await.unwrap());
    let n = notify_of(&cancelled).await.unwrap();
    assert_eq!(
        (n.state, n.attempts, n.error.as_deref()),
        (NotifyState::Pending, 1, Some("HTTP 503"))
    );
    assert!(
        q.take_deliveries(now + 4_000, lease, 10).await.unwrap().is_empty(),
        "not due before its retry"
    );
    // `lost` was never settled: its lease ran out, so it is due again with `cancelled`'s retry.
    let mut again = q.take_deliveries(now + 11_000, lease, 10).await.unwrap();
    again.sort_by(|x, y| x.job.as_str().cmp(y.job.as_str()));
    let ids: Vec<(&str, u32)> = again.iter().map(|d| (d.job.as_str(), d.attempt)).collect();
    assert_eq!(ids, [("cancelled", 2), ("lost", 2)]);
    assert!(
        !q.settle_delivery(d_lost, &Settle::Delivered, now + 11_001)
            .await
            .unwrap(),
        "the late sender is fenced off"
    );
    let failed = Settle::Failed {
        error: "gave up".into(),
    };
    assert!(q.settle_delivery(&again[1], &failed, now + 11_002).await.unwrap());
    assert_eq!(notify_of(&lost).await.unwrap().state, NotifyState::Failed);
    let n = notify_of(&done).await.unwrap();
    assert_eq!((n.state, n.attempts, n.error), (NotifyState::Delivered, 1, None));
    // A job deleted with a delivery due takes it along.
    let job = q.get(&cancelled).await.unwrap().unwrap();
    q.delete(
        &job,
        &files,
        dcc_shared::queue::delete::DeleteMode::Any,
        RETENTION,
        now + 12_000,
    )
    .await
    .unwrap();
    assert_eq!(q.outbox_len().await.unwrap(), 0);
}

/// Jobs created in the same millisecond (60 concurrent submits) are all listed: paging with
/// any page size neither skips nor repeats one, whatever the ids' order.
#[tokio::test]
async fn listing_pages_through_jobs_of_the_same_millisecond() {
    use dcc_shared::queue::read::ListFilter;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let mut all = vec![enqueue(&q, "older", json!({"image": "x"}), T0 - 1).await];
    for i in 0..60 {
        all.push(enqueue(&q, &format!("same-{i:02}"), json!({"image": "x"}), T0).await);
    }
    all.push(enqueue(&q, "newer", json!({"image": "x"}), T0 + 1).await);
    let mut want: Vec<String> = all.iter().map(|i| i.to_string()).collect();
    want.sort();
    for limit in [1, 2, 7, 61, 1000] {
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = q
                .list(&ListFilter {
                    limit,
                    cursor: cursor.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            seen.extend(page.jobs.iter().map(|j| j.id.to_string()));
            assert!(seen.len() <= want.len(), "limit {limit}: pages repeat jobs");
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(
            seen.first().map(String::as_str),
            Some("newer"),
            "limit {limit}: newest first"
        );
        assert_eq!(seen.last().map(String::as_str), Some("older"), "limit {limit}");
        seen.sort();
        assert_eq!(seen, want, "limit {limit}: every job once");
    }
}

/// A job that becomes claimable wakes the idle worker with the most room, on its own channel,
/// and that one only: the next idle worker stays idle. (On a cluster a script's `PUBLISH` counts
/// only the subscribers of the node it runs on, so wake-ups use shard channels there, or a
/// worker subscribed elsewhere would count as gone and the next worker be woken too.)
#[tokio::test]
async fn a_job_wakes_the_idle_worker_with_most_room_and_no_other() {
    let (_redis, _q, idle) = roomy_woken().await;
    assert_eq!(
        idle,
        vec!["small".to_string()],
        "only the woken worker leaves the idle set"
    );
}

/// A claim that takes a job writes the idle set only where its worker may be in it: a worker
/// left idle (here `small`, not the one woken) leaves it with its next job, and a busy one's
/// claims skip that write.
#[tokio::test]
async fn only_a_worker_that_may_be_idle_leaves_the_idle_set() {
    use dcc_shared::job::QueueName::Cpu;
    let (redis, q, idle) = roomy_woken().await;
    assert_eq!(idle, ["small"]);
    common::submit(&q, "t1", "next", json!({"image": "x"}), 0).await;
    let small = Claimant {
        worker: "small",
        free_slots: 2,
        total_slots: 2,
        free_memory_mb: 1 << 20,
        total_memory_mb: 1 << 20,
        lease: common::LEASE,
    };
    let zrems = || redis.command_calls("zrem").0;
    let before = zrems();
    let c = q.claim(Cpu, &small, common::T0).await.unwrap();
    assert!(matches!(c, Claim::Claimed(_)), "{c:?}");
    assert_eq!(zrems() - before, 1, "it was idle: its claim leaves the idle set");
    assert!(idle_workers(&redis, &q).await.is_empty());
    let c = q.claim(Cpu, &small, common::T0).await.unwrap();
    assert!(matches!(c, Claim::Claimed(_)), "{c:?}");
    assert_eq!(zrems() - before, 1, "busy: the second claim skips the idle set");
    // Nothing left: idle again, and known to be.
    let c = q.claim(Cpu, &small, common::T0).await.unwrap();
    assert!(matches!(c, Claim::Empty), "{c:?}");
    assert_eq!(idle_workers(&redis, &q).await, ["small"]);
}

/// A queue where `roomy` and `small` went idle and a job queued woke `roomy`
/// ([`common::wake_roomy`], `roomy` listening on its channel): its Redis, and the idle workers
/// left.
async fn roomy_woken() -> (Redis, Queue, Vec<String>) {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let events = Events::spawn(&redis.url(), q.worker_channels("roomy"));
    let mut rx = events.subscribe();
    common::resync(&mut rx, Duration::from_secs(10)).await;
    let idle = common::wake_roomy(&redis, &q, &mut rx).await;
    (redis, q, idle)
}

/// The queue's idle workers (the cpu queue's, in the test queue's shard).
async fn idle_workers(redis: &Redis, q: &Queue) -> Vec<String> {
    use dcc_shared::job::QueueName::Cpu;
    let mut conn = redis.conn().await;
    redis::cmd("ZRANGE")
        .arg(q.keys().idle(Cpu))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// A worker's heartbeat renews all its leases in one call, on both queues; the answers say which
/// were lost, lease by lease, and only the held ones get a new deadline.
#[tokio::test]
async fn one_call_renews_every_lease_of_a_worker_and_names_the_lost_ones() {
    use dcc_shared::job::QueueName::Gpu;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    for id in ["r1", "r2", "r3"] {
        enqueue(&q, id, json!({"image": "x"}), T0).await;
    }
    enqueue(&q, "g1", json!({"image": "x", "parameters": {"gpus": 1}}), T0).await;
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(claim(&q, "A", T0 + 1).await);
    }
    match q.claim(Gpu, &who("A"), T0 + 1).await.unwrap() {
        Claim::Claimed(c) => leases.push(c.lease),
        other => panic!("expected the GPU job, got {other:?}"),
    }
    // r2 is cancelled; a stale copy of r3's lease (another attempt) is no lease at all.
    let r2 = q.get(&leases[1].job).await.unwrap().unwrap();
    q.cancel(&r2, RETENTION, T0 + 2).await.unwrap();
    let mut stale = leases[2].clone();
    stale.attempt += 1;
    leases.push(stale);

    let batches = q.renew_all(&leases, LEASE, T0 + 20_000).await;
    assert_eq!(batches.len(), 1, "one shard, five leases: one call");
    let answers = batches[0].answer.as_ref().unwrap();
    assert_eq!(batches[0].leases, vec![0, 1, 2, 3, 4]);
    use Renewed::{Held, Lost};
    assert_eq!(answers, &vec![Held, Lost, Held, Held, Lost]);

    // The first deadlines (T0 + 30,001) passed: nothing is reaped, in either queue.
    assert_eq!(q.reap(RET, T0 + 40_000).await.unwrap().requeued, 0);
    for i in [0, 2, 3] {
        let r = q.get(&leases[i].job).await.unwrap().unwrap();
        assert_eq!((r.state, r.attempt), (JobState::Running, 1), "{}", leases[i].job);
    }
    // The renewed ones (T0 + 50,000) lapse together.
    assert_eq!(q.reap(RET, T0 + 50_001).await.unwrap().requeued, 3);
}

/// More leases than one call carries go in several calls, each answering for its own.
#[tokio::test]
async fn a_worker_holding_many_leases_renews_them_in_bounded_calls() {
    use dcc_shared::queue::lease::RENEW_BATCH;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let n = RENEW_BATCH + 5;
    let mut leases = Vec::new();
    for i in 0..n {
        enqueue(&q, &format!("m{i}"), json!({"image": "x"}), T0).await;
        leases.push(claim(&q, "A", T0 + 1).await);
    }
    let batches = q.renew_all(&leases, LEASE, T0 + 20_000).await;
    let sizes: Vec<usize> = batches.iter().map(|b| b.leases.len()).collect();
    assert_eq!(sizes, vec![RENEW_BATCH, 5]);
    let all: Vec<usize> = batches.iter().flat_map(|b| b.leases.clone()).collect();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    for b in &batches {
        assert!(b.answer.as_ref().unwrap().iter().all(|r| *r == Renewed::Held));
    }
    assert_eq!(q.reap(RET, T0 + 40_000).await.unwrap().requeued, 0);
}

/// The finish of one job and the claim of the next, sent together: the result is recorded as
/// by a finish alone, the next job goes to the worker as by a claim alone, and the events come
/// in the order of the two calls.
#[tokio::test]
async fn a_finish_hands_the_room_to_the_next_job_in_one_round_trip() {
    use dcc_shared::job::QueueName::Cpu;
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let events = Events::spawn(&redis.url(), q.event_channels());
    let mut rx = events.subscribe();
    while !matches!(
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap(),
        Event::Resync
    ) {}
    // (Redis has both scripts: one that lost the finish script runs the claim first, that once)
    let warm = enqueue(&q, "h0", json!({"image": "x"}), T0).await;
    let warm = claim(&q, warm.as_str(), T0).await;
    q.finish(&warm, &success(), RETENTION, T0).await.unwrap();
    let first = enqueue(&q, "h1", json!({"image": "x"}), T0).await;
    let second = enqueue(&q, "h2", json!({"image": "x"}), T0).await;
    let lease = claim(&q, "A", T0 + 1).await;
    let h = hand_over(&q, &lease, T0 + 5).await;
    assert_eq!(h.finished.unwrap(), Finished::Recorded);
    let c = match h.next.unwrap() {
        Claim::Claimed(c) => c,
        other => panic!("expected the next job, got {other:?}"),
    };
    assert_eq!((c.lease.job.clone(), c.lease.attempt), (second.clone(), 1));
    assert_eq!(c.record.state, JobState::Running);
    assert_eq!(q.get(&first).await.unwrap().unwrap().state, JobState::Succeeded);

    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let Event::Job(ev) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
            && ev.status != EventStatus::Now(JobState::Queued)
            && ev.attempt > 0
            && (ev.job_id == first.as_str() && ev.status == EventStatus::Now(JobState::Succeeded)
                || ev.job_id == second.as_str())
        {
            seen.push((ev.job_id, ev.status));
        }
    }
    assert_eq!(
        seen,
        vec![
            (first.to_string(), EventStatus::Now(JobState::Succeeded)),
            (second.to_string(), EventStatus::Now(JobState::Running))
        ]
    );

    // A stale attempt's result is refused, and its room still goes to the next job; with
    // nothing queued, the claim leaves the worker idle.
    let h = hand_over(&q, &lease, T0 + 6).await;
    assert_eq!(h.finished.unwrap(), Finished::LeaseLost);
    assert!(matches!(h.next.unwrap(), Claim::Empty));
    let mut conn = redis.conn().await;
    let idle: Vec<String> = redis::cmd("ZRANGE")
        .arg(q.keys().idle(Cpu))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(idle, vec!["A".to_string()]);
}

/// Redis lost its scripts (a restart, a failover to a replica that never loaded them): each of
/// the two calls is sent again alone, loading its script, and each runs once.
#[tokio::test]
async fn a_finish_and_claim_sent_together_survive_a_script_flush() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let first = enqueue(&q, "f1", json!({"image": "x"}), T0).await;
    let second = enqueue(&q, "f2", json!({"image": "x"}), T0).await;
    let lease = claim(&q, "A", T0 + 1).await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let h = hand_over(&q, &lease, T0 + 5).await;
    assert_eq!(h.finished.unwrap(), Finished::Recorded);
    assert!(matches!(h.next.unwrap(), Claim::Claimed(c) if c.lease.job == second && c.lease.attempt == 1));
    let rec = q.get(&first).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.attempt), (JobState::Succeeded, 1));
}
