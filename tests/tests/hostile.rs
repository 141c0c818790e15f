//! What a hostile job cannot do to the worker's host through its outputs, and what one stack
//! cannot do to another on the same Docker host (docs/security.md):
//! - a job that leaves a process swapping names under `/outputs` with symbolic links to host
//!   paths or with FIFOs (the racer, tests/fixtures/racer.c) gets no host file back and wedges
//!   nothing, warm or cold, in bind and copy mode;
//! - a second deployment on the same Docker host, even with the same worker id, never removes
//!   the first one's containers.

use std::time::Duration;

use base64::Engine;
use dcc_e2e::{Api, Dcc, IMAGE, Redis, Role, containers_labelled, eventually, racer_image, random_name};
use serde_json::{Value, json};

/// A host folder holding `x`, a file no job may ever read back.
struct Secret {
    dir: tempfile::TempDir,
    text: String,
}

impl Secret {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dcc-secret-")
            .tempdir_in("/tmp")
            .unwrap();
        let text = random_name("HOST-SECRET-");
        std::fs::write(dir.path().join("x"), &text).unwrap();
        Secret { dir, text }
    }

    /// What the racer of `kind` points its links at.
    fn target(&self, kind: &str) -> String {
        match kind {
            "dirlink" => self.dir.path().display().to_string(),
            _ => self.dir.path().join("x").display().to_string(),
        }
    }
}

const KINDS: [&str; 3] = ["symlink", "dirlink", "fifo"];

/// Longest a racing job may take to be answered (they run in well under a second).
const ANSWER: Duration = Duration::from_secs(60);

/// A job whose command starts the racer in the background and exits once its entries exist,
/// leaving it racing while the worker collects. The racer lets go of the job's output, so the
/// output ends with the command (a warm run then sees the job as ended, with the racer alive).
fn racing_job(kind: &str, secret: &Secret) -> Value {
    let script = format!(
        "racer {kind} {} 40 >/dev/null 2>&1 & while [ ! -e /tmp/racer-ready ]; do sleep 0.01; done; echo started",
        secret.target(kind)
    );
    json!({"image": racer_image(), "command": ["sh", "-c", script]})
}

/// Checks one finished racing job: it succeeded, every output it returned is one of the racer's
/// own files ("ok"), nothing holds the secret, and the entries it did not read are counted.
fn check_outputs(v: &Value, contents: &[(String, Vec<u8>)], secret: &Secret) {
    assert_eq!(v["status"], "succeeded", "{v}");
    for (name, bytes) in contents {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(&secret.text), "output {name} holds the host's file: {v}");
        let own = name.starts_with('e') && (name.len() == 4 || name.ends_with("/x"));
        assert!(own, "unexpected output {name}: {v}");
        assert_eq!(text, "ok\n", "output {name}: {v}");
    }
    let skipped = v["stats"]["outputsSkipped"].as_u64().unwrap_or(0);
    assert!(skipped >= 1, "the hidden spares were not counted as skipped: {v}");
}

/// Runs a fast job and returns the answer with its outputs' bytes.
async fn run_fast(api: &Api, job: &Value) -> (Value, Vec<(String, Vec<u8>)>) {
    // A worker wedged on a FIFO never answers: fail instead of hanging.
    let a = tokio::time::timeout(ANSWER, api.post("/api/v1/run", job))
        .await
        .unwrap_or_else(|_| panic!("no answer within {ANSWER:?}: the worker is wedged"));
    assert_eq!(a.status, 200, "{:?}", a.body);
    let outputs = a.body["outputs"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|o| {
                    let name = o["name"].as_str().unwrap_or_default().to_string();
                    let value = o["value"].as_str().unwrap_or_default();
                    assert_eq!(o["encoding"], "base64", "{o}");
                    (name, base64::engine::general_purpose::STANDARD.decode(value).unwrap())
                })
                .collect()
        })
        .unwrap_or_default();
    (a.body, outputs)
}

/// Runs a standard job to its end and fetches its outputs over the API.
async fn run_standard(api: &Api, job: &Value) -> (Value, Vec<(String, Vec<u8>)>) {
    let mut job = job.clone();
    job["wait"] = json!(true);
    let a = tokio::time::timeout(ANSWER, api.submit(job))
        .await
        .unwrap_or_else(|_| panic!("no answer within {ANSWER:?}: the worker is wedged"));
    assert!(a.status == 200 || a.status == 201, "{:?}", a.body);
    let id = a.body["jobId"].as_str().unwrap().to_string();
    let v = api.wait_status(&id, "succeeded", Duration::from_secs(60)).await;
    let mut outputs = Vec::new();
    for o in v["outputs"].as_array().cloned().unwrap_or_default() {
        let name = o["name"].as_str().unwrap_or_default().to_string();
        let (status, bytes) = api.get_bytes(&format!("/api/v1/jobs/{id}/outputs/{name}")).await;
        assert_eq!(status, 200, "{name}");
        outputs.push((name, bytes));
    }
    (v, outputs)
}

