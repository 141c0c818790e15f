//! Several teams on one DCC: named keys with roles, each tenant seeing only its own jobs through
//! every route and the WebSocket, admin-only fleet changes, a shared rate limit, key reload.

use std::time::Duration;

use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually, sh};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use dcc_e2e::Ws;

async fn ws(dcc: &Dcc, key: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}/api/v1/ws?access_token={key}", dcc.port);
    tokio_tungstenite::connect_async(url).await.expect("websocket").0
}

#[tokio::test]
async fn two_tenants_and_an_admin_share_one_stack() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_API_KEYS", "root")
        .keys(&[
            ("team-a", "submit", "ka", None),
            ("team-a", "read", "ka-read", None),
            // Rate-limited, with room for this test's submits however fast its jobs run (at
            // burst 3, the fourth failed when the first three came within a second).
            ("team-b", "submit", "kb", Some((1.0, 10))),
        ])
        .start()
        .await;
    let anon = dcc.api();
    let (a, b, root, reader) = (
        anon.with_key("ka"),
        anon.with_key("kb"),
        anon.with_key("root"),
        anon.with_key("ka-read"),
    );

    let ja = a.submit_id(sh("echo from-a")).await;
    let jb = b.submit_id(sh("echo from-b")).await;
    a.wait_status(&ja, "succeeded", Duration::from_secs(30)).await;
    b.wait_status(&jb, "succeeded", Duration::from_secs(30)).await;

    // Each sees its own jobs only; another tenant's are 404 everywhere (ids cannot be probed).
    for (who, mine, theirs) in [(&a, &ja, &jb), (&b, &jb, &ja)] {
        assert_eq!(who.get(&format!("/api/v1/jobs/{mine}")).await.status, 200);
        for path in ["", "/stdout", "/stderr", "/wait?timeoutSecs=1", "/outputs/x"] {
            let r = who.get(&format!("/api/v1/jobs/{theirs}{path}")).await;
            assert_eq!((r.status, r.code()), (404, "NOT_FOUND"), "{path}");
        }
        assert_eq!(
            who.post(&format!("/api/v1/jobs/{theirs}/cancel"), &json!({}))
                .await
                .status,
            404
        );
        assert_eq!(
            who.call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{theirs}"), None)
                .await
                .status,
            404
        );
        let listed = who.get("/api/v1/jobs").await.body;
        let ids: Vec<&str> = listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["jobId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![mine.as_str()], "{listed}");
    }
    // The admin sees everything, metrics by tenant too.
    let metrics = root.get("/metrics").await.body;
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains("dcc_tenant_jobs_active{tenant=\"team-b\"}"),
        "{metrics}"
    );
    assert_eq!(root.get(&format!("/api/v1/jobs/{ja}")).await.status, 200);
    assert_eq!(root.get("/api/v1/jobs").await.body["jobs"].as_array().unwrap().len(), 2);
    // Client-chosen ids are per tenant: both may use `same-id`, each sees its own job under it
    // (view, long-poll, WebSocket, fast jobs), the admin sees both under their stored ids.
    let mine = a
        .submit(json!({"id": "same-id", "image": IMAGE, "command": ["echo", "a"], "wait": true}))
        .await;
    let theirs = b
        .submit(json!({"id": "same-id", "image": IMAGE, "command": ["echo", "b"], "wait": true}))
        .await;
    assert_eq!(
        (mine.status, theirs.status),
        (200, 200),
        "{:?} {:?}",
        mine.body,
        theirs.body
    );
    assert_eq!(
        (mine.body["jobId"].as_str(), theirs.body["jobId"].as_str()),
        (Some("same-id"), Some("same-id"))
    );
    assert_eq!(mine.body["stdoutUrl"], "/api/v1/jobs/same-id/stdout");
    assert_eq!(a.log("same-id", "stdout").await, "a\n");
    assert_eq!(b.log("same-id", "stdout").await, "b\n");
    let again = a
        .submit(json!({"id": "same-id", "image": IMAGE, "command": ["echo", "a"]}))
        .await;
    assert_eq!(
        (again.status, again.body["jobId"].as_str()),
        (200, Some("same-id")),
        "same id, same job"
    );
    let fast = b
        .post(
            "/api/v1/run",
            &json!({"id": "fast-1", "image": IMAGE, "command": ["echo", "fb"]}),
        )
        .await;
    assert_eq!(
        (fast.status, fast.body["jobId"].as_str(), fast.body["stdout"].as_str()),
        (200, Some("fast-1"), Some("fb\n"))
    );
    let all: Vec<String> = root.get("/api/v1/jobs").await.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap().to_string())
        .collect();
    assert!(
        all.contains(&"team-a.same-id".to_string()) && all.contains(&"team-b.same-id".to_string()),
        "{all:?}"
    );

    // Roles: a read key reads its tenant's jobs and changes nothing; fleet changes are admin only.
    assert_eq!(reader.get(&format!("/api/v1/jobs/{ja}")).await.status, 200);
    assert_eq!(reader.get(&format!("/api/v1/jobs/{jb}")).await.status, 404);
    let r = reader.submit(sh("true")).await;
    assert_eq!((r.status, r.code()), (403, "FORBIDDEN"), "{:?}", r.body);
    assert_eq!(
        reader
            .post(&format!("/api/v1/jobs/{ja}/cancel"), &json!({}))
            .await
            .status,
        403
    );
    let drain = format!("/api/v1/workers/{}/drain", dcc.worker_id);
    let undrain = format!("/api/v1/workers/{}/undrain", dcc.worker_id);
    assert_eq!(a.post(&drain, &json!({})).await.status, 403);
    assert_eq!(root.post(&drain, &json!({})).await.status, 202);
    assert_eq!(a.post(&undrain, &json!({})).await.status, 403);
    assert_eq!(root.post(&undrain, &json!({})).await.status, 202);

    // The WebSocket: `*` streams only the caller's own jobs; another tenant's id is unknown.
    let mut wa = ws(&dcc, "ka").await;
    wa.send(Message::Text(json!({"subscribe": "*"}).to_string().into()))
        .await
        .unwrap();
    wa.send(Message::Text(json!({"subscribe": [jb]}).to_string().into()))
        .await
        .unwrap();
    let m = dcc_e2e::ws_next(&mut wa).await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("NOT_FOUND")),
        "{m}"
    );
    // Its own `same-id`, in its own spelling.
    wa.send(Message::Text(json!({"subscribe": ["same-id"]}).to_string().into()))
        .await
        .unwrap();
    let m = dcc_e2e::ws_next(&mut wa).await;
    assert_eq!(
        (m["type"].as_str(), m["job"]["jobId"].as_str()),
        (Some("finished"), Some("same-id")),
        "{m}"
    );
    assert_eq!(m["job"]["stdoutUrl"], "/api/v1/jobs/same-id/stdout");
    let jb2 = b.submit_id(sh("echo b2")).await;
    let ja2 = a.submit_id(sh("echo a2")).await;
    loop {
        let m = dcc_e2e::ws_next(&mut wa).await;
        let id = m["jobId"]
            .as_str()
            .or(m["job"]["jobId"].as_str())
            .unwrap_or_default()
            .to_string();
        assert_ne!(id, jb2, "team-a saw team-b's job: {m}");
        if m["type"] == "finished" && id == ja2 {
            break;
        }
    }
}

