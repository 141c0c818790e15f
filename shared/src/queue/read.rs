//! Reads: a job, the job listing, queue depths, and jobs due for the retention sweep.
//! Nothing here changes state.

use std::collections::HashMap;

use super::Queue;
use crate::Result;
use crate::clock::Millis;
use crate::job::{JobId, JobRecord, JobState, Lane, QueueName};

/// Most index entries one listing request examines, so a filter matching nothing stays cheap;
/// the answer then carries a cursor to go on from.
const MAX_SCAN: usize = 2000;

/// One page of the job listing.
#[derive(Debug)]
pub struct Page {
    /// Jobs, newest first.
    pub jobs: Vec<JobRecord>,
    /// Where the next page starts, when there may be one.
    pub next_cursor: Option<String>,
}

/// A listing request.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this queue.
    pub queue: Option<QueueName>,
    /// Page size.
    pub limit: usize,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
    /// Only this tenant's jobs (its own index); `None`: every job.
    pub tenant: Option<String>,
}

/// Depths of one queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Standard jobs waiting (high + normal).
    pub queued: u64,
    /// Fast jobs waiting.
    pub fast_queued: u64,
    /// Jobs holding a lease.
    pub running: u64,
    /// Age of the oldest waiting job, in ms (0 when none waits).
    pub oldest_queued_age_ms: i64,
}

/// Splits a cursor `score:id` (the last job of the previous page).
fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (s, id) = c.split_once(':')?;
    Some((s.parse().ok()?, id.to_string()))
}

