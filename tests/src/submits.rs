//! Clients that keep submitting while a test breaks Redis underneath them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::{Api, IMAGE, eventually};

/// Clients that submit jobs with ids of their own, retrying each id until it is acknowledged
/// (201, or 200 when a retry finds it): what a careful client does with a 503.
pub struct Stream {
    acked: Arc<Mutex<Vec<String>>>,
    not_durable: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stream {
    /// Starts `clients` submitting clients.
    pub fn start(api: &Api, clients: usize) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let not_durable = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|c| {
                let (api, acked, nd, stop) = (api.clone(), acked.clone(), not_durable.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("fo-{c}-{n}");
                        let mut job = json!({"image": IMAGE, "command": ["true"]});
                        job["id"] = json!(id);
                        let a = api.try_submit(job).await;
                        match a.as_ref().map(|a| (a.status, a.code().to_string())) {
                            Some((200 | 201, _)) => {
                                acked.lock().unwrap().push(id);
                                n += 1;
                            }
                            Some((503, code)) => {
                                if code == "NOT_DURABLE" {
                                    nd.fetch_add(1, Ordering::Relaxed);
                                    assert_eq!(a.unwrap().body["jobId"], json!(id), "NOT_DURABLE names the job");
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            other => panic!("unexpected answer {other:?}"),
                        }
                    }
                })
            })
            .collect();
        Stream {
            acked,
            not_durable,
            stop,
            tasks,
        }
    }

    /// `503 NOT_DURABLE` answers so far.
    pub fn not_durable(&self) -> usize {
        self.not_durable.load(Ordering::Relaxed)
    }

    /// Submits acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits (30 s at most) until more than `n` submits were acknowledged.
    pub async fn acked_beyond(&self, n: usize, what: &str) {
        eventually(Duration::from_secs(30), what, || async {
            (self.acked() >= n).then_some(())
        })
        .await;
    }

    /// Stops every client; the acknowledged ids, in order.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("a submitting client panicked");
        }
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}
