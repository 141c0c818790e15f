//! Worker loss, stale workers, drain, Redis restarts and a chaos run, with real processes.
//! Leases are short here (3 s, heartbeat 1 s) so expiry happens within the test's deadlines.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dcc_e2e::{Dcc, Redis, Role, containers_labelled, containers_of, eventually, sh};
use dcc_shared::events::{Event, Events};
use serde_json::json;

const LEASE_SECS: u64 = 3;

fn worker(redis: &Redis, storage: &dcc_e2e::Store) -> dcc_e2e::DccBuilder {
    Dcc::builder(Role::Worker, redis)
        .storage(storage)
        .env("DCC_LEASE_SECS", LEASE_SECS)
        .env("DCC_HEARTBEAT_SECS", 1)
        .env("DCC_CPUS", 1)
}

async fn api_server(redis: &Redis) -> Dcc {
    Dcc::builder(Role::ApiOnly, redis)
        .env("DCC_LEASE_SECS", LEASE_SECS)
        .env("DCC_HEARTBEAT_SECS", 1)
        .start()
        .await
}

/// Waits until the container of `attempt` of `id` exists: a worker killed before that could have
/// a create request in flight, which dockerd would finish after the test cleaned up.
async fn container_exists(id: &str, attempt: u32) {
    let attempt = attempt.to_string();
    eventually(Duration::from_secs(30), "the attempt's container to exist", || async {
        (!containers_labelled(&[("dcc.job", id), ("dcc.attempt", &attempt)], false).is_empty()).then_some(())
    })
    .await;
}