#[tokio::test]
async fn the_rate_limit_answers_429_and_recovers_and_keys_reload_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    std::fs::write(&file, dcc_e2e::keys_file(&[("team-b", "submit", "kb", Some((1.0, 2)))])).unwrap();
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_API_KEYS_FILE", file.display())
        .start()
        .await;
    let b = dcc.api().with_key("kb");
    assert_eq!(b.submit(sh("true")).await.status, 201);
    assert_eq!(b.submit(sh("true")).await.status, 201);
    let r = b
        .http
        .post(format!("{}/api/v1/jobs", b.base))
        .bearer_auth("kb")
        .json(&sh("true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "RATE_LIMITED");
    assert_eq!(
        b.get("/api/v1/jobs").await.body["jobs"].as_array().unwrap().len(),
        2,
        "a refused submit created a job"
    );
    eventually(Duration::from_secs(5), "the bucket to refill", || async {
        (b.submit(sh("true")).await.status == 201).then_some(())
    })
    .await;

    // Rotation: a new key works and the old one stops, without a restart.
    std::fs::write(&file, dcc_e2e::keys_file(&[("team-b", "submit", "kb-2", None)])).unwrap();
    let b2 = dcc.api().with_key("kb-2");
    eventually(Duration::from_secs(15), "the new key to work", || async {
        (b2.get("/api/v1/jobs").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(b.get("/api/v1/jobs").await.status, 401);
    assert_eq!(
        b2.get("/api/v1/jobs").await.body["jobs"].as_array().unwrap().len(),
        3,
        "same tenant, same jobs"
    );
    assert!(!dcc.log().contains("kb-2"), "a key reached the log");
}

#[tokio::test]
async fn a_tenant_at_its_quota_is_refused_until_its_jobs_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let mut keys: Value = serde_json::from_str(&dcc_e2e::keys_file(&[
        ("team-a", "submit", "ka", None),
        ("team-b", "submit", "kb", None),
    ]))
    .unwrap();
    keys["keys"][0]["maxActiveJobs"] = json!(2);
    std::fs::write(&file, keys.to_string()).unwrap();
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_API_KEYS_FILE", file.display())
        .start()
        .await;
    let (a, b) = (dcc.api().with_key("ka"), dcc.api().with_key("kb"));
    let first = a.submit_id(sh("true")).await;
    a.submit_id(sh("true")).await;
    let r = a.submit(sh("true")).await;
    assert_eq!((r.status, r.code()), (429, "QUOTA_EXCEEDED"), "{:?}", r.body);
    // Each tenant's queue view counts its own jobs; metrics (every tenant named) are admin only.
    let qa = a.get("/api/v1/queues").await.body;
    let qb = b.get("/api/v1/queues").await.body;
    assert_eq!(
        (qa["cpu"]["queued"].as_u64(), qb["cpu"]["queued"].as_u64()),
        (Some(2), Some(0)),
        "{qa} {qb}"
    );
    assert_eq!(a.get("/metrics").await.status, 403);
    // Another tenant is not affected; an ended job gives room back.
    assert_eq!(b.submit(sh("true")).await.status, 201);
    assert_eq!(
        a.post(&format!("/api/v1/jobs/{first}/cancel"), &json!({})).await.status,
        202
    );
    assert_eq!(a.submit(sh("true")).await.status, 201);
}

/// `admin` (every plain key's tenant) and `local` (a keyless server's, and the owner of the jobs
/// from before keys were turned on) are DCC's own: a keys-file entry of either name would read,
/// cancel and delete their jobs. Such a file stops the server at start with a clear error.
#[tokio::test]
async fn internal_tenant_names_are_refused_at_start() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    for name in ["admin", "local"] {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, dcc_e2e::keys_file(&[(name, "read", "k", None)])).unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let mut child = std::process::Command::new(dcc_e2e::dcc_bin())
            .arg("server")
            .env("DCC_REDIS_URL", redis.url())
            .env("DCC_LISTEN", format!("127.0.0.1:{}", dcc_e2e::free_port()))
            .env("DCC_STORAGE", dir.path())
            .env("DCC_TMP_DIR", dir.path())
            .env("DISABLE_WORKER", "true")
            .env("DCC_API_KEYS_FILE", &file)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        // A server that starts runs until stopped: give it a deadline, then stop it.
        let exited = eventually(Duration::from_secs(20), "the server to stop or listen", || {
            let s = child.try_wait().unwrap();
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            async move { s.map(Some).or_else(|| said.contains("API listening").then_some(None)) }
        })
        .await;
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let Some(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("started with a key named {name}: {said}");
        };
        assert!(!status.success(), "{said}");
        assert!(
            said.contains("DCC_API_KEYS_FILE") && said.contains("reserved") && said.contains(name),
            "{said}"
        );
    }
}
