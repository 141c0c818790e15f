//! Pipelines with `dependsOn`, end to end on the real Docker daemon: a dependent waits, visibly,
//! and starts once its dependencies ended; a dependency that had to succeed and did not fails
//! the chain without running it; cancel and delete settle dependents; ids are the tenant's own;
//! a worker killed in the middle of a chain loses nothing.

use std::time::Duration;

use dcc_e2e::{Api, Dcc, Redis, Role, containers_labelled, eventually, sh};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn after(mut job: Value, deps: Value) -> Value {
    job["dependsOn"] = deps;
    job
}

fn ms(v: &Value, field: &str) -> i64 {
    let text = v[field].as_str().unwrap_or_else(|| panic!("{field} in {v}"));
    dcc_shared::clock::parse_rfc3339(text).unwrap()
}

#[tokio::test]
async fn a_pipeline_runs_in_order_and_its_waiting_steps_say_why() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let a = api.submit_id(sh("sleep 1; echo a")).await;
    let b = api.submit_id(after(sh("echo b"), json!([{"jobId": a}]))).await;
    let c = api
        .submit_id(after(sh("echo c"), json!([{"jobId": b, "type": "ended"}])))
        .await;
    let v = api.job(&c).await;
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["waiting"]["reason"], "DEPENDENCIES", "{v}");
    assert!(
        v["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{b} (to ended)")),
        "{v}"
    );
    assert_eq!(v["dependsOn"], json!([{"jobId": b, "type": "ended"}]));
    let vc = api.wait_status(&c, "succeeded", T).await;
    let (va, vb) = (api.job(&a).await, api.job(&b).await);
    assert_eq!(
        (va["status"].as_str(), vb["status"].as_str()),
        (Some("succeeded"), Some("succeeded"))
    );
    assert!(
        ms(&vb, "startedAt") >= ms(&va, "finishedAt"),
        "b started before a ended: {va} {vb}"
    );
    assert!(
        ms(&vc, "startedAt") >= ms(&vb, "finishedAt"),
        "c started before b ended: {vb} {vc}"
    );
    assert_eq!(api.log(&c, "stdout").await, "c\n");
}

#[tokio::test]
async fn a_failed_dependency_fails_the_chain_without_running_it() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let a = api.submit_id(sh("exit 3")).await;
    let b = api.submit_id(after(sh("echo b"), json!([{"jobId": a}]))).await;
    let c = api.submit_id(after(sh("echo c"), json!([{"jobId": b}]))).await;
    let d = api
        .submit_id(after(sh("echo d"), json!([{"jobId": a, "type": "ended"}])))
        .await;
    let mut sweep = after(sh("echo never"), json!([{"jobId": a}]));
    sweep["array"] = json!({"size": 2});
    let sweep = api.submit_id(sweep).await;
    for id in [&b, &c] {
        let v = api.wait_status(id, "failed", T).await;
        assert_eq!(
            (v["error"]["code"].as_str(), v["attempt"].as_u64()),
            (Some("DEPENDENCY_FAILED"), Some(0)),
            "{v}"
        );
        assert!(
            containers_labelled(&[("dcc.job", id.as_str())], false).is_empty(),
            "{id} never ran"
        );
    }
    api.wait_status(&d, "succeeded", T).await;
    // An array failed by its dependency: its children never start, and say so.
    let v = api.wait_status(&sweep, "failed", T).await;
    assert_eq!(v["error"]["code"], "DEPENDENCY_FAILED", "{v}");
    assert_eq!(
        (
            v["array"]["children"]["queued"].as_u64(),
            v["array"]["children"]["cancelled"].as_u64()
        ),
        (Some(0), Some(2)),
        "{v}"
    );
    // A dependency that already failed fails a new dependent at once: 201, `failed`.
    let late = api.submit(after(sh("echo late"), json!([{"jobId": a}]))).await;
    assert_eq!(
        (late.status, late.body["status"].as_str()),
        (201, Some("failed")),
        "{:?}",
        late.body
    );
}

