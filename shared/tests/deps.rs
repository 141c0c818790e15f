//! Dependencies (`dependsOn`) as Lua transitions against a real Redis, time passed in: a
//! dependent is queued but in no lane until its last dependency ends, in the same script that
//! ends it; a dependency that had to succeed and did not fails its dependents, transitively.

mod common;

use common::{RETENTION, T0, end};
use dcc_shared::job::{JobId, JobState};
use dcc_shared::queue::Queue;
use dcc_shared::queue::cancel::Cancelled;
use dcc_shared::queue::delete::DeleteMode;
use dcc_shared::queue::enqueue::Enqueued;
use dcc_shared::queue::lease::Lease;
use dcc_shared::queue::reap::Retention;
use dcc_shared::testing::Redis;
use serde_json::{Value, json};

async fn submit_as(q: &Queue, tenant: &str, id: &str, job: Value) -> Enqueued {
    common::submit(q, tenant, id, job, 0).await
}

async fn submit(q: &Queue, id: &str, deps: Value) -> Enqueued {
    submit_as(q, "t1", id, json!({"image": "x", "dependsOn": deps})).await
}

async fn claim(q: &Queue, now: i64) -> Option<Lease> {
    common::claimed(q, now).await.map(|c| c.lease)
}

async fn state(q: &Queue, id: &str) -> (JobState, u32, Option<String>) {
    let r = q.get(&JobId::parse(id).unwrap()).await.unwrap().unwrap();
    (r.state, r.blocked, r.error.map(|e| e.code))
}

#[tokio::test]
async fn a_dependent_is_claimable_only_once_its_dependency_succeeded() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    assert_eq!(submit(&q, "a", json!([])).await, Enqueued::Created);
    assert_eq!(submit(&q, "b", json!([{"jobId": "a"}])).await, Enqueued::Created);
    assert_eq!(state(&q, "b").await, (JobState::Queued, 1, None));
    let a = claim(&q, T0 + 1).await.expect("a is claimable");
    assert_eq!(a.job.as_str(), "a");
    assert!(claim(&q, T0 + 2).await.is_none(), "b waits for a");
    assert_eq!(
        q.depths(T0 + 2).await.unwrap()[0].1.queued,
        0,
        "a blocked job is not queue depth"
    );
    end(&q, &a, JobState::Succeeded, T0 + 10).await;
    assert_eq!(state(&q, "b").await, (JobState::Queued, 0, None));
    let b = claim(&q, T0 + 11).await.expect("b is claimable the moment a ended");
    assert_eq!(b.job.as_str(), "b");
}

#[tokio::test]
async fn a_failed_dependency_fails_its_dependents_transitively_and_ended_ones_run() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    submit(&q, "a", json!([])).await;
    submit(&q, "b", json!([{"jobId": "a", "type": "succeeded"}])).await;
    submit(&q, "c", json!([{"jobId": "b"}])).await;
    submit(&q, "d", json!([{"jobId": "a", "type": "ended"}])).await;
    submit(&q, "e", json!([{"jobId": "c", "type": "ended"}, {"jobId": "d"}])).await;
    let a = claim(&q, T0 + 1).await.unwrap();
    end(&q, &a, JobState::Failed, T0 + 10).await;
    let failed = (JobState::Failed, 0, Some("DEPENDENCY_FAILED".to_string()));
    assert_eq!(state(&q, "b").await, failed);
    assert_eq!(
        state(&q, "c").await,
        failed,
        "b never ran: c fails in the same transition"
    );
    assert_eq!(
        state(&q, "d").await,
        (JobState::Queued, 0, None),
        "d only needed a to end"
    );
    assert_eq!(
        state(&q, "e").await,
        (JobState::Queued, 1, None),
        "c ended: e now waits for d only"
    );
    let msg = q
        .get(&JobId::parse("c").unwrap())
        .await
        .unwrap()
        .unwrap()
        .error
        .unwrap()
        .message;
    assert!(msg.contains("dependency b ended failed"), "{msg}");
    let d = claim(&q, T0 + 11).await.unwrap();
    assert_eq!(d.job.as_str(), "d");
    end(&q, &d, JobState::Succeeded, T0 + 20).await;
    assert_eq!(claim(&q, T0 + 21).await.unwrap().job.as_str(), "e");
}

