//! A write a client is told about is confirmed on the connection that made it, right after it,
//! in the same pipeline (`Queue::send_confirmed`): no failover and no new connection can come
//! between the write and its `WAIT`. Sent apart, on a cluster, a `WAIT` after a failover went to
//! the promoted replica, where this client had written nothing, and "confirmed" at once a write
//! that may have died with the old primary.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use dcc_shared::job::JobState;
use dcc_shared::queue::Queue;
use dcc_shared::queue::durable::{Durability, DurabilityPolicy};
use dcc_shared::testing::Redis;
use serde_json::json;

/// What a node runs, as `MONITOR` prints it (one line per command), until stopped.
struct Monitor {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(url: &str) -> Monitor {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let ok: String = redis::cmd("MONITOR").query(&mut con).unwrap();
        assert_eq!(ok, "OK");
        con.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Default::default();
        let stop: Arc<AtomicBool> = Default::default();
        let (l, s) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(v) = con.recv_response()
                    && let Ok(line) = redis::from_redis_value::<String>(v)
                {
                    l.lock().unwrap().push(line);
                }
            }
        });
        Monitor {
            lines,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits (at most 10 s) until what was printed so far satisfies `done`.
    async fn until(&self, what: &str, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(&self.lines.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "the monitor never printed {what}: {:#?}",
                self.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

/// `[0 127.0.0.1:50000] "fcall" …` → (`127.0.0.1:50000`, `fcall`); commands a function runs
/// are `[0 lua]`.
fn client_and_command(line: &str) -> Option<(String, String)> {
    let (_, rest) = line.split_once('[')?;
    let (who, rest) = rest.split_once(']')?;
    let client = who.split_whitespace().nth(1)?.to_string();
    let command = rest.split_whitespace().next()?.trim_matches('"').to_lowercase();
    Some((client, command))
}

/// The commands the connection that called the function `name` sent after that call, up to and
/// with its next `wait` (all of them when none came).
fn after_call(lines: &[String], name: &str) -> Vec<String> {
    let at = lines
        .iter()
        .position(|l| l.to_lowercase().contains("\"fcall\"") && l.contains(name))
        .unwrap_or_else(|| panic!("no call of {name}: {lines:#?}"));
    let (client, _) = client_and_command(&lines[at]).unwrap();
    let mut sent = Vec::new();
    for (c, cmd) in lines[at + 1..].iter().filter_map(|l| client_and_command(l)) {
        if c == client {
            let last = cmd == "wait";
            sent.push(cmd);
            if last {
                break;
            }
        }
    }
    sent
}

#[tokio::test]
async fn a_write_and_its_confirmation_go_together_on_one_connection() {
    let (redis, _replica) = match dcc_shared::testing::cluster_wanted() {
        true => (Redis::start(), None),
        false => {
            let primary = Redis::start();
            let port = primary.port().to_string();
            let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &port]);
            (primary, Some(replica))
        }
    };
    let q = Queue::new(&redis.url(), "t")
        .unwrap()
        .with_durability(DurabilityPolicy {
            mode: Durability::Replicas(1),
            timeout: Duration::from_secs(5),
        });
    let home = &redis.nodes()[redis.primary_of(&q.keys().index()).unwrap()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !home
        .text("INFO replication")
        .is_some_and(|i| i.contains("state=online"))
    {
        assert!(Instant::now() < deadline, "the replica never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    q.install_library().await.unwrap();
    let monitor = Monitor::start(&home.url());
    let job = json!({"image": "alpine", "command": ["true"]});
    submit(&q, "a", "one", job, 0).await;
    let c = claimed(&q, T0).await.expect("claimed");
    end(&q, &c.lease, JobState::Succeeded, T0 + 1).await;
    monitor
        .until("the finish's wait", |lines| {
            lines
                .iter()
                .skip_while(|l| !(l.to_lowercase().contains("\"fcall\"") && l.contains("_finish")))
                .any(|l| l.to_lowercase().contains("\"wait\""))
        })
        .await;
    let lines = monitor.stop();
    for transition in ["_enqueue", "_finish"] {
        // the function's own commands are the `lua` client's; the connection's next commands
        // are the mark and the wait
        assert_eq!(after_call(&lines, transition), ["incr", "wait"], "{lines:#?}");
    }
}
