//! Warm containers for fast jobs (`DCC_WARM_POOL`, bind mode): a job run warm gives exactly what
//! the same job gives cold (output, exit code, errors, outputs, environment, working folder,
//! entrypoint, user), stops the same way (deadline, cancel), leaves nothing behind and nothing
//! for the next job; the pool refills after a job and empties when idle. The test image is
//! `FROM scratch` (a static busybox), so the keeper runs without anything from the image.

use std::time::Duration;

use dcc_e2e::{Dcc, IMAGE, Redis, Role, containers_of, eventually, sh};
use serde_json::{Value, json};

/// A server whose worker keeps warm containers.
async fn warm_server(redis: &Redis) -> Dcc {
    Dcc::builder(Role::Server, redis)
        .env("DCC_FILES_MODE", "bind")
        .env("DCC_WARM_POOL", 2)
        .start()
        .await
}

/// A server whose worker runs every job cold.
async fn cold_server(redis: &Redis) -> Dcc {
    Dcc::builder(Role::Server, redis)
        .env("DCC_FILES_MODE", "bind")
        .start()
        .await
}

async fn run(api: &dcc_e2e::Api, job: &Value) -> Value {
    let a = api.post("/api/v1/run", job).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

/// Runs `job` until it runs in a warm container (its first run teaches the pool its shape, and the
/// pool makes a container in the background); returns that run's answer.
async fn run_warm(api: &dcc_e2e::Api, job: &Value) -> Value {
    let what = format!("{job} runs warm");
    // Generous: one run of the memory hog alone took 40 s on a loaded 2-core machine (the kernel
    // reclaiming inside a 16 MiB cgroup), 0.1-7 s on a quiet one.
    eventually(Duration::from_secs(90), &what, || async {
        let v = run(api, job).await;
        (v["stats"]["warm"] == true).then_some(v)
    })
    .await
}

/// What a client sees of a finished fast job, without ids and times. Of a runtime's refusal to
/// start the command, the runtime's own reason (cold, runc's create fails; warm, its exec does:
/// the words around the reason differ).
fn result(v: &Value) -> Value {
    let mut error = v["error"].clone();
    if let Some(m) = error["message"].as_str()
        && let Some((_, why)) = m.split_once("unable to start container process: ")
    {
        error["message"] = json!(why);
    }
    json!({
        "status": v["status"],
        "exitCode": v["exitCode"],
        "error": error,
        "stdout": v["stdout"],
        "stderr": v["stderr"],
        "outputs": v["outputs"].as_array().map(|o| o.iter().map(|o| json!([o["name"], o["value"]])).collect::<Vec<_>>()),
    })
}

#[tokio::test]
async fn a_warm_job_gives_what_the_same_job_gives_cold() {
    // Each on its own Redis: neither may run the other's jobs.
    let (redis, cold_redis) = (Redis::start(), Redis::start());
    let (warm, cold) = (warm_server(&redis).await, cold_server(&cold_redis).await);
    let (wa, ca) = (warm.api(), cold.api());
    let script = "echo \"$GREETING from $(pwd) as $(id -u)\"; cat /inputs/in.txt; echo oops >&2; \
                  ls -A /inputs; printf made > /outputs/out.txt; mkdir /outputs/d; echo deep > /outputs/d/x; \
                  env | grep -c '^GREETING='; exit 3";
    let cases = [
        json!({"image": IMAGE, "command": ["sh", "-c", script], "env": {"GREETING": "hello"},
               "inputs": [{"name": "in.txt", "value": "input\n"}]}),
        json!({"image": IMAGE, "command": ["sh", "-c", script], "env": {"GREETING": "hi"},
               "workingDir": "/tmp", "inputs": [{"name": "in.txt", "value": "x"}]}),
        json!({"image": dcc_e2e::user_image(), "command": ["sh", "-c", "id -u; id -g; touch /outputs/mine"]}),
        json!({"image": dcc_e2e::entry_image()}),
        json!({"image": dcc_e2e::entry_image(), "command": ["mine", "too"]}),
        json!({"image": IMAGE, "command": ["/no/such/program"]}),
        // The agent finds programs and words refusals as runc does.
        json!({"image": IMAGE, "command": ["nosuch"]}),
        json!({"image": IMAGE, "command": ["/etc"]}),
        // Found but not a program (an empty file with execute bits): runc has started the
        // container by then, so the reason is on stderr and the exit code 1.
        json!({"image": IMAGE, "command": ["/.dockerenv"]}),
        json!({"image": IMAGE, "command": ["bin/echo", "relative"], "workingDir": "/"}),
        json!({"image": IMAGE, "command": ["echo", "from $PATH"], "env": {"PATH": "/nowhere:/bin"}}),
        // Output through /dev/stdout and /dev/stderr (pipes, as Docker's: a socket could not be
        // opened there), big enough to fill a pipe's buffer many times over.
        json!({"image": IMAGE, "command": ["sh", "-c", "echo out > /dev/stdout; echo err > /dev/stderr; \
               head -c 300000 /dev/zero | tr '\\0' x"]}),
        json!({"image": IMAGE, "command": ["sh", "-c", "echo done; exit 0"]}),
        // DCC's own variables (ids differ between the two runs; their length does not).
        json!({"image": IMAGE, "command": ["sh", "-c", "echo \"$DCC_INPUTS $DCC_OUTPUTS ${#DCC_JOB_ID}\""],
               "env": {"DCC_INPUTS": "/mine"}}),
    ];
    for job in &cases {
        let w = run_warm(&wa, job).await;
        let c = run(&ca, job).await;
        assert_eq!(c["stats"]["warm"], false, "the cold server ran it warm: {c}");
        assert_eq!(result(&w), result(&c), "warm and cold differ for {job}");
    }
    // Spot checks of what the comparison covered.
    let w = run_warm(&wa, &cases[0]).await;
    assert_eq!(w["stdout"], "hello from / as 0\ninput\nin.txt\n1\n", "{w}");
    assert_eq!(w["exitCode"], 3);
    assert_eq!(w["error"]["code"], "NONZERO_EXIT");
    let w = run_warm(&wa, &cases[1]).await;
    assert!(w["stdout"].as_str().unwrap().starts_with("hi from /tmp as 0\n"), "{w}");
    let w = run_warm(&wa, &cases[2]).await;
    assert_eq!(w["stdout"], "1000\n0\n", "{w}");
    assert_eq!(w["outputs"][0]["name"], "mine");
    assert_eq!(run_warm(&wa, &cases[3]).await["stdout"], "entry default\n");
    assert_eq!(run_warm(&wa, &cases[4]).await["stdout"], "entry mine too\n");
    let own = cases.last().expect("DCC's own variables are the last case");
    assert_eq!(run_warm(&wa, own).await["stdout"], "/inputs /outputs 36\n");
    eventually(Duration::from_secs(5), "no job container left behind", || async {
        let left = containers_of(&warm.worker_id).len();
        // The idle warm containers (at most the pool's size) stay; nothing else.
        (left <= 2).then_some(())
    })
    .await;
}

/// The agent (PID 1 of a warm container) reaps the orphans a job leaves, as a cold container's
/// first process must; and the job finds no door to it: the control socket is gone once the agent
/// connected, and the control folder cannot be written (no link can be planted for the agent or
/// the worker to follow).
#[tokio::test]
async fn the_agent_reaps_orphans_and_leaves_the_job_no_door() {
    let redis = Redis::start();
    let dcc = warm_server(&redis).await;
    let api = dcc.api();
    let script = "for i in $(seq 20); do (sh -c 'exit 0' &); done; sleep 1; \
                  echo zombies $(ps -o stat | grep -c '^Z'); \
                  echo pid1 $(tr '\\0' ' ' < /proc/1/cmdline); \
                  echo control $(ls -A /.dcc); \
                  ln -s / /.dcc/x 2>/dev/null && echo planted; touch /.dcc/stdout.x 2>/dev/null && echo wrote; \
                  echo done";
    let v = run_warm(&api, &sh(script)).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(
        v["stdout"], "zombies 0\npid1 /.dcc-agent\ncontrol stderr stdout\ndone\n",
        "{v}"
    );
}

#[tokio::test]
async fn warm_jobs_time_out_and_cancel_like_cold_ones() {
    let redis = Redis::start();
    let dcc = warm_server(&redis).await;
    let api = dcc.api();
    let slow = json!({"image": IMAGE, "command": ["sh", "-c", "echo started; sleep 30"],
                      "parameters": {"maxDurationSecs": 1}});
    let v = run_warm(&api, &slow).await;
    assert_eq!(v["status"], "timed_out", "{v}");
    assert_eq!(v["error"]["code"], "TIMED_OUT");
    assert_eq!(v["stdout"], "started\n");

    // A command that leaves a process behind holding its output ends when it exits, as a cold
    // container does when its first process exits.
    let straggler = sh("sleep 30 & echo done");
    let v = tokio::time::timeout(Duration::from_secs(20), run_warm(&api, &straggler))
        .await
        .expect("answered within 20 s, without waiting for the background process");
    assert_eq!(
        (v["status"].as_str(), v["stdout"].as_str()),
        (Some("succeeded"), Some("done\n")),
        "{v}"
    );

    // Cancel a running warm job. The pool may have no container ready when the job is claimed
    // (the workers view's warm count is beaten at most every 0.5 s, so it can be stale): such a
    // run is cold; cancel it and try again until one runs warm.
    let (id, pending) = long_warm_job(&api, &dcc.worker_id).await;
    let a = api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert!(a.status == 200 || a.status == 202, "{:?}", a.body);
    let v = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the cancelled job answered")
        .unwrap();
    assert_eq!(v["status"], "cancelled", "{v}");
    eventually(
        Duration::from_secs(5),
        "the cancelled job's container is gone",
        || async { (containers_of(&dcc.worker_id).len() <= 2).then_some(()) },
    )
    .await;
}

/// Starts `sleep N` jobs on `/api/v1/run` until one runs in a warm container (its command runs in
/// one of the worker's containers that is not labelled with the job's id); cancels the cold ones.
/// Returns the warm one's id and its pending answer.
async fn long_warm_job(api: &dcc_e2e::Api, worker: &str) -> (String, tokio::task::JoinHandle<Value>) {
    for n in 60..70 {
        // A new duration each try: the process of a cancelled cold try may not be gone yet.
        let command = format!("sleep {n}");
        let (a, job) = (api.clone(), sh(&command));
        let pending = tokio::spawn(async move { a.post("/api/v1/run", &job).await.body });
        let id = eventually(Duration::from_secs(30), "the long job runs", || async {
            let jobs = api.get("/api/v1/jobs?status=running").await.body;
            jobs["jobs"][0]["jobId"].as_str().map(String::from)
        })
        .await;
        let host = eventually(Duration::from_secs(30), "the long job's command runs", || async {
            containers_of(worker).into_iter().find(|c| runs(c, &command))
        })
        .await;
        if !dcc_e2e::containers_of_job(&id).contains(&host) {
            return (id, pending);
        }
        eprintln!("try {n} ran cold (no warm container was ready); cancelling it");
        let a = api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
        assert!(a.status == 200 || a.status == 202, "{:?}", a.body);
        let v = tokio::time::timeout(Duration::from_secs(20), pending)
            .await
            .expect("the cold try answered")
            .unwrap();
        assert_eq!(v["status"], "cancelled", "{v}");
    }
    panic!("ten long jobs in a row ran cold");
}

/// Whether a process whose command line is `command` runs in `container`.
fn runs(container: &str, command: &str) -> bool {
    let out = std::process::Command::new("docker")
        .args(["top", container])
        .output()
        .expect("docker CLI runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim_end().ends_with(command))
}

/// Memory over the limit: the kernel kills the command and the job says so, as cold.
#[tokio::test]
async fn a_warm_job_over_its_memory_is_killed_and_reported() {
    let redis = Redis::start();
    let dcc = warm_server(&redis).await;
    let api = dcc.api();
    let mut hog = sh("head -c 200000000 /dev/zero | tail > /dev/null");
    hog["parameters"] = json!({"memoryMb": 16});
    let v = run_warm(&api, &hog).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "NONZERO_EXIT", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ran out of memory"),
        "{v}"
    );
}

#[tokio::test]
async fn the_next_job_finds_no_trace_of_the_last() {
    let redis = Redis::start();
    let dcc = warm_server(&redis).await;
    let api = dcc.api();
    let first = sh("echo secret > /tmp/left; echo out > /outputs/left; sleep 300 >/dev/null 2>&1 & echo ok");
    let v = run_warm(&api, &first).await;
    assert_eq!(v["stdout"], "ok\n", "{v}");
    // Same shape: the next warm job runs in another container.
    let probe = sh("ls -A /tmp /outputs /inputs | grep -v ':$' | grep .; ps -o args | grep -c '[s]leep 300' || true");
    let v = run_warm(&api, &probe).await;
    assert_eq!(v["stdout"], "0\n", "a trace of the previous job: {v}");
}

#[tokio::test]
async fn the_pool_refills_after_a_job_and_empties_when_idle() {
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_FILES_MODE", "bind")
        .env("DCC_WARM_POOL", 2)
        .env("DCC_WARM_IDLE_SECS", 3)
        .env("DCC_HEARTBEAT_SECS", 1)
        .env("DCC_LEASE_SECS", 5)
        .start()
        .await;
    let api = dcc.api();
    let warm_count = || async {
        let w = api.get("/api/v1/workers").await.body;
        w["workers"][0]["warmContainers"].as_u64().unwrap_or(0)
    };
    let job = sh("true");
    run(&api, &job).await;
    eventually(Duration::from_secs(30), "the pool fills to its size", || async {
        (warm_count().await == 2).then_some(())
    })
    .await;
    assert_eq!(run(&api, &job).await["stats"]["warm"], true);
    eventually(Duration::from_secs(30), "the pool refills", || async {
        (warm_count().await == 2).then_some(())
    })
    .await;
    let metrics = api.get_bytes("/metrics").await.1;
    assert!(
        String::from_utf8_lossy(&metrics).contains("dcc_warm_containers 2"),
        "metrics count warm containers"
    );
    eventually(
        Duration::from_secs(30),
        "idle containers go after DCC_WARM_IDLE_SECS",
        || async { (warm_count().await == 0 && containers_of(&dcc.worker_id).is_empty()).then_some(()) },
    )
    .await;
}
