//! A queue split over shards (#34): every job lives in its tenant's shard, workers claim from
//! their home shard and then from the others, and the reads cover every shard. On one server,
//! and on a local Redis Cluster in the suite's cluster run (`DCC_TEST_REDIS=cluster`), where the
//! shards must sit on different primaries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dcc_shared::events::{Event, EventStatus, Events};
use dcc_shared::job::{JobId, JobState, QueueName};
use dcc_shared::keys::{shard_of, tenant_shard};
use dcc_shared::maintenance;
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::{Claim, Claimant};
use dcc_shared::queue::enqueue::Enqueued;
use dcc_shared::queue::lease::Renewed;
use dcc_shared::queue::read::ListFilter;
use dcc_shared::queue::reap::Retention;
use dcc_shared::storage::LocalStorage;
use dcc_shared::testing::Redis;
use serde_json::{Value, json};

mod common;
use common::{LEASE, RETENTION, T0, end};

const S: usize = 3;

fn sharded(redis: &Redis) -> Queue {
    Queue::new(&redis.url(), "t").unwrap().with_shards(S)
}

/// Tenants whose jobs fall in each of the `S` shards, `per` of each.
fn tenants_per_shard(per: usize) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); S];
    for n in 0.. {
        let t = format!("team{n}");
        let s = tenant_shard(&t, S);
        if out[s].len() < per {
            out[s].push(t);
        }
        if out.iter().all(|v| v.len() == per) {
            return out;
        }
    }
    unreachable!()
}

/// Submits `job` as `id` for `tenant` at `now`, without a quota.
async fn submit_at(q: &Queue, tenant: &str, id: &str, job: Value, now: i64) -> Enqueued {
    common::submit_at(q, tenant, id, job, 0, now).await
}

fn worker(id: &str) -> Claimant<'_> {
    Claimant {
        worker: id,
        free_slots: 64,
        total_slots: 64,
        free_memory_mb: 1 << 30,
        total_memory_mb: 1 << 30,
        lease: LEASE,
    }
}

async fn take(q: &Queue, who: &str, now: i64) -> Option<dcc_shared::queue::claim::Claimed> {
    match q.claim(QueueName::Cpu, &worker(who), now).await.unwrap() {
        Claim::Claimed(c) => Some(*c),
        _ => None,
    }
}

async fn idle_in(redis: &Redis, q: &Queue, shard: usize) -> Vec<String> {
    let mut c = redis.conn().await;
    redis::cmd("ZRANGE")
        .arg(q.shard(shard).keys().idle(QueueName::Cpu))
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .unwrap()
}

#[test]
fn generated_ids_land_in_their_tenants_shard() {
    let q = Queue::new("redis://127.0.0.1:1", "t").unwrap().with_shards(S);
    for t in ["a", "team-b", "c"] {
        for _ in 0..20 {
            let id = q.new_id(t);
            assert_eq!(shard_of(id.as_str(), S), tenant_shard(t, S), "{id} of {t}");
            // an array's children and a tenant's own ids go with it
            assert_eq!(shard_of(&format!("{id}.7"), S), tenant_shard(t, S));
            assert_eq!(shard_of(&format!("{t}.my-id"), S), tenant_shard(t, S));
        }
    }
}

#[tokio::test]
async fn each_tenant_lives_in_its_shard_and_keeps_its_order() {
    let redis = Redis::start();
    let q = sharded(&redis);
    let tenants: Vec<String> = tenants_per_shard(2).concat();
    for n in 0..3 {
        for t in &tenants {
            let id = format!("{t}.{n}");
            assert_eq!(
                submit_at(&q, t, &id, json!({"image": "x"}), T0).await,
                Enqueued::Created
            );
        }
    }
    // Each record is under its tenant's shard's tag, and under no other.
    let mut c = redis.conn().await;
    for t in &tenants {
        for s in 0..S {
            let key = q.shard(s).keys().job(&JobId::parse(&format!("{t}.0")).unwrap());
            let n: u32 = redis::cmd("EXISTS").arg(&key).query_async(&mut c).await.unwrap();
            assert_eq!(n == 1, s == tenant_shard(t, S), "{key}");
        }
    }
    if redis.is_cluster() {
        let primaries: BTreeSet<usize> = (0..S)
            .map(|s| redis.primary_of(&q.shard(s).keys().index()).unwrap())
            .collect();
        assert_eq!(primaries.len(), S, "each shard on its own primary");
    }
    // Every job is claimed once; each tenant's in the order it queued them.
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..tenants.len() * 3 {
        let c = take(&q, &format!("w{}", i % 4), T0 + 1).await.expect("a job");
        let (t, n) = c.lease.job.as_str().split_once('.').unwrap();
        order.entry(t.into()).or_default().push(n.into());
    }
    assert!(take(&q, "w0", T0 + 1).await.is_none());
    for t in &tenants {
        assert_eq!(order[t], ["0", "1", "2"], "{t}");
    }
}

