//! Completion webhooks, tried as a receiver would see them: a real HTTP receiver on loopback
//! (allowed with `DCC_NOTIFY_ALLOW`), signatures checked with the documented recipe, receivers
//! that are down, failing or hanging, and servers killed in the middle.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "test-secret-0123456789abcdef";

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Post {
    headers: HeaderMap,
    body: Bytes,
}

impl Post {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// The receiver's check, as docs/webhooks.md tells it: HMAC-SHA256 over
    /// `<X-DCC-Timestamp>.<X-DCC-Delivery>.<raw body>` with the shared secret, compared in
    /// constant time.
    fn signed_with(&self, secret: &str) -> bool {
        let ts = self.header("x-dcc-timestamp");
        let Some(hex_sig) = self.header("x-dcc-signature").strip_prefix("sha256=") else {
            return false;
        };
        let Ok(sig) = hex::decode(hex_sig) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(self.header("x-dcc-delivery").as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        mac.verify_slice(&sig).is_ok()
    }
}

/// A webhook receiver on 127.0.0.1: records every POST; answers 500 to the first `fail_first`,
/// and never answers while `hang` is set.
#[derive(Clone, Default)]
struct Receiver {
    posts: Arc<Mutex<Vec<Post>>>,
    fail_first: Arc<AtomicU32>,
    hang: Arc<AtomicU32>,
    /// POSTs answered 200.
    accepted: Arc<AtomicU32>,
}

impl Receiver {
    /// Listens on `port` (0: any); returns its address.
    async fn listen(&self, port: u16) -> std::net::SocketAddr {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    r.posts.lock().unwrap().push(Post { headers, body });
    if r.hang.load(Ordering::SeqCst) > 0 {
        std::future::pending::<()>().await;
    }
    if r.fail_first.load(Ordering::SeqCst) > 0 {
        r.fail_first.fetch_sub(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "receiver busy, try later");
    }
    r.accepted.fetch_add(1, Ordering::SeqCst);
    (StatusCode::OK, "ok")
}

/// A server that sends webhooks to loopback.
fn with_webhooks(b: dcc_e2e::DccBuilder) -> dcc_e2e::DccBuilder {
    b.env("DCC_NOTIFY_SECRET", SECRET)
        .env("DCC_NOTIFY_ALLOW", "127.0.0.1/32")
        .env("DCC_NOTIFY_BACKOFF_MS", "200")
        .env("DCC_NOTIFY_TIMEOUT_SECS", "1")
}

/// Waits until the job's delivery reaches `state`; returns the job view.
async fn notify_state(api: &dcc_e2e::Api, id: &str, state: &str, secs: u64) -> Value {
    eventually(Duration::from_secs(secs), &format!("notify.state {state}"), || async {
        let v = api.job(id).await;
        (v["notify"]["state"] == state).then_some(v)
    })
    .await
}

/// A queued job with a webhook, cancelled at once: an end without a worker.
async fn cancelled_job(api: &dcc_e2e::Api, url: &str) -> String {
    let id = api
        .submit_id(json!({"image": IMAGE, "command": ["true"], "notify": {"url": url}}))
        .await;
    let a = api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(
        (a.status, &a.body["status"]),
        (202, &json!("cancelled")),
        "{:?}",
        a.body
    );
    id
}

/// Nothing left to send: the outbox is empty (so no later POST can come).
async fn outbox_empty(redis: &Redis) {
    eventually(Duration::from_secs(10), "the outbox empties", || async {
        let mut c = redis.conn().await;
        let n: u64 = redis::cmd("ZCARD")
            .arg("{dcc}:outbox")
            .query_async(&mut c)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await
}

#[tokio::test]
async fn a_finished_job_posts_its_view_once_signed() {
    let redis = Redis::start();
    let rx = Receiver::default();
    let addr = rx.listen(0).await;
    let dcc = with_webhooks(Dcc::builder(Role::Server, &redis)).start().await;
    let api = dcc.api();
    let url = format!("http://{addr}/hook?token=abc");
    let id = api
        .submit_id(
            json!({"image": IMAGE, "command": ["sh", "-c", "echo hi; exit 3"], "notify": {"url": url},
            "meta": {"run": 7}}),
        )
        .await;
    let queued = api.job(&id).await;
    assert_eq!(queued["notify"]["url"], url.as_str());
    let v = notify_state(&api, &id, "delivered", 60).await;
    assert_eq!(v["notify"]["attempts"], 1);
    assert!(v["notify"]["lastError"].is_null(), "{v}");
    assert!(v["notify"]["lastAttemptAt"].is_string(), "{v}");

    let posts = rx.posts();
    assert_eq!(posts.len(), 1, "one POST per finished job");
    assert_eq!(rx.accepted.load(Ordering::SeqCst), 1);
    let p = &posts[0];
    assert!(p.signed_with(SECRET), "the signature checks out");
    assert!(
        !p.signed_with("another-secret-0123456789"),
        "and only with the deployment's secret"
    );
    let ts: i64 = p.header("x-dcc-timestamp").parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - ts).abs() < 120, "a current timestamp: {ts} vs {now}");
    // `<tenant>/<job id>/<created ms>`: unique across tenants and re-used ids.
    let delivery = p.header("x-dcc-delivery");
    let created = delivery
        .strip_prefix(&format!("local/{id}/"))
        .unwrap_or_else(|| panic!("{delivery}"));
    assert!(created.parse::<u64>().is_ok(), "{delivery}");
    assert_eq!(p.header("x-dcc-attempt"), "1");
    assert_eq!(p.header("content-type"), "application/json");
    let body = p.json();
    assert_eq!(body["jobId"], id.as_str());
    assert_eq!(body["status"], "failed");
    assert_eq!(body["exitCode"], 3);
    assert_eq!(body["meta"]["run"], 7);
    assert_eq!(body["stdoutUrl"], format!("/api/v1/jobs/{id}/stdout"));

    // No duplicate once delivered: nothing is left to send, and nothing more arrives.
    outbox_empty(&redis).await;
    let m = api.get_bytes("/metrics").await.1;
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.lines()
            .any(|l| l.starts_with("dcc_webhook_deliveries_total{result=\"delivered\"} 1")),
        "{m}"
    );
    assert!(m.lines().any(|l| l == "dcc_webhook_outbox 0"), "{m}");
    assert_eq!(rx.posts().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_was_down_or_failing_gets_it_later_once() {
    let redis = Redis::start();
    let dcc = with_webhooks(Dcc::builder(Role::ApiOnly, &redis)).start().await;
    let api = dcc.api();
    // Down: nothing listens on the port yet.
    let port = dcc_e2e::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let id = cancelled_job(&api, &url).await;
    let v = eventually(Duration::from_secs(20), "two failed tries", || async {
        let v = api.job(&id).await;
        (v["notify"]["attempts"].as_u64() >= Some(2) && v["notify"]["state"] == "pending").then_some(v)
    })
    .await;
    let err = v["notify"]["lastError"].as_str().unwrap_or_default().to_string();
    assert!(err.contains("POST failed"), "{v}");
    assert!(
        !err.contains("127.0.0.1"),
        "no URL in the error (it may carry a token): {err}"
    );
    // Up, but busy twice: 503, 503, then 200.
    let rx = Receiver::default();
    rx.fail_first.store(2, Ordering::SeqCst);
    rx.listen(port).await;
    let v = notify_state(&api, &id, "delivered", 60).await;
    let posts = rx.posts();
    assert_eq!(posts.len(), 3, "two refused, one accepted");
    assert!(posts[0].header("x-dcc-delivery").starts_with(&format!("local/{id}/")));
    assert!(
        posts
            .iter()
            .all(|p| p.header("x-dcc-delivery") == posts[0].header("x-dcc-delivery") && p.signed_with(SECRET))
    );
    let attempts: Vec<u64> = posts
        .iter()
        .map(|p| p.header("x-dcc-attempt").parse().unwrap())
        .collect();
    assert!(attempts.windows(2).all(|w| w[0] < w[1]), "{attempts:?}");
    assert_eq!(v["notify"]["attempts"].as_u64(), attempts.last().copied());
    assert_eq!(posts[2].json()["status"], "cancelled");
    outbox_empty(&redis).await;
    assert_eq!(rx.posts().len(), 3);

    // A receiver that keeps failing: given up after DCC_NOTIFY_MAX_ATTEMPTS, with its answer.
    drop(dcc);
    let dcc = with_webhooks(Dcc::builder(Role::ApiOnly, &redis))
        .env("DCC_NOTIFY_MAX_ATTEMPTS", "2")
        .start()
        .await;
    let api = dcc.api();
    rx.fail_first.store(100, Ordering::SeqCst);
    let id = cancelled_job(&api, &url).await;
    let v = notify_state(&api, &id, "failed", 30).await;
    assert_eq!(v["notify"]["attempts"], 2);
    let err = v["notify"]["lastError"].as_str().unwrap();
    assert!(
        err.contains("503") && err.contains("receiver busy") && err.contains("giving up"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_restart_mid_retry_or_mid_post_loses_no_delivery() {
    let redis = Redis::start();
    let port = dcc_e2e::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    // Mid-retry: the receiver is down, the server dies between tries.
    let mut a = with_webhooks(Dcc::builder(Role::ApiOnly, &redis)).start().await;
    let id = cancelled_job(&a.api(), &url).await;
    eventually(Duration::from_secs(20), "a failed try", || async {
        let v = a.api().job(&id).await;
        (v["notify"]["attempts"].as_u64() >= Some(1) && v["notify"]["state"] == "pending").then_some(())
    })
    .await;
    a.kill();
    let rx = Receiver::default();
    rx.hang.store(1, Ordering::SeqCst);
    rx.listen(port).await;
    // Mid-POST: the next server's POST hangs (the receiver got it, never answered) and that
    // server dies too; its delivery lease runs out and a third one delivers.
    let mut b = with_webhooks(Dcc::builder(Role::ApiOnly, &redis)).start().await;
    eventually(Duration::from_secs(20), "the POST arrives", || async {
        (!rx.posts().is_empty()).then_some(())
    })
    .await;
    b.kill();
    rx.hang.store(0, Ordering::SeqCst);
    let c = with_webhooks(Dcc::builder(Role::ApiOnly, &redis)).start().await;
    let v = notify_state(&c.api(), &id, "delivered", 60).await;
    // The unanswered POST (or, on a slow machine, two: the second server's POST may time out and
    // be tried again before it is killed) and the one that was accepted.
    let posts = rx.posts();
    assert!(posts.len() >= 2, "{} POSTs", posts.len());
    assert!(posts[0].header("x-dcc-delivery").starts_with(&format!("local/{id}/")));
    assert_eq!(rx.accepted.load(Ordering::SeqCst), 1);
    assert!(
        posts
            .iter()
            .all(|p| p.header("x-dcc-delivery") == posts[0].header("x-dcc-delivery") && p.signed_with(SECRET))
    );
    let last = posts.last().unwrap();
    assert_eq!(
        v["notify"]["attempts"].as_u64(),
        last.header("x-dcc-attempt").parse().ok()
    );
    outbox_empty(&redis).await;
    assert_eq!(rx.posts().len(), posts.len(), "nothing after the accepted one");
}

#[tokio::test]
async fn webhooks_reach_only_allowed_addresses_and_need_a_secret() {
    let redis = Redis::start();
    let rx = Receiver::default();
    let addr = rx.listen(0).await;
    // Signing secret, no allow-list: public receivers only.
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_NOTIFY_SECRET", SECRET)
        .env("DCC_NOTIFY_BACKOFF_MS", "200")
        .start()
        .await;
    let api = dcc.api();
    for url in [
        "http://169.254.169.254/latest/meta-data/".to_string(),
        format!("http://{addr}/hook"),
        "http://[::ffff:127.0.0.1]/hook".to_string(),
        "http://2130706433/hook".to_string(),
        "ftp://example.org/hook".to_string(),
        "not a url".to_string(),
    ] {
        let a = api.submit(json!({"image": IMAGE, "notify": {"url": url}})).await;
        assert_eq!((a.status, a.code()), (400, "INVALID_JOB"), "{url}: {:?}", a.body);
        assert_eq!(a.body["error"]["field"], "notify.url", "{url}: {:?}", a.body);
    }
    let a = api
        .submit(json!({"image": IMAGE, "notify": {"url": "https://example.org/", "secret": "x"}}))
        .await;
    assert_eq!((a.status, a.code()), (400, "INVALID_JOB"), "{:?}", a.body);
    let a = api
        .post(
            "/api/v1/run",
            &json!({"image": IMAGE, "notify": {"url": "http://10.0.0.1/"}}),
        )
        .await;
    assert_eq!(
        (a.status, a.code()),
        (400, "INVALID_JOB"),
        "fast jobs too: {:?}",
        a.body
    );
    // A name that resolves to loopback passes the submit check; its delivery is refused when the
    // name resolves, for good, and the receiver hears nothing.
    let id = cancelled_job(&api, &format!("http://localhost:{}/hook", addr.port())).await;
    let v = notify_state(&api, &id, "failed", 30).await;
    assert_eq!(v["notify"]["attempts"], 1, "{v}");
    let err = v["notify"]["lastError"].as_str().unwrap();
    assert!(err.contains("not public") && err.contains("DCC_NOTIFY_ALLOW"), "{err}");
    assert!(rx.posts().is_empty());
    drop(dcc);

    // No secret: jobs with notify are refused, saying why.
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let a = dcc
        .api()
        .submit(json!({"image": IMAGE, "notify": {"url": "https://example.org/hook"}}))
        .await;
    assert_eq!((a.status, a.code()), (400, "INVALID_JOB"), "{:?}", a.body);
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DCC_NOTIFY_SECRET")
    );
    // A secret too short to be safe stops the server at start.
    let out = std::process::Command::new(dcc_e2e::dcc_bin())
        .arg("server")
        .env("DCC_NOTIFY_SECRET", "short")
        .env("DCC_REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DCC_NOTIFY_SECRET"));
}

/// A tenant's webhook names the job as the tenant does: its own client-chosen id (stored as
/// `<tenant>.<id>`), in the header, the body and the links.
#[tokio::test]
async fn a_tenants_webhook_speaks_its_own_ids() {
    let redis = Redis::start();
    let rx = Receiver::default();
    let addr = rx.listen(0).await;
    let dcc = with_webhooks(Dcc::builder(Role::ApiOnly, &redis))
        .keys(&[("team-a", "submit", "ka", None), ("team-b", "submit", "kb", None)])
        .start()
        .await;
    let url = format!("http://{addr}/hook");
    // Both tenants pick the id `x1`, and team-b points its webhook at team-a's receiver.
    for key in ["ka", "kb"] {
        let api = dcc.api().with_key(key);
        let r = api
            .submit(json!({"id": "x1", "image": IMAGE, "command": ["true"], "notify": {"url": url}}))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let c = api.post("/api/v1/jobs/x1/cancel", &json!({})).await;
        assert_eq!(c.status, 202, "{:?}", c.body);
        notify_state(&api, "x1", "delivered", 30).await;
    }
    let posts = rx.posts();
    assert_eq!(posts.len(), 2);
    for (post, tenant) in posts.iter().zip(["team-a", "team-b"]) {
        assert!(post.signed_with(SECRET));
        let body = post.json();
        // The body names the tenant; each sees its own spelling of the id.
        assert_eq!((&body["tenant"], &body["jobId"]), (&json!(tenant), &json!("x1")));
        assert_eq!(body["stdoutUrl"], "/api/v1/jobs/x1/stdout");
        let delivery = post.header("x-dcc-delivery");
        assert!(delivery.starts_with(&format!("{tenant}/x1/")), "{delivery}");
    }
    // Distinct delivery ids: a receiver deduplicating on them keeps both.
    assert_ne!(posts[0].header("x-dcc-delivery"), posts[1].header("x-dcc-delivery"));
    // The delivery id is signed: team-b's POST cannot be passed off under team-a's id.
    let mut forged = posts[1].clone();
    forged
        .headers
        .insert("x-dcc-delivery", posts[0].headers["x-dcc-delivery"].clone());
    assert!(!forged.signed_with(SECRET), "a swapped delivery id still verified");
}
