//! Fast jobs, WebSocket live status and event-driven waits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use dcc_e2e::{Dcc, IMAGE, Redis, Role, eventually, sh};
use dcc_shared::clock::REDIS_TIME;
use dcc_shared::job::{JobState, QueueName, RunStats};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::{Claim, Claimant};
use dcc_shared::queue::finish::{Finished, Outcome};
use dcc_shared::queue::lease::Lease;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use dcc_e2e::Ws;

async fn connect(dcc: &Dcc) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/api/v1/ws", dcc.port))
        .await
        .expect("websocket connects");
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

#[tokio::test]
async fn fast_job_answers_inline_byte_exact() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let blob: Vec<u8> = (0..=255u8).rev().cycle().take(10_000).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
    let a = api
        .post(
            "/api/v1/run",
            &json!({"image": IMAGE, "command": ["sh", "-c", "cp /inputs/b.bin /outputs/b.bin; echo out; echo err >&2"],
                    "inputs": [{"name": "b.bin", "value": b64, "encoding": "base64"}]}),
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let v = a.body;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["fast"], true);
    assert_eq!(v["stdout"], "out\n");
    assert_eq!(v["stderr"], "err\n");
    assert_eq!(v["outputs"][0]["name"], "b.bin");
    assert_eq!(v["outputs"][0]["encoding"], "base64");
    let got = base64::engine::general_purpose::STANDARD
        .decode(v["outputs"][0]["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(got, blob);
    // Its files never touched storage.
    let id = v["jobId"].as_str().unwrap();
    assert!(dcc.storage.objects(&format!("jobs/{id}/")).await.is_empty());
    // The standard routes serve it too while its result lives.
    assert_eq!(api.log(id, "stdout").await, "out\n");
    assert_eq!(api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/b.bin")).await.1, blob);
}

#[tokio::test]
async fn fast_job_jumps_ahead_of_queued_standard_jobs() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis).env("DCC_CPUS", 1).start().await;
    let api = dcc.api();
    let blocker = api.submit_id(sh("sleep 2")).await;
    api.wait_status(&blocker, "running", Duration::from_secs(20)).await;
    let mut standard = Vec::new();
    for i in 0..20 {
        standard.push(api.submit_id(sh(&format!("echo {i}"))).await);
    }
    let fast = api.post("/api/v1/run", &sh("echo fast")).await;
    assert_eq!(fast.status, 200, "{:?}", fast.body);
    let fast_started = fast.body["startedAt"].as_str().unwrap().to_string();
    for id in &standard {
        let v = api.wait_status(id, "succeeded", Duration::from_secs(60)).await;
        assert!(
            v["startedAt"].as_str().unwrap() > fast_started.as_str(),
            "{id} started before the fast job"
        );
    }
}

#[tokio::test]
async fn fast_job_limits_and_timeouts() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_FAST_MAX_INLINE_BYTES", 1000)
        .env("DCC_MAX_WAIT_SECS", 1)
        .start()
        .await;
    let api = dcc.api();
    let big = api
        .post(
            "/api/v1/run",
            &json!({"image": IMAGE, "inputs": [{"name": "a", "value": "x".repeat(1001)}]}),
        )
        .await;
    assert_eq!((big.status, big.code()), (413, "TOO_LARGE"));
    let url = api
        .post(
            "/api/v1/run",
            &json!({"image": IMAGE, "inputs": [{"name": "a", "url": "http://127.0.0.1:1/x"}]}),
        )
        .await;
    assert_eq!((url.status, url.code()), (400, "INVALID_JOB"));
    assert_eq!(url.body["error"]["field"], "inputs[0].url");
    let slow = api.post("/api/v1/run", &sh("sleep 30")).await;
    assert_eq!((slow.status, slow.code()), (504, "WAIT_TIMEOUT"));
    let id = slow.body["jobId"]
        .as_str()
        .expect("the 504 carries the job id")
        .to_string();
    // The job goes on and can be cancelled like any other.
    assert_eq!(
        api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await.status,
        202
    );
}

