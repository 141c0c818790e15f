//! What a hostile or careless job cannot do: capabilities it keeps, reserved variables, images
//! outside the allow-list, pulls that hang, and the sandbox runtime setting; and what a hostile
//! web page cannot do through a browser (the 2018 GET routes, DNS rebinding). (URL inputs and
//! WebSocket limits are in `contract.rs` and `live.rs`.)

use std::time::Duration;

use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually, sh};
use serde_json::json;

/// Capability numbers from linux/capability.h.
const CHOWN: u32 = 0;
const SETUID: u32 = 7;
const SETPCAP: u32 = 8;
const NET_BIND_SERVICE: u32 = 10;
const NET_RAW: u32 = 13;
const SYS_CHROOT: u32 = 18;
const MKNOD: u32 = 27;
const AUDIT_WRITE: u32 = 29;
const SETFCAP: u32 = 31;

fn cap_eff(status: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {status}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[tokio::test]
async fn a_job_keeps_only_the_capabilities_batch_work_needs() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    for network in [false, true] {
        let mut job = sh("grep Cap /proc/self/status; mknod /tmp/n c 1 3 && echo MKNOD-WORKED; true");
        job["parameters"] = json!({"network": network});
        let v = api.run(job).await;
        assert_eq!(v["status"], "succeeded", "{v}");
        let out = api.log(v["jobId"].as_str().unwrap(), "stdout").await;
        let eff = cap_eff(&out);
        for (name, bit) in [
            ("NET_RAW", NET_RAW),
            ("MKNOD", MKNOD),
            ("AUDIT_WRITE", AUDIT_WRITE),
            ("SETFCAP", SETFCAP),
            ("SYS_CHROOT", SYS_CHROOT),
            ("SETPCAP", SETPCAP),
            ("NET_BIND_SERVICE", NET_BIND_SERVICE),
        ] {
            assert_eq!(eff & (1 << bit), 0, "network={network}: {name} kept: {out}");
        }
        assert_ne!(eff & (1 << CHOWN), 0, "CHOWN dropped: {out}");
        assert_ne!(eff & (1 << SETUID), 0, "SETUID dropped: {out}");
        assert!(!out.contains("MKNOD-WORKED"), "a device node was made: {out}");
    }
}

#[tokio::test]
async fn nvidia_variables_are_reserved() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();
    for var in ["NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"] {
        let a = api.submit(json!({"image": IMAGE, "env": {var: "all"}})).await;
        assert_eq!((a.status, a.code()), (400, "INVALID_JOB"), "{:?}", a.body);
        assert_eq!(a.body["error"]["field"], format!("env.{var}"));
    }
}