/// Waits until `id` runs, and returns the worker running it.
async fn running_on(api: &dcc_e2e::Api, id: &str) -> String {
    let v = api.wait_status(id, "running", Duration::from_secs(30)).await;
    v["workerId"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn killed_worker_job_is_rerun_elsewhere() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let mut w1 = worker(&redis, &server.storage).start().await;
    let id = api.submit_id(sh("sleep 2; echo survived")).await;
    assert_eq!(running_on(&api, &id).await, w1.worker_id);
    container_exists(&id, 1).await;
    let w2 = worker(&redis, &server.storage).start().await;
    w1.kill();
    let t = std::time::Instant::now();
    let v = api
        .wait_status(&id, "succeeded", Duration::from_secs(LEASE_SECS + 20))
        .await;
    assert_eq!(v["attempt"], 2);
    assert_eq!(v["workerId"], json!(w2.worker_id));
    assert_eq!(api.log(&id, "stdout").await, "survived\n");
    assert!(
        t.elapsed() < Duration::from_secs(LEASE_SECS + 10),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn repeated_kills_exhaust_attempts_with_worker_lost() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let mut job = sh("sleep 60");
    job["parameters"] = json!({"maxAttempts": 2});
    let id = api.submit_id(job).await;
    for attempt in 1..=2 {
        let mut w = worker(&redis, &server.storage).start().await;
        eventually(Duration::from_secs(30), "the attempt to run", || async {
            let v = api.job(&id).await;
            (v["status"] == "running" && v["attempt"] == attempt).then_some(())
        })
        .await;
        container_exists(&id, attempt).await;
        w.kill();
    }
    let v = api
        .wait_status(&id, "failed", Duration::from_secs(LEASE_SECS + 20))
        .await;
    assert_eq!(v["error"]["code"], "WORKER_LOST");
    assert_eq!(v["attempt"], 2);
}

#[tokio::test]
async fn stale_worker_cannot_overwrite_the_newer_attempt() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let w1 = worker(&redis, &server.storage).start().await;
    let id = api
        .submit_id(sh("sleep 4; echo from-$HOSTNAME > /outputs/who.txt; echo done"))
        .await;
    assert_eq!(running_on(&api, &id).await, w1.worker_id);
    w1.signal("STOP");
    let w2 = worker(&redis, &server.storage).start().await;
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(40)).await;
    assert_eq!(
        (v["attempt"].as_u64(), v["workerId"].as_str()),
        (Some(2), Some(w2.worker_id.as_str()))
    );
    let finished_at = v["finishedAt"].clone();
    let output = api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/who.txt")).await.1;
    w1.signal("CONT");
    // The stale worker learns it lost the lease and removes its container, changing nothing.
    eventually(
        Duration::from_secs(20),
        "the stale worker's container to go",
        || async { containers_of(&w1.worker_id).is_empty().then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(20), "the stale worker to notice", || async {
        w1.log().contains("LeaseLost").then_some(())
    })
    .await;
    let after = api.job(&id).await;
    assert_eq!(after["attempt"], 2);
    assert_eq!(after["workerId"], json!(w2.worker_id));
    assert_eq!(after["finishedAt"], finished_at, "the job finished twice");
    assert_eq!(
        api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/who.txt")).await.1,
        output
    );
    assert!(
        !server.storage.path().join(format!("jobs/{id}/a1")).exists(),
        "the stale attempt's files remain"
    );
}

#[tokio::test]
async fn sigterm_lets_a_running_job_finish() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let mut w = worker(&redis, &server.storage).start().await;
    let id = api.submit_id(sh("sleep 2; echo finished")).await;
    running_on(&api, &id).await;
    w.signal("TERM");
    let after = api.submit_id(sh("echo after")).await;
    let status = w
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the worker exits after its job");
    assert!(status.success(), "{status}");
    let v = api.job(&id).await;
    assert_eq!(v["status"], "succeeded");
    assert_eq!(
        api.job(&after).await["status"],
        "queued",
        "a quiet worker claims nothing new"
    );
    assert!(
        api.get("/api/v1/workers").await.body["workers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(containers_of(&w.worker_id).is_empty());
}

#[tokio::test]
async fn drain_timeout_hands_the_job_back_without_using_an_attempt() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let mut w1 = worker(&redis, &server.storage)
        .env("DCC_DRAIN_TIMEOUT", "1s")
        .start()
        .await;
    let mut job = sh("sleep 3; echo completed");
    job["parameters"] = json!({"maxAttempts": 1});
    let id = api.submit_id(job).await;
    running_on(&api, &id).await;
    w1.signal("TERM");
    let status = w1
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the worker exits after the drain timeout");
    assert!(status.success());
    assert!(
        containers_of(&w1.worker_id).is_empty(),
        "the stopped container was not removed"
    );
    assert_eq!(
        api.job(&id).await["status"],
        "queued",
        "handed back at once, not after a lease"
    );
    let w2 = worker(&redis, &server.storage).start().await;
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(v["workerId"], json!(w2.worker_id));
    assert_eq!(api.log(&id, "stdout").await, "completed\n");
}

#[tokio::test]
async fn drain_requested_through_the_api() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let w = worker(&redis, &server.storage).start().await;
    let id = api.submit_id(sh("sleep 2")).await;
    running_on(&api, &id).await;
    let a = api
        .post(&format!("/api/v1/workers/{}/drain", w.worker_id), &json!({}))
        .await;
    assert_eq!(a.status, 202);
    assert_eq!(api.post("/api/v1/workers/nobody/drain", &json!({})).await.status, 404);
    assert_eq!(api.post("/api/v1/workers/nobody/undrain", &json!({})).await.status, 404);
    eventually(Duration::from_secs(10), "the worker to report DRAINING", || async {
        let ws = api.get("/api/v1/workers").await.body;
        (ws["workers"][0]["health"] == "DRAINING").then_some(())
    })
    .await;
    let next = api.submit_id(sh("true")).await;
    api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    // Drained: still registered (for the scaler), idle, claiming nothing.
    eventually(Duration::from_secs(10), "the drained worker to be idle", || async {
        let ws = api.get("/api/v1/workers").await.body;
        (ws["workers"][0]["runningJobs"] == 0 && ws["workers"][0]["health"] == "DRAINING").then_some(())
    })
    .await;
    let queued = api.job(&next).await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["waiting"]["reason"], "WORKERS_DRAINING", "{queued}");

    // Nothing can run a job now: a client that would wait for one is told at once.
    let at_once = Duration::from_secs(2);
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/run", api.base))
        .json(&sh("echo fast"))
        .timeout(at_once)
        .send()
        .await
        .expect("NO_WORKER within 2 s");
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some(), "{:?}", r.headers());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NO_WORKER", "{body}");
    let mut waiting = sh("echo waited");
    waiting["wait"] = json!(true);
    let a = tokio::time::timeout(at_once, api.submit(waiting))
        .await
        .expect("NO_WORKER within 2 s");
    assert_eq!((a.status, a.code()), (503, "NO_WORKER"), "{:?}", a.body);
    let listed = api.get("/api/v1/jobs").await.body;
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        2,
        "a refused job was created: {listed}"
    );

    // Undrain: the worker claims again, and runs what waited.
    let a = api
        .post(&format!("/api/v1/workers/{}/undrain", w.worker_id), &json!({}))
        .await;
    assert_eq!(
        (a.status, a.body["health"].as_str()),
        (202, Some("HEALTHY")),
        "{:?}",
        a.body
    );
    api.wait_status(&next, "succeeded", Duration::from_secs(30)).await;
    let ws = api.get("/api/v1/workers").await.body;
    assert_eq!(ws["workers"][0]["health"], "HEALTHY");
    let fast = api.post("/api/v1/run", &sh("echo fast")).await;
    assert_eq!(
        (fast.status, fast.body["stdout"].as_str()),
        (200, Some("fast\n")),
        "{:?}",
        fast.body
    );
}

