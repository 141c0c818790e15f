//! Many workers on one queue (the small version of the `fleet` bench): simulated workers speak
//! to Redis through the real queue code while a real server takes submits and reaps.

use std::collections::HashSet;
use std::time::Duration;

use dcc_e2e::fleet::{Fleet, FleetSettings};
use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually};
use dcc_shared::job::{JobId, Lane, QueueName};
use dcc_shared::keys::{Keys, shard_of};
use futures_util::StreamExt;
use serde_json::json;

const JOBS: usize = 2000;
const WORKERS: usize = 50;
/// Workers that die holding jobs.
const CRASHED: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_workers_finish_two_thousand_jobs_exactly_once_while_five_die() {
    fleet_with_deaths(1).await;
}

/// The same over three shards: the jobs (named by the admin, so spread over every shard) are
/// claimed by workers at home in different shards, and the reaper hands on the dead workers' jobs
/// in whichever shard they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_three_shards() {
    fleet_with_deaths(3).await;
}

async fn fleet_with_deaths(shards: usize) {
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_LEASE_SECS", 3)
        .env("DCC_HEARTBEAT_SECS", 1)
        .env("DCC_REDIS_SHARDS", shards)
        .start()
        .await;
    let api = server.api();
    let ids: Vec<String> = futures_util::stream::iter(0..JOBS)
        .map(|i| api.submit_id(json!({"id": format!("j{i}"), "image": IMAGE, "command": ["true"]})))
        .buffer_unordered(16)
        .collect()
        .await;
    let keys = Keys::shards("dcc", shards);
    let mut s = FleetSettings::new(&redis.url(), WORKERS);
    s.shards = shards;
    s.job_ms = 0..=40;
    s.heartbeat = Duration::from_secs(1);
    s.lease = Duration::from_secs(3);
    s.track_ids = true;
    let fleet = Fleet::start(&s).await;

    // Five workers die, each holding at least one job: the reaper must hand those on.
    eventually(Duration::from_secs(20), "the first workers hold jobs", || async {
        (0..CRASHED).all(|i| !fleet.held_by(i).is_empty()).then_some(())
    })
    .await;
    for i in 0..CRASHED {
        fleet.crash(i);
    }

    let recorded = eventually(Duration::from_secs(120), "every job recorded", || async {
        let r = fleet.stats.recorded();
        (r.len() == JOBS).then_some(r)
    })
    .await;
    // What the dead held (a claim in flight when it died counts: its tasks stop a moment later).
    let orphaned: Vec<_> = (0..CRASHED).flat_map(|i| fleet.held_by(i)).collect();
    let submitted: HashSet<&String> = ids.iter().collect();
    assert_eq!(submitted.len(), JOBS, "ids are unique");
    for (id, times) in &recorded {
        assert!(submitted.contains(id), "{id} was recorded but never submitted");
        assert_eq!(*times, 1, "{id} was recorded {times} times");
    }

    // Redis agrees: each job succeeded; the dead workers' jobs on a second attempt (but for a
    // result already on its way when its worker died, which may land, as after a SIGKILL).
    let mut conn = redis.conn().await;
    // One pipeline per shard: on a cluster, a pipeline stays in one slot.
    let mut found: std::collections::HashMap<&String, (String, String)> = Default::default();
    for (shard, k) in keys.iter().enumerate() {
        let mine: Vec<&String> = ids.iter().filter(|id| shard_of(id, shards) == shard).collect();
        let mut pipe = redis::pipe();
        for id in &mine {
            pipe.cmd("HMGET")
                .arg(k.job(&JobId::parse(id).unwrap()))
                .arg("state")
                .arg("attempt");
        }
        let got: Vec<(String, String)> = pipe.query_async(&mut conn).await.expect("job states");
        found.extend(mine.into_iter().zip(got));
    }
    let states: Vec<(String, String)> = ids.iter().map(|id| found.remove(id).expect("read")).collect();
    let mut retried = 0;
    for (id, (state, attempt)) in ids.iter().zip(&states) {
        assert_eq!(state, "succeeded", "{id}");
        if orphaned.iter().any(|o| o.as_str() == id) {
            assert!(attempt == "1" || attempt == "2", "attempts of {id}: {attempt}");
            retried += usize::from(attempt == "2");
        } else {
            assert_eq!(attempt, "1", "attempts of {id}");
        }
    }
    assert!(
        retried * 2 >= orphaned.len(),
        "only {retried} of the {} jobs held by dead workers were handed on by the reaper",
        orphaned.len()
    );
    for k in &keys {
        for key in [k.lane(QueueName::Cpu, Lane::Normal), k.running(QueueName::Cpu)] {
            let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.expect("TYPE");
            assert_eq!(kind, "none", "{key} is left with entries");
        }
    }
    if shards > 1 {
        let used: HashSet<usize> = ids.iter().map(|id| shard_of(id, shards)).collect();
        assert_eq!(used.len(), shards, "the jobs span every shard");
    }
    assert_eq!(fleet.stats.lease_lost.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(fleet.stats.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The live workers are registered; the dead ones' health keys expire with their lease.
    let workers = api.get("/api/v1/workers").await;
    let live = workers.body["workers"].as_array().map_or(0, |w| w.len());
    assert!(live >= WORKERS - CRASHED, "{live} workers listed");
}
