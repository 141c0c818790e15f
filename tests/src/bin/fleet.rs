//! How far one Redis carries a DCC fleet. Starts its own Redis and a real API-only `dcc server`
//! (its reaper, retention sweep, HTTP API and WebSocket fan-out), then for each fleet size N:
//!
//! 1. N simulated workers (`dcc_e2e::fleet`: the real queue code and scripts, a timer for a
//!    container) register and idle for one heartbeat: the cost of an idle fleet (beats, claim
//!    polls, upkeep) in Redis CPU and ops/s;
//! 2. `FLEET_QUEUED` jobs are queued through the shared enqueue path (the API's script, its
//!    definition and hash) while the fleet is paused: Redis's time per queued job is the
//!    submit's share of a job's end-to-end cost, printed beside the busy window's;
//! 3. for `FLEET_WINDOW_SECS` the fleet works the backlog while two HTTP submitters post jobs
//!    through the API, two poll the view of a queued job and `FLEET_WATCHERS` (2) WebSocket
//!    clients follow every job (those told they missed events are counted): claims/s against the fleet's
//!    demand (slots ÷ job length), claim round trip p50/p99, Redis main-thread CPU, ops/s and
//!    the commands that take its time, this process's and the server's CPU;
//! 4. the scaler's Redis reads (depths, workers, too-large scan) timed with the backlog;
//! 5. every worker dies at once, and one reaper pass hands all their leases back (timed).
//!
//! Memory: bytes per queued job from queueing `FLEET_QUEUED` jobs into an empty Redis; bytes per
//! finished job from the growth after the run, less what is still queued.
//!
//! Settings (environment): `FLEET_SIZES` (10,100,500,1000), `FLEET_QUEUED` (100000),
//! `FLEET_WINDOW_SECS` (15), `FLEET_IDLE_SECS` (10), `FLEET_JOB_MS` (1000: jobs last 0.5–1.5×),
//! `FLEET_WATCHERS` (2: WebSocket followers of `*`, as dashboards),
//! `FLEET_HISTORY` (`on`, `off`, or `both`: each size without then with the history the scripts
//! keep, `DCC_HISTORY_TTL`, and the Redis time per job of each, compared), `FLEET_REDIS_CPU`
//! (unset: every process shares every core; a CPU number: Redis runs on that core alone and this
//! process and the server on the others, as Redis on its own node would — on a 2-core machine the
//! generator and the server otherwise keep evicting Redis from its core and its caches, and the
//! same scripts take longer per call), `FLEET_SHARDS` (1: the queue split over that many shards,
//! `DCC_REDIS_SHARDS`; run it on a cluster, `DCC_TEST_REDIS=cluster`, to put each on its own
//! primary: Redis's CPU, commands and memory are then summed over the primaries).
//! Run it with `scripts/fleet.sh` (release build).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dcc_e2e::fleet::{Fleet, FleetSettings};
use dcc_e2e::{Dcc, IMAGE, Redis, Role};
use dcc_shared::job::spec::{JobRequest, Limits, definition_hash};
use dcc_shared::job::{JobId, JobSpec, Lane, QueueName};
use dcc_shared::queue::Queue;
use dcc_shared::queue::enqueue::{NewJob, Quota};
use dcc_shared::storage::paths;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// `FLEET_SHARDS` (1): the deployment's shards (`DCC_REDIS_SHARDS`); on a cluster
/// (`DCC_TEST_REDIS=cluster`) each on its own primary, and Redis's numbers summed over them.
fn shards() -> usize {
    env_or("FLEET_SHARDS", 1usize).max(1)
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize] as f64
}

/// Connections for the bench's own reads, patient with a saturated Redis: to the server, or on a
/// cluster to every primary (each holds one shard of a sharded deployment; with one shard, the
/// others only gossip and add nothing to the sums).
async fn admins(redis: &Redis) -> Vec<dcc_shared::testing::TestConn> {
    let mut out = Vec::new();
    for node in redis.nodes() {
        if redis.is_cluster() && !node.text("INFO replication").is_some_and(|i| i.contains("role:master")) {
            continue;
        }
        let c = redis::Client::open(node.url())
            .expect("valid url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers");
        let mut c = dcc_shared::testing::TestConn::Node(c);
        c.set_response_timeout(Duration::from_secs(60));
        out.push(c);
    }
    out
}

