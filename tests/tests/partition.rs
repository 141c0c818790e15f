//! A worker cut off from Redis by the network, for real: it runs in a network namespace of the
//! test's own, reaching Redis over a veth pair, and the cut is a firewall rule in that namespace
//! that silently drops its packets to Redis (as a partition does; no connection is refused). The
//! Docker socket and the storage folder are files, so the worker keeps them. Three cut points,
//! each for 30 s; each must end with one result, no two containers of the job alive at once, and
//! no file of an abandoned attempt left in storage.

use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use dcc_e2e::{Dcc, Redis, Role, eventually, sh};

/// How long each cut lasts.
const CUT: Duration = Duration::from_secs(30);

/// A network namespace joined to the host by a veth pair: host side `10.213.N.1`, namespace side
/// `10.213.N.2`. Removed on drop.
struct Netns {
    name: String,
    host_if: String,
    net: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

impl Netns {
    /// `None` (with the reason printed) where this machine cannot make one (not root, no
    /// CAP_NET_ADMIN, no iproute2).
    fn create() -> Option<Self> {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        // Distinct per test process and test, so parallel runs do not collide.
        let net = ((std::process::id() as u8).wrapping_mul(7)).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let tag = format!("{:x}{:02x}", std::process::id() % 0xffff, net);
        let ns = Netns {
            name: format!("dcc-t-{tag}"),
            host_if: format!("vh{tag}"),
            net,
        };
        let (host, inner) = (format!("{}/30", ns.host_addr()), format!("10.213.{net}.2/30"));
        let ns_if = format!("vn{tag}");
        let steps: [&[&str]; 8] = [
            &["netns", "add", &ns.name],
            &["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if],
            &["link", "set", &ns_if, "netns", &ns.name],
            &["addr", "add", &host, "dev", &ns.host_if],
            &["link", "set", &ns.host_if, "up"],
            &["-n", &ns.name, "addr", "add", &inner, "dev", &ns_if],
            &["-n", &ns.name, "link", "set", &ns_if, "up"],
            &["-n", &ns.name, "link", "set", "lo", "up"],
        ];
        for step in steps {
            if let Err(e) = ip(step) {
                eprintln!("SKIPPED: cannot make a network namespace here ({e})");
                return None;
            }
        }
        Some(ns)
    }

    fn host_addr(&self) -> String {
        format!("10.213.{}.1", self.net)
    }

    /// Drops every packet from the namespace to the host side (Redis), or stops dropping them.
    fn cut(&self, on: bool) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "iptables"])
            .args([
                if on { "-A" } else { "-D" },
                "OUTPUT",
                "-d",
                &self.host_addr(),
                "-j",
                "DROP",
            ])
            .output()
            .expect("iptables runs");
        assert!(
            out.status.success(),
            "iptables: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// Docker's start and die events of every DCC job container, followed live from just before the
/// test's job is submitted (the daemon keeps only a short history, which a busy suite overruns).
struct ContainerLives {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ContainerLives {
    fn follow() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 1;
        let mut child = Command::new("docker")
            .args(["events", "--since", &since.to_string()])
            .args(["--filter", "type=container", "--filter", "label=dcc.job"])
            .args(["--filter", "event=start", "--filter", "event=die"])
            .args([
                "--format",
                "{{index .Actor.Attributes \"dcc.job\"}} {{index .Actor.Attributes \"dcc.attempt\"}} {{.Action}} {{.TimeNano}}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("docker events");
        let out = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        ContainerLives { child, lines }
    }

    /// (attempt, action) of `job`'s containers, in the order Docker reported them.
    fn of(&self, job: &str) -> Vec<(String, String)> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next()? == job).then_some(())?;
                Some((f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }
}

impl Drop for ContainerLives {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that no container of `job` started while another was alive.
async fn no_overlap(lives: &ContainerLives, job: &str) {
    // The last die event may trail the job's end by a moment.
    let lives = eventually(
        Duration::from_secs(10),
        "Docker's events of the job's containers",
        || async {
            let l = lives.of(job);
            let (starts, dies) = (
                l.iter().filter(|(_, a)| a == "start").count(),
                l.iter().filter(|(_, a)| a == "die").count(),
            );
            (starts > 0 && starts == dies).then_some(l)
        },
    )
    .await;
    let mut alive: Vec<&str> = Vec::new();
    for (attempt, action) in &lives {
        match action.as_str() {
            "start" => {
                assert!(
                    alive.is_empty(),
                    "attempt {attempt} started while {alive:?} ran: {lives:?}"
                );
                alive.push(attempt);
            }
            _ => alive.retain(|a| a != attempt),
        }
    }
    assert!(
        lives.iter().any(|(_, a)| a == "die"),
        "no container life seen: {lives:?}"
    );
}

/// One cut: a worker in the namespace runs `script` (cut `after` its container started), the cut
/// lasts [`CUT`]; a worker on the host takes what is re-queued. Returns the ended job's view and
/// the cut-off worker.
async fn cut_while_running(script: &str, lease_secs: u64, heartbeat_secs: u64) -> Option<(serde_json::Value, Dcc)> {
    let ns = Netns::create()?;
    let host = ns.host_addr();
    let redis = Redis::start_with(&["--bind", "127.0.0.1", &host, "--protected-mode", "no"]);
    let timing = |b: dcc_e2e::DccBuilder| {
        b.env("DCC_LEASE_SECS", lease_secs)
            .env("DCC_HEARTBEAT_SECS", heartbeat_secs)
    };
    let server = timing(Dcc::builder(Role::ApiOnly, &redis)).start().await;
    let api = server.api();
    let cut_off = timing(Dcc::builder(Role::Worker, &redis))
        .storage(&server.storage)
        .wrapped(&["ip", "netns", "exec", &ns.name])
        .env("DCC_REDIS_URL", format!("redis://{host}:{}", redis.port()))
        .start()
        .await;
    let lives = ContainerLives::follow();
    let id = api.submit_id(sh(script)).await;
    let v = api.wait_status(&id, "running", Duration::from_secs(30)).await;
    assert_eq!(v["workerId"], cut_off.worker_id.as_str());
    ns.cut(true);
    // A worker the cut does not reach, for what the reaper re-queues.
    let other = timing(Dcc::builder(Role::Worker, &redis))
        .storage(&server.storage)
        .start()
        .await;
    tokio::time::sleep(CUT).await;
    ns.cut(false);
    let done = eventually(Duration::from_secs(60), "the job to end", || async {
        let v = api.job(&id).await;
        (v["status"] == "succeeded" || v["status"] == "failed").then_some(v)
    })
    .await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}\n{}",
        cut_off.log(),
        other.log()
    );
    assert_eq!(api.log(&id, "stdout").await, "done\n", "one result, written once");
    // Every attempt but the recorded one leaves nothing in storage once Redis answers again.
    let recorded = done["attempt"].as_u64().unwrap() as u32;
    for a in 1..recorded {
        let prefix = format!("jobs/{id}/a{a}/");
        eventually(
            Duration::from_secs(30),
            "the abandoned attempt's files to go",
            || async { server.storage.objects(&prefix).await.is_empty().then_some(()) },
        )
        .await;
    }
    no_overlap(&lives, &id).await;
    drop(other);
    Some((done, cut_off))
}

/// Cut mid-run, the job outliving the cut: the cut-off worker stops its container before the
/// lease can expire on Redis's clock; the job runs again elsewhere, after that container died.
#[tokio::test]
async fn a_cut_mid_run_stops_the_container_before_the_job_runs_elsewhere() {
    let Some((done, cut_off)) = cut_while_running("sleep 20; echo done", 8, 2).await else {
        return;
    };
    assert_eq!(done["attempt"], 2, "{done}");
    assert!(cut_off.log().contains("LeaseExpired"), "{}", cut_off.log());
}

/// Cut as the job ends: the result is in hand during the cut, the lease expires meanwhile and the
/// job runs again elsewhere; when Redis answers, the fenced finish refuses the stale result and
/// its files go.
#[tokio::test]
async fn a_result_finished_during_a_long_cut_is_refused_by_fencing_and_its_files_removed() {
    let Some((done, cut_off)) = cut_while_running("sleep 3; echo done", 8, 2).await else {
        return;
    };
    assert_eq!(done["attempt"], 2, "{done}");
    let log = cut_off.log();
    assert!(
        log.contains("result refused"),
        "the result was never offered to the fenced finish:\n{log}"
    );
}

/// Cut as the job ends, shorter than the lease but longer than the worker's safety margin: the
/// worker stops treating the lease as its own (the flag), yet the result is still offered when
/// Redis answers, and fencing, not the flag, decides: the lease still held, it is recorded.
#[tokio::test]
async fn a_result_finished_during_a_cut_shorter_than_the_lease_is_recorded() {
    // Lease 36 s, heartbeat 2 s: the worker stops 27 s after its last renewal was sent (25 to 27 s
    // into the 30 s cut); Redis's deadline is at least 36 s after it, 4 s after the cut, and the
    // first renewal after the cut comes within 2 s.
    let Some((done, cut_off)) = cut_while_running("sleep 3; echo done", 36, 2).await else {
        return;
    };
    assert_eq!(done["attempt"], 1, "{done}\n{}", cut_off.log());
    assert!(cut_off.log().contains("LeaseExpired"), "{}", cut_off.log());
}