#[tokio::test]
async fn a_fast_job_waiting_when_its_only_worker_drains_is_answered_and_withdrawn() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let w = worker(&redis, &server.storage).start().await;
    // The one slot is busy, so the fast job waits in its lane.
    let busy = api.submit_id(sh("sleep 3")).await;
    running_on(&api, &busy).await;
    let fast = {
        let api = api.clone();
        tokio::spawn(async move {
            api.post(
                "/api/v1/run",
                &json!({"id": "f1", "image": "dcc-busybox:latest", "command": ["true"]}),
            )
            .await
        })
    };
    eventually(Duration::from_secs(10), "the fast job to be queued", || async {
        (api.get("/api/v1/jobs/f1").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(
        api.post(&format!("/api/v1/workers/{}/drain", w.worker_id), &json!({}))
            .await
            .status,
        202
    );
    let t = std::time::Instant::now();
    let a = tokio::time::timeout(Duration::from_secs(20), fast)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!((a.status, a.code()), (503, "NO_WORKER"), "{:?}", a.body);
    assert_eq!(a.body["jobId"], "f1");
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "answered after {:?}",
        t.elapsed()
    );
    // Withdrawn: it never runs after its client got the answer.
    assert_eq!(api.job("f1").await["status"], "cancelled");
}

#[tokio::test]
async fn a_drain_flag_does_not_outlive_its_worker_process() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let mut w = worker(&redis, &server.storage).start().await;
    let wid = w.worker_id.clone();
    assert_eq!(
        api.post(&format!("/api/v1/workers/{wid}/drain"), &json!({}))
            .await
            .status,
        202
    );
    eventually(Duration::from_secs(10), "DRAINING", || async {
        (api.get("/api/v1/workers").await.body["workers"][0]["health"] == "DRAINING").then_some(())
    })
    .await;
    // A crash leaves the flag, but it expires with the dead worker's health key, so the process
    // that takes the id over is not drained by it.
    w.kill();
    let conn = redis.conn().await;
    eventually(
        Duration::from_secs(LEASE_SECS * 3),
        "the old drain flag to expire",
        || async {
            let mut conn = conn.clone();
            let left: Option<String> = redis::cmd("GET")
                .arg(format!("{{dcc}}:drain:{wid}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            left.is_none().then_some(())
        },
    )
    .await;
    let _w2 = worker(&redis, &server.storage).worker_id(&wid).start().await;
    let v = api.run(sh("echo after")).await;
    assert_eq!(
        (v["status"].as_str(), v["workerId"].as_str()),
        (Some("succeeded"), Some(wid.as_str()))
    );
}

#[tokio::test]
async fn redis_restart_with_aof_loses_no_accepted_job() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let server = Dcc::builder(Role::Server, &redis)
        .env("DCC_LEASE_SECS", LEASE_SECS)
        .env("DCC_HEARTBEAT_SECS", 1)
        .start()
        .await;
    let api = server.api();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(api.submit_id(sh(&format!("sleep 1; echo {i}"))).await);
    }
    running_on(&api, &ids[0]).await;
    redis.restart();
    for i in 10..15 {
        // The server reconnects by itself; a submit may be refused while it does (503), never lost.
        let id = eventually(Duration::from_secs(20), "a submit after the restart", || async {
            let a = api.submit(sh(&format!("echo {i}"))).await;
            (a.status == 201).then(|| a.body["jobId"].as_str().unwrap().to_string())
        })
        .await;
        ids.push(id);
    }
    for id in &ids {
        let v = api.wait_status(id, "succeeded", Duration::from_secs(90)).await;
        assert_eq!(v["status"], "succeeded");
    }
}

