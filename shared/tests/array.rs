//! Array jobs as Lua transitions against a real Redis, time passed in: children made one claim
//! at a time, the parallelism cap, the parent's counts and end, cancel, delete, the quota, and
//! another tenant's job getting its turn beside a large array.

mod common;

use common::{RETENTION, T0, end, get, submit};
use dcc_shared::job::{JobId, JobState};
use dcc_shared::queue::Queue;
use dcc_shared::queue::cancel::Cancelled;
use dcc_shared::queue::delete::DeleteMode;
use dcc_shared::queue::enqueue::Enqueued;
use dcc_shared::queue::lease::Lease;
use dcc_shared::queue::reap::Retention;
use dcc_shared::testing::Redis;
use serde_json::{Value, json};

fn array(size: u32, par: Option<u32>) -> Value {
    let mut a = json!({"size": size});
    if let Some(p) = par {
        a["parallelism"] = json!(p);
    }
    json!({"image": "x", "array": a})
}

/// A claim; a child's carries its parent's spec and its own id.
async fn claim(q: &Queue, now: i64) -> Option<Lease> {
    let c = common::claimed(q, now).await?;
    if let Some(of) = &c.record.child_of {
        assert!(
            c.record.spec.array.is_some(),
            "a child's claim carries its parent's spec"
        );
        assert_eq!(c.lease.job.as_str(), format!("{}.{}", of.parent, of.index));
    }
    Some(c.lease)
}

async fn active(redis: &Redis, tenant: &str) -> i64 {
    let mut c = redis.conn().await;
    let n: Option<i64> = redis::cmd("HGET")
        .arg("{t}:tenants:active")
        .arg(tenant)
        .query_async(&mut c)
        .await
        .unwrap();
    n.unwrap_or(0)
}

#[tokio::test]
async fn children_are_made_one_claim_at_a_time_within_the_parallelism() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    assert_eq!(submit(&q, "t1", "a", array(3, Some(2)), 0).await, Enqueued::Created);
    assert_eq!(active(&redis, "t1").await, 3, "the quota counts children");
    let c0 = claim(&q, T0 + 1).await.unwrap();
    let c1 = claim(&q, T0 + 2).await.unwrap();
    assert_eq!((c0.job.as_str(), c1.job.as_str()), ("a.0", "a.1"));
    assert!(claim(&q, T0 + 3).await.is_none(), "two run: the third waits");
    let p = get(&q, "a").await;
    assert_eq!(p.state, JobState::Running);
    let counts = p.array.unwrap();
    assert_eq!((counts.made, counts.running), (2, 2));
    let child = get(&q, "a.1").await;
    assert_eq!(child.child_of.as_ref().map(|c| c.index), Some(1));
    assert_eq!(child.spec.image, "x", "a child reads its parent's definition");
    end(&q, &c0, JobState::Succeeded, T0 + 10).await;
    let c2 = claim(&q, T0 + 11).await.unwrap();
    assert_eq!(c2.job.as_str(), "a.2");
    assert!(claim(&q, T0 + 12).await.is_none(), "every child made");
    end(&q, &c1, JobState::Succeeded, T0 + 20).await;
    assert_eq!(get(&q, "a").await.state, JobState::Running);
    end(&q, &c2, JobState::Succeeded, T0 + 30).await;
    let p = get(&q, "a").await;
    assert_eq!((p.state, p.finished_ms), (JobState::Succeeded, Some(T0 + 30)));
    assert_eq!(active(&redis, "t1").await, 0);
}

#[tokio::test]
async fn a_failed_child_fails_the_parent_with_the_counts_and_a_lost_lease_requeues_the_child() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    submit(&q, "t1", "a", array(2, None), 0).await;
    let c0 = claim(&q, T0 + 1).await.unwrap();
    let c1 = claim(&q, T0 + 2).await.unwrap();
    // c1's worker goes silent: the child goes back to the list by its own id.
    let ret = Retention {
        standard: RETENTION,
        fast: RETENTION,
    };
    assert_eq!(q.reap(ret, T0 + 2 + 31_000).await.unwrap().requeued, 2);
    assert_eq!(get(&q, "a").await.array.unwrap().running, 0);
    let again = claim(&q, T0 + 40_000).await.unwrap();
    let other = claim(&q, T0 + 40_001).await.unwrap();
    let mut ids = [again.job.to_string(), other.job.to_string()];
    ids.sort();
    assert_eq!(ids, ["a.0", "a.1"]);
    assert_eq!((again.attempt, other.attempt), (2, 2));
    let _ = (c0, c1);
    end(&q, &again, JobState::Failed, T0 + 41_000).await;
    end(&q, &other, JobState::Succeeded, T0 + 42_000).await;
    let p = get(&q, "a").await;
    assert_eq!(p.state, JobState::Failed);
    let e = p.error.unwrap();
    assert_eq!(e.code, "CHILDREN_FAILED");
    assert!(
        e.message.starts_with("1 of 2 children did not succeed (1 failed"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn cancel_and_delete_of_the_parent_reach_every_child() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    submit(&q, "t1", "a", array(5, None), 0).await;
    let c0 = claim(&q, T0 + 1).await.unwrap();
    let c1 = claim(&q, T0 + 2).await.unwrap();
    end(&q, &c1, JobState::Succeeded, T0 + 3).await;
    let p = get(&q, "a").await;
    assert_eq!(
        q.cancel(&p, RETENTION, T0 + 4).await.unwrap(),
        Cancelled::Done(JobState::Running)
    );
    assert_eq!(get(&q, "a.0").await.state, JobState::Cancelled, "the running child");
    assert_eq!(get(&q, "a.1").await.state, JobState::Succeeded, "an ended child stays");
    let p = get(&q, "a").await;
    let counts = p.array.unwrap();
    assert_eq!(
        (p.state, counts.cancelled, counts.succeeded, counts.running),
        (JobState::Cancelled, 4, 1, 0)
    );
    assert_eq!(active(&redis, "t1").await, 0, "none counts against the quota any more");
    assert!(claim(&q, T0 + 5).await.is_none(), "no child is made after a cancel");
    let _ = c0;
    let files = dcc_shared::storage::LocalStorage::new(tempfile::tempdir().unwrap().path());
    q.delete(&p, &files, DeleteMode::Any, RETENTION, T0 + 6).await.unwrap();
    for id in ["a", "a.0", "a.1"] {
        assert!(
            q.get(&JobId::parse(id).unwrap()).await.unwrap().is_none(),
            "{id} is gone"
        );
    }
}

#[tokio::test]
async fn quota_counts_children_and_another_tenant_takes_turns_with_a_large_array() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    assert_eq!(submit(&q, "t1", "big", array(4, None), 5).await, Enqueued::Created);
    assert_eq!(submit(&q, "t1", "more", array(2, None), 5).await, Enqueued::OverQuota);
    assert_eq!(
        submit(&q, "t1", "one", json!({"image": "x"}), 5).await,
        Enqueued::Created
    );

    submit(&q, "t2", "sweep", array(1000, None), 0).await;
    submit(&q, "t3", "single", json!({"image": "x"}), 0).await;
    let mut seen = Vec::new();
    for i in 0..6 {
        seen.push(claim(&q, T0 + i).await.unwrap().job.to_string());
    }
    assert!(
        seen.iter().any(|j| j == "single"),
        "t3's job is claimed among the first claims: {seen:?}"
    );
}

