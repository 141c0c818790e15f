//! Array jobs end to end on the real Docker daemon: every index runs with its own inputs, the
//! parallelism cap holds, a failed child fails the array with the counts, cancel and delete
//! reach every child, and a worker killed in the middle of an array loses nothing.

use std::time::Duration;

use dcc_e2e::{Api, Dcc, Redis, Role, containers_labelled, eventually, sh};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

fn array(mut job: Value, size: u32, parallelism: Option<u32>) -> Value {
    job["array"] = json!({"size": size});
    if let Some(p) = parallelism {
        job["array"]["parallelism"] = json!(p);
    }
    job
}

async fn children(api: &Api, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = api
            .get(&format!("/api/v1/jobs/{id}/children?limit=2&cursor={cursor}"))
            .await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        out.extend(page.body["jobs"].as_array().unwrap().iter().cloned());
        match page.body["nextCursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

/// Waits until child `id` (made by a claim: 404 before) runs.
async fn until_running(api: &Api, id: &str) {
    eventually(T, &format!("{id} to run"), || async {
        (api.get(&format!("/api/v1/jobs/{id}")).await.body["status"] == "running").then_some(())
    })
    .await;
}

fn ms(v: &Value, field: &str) -> i64 {
    dcc_shared::clock::parse_rfc3339(v[field].as_str().unwrap_or_else(|| panic!("{field}: {v}"))).unwrap()
}

#[tokio::test]
async fn every_index_runs_with_its_own_inputs_and_the_parent_counts_them() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis).env("DCC_CPUS", 4).start().await;
    let api = dcc.api();
    let mut job = array(
        sh(
            "echo $DCC_ARRAY_INDEX/$DCC_ARRAY_SIZE; cat /inputs/shared.txt /inputs/index/$DCC_ARRAY_INDEX/x.txt; ls /inputs/index",
        ),
        3,
        None,
    );
    job["inputs"] = json!([
        {"name": "shared.txt", "value": "S\n"},
        {"name": "index/0/x.txt", "value": "zero\n"},
        {"name": "index/1/x.txt", "value": "one\n"},
        {"name": "index/2/x.txt", "value": "two\n"},
    ]);
    let id = api.submit_id(job).await;
    let v = api.wait_status(&id, "succeeded", T).await;
    assert_eq!(
        v["array"]["children"],
        json!({"queued": 0, "running": 0, "succeeded": 3, "failed": 0, "timedOut": 0, "cancelled": 0})
    );
    let kids = children(&api, &id).await;
    assert_eq!(kids.len(), 3);
    for (i, (k, word)) in kids.iter().zip(["zero", "one", "two"]).enumerate() {
        assert_eq!(k["jobId"], json!(format!("{id}.{i}")));
        assert_eq!(k["arrayChild"], json!({"parentId": id, "index": i}));
        assert_eq!(k["status"], "succeeded", "{k}");
        let out = api.log(k["jobId"].as_str().unwrap(), "stdout").await;
        assert_eq!(
            out,
            format!("{i}/3\nS\n{word}\n{i}\n"),
            "child {i} sees its own index folder only"
        );
    }
    // Children are the array's: not in the listing, not deleted one by one.
    let listed = api.get("/api/v1/jobs").await.body;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
    let r = api
        .call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{id}.0"), None)
        .await;
    assert_eq!((r.status, r.code()), (400, "INVALID_REQUEST"));
}

#[tokio::test]
async fn parallelism_caps_running_children_and_a_failed_child_fails_the_array() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis).env("DCC_CPUS", 4).start().await;
    let api = dcc.api();
    let id = api
        .submit_id(array(sh("sleep 1; [ $DCC_ARRAY_INDEX != 3 ]"), 5, Some(2)))
        .await;
    let v = api.wait_status(&id, "failed", T).await;
    assert_eq!(v["error"]["code"], "CHILDREN_FAILED", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("1 of 5 children did not succeed"),
        "{v}"
    );
    let kids = children(&api, &id).await;
    let spans: Vec<(i64, i64)> = kids.iter().map(|k| (ms(k, "startedAt"), ms(k, "finishedAt"))).collect();
    for &(s, _) in &spans {
        let overlapping = spans.iter().filter(|(a, b)| *a <= s && s < *b).count();
        assert!(overlapping <= 2, "more than 2 children ran at once: {spans:?}");
    }
    assert_eq!(kids[3]["exitCode"], 1);
}

#[tokio::test]
async fn cancel_and_delete_of_the_array_reach_every_child() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let id = api.submit_id(array(sh("sleep 60"), 5, Some(1))).await;
    let first = format!("{id}.0");
    until_running(&api, &first).await;
    let r = api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (202, Some("cancelled")),
        "{:?}",
        r.body
    );
    api.wait_status(&first, "cancelled", T).await;
    eventually(T, "the running child's container is gone", || async {
        containers_labelled(&[("dcc.job", first.as_str())], true)
            .is_empty()
            .then_some(())
    })
    .await;
    let kids = children(&api, &id).await;
    assert!(kids.iter().all(|k| k["status"] == "cancelled"), "{kids:?}");
    assert_eq!(api.job(&id).await["array"]["children"]["cancelled"], 5);
    let r = api
        .call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(api.get(&format!("/api/v1/jobs/{first}")).await.status, 404);
}

