//! DCC's latency and throughput benchmark. Every number is printed next to a baseline measured
//! in the same run on the same machine, so results compare across machines. Run it with
//! `scripts/bench.sh` (release build). It starts its own Redis and `dcc` processes.
//!
//! (a) the baseline a user would write instead: create + start + wait + remove of a trivial
//!     container through the Docker API, with the minimal create body that isolates it as DCC
//!     does (`NetworkDisabled`), one at a time and 100 at the worker's concurrency;
//! (b) the same container as a fast job through `POST /api/v1/run`, and as a standard job with
//!     `wait: true`, in both file modes, with the ratio to (a) and where the time goes (the
//!     job's own per-phase stats); the fast job in a warm container (`DCC_WARM_POOL`) against
//!     the cold raw lifecycle; then 200 (`BENCH_BURST`) standard jobs at once through one
//!     worker against as many raw lifecycles at the same concurrency;
//! (c) enqueue → claim latency of an idle worker (the job's `queuedMs`), and enqueue → container
//!     start (Docker's own start event);
//! (d) standard submits per second one server accepts, against raw Redis round trips per second
//!     and against the floor of any such server: an axum handler on the same stack (its own
//!     process, a deadpool-redis pool) that parses the JSON body and makes one Redis script call
//!     (store the body, push the id) per request, driven by the same client at the same
//!     concurrency;
//! (e) the cost of tenants: submits and job views per second through a tenant's key (key lookup,
//!     rate and quota scripts, ownership checks) against the same server without keys.
//! (f) the cost of durable acknowledgements: submits per second and their p50/p99 against a
//!     primary with a replica on the same machine, with `DCC_DURABILITY=none` and `replicas:1`.
//!
//! (g) a pipeline: a chain of `BENCH_CHAIN` (100) trivial jobs, each `dependsOn` the one before,
//!     all submitted at once, against the sum of its jobs' own times on the worker (startedAt →
//!     finishedAt: what no scheduler can save) and against a client that runs the same jobs one
//!     after the other with `wait: true`; with the hand-off gaps (a job's end → the next start).
//! (h) array jobs: one `BENCH_ARRAY` (10 000)-child array submitted over HTTP against one
//!     single job's submit; then, on the queue itself (no Docker), every child claimed and its
//!     result recorded against as many single jobs: Redis memory each adds once ended, and Redis
//!     time (every command, from `INFO commandstats`) per job.
//!
//! (w) the warm fast job of (b) alone, against the cold raw lifecycle and against the floor of
//!     the warm path: the same container made ready with DCC's agent by hand, its command started
//!     through the agent and waited for, with no DCC in between (what DCC adds is the rest).
//!
//! `BENCH_ONLY=e` runs (e) alone, `BENCH_ONLY=d` (d) alone, `BENCH_ONLY=b` (a) and (b),
//! `BENCH_ONLY=f` (f) alone, `BENCH_ONLY=g` (g) alone, `BENCH_ONLY=h` (h) alone, `BENCH_ONLY=w`
//! (w) alone.

use std::collections::HashMap;
use std::time::Instant;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{EventsOptionsBuilder, RemoveContainerOptionsBuilder};
use dcc_e2e::{Dcc, IMAGE, Redis, Role, sh};
use futures_util::StreamExt;
use serde_json::json;
use sha2::Digest;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn line(name: &str, v: &mut [f64]) -> (f64, f64) {
    let (p50, p99) = (pct(v, 0.5), pct(v, 0.99));
    println!("{name:<58} p50 {p50:>8.1} ms   p99 {p99:>8.1} ms   (n={})", v.len());
    (p50, p99)
}

fn raw_body() -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["true".into()]),
        network_disabled: Some(true),
        ..Default::default()
    }
}