/// Waits until the only worker is healthy with every CPU slot free, then runs a plain job on it.
async fn assert_worker_free(api: &Api) {
    eventually(
        Duration::from_secs(30),
        "the worker healthy with its slots free",
        || async {
            let w = api.get("/api/v1/workers").await.body["workers"][0].clone();
            (w["health"] == "HEALTHY" && w["freeCpuSlots"] == w["cpus"]).then_some(())
        },
    )
    .await;
    let (v, _) = run_fast(api, &json!({"image": IMAGE, "command": ["echo", "fine"]})).await;
    assert_eq!(v["status"], "succeeded", "{v}");
}

#[tokio::test]
async fn a_warm_job_racing_links_and_fifos_gets_no_host_file_and_wedges_nothing() {
    let secret = Secret::new();
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_FILES_MODE", "bind")
        .env("DCC_WARM_POOL", 2)
        .env("DCC_CPUS", 2)
        .start()
        .await;
    let api = dcc.api();
    for kind in KINDS {
        let job = racing_job(kind, &secret);
        // Three runs in a warm container each (the first run may teach the pool the shape).
        let mut warm_runs = 0;
        for _ in 0..8 {
            let (v, outputs) = run_fast(&api, &job).await;
            check_outputs(&v, &outputs, &secret);
            warm_runs += usize::from(v["stats"]["warm"] == true);
            if warm_runs == 3 {
                break;
            }
        }
        assert_eq!(warm_runs, 3, "{kind}: too few runs were warm");
    }
    assert_worker_free(&api).await;
}

#[tokio::test]
async fn cold_jobs_racing_links_and_fifos_get_no_host_file_in_either_files_mode() {
    let secret = Secret::new();
    for mode in ["bind", "copy"] {
        let redis = Redis::start();
        let dcc = Dcc::builder(Role::Server, &redis)
            .env("DCC_FILES_MODE", mode)
            .env("DCC_WARM_POOL", 0)
            .start()
            .await;
        let api = dcc.api();
        for kind in KINDS {
            let job = racing_job(kind, &secret);
            let (v, outputs) = run_standard(&api, &job).await;
            check_outputs(&v, &outputs, &secret);
            let (v, outputs) = run_fast(&api, &job).await;
            assert_eq!(v["stats"]["warm"], false, "{v}");
            check_outputs(&v, &outputs, &secret);
        }
        assert_worker_free(&api).await;
    }
}

/// The number of containers with all of `labels`.
fn count(labels: &[(&str, &str)]) -> usize {
    containers_labelled(labels, false).len()
}

#[tokio::test]
async fn a_second_deployment_with_the_same_worker_id_leaves_the_first_ones_containers() {
    let id = random_name("t-shared-");
    let (redis_a, redis_b) = (Redis::start(), Redis::start());
    let a = Dcc::builder(Role::Server, &redis_a)
        .worker_id(&id)
        .env("DCC_FILES_MODE", "bind")
        .env("DCC_WARM_POOL", 2)
        .start()
        .await;
    let api_a = a.api();
    // A warm container (taught by one fast job) and a running job container, both A's.
    let (v, _) = run_fast(&api_a, &json!({"image": IMAGE, "command": ["true"]})).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    eventually(Duration::from_secs(30), "a warm container of A", || async {
        (count(&[("dcc.worker", &id)]) >= 1).then_some(())
    })
    .await;
    let long = api_a
        .submit_id(json!({"image": IMAGE, "command": ["sh", "-c", "sleep 8; echo survived"]}))
        .await;
    api_a.wait_status(&long, "running", Duration::from_secs(30)).await;
    let before = eventually(Duration::from_secs(30), "A's warm and job containers", || async {
        let n = count(&[("dcc.worker", &id)]);
        (n >= 2).then_some(n)
    })
    .await;

    // B: another Redis, the same worker id, on the same Docker host; it starts (removing its
    // leftovers) and beats (removing its strays) several times.
    let b = Dcc::builder(Role::Server, &redis_b)
        .worker_id(&id)
        .env("DCC_FILES_MODE", "bind")
        .env("DCC_HEARTBEAT_SECS", 1)
        .env("DCC_LEASE_SECS", 3)
        .start()
        .await;
    let api_b = b.api();
    let mut last = Value::Null;
    for _ in 0..3 {
        last = eventually(Duration::from_secs(20), "a beat of B", || {
            let (api_b, prev) = (api_b.clone(), last.clone());
            async move {
                let now = api_b.get("/api/v1/workers").await.body["workers"][0]["lastSeen"].clone();
                (!now.is_null() && now != prev).then_some(now)
            }
        })
        .await;
    }
    assert!(
        count(&[("dcc.worker", &id)]) >= before,
        "B removed A's containers: {:?}",
        dcc_e2e::containers_of(&id)
    );
    let v = api_a.wait_status(&long, "succeeded", Duration::from_secs(30)).await;
    assert_eq!(v["attempts"].as_u64().or(v["attempt"].as_u64()), Some(1), "{v}");
    assert_eq!(api_a.log(&long, "stdout").await, "survived\n");
    // B's own job still runs, and its containers carry its own deployment.
    let (v, _) = run_fast(&api_b, &json!({"image": IMAGE, "command": ["echo", "b"]})).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    drop(b);
    drop(a);
}