#[tokio::test]
async fn fast_job_leaves_nothing_in_redis_after_its_ttl() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_FAST_RESULT_TTL", "1s")
        .env("DCC_LEASE_SECS", 3)
        .env("DCC_HEARTBEAT_SECS", 1)
        .start()
        .await;
    let api = dcc.api();
    let v = api
        .post(
            "/api/v1/run",
            &json!({"image": IMAGE, "command": ["sh", "-c", "cat /inputs/i > /outputs/o"],
                                      "inputs": [{"name": "i", "value": "data"}]}),
        )
        .await;
    assert_eq!(v.status, 200);
    let id = v.body["jobId"].as_str().unwrap().to_string();
    assert!(
        redis.all_keys().await.iter().any(|k| k.contains(&id)),
        "the result lives for its TTL"
    );
    eventually(Duration::from_secs(15), "every key of the fast job to go", || async {
        let mut c = redis.conn().await;
        let in_keys = redis.all_keys().await.iter().any(|k| k.contains(&id));
        let indexed: Option<f64> = redis::cmd("ZSCORE")
            .arg("{dcc}:jobs")
            .arg(&id)
            .query_async(&mut c)
            .await
            .unwrap();
        let expiring: Option<f64> = redis::cmd("ZSCORE")
            .arg("{dcc}:expiry")
            .arg(&id)
            .query_async(&mut c)
            .await
            .unwrap();
        (!in_keys && indexed.is_none() && expiring.is_none()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn websocket_sees_each_job_queued_running_finished_in_order() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let mut ws = connect(&dcc).await;
    send(&mut ws, json!({"subscribe": "*"})).await;
    // A round trip on the socket proves the subscription is in place.
    send(&mut ws, json!({"subscribe": ["does-not-exist"]})).await;
    let e = dcc_e2e::ws_next(&mut ws).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("NOT_FOUND"))
    );
    let mut ids = Vec::new();
    let submits: Vec<_> = (0..10)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.submit_id(sh(&format!("echo {i}"))).await })
        })
        .collect();
    for s in submits {
        ids.push(s.await.unwrap());
    }
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    while seen
        .values()
        .filter(|v| v.last().map(String::as_str) == Some("finished"))
        .count()
        < 10
    {
        let m = dcc_e2e::ws_next(&mut ws).await;
        let (id, what) = match m["type"].as_str().unwrap() {
            "status" => (
                m["jobId"].as_str().unwrap().to_string(),
                m["status"].as_str().unwrap().to_string(),
            ),
            "finished" => (m["job"]["jobId"].as_str().unwrap().to_string(), "finished".to_string()),
            other => panic!("unexpected {other}: {m}"),
        };
        seen.entry(id).or_default().push(what);
    }
    for id in &ids {
        assert_eq!(seen[id], vec!["queued", "running", "finished"], "job {id}");
    }
}

/// A WebSocket following `*` reads the records of jobs that end together in a few requests, not
/// one each: 30 jobs finished back to back reach it as 30 `finished` messages, and the server
/// sent Redis far fewer than 30 requests meanwhile (it read them in batches).
#[tokio::test]
async fn a_star_follower_reads_the_jobs_that_end_together_at_once() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();
    for i in 0..30 {
        api.submit_id(sh(&format!("echo {i}"))).await;
    }
    let (queue, leases) = hold_every_job(&redis, 30).await;
    let mut ws = connect(&dcc).await;
    send(&mut ws, json!({"subscribe": "*"})).await;
    send(&mut ws, json!({"subscribe": ["does-not-exist"]})).await;
    assert_eq!(dcc_e2e::ws_next(&mut ws).await["code"], "NOT_FOUND");

    let before = requests(&redis);
    end_each(&queue, &leases).await;
    let mut finished = std::collections::HashSet::new();
    while finished.len() < leases.len() {
        let m = dcc_e2e::ws_next(&mut ws).await;
        if m["type"] == "finished" {
            assert_eq!(m["job"]["status"], "succeeded", "{m}");
            finished.insert(m["job"]["jobId"].as_str().unwrap().to_string());
        }
    }
    let by_server = server_requests_since(&redis, before, leases.len());
    assert!(
        by_server < 15,
        "the server sent {by_server} requests while 30 jobs ended: their records one at a time?"
    );
}