/// One raw lifecycle with the minimal body that gives a DCC job's isolation (its own network
/// namespace with only `lo`).
async fn raw_container(docker: &Docker) -> f64 {
    let t = Instant::now();
    let c = docker.create_container(None, raw_body()).await.expect("create");
    docker.start_container(&c.id, None).await.expect("start");
    let _ = docker.wait_container(&c.id, None).next().await;
    docker
        .remove_container(
            &c.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .expect("remove");
    t.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    if let Ok(port) = std::env::var("BENCH_FLOOR_SERVER") {
        return floor_server(&port).await;
    }
    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let submits: usize = std::env::var("BENCH_SUBMITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let concurrency: usize = 32;
    dcc_e2e::ensure_image();
    let docker = Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    println!("DCC benchmark: {n} samples per latency, {submits} submits at concurrency {concurrency}");
    println!();
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("e") => return tenants(submits, concurrency).await,
        Ok("d") => return submit_rates(submits, concurrency).await,
        Ok("f") => return durability(submits, concurrency).await,
        Ok("g") => return chain().await,
        Ok("h") => return arrays().await,
        Ok("w") => return warm_fast_jobs(&docker, n).await,
        _ => {}
    }

    raw_lifecycles(&docker, n).await;

    // (b) one job at a time, both file modes, fast (`/api/v1/run`) and standard (`wait: true`).
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .start()
        .await;
    let api = dcc.api();
    let bind_redis = Redis::start();
    let bind = Dcc::builder(Role::Server, &bind_redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .env("DCC_FILES_MODE", "bind")
        .start()
        .await;
    let bind_api = bind.api();
    one_at_a_time(&docker, &api, &bind_api, n).await;
    warm_fast_jobs(&docker, n).await;
    bursts(&docker, &api, &bind_api).await;
    if std::env::var("BENCH_ONLY").as_deref() == Ok("b") {
        return;
    }
    drop(bind);
    claim_latency(&docker, &api, n).await;
    drop(dcc);

    submit_rates(submits, concurrency).await;
    chain().await;
    arrays().await;
}

/// Bytes Redis holds (`used_memory`) and the microseconds its commands took so far.
async fn redis_costs(redis: &Redis) -> (f64, f64) {
    let mut c = redis.conn().await;
    let info: String = redis::cmd("INFO").arg("all").query_async(&mut c).await.unwrap();
    let field = |line: &str, key: &str| -> f64 {
        line.split(',')
            .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.ends_with(key)).map(|(_, v)| v))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let usec = info
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .map(|l| field(l, "usec"))
        .sum();
    (used, usec)
}

/// Queues `job` (n copies when `single`, else once), claims and records every job it makes;
/// per job: Redis bytes added by the submit, bytes held once every job ended, µs of Redis time
/// for the submit(s), µs for the claims and results.
async fn claim_all(job: serde_json::Value, n: usize, single: bool) -> (f64, f64, f64, f64) {
    use dcc_shared::job::{JobId, JobRequest, JobState, Lane, Limits, QueueName};
    use dcc_shared::queue::claim::{Claim, Claimant};
    use dcc_shared::queue::enqueue::NewJob;
    use dcc_shared::queue::finish::Outcome;
    let redis = Redis::start();
    let q = dcc_shared::queue::Queue::new(&redis.url(), "b").unwrap();
    let spec = JobRequest::from_value(job)
        .unwrap()
        .validate(&Limits::default())
        .unwrap()
        .spec;
    let retention = std::time::Duration::from_secs(3600);
    let (used0, _) = redis_costs(&redis).await;
    let mut c = redis.conn().await;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut c).await.unwrap();
    for i in 0..(if single { n } else { 1 }) {
        let id = JobId::parse(&format!("job-{i}")).unwrap();
        let new = NewJob {
            id: &id,
            spec: &spec,
            lane: Lane::Normal,
            def_hash: "h",
            inputs_prefix: "p/",
            tenant: "t",
            quota: Default::default(),
            retention,
        };
        q.enqueue(new, 0).await.unwrap();
    }
    let (queued, submit_us) = redis_costs(&redis).await;
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut c).await.unwrap();
    let who = Claimant {
        worker: "w",
        free_slots: 8,
        total_slots: 8,
        free_memory_mb: 1 << 30,
        total_memory_mb: 1 << 30,
        lease: std::time::Duration::from_secs(60),
    };
    let done = Outcome {
        state: JobState::Succeeded,
        exit_code: Some(0),
        error: None,
        image_digest: None,
        stats: Default::default(),
        outputs: vec![],
    };
    for _ in 0..n {
        let Claim::Claimed(c) = q.claim(QueueName::Cpu, &who, 1).await.unwrap() else {
            panic!("nothing to claim")
        };
        q.finish(&c.lease, &done, retention, 2).await.unwrap();
    }
    let (used, usec) = redis_costs(&redis).await;
    let per = |x: f64| x / n as f64;
    (per(queued - used0), per(used - used0), per(submit_us), per(usec))
}

