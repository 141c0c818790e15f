//! Every error of the contract, provoked over HTTP: codes, statuses, the `field` to blame, and
//! that nothing is left behind by a refused request.

use std::time::Duration;

use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually, sh};
use serde_json::{Value, json};

async fn expect(api: &dcc_e2e::Api, job: Value, status: u16, code: &str, field: Option<&str>) {
    let a = api.submit(job.clone()).await;
    assert_eq!((a.status, a.code()), (status, code), "for {job}: {:?}", a.body);
    assert!(
        a.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {:?}",
        a.body
    );
    if let Some(f) = field {
        assert_eq!(a.body["error"]["field"], f, "for {job}: {:?}", a.body);
    }
}

#[tokio::test]
async fn validation_errors() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();

    let a = api
        .post_raw("/api/v1/jobs", b"{not json".to_vec(), "application/json")
        .await;
    assert_eq!((a.status, a.code()), (400, "INVALID_JSON"));
    let a = api
        .post_raw("/api/v1/jobs", b"[1,2]".to_vec(), "application/json")
        .await;
    assert_eq!((a.status, a.code()), (400, "INVALID_JOB"));

    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "image"),
        (json!({"image": ""}), "image"),
        (json!({"image": "a b"}), "image"),
        (json!({"image": IMAGE, "command": "ls"}), "command"),
        (json!({"image": IMAGE, "command": ["ls", 3]}), "command[1]"),
        (json!({"image": IMAGE, "command": []}), "command"),
        (json!({"image": IMAGE, "cmd": ["ls"]}), "cmd"),
        (json!({"image": IMAGE, "parameters": {"cpus": -1}}), "parameters.cpus"),
        (json!({"image": IMAGE, "parameters": {"cpus": 0}}), "parameters.cpus"),
        (
            json!({"image": IMAGE, "parameters": {"cpus": 100000}}),
            "parameters.cpus",
        ),
        (
            json!({"image": IMAGE, "parameters": {"memoryMb": -5}}),
            "parameters.memoryMb",
        ),
        (
            json!({"image": IMAGE, "parameters": {"memoryMb": 1}}),
            "parameters.memoryMb",
        ),
        (
            json!({"image": IMAGE, "parameters": {"maxDurationSecs": 0}}),
            "parameters.maxDurationSecs",
        ),
        (
            json!({"image": IMAGE, "parameters": {"maxDurationSecs": 1e12}}),
            "parameters.maxDurationSecs",
        ),
        (
            json!({"image": IMAGE, "parameters": {"maxAttempts": 0}}),
            "parameters.maxAttempts",
        ),
        (json!({"image": IMAGE, "parameters": {"gpus": 1000}}), "parameters.gpus"),
        (
            json!({"image": IMAGE, "parameters": {"turbo": true}}),
            "parameters.turbo",
        ),
        (json!({"image": IMAGE, "priority": "urgent"}), "priority"),
        (json!({"image": IMAGE, "env": {"A=B": "x"}}), "env.A=B"),
        (json!({"image": IMAGE, "workingDir": "relative"}), "workingDir"),
        (json!({"image": IMAGE, "id": "../x"}), "id"),
        (json!({"image": IMAGE, "meta": [1]}), "meta"),
        (
            json!({"image": IMAGE, "inputs": [{"name": "", "value": "x"}]}),
            "inputs[0].name",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "/etc/passwd", "value": "x"}]}),
            "inputs[0].name",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "a/../../b", "value": "x"}]}),
            "inputs[0].name",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "a\u{0}b", "value": "x"}]}),
            "inputs[0].name",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "x".repeat(256), "value": "x"}]}),
            "inputs[0].name",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "a", "value": "x"}, {"name": "a", "value": "y"}]}),
            "inputs[1].name",
        ),
        (json!({"image": IMAGE, "inputs": [{"name": "a"}]}), "inputs[0].value"),
        (
            json!({"image": IMAGE, "inputs": [{"name": "a", "value": "x", "url": "http://x"}]}),
            "inputs[0].value",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "a", "value": "!!", "encoding": "base64"}]}),
            "inputs[0].value",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "a", "value": "x", "encoding": "hex"}]}),
            "inputs[0].encoding",
        ),
        (
            json!({"image": IMAGE, "inputs": [{"name": "a", "url": "ftp://x"}]}),
            "inputs[0].url",
        ),
    ];
    for (job, field) in cases {
        expect(&api, job, 400, "INVALID_JOB", Some(field)).await;
    }
    // Nothing was queued or staged by any of them.
    assert_eq!(api.get("/api/v1/jobs").await.body["jobs"], json!([]));
    assert!(
        !dcc.storage.path().join("jobs").exists()
            || std::fs::read_dir(dcc.storage.path().join("jobs")).unwrap().count() == 0
    );
}