/// A tenant's connection following `*` learns who owns the jobs that end together in one read,
/// as it reads their records: 30 jobs of two tenants end back to back, it gets the `finished`
/// of its own 15 (in its spelling) and none of the others', and the server sent Redis far fewer
/// requests than jobs.
#[tokio::test]
async fn a_tenants_star_follower_learns_the_owners_of_jobs_that_end_together_at_once() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .keys(&[("team-a", "submit", "ka", None), ("team-b", "submit", "kb", None)])
        .start()
        .await;
    let (a, b) = (dcc.api().with_key("ka"), dcc.api().with_key("kb"));
    let (mut mine, mut theirs) = (std::collections::HashSet::new(), std::collections::HashSet::new());
    for i in 0..15 {
        // Chosen ids: `a-i` is stored as `team-a.a-i`, and team-a must be sent `a-i`.
        let job = |id: String| json!({"id": id, "image": IMAGE, "command": ["true"]});
        assert_eq!(a.submit(job(format!("a-{i}"))).await.status, 201);
        mine.insert(format!("a-{i}"));
        theirs.insert(b.submit_id(sh("true")).await);
    }
    let (queue, mut leases) = hold_every_job(&redis, 30).await;
    // The other tenant's jobs end first: once the last of team-a's arrives, every event before
    // it was handled.
    leases.sort_by_key(|l| l.job.as_str().starts_with("team-a."));
    let url = format!("ws://127.0.0.1:{}/api/v1/ws?access_token=ka", dcc.port);
    let mut ws = tokio_tungstenite::connect_async(url).await.expect("websocket").0;
    send(&mut ws, json!({"subscribe": "*"})).await;

    let before = requests(&redis);
    end_each(&queue, &leases).await;
    let mut finished = std::collections::HashSet::new();
    while finished.len() < mine.len() {
        let m = dcc_e2e::ws_next(&mut ws).await;
        assert_eq!(m["type"], "finished", "{m}");
        let id = m["job"]["jobId"].as_str().unwrap().to_string();
        assert!(mine.contains(&id) && !theirs.contains(&id), "team-a was sent {m}");
        finished.insert(id);
    }
    let by_server = server_requests_since(&redis, before, leases.len());
    assert!(
        by_server < 15,
        "the server sent {by_server} requests while 30 jobs ended: their owners one at a time?"
    );
}

/// A `*` follower has no list of jobs to re-read after missing events, so it is told: the
/// server's subscription to Redis is cut, and the follower gets a `resync` message when it is
/// lost and another once it is back, before the events of the jobs submitted after that (a
/// client that re-lists on the last one misses nothing).
#[tokio::test]
async fn a_star_follower_is_told_when_it_missed_events() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = dcc.api();
    let mut ws = connect(&dcc).await;
    send(&mut ws, json!({"subscribe": "*"})).await;
    let first = api.submit_id(sh("true")).await;
    let m = dcc_e2e::ws_next(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["jobId"].as_str()),
        (Some("status"), Some(first.as_str())),
        "{m}"
    );

    // The node serving the events channel (on a cluster the server holds a shard subscription
    // there): its subscribed clients are cut, and come back under new ids.
    let channel = Queue::new(&redis.url(), "dcc").unwrap().event_channels().remove(0);
    let node = &redis.nodes()[redis.primary_of(&channel).expect("a node serves the events")];
    let cut = subscribers(node);
    assert!(!cut.is_empty(), "the server had no subscription to cut");
    for id in &cut {
        node.text(&format!("CLIENT KILL ID {id}"));
    }
    let m = dcc_e2e::ws_next(&mut ws).await;
    assert_eq!(m["type"], "resync", "when lost: {m}");
    eventually(Duration::from_secs(30), "the server subscribes again", || {
        let back = subscribers(node).iter().any(|id| !cut.contains(id));
        async move { back.then_some(()) }
    })
    .await;
    let second = api.submit_id(sh("true")).await;
    let m = dcc_e2e::ws_next(&mut ws).await;
    assert_eq!(m["type"], "resync", "when back: {m}");
    let m = dcc_e2e::ws_next(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["jobId"].as_str()),
        (Some("status"), Some(second.as_str())),
        "{m}"
    );
}

/// The ids of `node`'s clients subscribed to a channel or a shard channel (`CLIENT LIST`'s
/// `sub` and `ssub`).
fn subscribers(node: &dcc_shared::testing::Node) -> Vec<u64> {
    let list = node.text("CLIENT LIST").unwrap_or_default();
    list.lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|f| matches!(f.split_once('='), Some(("sub" | "ssub", n)) if n != "0"))
        })
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("id="))?.parse().ok())
        .collect()
}