/// (h) array jobs against single jobs: submit over HTTP, Redis memory and time per job.
async fn arrays() {
    let n: usize = std::env::var("BENCH_ARRAY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .start()
        .await;
    let api = dcc.api();
    let mut array_ms = Vec::new();
    let mut single_ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut job = sh("true");
        job["array"] = json!({"size": n});
        api.submit_id(job).await;
        array_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        api.submit_id(sh("true")).await;
        single_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!("(h) array jobs ({n} children)");
    let (a50, _) = line(&format!("    submit one {n}-child array over HTTP"), &mut array_ms);
    let (s50, _) = line("    submit one single job over HTTP", &mut single_ms);
    println!("    ratio (p50) {:.2}", a50 / s50);
    let mut job = sh("true");
    job["array"] = json!({"size": n});
    let (child_queued, child_bytes, child_submit, child_us) = claim_all(job, n, false).await;
    let (single_queued, single_bytes, single_submit, single_us) = claim_all(sh("true"), n, true).await;
    println!("    Redis bytes per queued job: array child {child_queued:>6.0}, single job {single_queued:>6.0}");
    println!(
        "    Redis bytes per ended job: array child {child_bytes:>6.0}, single job {single_bytes:>6.0} (ratio {:.2})",
        child_bytes / single_bytes
    );
    println!(
        "    Redis time per job, claim + result: array child {child_us:>6.1} µs, single job {single_us:>6.1} µs (ratio {:.2})",
        child_us / single_us
    );
    println!(
        "    Redis time per job, submit + claim + result: array child {:>6.1} µs, single job {:>6.1} µs (ratio {:.2})",
        child_submit + child_us,
        single_submit + single_us,
        (child_submit + child_us) / (single_submit + single_us)
    );
    println!();
}

/// Milliseconds of an RFC 3339 field of a job view.
fn at(v: &serde_json::Value, field: &str) -> f64 {
    let text = v[field].as_str().unwrap_or_default();
    dcc_shared::clock::parse_rfc3339(text).unwrap_or(0) as f64
}

/// (g) a chain of dependent trivial jobs, submitted at once, against the jobs' own time and a
/// client-side loop.
async fn chain() {
    let n: usize = std::env::var("BENCH_CHAIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .start()
        .await;
    let api = dcc.api();
    let t = Instant::now();
    let mut ids: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        let mut job = sh("true");
        if i > 0 {
            job["dependsOn"] = json!([{"jobId": ids[i - 1]}]);
        }
        ids.push(api.submit_id(job).await);
    }
    let submitted_ms = t.elapsed().as_secs_f64() * 1000.0;
    api.wait_status(&ids[n - 1], "succeeded", std::time::Duration::from_secs(600))
        .await;
    let chain_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut views = Vec::with_capacity(n);
    for id in &ids {
        views.push(api.job(id).await);
    }
    let own: f64 = views.iter().map(|v| at(v, "finishedAt") - at(v, "startedAt")).sum();
    let wall = at(&views[n - 1], "finishedAt") - at(&views[0], "startedAt");
    let mut gaps: Vec<f64> = views
        .windows(2)
        .map(|w| at(&w[1], "startedAt") - at(&w[0], "finishedAt"))
        .collect();
    println!("(g) a chain of {n} dependent trivial jobs, submitted at once ({submitted_ms:.0} ms to submit all)");
    println!(
        "    first start to last end {wall:>8.0} ms; the jobs' own time (start to end, summed) {own:>8.0} ms; ratio {:.3}",
        wall / own
    );
    line("    hand-off: a job's end to the next one's start", &mut gaps);
    let t = Instant::now();
    for _ in 0..n {
        api.run(sh("true")).await;
    }
    let client_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!(
        "    submit to last end {chain_ms:>8.0} ms; a client running them one by one (wait: true) {client_ms:>8.0} ms; ratio {:.3}",
        chain_ms / client_ms
    );
    println!();
}

/// (a) raw Docker, also broken down into its calls.
async fn raw_lifecycles(docker: &Docker, n: usize) {
    raw_container(docker).await; // warm-up
    let mut raw: Vec<f64> = Vec::new();
    for _ in 0..n {
        raw.push(raw_container(docker).await);
    }
    line("(a) raw create+start+wait+remove (NetworkDisabled)", &mut raw);
    raw_phases(docker, n).await;
}

/// (b) one job at a time through each file mode's server, fast and standard.
async fn one_at_a_time(docker: &Docker, api: &dcc_e2e::Api, bind_api: &dcc_e2e::Api, n: usize) {
    let job = json!({"image": IMAGE, "command": ["true"]});
    let waited = json!({"image": IMAGE, "command": ["true"], "wait": true});
    for (mode, a) in [("copy", api), ("bind", bind_api)] {
        for (what, path, body) in [
            ("fast, POST /api/v1/run", "/api/v1/run", &job),
            ("standard, wait: true", "/api/v1/jobs", &waited),
        ] {
            let (mut raw, mut times, phases) = round_trips(docker, a, path, body, n).await;
            let (p50, _) = line(&format!("(b) {mode}: {what}"), &mut times);
            let raw_p50 = pct(&mut raw, 0.5);
            println!(
                "    ratio {:.2} to the raw lifecycles interleaved with it (p50 {raw_p50:.1} ms; target ≤ {})",
                p50 / raw_p50,
                if mode == "bind" { "1.05" } else { "1.15" }
            );
            println!("    phases (mean ms): {phases}");
        }
    }
}

/// (b) fast jobs in warm containers (bind mode), against the cold raw lifecycle.
async fn warm_fast_jobs(docker: &Docker, n: usize) {
    let job = json!({"image": IMAGE, "command": ["true"]});
    let warm_redis = Redis::start();
    let warm = Dcc::builder(Role::Server, &warm_redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .env("DCC_FILES_MODE", "bind")
        .env("DCC_WARM_POOL", 2)
        .start()
        .await;
    let (mut raw, mut times, phases) = warm_round_trips(docker, &warm.api(), &job, n).await;
    let (p50, p99) = line("(b) bind: fast, POST /api/v1/run, warm container", &mut times);
    let raw_p50 = pct(&mut raw, 0.5);
    println!(
        "    ratio p50 {:.3}, p99 {:.3} to the raw cold lifecycles interleaved with it (p50 {raw_p50:.1} ms; \
         targets ≤ 0.10, ≤ 0.20)",
        p50 / raw_p50,
        p99 / raw_p50
    );
    println!("    phases (mean ms): {phases}");
    drop(warm);
    let mut floor = agent_floor(docker, n).await;
    let (floor_p50, _) = line(
        "(w) the agent alone: start `true`, its output's end, its exit",
        &mut floor,
    );
    println!(
        "    DCC's cost on top of the agent (warm job p50 - agent p50): {:.1} ms (target ≤ 5)",
        p50 - floor_p50
    );
}

/// The floor of the warm path: `n` times, a container of the test image with DCC's agent made
/// ready (untimed, as the pool does ahead of a job), then timed: `true` started through the
/// agent, its output read to the end, its exit reported.
async fn agent_floor(docker: &Docker, n: usize) -> Vec<f64> {
    use dcc_worker::agent::{Channel, Instruction, Start};
    let dir = tempfile::tempdir().expect("a scratch folder");
    let program = dir.path().join("dcc-agent");
    assert!(
        dcc_worker::agent::write(&program).expect("the agent is written"),
        "no agent in this build"
    );
    let mut times = Vec::new();
    for i in 0..=n {
        let scratch = tempfile::tempdir_in(dir.path()).expect("a folder");
        let channel = Channel::make(&scratch.path().join("ctl")).expect("a control folder");
        let mut body = raw_body();
        body.entrypoint = Some(vec![dcc_worker::agent::PATH_IN_CONTAINER.into()]);
        body.host_config = Some(bollard::models::HostConfig {
            binds: Some(vec![
                format!("{}:{}:ro", program.display(), dcc_worker::agent::PATH_IN_CONTAINER),
                channel.bind(),
            ]),
            ..Default::default()
        });
        let c = docker.create_container(None, body).await.expect("create");
        docker.start_container(&c.id, None).await.expect("start");
        let mut agent = channel.accept(None).await.expect("the agent connects");
        let t = Instant::now();
        let true_ = Instruction {
            argv: vec![b"true".to_vec()],
            env: Vec::new(),
        };
        let Ok(Start::Running { mut output }) = agent.start(&true_).await else {
            panic!("`true` did not start");
        };
        while output.next().await.is_some() {}
        assert_eq!(agent.exited().await.expect("the agent reports the exit"), 0);
        if i > 0 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let force = RemoveContainerOptionsBuilder::default().force(true).build();
        docker.remove_container(&c.id, Some(force)).await.expect("remove");
    }
    times
}

/// (b) a burst through one worker, against as many raw lifecycles at its concurrency.
async fn bursts(docker: &Docker, api: &dcc_e2e::Api, bind_api: &dcc_e2e::Api) {
    let slots = api.get("/api/v1/workers").await.body["workers"][0]["cpus"]
        .as_u64()
        .unwrap_or(1) as usize;
    // Raw, copy, bind, twice over: drift on a shared machine falls on all three alike.
    let burst: usize = std::env::var("BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut walls = [0f64; 3];
    let mut phases = [String::new(), String::new()];
    for _ in 0..2 {
        walls[0] += raw_burst(docker, burst, slots).await;
        for (i, a) in [api, bind_api].into_iter().enumerate() {
            let (wall, p) = dcc_burst(a, burst).await;
            walls[i + 1] += wall;
            phases[i] = p;
        }
    }
    println!(
        "{:<58} {:>8.2} s",
        format!("(a) {burst} raw lifecycles at concurrency {slots}, wall (mean of 2)"),
        walls[0] / 2.0
    );
    for (i, mode) in ["copy", "bind"].into_iter().enumerate() {
        println!(
            "{:<58} {:>8.2} s   ratio {:.2} (target ≤ {}); jobs/s ÷ raw {:.2} (target ≥ 0.9)",
            format!("(b) {mode}: {burst} standard jobs, one worker with {slots} slots"),
            walls[i + 1] / 2.0,
            walls[i + 1] / walls[0],
            if mode == "bind" { "1.05" } else { "1.15" },
            walls[0] / walls[i + 1]
        );
        println!("    phases of the last burst (mean ms): {}", phases[i]);
    }
}

/// (c) enqueue → claim and enqueue → container start, idle worker.
async fn claim_latency(docker: &Docker, api: &dcc_e2e::Api, n: usize) {
    let mut events = docker.events(Some(
        EventsOptionsBuilder::default()
            .filters(&HashMap::from([
                ("type", vec!["container"]),
                ("event", vec!["start"]),
                ("label", vec!["dcc.worker"]),
            ]))
            .build(),
    ));
    let mut claim: Vec<f64> = Vec::new();
    let mut start: Vec<f64> = Vec::new();
    for _ in 0..n {
        let a = api.submit(sh("true")).await;
        let id = a.body["jobId"].as_str().unwrap().to_string();
        let started_ns = loop {
            let ev = events.next().await.unwrap().unwrap();
            let attrs = ev.actor.and_then(|a| a.attributes).unwrap_or_default();
            if attrs.get("dcc.job") == Some(&id) {
                break ev.time_nano.unwrap_or(0);
            }
        };
        let v = api.get(&format!("/api/v1/jobs/{id}/wait?timeoutSecs=30")).await.body;
        claim.push(v["stats"]["queuedMs"].as_f64().unwrap());
        let created_ms = rfc3339_ms(v["createdAt"].as_str().unwrap());
        start.push(started_ns as f64 / 1e6 - created_ms as f64);
    }
    line("(c) enqueue → claim (queuedMs), idle worker", &mut claim);
    println!("    (target p50 ≤ 5 ms)");
    line("    enqueue → container started (Docker start event)", &mut start);
}

/// (d) submit throughput against raw Redis round trips and the floor server.
async fn submit_rates(submits: usize, concurrency: usize) {
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let mut c = conn.clone();
        let per = submits / concurrency;
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let _: () = redis::cmd("SET")
                    .arg(format!("bench:{w}:{i}"))
                    .arg("x")
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let redis_rate = submits as f64 / t.elapsed().as_secs_f64();
    let server = Dcc::builder(Role::ApiOnly, &redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .start()
        .await;
    let api = server.api();
    let submit_rate = submit_load(&api, submits, concurrency).await;
    let floor_rate = floor_rate(&redis, submits, concurrency).await;
    println!(
        "{:<58} {redis_rate:>8.0} ops/s",
        "(d) baseline: raw Redis SET round trips"
    );
    println!(
        "{:<58} {floor_rate:>8.0} req/s",
        "    floor: axum + one Redis script call per request"
    );
    println!(
        "{:<58} {submit_rate:>8.0} jobs/s   (ratio to the floor {:.2}, target ≥ 0.5; to Redis {:.2})",
        "    POST /api/v1/jobs accepted (no inputs)",
        submit_rate / floor_rate,
        submit_rate / redis_rate
    );
}

/// The floor server's one script: store the body under a new id and queue the id.
const FLOOR_SCRIPT: &str = "redis.call('HSET', KEYS[1], 'spec', ARGV[1]) \
    redis.call('LPUSH', KEYS[2], ARGV[2]) return 1";

/// The floor (d) is measured against: serves `POST /api/v1/jobs` on `port` until killed.
async fn floor_server(port: &str) {
    use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
    let redis_url = std::env::var("BENCH_FLOOR_REDIS").expect("BENCH_FLOOR_REDIS");
    let pool = deadpool_redis::Config::from_url(redis_url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .expect("pool");
    async fn submit(
        State(pool): State<deadpool_redis::Pool>,
        Json(body): Json<serde_json::Value>,
    ) -> (StatusCode, Json<serde_json::Value>) {
        let id = format!("{:016x}", rand::random::<u64>());
        let mut conn = pool.get().await.expect("redis connection");
        let _: i64 = redis::Script::new(FLOOR_SCRIPT)
            .key(format!("floor:job:{id}"))
            .key("floor:queue")
            .arg(body.to_string())
            .arg(&id)
            .invoke_async(&mut conn)
            .await
            .expect("script");
        (StatusCode::CREATED, Json(json!({"jobId": id})))
    }
    let app = Router::new().route("/api/v1/jobs", post(submit)).with_state(pool);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

/// Submits per second `api` accepts from `concurrency` clients sending `submits` in all.
async fn submit_load(api: &dcc_e2e::Api, submits: usize, concurrency: usize) -> f64 {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let api = api.clone();
        let per = submits / concurrency;
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let a = api.submit(json!({"image": IMAGE})).await;
                assert_eq!(a.status, 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    submits as f64 / t.elapsed().as_secs_f64()
}

/// Requests per second the floor server accepts, with the same client and load as (d).
async fn floor_rate(redis: &Redis, submits: usize, concurrency: usize) -> f64 {
    let port = dcc_e2e::free_port();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_FLOOR_SERVER", port.to_string())
        .env("BENCH_FLOOR_REDIS", redis.url())
        .spawn()
        .expect("floor server starts");
    let api = dcc_e2e::Api::new(format!("http://127.0.0.1:{port}"));
    dcc_e2e::eventually(
        std::time::Duration::from_secs(10),
        "the floor server listens",
        || async { std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ()) },
    )
    .await;
    let rate = submit_load(&api, submits, concurrency).await;
    let _ = child.kill();
    let _ = child.wait();
    rate
}

/// Submits (then views of those jobs) per second through `api` at `concurrency`.
async fn rates(api: &dcc_e2e::Api, submits: usize, concurrency: usize) -> (f64, f64) {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let api = api.clone();
        let per = submits / concurrency;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per);
            for _ in 0..per {
                ids.push(api.submit_id(json!({"image": IMAGE})).await);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let submit_rate = submits as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for chunk in ids {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for id in chunk {
                assert_eq!(api.get(&format!("/api/v1/jobs/{id}")).await.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (submit_rate, submits as f64 / t.elapsed().as_secs_f64())
}

/// (e) Tenants' cost: the same server and load with and without a tenant key.
async fn tenants(submits: usize, concurrency: usize) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.json");
    let digest: String = sha2::Sha256::digest(b"bench-key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let keys = json!({"keys": [{"name": "bench", "role": "submit", "sha256": digest,
        "submitsPerSec": 1e9, "burst": 1_000_000, "maxActiveJobs": 100_000_000}]});
    std::fs::write(&file, keys.to_string()).unwrap();
    for run in 1..=3 {
        let redis = Redis::start();
        let open = Dcc::builder(Role::ApiOnly, &redis)
            .env("DCC_LOG", "warn,dcc=info")
            .start()
            .await;
        let (s0, v0) = rates(&open.api(), submits, concurrency).await;
        drop(open);
        let redis = Redis::start();
        let keyed = Dcc::builder(Role::ApiOnly, &redis)
            .env("DCC_LOG", "warn,dcc=info")
            .env("DCC_API_KEYS_FILE", file.display())
            .start()
            .await;
        let (s1, v1) = rates(&keyed.api().with_key("bench-key"), submits, concurrency).await;
        println!(
            "(e) run {run}: submits/s {s0:>7.0} without keys, {s1:>7.0} as a tenant (ratio {:.2}); views/s {v0:>7.0} → {v1:>7.0} (ratio {:.2})",
            s1 / s0,
            v1 / v0
        );
    }
}

/// (f) Durable acknowledgements' cost: the same load on a primary with a replica, without and
/// with waiting for the replica, three runs alternating.
async fn durability(submits: usize, concurrency: usize) {
    let primary = Redis::start();
    let port = primary.port().to_string();
    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
    dcc_e2e::eventually(std::time::Duration::from_secs(20), "the replica to sync", || async {
        let mut c = replica.conn().await;
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await.ok()?;
        info.contains("master_link_status:up").then_some(())
    })
    .await;
    for run in 1..=3 {
        let mut row = Vec::new();
        for mode in ["none", "replicas:1"] {
            let server = Dcc::builder(Role::ApiOnly, &primary)
                .env("DCC_LOG", "warn,dcc=info")
                .env("DCC_DURABILITY", mode)
                .start()
                .await;
            row.push(timed_submits(&server.api(), submits, concurrency).await);
        }
        let ((r0, p50_0, p99_0), (r1, p50_1, p99_1)) = (row[0], row[1]);
        println!(
            "(f) run {run}: submits/s {r0:>7.0} none → {r1:>7.0} replicas:1 (ratio {:.2}); p50 {p50_0:.1} → {p50_1:.1} ms; p99 {p99_0:.1} → {p99_1:.1} ms",
            r1 / r0
        );
    }
}

/// Submits per second, and the p50 and p99 of one submit (ms).
async fn timed_submits(api: &dcc_e2e::Api, submits: usize, concurrency: usize) -> (f64, f64, f64) {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let api = api.clone();
        let per = submits / concurrency;
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::with_capacity(per);
            for _ in 0..per {
                let s = Instant::now();
                let a = api.submit(json!({"image": IMAGE})).await;
                assert_eq!(a.status, 201, "{:?}", a.body);
                times.push(s.elapsed().as_secs_f64() * 1000.0);
            }
            times
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = submits as f64 / t.elapsed().as_secs_f64();
    (rate, pct(&mut all, 0.5), pct(&mut all, 0.99))
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as the API writes it.
fn rfc3339_ms(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// `n` round trips of `body` to `path`, one at a time (after one warm-up), each after a raw
/// lifecycle (so drift on a shared machine falls on both alike); returns the raw times, the round
/// trips, and the mean of the jobs' own phases, so the bench says where the time goes.
async fn round_trips(
    docker: &Docker,
    api: &dcc_e2e::Api,
    path: &str,
    body: &serde_json::Value,
    n: usize,
) -> (Vec<f64>, Vec<f64>, String) {
    let _ = api.post(path, body).await;
    let mut views = Vec::new();
    let mut times = Vec::new();
    let mut raw = Vec::new();
    for _ in 0..n {
        raw.push(raw_container(docker).await);
        let t = Instant::now();
        let a = api.post(path, body).await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(a.status == 200 || a.status == 201, "{:?}", a.body);
        assert_eq!(a.body["status"], "succeeded", "{:?}", a.body);
        // Its container is removed after the answer: not while the next raw sample runs.
        let id = a.body["jobId"].as_str().unwrap_or_default().to_string();
        dcc_e2e::eventually(
            std::time::Duration::from_secs(10),
            "the job's container is removed",
            || async { dcc_e2e::containers_of_job(&id).is_empty().then_some(()) },
        )
        .await;
        views.push(a.body);
    }
    let mean_rt = times.iter().sum::<f64>() / n as f64;
    let (mut phases, total) = phase_means(&views);
    // Beyond the job's total: the HTTP request, and the answer after the result was recorded.
    phases.push_str(&format!(", beyond total {:.0}", mean_rt - total));
    (raw, times, phases)
}

/// `n` fast jobs, each in a warm container (waiting, untimed, for the pool to have one), each
/// after a raw cold lifecycle; as [`round_trips`].
async fn warm_round_trips(
    docker: &Docker,
    api: &dcc_e2e::Api,
    body: &serde_json::Value,
    n: usize,
) -> (Vec<f64>, Vec<f64>, String) {
    let _ = api.post("/api/v1/run", body).await; // teaches the pool the shape
    let (mut raw, mut times, mut views) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        // The pool full again (no refill under way): the job meets a quiet daemon, as one arriving
        // at an idle worker does.
        dcc_e2e::eventually(std::time::Duration::from_secs(30), "the pool is full", || async {
            let w = api.get("/api/v1/workers").await.body;
            (w["workers"][0]["warmContainers"].as_u64() == Some(2)).then_some(())
        })
        .await;
        raw.push(raw_container(docker).await);
        let t = Instant::now();
        let a = api.post("/api/v1/run", body).await;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(a.body["status"], "succeeded", "{:?}", a.body);
        assert_eq!(a.body["stats"]["warm"], true, "ran cold: {:?}", a.body);
        views.push(a.body);
    }
    let mean_rt = times.iter().sum::<f64>() / n as f64;
    let (mut phases, total) = phase_means(&views);
    phases.push_str(&format!(", beyond total {:.0}", mean_rt - total));
    (raw, times, phases)
}

/// The mean of each phase of the jobs' own stats (ms), and the mean total.
fn phase_means(views: &[serde_json::Value]) -> (String, f64) {
    let keys = [
        "queuedMs",
        "pullMs",
        "inputsMs",
        "createMs",
        "startMs",
        "runMs",
        "outputsMs",
        "totalMs",
    ];
    let n = views.len().max(1) as f64;
    let mean = |k: &str| views.iter().map(|v| v["stats"][k].as_f64().unwrap_or(0.0)).sum::<f64>() / n;
    let text = keys
        .iter()
        .map(|k| format!("{} {:.0}", k.trim_end_matches("Ms"), mean(k)))
        .collect::<Vec<_>>()
        .join(", ");
    (text, mean("totalMs"))
}

/// The raw lifecycle's calls, each timed (mean ms over `n`): what DCC's phases compare to.
async fn raw_phases(docker: &Docker, n: usize) {
    let mut sums = [0f64; 4];
    for _ in 0..n {
        let name = format!("bench-raw-{}", rand::random::<u32>());
        let mut t = Instant::now();
        let mut lap = |i: usize| {
            sums[i] += t.elapsed().as_secs_f64() * 1000.0;
            t = Instant::now();
        };
        docker
            .create_container(
                Some(
                    bollard::query_parameters::CreateContainerOptionsBuilder::default()
                        .name(&name)
                        .build(),
                ),
                raw_body(),
            )
            .await
            .unwrap();
        lap(0);
        docker.start_container(&name, None).await.unwrap();
        lap(1);
        let _ = docker.wait_container(&name, None).next().await;
        lap(2);
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        docker.remove_container(&name, Some(opts)).await.unwrap();
        lap(3);
    }
    let m = |i: usize| sums[i] / n as f64;
    println!(
        "    raw calls (mean ms): create {:.0}, start {:.0}, wait {:.0}, remove {:.0}",
        m(0),
        m(1),
        m(2),
        m(3)
    );
}

/// Wall time of `count` raw lifecycles, `concurrency` at a time.
async fn raw_burst(docker: &Docker, count: usize, concurrency: usize) -> f64 {
    let t = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (docker, next) = (docker.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                raw_container(&docker).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// Wall time from submitting `count` trivial standard jobs to the last one ending, and the
/// jobs' mean phases (their time in the queue left out: in a burst it is the wait for a slot).
async fn dcc_burst(api: &dcc_e2e::Api, count: usize) -> (f64, String) {
    let t = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..count {
        let a = api.submit(json!({"image": IMAGE, "command": ["true"]})).await;
        ids.push(a.body["jobId"].as_str().unwrap().to_string());
    }
    let mut views = Vec::new();
    for id in &ids {
        let v = api.get(&format!("/api/v1/jobs/{id}/wait?timeoutSecs=60")).await.body;
        assert_eq!(v["status"], "succeeded", "{v}");
        views.push(v);
    }
    let wall = t.elapsed().as_secs_f64();
    (wall, phase_means(&views).0)
}
