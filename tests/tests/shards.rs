//! A deployment split over three shards (`DCC_REDIS_SHARDS=3`), from outside: tenants whose jobs
//! live in different shards submit standard, fast, dependent and named jobs through the API, one
//! worker runs them all, and every read (a job, its logs, the listing, queue depths) finds them.
//! A server asking for another shard count is refused.

use std::time::Duration;

use dcc_e2e::{Dcc, IMAGE, Redis, Role};
use dcc_shared::keys::{Keys, tenant_shard};
use serde_json::json;

const S: usize = 3;

/// One tenant name per shard.
fn one_tenant_per_shard() -> Vec<String> {
    let mut out: Vec<Option<String>> = vec![None; S];
    for n in 0.. {
        let t = format!("team{n}");
        out[tenant_shard(&t, S)].get_or_insert(t);
        if out.iter().all(Option::is_some) {
            return out.into_iter().flatten().collect();
        }
    }
    unreachable!()
}

#[tokio::test]
async fn tenants_in_three_shards_run_and_read_through_one_api() {
    let tenants = one_tenant_per_shard();
    let entries: Vec<(String, String)> = tenants.iter().map(|t| (t.clone(), format!("key-{t}"))).collect();
    let specs: Vec<_> = entries
        .iter()
        .map(|(t, k)| (t.as_str(), "submit", k.as_str(), None))
        .collect();
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_REDIS_SHARDS", S)
        .env("DCC_API_KEYS", "root")
        .keys(&specs)
        .start()
        .await;
    let root = dcc.api().with_key("root");
    let mut mine = Vec::new();
    for (t, key) in &entries {
        let api = dcc.api().with_key(key);
        let first = api
            .submit_id(json!({"id": "first", "image": IMAGE, "command": ["sh", "-c", format!("echo {t}")]}))
            .await;
        let then = api
            .submit_id(json!({"image": IMAGE, "command": ["true"], "dependsOn": [{"jobId": "first"}]}))
            .await;
        let fast = api
            .post(
                "/api/v1/run",
                &json!({"image": IMAGE, "command": ["sh", "-c", "echo fast"]}),
            )
            .await;
        assert_eq!(
            (fast.status, fast.body["stdout"].as_str()),
            (200, Some("fast\n")),
            "{:?}",
            fast.body
        );
        mine.push((api, t.clone(), first, then));
    }
    for (api, t, first, then) in &mine {
        api.wait_status(then, "succeeded", Duration::from_secs(60)).await;
        assert_eq!(api.log(first, "stdout").await, format!("{t}\n"));
        // The tenant sees its own three jobs, listed across the shards by the admin.
        let listed = api.get("/api/v1/jobs").await.body;
        assert_eq!(listed["jobs"].as_array().unwrap().len(), 3, "{listed}");
    }
    let all = root.get("/api/v1/jobs?limit=4").await.body;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 4, "{all}");
    assert!(all["nextCursor"].is_string(), "{all}");
    // Each tenant's records are in its own shard (the admin reads them by stored id).
    let mut c = redis.conn().await;
    let shards = Keys::shards("dcc", S);
    for (_, t, _, _) in &mine {
        let key = shards[tenant_shard(t, S)].job(&dcc_shared::job::JobId::parse(&format!("{t}.first")).unwrap());
        let n: u32 = redis::cmd("EXISTS").arg(&key).query_async(&mut c).await.unwrap();
        assert_eq!(n, 1, "{key}");
        assert_eq!(root.job(&format!("{t}.first")).await["status"], "succeeded");
    }
    let queues = root.get("/api/v1/queues").await;
    assert_eq!(queues.status, 200, "{:?}", queues.body);
    // Another shard count for the same deployment is refused, saying what it was started with.
    let err =
        dcc_e2e::process::server_refused_at_start(&[("DCC_REDIS_URL", redis.url()), ("DCC_REDIS_SHARDS", "2".into())])
            .await;
    assert!(err.contains("started with 3 shards"), "{err}");
}

/// A server that starts while Redis is down cannot read the deployment's shard count: it runs on
/// one shard, and once Redis answers with three it says so and exits (status 78) for its
/// supervisor to start it again, rather than serve the wrong shards.
#[tokio::test]
async fn a_server_that_guessed_the_shard_count_wrong_exits_when_redis_answers() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut c = redis.conn().await;
    let _: () = redis::cmd("SET")
        .arg(Keys::new("dcc").shard_count())
        .arg(S)
        .query_async(&mut c)
        .await
        .unwrap();
    redis.kill();
    let mut dcc = Dcc::builder(Role::ApiOnly, &redis).listening_only().start().await;
    assert!(dcc.log().contains("assuming DCC_REDIS_SHARDS (or 1)"), "{}", dcc.log());
    redis.restart();
    let status = dcc.wait_exit(Duration::from_secs(30)).await.expect("the server exits");
    assert_eq!(status.code(), Some(78), "{}", dcc.log());
    assert!(dcc.log().contains("another shard count"), "{}", dcc.log());
}
