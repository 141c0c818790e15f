//! The fleet's numbers sampled into the history while a server runs: each queue's depth and
//! running jobs, its live workers, their slots and how many are busy, every [`EVERY`]. The job
//! counters beside them are kept by the queue scripts (see `dcc_shared::history`); these cannot
//! be, as no transition sees the whole fleet. Several servers sample the same numbers: the last
//! write of a minute wins.

use std::time::Duration;

use dcc_shared::clock::now_ms;
use dcc_shared::history::Sample;
use dcc_shared::queue::Queue;

/// How often the fleet is sampled (four times a minute: a minute's numbers are at most 15 s old).
pub const EVERY: Duration = Duration::from_secs(15);

/// Samples until the process ends; nothing with history off (`DCC_HISTORY_TTL=0`).
pub fn spawn_sampler(queue: Queue) {
    if queue.history_ttl().is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = sample(&queue).await {
                tracing::warn!(task = "history", error = %e, "sampling the fleet failed; retrying");
            }
        }
    });
}

async fn sample(queue: &Queue) -> dcc_shared::Result<()> {
    let now = now_ms();
    let depths = queue.depths(now).await?;
    let workers = queue.workers().await?;
    let samples: Vec<_> = depths.iter().map(|(q, d)| (*q, Sample::of(*q, d, &workers))).collect();
    queue.record_sample(now, &samples).await
}