/// Three workers, 200 short jobs, workers SIGKILLed and restarted at random every few seconds.
#[tokio::test]
async fn chaos_no_job_lost_none_finished_twice() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let events = Events::spawn(&redis.url(), vec![dcc_shared::keys::Keys::new("dcc").events()]);
    let mut rx = events.subscribe();
    loop {
        if let Ok(Ok(Event::Resync)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            break;
        }
    }
    let ids_names: Vec<String> = (0..3)
        .map(|i| format!("t-chaos{i}-{}", dcc_e2e::random_name("")))
        .collect();
    let mut workers = Vec::new();
    for name in &ids_names {
        workers.push(Some(
            worker(&redis, &server.storage)
                .env("DCC_CPUS", 2)
                .worker_id(name)
                .start()
                .await,
        ));
    }
    let total = 200;
    let mut ids = Vec::new();
    for i in 0..total {
        let mut j = sh(&format!("echo {i}"));
        j["parameters"] = json!({"maxAttempts": 10});
        ids.push(api.submit_id(j).await);
    }
    let mut kills = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut rng_state: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    loop {
        let done = dcc_e2e::count_terminal(&api, &ids).await;
        if done == total {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {done}/{total} jobs ended");
        tokio::time::sleep(Duration::from_millis(1500 + next() % 2000)).await;
        if kills < 8 {
            let victim = (next() % 3) as usize;
            if let Some(mut w) = workers[victim].take() {
                w.kill();
                kills += 1;
            }
            let name = ids_names[victim].clone();
            workers[victim] = Some(
                worker(&redis, &server.storage)
                    .env("DCC_CPUS", 2)
                    .worker_id(&name)
                    .start()
                    .await,
            );
        }
    }
    // Count terminal events per job: exactly one each.
    let mut finished: HashMap<String, u32> = HashMap::new();
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        if let Event::Job(ev) = ev
            && ["succeeded", "failed", "timed_out", "cancelled"].contains(&ev.status.as_str())
        {
            *finished.entry(ev.job_id).or_default() += 1;
        }
    }
    let mut retried = 0;
    let mut lost = 0;
    for id in &ids {
        let v = api.job(id).await;
        if v["attempt"].as_u64().unwrap_or(0) > 1 {
            retried += 1;
        }
        if v["status"] != "succeeded" {
            lost += 1;
        }
    }
    let duplicates = finished.values().filter(|n| **n > 1).count();
    let missing_events = ids.iter().filter(|id| !finished.contains_key(id.as_str())).count();
    println!(
        "chaos: jobs={total} kills={kills} retried={retried} lost={lost} duplicates={duplicates} missing_events={missing_events}"
    );
    // Stop the workers gracefully: every container goes.
    for w in workers.iter_mut().flatten() {
        w.signal("TERM");
    }
    for w in workers.iter_mut().flatten() {
        w.wait_exit(Duration::from_secs(30)).await;
    }
    for name in &ids_names {
        assert!(containers_of(name).is_empty(), "containers of {name} left");
    }
    assert_eq!(lost, 0, "jobs did not succeed");
    assert_eq!(duplicates, 0, "jobs finished twice");
    assert_eq!(missing_events, 0, "jobs without a finished event");
    assert!(kills >= 1);
}

#[tokio::test]
async fn unstorable_outputs_fail_the_job_never_succeed() {
    let redis = Redis::start();
    let server = Dcc::server(&redis).await;
    let api = server.api();
    // A file where the attempt's folder must go: every upload of attempt 1 fails.
    std::fs::create_dir_all(server.storage.path().join("jobs/unstorable")).unwrap();
    std::fs::write(server.storage.path().join("jobs/unstorable/a1"), b"in the way").unwrap();
    let mut job = sh("echo result > /outputs/r.txt");
    job["id"] = json!("unstorable");
    let v = api.run(job).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "OUTPUT_UPLOAD_FAILED");
    assert_eq!(v["exitCode"], 0, "the command itself succeeded");
}