/// What `INFO` says at one moment.
struct Snapshot {
    at: Instant,
    fields: HashMap<String, String>,
    /// Per command: (calls, µs).
    commands: HashMap<String, (u64, u64)>,
    /// CPU seconds of this process and of the server.
    own_cpu: f64,
    server_cpu: f64,
}

fn proc_cpu(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 of stat (utime, stime), counted after the ')' of the name
    (t(11) + t(12)) / 100.0
}

async fn snapshot(redis: &Redis, server: &Dcc) -> Snapshot {
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut commands: HashMap<String, (u64, u64)> = HashMap::new();
    for mut c in admins(redis).await {
        let info: String = redis::cmd("INFO")
            .arg("everything")
            .query_async(&mut c)
            .await
            .expect("INFO");
        for line in info.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            if let Some(cmd) = k.strip_prefix("cmdstat_") {
                let get = |name: &str| {
                    v.split(',')
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let e = commands.entry(cmd.to_string()).or_default();
                *e = (e.0 + get("calls"), e.1 + get("usec"));
            } else {
                // Numbers add up over the primaries (CPU seconds, ops, memory); others keep the
                // first's.
                let v = v.trim();
                match (fields.get(k).and_then(|a| a.parse::<f64>().ok()), v.parse::<f64>()) {
                    (Some(a), Ok(b)) => fields.insert(k.to_string(), (a + b).to_string()),
                    (None, _) if !fields.contains_key(k) => fields.insert(k.to_string(), v.to_string()),
                    _ => None,
                };
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        fields,
        commands,
        own_cpu: proc_cpu(std::process::id()),
        server_cpu: proc_cpu(server.pid()),
    }
}

impl Snapshot {
    fn num(&self, k: &str) -> f64 {
        self.fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    }

    fn redis_cpu(&self) -> f64 {
        let main = self.num("used_cpu_sys_main_thread") + self.num("used_cpu_user_main_thread");
        if main > 0.0 {
            main
        } else {
            self.num("used_cpu_sys") + self.num("used_cpu_user")
        }
    }
}

/// What happened between two snapshots.
struct Delta {
    secs: f64,
    redis_cpu_pct: f64,
    ops_per_sec: f64,
    own_cpu_pct: f64,
    server_cpu_pct: f64,
    /// Commands by share of Redis's command time: (name, calls/s, share %, µs per call).
    top: Vec<(String, f64, f64, f64)>,
    /// Share of Redis's main-thread CPU spent inside commands (the rest: network I/O, pub/sub
    /// delivery, the event loop). `INFO commandstats` counts a command a script calls in the
    /// script's time and on its own too: an upper bound.
    in_commands_pct: f64,
    /// Script and function calls (`EVALSHA`, `FCALL`) and their µs, in all.
    script_calls: f64,
    script_us: f64,
}

fn delta(a: &Snapshot, b: &Snapshot) -> Delta {
    let secs = (b.at - a.at).as_secs_f64();
    let mut per: Vec<(String, u64, u64)> = b
        .commands
        .iter()
        .map(|(k, (calls, us))| {
            let (c0, u0) = a.commands.get(k).copied().unwrap_or((0, 0));
            (k.clone(), calls - c0.min(*calls), us - u0.min(*us))
        })
        .filter(|(_, c, _)| *c > 0)
        .collect();
    let (script_calls, script_us) = per
        .iter()
        .filter(|(k, _, _)| k == "evalsha" || k == "fcall")
        .fold((0.0, 0.0), |(c0, u0), (_, c, u)| (c0 + *c as f64, u0 + *u as f64));
    let total_us: u64 = per.iter().map(|(_, _, u)| u).sum::<u64>().max(1);
    per.sort_by_key(|p| std::cmp::Reverse(p.2));
    let cpu = (b.redis_cpu() - a.redis_cpu()).max(1e-9);
    Delta {
        secs,
        in_commands_pct: total_us as f64 / 1e6 * 100.0 / cpu,
        script_calls,
        script_us,
        redis_cpu_pct: cpu * 100.0 / secs,
        ops_per_sec: (b.num("total_commands_processed") - a.num("total_commands_processed")) / secs,
        own_cpu_pct: (b.own_cpu - a.own_cpu) * 100.0 / secs,
        server_cpu_pct: (b.server_cpu - a.server_cpu) * 100.0 / secs,
        top: per
            .into_iter()
            .take(16)
            .map(|(k, c, u)| {
                (
                    k,
                    c as f64 / secs,
                    u as f64 * 100.0 / total_us as f64,
                    u as f64 / c as f64,
                )
            })
            .collect(),
    }
}

fn top_line(d: &Delta) -> String {
    let top = d
        .top
        .iter()
        .map(|(k, c, s, us)| format!("{k} {c:.0}/s {us:.1}µs {s:.0}%"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{:.0}% of Redis CPU in commands (scripts' own calls counted twice); {top}",
        d.in_commands_pct
    )
}

/// Empties Redis; waits until the memory of what was removed is freed.
async fn flush(redis: &Redis) {
    for c in admins(redis).await {
        let mut c2 = c.clone();
        let _: () = redis::cmd("FLUSHALL")
            .arg("ASYNC")
            .query_async(&mut c2)
            .await
            .expect("FLUSHALL");
        dcc_e2e::eventually(Duration::from_secs(60), "FLUSHALL ASYNC frees its keys", || {
            let mut c = c.clone();
            async move {
                let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await.ok()?;
                info.contains("lazyfree_pending_objects:0\r").then_some(())
            }
        })
        .await;
    }
    // The deployment's shard count goes with everything else; a server started on a queue that
    // holds jobs would otherwise take it for one from before shards.
    let queue = Queue::new(&redis.url(), "dcc").expect("queue");
    queue.agree_on_shards(Some(shards())).await.expect("the shard count");
}

/// Memory every primary uses, added up.
async fn used_memory(redis: &Redis) -> f64 {
    let mut total = 0.0;
    for mut c in admins(redis).await {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c)
            .await
            .expect("INFO");
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    total
}

/// Queues `n` trivial jobs through the API's enqueue script (64 at a time); returns jobs/s.
async fn preload(queue: &Queue, n: usize) -> f64 {
    let spec = JobRequest::from_value(json!({"image": IMAGE, "command": ["true"]}))
        .and_then(|r| r.validate(&Limits::default()))
        .expect("a valid job")
        .spec;
    let spec: Arc<JobSpec> = Arc::new(spec);
    let hash = Arc::new(definition_hash(&spec, &[]));
    let left = Arc::new(AtomicU64::new(n as u64));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (queue, spec, hash, left) = (queue.clone(), spec.clone(), hash.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                .is_ok()
            {
                let id = JobId::generate();
                let prefix = paths::inputs(&id, &rand::random::<u64>().to_string());
                let job = NewJob {
                    id: &id,
                    spec: &spec,
                    lane: Lane::for_priority(spec.priority),
                    def_hash: &hash,
                    inputs_prefix: &prefix,
                    // What an API server without keys records (DCC_API_KEYS unset).
                    tenant: "local",
                    quota: Quota::default(),
                    retention: std::time::Duration::from_secs(60),
                };
                queue.enqueue(job, dcc_shared::clock::now_ms()).await.expect("enqueue");
            }
        }));
    }
    for t in tasks {
        t.await.expect("preload task");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Runs `f` on a thread of its own with a runtime of its own, so what the bench times as a
/// client (API calls, the scaler's reads) does not queue behind the simulated fleet's tasks. (It
/// still shares the machine's cores with the fleet and Redis.)
fn apart<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _ = tx.send(rt.block_on(f));
    });
    rx
}

