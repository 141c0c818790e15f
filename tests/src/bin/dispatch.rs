//! Where a dispatched job's Redis time goes, transition by transition, each in isolation against
//! one Redis holding a backlog: `DISPATCH_JOBS` (2,000) submits through the enqueue script, as
//! many claims, one renewal each (`DISPATCH_RENEW_BATCH`, 5: the leases one worker's heartbeat
//! renews in one call, as a worker running that many jobs does), as many finishes. For each phase, `INFO commandstats` before and
//! after: the scripts' calls, their µs per call (the whole transition, as Redis times `FCALL`) and
//! how much of it the commands they called took (the rest is the script's own run: argument
//! tables, `cjson`, Lua). The same run with history off and on (`DCC_HISTORY_TTL`) prints what
//! keeping history costs per job, as a ratio of the same measure taken minutes apart.
//! On a shared VM the µs of two runs of the same build can differ by 2×: the last column and
//! the last lines divide each run's script time by the time of the commands those scripts called
//! in the same run (the same commands in both builds of a Lua-only change): it moved by ~10 %
//! where the µs moved 2×, so compare two builds by it, over several alternated runs.
//!
//! Settings: `DISPATCH_JOBS` (2000), `DISPATCH_BACKLOG` (20000 jobs queued beforehand, as a busy
//! queue has), `DISPATCH_RUNS` (3: each mode measured this many times, alternating),
//! `DISPATCH_TENANTS` (4: the jobs' tenants, taking turns), `DISPATCH_SHARDS` (`1`; e.g. `1,3`:
//! the whole measure for each shard count, the tenants spread evenly over the shards, and each
//! primary's share of the scripts' time printed: on a cluster of three primaries, three shards
//! should cost per job what one does, a third of it on each primary).
//! Run: `cargo run --release -p dcc-e2e --bin dispatch` (on a local Redis Cluster with
//! `DCC_TEST_REDIS=cluster`: the same scripts, reached through the cluster client).

use std::collections::HashMap;
use std::time::Duration;