#[tokio::test]
async fn low_disk_makes_the_worker_unhealthy_and_idle() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let _w = worker(&redis, &server.storage)
        .env("DCC_DISK_MIN_FREE_PERCENT", 100)
        .start()
        .await;
    let ws = eventually(Duration::from_secs(10), "the worker to report UNHEALTHY", || async {
        let ws = api.get("/api/v1/workers").await.body;
        (ws["workers"][0]["health"] == "UNHEALTHY").then_some(ws)
    })
    .await;
    assert!(
        ws["workers"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("DCC_DISK_MIN_FREE_PERCENT"),
        "{ws}"
    );
    let id = api.submit_id(sh("true")).await;
    // Three heartbeats go by; it claims nothing.
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            assert_eq!(
                api.job(&id).await["status"],
                "queued",
                "an unhealthy worker claimed a job"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_err();
}

/// A unix-socket proxy in front of the real Docker daemon, which the test can cut and restore,
/// or freeze (connections stay open, nothing passes: a stalled daemon) and thaw.
struct DockerProxy {
    path: std::path::PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
    frozen: tokio::sync::watch::Sender<bool>,
}

/// Copies `from` to `to`, holding every chunk while `frozen` is set.
async fn gated_copy(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl DockerProxy {
    fn start(path: std::path::PathBuf) -> Self {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (frozen, gate) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let gate = gate.clone();
                conns.spawn(async move {
                    if let Ok(daemon) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                        let (cr, cw) = client.into_split();
                        let (dr, dw) = daemon.into_split();
                        tokio::join!(gated_copy(cr, dw, gate.clone()), gated_copy(dr, cw, gate));
                    }
                });
            }
        });
        DockerProxy {
            path,
            task: Some(task),
            frozen,
        }
    }

    /// Stalls: every byte either way is held until [`DockerProxy::thaw`].
    fn freeze(&self) {
        let _ = self.frozen.send(true);
    }

    fn thaw(&self) {
        let _ = self.frozen.send(false);
    }

    /// Stops answering: the listener and every open connection close.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test]
async fn docker_outage_makes_the_worker_unhealthy_until_it_recovers() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let mut proxy = DockerProxy::start(sock.clone());
    let _w = worker(&redis, &server.storage)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .start()
        .await;
    let health = || async { api.get("/api/v1/workers").await.body["workers"][0].clone() };
    eventually(Duration::from_secs(10), "HEALTHY", || async {
        (health().await["health"] == "HEALTHY").then_some(())
    })
    .await;
    proxy.cut();
    let w = eventually(Duration::from_secs(10), "UNHEALTHY", || async {
        let w = health().await;
        (w["health"] == "UNHEALTHY").then_some(w)
    })
    .await;
    assert!(w["reason"].as_str().unwrap().contains("Docker"), "{w}");
    let _proxy = DockerProxy::start(sock.clone());
    eventually(Duration::from_secs(10), "HEALTHY again", || async {
        (health().await["health"] == "HEALTHY").then_some(())
    })
    .await;
    let v = api.run(sh("echo back")).await;
    assert_eq!(v["status"], "succeeded");
}

/// A Docker daemon that stalls (answers nothing, closes nothing) for 20 s mid-job costs the job
/// no attempt: leases are renewed apart from every Docker call, the worker reports UNHEALTHY
/// within about a heartbeat and claims nothing, and the job finishes once the daemon answers.
#[tokio::test]
async fn a_stalled_docker_daemon_costs_no_attempt() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let proxy = DockerProxy::start(sock.clone());
    let w = worker(&redis, &server.storage)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .start()
        .await;
    let mut job = sh("sleep 6; echo survived");
    job["parameters"] = json!({"maxAttempts": 1});
    let id = api.submit_id(job).await;
    assert_eq!(running_on(&api, &id).await, w.worker_id);
    proxy.freeze();
    let frozen_at = std::time::Instant::now();
    let seen = eventually(Duration::from_secs(10), "UNHEALTHY", || async {
        let w = api.get("/api/v1/workers").await.body["workers"][0].clone();
        (w["health"] == "UNHEALTHY").then_some(w)
    })
    .await;
    assert!(
        frozen_at.elapsed() < Duration::from_secs(4),
        "took {:?}",
        frozen_at.elapsed()
    );
    assert!(seen["reason"].as_str().unwrap().contains("Docker"), "{seen}");
    let later = api.submit_id(sh("echo later")).await;
    // 20 s of stall: far past the 3 s lease. The job stays this worker's, on its first attempt.
    while frozen_at.elapsed() < Duration::from_secs(20) {
        let v = api.job(&id).await;
        assert_eq!(
            (v["status"].as_str(), v["attempt"].as_u64()),
            (Some("running"), Some(1)),
            "{v}"
        );
        assert_eq!(api.job(&later).await["status"], "queued", "claimed while UNHEALTHY");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    proxy.thaw();
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(
        (v["attempt"].clone(), v["workerId"].clone()),
        (json!(1), json!(w.worker_id)),
        "{v}"
    );
    assert_eq!(api.log(&id, "stdout").await, "survived\n");
    api.wait_status(&later, "succeeded", Duration::from_secs(30)).await;
}