#[tokio::test]
async fn cancel_and_delete_settle_dependents() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let a = api.submit_id(sh("sleep 30")).await;
    let b = api.submit_id(after(sh("echo b"), json!([{"jobId": a}]))).await;
    let e = api
        .submit_id(after(sh("echo e"), json!([{"jobId": a, "type": "ended"}])))
        .await;
    api.wait_status(&a, "running", T).await;
    let r = api.post(&format!("/api/v1/jobs/{a}/cancel"), &json!({})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let v = api.wait_status(&b, "failed", T).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ended cancelled"),
        "{v}"
    );
    api.wait_status(&e, "succeeded", T).await;

    let x = api.submit_id(sh("sleep 30")).await;
    let y = api
        .submit_id(after(sh("echo y"), json!([{"jobId": x, "type": "ended"}])))
        .await;
    let r = api
        .call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{x}"), None)
        .await;
    assert_eq!(r.status, 204);
    api.wait_status(&y, "succeeded", T).await;
}

async fn refused(api: &Api, job: Value) -> (u16, String, String) {
    let a = api.submit(job).await;
    (
        a.status,
        a.code().to_string(),
        a.body["error"]["field"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn dependencies_are_the_tenants_own_and_checked_at_submit() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .keys(&[("team-a", "submit", "ka", None), ("team-b", "submit", "kb", None)])
        .start()
        .await;
    let (a, b) = (dcc.api().with_key("ka"), dcc.api().with_key("kb"));
    let mut first = sh("echo one");
    first["id"] = json!("step1");
    a.submit_id(first).await;
    // team-a names its own id; the view shows it in team-a's spelling.
    let second = a.submit_id(after(sh("echo two"), json!([{"jobId": "step1"}]))).await;
    let v = a.wait_status(&second, "succeeded", T).await;
    assert_eq!(v["dependsOn"], json!([{"jobId": "step1", "type": "succeeded"}]));
    // team-b has no step1; team-a's is not told to exist.
    let dep = |id: &str| json!([{"jobId": id}]);
    let bad = (400, "INVALID_JOB".to_string(), "dependsOn[0].jobId".to_string());
    assert_eq!(refused(&b, after(sh("true"), dep("step1"))).await, bad);
    assert_eq!(refused(&a, after(sh("true"), dep("no-such-job"))).await, bad);
    let many: Vec<Value> = (0..21).map(|i| json!({"jobId": format!("j{i}")})).collect();
    assert_eq!(
        refused(&a, after(sh("true"), json!(many))).await,
        (400, "INVALID_JOB".into(), "dependsOn".into())
    );
    assert_eq!(
        refused(&a, after(sh("true"), json!([{"jobId": "step1", "type": "n_to_n"}]))).await,
        (400, "INVALID_JOB".into(), "dependsOn[0].type".into())
    );
    let fast = a.post("/api/v1/run", &after(sh("true"), dep("step1"))).await;
    assert_eq!((fast.status, fast.code()), (400, "INVALID_JOB"), "{:?}", fast.body);
}

/// The worker running the first step is SIGKILLed: the step is reaped and rerun elsewhere, and
/// the next step starts after it, once.
#[tokio::test]
async fn a_worker_killed_mid_chain_loses_nothing() {
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
            .env("DCC_CPUS", 1)
    };
    let api = server.api();
    let mut w1 = worker().start().await;
    let a = api.submit_id(sh("sleep 2; echo a")).await;
    let b = api.submit_id(after(sh("echo b"), json!([{"jobId": a}]))).await;
    api.wait_status(&a, "running", T).await;
    eventually(T, "a's first container exists", || async {
        (!containers_labelled(&[("dcc.job", a.as_str()), ("dcc.attempt", "1")], false).is_empty()).then_some(())
    })
    .await;
    let w2 = worker().start().await;
    w1.kill();
    let vb = api.wait_status(&b, "succeeded", T).await;
    let va = api.job(&a).await;
    assert_eq!(
        (va["status"].as_str(), va["attempt"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{va}"
    );
    assert_eq!(
        (vb["attempt"].as_u64(), vb["workerId"].as_str()),
        (Some(1), Some(w2.worker_id.as_str())),
        "{vb}"
    );
    assert!(ms(&vb, "startedAt") >= ms(&va, "finishedAt"));
}