use dcc_e2e::{IMAGE, Redis};
use dcc_shared::history::DEFAULT_TTL;
use dcc_shared::job::spec::{JobRequest, Limits, definition_hash};
use dcc_shared::job::{JobSpec, JobState, Lane, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::claim::{Claim, Claimant};
use dcc_shared::queue::enqueue::{NewJob, Quota};
use dcc_shared::queue::finish::Outcome;
use dcc_shared::queue::lease::Lease;
use serde_json::json;

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// `INFO commandstats`: per command, (calls, µs), summed over the primaries (on a cluster, the
/// ones holding the deployment's shards do the work; replicas replay writes and are left out).
fn commandstats(redis: &Redis) -> HashMap<String, (u64, u64)> {
    let mut out = HashMap::new();
    for each in per_primary(redis) {
        for (k, (calls, us)) in each {
            let e = out.entry(k).or_insert((0, 0));
            *e = (e.0 + calls, e.1 + us);
        }
    }
    out
}

/// `INFO commandstats` of each primary apart.
fn per_primary(redis: &Redis) -> Vec<HashMap<String, (u64, u64)>> {
    let mut all = Vec::new();
    for node in redis.nodes() {
        if node.text("INFO replication").is_some_and(|i| i.contains("role:master")) {
            let mut out = HashMap::new();
            add_commandstats(&mut out, &node.text("INFO commandstats").expect("INFO"));
            all.push(out);
        }
    }
    all
}

/// Each primary's share (%) of the script time between two [`per_primary`] readings.
fn shares(a: &[HashMap<String, (u64, u64)>], b: &[HashMap<String, (u64, u64)>]) -> Vec<f64> {
    let us =
        |m: &HashMap<String, (u64, u64)>| SCRIPTS.iter().filter_map(|k| m.get(*k)).map(|v| v.1).sum::<u64>() as f64;
    let each: Vec<f64> = a.iter().zip(b).map(|(a, b)| us(b) - us(a)).collect();
    let total: f64 = each.iter().sum::<f64>().max(1e-9);
    each.iter().map(|u| 100.0 * u / total).collect()
}

fn add_commandstats(out: &mut HashMap<String, (u64, u64)>, info: &str) {
    for line in info.lines() {
        let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let field = |k: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let e = out.entry(name.to_string()).or_default();
        e.0 += field("calls");
        e.1 += field("usec");
    }
}

/// The commands that run a transition: a function call, or a script's where functions are refused.
const SCRIPTS: [&str; 2] = ["fcall", "evalsha"];

/// One phase: script calls, µs per call, µs per call in the commands it called.
#[derive(Clone, Copy, Default)]
struct Cost {
    calls: u64,
    us: f64,
    inner_us: f64,
    inner_calls: f64,
}

fn cost(a: &HashMap<String, (u64, u64)>, b: &HashMap<String, (u64, u64)>) -> Cost {
    let d = |k: &str| {
        let (c0, u0) = a.get(k).copied().unwrap_or_default();
        let (c1, u1) = b.get(k).copied().unwrap_or_default();
        (c1 - c0, u1 - u0)
    };
    let (calls, us) = SCRIPTS.iter().map(|k| d(k)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let (mut inner_calls, mut inner_us) = (0, 0);
    for k in b.keys().filter(|k| {
        !matches!(
            k.as_str(),
            "evalsha" | "fcall" | "info" | "script|load" | "function|load" | "eval"
        )
    }) {
        let (c, u) = d(k);
        inner_calls += c;
        inner_us += u;
    }
    let per = |v: u64| v as f64 / calls.max(1) as f64;
    Cost {
        calls,
        us: per(us),
        inner_us: per(inner_us),
        inner_calls: per(inner_calls),
    }
}

struct Jobs {
    spec: JobSpec,
    hash: String,
}

impl Jobs {
    fn new() -> Self {
        let spec = JobRequest::from_value(json!({"image": IMAGE, "command": ["true"]}))
            .and_then(|r| r.validate(&Limits::default()))
            .expect("a valid job")
            .spec;
        let hash = definition_hash(&spec, &[]);
        Jobs { spec, hash }
    }

    async fn submit(&self, q: &Queue, tenant: &str) {
        let id = q.new_id(tenant);
        let job = NewJob {
            id: &id,
            spec: &self.spec,
            lane: Lane::for_priority(self.spec.priority),
            def_hash: &self.hash,
            inputs_prefix: "",
            tenant,
            quota: Quota::default(),
            retention: Duration::from_secs(3600),
        };
        q.enqueue(job, dcc_shared::clock::now_ms()).await.expect("enqueue");
    }
}

/// The four phases of `n` jobs on `q`: (enqueue, claim, renew, finish).
async fn phases(q: &Queue, jobs: &Jobs, n: usize, redis: &Redis) -> ([Cost; 4], Vec<f64>) {
    // One claimant per shard, each at home in its own, taking turns: a fleet whose workers'
    // homes are spread (one worker would claim every job from its home shard).
    let names = worker_names(q.shard_count());
    let workers: Vec<Claimant<'_>> = names
        .iter()
        .map(|name| Claimant {
            worker: name,
            free_slots: 1 << 20,
            total_slots: 1 << 20,
            free_memory_mb: 1 << 40,
            total_memory_mb: 1 << 40,
            lease: Duration::from_secs(60),
        })
        .collect();
    let tenants = tenant_names(q.shard_count());
    let p0 = per_primary(redis);
    let s0 = commandstats(redis);
    for i in 0..n {
        jobs.submit(q, &tenants[i % tenants.len()]).await;
    }
    let s1 = commandstats(redis);
    let mut leases: Vec<Lease> = Vec::with_capacity(n);
    for i in 0..n {
        match q
            .claim(QueueName::Cpu, &workers[i % workers.len()], 0)
            .await
            .expect("claim")
        {
            Claim::Claimed(claimed) => leases.push(claimed.lease),
            _ => panic!("the backlog ran out"),
        }
    }
    let s2 = commandstats(redis);
    // A worker's heartbeat renews all its leases in one call.
    for held in leases.chunks(env_or("DISPATCH_RENEW_BATCH", 5usize).max(1)) {
        for b in q.renew_all(held, Duration::from_secs(60), 0).await {
            b.answer.expect("renew");
        }
    }
    let s3 = commandstats(redis);
    let ok = Outcome {
        state: JobState::Succeeded,
        exit_code: Some(0),
        error: None,
        image_digest: Some("sha256:0".into()),
        stats: Default::default(),
        outputs: vec![],
    };
    let now = dcc_shared::clock::now_ms();
    for l in &leases {
        q.finish(l, &ok, Duration::from_secs(3600), now).await.expect("finish");
    }
    let s4 = commandstats(redis);
    let p4 = per_primary(redis);
    (
        [cost(&s0, &s1), cost(&s1, &s2), cost(&s2, &s3), cost(&s3, &s4)],
        shares(&p0, &p4),
    )
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("DISPATCH_JOBS", 2000);
    let backlog: usize = env_or("DISPATCH_BACKLOG", 20_000);
    let runs: usize = env_or("DISPATCH_RUNS", 3);
    let shard_counts: Vec<usize> = std::env::var("DISPATCH_SHARDS")
        .unwrap_or_else(|_| "1".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let redis = Redis::start();
    for shards in shard_counts {
        measure(&redis, shards, n, backlog, runs).await;
    }
}

/// The whole measure with the queue split over `shards`.
async fn measure(redis: &Redis, shards: usize, n: usize, backlog: usize, runs: usize) {
    let mut c = redis.conn().await;
    let jobs = Jobs::new();
    let names = ["enqueue", "claim", "renew", "finish"];
    // Per mode (off, on): every run's per-job total, and the phases of each run.
    let mut totals: [Vec<f64>; 2] = [vec![], vec![]];
    let mut rows: Vec<(bool, [Cost; 4])> = Vec::new();
    // Run 0 warms Redis (its allocator, the script cache) and is not counted.
    for run in 0..=runs {
        // (the order alternates: neither mode always runs on a Redis the other just used)
        let order = if run % 2 == 0 { [false, true] } else { [true, false] };
        for on in order {
            let mi = usize::from(on);
            let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.expect("FLUSHALL");
            let q = Queue::new(&redis.url(), "dcc")
                .expect("queue")
                .with_shards(shards)
                .with_history(if on { DEFAULT_TTL } else { Duration::ZERO });
            let tenants = tenant_names(shards);
            for i in 0..backlog {
                jobs.submit(&q, &tenants[i % tenants.len()]).await;
            }
            let (p, split) = phases(&q, &jobs, n, redis).await;
            let total: f64 = p.iter().map(|c| c.us * c.calls as f64 / n as f64).sum();
            let split: Vec<String> = split.iter().map(|s| format!("{s:.0}%")).collect();
            eprintln!(
                "{shards} shard(s), run {run}, history {}: {total:.1} µs per job; primaries' shares of script time: {}",
                if on { "on" } else { "off" },
                split.join(" / ")
            );
            if run > 0 {
                totals[mi].push(total);
                rows.push((on, p));
            }
        }
    }
    println!(
        "\n## Redis time per transition, {shards} shard(s) ({n} jobs over a backlog of {backlog}, {runs} runs per mode)\n"
    );
    println!(
        "| history | transition | script calls per job | µs per script call (median of runs) | of which in its commands | commands per call | script ÷ its commands (median of runs) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for on in [false, true] {
        for (i, name) in names.iter().enumerate() {
            let mut us: Vec<f64> = rows.iter().filter(|r| r.0 == on).map(|r| r.1[i].us).collect();
            let mut inner: Vec<f64> = rows.iter().filter(|r| r.0 == on).map(|r| r.1[i].inner_us).collect();
            let mut ratio: Vec<f64> = rows
                .iter()
                .filter(|r| r.0 == on)
                .map(|r| r.1[i].us / r.1[i].inner_us.max(1e-9))
                .collect();
            let first = rows.iter().find(|r| r.0 == on).map(|r| r.1[i]).unwrap_or_default();
            println!(
                "| {} | {name} | {:.2} | {:.1} | {:.1} | {:.1} | {:.2} |",
                if on { "on" } else { "off" },
                first.calls as f64 / n as f64,
                median(&mut us),
                median(&mut inner),
                first.inner_calls,
                median(&mut ratio)
            );
        }
    }
    for on in [false, true] {
        let mut ratio: Vec<f64> = rows
            .iter()
            .filter(|r| r.0 == on)
            .map(|r| {
                let all = |f: fn(&Cost) -> f64| r.1.iter().map(|c| f(c) * c.calls as f64).sum::<f64>();
                all(|c| c.us) / all(|c| c.inner_us).max(1e-9)
            })
            .collect();
        println!(
            "Per job, history {}: scripts ÷ the commands they called {:.3} (median of runs; compare builds by this)",
            if on { "on" } else { "off" },
            median(&mut ratio)
        );
    }
    let (off, on) = (median(&mut totals[0]), median(&mut totals[1]));
    println!(
        "\nPer job (enqueue + claim + one renewal, in calls of {} leases, + finish): {off:.1} µs without history, {on:.1} µs with: ×{:.3} ({:+.1}%); runs: off {:?}, on {:?}",
        env_or("DISPATCH_RENEW_BATCH", 5usize).max(1),
        on / off,
        (on / off - 1.0) * 100.0,
        totals[0].iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>(),
        totals[1].iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>()
    );
}

/// One worker id per shard, the i-th at home in shard i.
fn worker_names(shards: usize) -> Vec<String> {
    let mut candidates = (0..).map(|k| format!("bench-{k}"));
    (0..shards)
        .map(|s| {
            candidates
                .by_ref()
                .find(|w| dcc_shared::keys::shard_of(w, shards) == s)
                .expect("a name")
        })
        .collect()
}

/// `DISPATCH_TENANTS` tenant names (at least one per shard), the i-th in shard i mod `shards`.
fn tenant_names(shards: usize) -> Vec<String> {
    let want = env_or("DISPATCH_TENANTS", 4usize).max(shards);
    let mut names = Vec::with_capacity(want);
    let mut candidates = (0..).map(|k| format!("team-{k}"));
    while names.len() < want {
        let shard = names.len() % shards;
        names.extend(
            candidates
                .by_ref()
                .find(|t| dcc_shared::keys::tenant_shard(t, shards) == shard),
        );
    }
    names
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