#[tokio::test]
async fn a_worker_takes_from_other_shards_when_its_home_has_none() {
    let redis = Redis::start();
    let q = sharded(&redis);
    let home = shard_of("w", S);
    let tenants = tenants_per_shard(1);
    let away = &tenants[(home + 1) % S][0];
    submit_at(&q, away, &format!("{away}.1"), json!({"image": "x"}), T0).await;
    let c = take(&q, "w", T0 + 1).await.expect("the job in the other shard");
    assert_eq!(c.lease.job.as_str(), format!("{away}.1"));
    // Its home had nothing: it went idle there, and left when it found a job elsewhere.
    assert!(idle_in(&redis, &q, home).await.is_empty());
    // The lease works where the job is: renewed, finished, its record read back.
    end(&q, &c.lease, JobState::Succeeded, T0 + 2).await;
    assert_eq!(common::get(&q, &format!("{away}.1")).await.state, JobState::Succeeded);
    // Nothing anywhere: idle in every shard, so a job queued in any wakes it.
    assert!(take(&q, "w", T0 + 3).await.is_none());
    for s in 0..S {
        assert_eq!(idle_in(&redis, &q, s).await, ["w"], "shard {s}");
    }
    // A job at home: taken there, and the worker leaves every shard's idle set, so a job
    // queued elsewhere wakes a worker with room rather than this one (which may fill up).
    let local = &tenants[home][0];
    submit_at(&q, local, &format!("{local}.1"), json!({"image": "x"}), T0 + 4).await;
    take(&q, "w", T0 + 5).await.expect("the job at home");
    for s in 0..S {
        assert!(idle_in(&redis, &q, s).await.is_empty(), "shard {s}");
    }
}

/// A worker's result and its next claim go together when the job is in its home shard; the
/// claim still looks at home first and then elsewhere, and a job from elsewhere is finished
/// and followed by a claim as before.
#[tokio::test]
async fn a_result_takes_the_next_claim_with_it_from_the_home_shard() {
    use dcc_shared::queue::claim::Claimed;
    use dcc_shared::queue::finish::Finished;
    use dcc_shared::queue::handover::NextClaim;
    let redis = Redis::start();
    let q = sharded(&redis);
    let home = shard_of("w", S);
    let tenants = tenants_per_shard(1);
    let (local, away) = (&tenants[home][0], &tenants[(home + 1) % S][0]);
    for (t, n) in [(local, 1), (local, 2), (away, 1)] {
        submit_at(&q, t, &format!("{t}.{n}"), json!({"image": "x"}), T0).await;
    }
    let next = NextClaim {
        queue: QueueName::Cpu,
        who: worker("w"),
        at: T0 + 2,
    };
    let ok = common::outcome(JobState::Succeeded);
    let hand = |c: Claimed| {
        let (q, next, ok) = (&q, &next, &ok);
        async move {
            let h = q.finish_and_claim(&c.lease, ok, RETENTION, T0 + 2, next).await.unwrap();
            assert_eq!(h.finished.unwrap(), Finished::Recorded, "{}", c.lease.job);
            match h.next.unwrap() {
                Claim::Claimed(c) => Some(*c),
                _ => None,
            }
        }
    };
    let c = take(&q, "w", T0 + 1).await.expect("the first job at home");
    assert_eq!(c.lease.job.as_str(), format!("{local}.1"));
    // Home first, in the same round trip as the result.
    let c = hand(c).await.expect("the second job at home");
    assert_eq!(c.lease.job.as_str(), format!("{local}.2"));
    // Home is empty: the claim sent with the result finds nothing there, and the worker takes
    // the job of the other shard, leaving home's idle set again.
    let c = hand(c).await.expect("the job away");
    assert_eq!(c.lease.job.as_str(), format!("{away}.1"));
    assert!(idle_in(&redis, &q, home).await.is_empty());
    // A job from another shard is finished there, then the claim looks everywhere.
    assert!(hand(c).await.is_none());
    for s in 0..S {
        assert_eq!(idle_in(&redis, &q, s).await, ["w"], "shard {s}");
    }
    for id in [format!("{local}.1"), format!("{local}.2"), format!("{away}.1")] {
        assert_eq!(common::get(&q, &id).await.state, JobState::Succeeded, "{id}");
    }
}