#[tokio::test]
async fn size_limits_give_413() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_MAX_BODY_BYTES", 2000)
        .env("DCC_MAX_INPUT_BYTES", 100)
        .start()
        .await;
    let api = dcc.api();
    expect(
        &api,
        json!({"image": IMAGE, "meta": {"pad": "x".repeat(3000)}}),
        413,
        "TOO_LARGE",
        None,
    )
    .await;
    expect(
        &api,
        json!({"image": IMAGE, "inputs": [{"name": "big", "value": "y".repeat(101)}]}),
        413,
        "TOO_LARGE",
        Some("inputs[0].value"),
    )
    .await;
    let form = reqwest::multipart::Form::new()
        .text("job", json!({"image": IMAGE}).to_string())
        .part("big.bin", reqwest::multipart::Part::bytes(vec![7u8; 5000]));
    let a = api.post_multipart("/api/v1/jobs", form).await;
    assert_eq!((a.status, a.code()), (413, "TOO_LARGE"), "{:?}", a.body);
    let staged = dcc.storage.path().join("jobs");
    assert!(
        !staged.exists()
            || std::fs::read_dir(&staged)
                .unwrap()
                .all(|e| { std::fs::read_dir(e.unwrap().path()).unwrap().count() == 0 }),
        "a refused upload left files behind"
    );
}

/// A one-answer-per-connection HTTP server on `ip` (any port) sending `response` to every request.
async fn tiny_http(ip: &str, response: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

fn ok_body(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn redirect_to(location: &str) -> String {
    format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
}

#[tokio::test]
async fn url_inputs_are_fetched_or_refused() {
    let redis = Redis::start();
    // 127.0.0.1 stands for an internal source the operator opened on purpose.
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_URL_INPUT_ALLOW", "127.0.0.1/32")
        .start()
        .await;
    let api = dcc.api();
    // The server's own /healthz is a reachable URL with known content.
    let url = format!("{}/healthz", api.base);
    let v = api
        .run(json!({"image": IMAGE, "command": ["cat", "/inputs/h.json"], "inputs": [{"name": "h.json", "url": url}]}))
        .await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(
        api.log(v["jobId"].as_str().unwrap(), "stdout").await,
        r#"{"status":"ok"}"#
    );
    let missing = format!("{}/no-such-file", api.base);
    expect(
        &api,
        json!({"image": IMAGE, "inputs": [{"name": "m", "url": missing}]}),
        400,
        "INPUT_FETCH_FAILED",
        Some("inputs[0].url"),
    )
    .await;
    let dead = format!("http://127.0.0.1:{}/x", dcc_e2e::free_port());
    expect(
        &api,
        json!({"image": IMAGE, "inputs": [{"name": "m", "url": dead}]}),
        400,
        "INPUT_FETCH_FAILED",
        Some("inputs[0].url"),
    )
    .await;
    // An allowed source that redirects somewhere not allowed: refused at the hop, and nothing of
    // what the internal service holds reaches the client.
    let secret = tiny_http("127.0.0.2", ok_body("SECRET-METADATA")).await;
    let hop = tiny_http("127.0.0.1", redirect_to(&format!("http://{secret}/latest/meta-data/"))).await;
    let a = api
        .submit(json!({"image": IMAGE, "inputs": [{"name": "m", "url": format!("http://{hop}/file")}]}))
        .await;
    assert_eq!((a.status, a.code()), (400, "INPUT_FETCH_FAILED"), "{:?}", a.body);
    assert!(!a.body.to_string().contains("SECRET"), "{:?}", a.body);
    assert_eq!(api.get("/api/v1/jobs").await.body["jobs"].as_array().unwrap().len(), 1);
}

/// With no allow-list, only public sources: internal addresses are refused whether written as
/// literals (any spelling), reached through a name, or through a redirect.
#[tokio::test]
async fn url_inputs_never_reach_internal_addresses_by_default() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();
    let secret = tiny_http("127.0.0.1", ok_body("SECRET-METADATA")).await;
    let port = secret.port();
    for literal in [
        format!("http://127.0.0.1:{port}/"),
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_string(),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://2130706433:{port}/"),
        "http://10.0.0.1/".to_string(),
        "http://100.64.0.1/".to_string(),
        "http://0.0.0.0/".to_string(),
    ] {
        let a = api
            .submit(json!({"image": IMAGE, "inputs": [{"name": "m", "url": literal}]}))
            .await;
        assert_eq!((a.status, a.code()), (400, "INVALID_JOB"), "{literal}: {:?}", a.body);
        assert_eq!(a.body["error"]["field"], "inputs[0].url");
    }
    // A name that resolves to loopback is refused at connect time, by the address dialled.
    let a = api
        .submit(json!({"image": IMAGE, "inputs": [{"name": "m", "url": format!("http://localhost:{port}/")}]}))
        .await;
    assert_eq!((a.status, a.code()), (400, "INPUT_FETCH_FAILED"), "{:?}", a.body);
    assert!(
        a.body["error"]["message"].as_str().unwrap().contains("not public"),
        "{:?}",
        a.body
    );
    assert!(!a.body.to_string().contains("SECRET"));
    assert_eq!(api.get("/api/v1/jobs").await.body["jobs"], json!([]));
}

#[tokio::test]
async fn api_keys_guard_every_route_but_the_probes() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_API_KEYS", "k1,k2")
        .start()
        .await;
    let api = dcc.api();
    assert_eq!(api.get("/healthz").await.status, 200);
    // Load balancers probe readiness without a key.
    assert_eq!(api.get("/readyz").await.status, 200);
    for path in ["/api/v1/jobs", "/api/v1/queues", "/api/v1/workers", "/api/v1/jobs/x"] {
        let a = api.get(path).await;
        assert_eq!((a.status, a.code()), (401, "UNAUTHORIZED"), "{path}");
        let a = api.with_key("wrong").get(path).await;
        assert_eq!(a.status, 401, "{path}");
    }
    let a = api.submit(sh("true")).await;
    assert_eq!(a.status, 401);
    assert_eq!(api.with_key("k2").get("/api/v1/queues").await.status, 200);
    assert_eq!(api.with_key("k1").submit(sh("true")).await.status, 201);
}