/// Submit-time rules: size bounds, per-index inputs for children that exist, fast jobs.
#[tokio::test]
async fn arrays_are_checked_at_submit() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let field = |a: dcc_e2e::Answer| {
        (
            a.status,
            a.code().to_string(),
            a.body["error"]["field"].as_str().unwrap_or("").to_string(),
        )
    };
    for (size, f) in [(1, "array.size"), (10_001, "array.size")] {
        assert_eq!(
            field(api.submit(array(sh("true"), size, None)).await),
            (400, "INVALID_JOB".into(), f.into())
        );
    }
    assert_eq!(
        field(api.submit(array(sh("true"), 3, Some(0))).await),
        (400, "INVALID_JOB".into(), "array.parallelism".into())
    );
    let mut job = array(sh("true"), 3, None);
    job["inputs"] = json!([{"name": "index/3/x", "value": "no child 3"}]);
    assert_eq!(
        field(api.submit(job).await),
        (400, "INVALID_JOB".into(), "inputs[0].name".into())
    );
    let fast = api.post("/api/v1/run", &array(sh("true"), 2, None)).await;
    assert_eq!(field(fast), (400, "INVALID_JOB".into(), "array".into()));
}

/// A worker SIGKILLed while it runs children: they are reaped and run again elsewhere; the
/// array ends `succeeded` with every child run to its end once.
#[tokio::test]
async fn a_worker_killed_mid_array_loses_nothing() {
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_LEASE_SECS", 3)
        .env("DCC_HEARTBEAT_SECS", 1)
        .start()
        .await;
    let worker = || {
        Dcc::builder(Role::Worker, &redis)
            .storage(&server.storage)
            .env("DCC_LEASE_SECS", 3)
            .env("DCC_HEARTBEAT_SECS", 1)
            .env("DCC_CPUS", 2)
    };
    let api = server.api();
    let mut w1 = worker().start().await;
    let id = api
        .submit_id(array(sh("sleep 2; echo $DCC_ARRAY_INDEX > /outputs/i"), 6, None))
        .await;
    let first = format!("{id}.0");
    until_running(&api, &first).await;
    eventually(T, "the first child's container exists", || async {
        (!containers_labelled(&[("dcc.job", first.as_str())], false).is_empty()).then_some(())
    })
    .await;
    let _w2 = worker().start().await;
    w1.kill();
    let v = api.wait_status(&id, "succeeded", T).await;
    assert_eq!(v["array"]["children"]["succeeded"], 6, "{v}");
    let kids = children(&api, &id).await;
    assert!(
        kids.iter().any(|k| k["attempt"] == 2),
        "a child was rerun after the kill: {kids:?}"
    );
    for (i, k) in kids.iter().enumerate() {
        let (s, body) = api.get_bytes(&format!("/api/v1/jobs/{id}.{i}/outputs/i")).await;
        assert_eq!(
            (s, String::from_utf8_lossy(&body).trim().to_string()),
            (200, i.to_string()),
            "{k}"
        );
    }
}

/// `n_to_n`: child i of the second array starts once child i of the first succeeded; the child
/// whose twin failed fails without running.
#[tokio::test]
async fn n_to_n_links_each_child_to_its_twin() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis).env("DCC_CPUS", 4).start().await;
    let api = dcc.api();
    let a = api
        .submit_id(array(
            sh("sleep $((3 - DCC_ARRAY_INDEX)); [ $DCC_ARRAY_INDEX != 1 ]"),
            3,
            None,
        ))
        .await;
    let mut second = array(sh("echo after"), 3, None);
    second["dependsOn"] = json!([{"jobId": a, "type": "n_to_n"}]);
    let b = api.submit_id(second).await;
    let vb = api.wait_status(&b, "failed", T).await;
    assert_eq!(vb["error"]["code"], "CHILDREN_FAILED", "{vb}");
    let (ka, kb) = (children(&api, &a).await, children(&api, &b).await);
    for i in [0, 2] {
        assert_eq!(kb[i]["status"], "succeeded", "{}", kb[i]);
        assert!(
            ms(&kb[i], "startedAt") >= ms(&ka[i], "finishedAt"),
            "{} before {}",
            kb[i],
            ka[i]
        );
    }
    assert_eq!(
        (
            kb[1]["status"].as_str(),
            kb[1]["error"]["code"].as_str(),
            kb[1]["attempt"].as_u64()
        ),
        (Some("failed"), Some("DEPENDENCY_FAILED"), Some(0))
    );
    let mut odd = array(sh("true"), 2, None);
    odd["dependsOn"] = json!([{"jobId": a, "type": "n_to_n"}]);
    let r = api.submit(odd).await;
    assert_eq!(
        (r.status, r.code(), r.body["error"]["field"].as_str()),
        (400, "INVALID_JOB", Some("dependsOn[0].type"))
    );
}