/// What the API's clients saw in the busy window.
#[derive(Default)]
struct Sides {
    /// Submit round trips (µs).
    submits: Vec<u32>,
    /// Job-view round trips (µs) of queued jobs.
    views: Vec<u32>,
    /// WebSocket messages received, over every follower.
    ws_msgs: u64,
    /// Of them, `resync` notices: a follower fell behind and missed events.
    ws_resyncs: u64,
}

/// Two clients posting jobs through the API (20 a second each), two polling the view of the
/// last job submitted (queued behind the backlog; 20 a second each), and `FLEET_WATCHERS` (2)
/// WebSocket clients following every job, until `stop`.
fn clients(base: String, stop: CancellationToken) -> tokio::sync::oneshot::Receiver<Sides> {
    apart(async move {
        let last = Arc::new(std::sync::Mutex::new(None::<String>));
        let subs: Vec<_> = (0..2)
            .map(|_| tokio::spawn(submitter(base.clone(), stop.clone(), last.clone())))
            .collect();
        let pollers: Vec<_> = (0..2)
            .map(|_| tokio::spawn(poller(base.clone(), stop.clone(), last.clone())))
            .collect();
        // (on a thread of their own: thousands of messages a second would otherwise delay the
        // submits and views timed here)
        let watchers: Vec<_> = (0..watchers())
            .map(|_| apart(watcher(base.replace("http://", "ws://") + "/api/v1/ws", stop.clone())))
            .collect();
        let mut out = Sides::default();
        for s in subs {
            out.submits.extend(s.await.unwrap_or_default());
        }
        for p in pollers {
            out.views.extend(p.await.unwrap_or_default());
        }
        for w in watchers {
            let (msgs, resyncs) = w.await.unwrap_or_default();
            out.ws_msgs += msgs;
            out.ws_resyncs += resyncs;
        }
        out
    })
}

