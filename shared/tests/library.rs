//! The job transitions as a Redis Functions library (`shared/src/queue/library.rs`): a Redis
//! that lost it gets it again at the next call, alone or in a finish sent with the next claim;
//! a Redis whose ACL refuses functions runs the same transitions as scripts.

mod common;

use common::*;
use dcc_shared::job::{JobState, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::Claim;
use dcc_shared::queue::finish::Finished;
use dcc_shared::queue::handover::NextClaim;
use dcc_shared::queue::lease::Lease;
use dcc_shared::testing::Redis;
use serde_json::json;

/// The DCC libraries every node holds (replicas included: a library is replicated).
fn libraries(redis: &Redis) -> Vec<String> {
    let mut names = Vec::new();
    for node in redis.nodes() {
        let client = redis::Client::open(node.url()).unwrap();
        let mut c = client.get_connection().unwrap();
        let list: Vec<redis::Value> = redis::cmd("FUNCTION").arg("LIST").query(&mut c).unwrap();
        for lib in list {
            let fields: Vec<redis::Value> = redis::from_redis_value(lib).unwrap();
            let name = fields
                .chunks(2)
                .find(|kv| redis::from_redis_value_ref::<String>(&kv[0]).is_ok_and(|k| k == "library_name"))
                .and_then(|kv| redis::from_redis_value_ref::<String>(&kv[1]).ok())
                .unwrap();
            names.push(name);
        }
    }
    names
}

/// The finish of `lease`'s attempt in `state`, sent with the next claim of a worker with room
/// for anything: both answered.
async fn finish_with_next_claim(q: &Queue, lease: &Lease, state: JobState) -> (Finished, Claim) {
    let next = NextClaim {
        queue: QueueName::Cpu,
        who: big_worker(),
        at: T0 + 1,
    };
    let h = q
        .finish_and_claim(lease, &outcome(state), RETENTION, T0 + 1, &next)
        .await
        .unwrap();
    (h.finished.unwrap(), h.next.unwrap())
}

/// Every primary forgets every function (as a restart without persistence would).
fn flush_functions(redis: &Redis) {
    for node in redis.nodes() {
        // (a replica refuses it, and follows its primary's)
        let _ = node.text("FUNCTION FLUSH");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !libraries(redis).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the replicas kept the library");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_redis_that_lost_the_library_gets_it_at_the_next_call() {
    let redis = Redis::start();
    let q = Queue::new(&redis.url(), "t").unwrap();
    let job = json!({"image": "alpine", "command": ["true"]});
    submit(&q, "a", "one", job.clone(), 0).await;
    let names = libraries(&redis);
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("dcc_")),
        "{names:?}"
    );

    // alone: the claim finds the library gone, loads it and runs
    flush_functions(&redis);
    let first = claimed(&q, T0)
        .await
        .expect("the claim ran after the library was loaded again");
    assert_eq!(first.lease.job.as_str(), "one");
    submit(&q, "a", "two", job.clone(), 0).await;

    // in a pipeline: the finish sent with the next claim, both refused, both sent again
    flush_functions(&redis);
    let loads = redis.command_calls("function|load").0;
    let (finished, next) = finish_with_next_claim(&q, &first.lease, JobState::Succeeded).await;
    assert_eq!(finished, Finished::Recorded);
    let Claim::Claimed(second) = next else {
        panic!("the claim sent with the finish took nothing")
    };
    assert_eq!(second.lease.job.as_str(), "two");
    assert_eq!(get(&q, "one").await.state, JobState::Succeeded);
    let loaded = redis.command_calls("function|load").0 - loads;
    assert!(
        (1..=2).contains(&loaded),
        "{loaded} loads for one lost library (the finish's, and the claim's at most)"
    );
    // the same text, the same name: loading it again made no second library
    let names = libraries(&redis);
    let mut unique = names.clone();
    unique.dedup();
    assert_eq!(unique.len(), 1, "{names:?}");
    end(&q, &second.lease, JobState::Succeeded, T0 + 2).await;
}

#[tokio::test]
async fn a_redis_refusing_functions_runs_the_transitions_as_scripts() {
    if dcc_shared::testing::cluster_wanted() {
        return;
    }
    let redis = Redis::start();
    let node = &redis.nodes()[0];
    node.text("ACL SETUSER dcc on >secret ~* &* +@all -fcall -function")
        .expect("the user is made");
    let url = format!("redis://dcc:secret@127.0.0.1:{}", node.port());
    let q = Queue::new(&url, "t").unwrap();
    let job = json!({"image": "alpine", "command": ["true"]});
    submit(&q, "a", "one", job.clone(), 0).await;
    submit(&q, "a", "two", job, 0).await;
    let first = claimed(&q, T0).await.expect("claimed as a script");
    let (finished, next) = finish_with_next_claim(&q, &first.lease, JobState::Failed).await;
    assert_eq!(finished, Finished::Recorded);
    assert!(matches!(next, Claim::Claimed(_)));
    assert_eq!(get(&q, "one").await.state, JobState::Failed);
    let (fcalls, refused) = redis.command_calls("fcall");
    assert!(refused >= 1 && fcalls == 0, "fcall: {fcalls} run, {refused} refused");
    let (scripts, _) = redis.command_calls("evalsha");
    assert!(
        scripts >= 4,
        "{scripts} script calls for two submits, a claim, a finish and a claim"
    );
    assert!(libraries(&redis).is_empty());
}

/// A process's start loads its version's library on each primary and deletes other DCC
/// versions' (they would stay, persisted and replicated, after every upgrade); a library of
/// someone else's stays. An old process still running loads its own again when it next calls.
#[tokio::test]
async fn a_start_loads_this_versions_library_and_deletes_older_ones() {
    let redis = Redis::start();
    let old = "#!lua name=dcc_0123456789ab\nredis.register_function('dcc_0123456789ab_claim', function() return 1 end)";
    let theirs = "#!lua name=reports\nredis.register_function('reports_count', function() return 2 end)";
    let q = Queue::new(&redis.url(), "t").unwrap();
    // (on the primary of the deployment's slot; its replica follows)
    let home = &redis.nodes()[redis.primary_of(&q.keys().index()).unwrap()];
    let mut c = redis::Client::open(home.url()).unwrap().get_connection().unwrap();
    for lib in [old, theirs] {
        let _: String = redis::cmd("FUNCTION").arg("LOAD").arg(lib).query(&mut c).unwrap();
    }
    let dropped = q.install_library().await.unwrap();
    assert_eq!(dropped, vec!["dcc_0123456789ab".to_string()]);
    // (a replica follows its primary's deletion a moment later)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut names = libraries(&redis);
    while names.iter().any(|n| n == "dcc_0123456789ab") && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        names = libraries(&redis);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1], "reports", "{names:?}");
    assert!(
        names[0].starts_with("dcc_") && names[0] != "dcc_0123456789ab",
        "{names:?}"
    );
    // loaded already: the first call runs at once
    let loads = redis.command_calls("function|load").0;
    submit(&q, "a", "one", json!({"image": "alpine", "command": ["true"]}), 0).await;
    assert_eq!(redis.command_calls("function|load").0, loads);
    // a second start finds nothing to delete
    assert!(q.install_library().await.unwrap().is_empty());
}
