//! DCC's latency and throughput benchmark. Every number is printed next to a baseline measured
//! in the same run on the same machine, so results compare across machines. Run it with
//! `scripts/bench.sh` (release build). It starts its own Redis and `dcc` processes.
//!
//! (a) raw Docker: create + start + wait + remove of a trivial container through bollard;
//! (b) the same container as a fast job through `POST /api/v1/run`, and the overhead b − a;
//! (c) enqueue → claim latency of an idle worker (the job's `queuedMs`), and enqueue → container
//!     start (Docker's own start event);
//! (d) standard submits per second one server accepts, against raw Redis round trips per second;
//! (e) the cost of tenants: submits and job views per second through a tenant's key (key lookup,
//!     rate and quota scripts, ownership checks) against the same server without keys.
//!
//! `BENCH_ONLY=e` runs (e) alone.

use std::collections::HashMap;
use std::time::Instant;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
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

async fn raw_container(docker: &Docker) -> f64 {
    let t = Instant::now();
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["true".into()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = docker.create_container(None, body).await.expect("create");
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
    if std::env::var("BENCH_ONLY").as_deref() == Ok("e") {
        tenants(submits, concurrency).await;
        return;
    }

    // (a) raw Docker.
    raw_container(&docker).await; // warm-up
    let mut raw: Vec<f64> = Vec::new();
    for _ in 0..n {
        raw.push(raw_container(&docker).await);
    }
    let (raw50, raw99) = line("(a) raw bollard create+start+wait+remove", &mut raw);

    // (b) fast job round trip.
    let redis = Redis::start();
    let dcc = Dcc::builder(Role::Server, &redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .start()
        .await;
    let api = dcc.api();
    let job = json!({"image": IMAGE, "command": ["true"]});
    let _ = api.post("/api/v1/run", &job).await;
    let mut fast: Vec<f64> = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let a = api.post("/api/v1/run", &job).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        fast.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (fast50, fast99) = line("(b) fast job round trip, POST /api/v1/run", &mut fast);
    println!(
        "    overhead b − a: p50 {:.1} ms, p99 {:.1} ms   (target p50 ≤ 15 ms; ratio b/a p50 {:.2})",
        fast50 - raw50,
        fast99 - raw99,
        fast50 / raw50
    );

    // (b') the same with DCC_FILES_MODE=bind (no archive calls through dockerd).
    let bind_redis = Redis::start();
    let bind = Dcc::builder(Role::Server, &bind_redis)
        .env("DCC_LOG", "warn,dcc=info,dcc_worker=info")
        .env("DCC_FILES_MODE", "bind")
        .start()
        .await;
    let bind_api = bind.api();
    let _ = bind_api.post("/api/v1/run", &job).await;
    let mut fast_bind: Vec<f64> = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let a = bind_api.post("/api/v1/run", &job).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
        fast_bind.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (bind50, bind99) = line("(b') fast job round trip, DCC_FILES_MODE=bind", &mut fast_bind);
    println!(
        "    overhead b' − a: p50 {:.1} ms, p99 {:.1} ms   (target p50 ≤ 15 ms; ratio b'/a p50 {:.2})",
        bind50 - raw50,
        bind99 - raw99,
        bind50 / raw50
    );
    drop(bind);

    // (c) enqueue → claim and enqueue → container start, idle worker.
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
    drop(dcc);

    // (d) submit throughput against raw Redis round trips.
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
    let submit_rate = submits as f64 / t.elapsed().as_secs_f64();
    println!(
        "{:<58} {redis_rate:>8.0} ops/s",
        "(d) baseline: raw Redis SET round trips"
    );
    println!(
        "{:<58} {submit_rate:>8.0} jobs/s   (ratio to Redis {:.2}; target ≥ 5000 jobs/s)",
        "    POST /api/v1/jobs accepted (no inputs)",
        submit_rate / redis_rate
    );
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

/// Milliseconds since the epoch of an RFC 3339 UTC time as the API writes it.
fn rfc3339_ms(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