#[tokio::test]
async fn cancel_and_a_lost_last_attempt_settle_dependents() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    submit(&q, "a", json!([])).await;
    submit(&q, "b", json!([{"jobId": "a"}])).await;
    let rec = q.get(&JobId::parse("a").unwrap()).await.unwrap().unwrap();
    assert_eq!(
        q.cancel(&rec, RETENTION, T0 + 5).await.unwrap(),
        Cancelled::Done(JobState::Queued)
    );
    assert_eq!(state(&q, "b").await.2.as_deref(), Some("DEPENDENCY_FAILED"));
    // Deleted before it ended: the same.
    submit(&q, "p", json!([])).await;
    submit(&q, "r", json!([{"jobId": "p"}])).await;
    let p = q.get(&JobId::parse("p").unwrap()).await.unwrap().unwrap();
    let files = dcc_shared::storage::LocalStorage::new(tempfile::tempdir().unwrap().path());
    q.delete(&p, &files, DeleteMode::Any, RETENTION, T0 + 6).await.unwrap();
    let r = q.get(&JobId::parse("r").unwrap()).await.unwrap().unwrap();
    assert_eq!(
        r.error.map(|e| e.message).unwrap_or_default(),
        "dependency p ended deleted instead of succeeding; the job did not run"
    );
    let p_claim = claim(&q, T0 + 7).await;
    assert!(p_claim.is_none(), "neither p nor r is left to claim: {p_claim:?}");

    submit_as(&q, "t1", "x", json!({"image": "x", "parameters": {"maxAttempts": 1}})).await;
    submit(&q, "y", json!([{"jobId": "x"}])).await;
    submit(&q, "z", json!([{"jobId": "x", "type": "ended"}])).await;
    claim(&q, T0 + 10).await.unwrap();
    let ret = Retention {
        standard: RETENTION,
        fast: RETENTION,
    };
    assert_eq!(q.reap(ret, T0 + 10 + 31_000).await.unwrap().failed, 1);
    assert_eq!(state(&q, "y").await.2.as_deref(), Some("DEPENDENCY_FAILED"));
    assert_eq!(claim(&q, T0 + 50_000).await.unwrap().job.as_str(), "z");
}

#[tokio::test]
async fn dependencies_must_exist_and_be_the_tenants_and_ended_ones_count_at_once() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    submit_as(&q, "t2", "theirs", json!({"image": "x"})).await;
    assert_eq!(
        submit(&q, "m", json!([{"jobId": "none"}])).await,
        Enqueued::MissingDependency(0)
    );
    submit(&q, "ok", json!([])).await;
    assert_eq!(
        submit(&q, "m", json!([{"jobId": "ok"}, {"jobId": "theirs"}])).await,
        Enqueued::MissingDependency(1),
        "another tenant's job is not there to depend on"
    );
    assert!(
        q.get(&JobId::parse("m").unwrap()).await.unwrap().is_none(),
        "nothing written"
    );
    // Ended dependencies: a success counts at once; a failure fails the new job at once.
    // (Tenants take turns: the other tenant's job may come first.)
    let mut ok = claim(&q, T0 + 1).await.unwrap();
    if ok.job.as_str() != "ok" {
        ok = claim(&q, T0 + 1).await.unwrap();
    }
    assert_eq!(ok.job.as_str(), "ok");
    end(&q, &ok, JobState::Succeeded, T0 + 2).await;
    assert_eq!(
        submit(&q, "after-ok", json!([{"jobId": "ok"}])).await,
        Enqueued::Created
    );
    assert_eq!(state(&q, "after-ok").await, (JobState::Queued, 0, None));
    let rec = q.get(&JobId::parse("after-ok").unwrap()).await.unwrap().unwrap();
    q.cancel(&rec, RETENTION, T0 + 4).await.unwrap();
    assert_eq!(
        submit(&q, "after-cancel", json!([{"jobId": "after-ok"}])).await,
        Enqueued::DependencyFailed
    );
    assert_eq!(state(&q, "after-cancel").await.2.as_deref(), Some("DEPENDENCY_FAILED"));
    assert_eq!(
        submit(&q, "after-any", json!([{"jobId": "after-ok", "type": "ended"}])).await,
        Enqueued::Created
    );
    assert_eq!(state(&q, "after-any").await, (JobState::Queued, 0, None));
}