#[tokio::test]
async fn images_outside_the_allow_list_never_run() {
    let redis = Redis::start();
    // The API refuses at submit…
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_IMAGE_ALLOW", "dcc-*,ghcr.io/team/*")
        .start()
        .await;
    let api = dcc.api();
    let a = api.submit(json!({"image": "someone/miner:latest"})).await;
    assert_eq!((a.status, a.code()), (400, "INVALID_JOB"), "{:?}", a.body);
    assert_eq!(a.body["error"]["field"], "image");
    assert_eq!(api.run(sh("echo allowed")).await["status"], "succeeded");
    drop(dcc);
    // …and a worker with its own list refuses what a laxer API server let through.
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let _worker = Dcc::builder(Role::Worker, &redis)
        .storage(&server.storage)
        .env("DCC_IMAGE_ALLOW", "ghcr.io/team/*")
        .start()
        .await;
    let v = server.api().run(sh("echo never")).await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("IMAGE_NOT_ALLOWED")),
        "{v}"
    );
}

/// A registry that accepts connections and never answers: the pull is cut at its limit and the
/// slot comes back, instead of hanging for the job's whole duration.
#[tokio::test]
async fn a_hanging_pull_is_cut_at_its_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            open.push(s);
        }
    });
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_PULL_TIMEOUT_SECS", 2)
        .start()
        .await;
    let api = dcc.api();
    let v = tokio::time::timeout(
        Duration::from_secs(20),
        api.run(json!({"image": format!("127.0.0.1:{port}/stuck:1")})),
    )
    .await
    .expect("a hanging pull is cut within 20 s");
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("IMAGE_NOT_FOUND")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DCC_PULL_TIMEOUT_SECS"),
        "{v}"
    );
    // The slot is free again.
    assert_eq!(api.run(sh("true")).await["status"], "succeeded");
    held.abort();
}

/// A registry that answers every manifest with Docker Hub's rate-limit error: the job fails
/// with its own code and a message saying what to do, not as a missing image.
#[tokio::test]
async fn a_rate_limited_pull_says_so() {
    use axum::http::StatusCode;
    let app = axum::Router::new()
        .route("/v2/", axum::routing::get(|| async { "{}" }))
        .fallback(|| async {
            let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"}]}"#;
            (StatusCode::TOO_MANY_REQUESTS, [("content-type", "application/json")], body)
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let v = dcc
        .api()
        .run(json!({"image": format!("127.0.0.1:{port}/busy:1")}))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("IMAGE_PULL_RATE_LIMITED")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("rate limit") && message.contains("docs/registries.md"),
        "{v}"
    );
    server.abort();
}

#[tokio::test]
async fn the_sandbox_runtime_is_used_and_an_unknown_one_is_refused_at_start() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(dcc_e2e::dcc_bin())
        .arg("worker")
        .env("DCC_REDIS_URL", redis.url())
        .env("DCC_STORAGE", dir.path())
        .env("DCC_WORKER_ID", "t-runtime")
        .env("DCC_TMP_DIR", dir.path())
        .env("DCC_DOCKER_RUNTIME", "no-such-runtime")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with an unknown runtime: {err}");
    assert!(err.contains("DCC_DOCKER_RUNTIME") && err.contains("runc"), "{err}");
    // A runtime the daemon has (runc here; runsc where gVisor is installed) is what the job runs in.
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_DOCKER_RUNTIME", "runc")
        .start()
        .await;
    let id = dcc.api().submit_id(sh("sleep 30")).await;
    let info = dcc_e2e::inspect_job_container(&id).await;
    assert_eq!(info.host_config.unwrap().runtime.as_deref(), Some("runc"));
    dcc.api().post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
}

#[tokio::test]
async fn a_job_no_worker_can_run_never_blocks_the_lane_and_says_why_it_waits() {
    let redis = Redis::start();
    // 2 CPU slots and 1000 MiB for jobs.
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_MEMORY_MB", 1000)
        .start()
        .await;
    let api = dcc.api();
    let mut huge = sh("true");
    huge["parameters"] = json!({"cpus": 3});
    let huge = api.submit_id(huge).await;
    let mut fat = sh("true");
    fat["parameters"] = json!({"memoryMb": 4000});
    let fat = api.submit_id(fat).await;
    let mut small = sh("echo small");
    small["parameters"] = json!({"memoryMb": 100});
    let v = api.run(small).await;
    assert_eq!(v["status"], "succeeded", "the small job behind was delayed: {v}");
    for id in [&huge, &fat] {
        let v = api.job(id).await;
        assert_eq!(
            (v["status"].as_str(), v["waiting"]["reason"].as_str()),
            (Some("queued"), Some("NO_WORKER_FITS")),
            "{v}"
        );
    }
    // Memory is reserved like slots: two 600 MiB jobs never run side by side on 1000 MiB (each
    // runs long enough for the workers view to show the first one's reservation).
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut j = sh("sleep 3");
        j["parameters"] = json!({"memoryMb": 600});
        ids.push(api.submit_id(j).await);
    }
    let a = api.wait_status(&ids[0], "running", Duration::from_secs(30)).await;
    // Capacity shows in the workers view within CAPACITY_BEAT_GAP (0.5 s) of a change.
    let memory = || async {
        let w = api.get("/api/v1/workers").await.body["workers"][0].clone();
        (w["memoryMb"].as_u64(), w["freeMemoryMb"].as_u64())
    };
    eventually(
        Duration::from_secs(5),
        "600 of 1000 MiB reserved in the workers view",
        || async { (memory().await == (Some(1000), Some(400))).then_some(()) },
    )
    .await;
    assert_eq!(api.job(&ids[1]).await["status"], "queued", "both 600 MiB jobs run: {a}");
    let b = api.wait_status(&ids[1], "succeeded", Duration::from_secs(30)).await;
    let a = api.job(&ids[0]).await;
    // As times, not strings: RFC 3339 drops trailing zeros ("58.57Z" is 58.570 s).
    let at = |v: &serde_json::Value, k: &str| {
        time::OffsetDateTime::parse(v[k].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert!(at(&b, "startedAt") >= at(&a, "finishedAt"), "overlapped: {a} {b}");
}

#[tokio::test]
async fn a_declared_worker_shape_refuses_what_no_worker_can_run_at_submit() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_MAX_CPUS", 2)
        .env("DCC_MAX_MEMORY_MB", 4096)
        .env("DCC_MAX_GPUS", 0)
        .start()
        .await;
    let api = dcc.api();
    for (params, field) in [
        (json!({"cpus": 3}), "parameters.cpus"),
        (json!({"memoryMb": 8192}), "parameters.memoryMb"),
        (json!({"gpus": 1}), "parameters.gpus"),
    ] {
        let a = api.submit(json!({"image": IMAGE, "parameters": params})).await;
        assert_eq!((a.status, a.code()), (422, "UNSCHEDULABLE"), "{:?}", a.body);
        assert_eq!(a.body["error"]["field"], field);
    }
    assert_eq!(api.get("/api/v1/jobs").await.body["jobs"], json!([]));
    let ok = api
        .submit(json!({"image": IMAGE, "parameters": {"cpus": 2, "memoryMb": 4096}}))
        .await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
}

#[tokio::test]
async fn outputs_are_bounded_in_bytes_and_in_count() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_MAX_OUTPUT_BYTES", 100_000)
        .start()
        .await;
    let api = dcc.api();
    let v = api.run(sh("head -c 200000 /dev/zero > /outputs/big")).await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("OUTPUT_UPLOAD_FAILED")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("DCC_MAX_OUTPUT_BYTES"),
        "{v}"
    );
    drop(dcc);
    // Many empty files: bounded by count, not bytes.
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let v = api
        .run(sh("i=0; while [ $i -le 10000 ]; do : > /outputs/f$i; i=$((i+1)); done"))
        .await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("OUTPUT_UPLOAD_FAILED")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("10000 output files"),
        "{v}"
    );
}

/// Without `network`, a job's container is created with `NetworkDisabled` (cheaper to start than
/// `NetworkMode: none`): the same isolation — only `lo`, no route to anywhere — while a job that
/// asks for a network gets an interface and a default route (so the check can tell).
#[tokio::test]
async fn a_job_without_network_has_only_loopback_and_no_route() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let probe = "ls /sys/class/net | tr '\\n' ' '; echo; grep -vc Iface /proc/net/route; true";
    for network in [false, true] {
        let mut job = sh(probe);
        job["parameters"] = json!({"network": network});
        let v = api.run(job).await;
        let out = api.log(v["jobId"].as_str().unwrap(), "stdout").await;
        let mut lines = out.lines();
        let ifaces: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
        let routes: u32 = lines.next().unwrap_or("0").trim().parse().unwrap();
        if network {
            assert!(ifaces.len() > 1 && routes > 0, "network: {out}");
        } else {
            assert_eq!((ifaces, routes), (vec!["lo"], 0), "{out}");
        }
    }
    let id = api.submit_id(sh("sleep 30")).await;
    let info = dcc_e2e::inspect_job_container(&id).await;
    assert_eq!(info.config.unwrap().network_disabled, Some(true));
    api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
}

/// A GET from a foreign page (a `fetch`, an `<img>`, a link) must not change anything through the
/// 2018 routes, which run every method on GET as 2018 did; a query argument never overrides a
/// path one; the 2018 WebSocket on `/` follows the same Origin rule as `/api/v1/ws`.
#[tokio::test]
async fn cross_site_pages_cannot_drive_the_2018_routes() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();
    let own = format!("http://127.0.0.1:{}", dcc.port);
    let get = |path: &str, headers: &[(&str, &str)]| {
        let mut r = api.http.get(format!("{}{path}", api.base));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let kept = api.submit_id(json!({"id": "x1", "image": IMAGE})).await;
    let job = serde_json::to_string(&json!({"image": IMAGE, "parameters": {"network": true}})).unwrap();
    let submit = format!("/v1/submitJobJson?job={}", urlencode(&job));
    let evil = [("origin", "http://evil.example")];
    // A cross-site fetch carries Origin; an <img> or a link carries only Sec-Fetch-Site.
    let img = [("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "no-cors")];
    let sibling = [("sec-fetch-site", "same-site"), ("sec-fetch-mode", "navigate")];
    for headers in [&evil[..], &img[..], &sibling[..]] {
        for path in [
            submit.as_str(),
            "/v1/deleteAllJobs",
            "/v1/job/kill/x1",
            "/api/rpc/deleteAllJobs",
        ] {
            let r = get(path, headers).await.unwrap();
            assert_eq!(r.status(), 403, "GET {path} with {headers:?}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "ORIGIN_NOT_ALLOWED", "{body}");
        }
    }
    let listed = api.get("/api/v1/jobs").await.body;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(api.job(&kept).await["status"], "queued");
    // A query argument does not override the path's: this asks for the status, nothing else.
    let r = get("/v1/job/status/x1?command=kill", &[]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["result"], "pending");
    assert_eq!(api.job(&kept).await["status"], "queued");
    // The server's own page, a typed URL (Sec-Fetch-Site: none) and non-browsers still may.
    let r = get(
        "/v1/job/status/x1",
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get("/v1/job/status/x1", &[("sec-fetch-site", "none")])
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(&submit, &[]).await.unwrap().status(),
        200,
        "curl keeps 2018's GET routes"
    );
    // The 2018 WebSocket on `/` refuses a foreign Origin, as `/api/v1/ws` does.
    let ws = |origin: &str| {
        let mut req = format!("ws://127.0.0.1:{}/", dcc.port).into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    assert!(
        ws("http://evil.example").await.is_err(),
        "a cross-site 2018 WebSocket was accepted"
    );
    assert!(ws(&own).await.is_ok());
}

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// DNS rebinding: a page on `evil.example` whose name is made to resolve to 127.0.0.1 reaches a
/// keyless server as a same-origin caller (Origin equals Host). A keyless server answers only
/// `Host` values that name it; a keyed one checks `Host` once DCC_PUBLIC_HOSTS lists its names.
#[tokio::test]
async fn a_keyless_server_answers_only_host_names_that_name_it() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_PUBLIC_HOSTS", "dcc.internal")
        .start()
        .await;
    let api = dcc.api();
    let port = dcc.port;
    let with_host = |api: &dcc_e2e::Api, host: String, origin: Option<String>| {
        let mut r = api
            .http
            .post(format!("{}/api/v1/jobs", api.base))
            .header("host", host)
            .json(&json!({"image": IMAGE}));
        if let Some(k) = &api.key {
            r = r.bearer_auth(k);
        }
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    for host in [
        format!("evil.example:{port}"),
        "evil.example".into(),
        format!("localhost.evil.example:{port}"),
    ] {
        let r = with_host(&api, host.clone(), Some(format!("http://{host}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "Host {host}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "HOST_NOT_ALLOWED", "{body}");
    }
    let (s, _) = {
        let r = api
            .http
            .get(format!("{}/api/v1/jobs", api.base))
            .header("host", format!("evil.example:{port}"))
            .send()
            .await
            .unwrap();
        (r.status(), ())
    };
    assert_eq!(s, 421, "reads are refused too: a rebinding page could read every job");
    assert_eq!(api.get("/api/v1/jobs").await.body["jobs"], json!([]));
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost.:{port}"),
        format!("[::1]:{port}"),
        format!("dcc.internal:{port}"),
    ] {
        let r = with_host(&api, host.clone(), Some(format!("http://{host}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "Host {host}");
    }
    // A keyed server sits behind load balancers and proxies with names of their own: the key
    // protects it, and Host is checked only against the names the operator lists.
    let keyed = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_API_KEYS", "k1")
        .env("DCC_REDIS_PREFIX", "keyed")
        .start()
        .await;
    let kapi = keyed.api().with_key("k1");
    let r = with_host(&kapi, "dcc.example.com".into(), None).await.unwrap();
    assert_eq!(r.status(), 201);
    let listed = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_API_KEYS", "k1")
        .env("DCC_REDIS_PREFIX", "listed")
        .env("DCC_PUBLIC_HOSTS", "dcc.example.com")
        .start()
        .await;
    let lapi = listed.api().with_key("k1");
    assert_eq!(
        with_host(&lapi, "dcc.example.com".into(), None).await.unwrap().status(),
        201
    );
    assert_eq!(
        with_host(&lapi, "evil.example".into(), None).await.unwrap().status(),
        421
    );
}