/// Posts a job 20 times a second until `stop`, noting the last id; returns the latencies (µs).
async fn submitter(base: String, stop: CancellationToken, last: Arc<std::sync::Mutex<Option<String>>>) -> Vec<u32> {
    let http = reqwest::Client::new();
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !stop.is_cancelled() {
        tick.tick().await;
        let t = Instant::now();
        let r = http
            .post(format!("{base}/api/v1/jobs"))
            .json(&json!({"image": IMAGE, "command": ["true"]}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            lat.push(t.elapsed().as_micros() as u32);
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            *last.lock().unwrap() = v["jobId"].as_str().map(String::from);
        }
    }
    lat
}

/// Reads the view of the last job submitted 20 times a second until `stop`; the latencies (µs).
async fn poller(base: String, stop: CancellationToken, last: Arc<std::sync::Mutex<Option<String>>>) -> Vec<u32> {
    let http = reqwest::Client::new();
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !stop.is_cancelled() {
        tick.tick().await;
        let Some(id) = last.lock().unwrap().clone() else {
            continue;
        };
        let t = Instant::now();
        let r = http.get(format!("{base}/api/v1/jobs/{id}")).send().await;
        if r.is_ok_and(|r| r.status().is_success()) {
            lat.push(t.elapsed().as_micros() as u32);
        }
    }
    lat
}

/// `FLEET_WATCHERS` (2): the WebSocket clients following every job, as dashboards do.
fn watchers() -> usize {
    env_or("FLEET_WATCHERS", 2usize)
}

/// Follows every job over a WebSocket until `stop`; the messages it got, and how many of them
/// said it had missed events.
async fn watcher(url: String, stop: CancellationToken) -> (u64, u64) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let sub = json!({"subscribe": "*"}).to_string();
    ws.send(tokio_tungstenite::tungstenite::Message::text(sub))
        .await
        .expect("ws send");
    let (mut n, mut resyncs) = (0u64, 0u64);
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(m)) => {
                    n += 1;
                    // (a substring, not a parse: the watcher must not be the one that lags)
                    if m.to_text().is_ok_and(|t| t.contains(r#""type":"resync""#)) {
                        resyncs += 1;
                    }
                }
                _ => return (n, resyncs),
            },
            _ = stop.cancelled() => return (n, resyncs),
        }
    }
}