/// A server whose Redis is down at boot listens anyway: probes and clients get answers (503 while
/// Redis is away), and its in-process worker registers and runs jobs once Redis comes up.
#[tokio::test]
async fn server_answers_while_redis_is_down_at_boot() {
    let mut redis = Redis::start();
    redis.kill();
    let dcc = Dcc::builder(Role::Server, &redis).listening_only().start().await;
    let api = dcc.api();
    assert_eq!(api.get("/healthz").await.status, 200);
    let r = api.get("/readyz").await;
    assert_eq!((r.status, r.code()), (503, "UNAVAILABLE"), "{:?}", r.body);
    let a = api.submit(sh("echo hi")).await;
    assert_eq!((a.status, a.code()), (503, "UNAVAILABLE"), "{:?}", a.body);
    redis.restart();
    eventually(Duration::from_secs(30), "the in-process worker to register", || async {
        dcc.log().contains("worker started").then_some(())
    })
    .await;
    assert_eq!(api.get("/readyz").await.status, 200);
    let id = api.submit_id(sh("echo hi")).await;
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(v["workerId"], json!(dcc.worker_id));
    assert_eq!(api.log(&id, "stdout").await, "hi\n");
}

/// Cancel through one server reaches the container on a worker in another process (through the
/// job events in Redis) and stops it within 2 s, the bound the reliability issue sets.
#[tokio::test]
async fn cancel_stops_a_remote_workers_container_within_two_seconds() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let w = worker(&redis, &server.storage).start().await;
    let id = api.submit_id(sh("sleep 60")).await;
    assert_eq!(running_on(&api, &id).await, w.worker_id);
    container_exists(&id, 1).await;
    let running = || !containers_labelled(&[("dcc.job", id.as_str())], true).is_empty();
    eventually(Duration::from_secs(30), "the container to run", || async {
        running().then_some(())
    })
    .await;
    let a = api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(a.status, 202);
    eventually(Duration::from_secs(2), "the container to stop after cancel", || async {
        (!running()).then_some(())
    })
    .await;
    assert_eq!(api.job(&id).await["status"], "cancelled");
}

/// A worker cut off from Redis for a whole lease stops what it can no longer own: the reaper may
/// already have given the job to another worker.
#[tokio::test]
async fn a_worker_cut_off_from_redis_stops_its_containers_after_a_lease() {
    let mut redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let w = worker(&redis, &server.storage).start().await;
    let id = api.submit_id(sh("sleep 60")).await;
    running_on(&api, &id).await;
    container_exists(&id, 1).await;
    redis.kill();
    eventually(
        Duration::from_secs(30),
        "the cut-off worker to remove its container",
        || async { containers_of(&w.worker_id).is_empty().then_some(()) },
    )
    .await;
    assert!(w.log().contains("LeaseExpired"), "{}", w.log());
}

/// Lease deadlines use Redis's clock: a worker whose host clock runs an hour fast (libfaketime)
/// does not reap the leases of the others.
#[tokio::test]
async fn a_host_with_a_fast_clock_cannot_reap_other_workers_leases() {
    let lib = ["x86_64", "aarch64"]
        .iter()
        .map(|a| format!("/usr/lib/{a}-linux-gnu/faketime/libfaketime.so.1"))
        .find(|p| std::path::Path::new(p).exists())
        .expect("libfaketime (Debian package faketime; scripts/test.sh installs it)");
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let w1 = worker(&redis, &server.storage).start().await;
    let id = api.submit_id(sh("sleep 6; echo done")).await;
    assert_eq!(running_on(&api, &id).await, w1.worker_id);
    let fast = worker(&redis, &server.storage)
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "+1h")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", 1)
        .start()
        .await;
    // Its clock really is an hour ahead (its heartbeat says so)…
    let ws = api.get("/api/v1/workers").await.body;
    let seen = ws["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == json!(fast.worker_id))
        .map(|w| w["lastSeen"].as_str().unwrap().to_string())
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let theirs = time::OffsetDateTime::parse(&seen, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(
        theirs - now > time::Duration::minutes(50),
        "libfaketime had no effect: {seen}"
    );
    // …yet its reaper (every second here) leaves w1's lease alone.
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(40)).await;
    assert_eq!(
        (v["attempt"].as_u64(), v["workerId"].as_str()),
        (Some(1), Some(w1.worker_id.as_str())),
        "{v}"
    );
}