#[tokio::test]
async fn n_to_n_makes_child_i_once_its_twin_succeeded_and_fails_it_otherwise() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    submit(&q, "t1", "a", array(3, None), 0).await;
    let mut b = array(3, None);
    b["dependsOn"] = json!([{"jobId": "a", "type": "n_to_n"}]);
    assert_eq!(submit(&q, "t1", "b", b, 0).await, Enqueued::Created);
    let mut short = array(2, None);
    short["dependsOn"] = json!([{"jobId": "a", "type": "n_to_n"}]);
    assert_eq!(submit(&q, "t1", "c", short, 0).await, Enqueued::NotTwin(0));
    let a: Vec<Lease> = [
        claim(&q, T0 + 1).await,
        claim(&q, T0 + 2).await,
        claim(&q, T0 + 3).await,
    ]
    .into_iter()
    .map(Option::unwrap)
    .collect();
    assert_eq!(
        a.iter().map(|l| l.job.as_str()).collect::<Vec<_>>(),
        ["a.0", "a.1", "a.2"]
    );
    assert!(claim(&q, T0 + 4).await.is_none(), "b.0 waits for a.0");
    end(&q, &a[0], JobState::Succeeded, T0 + 5).await;
    let b0 = claim(&q, T0 + 6).await.unwrap();
    assert_eq!(b0.job.as_str(), "b.0");
    end(&q, &a[1], JobState::Failed, T0 + 7).await;
    assert!(claim(&q, T0 + 8).await.is_none(), "b.1 fails unrun; b.2 waits for a.2");
    let b1 = get(&q, "b.1").await;
    assert_eq!((b1.state, b1.attempt), (JobState::Failed, 0));
    assert_eq!(b1.error.unwrap().code, "DEPENDENCY_FAILED");
    end(&q, &a[2], JobState::Succeeded, T0 + 9).await;
    let b2 = claim(&q, T0 + 10).await.unwrap();
    assert_eq!(b2.job.as_str(), "b.2");
    end(&q, &b0, JobState::Succeeded, T0 + 11).await;
    end(&q, &b2, JobState::Succeeded, T0 + 12).await;
    let b = get(&q, "b").await;
    assert_eq!(
        (b.state, b.error.map(|e| e.code)),
        (JobState::Failed, Some("CHILDREN_FAILED".into()))
    );
    assert_eq!(active(&redis, "t1").await, 0, "every child left the quota");
}

/// The queue depth (what the scaler sizes the fleet by) counts children not made yet.
#[tokio::test]
async fn queue_depth_counts_children_not_made_yet() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let depth = |q: Queue| async move { q.depths(T0).await.unwrap()[0].1.queued };
    submit(&q, "t1", "a", array(10, None), 0).await;
    assert_eq!(depth(q.clone()).await, 11, "the array's entry and its 10 children");
    let c = claim(&q, T0 + 1).await.unwrap();
    assert_eq!(depth(q.clone()).await, 10);
    assert_eq!(q.tenant_depths("t1", T0).await.unwrap()[0].1.queued, 10);
    let _ = c;
    let p = get(&q, "a").await;
    q.cancel(&p, RETENTION, T0 + 2).await.unwrap();
    assert_eq!(depth(q.clone()).await, 0, "a cancelled array leaves the backlog");
    // A blocked array joins the backlog when its dependency ends.
    submit(&q, "t1", "first", json!({"image": "x"}), 0).await;
    let mut later = array(5, None);
    later["dependsOn"] = json!([{"jobId": "first"}]);
    submit(&q, "t1", "later", later, 0).await;
    assert_eq!(depth(q.clone()).await, 1, "only `first`");
    let f = claim(&q, T0 + 3).await.unwrap();
    end(&q, &f, JobState::Succeeded, T0 + 4).await;
    assert_eq!(depth(q.clone()).await, 6);
}