/// One row of the table.
struct Row {
    /// Whether the scripts kept history.
    history: bool,
    workers: usize,
    slots: u64,
    demand: f64,
    idle: Delta,
    preload_rate: f64,
    /// Redis main-thread time per job queued by the preload (µs; the fleet paused, 64 submits
    /// at a time): the submit's share of a job's end-to-end cost, which the busy window (its
    /// backlog queued before it) does not hold.
    enqueue_us: f64,
    busy: Delta,
    claims_per_sec: f64,
    finished_per_sec: f64,
    claim_p50_ms: f64,
    claim_p99_ms: f64,
    submit_p50_ms: f64,
    submit_p99_ms: f64,
    view_p50_ms: f64,
    view_p99_ms: f64,
    ws_msgs_per_sec: f64,
    /// `resync` notices the followers got (each: it fell behind and missed events).
    ws_resyncs: u64,
    observe_ms: f64,
    /// Why a scaler read failed, if one did.
    observe_failed: Option<String>,
    reap_ms: f64,
    reaped: u32,
    finished_bytes: f64,
    /// Commands over the slow-log threshold in the busy window: (what, count, mean µs).
    slow: Vec<(String, u64, f64)>,
    errors: u64,
    lease_lost: u64,
}

/// Slow-log threshold (µs): what the busy window's slow-log keeps.
const SLOW_US: u64 = 200;

async fn slowlog_reset(redis: &Redis) {
    for mut c in admins(redis).await {
        let _: () = redis::cmd("SLOWLOG")
            .arg("RESET")
            .query_async(&mut c)
            .await
            .expect("SLOWLOG");
    }
}

/// The slow-log grouped by command and first key (ids stripped): the scripts and reads that
/// take longest, worst first.
async fn slowlog(redis: &Redis) -> Vec<(String, u64, f64)> {
    let mut entries: Vec<redis::Value> = Vec::new();
    for mut c in admins(redis).await {
        let more: Vec<redis::Value> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(2000)
            .query_async(&mut c)
            .await
            .expect("SLOWLOG");
        entries.extend(more);
    }
    let mut groups: HashMap<String, (u64, u64)> = HashMap::new();
    for e in entries {
        let redis::Value::Array(f) = e else { continue };
        let us: u64 = f.get(2).and_then(|v| redis::from_redis_value_ref(v).ok()).unwrap_or(0);
        let args: Vec<String> = f
            .get(3)
            .and_then(|v| redis::from_redis_value_ref(v).ok())
            .unwrap_or_default();
        let cmd = args.first().cloned().unwrap_or_default().to_lowercase();
        // EVALSHA sha numkeys key1 … (FCALL name numkeys key1 …): the first key tells the script.
        let key = if cmd == "evalsha" || cmd == "fcall" {
            args.get(3)
        } else {
            args.get(1)
        };
        let key: String = key
            .map(|k| k.split(':').take(3).collect::<Vec<_>>().join(":"))
            .unwrap_or_default();
        let g = groups.entry(format!("{cmd} {key}")).or_default();
        g.0 += 1;
        g.1 += us;
    }
    let mut out: Vec<(String, u64, f64)> = groups
        .into_iter()
        .map(|(k, (n, us))| (k, n, us as f64 / n as f64))
        .collect();
    out.sort_by_key(|g| std::cmp::Reverse(g.1 * g.2 as u64));
    out.truncate(5);
    out
}