/// `dcc server` refuses to serve other machines without API keys unless told to, and says why.
#[tokio::test]
async fn a_reachable_server_without_keys_refuses_to_start_unless_allowed() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[(&str, &str)]| {
        let port = dcc_e2e::free_port();
        let mut cmd = std::process::Command::new(dcc_e2e::dcc_bin());
        cmd.arg("server")
            .env("DCC_REDIS_URL", redis.url())
            .env("DCC_LISTEN", format!("0.0.0.0:{port}"))
            .env("DCC_STORAGE", dir.path())
            .env("DISABLE_WORKER", "true")
            .env_remove("DCC_API_KEYS")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        (cmd.spawn().unwrap(), port)
    };
    let out = run(&[]).0.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {err}");
    assert!(
        err.contains("DCC_API_KEYS") && err.contains("DCC_ALLOW_UNAUTHENTICATED"),
        "{err}"
    );
    for opt_out in [("DCC_ALLOW_UNAUTHENTICATED", "true"), ("DCC_API_KEYS", "k")] {
        let (mut child, port) = run(&[opt_out]);
        let api = dcc_e2e::Api::new(format!("http://127.0.0.1:{port}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            assert!(child.try_wait().unwrap().is_none(), "{opt_out:?}: it exited");
            let ok = api.http.get(format!("{}/healthz", api.base)).send().await;
            if ok.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{opt_out:?}: the server did not answer"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().unwrap();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn redis_down_gives_503_and_writes_nothing() {
    let mut redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();
    assert_eq!(api.get("/readyz").await.status, 200);
    redis.kill();
    let a = api
        .submit(json!({"image": IMAGE, "inputs": [{"name": "a", "value": "staged then removed"}]}))
        .await;
    assert_eq!((a.status, a.code()), (503, "UNAVAILABLE"), "{:?}", a.body);
    let jobs = dcc.storage.path().join("jobs");
    let leftovers: Vec<_> = walk(&jobs);
    assert!(leftovers.is_empty(), "staged files left behind: {leftovers:?}");
    let r = api.get("/readyz").await;
    assert_eq!((r.status, r.code()), (503, "UNAVAILABLE"));
    assert_eq!(api.get("/api/v1/jobs/x").await.status, 503);
    assert_eq!(api.get("/healthz").await.status, 200);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn wait_true_without_a_worker_is_503_no_worker_and_times_out_with_504_and_the_job_id() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_MAX_WAIT_SECS", 1)
        .start()
        .await;
    let api = dcc.api();
    // No worker at all: a client that would wait is told at once, and nothing is created.
    let mut job = sh("true");
    job["wait"] = json!(true);
    let a = api.submit(job.clone()).await;
    assert_eq!((a.status, a.code()), (503, "NO_WORKER"), "{:?}", a.body);
    let r = api.post("/api/v1/run", &sh("true")).await;
    assert_eq!((r.status, r.code()), (503, "NO_WORKER"), "{:?}", r.body);
    assert_eq!(api.get("/api/v1/jobs").await.body["jobs"], json!([]));
    // Without `wait` it queues (a worker, or the scaler, may come), and says why it waits.
    let id = api.submit_id(sh("true")).await;
    let v = api.job(&id).await;
    assert_eq!(
        (v["status"].as_str(), v["waiting"]["reason"].as_str()),
        (Some("queued"), Some("NO_WORKER")),
        "{v}"
    );
    let q = api.get("/api/v1/queues").await.body;
    assert_eq!(q["cpu"]["queued"], 1);
    assert!(q["cpu"]["oldestQueuedAgeMs"].as_i64().unwrap() >= 0);
    // A worker that joins later runs it.
    let worker = Dcc::builder(Role::Worker, &redis).storage(&dcc.storage).start().await;
    api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    assert!(api.job(&id).await.get("waiting").is_none(), "only queued jobs wait");
    // A wait that runs out: 504 with the id, the job goes on.
    let mut slow = sh("sleep 3");
    slow["wait"] = json!(true);
    let a = api.submit(slow).await;
    assert_eq!((a.status, a.code()), (504, "WAIT_TIMEOUT"), "{:?}", a.body);
    let slow_id = a.body["jobId"].as_str().expect("the 504 carries jobId").to_string();
    api.wait_status(&slow_id, "succeeded", Duration::from_secs(30)).await;
    let w = api.get("/api/v1/workers").await.body;
    let ws = w["workers"].as_array().unwrap();
    assert_eq!(ws.len(), 1);
    assert_eq!(ws[0]["id"], json!(worker.worker_id));
    assert_eq!(ws[0]["health"], "HEALTHY");
    assert_eq!(ws[0]["cpus"], 2);
    for k in [
        "freeCpuSlots",
        "freeGpus",
        "runningJobs",
        "lastSeen",
        "startedAt",
        "version",
        "gpus",
    ] {
        assert!(!ws[0][k].is_null(), "worker field {k} missing");
    }
}

#[tokio::test]
async fn two_workers_share_the_jobs() {
    let redis = Redis::start();
    let api_server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let storage = api_server.storage.clone();
    let w1 = Dcc::builder(Role::Worker, &redis)
        .storage(&storage)
        .env("DCC_CPUS", 1)
        .start()
        .await;
    let w2 = Dcc::builder(Role::Worker, &redis)
        .storage(&storage)
        .env("DCC_CPUS", 1)
        .start()
        .await;
    let api = api_server.api();
    eventually(Duration::from_secs(10), "two workers registered", || async {
        (api.get("/api/v1/workers").await.body["workers"]
            .as_array()
            .map(Vec::len)
            == Some(2))
        .then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(api.submit_id(sh(&format!("sleep 1; echo {i}"))).await);
    }
    let mut by_worker = std::collections::HashMap::<String, usize>::new();
    for (i, id) in ids.iter().enumerate() {
        let v = api.wait_status(id, "succeeded", Duration::from_secs(60)).await;
        assert_eq!(api.log(id, "stdout").await, format!("{i}\n"));
        *by_worker
            .entry(v["workerId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_worker.len(), 2, "both workers ran jobs: {by_worker:?}");
    assert!(by_worker.contains_key(&w1.worker_id) && by_worker.contains_key(&w2.worker_id));
    dcc_e2e::eventually(std::time::Duration::from_secs(5), "no container left", || async {
        (dcc_e2e::containers_of(&w1.worker_id).is_empty() && dcc_e2e::containers_of(&w2.worker_id).is_empty())
            .then_some(())
    })
    .await;
}

/// Every route the router registers is served (no "no route" 404, no 405) and documented in
/// the served OpenAPI document.
#[tokio::test]
async fn every_route_is_served_and_in_the_openapi_document() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();
    let spec = api.get("/api/v1/openapi.json").await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.body["openapi"], "3.1.0");
    // The configured limits are the bounds the document states.
    let cpus = &spec.body["components"]["schemas"]["ParametersRequest"]["properties"]["cpus"];
    assert!(cpus["maximum"].as_f64().is_some_and(|m| m >= 1.0), "{cpus}");
    for (method, path) in dcc_server::app::api_routes().served() {
        let (method, path) = (method.as_str(), path.as_str());
        assert!(
            spec.body["paths"][path][method].is_object(),
            "{method} {path} is not in the served document"
        );
        let concrete = path.replace("{id}", "x").replace("{path}", "y");
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let a = api.call(m, &concrete, None).await;
        let msg = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(
            !msg.starts_with("no route") && a.status != 405,
            "{method} {path} is not served: {:?}",
            a.body
        );
    }
}

#[tokio::test]
async fn all_inputs_together_and_open_waits_are_bounded() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_MAX_JOB_INPUT_BYTES", 1000)
        .env("DCC_MAX_WAITERS", 1)
        .start()
        .await;
    let api = dcc.api();
    let two = json!({"image": IMAGE, "inputs": [{"name": "a", "value": "x".repeat(600)}, {"name": "b", "value": "y".repeat(600)}]});
    let a = api.submit(two).await;
    assert_eq!((a.status, a.code()), (413, "TOO_LARGE"), "{:?}", a.body);
    assert_eq!(a.body["error"]["field"], "inputs");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DCC_MAX_JOB_INPUT_BYTES")
    );
    assert_eq!(
        api.get("/api/v1/jobs").await.body["jobs"],
        json!([]),
        "nothing half-staged"
    );
    // An open WebSocket holds this process's one permit: a wait is refused at once.
    let id = api.submit_id(sh("true")).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/api/v1/ws", dcc.port))
        .await
        .unwrap();
    let a = api.get(&format!("/api/v1/jobs/{id}/wait?timeoutSecs=1")).await;
    assert_eq!((a.status, a.code()), (503, "BUSY"), "{:?}", a.body);
    let r = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/api/v1/ws", dcc.port)).await;
    assert!(r.is_err(), "a second WebSocket was accepted");
    // Closed: the permit comes back.
    drop(ws);
    eventually(Duration::from_secs(10), "the permit to come back", || async {
        (api.get(&format!("/api/v1/jobs/{id}/wait?timeoutSecs=1")).await.status == 504).then_some(())
    })
    .await;
}

/// A web page the developer visits cannot drive a keyless local stack: cross-site state changes
/// and WebSockets are refused, JSON must say it is JSON; listed origins get CORS.
#[tokio::test]
async fn cross_site_requests_are_refused_and_allowed_origins_get_cors() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_ALLOWED_ORIGINS", "https://app.example")
        .start()
        .await;
    let api = dcc.api();
    let job = serde_json::to_vec(&json!({"image": IMAGE})).unwrap();
    let post = |origin: Option<&str>, ct: &str| {
        let mut r = api
            .http
            .post(format!("{}/api/v1/jobs", api.base))
            .header("content-type", ct)
            .body(job.clone());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let r = post(Some("http://evil.example"), "application/json").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ORIGIN_NOT_ALLOWED");
    // What a cross-site form or a no-preflight fetch can send is not taken as a job.
    for ct in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = post(None, ct).await.unwrap();
        assert_eq!(r.status(), 415, "{ct}");
    }
    assert_eq!(api.get("/api/v1/jobs").await.body["jobs"], json!([]));
    // The server's own page (the dashboard) and an allowed origin may.
    let own = format!("http://127.0.0.1:{}", dcc.port);
    assert_eq!(post(Some(&own), "application/json").await.unwrap().status(), 201);
    let r = post(Some("https://app.example"), "application/json").await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let pre = api
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/jobs", api.base))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-origin"], "https://app.example");
    let pre = api
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/api/v1/jobs", api.base))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 403);
    // WebSockets: browsers apply no CORS to them, so the upgrade checks Origin itself.
    let ws = |origin: &str| {
        let mut req = format!("ws://127.0.0.1:{}/api/v1/ws", dcc.port)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    assert!(
        ws("http://evil.example").await.is_err(),
        "a cross-site WebSocket was accepted"
    );
    assert!(ws("https://app.example").await.is_ok());
    assert!(ws(&own).await.is_ok());
}