/// This test as the worker: claims `n` jobs (every one queued) and holds them.
async fn hold_every_job(redis: &Redis, n: usize) -> (Queue, Vec<Lease>) {
    let queue = Queue::new(&redis.url(), "dcc").unwrap();
    let who = Claimant {
        worker: "test-worker",
        free_slots: 64,
        total_slots: 64,
        free_memory_mb: 1 << 30,
        total_memory_mb: 1 << 30,
        lease: Duration::from_secs(60),
    };
    let mut leases = Vec::new();
    while leases.len() < n {
        match queue.claim(QueueName::Cpu, &who, REDIS_TIME).await.unwrap() {
            Claim::Claimed(c) => leases.push(c.lease),
            other => panic!("{n} jobs queued, claim {} found {other:?}", leases.len() + 1),
        }
    }
    (queue, leases)
}

/// Ends each of `leases`, one after the other, as succeeded.
async fn end_each(queue: &Queue, leases: &[Lease]) {
    let outcome = Outcome {
        state: JobState::Succeeded,
        exit_code: Some(0),
        error: None,
        image_digest: None,
        stats: RunStats::default(),
        outputs: Vec::new(),
    };
    for l in leases {
        let done = queue
            .finish(l, &outcome, Duration::from_secs(3600), REDIS_TIME)
            .await
            .unwrap();
        assert_eq!(done, Finished::Recorded);
    }
}

/// Requests Redis read since `before` that the server sent (its background loops' few
/// included): all of them, less the test's own `finishes` and the `INFO` that counts them.
fn server_requests_since(redis: &Redis, before: u64, finishes: usize) -> u64 {
    requests(redis) - before - finishes as u64 - 1
}

/// Requests Redis has read so far (`total_reads_processed`: a pipeline read at once is one).
fn requests(redis: &Redis) -> u64 {
    redis
        .info("stats")
        .lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO stats has total_reads_processed")
}

#[tokio::test]
async fn hundred_clients_follow_one_job_and_late_subscribers_get_finished() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let id = api.submit_id(sh("sleep 2; echo done")).await;
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut ws = connect(&dcc).await;
        send(&mut ws, json!({"subscribe": [id]})).await;
        // Each subscription answers with where the job is now (one read of its record).
        let first = dcc_e2e::ws_next(&mut ws).await;
        assert_eq!(first["type"], "status", "{first}");
        clients.push(ws);
    }
    let reads_before = record_reads(&redis).await;
    let waits: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                loop {
                    let m = dcc_e2e::ws_next(&mut ws).await;
                    if m["type"] == "finished" {
                        return m["job"]["status"].as_str().unwrap().to_string();
                    }
                }
            })
        })
        .collect();
    for w in waits {
        assert_eq!(w.await.unwrap(), "succeeded");
    }
    // The end reached 100 connections with one shared read of the record, not one each (the
    // rest is the worker's and the metrics' own reads).
    let reads = record_reads(&redis).await - reads_before;
    println!("reads of job records for one finished event followed by 100 connections: {reads}");
    assert!(reads <= 10, "{reads} reads of job records for one finished event");
    // After the end: `finished` at once.
    let mut late = connect(&dcc).await;
    send(&mut late, json!({"subscribe": [id]})).await;
    let m = dcc_e2e::ws_next(&mut late).await;
    assert_eq!(
        (m["type"].as_str(), m["job"]["status"].as_str()),
        (Some("finished"), Some("succeeded"))
    );
    // Asked again on the same connection: answered again (a client waiting on it must not hang).
    send(&mut late, json!({"subscribe": [id]})).await;
    let m = dcc_e2e::ws_next(&mut late).await;
    assert_eq!(
        (m["type"].as_str(), m["job"]["jobId"].as_str()),
        (Some("finished"), Some(id.as_str()))
    );
}

#[tokio::test]
async fn an_oversized_websocket_message_is_refused_without_buffering_it() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let before = dcc.peak_rss();
    let mut ws = connect(&dcc).await;
    let huge = format!("{{\"subscribe\": [\"{}\"]}}", "x".repeat(10 << 20));
    // The server closes the connection; the send itself may or may not see it first.
    let _ = ws.send(Message::Text(huge.into())).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an answer");
    assert!(
        !matches!(outcome, Some(Ok(Message::Text(_)))),
        "a 10 MB message was read as a command: {outcome:?}"
    );
    let grew = dcc.peak_rss().saturating_sub(before);
    println!("peak RSS before {before} B, growth {grew} B");
    assert!(
        grew < 8 << 20,
        "the server's peak memory grew by {grew} B for a refused 10 MB message"
    );
    // The server still serves others.
    let mut other = connect(&dcc).await;
    send(&mut other, json!({"subscribe": ["nope"]})).await;
    assert_eq!(dcc_e2e::ws_next(&mut other).await["code"], "NOT_FOUND");
}

