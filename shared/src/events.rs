//! Job events: every transition script PUBLISHes a JSON event on one channel; each process
//! keeps one subscription and fans events out in memory to whoever waits (long-polls, workers
//! watching for cancels, WebSockets). Pub/sub is fire-and-forget, so after a reconnect (or when
//! a receiver falls behind) subscribers get [`Event::Resync`] and re-read the state they care
//! about from the job records, which are the truth.

use backon::BackoffBuilder;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::clock::Millis;

/// Events buffered per receiver before it is told to resync.
const CAPACITY: usize = 4096;

/// One published job event.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// The job.
    pub job_id: String,
    /// `queued`, `running`, a terminal state, or `deleted`.
    pub status: String,
    /// The attempt it concerns.
    #[serde(default)]
    pub attempt: u32,
    /// When it happened (ms).
    pub at: Millis,
    /// The worker involved, if any.
    #[serde(default)]
    pub worker: Option<String>,
}

/// What subscribers receive.
#[derive(Clone, Debug)]
pub enum Event {
    /// A job changed.
    Job(JobEvent),
    /// Events may have been missed: re-read what you watch.
    Resync,
}

/// The process-wide fan-out of job events.
#[derive(Clone)]
pub struct Events {
    /// Sender side; receivers come from [`Events::subscribe`].
    tx: broadcast::Sender<Event>,
}

impl Events {
    /// Subscribes to `channel` on the Redis at `url` for as long as the process lives,
    /// reconnecting with backoff.
    pub fn spawn(url: &str, channel: String) -> Self {
        Self::spawn_task(url, channel).0
    }

    /// As [`Events::spawn`], with the subscription's task: aborting it closes the subscription
    /// (many subscribers in one process, as the fleet simulation has).
    pub fn spawn_task(url: &str, channel: String) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, _) = broadcast::channel(CAPACITY);
        let events = Events { tx: tx.clone() };
        let url = url.to_string();
        let task = tokio::spawn(async move {
            let mut pauses = crate::retry::until_reachable().build();
            loop {
                match run(&url, &channel, &tx).await {
                    Ok(()) => {
                        tracing::warn!(
                            event = "EventsDisconnected",
                            "job event subscription ended; reconnecting"
                        );
                        // It was connected: start the backoff over.
                        pauses = crate::retry::until_reachable().build();
                    }
                    Err(e) => {
                        tracing::warn!(event = "EventsDisconnected", error = %e, "job event subscription failed; reconnecting")
                    }
                }
                let _ = tx.send(Event::Resync);
                tokio::time::sleep(pauses.next().unwrap_or(crate::retry::MAX_PAUSE)).await;
            }
        });
        (events, task)
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

async fn run(url: &str, channel: &str, tx: &broadcast::Sender<Event>) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    // Anything published while we were away is lost: tell subscribers to re-read.
    let _ = tx.send(Event::Resync);
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
        match serde_json::from_slice::<JobEvent>(&payload) {
            Ok(ev) => {
                let _ = tx.send(Event::Job(ev));
            }
            Err(e) => tracing::warn!(error = %e, "unreadable job event"),
        }
    }
    Ok(())
}