impl Queue {
    /// One job, or `None`.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>> {
        let mut conn = self.conn().await?;
        let m: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys().job(id))
            .query_async(&mut conn)
            .await?;
        JobRecord::from_hash(id, m)
    }

    /// The tenant a job belongs to (`Some("")` for a job from before tenants), `None` if gone.
    pub async fn tenant_of(&self, id: &JobId) -> Result<Option<String>> {
        let mut conn = self.conn().await?;
        let (tenant, exists): (Option<String>, bool) = redis::pipe()
            .cmd("HGET")
            .arg(self.keys().job(id))
            .arg("tenant")
            .cmd("EXISTS")
            .arg(self.keys().job(id))
            .query_async(&mut conn)
            .await?;
        Ok(exists.then(|| tenant.unwrap_or_default()))
    }

    /// Several jobs in one round trip; missing ones are skipped.
    pub async fn get_many(&self, ids: &[JobId]) -> Result<Vec<JobRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.keys().job(id));
        }
        let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, m) in ids.iter().zip(maps) {
            if let Some(r) = JobRecord::from_hash(id, m)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// A page of jobs, newest first. The cursor is the last entry returned, so pages neither
    /// repeat nor skip jobs when new ones arrive meanwhile.
    pub async fn list(&self, f: &ListFilter) -> Result<Page> {
        let limit = f.limit.clamp(1, 1000);
        let mut conn = self.conn().await?;
        let (mut max_score, mut after_id) = match f.cursor.as_deref().and_then(parse_cursor) {
            Some((s, id)) => (s.to_string(), Some(id)),
            None => ("+inf".to_string(), None),
        };
        let mut jobs = Vec::new();
        let mut scanned = 0usize;
        let mut last: Option<(i64, String)> = None;
        loop {
            let index = match &f.tenant {
                Some(t) => self.keys().tenant_index(t),
                None => self.keys().index(),
            };
            let batch: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(index)
                .arg(&max_score)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit * 2 + 1)
                .query_async(&mut conn)
                .await?;
            let exhausted = batch.len() < limit * 2 + 1;
            // Entries with the cursor's score sort by id descending: skip those at or above it.
            let fresh: Vec<(String, i64)> = batch
                .into_iter()
                .map(|(id, s)| (id, s as i64))
                .filter(|(id, s)| match &after_id {
                    Some(a) if s.to_string() == max_score => id < a,
                    _ => true,
                })
                .collect();
            if fresh.is_empty() {
                return Ok(Page {
                    jobs,
                    next_cursor: None,
                });
            }
            let ids: Vec<JobId> = fresh.iter().filter_map(|(id, _)| JobId::parse(id).ok()).collect();
            let records = self.get_many(&ids).await?;
            let mut by_id: HashMap<String, JobRecord> = records.into_iter().map(|r| (r.id.to_string(), r)).collect();
            for (id, score) in fresh {
                scanned += 1;
                last = Some((score, id.clone()));
                if let Some(r) = by_id.remove(&id)
                    && f.state.is_none_or(|s| s == r.state)
                    && f.queue.is_none_or(|q| q == r.queue)
                {
                    jobs.push(r);
                }
                if jobs.len() == limit || scanned >= MAX_SCAN {
                    let next = last.as_ref().map(|(s, id)| format!("{s}:{id}"));
                    return Ok(Page {
                        jobs,
                        next_cursor: next,
                    });
                }
            }
            if exhausted {
                return Ok(Page {
                    jobs,
                    next_cursor: None,
                });
            }
            let (s, id) = last.clone().expect("a non-empty batch set `last`");
            max_score = s.to_string();
            after_id = Some(id);
        }
    }

    /// How many waiting jobs of `queue` need more than `units` (CPU slots on `cpu`, GPUs on
    /// `gpu`): no instance of that size can take them, so the scaler leaves them out of its
    /// demand. Looks at the oldest `scan` of each lane (claims step over such jobs, so they
    /// gather at the old end). Returns (fast, standard).
    pub async fn too_large_for(&self, queue: QueueName, units: u32, scan: usize) -> Result<(u64, u64)> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let field = match queue {
            QueueName::Gpu => "gpus",
            QueueName::Cpu => "slots",
        };
        let mut out = (0, 0);
        for lane in Lane::ALL {
            let ids: Vec<String> = redis::cmd("LRANGE")
                .arg(k.lane(queue, lane))
                .arg(-(scan as i64))
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            let ids: Vec<JobId> = ids.iter().filter_map(|id| JobId::parse(id).ok()).collect();
            if ids.is_empty() {
                continue;
            }
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGET").arg(k.job(id)).arg(field);
            }
            let needs: Vec<Option<u32>> = pipe.query_async(&mut conn).await?;
            let n = needs.into_iter().flatten().filter(|need| *need > units).count() as u64;
            match lane {
                Lane::Fast => out.0 += n,
                _ => out.1 += n,
            }
        }
        Ok(out)
    }

    /// Depths of both queues, in one round trip.
    pub async fn depths(&self, now: Millis) -> Result<Vec<(QueueName, QueueDepth)>> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for q in QueueName::ALL {
            for lane in Lane::ALL {
                pipe.cmd("LLEN").arg(k.lane(q, lane));
            }
            pipe.cmd("ZCARD").arg(k.running(q));
            for lane in Lane::ALL {
                pipe.cmd("LINDEX").arg(k.lane(q, lane)).arg(-1);
            }
        }
        let r: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut out = Vec::new();
        let mut heads = Vec::new();
        for (qi, q) in QueueName::ALL.into_iter().enumerate() {
            let base = qi * 7;
            let n = |i: usize| -> u64 { redis::from_redis_value_ref(&r[base + i]).unwrap_or(0) };
            let depth = QueueDepth {
                fast_queued: n(0),
                queued: n(1) + n(2),
                running: n(3),
                oldest_queued_age_ms: 0,
            };
            for i in 4..7 {
                if let Ok(Some(id)) = redis::from_redis_value_ref::<Option<String>>(&r[base + i])
                    && let Ok(id) = JobId::parse(&id)
                {
                    heads.push((qi, id));
                }
            }
            out.push((q, depth));
        }
        if !heads.is_empty() {
            let mut pipe = redis::pipe();
            for (_, id) in &heads {
                pipe.cmd("HGET").arg(k.job(id)).arg("created_ms");
            }
            let created: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
            for ((qi, _), c) in heads.iter().zip(created) {
                if let Some(c) = c {
                    let age = (now - c).max(0);
                    let d = &mut out[*qi].1;
                    d.oldest_queued_age_ms = d.oldest_queued_age_ms.max(age);
                }
            }
        }
        Ok(out)
    }

    /// Ids of ended jobs whose retention ended by `now`, oldest first, at most `limit`.
    pub async fn due_for_expiry(&self, now: Millis, limit: usize) -> Result<Vec<JobId>> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys().expiry())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(ids.iter().filter_map(|i| JobId::parse(i).ok()).collect())
    }
}
