//! `queued | running` → `cancelled`.

use std::time::Duration;

use super::library::Transition;
use super::{Queue, ms};
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobRecord, JobState};

/// What a cancel did.
#[derive(Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// The job is now `cancelled`; it was in the given state.
    Done(JobState),
    /// The job had already ended in the given state; nothing changed.
    AlreadyEnded(JobState),
    /// No such job.
    Missing,
}

impl Queue {
    /// Cancels `job` (read just before, for its immutable queue and lane).
    pub async fn cancel(&self, job: &JobRecord, retention: Duration, now: Millis) -> Result<Cancelled> {
        let this = self.for_job(&job.id);
        let k = this.keys();
        let mut conn = this.conn().await?;
        let mut call = Transition::Cancel.on(&this);
        call.key(k.job(&job.id))
            .key(k.tenant_lane(job.queue, job.lane, &job.tenant))
            .key(k.running(job.queue))
            .key(k.expiry())
            .key(k.tenants_active())
            .key(k.outbox())
            .arg(job.id.as_str())
            .arg(now)
            .arg(now + ms(retention))
            .arg(k.events())
            .arg(k.worker_events_prefix())
            .arg(this.settle_context(retention));
        let r: Vec<String> = this
            .run_confirmed(&call, &mut conn)
            .await?
            .reply_if(|r: &Vec<String>| r.first().map(String::as_str) == Some("cancelled"))?;
        let state = || r.get(1).and_then(|s| JobState::parse(s)).unwrap_or(JobState::Cancelled);
        Ok(match r.first().map(String::as_str) {
            Some("cancelled") => Cancelled::Done(state()),
            Some("final") => Cancelled::AlreadyEnded(state()),
            _ => Cancelled::Missing,
        })
    }
}