/// `DCC_FILES_MODE=auto` (the default) picks bind mode when the Docker daemon sees the worker's
/// scratch folder at the same path, and copy mode when it does not: here a worker that sees its
/// own tmpfs over the folder (its own mount namespace), as a worker in a container of its own
/// would. Jobs with inputs and outputs run either way, and the workers view says which mode.
#[tokio::test]
async fn auto_files_mode_binds_only_where_the_daemon_sees_the_scratch_folder() {
    let redis = Redis::start();
    let job = json!({
        "image": dcc_e2e::IMAGE,
        "command": ["sh", "-c", "cat /inputs/in.txt > /outputs/out.txt"],
        "inputs": [{"name": "in.txt", "value": "through\n"}],
    });
    let apart = tempfile::tempdir().expect("temp dir");
    // Mount, then run dcc ("$0" and its arguments) in the new namespace.
    let unshare = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs \"$DCC_TMP_DIR\" && exec \"$0\" \"$@\"",
    ];
    for (dcc, expected) in [
        (Dcc::builder(Role::Server, &redis).env("DCC_FILES_MODE", "auto"), "bind"),
        (
            Dcc::builder(Role::Server, &redis)
                .env("DCC_FILES_MODE", "auto")
                .env("DCC_TMP_DIR", apart.path().display())
                .wrapped(&unshare),
            "copy",
        ),
    ] {
        let dcc = dcc.start().await;
        let api = dcc.api();
        let workers = api.get("/api/v1/workers").await;
        let me = workers.body["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == dcc.worker_id.as_str())
            .cloned()
            .expect("the worker is listed");
        assert_eq!(me["filesMode"], expected, "{me}");
        let v = api.run(job.clone()).await;
        assert_eq!(v["status"], "succeeded", "{expected}: {v}");
        let id = v["jobId"].as_str().unwrap();
        let (s, out) = api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/out.txt")).await;
        assert_eq!((s, out.as_slice()), (200, b"through\n".as_slice()), "{expected}");
        // Nor the probe's container or the job's.
        eventually(Duration::from_secs(5), "no container left behind", || async {
            containers_of(&dcc.worker_id).is_empty().then_some(())
        })
        .await;
    }
}

