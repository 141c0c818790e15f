//! `running` → `succeeded | failed | timed_out`, written only by the holder of the lease.

use std::time::Duration;

use super::lease::Lease;
use super::library::{Call, Transition};
use super::{Queue, ms};
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobError, JobState, OutputFile, RunStats};

/// The result of one attempt.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `Succeeded`, `Failed` or `TimedOut`.
    pub state: JobState,
    /// The container's exit code, when it exited by itself.
    pub exit_code: Option<i64>,
    /// Why it ended badly.
    pub error: Option<JobError>,
    /// Image id the container ran.
    pub image_digest: Option<String>,
    /// Timings and resource use.
    pub stats: RunStats,
    /// Stored outputs.
    pub outputs: Vec<OutputFile>,
}

/// Whether the result was recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// Recorded; the job's `finished` event went out.
    Recorded,
    /// The lease was lost first (fencing): nothing changed.
    LeaseLost,
}

impl Queue {
    /// Records `outcome` for the attempt `lease` holds; retention starts now. `Err(NotDurable)`:
    /// recorded on the primary, not confirmed by replicas in time (see [`super::durable`]).
    pub async fn finish(&self, lease: &Lease, outcome: &Outcome, retention: Duration, now: Millis) -> Result<Finished> {
        let this = self.for_job(&lease.job);
        let mut conn = this.conn().await?;
        let call = this.finish_call(lease, outcome, retention, now);
        let r: i64 = this.run_confirmed(&call, &mut conn).await?.reply_if(|r| *r == 1)?;
        Ok(Self::finished(r))
    }

    /// The finish script's call (`self` is the job's shard).
    pub(crate) fn finish_call(&self, lease: &Lease, outcome: &Outcome, retention: Duration, now: Millis) -> Call {
        let k = self.keys();
        let mut inv = Transition::Finish.on(self);
        inv.key(k.job(&lease.job))
            .key(k.running(lease.queue))
            .key(k.expiry())
            .key(k.tenants_active())
            .key(k.outbox())
            .arg(lease.job.as_str())
            .arg(lease.attempt)
            .arg(&lease.worker)
            .arg(outcome.state.as_str())
            .arg(now)
            .arg(now + ms(retention))
            .arg(k.events())
            .arg(self.settle_context(retention))
            .arg(outcome.stats.run_ms)
            .arg(k.history_prefix())
            .arg(self.history_ttl().as_secs())
            .arg(k.dependents_prefix());
        let (code, msg) = match &outcome.error {
            Some(e) => (e.code.clone(), e.message.clone()),
            None => (String::new(), String::new()),
        };
        for (f, v) in [
            (
                "exit_code",
                outcome.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            ),
            ("error_code", code),
            ("error_msg", msg),
            ("digest", outcome.image_digest.clone().unwrap_or_default()),
            ("stats", serde_json::to_string(&outcome.stats).unwrap_or_default()),
            ("outputs", serde_json::to_string(&outcome.outputs).unwrap_or_default()),
        ] {
            inv.arg(f).arg(v);
        }
        inv
    }

    /// What the finish's reply `r` says (a recorded result confirmed already, where the
    /// deployment's durability asks for it).
    pub(crate) fn finished(r: i64) -> Finished {
        match r {
            1 => Finished::Recorded,
            _ => Finished::LeaseLost,
        }
    }
}