#[tokio::test]
async fn a_job_in_any_shard_wakes_an_idle_worker() {
    let redis = Redis::start();
    let q = sharded(&redis);
    let events = Events::spawn(&redis.url(), q.worker_channels("roomy"));
    let mut rx = events.subscribe();
    common::resync(&mut rx, Duration::from_secs(10)).await;
    assert!(take(&q, "roomy", T0).await.is_none());
    let home = shard_of("roomy", S);
    for (s, tenants) in tenants_per_shard(1).iter().enumerate().filter(|(s, _)| *s != home) {
        let id = format!("{}.wake", tenants[0]);
        submit_at(&q, &tenants[0], &id, json!({"image": "x"}), T0).await;
        let heard = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(Event::Job(ev)) = rx.recv().await
                    && ev.job_id == id
                {
                    return ev;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("woken by shard {s}"));
        assert_eq!(heard.status, EventStatus::Now(JobState::Queued));
    }
}

#[tokio::test]
async fn reads_listings_and_depths_cover_every_shard() {
    let redis = Redis::start();
    let q = sharded(&redis);
    let tenants: Vec<String> = tenants_per_shard(1).concat();
    let mut ids = Vec::new();
    for i in 0..12 {
        let t = &tenants[i % S];
        let id = format!("{t}.{i}");
        // Two jobs share each millisecond: the listing's tie-break by id spans shards too.
        submit_at(&q, t, &id, json!({"image": "x"}), T0 + (i as i64 / 2)).await;
        ids.push(id);
    }
    // Pages of 5, newest first, each job once.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = q
            .list(&ListFilter {
                limit: 5,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.jobs.len() <= 5);
        seen.extend(page.jobs.iter().map(|r| (r.created_ms, r.id.to_string())));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut want: Vec<(i64, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (T0 + i as i64 / 2, id.clone()))
        .collect();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, want);
    // One tenant's listing.
    let mine = q
        .list(&ListFilter {
            limit: 100,
            tenant: Some(tenants[1].clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.jobs.len(), 4);
    // Several jobs in one call come back in the order asked.
    let asked: Vec<JobId> = [&ids[7], &ids[0], &ids[5]]
        .iter()
        .map(|i| JobId::parse(i).unwrap())
        .collect();
    let got: Vec<String> = q
        .get_many(&asked)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    assert_eq!(got, [ids[7].clone(), ids[0].clone(), ids[5].clone()]);
    // So do their owners, a job that is gone among them.
    let mut asked = asked;
    asked.insert(1, JobId::parse(&format!("{}.gone", tenants[2])).unwrap());
    let owners = q.tenants_of(&asked).await.unwrap();
    let want = [Some(&tenants[7 % S]), None, Some(&tenants[0]), Some(&tenants[5 % S])];
    assert_eq!(owners, want.map(|t| t.cloned()));
    // Depths and quota counts add up over the shards.
    let depths = q.depths(T0 + 100).await.unwrap();
    let cpu = &depths.iter().find(|(q, _)| *q == QueueName::Cpu).unwrap().1;
    assert_eq!((cpu.queued, cpu.running, cpu.oldest_queued_age_ms), (12, 0, 100));
    let active = q.tenants_active().await.unwrap();
    assert_eq!(active.iter().map(|(_, n, _)| n).sum::<u64>(), 12);
    let c = take(&q, "w", T0 + 200).await.unwrap();
    let mine = q.tenant_depths(c.record.tenant.as_str(), T0 + 200).await.unwrap();
    assert_eq!(mine.iter().find(|(q, _)| *q == QueueName::Cpu).unwrap().1.running, 1);
}

#[tokio::test]
async fn leases_renew_per_shard_expire_and_retention_ends_in_every_shard() {
    let redis = Redis::start();
    let q = sharded(&redis);
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let ret = Retention {
        standard: RETENTION,
        fast: RETENTION,
    };
    for tenants in tenants_per_shard(1) {
        let t = &tenants[0];
        submit_at(&q, t, &format!("{t}.1"), json!({"image": "x"}), T0).await;
    }
    let mut leases = Vec::new();
    for _ in 0..S {
        leases.push(take(&q, "gone", T0).await.expect("a job").lease);
    }
    // Its heartbeat renews the three leases with one call per shard.
    let renewed = q.renew_all(&leases, LEASE, T0 + 10_000).await;
    let mut shards: Vec<usize> = renewed
        .iter()
        .map(|b| {
            assert_eq!(b.answer.as_ref().unwrap(), &vec![Renewed::Held]);
            q.shard_of(leases[b.leases[0]].job.as_str())
        })
        .collect();
    shards.sort();
    assert_eq!(shards, (0..S).collect::<Vec<_>>());
    let lease_ms = LEASE.as_millis() as i64;
    assert_eq!(q.reap(ret, T0 + lease_ms + 1).await.unwrap().requeued, 0);
    // Then the worker died: every shard's reaper pass hands its lease back.
    let reaped = q.reap(ret, T0 + 10_000 + lease_ms + 1).await.unwrap();
    assert_eq!((reaped.requeued, reaped.failed), (S as u32, 0));
    let later = T0 + 60_000;
    for _ in 0..S {
        let c = take(&q, "w", later).await.expect("a job again");
        assert_eq!(c.lease.attempt, 2);
        end(&q, &c.lease, JobState::Succeeded, later).await;
    }
    // Retention ends in every shard.
    let t = maintenance::tick(&q, &storage, ret, later + RETENTION.as_millis() as i64 + 1)
        .await
        .unwrap();
    assert_eq!(t.expired, S);
    assert!(
        q.list(&ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
        .is_empty()
    );
}

#[tokio::test]
async fn a_dependency_in_another_shard_is_refused_with_its_index() {
    let redis = Redis::start();
    let q = sharded(&redis);
    // An admin's own ids go by their part before the first '.'.
    let (x, y) = (0..)
        .map(|n| (format!("x{n}"), format!("y{n}")))
        .find(|(x, y)| shard_of(x, S) != shard_of(y, S))
        .unwrap();
    submit_at(&q, "admin", &x, json!({"image": "x"}), T0).await;
    let after = json!({"image": "x", "dependsOn": [{"jobId": x}]});
    assert_eq!(
        submit_at(&q, "admin", &y, after.clone(), T0).await,
        Enqueued::OtherShard(0)
    );
    assert!(
        q.get(&JobId::parse(&y).unwrap()).await.unwrap().is_none(),
        "nothing written"
    );
    // The same names under one group share a shard.
    submit_at(&q, "admin", &format!("g.{x}"), json!({"image": "x"}), T0).await;
    let after = json!({"image": "x", "dependsOn": [{"jobId": format!("g.{x}")}]});
    assert_eq!(
        submit_at(&q, "admin", &format!("g.{y}"), after, T0).await,
        Enqueued::Created
    );
}

#[tokio::test]
async fn every_process_takes_the_deployments_shard_count() {
    let redis = Redis::start();
    let first = Queue::new(&redis.url(), "t")
        .unwrap()
        .agree_on_shards(Some(S))
        .await
        .unwrap();
    assert_eq!(first.shard_count(), S);
    // A process without DCC_REDIS_SHARDS follows the deployment.
    let later = Queue::new(&redis.url(), "t")
        .unwrap()
        .agree_on_shards(None)
        .await
        .unwrap();
    assert_eq!(later.shard_count(), S);
    // Another count is refused, saying which.
    let e = Queue::new(&redis.url(), "t")
        .unwrap()
        .agree_on_shards(Some(2))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("started with 3 shards"), "{e}");
    // A deployment that never said stays one shard.
    let other = Queue::new(&redis.url(), "u")
        .unwrap()
        .agree_on_shards(None)
        .await
        .unwrap();
    assert_eq!(other.shard_count(), 1);
    // One from before shards, holding jobs, is not split under them.
    let old = Queue::new(&redis.url(), "v").unwrap();
    submit_at(&old, "a", "a.1", json!({"image": "x"}), T0).await;
    let e = Queue::new(&redis.url(), "v")
        .unwrap()
        .agree_on_shards(Some(3))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("already holds 1 jobs in one shard"), "{e}");
    let kept = Queue::new(&redis.url(), "v")
        .unwrap()
        .agree_on_shards(None)
        .await
        .unwrap();
    assert_eq!(kept.shard_count(), 1);
    assert!(kept.get(&JobId::parse("a.1").unwrap()).await.unwrap().is_some());
}
