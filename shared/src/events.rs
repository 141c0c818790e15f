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
use crate::connection::Target;
use crate::job::{JobState, QueueName};

/// Events buffered per receiver before it is told to resync.
const CAPACITY: usize = 4096;

/// One published job event.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// The job.
    pub job_id: String,
    /// The state it is in now, or `deleted`.
    pub status: EventStatus,
    /// The attempt it concerns.
    #[serde(default)]
    pub attempt: u32,
    /// When it happened (ms).
    pub at: Millis,
    /// The worker involved, if any.
    #[serde(default)]
    pub worker: Option<String>,
    /// Set on the event of an attempt's recorded result (`finish`): what the servers' metrics
    /// count, so that no server reads the record of every ended job.
    #[serde(default, flatten)]
    pub ended: Option<EndedRun>,
}

/// What a `finish` event tells of the run it ended.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndedRun {
    /// The job's queue.
    pub queue: QueueName,
    /// Created to started (ms), when both are known.
    #[serde(default)]
    pub wait_ms: Option<i64>,
    /// The container's run time (ms).
    pub run_ms: u64,
}

/// What a job event says: the job's state now, or that it is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum EventStatus {
    /// It is in this state now.
    Now(JobState),
    /// It was deleted: every trace is gone.
    Deleted,
}

impl EventStatus {
    /// The wire spelling (`queued`, …, `deleted`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Now(s) => s.as_str(),
            EventStatus::Deleted => "deleted",
        }
    }

    /// The terminal state it reached, if it did (a deleted job reached none).
    pub fn ended(self) -> Option<JobState> {
        match self {
            EventStatus::Now(s) if s.is_terminal() => Some(s),
            _ => None,
        }
    }

    /// True when the job stopped running from outside: cancelled or deleted (a worker running it
    /// stops its container).
    pub fn stops_the_container(self) -> bool {
        matches!(self, EventStatus::Now(JobState::Cancelled) | EventStatus::Deleted)
    }
}

impl TryFrom<String> for EventStatus {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "deleted" => Ok(EventStatus::Deleted),
            other => JobState::parse(other)
                .map(EventStatus::Now)
                .ok_or_else(|| format!("unknown job event status {other:?}")),
        }
    }
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
    /// Subscribes to `channels` (one per shard: [`crate::queue::Queue::event_channels`]) on the
    /// Redis at `url` for as long as the process lives, reconnecting with backoff. On a cluster
    /// each is a shard channel (`SSUBSCRIBE`: the scripts `SPUBLISH`), heard on the primary
    /// holding its shard's slot and followed through failovers by the cluster client.
    pub fn spawn(url: &str, channels: Vec<String>) -> Self {
        Self::spawn_task(url, channels).0
    }

    /// As [`Events::spawn`], with the subscription's task: aborting it closes the subscription
    /// (many subscribers in one process, as the fleet simulation has).
    pub fn spawn_task(url: &str, channels: Vec<String>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, _) = broadcast::channel(CAPACITY);
        let events = Events { tx: tx.clone() };
        let target = Target::parse(url).unwrap_or_else(|_| Target::Node(url.to_string()));
        let task = tokio::spawn(async move {
            let mut pauses = crate::retry::until_reachable().build();
            loop {
                let run = match &target {
                    Target::Node(url) => run(url, &channels, &tx).await,
                    Target::Cluster(seeds) => run_sharded(seeds, &channels, &tx).await,
                };
                match run {
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

async fn run(url: &str, channels: &[String], tx: &broadcast::Sender<Event>) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channels).await?;
    // Anything published while we were away is lost: tell subscribers to re-read.
    let _ = tx.send(Event::Resync);
    let mut stream = pubsub.on_message();
    while let Some(msg) = stream.next().await {
        forward(msg.get_payload_bytes(), tx);
    }
    Ok(())
}

/// The subscription on a cluster: `SSUBSCRIBE` through a RESP3 cluster connection, which sends
/// it to the primary of the channel's slot. A node's connection lost, or the slot moved away
/// from the node (a failover that left the old primary alive unsubscribes its shard channels),
/// ends it: the caller subscribes again, through a fresh slot map.
async fn run_sharded(seeds: &[String], channels: &[String], tx: &broadcast::Sender<Event>) -> redis::RedisResult<()> {
    let (push, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let client = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push)
        .build()?;
    let mut conn = client.get_async_connection().await?;
    // One by one: the channels of a sharded deployment are in different slots.
    for channel in channels {
        conn.ssubscribe(channel).await?;
    }
    let _ = tx.send(Event::Resync);
    while let Some(p) = pushes.recv().await {
        match p.kind {
            redis::PushKind::SMessage => {
                if let Some(redis::Value::BulkString(payload)) = p.data.get(1) {
                    forward(payload, tx);
                }
            }
            redis::PushKind::SUnsubscribe | redis::PushKind::Disconnection => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}

/// Hands one published event to the process's receivers.
fn forward(payload: &[u8], tx: &broadcast::Sender<Event>) {
    match serde_json::from_slice::<JobEvent>(payload) {
        Ok(ev) => {
            let _ = tx.send(Event::Job(ev));
        }
        Err(e) => tracing::warn!(error = %e, "unreadable job event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finish_event_tells_what_the_metrics_count() {
        let ev: JobEvent = serde_json::from_str(
            r#"{"jobId": "a", "status": "succeeded", "attempt": 1, "at": 5, "worker": "w", "queue": "gpu",
                "runMs": 1200, "waitMs": 30}"#,
        )
        .unwrap();
        let run = ev.ended.expect("ended run");
        assert_eq!((run.queue, run.wait_ms, run.run_ms), (QueueName::Gpu, Some(30), 1200));
        // (a finish of a job whose creation time is unknown has no wait)
        let ev: JobEvent =
            serde_json::from_str(r#"{"jobId": "a", "status": "failed", "at": 5, "queue": "cpu", "runMs": 0}"#).unwrap();
        assert_eq!(ev.ended.expect("ended run").wait_ms, None);
        // an event of another kind (cancel, reap) has none
        let ev: JobEvent = serde_json::from_str(r#"{"jobId": "a", "status": "cancelled", "at": 5}"#).unwrap();
        assert!(ev.ended.is_none());
    }

    #[test]
    fn an_event_carries_a_state_or_deleted_and_nothing_else() {
        let ev: JobEvent =
            serde_json::from_str(r#"{"jobId": "a", "status": "timed_out", "attempt": 2, "at": 5}"#).unwrap();
        assert_eq!(ev.status, EventStatus::Now(JobState::TimedOut));
        assert_eq!(ev.status.ended(), Some(JobState::TimedOut));
        let ev: JobEvent = serde_json::from_str(r#"{"jobId": "a", "status": "deleted", "at": 5}"#).unwrap();
        assert!(ev.status.stops_the_container() && ev.status.ended().is_none());
        assert!(EventStatus::Now(JobState::Cancelled).stops_the_container());
        assert!(ev.ended.is_none());
        assert!(!EventStatus::Now(JobState::Running).stops_the_container());
        assert!(serde_json::from_str::<JobEvent>(r#"{"jobId": "a", "status": "exploded", "at": 5}"#).is_err());
        for s in [
            "queued",
            "running",
            "succeeded",
            "failed",
            "timed_out",
            "cancelled",
            "deleted",
        ] {
            assert_eq!(EventStatus::try_from(s.to_string()).unwrap().as_str(), s);
        }
    }
}