/// A fake instance metadata service (IMDSv2: every read needs the session token) on loopback,
/// with no interruption notice and no rebalance recommendation until the flags are set.
async fn fake_imds(notice: Arc<AtomicBool>, rebalance: Arc<AtomicBool>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, put};
    let sign = |flag: Arc<AtomicBool>, body: &'static str| {
        move |h: HeaderMap| async move {
            if h.get("x-aws-ec2-metadata-token").and_then(|v| v.to_str().ok()) != Some("t0ken") {
                return (StatusCode::UNAUTHORIZED, "");
            }
            if flag.load(Ordering::Relaxed) {
                (StatusCode::OK, body)
            } else {
                (StatusCode::NOT_FOUND, "")
            }
        }
    };
    let app = axum::Router::new()
        .route("/latest/api/token", put(|| async { "t0ken" }))
        .route(
            "/latest/meta-data/spot/instance-action",
            get(sign(
                notice,
                r#"{"action": "terminate", "time": "2026-12-02T08:22:00Z"}"#,
            )),
        )
        .route(
            "/latest/meta-data/events/recommendations/rebalance",
            get(sign(rebalance, r#"{"noticeTime": "2026-12-02T08:17:00Z"}"#)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_spot_interruption_notice_hands_the_job_back_without_using_an_attempt() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let (notice, rebalance) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let imds = fake_imds(notice.clone(), rebalance).await;
    let mut w1 = worker(&redis, &server.storage)
        .env("DCC_SPOT_IMDS", &imds)
        .env("DCC_SPOT_POLL_SECS", 1)
        .start()
        .await;
    let mut job = sh("sleep 4; echo completed");
    job["parameters"] = json!({"maxAttempts": 1});
    let id = api.submit_id(job).await;
    assert_eq!(running_on(&api, &id).await, w1.worker_id);
    notice.store(true, Ordering::Relaxed);
    // Well within the two minutes EC2 gives (a poll, the kill, the hand-back, the removal).
    let status = w1
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the worker leaves within 30 s of the notice");
    assert!(status.success());
    assert!(
        containers_of(&w1.worker_id).is_empty(),
        "the stopped container was not removed"
    );
    let v = api.job(&id).await;
    assert_eq!(v["status"], "queued", "handed back at once, not after a lease: {v}");
    // The job runs again elsewhere, whole, though it had one attempt: the interruption used none.
    let w2 = worker(&redis, &server.storage).start().await;
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(v["workerId"], json!(w2.worker_id));
    assert_eq!(api.log(&id, "stdout").await, "completed\n");
}

#[tokio::test]
async fn a_spot_rebalance_recommendation_stops_claims_and_lets_running_jobs_finish() {
    let redis = Redis::start();
    let server = api_server(&redis).await;
    let api = server.api();
    let (notice, rebalance) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let imds = fake_imds(notice, rebalance.clone()).await;
    let mut w1 = worker(&redis, &server.storage)
        .env("DCC_SPOT_IMDS", &imds)
        .env("DCC_SPOT_POLL_SECS", 1)
        .start()
        .await;
    let id = api.submit_id(sh("sleep 4; echo finished")).await;
    running_on(&api, &id).await;
    rebalance.store(true, Ordering::Relaxed);
    eventually(Duration::from_secs(15), "the worker DRAINING", || async {
        let w = api.get("/api/v1/workers").await.body["workers"][0].clone();
        (w["health"] == "DRAINING").then_some(())
    })
    .await;
    let later = api.submit_id(sh("echo later")).await;
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(
        (v["workerId"].clone(), v["attempt"].clone()),
        (json!(w1.worker_id), json!(1))
    );
    assert!(
        w1.wait_exit(Duration::from_secs(30))
            .await
            .expect("it leaves once empty")
            .success()
    );
    assert_eq!(
        api.job(&later).await["status"],
        "queued",
        "claimed after the recommendation"
    );
}

/// Stop means stop, at start-up: a worker waiting for its previous life's health key to expire
/// (a 60 s lease) exits within seconds of SIGTERM, even once Redis has gone away meanwhile (the
/// build before kept waiting, then retried Redis forever).
#[tokio::test]
async fn a_worker_waiting_at_start_up_stops_when_told() {
    let mut redis = Redis::start();
    let server = api_server(&redis).await;
    let long = |b: dcc_e2e::DccBuilder| b.env("DCC_LEASE_SECS", 60).env("DCC_HEARTBEAT_SECS", 5);
    let mut first = long(worker(&redis, &server.storage)).start().await;
    first.kill();
    let mut second = long(worker(&redis, &server.storage))
        .worker_id(&first.worker_id)
        .ready_when("waiting for it to expire")
        .start()
        .await;
    redis.kill();
    second.signal("TERM");
    let exited = second.wait_exit(Duration::from_secs(10)).await;
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}\n{}", second.log());
}

/// Stop means stop, with Redis away: told to stop now (two signals), the worker stops its
/// container and retries handing the job back, for a bounded time; Redis returning within it gets
/// the job back without an attempt used (the build before tried once and left it to expire).
#[tokio::test]
async fn a_stopping_worker_hands_its_job_back_once_redis_returns() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let server = api_server(&redis).await;
    let api = server.api();
    let mut w = worker(&redis, &server.storage)
        .env("DCC_LEASE_SECS", 30)
        .env("DCC_DRAIN_TIMEOUT", "20s")
        .start()
        .await;
    let id = api.submit_id(sh("sleep 60")).await;
    running_on(&api, &id).await;
    container_exists(&id, 1).await;
    redis.kill();
    w.signal("TERM");
    eventually(Duration::from_secs(10), "the first signal to be taken", || async {
        w.log().contains("shutting down").then_some(())
    })
    .await;
    w.signal("TERM");
    eventually(Duration::from_secs(20), "the hand-back to be retried", || async {
        w.log().contains("handing the job back failed; retrying").then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "the container to be removed", || async {
        containers_of(&w.worker_id).is_empty().then_some(())
    })
    .await;
    redis.restart();
    let exited = w.wait_exit(Duration::from_secs(30)).await;
    assert!(exited.is_some(), "{}", w.log());
    assert!(w.log().contains("JobReleased"), "{}", w.log());
    let v = api.job(&id).await;
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["attempt"], 1, "handing back used up an attempt: {v}");
}

/// Stop means stop, with nothing running and Redis away: unregistering is retried for the drain
/// timeout (2 s here), then the worker exits and its health key expires by itself.
#[tokio::test]
async fn an_idle_worker_cut_off_from_redis_exits_after_the_drain_timeout() {
    let mut redis = Redis::start();
    let server = api_server(&redis).await;
    let mut w = worker(&redis, &server.storage)
        .env("DCC_DRAIN_TIMEOUT", "2s")
        .start()
        .await;
    redis.kill();
    w.signal("TERM");
    let exited = w.wait_exit(Duration::from_secs(15)).await;
    assert!(exited.is_some(), "{}", w.log());
    assert!(w.log().contains("gave up unregistering"), "{}", w.log());
}
