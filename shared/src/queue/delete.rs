//! Every trace of a job gone: the DELETE route, and the retention sweep.
//!
//! Files go first, then the record: if the process dies in between, the record is still there and
//! the next DELETE or sweep finishes the work. The reverse order would leak files forever.

use super::Queue;
use super::library::Transition;
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobId, JobRecord, JobState};
use crate::storage::{Storage, paths};

/// What a delete did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    /// Gone; it was in the given state.
    Done(JobState),
    /// Retention sweep only: not due (still running, or its time moved).
    Kept,
    /// No such job.
    Missing,
}

/// Which delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteMode {
    /// `DELETE /api/v1/jobs/{id}`: whatever its state.
    Any,
    /// Retention sweep: only ended jobs whose retention has passed.
    Expired,
}

impl Queue {
    /// Removes `job`'s files from `storage`, then its Redis record, index entries and queue entries.
    pub async fn delete(
        &self,
        job: &JobRecord,
        storage: &dyn Storage,
        mode: DeleteMode,
        retention: std::time::Duration,
        now: Millis,
    ) -> Result<Deleted> {
        let this = self.for_job(&job.id);
        if mode == DeleteMode::Expired && !job.state.is_terminal() {
            return Ok(Deleted::Kept);
        }
        storage.delete_prefix(&paths::job(&job.id)).await?;
        // An array's children made so far have files of their own (logs, outputs).
        for i in 0..job.array.map_or(0, |c| c.made) {
            if let Ok(child) = JobId::parse(&format!("{}.{i}", job.id)) {
                storage.delete_prefix(&paths::job(&child)).await?;
            }
        }
        let k = this.keys();
        let mut conn = this.conn().await?;
        let mut call = Transition::Delete.on(&this);
        call.key(k.job(&job.id))
            .key(k.tenant_lane(job.queue, job.lane, &job.tenant))
            .key(k.running(job.queue))
            .key(k.expiry())
            .key(k.index())
            .key(k.blob(&job.id))
            .key(k.fast_bytes())
            .key(k.tenant_index(&job.tenant))
            .key(k.tenants_active())
            .key(k.outbox())
            .arg(job.id.as_str())
            .arg(now)
            .arg(k.events())
            .arg(match mode {
                DeleteMode::Any => "any",
                DeleteMode::Expired => "expired",
            })
            .arg(k.worker_events_prefix())
            .arg(this.settle_context(retention));
        // (the retention sweep tells no client: it waits for no replica)
        let r: Option<String> = match mode {
            DeleteMode::Any => this
                .run_confirmed(&call, &mut conn)
                .await?
                .reply_if(|r: &Option<String>| r.is_some())?,
            DeleteMode::Expired => call.invoke_async(&mut conn).await?,
        };
        Ok(match r.as_deref() {
            None => Deleted::Missing,
            Some("kept") => Deleted::Kept,
            Some(s) => Deleted::Done(JobState::parse(s).unwrap_or(JobState::Cancelled)),
        })
    }
}

impl Queue {
    /// Drops index and expiry entries of a job whose record is already gone (the sweep meets
    /// these only if a record was removed by hand).
    pub async fn forget(&self, id: &JobId) -> Result<()> {
        let this = self.for_job(id);
        let k = this.keys();
        let mut conn = this.conn().await?;
        redis::pipe()
            .atomic()
            .cmd("ZREM")
            .arg(k.expiry())
            .arg(id.as_str())
            .cmd("ZREM")
            .arg(k.index())
            .arg(id.as_str())
            .cmd("DEL")
            .arg(k.blob(id))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }
}