#[tokio::test]
async fn events_cross_servers_through_redis() {
    let redis = Redis::start();
    let a = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let b = Dcc::builder(Role::Server, &redis).storage(&a.storage).start().await;
    let mut ws = connect(&a).await;
    send(&mut ws, json!({"subscribe": "*"})).await;
    send(&mut ws, json!({"subscribe": ["nope"]})).await;
    assert_eq!(dcc_e2e::ws_next(&mut ws).await["code"], "NOT_FOUND");
    let id = b.api().submit_id(sh("echo b")).await;
    loop {
        let m = dcc_e2e::ws_next(&mut ws).await;
        if m["type"] == "finished" {
            assert_eq!(m["job"]["jobId"], json!(id));
            assert_eq!(m["job"]["workerId"], json!(b.worker_id));
            break;
        }
    }
}

#[tokio::test]
async fn waits_answer_as_soon_as_the_job_ends() {
    let redis = Redis::start();
    let dcc = Dcc::server(&redis).await;
    let api = dcc.api();
    let mut job = sh("sleep 1");
    job["wait"] = json!(true);
    let a = api.submit(job).await;
    let answered = std::time::SystemTime::now();
    assert_eq!(a.status, 200);
    let finished = a.body["finishedAt"].as_str().unwrap();
    let lag = lag_ms(finished, answered);
    assert!(lag < 500, "wait: true answered {lag} ms after the end");

    let id = api.submit_id(sh("sleep 1")).await;
    let t = Instant::now();
    let v = api.get(&format!("/api/v1/jobs/{id}/wait?timeoutSecs=30")).await;
    let answered = std::time::SystemTime::now();
    assert_eq!(v.body["status"], "succeeded");
    let lag = lag_ms(v.body["finishedAt"].as_str().unwrap(), answered);
    assert!(
        lag < 500,
        "/wait answered {lag} ms after the end ({:?} in all)",
        t.elapsed()
    );
}

/// Milliseconds between an RFC 3339 UTC time (as the API writes it) and `at`.
fn lag_ms(rfc: &str, at: std::time::SystemTime) -> i64 {
    let t = rfc.trim_end_matches('Z');
    let (date, time) = t.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let h: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let epoch_ms = ((days * 24 + h[0]) * 60 + h[1]) * 60_000 + h[2] * 1000 + ms;
    at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - epoch_ms
}

/// How many `HGETALL`s (reads of a job record) Redis has served so far.
async fn record_reads(redis: &Redis) -> u64 {
    redis.command_calls("hgetall").0
}

/// A flood of fast jobs with large outputs meets the Redis budget for fast data: 503 `BUSY` with
/// `Retry-After`, Redis stays writable for everything else, and room comes back as results expire.
#[tokio::test]
async fn fast_jobs_past_the_redis_budget_get_503_busy_and_redis_stays_writable() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_FAST_MAX_REDIS_BYTES", 3_000_000)
        .env("DCC_FAST_MAX_OUTPUT_BYTES", 1_000_000)
        .env("DCC_FAST_RESULT_TTL", 3)
        .env("DCC_LEASE_SECS", 3)
        .env("DCC_HEARTBEAT_SECS", 1)
        .start()
        .await;
    let api = dcc.api();
    let big = json!({"image": IMAGE, "command": ["sh", "-c", "yes | head -c 900000 > /outputs/o"]});
    let mut busy = None;
    for _ in 0..10 {
        let r = api
            .http
            .post(format!("{}/api/v1/run", api.base))
            .json(&big)
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            busy = Some((
                r.headers().get("retry-after").cloned(),
                r.json::<Value>().await.unwrap(),
            ));
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let (retry, body) = busy.expect("the budget was never reached");
    assert!(retry.is_some(), "no Retry-After");
    assert_eq!(body["error"]["code"], "BUSY", "{body}");
    let mut conn = redis.conn().await;
    let used: i64 = redis::cmd("GET")
        .arg("{dcc}:fast:bytes")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(used <= 3_000_000, "fast data over its budget: {used}");
    // Redis takes other writes: standard jobs are accepted and run.
    let id = api.submit_id(sh("echo standard")).await;
    api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    // Results expire, their bytes come back, fast jobs are admitted again.
    eventually(Duration::from_secs(30), "room for fast jobs again", || async {
        (api.post("/api/v1/run", &big).await.status == 200).then_some(())
    })
    .await;
}