/// `call`'s answer, asked again (up to 20 times, a second apart) while it fails.
async fn retried<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = dcc_shared::Result<T>>,
{
    for _ in 0..20 {
        match call().await {
            Ok(v) => return v,
            Err(e) => eprintln!("  (retrying a bench read: {e})"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("Redis did not answer the bench for 20 s");
}

/// The Redis reads of one scaler pass.
async fn observe(queue: &Queue) -> dcc_shared::Result<()> {
    queue.depths(dcc_shared::clock::now_ms()).await?;
    queue.workers().await?;
    for q in QueueName::ALL {
        queue.too_large_for(q, 4, 1000).await?;
    }
    Ok(())
}

/// The scaler's Redis reads (its AWS call aside) while the fleet works, three times: their
/// times (µs), and the last failure.
async fn scaler_reads(url: String) -> (Vec<u32>, Option<String>) {
    apart(async move {
        let queue = Queue::new(&url, "dcc").expect("queue").with_shards(shards());
        let (mut obs, mut failed) = (Vec::new(), None);
        for _ in 0..3 {
            let t = Instant::now();
            match observe(&queue).await {
                Ok(()) => obs.push(t.elapsed().as_micros() as u32),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        (obs, failed)
    })
    .await
    .expect("scaler reads")
}

/// Claims and ends of the fleet so far.
fn claims_and_ends(fleet: &Fleet) -> (u64, u64) {
    (
        fleet.stats.claims.load(Ordering::Relaxed),
        fleet.stats.finished.load(Ordering::Relaxed),
    )
}

async fn measure(redis: &Redis, server: &Dcc, n: usize, queued: usize, bytes_queued: f64, history: bool) -> Row {
    let (window, idle_secs) = (env_or("FLEET_WINDOW_SECS", 15u64), env_or("FLEET_IDLE_SECS", 10u64));
    let job_ms: u64 = env_or("FLEET_JOB_MS", 1000);
    flush(redis).await;
    let mut s = FleetSettings::new(&redis.url(), n);
    s.shards = shards();
    s.job_ms = job_ms / 2..=job_ms * 3 / 2;
    s.history = history_ttl(history);
    let queue = Queue::new(&redis.url(), &s.prefix)
        .expect("queue")
        .with_shards(s.shards)
        .with_history(s.history);
    let fleet = Fleet::start(&s).await;
    let slots = fleet.total_slots();
    // Idle: one heartbeat with nothing queued.
    let a = snapshot(redis, server).await;
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let b = snapshot(redis, server).await;
    let idle = delta(&a, &b);
    let mem_idle = used_memory(redis).await;
    // The backlog is queued while the fleet claims nothing (a large fleet would drain it as fast
    // as it is queued), then the fleet starts on it.
    fleet.pause(true);
    let p0 = snapshot(redis, server).await;
    let preload_rate = preload(&queue, queued).await;
    let p1 = snapshot(redis, server).await;
    let loading = delta(&p0, &p1);
    let enqueue_us = loading.redis_cpu_pct / 100.0 * loading.secs * 1e6 / queued.max(1) as f64;
    fleet.pause(false);
    // Busy: the fleet works the backlog beside submitters and watchers.
    let stop = CancellationToken::new();
    let side = clients(format!("http://127.0.0.1:{}", server.port), stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    slowlog_reset(redis).await;
    let (c0, f0) = claims_and_ends(&fleet);
    let a = snapshot(redis, server).await;
    tokio::time::sleep(Duration::from_secs(window)).await;
    let b = snapshot(redis, server).await;
    let (c1, f1) = claims_and_ends(&fleet);
    stop.cancel();
    let mut sides = side.await.expect("clients");
    let slow = slowlog(redis).await;
    let busy = delta(&a, &b);
    let mut lat = fleet.stats.claim_latencies(a.at, b.at);
    let (mut obs, observe_failed) = scaler_reads(redis.url()).await;
    // Every worker dies; memory and one reaper pass after their leases ran out.
    fleet.crash_all();
    // (Retried: a Redis that was saturated a moment ago may still time out a call.)
    let left_queued = retried(|| queue.depths(dcc_shared::clock::now_ms()))
        .await
        .iter()
        .map(|(_, d)| d.queued + d.fast_queued)
        .sum::<u64>();
    let finished = fleet.stats.finished.load(Ordering::Relaxed);
    let mem_now = used_memory(redis).await;
    let finished_bytes = (mem_now - mem_idle - left_queued as f64 * bytes_queued) / finished.max(1) as f64;
    let after_lease = retried(|| queue.time()).await + s.lease.as_millis() as i64 + 1000;
    let t = Instant::now();
    let reaped = retried(|| queue.reap(s.retention, after_lease)).await;
    let reap_ms = t.elapsed().as_secs_f64() * 1000.0;
    Row {
        history,
        workers: n,
        slots,
        demand: slots as f64 * 1000.0 / job_ms as f64,
        idle,
        preload_rate,
        enqueue_us,
        claims_per_sec: (c1 - c0) as f64 / busy.secs,
        finished_per_sec: (f1 - f0) as f64 / busy.secs,
        busy,
        claim_p50_ms: pct(&mut lat, 0.5) / 1000.0,
        claim_p99_ms: pct(&mut lat, 0.99) / 1000.0,
        submit_p50_ms: pct(&mut sides.submits, 0.5) / 1000.0,
        submit_p99_ms: pct(&mut sides.submits, 0.99) / 1000.0,
        view_p50_ms: pct(&mut sides.views, 0.5) / 1000.0,
        view_p99_ms: pct(&mut sides.views, 0.99) / 1000.0,
        ws_msgs_per_sec: sides.ws_msgs as f64 / window as f64,
        ws_resyncs: sides.ws_resyncs,
        observe_ms: pct(&mut obs, 0.5) / 1000.0,
        observe_failed,
        reap_ms,
        reaped: reaped.requeued + reaped.failed,
        finished_bytes,
        slow,
        errors: fleet.stats.errors.load(Ordering::Relaxed),
        lease_lost: fleet.stats.lease_lost.load(Ordering::Relaxed),
    }
}

fn print(rows: &[Row], bytes_queued: f64, queued: usize) {
    println!("\n## Fleet against one Redis ({queued} jobs queued at the start of each busy window)\n");
    println!(
        "| history | workers | slots | demand jobs/s | claims/s | finished/s | claim p50 / p99 ms | Redis CPU busy | ops/s busy | Redis CPU idle fleet | ops/s idle | generator CPU | server CPU | submit p50 / p99 ms | queued job view p50 / p99 ms | scaler reads ms | reap of all leases |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} / {:.1} | {:.0}% | {:.0} | {:.1}% | {:.0} | {:.0}% | {:.0}% | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {} in {:.0} ms |",
            on_off(r.history),
            r.workers,
            r.slots,
            r.demand,
            r.claims_per_sec,
            r.finished_per_sec,
            r.claim_p50_ms,
            r.claim_p99_ms,
            r.busy.redis_cpu_pct,
            r.busy.ops_per_sec,
            r.idle.redis_cpu_pct,
            r.idle.ops_per_sec,
            r.busy.own_cpu_pct,
            r.busy.server_cpu_pct,
            r.submit_p50_ms,
            r.submit_p99_ms,
            r.view_p50_ms,
            r.view_p99_ms,
            r.observe_ms,
            r.reaped,
            r.reap_ms,
        );
    }
    println!("\nBytes per queued job: {bytes_queued:.0}");
    for r in rows {
        println!(
            "N={}: enqueue {:.0} jobs/s (fleet paused); bytes per finished job ~{:.0}; WebSocket messages {:.0}/s over {} followers of `*` ({} told they missed events); failed Redis calls of the fleet {}, lease lost {}{}",
            r.workers,
            r.preload_rate,
            r.finished_bytes,
            r.ws_msgs_per_sec,
            watchers(),
            r.ws_resyncs,
            r.errors,
            r.lease_lost,
            r.observe_failed
                .as_deref()
                .map(|e| format!("; a scaler read failed: {e}"))
                .unwrap_or_default()
        );
        println!(
            "  Redis main thread per claimed job: {:.0} µs, {:.0} µs of it in scripts ({:.2} script calls per job)",
            redis_us_per_job(r),
            r.busy.script_us / r.busy.secs / r.claims_per_sec.max(1.0),
            r.busy.script_calls / r.busy.secs / r.claims_per_sec.max(1.0),
        );
        println!(
            "  end to end: {:.0} µs per job = {:.0} µs to queue it (the preload, fleet paused) + {:.0} µs from claim to events",
            r.enqueue_us + redis_us_per_job(r),
            r.enqueue_us,
            redis_us_per_job(r),
        );
        println!("  busy: {}", top_line(&r.busy));
        println!("  idle: {}", top_line(&r.idle));
        let slow: Vec<String> = r.slow.iter().map(|(k, n, us)| format!("{k} ×{n} {us:.0}µs")).collect();
        println!("  over {SLOW_US}µs in the busy window: {}", slow.join(", "));
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("FLEET_SIZES")
        .unwrap_or_else(|_| "10,100,500,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let queued: usize = env_or("FLEET_QUEUED", 100_000);
    let modes: &[bool] = match std::env::var("FLEET_HISTORY").as_deref() {
        Ok("off") => &[false],
        Ok("both") => &[false, true],
        _ => &[true],
    };
    let redis = match dcc_shared::testing::cluster_wanted() {
        true => Redis::cluster_with(3, 1, &["--maxclients", "20000"]),
        false => Redis::start_with(&["--maxclients", "20000"]),
    };
    {
        for mut c in admins(&redis).await {
            for (k, v) in [("slowlog-log-slower-than", SLOW_US), ("slowlog-max-len", 2000)] {
                let _: () = redis::cmd("CONFIG")
                    .arg("SET")
                    .arg(k)
                    .arg(v)
                    .query_async(&mut c)
                    .await
                    .expect("CONFIG");
            }
        }
    }
    if let Some(cpu) = std::env::var("FLEET_REDIS_CPU").ok().and_then(|v| v.parse().ok()) {
        pin(&redis, cpu);
    }
    // Memory per queued job: an empty Redis, then the backlog alone.
    flush(&redis).await;
    let queue = Queue::new(&redis.url(), "dcc")
        .expect("queue")
        .with_shards(shards())
        .with_history(history_ttl(*modes.last().unwrap_or(&true)));
    let m0 = used_memory(&redis).await;
    let rate = preload(&queue, queued).await;
    let bytes_queued = (used_memory(&redis).await - m0) / queued as f64;
    eprintln!("queued {queued} jobs at {rate:.0}/s: {bytes_queued:.0} bytes each");
    let mut rows = Vec::new();
    for &n in &sizes {
        for &history in modes {
            // The server keeps (or not) history too: its reaper's and sampler's share.
            let ttl = if history { "1d" } else { "0" };
            let server = Dcc::builder(Role::ApiOnly, &redis)
                .env("DCC_HISTORY_TTL", ttl)
                .env("DCC_REDIS_SHARDS", shards())
                .start()
                .await;
            eprintln!("fleet of {n} workers, history {}…", on_off(history));
            let row = measure(&redis, &server, n, queued, bytes_queued, history).await;
            eprintln!(
                "  {:.0} claims/s, Redis CPU {:.0}% busy / {:.1}% idle",
                row.claims_per_sec, row.busy.redis_cpu_pct, row.idle.redis_cpu_pct
            );
            rows.push(row);
        }
    }
    print(&rows, bytes_queued, queued);
    print_history_cost(&rows);
}

/// Every thread of every Redis node on `cpu` alone, this process (and the server it starts
/// later, which inherits it) on the other cores.
fn pin(redis: &Redis, cpu: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let others: Vec<String> = (0..cores).filter(|c| *c != cpu).map(|c| c.to_string()).collect();
    assert!(!others.is_empty(), "FLEET_REDIS_CPU={cpu} leaves no core for the rest");
    let mut pids: Vec<(String, u32)> = redis.nodes().iter().map(|n| (cpu.to_string(), n.pid())).collect();
    pids.push((others.join(","), std::process::id()));
    for (cpus, pid) in pids {
        let ok = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &cpus, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "taskset -a -p -c {cpus} {pid} failed");
    }
    eprintln!(
        "Redis pinned to CPU {cpu}, the generator and the server to {}",
        others.join(",")
    );
}

fn history_ttl(on: bool) -> Duration {
    if on {
        dcc_shared::history::DEFAULT_TTL
    } else {
        Duration::ZERO
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Redis main-thread time per claimed job in the busy window (µs).
fn redis_us_per_job(r: &Row) -> f64 {
    r.busy.redis_cpu_pct * 10_000.0 / r.claims_per_sec.max(1.0)
}

/// Per size measured both ways: the Redis time per job without and with history.
fn print_history_cost(rows: &[Row]) {
    for off in rows.iter().filter(|r| !r.history) {
        let Some(on) = rows.iter().find(|r| r.history && r.workers == off.workers) else {
            continue;
        };
        let (a, b) = (redis_us_per_job(off), redis_us_per_job(on));
        println!(
            "N={}: Redis main-thread time per claimed job {a:.0} µs without history, {b:.0} µs with ({:+.1}%)",
            off.workers,
            (b / a - 1.0) * 100.0
        );
    }
}
