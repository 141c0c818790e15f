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

/// Depths of one queue (also the body of `GET /api/v1/queues`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
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

/// Splits a cursor `score:id` (the last job of the previous page): `None` when it is not one.
pub fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (s, id) = c.split_once(':')?;
    Some((s.parse().ok()?, JobId::parse(id).ok()?.to_string()))
}

impl Queue {
    /// One job, or `None`.
    pub async fn get(&self, id: &JobId) -> Result<Option<JobRecord>> {
        Ok(self.get_many(std::slice::from_ref(id)).await?.pop())
    }

    /// The tenant each of `ids` belongs to, in their order (`Some("")` for a job from before
    /// tenants, `None` for one that is gone): one request per shard they are on (a `*` follower
    /// learns the owners of a batch of events at once).
    pub async fn tenants_of(&self, ids: &[JobId]) -> Result<Vec<Option<String>>> {
        let mut by_shard: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            by_shard.entry(self.shard_of(id.as_str())).or_default().push(i);
        }
        let mut out = vec![None; ids.len()];
        for (shard, at) in by_shard {
            let this = self.for_shard(shard);
            let mut pipe = redis::pipe();
            for &i in &at {
                let key = this.keys().job(&ids[i]);
                pipe.cmd("HGET").arg(&key).arg("tenant").cmd("EXISTS").arg(&key);
            }
            let answers: Vec<(Option<String>, bool)> = pipe.query_async(&mut this.conn().await?).await?;
            for (i, (tenant, exists)) in at.into_iter().zip(answers) {
                out[i] = exists.then(|| tenant.unwrap_or_default());
            }
        }
        Ok(out)
    }

    /// An array child keeps no copy of its definition: it is its parent's, read here (one more
    /// round trip, only when there are children among `maps`).
    async fn add_parent_specs(
        &self,
        conn: &mut crate::connection::Conn,
        maps: &mut [HashMap<String, String>],
    ) -> Result<()> {
        let children: Vec<(usize, JobId)> = maps
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.contains_key("spec"))
            .filter_map(|(i, m)| Some((i, JobId::parse(m.get("parent")?).ok()?)))
            .collect();
        if children.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (_, parent) in &children {
            pipe.cmd("HGET").arg(self.keys().job(parent)).arg("spec");
        }
        let specs: Vec<Option<String>> = pipe.query_async(conn).await?;
        for ((i, _), spec) in children.into_iter().zip(specs) {
            if let Some(spec) = spec {
                maps[i].insert("spec".into(), spec);
            }
        }
        Ok(())
    }

    /// [`Queue::get_many`] of ids that all live in this value's shard.
    async fn get_many_here(&self, ids: &[JobId]) -> Result<Vec<JobRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HGETALL").arg(self.keys().job(id));
        }
        let mut maps: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        self.add_parent_specs(&mut conn, &mut maps).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, m) in ids.iter().zip(maps) {
            if let Some(r) = JobRecord::from_hash(id, m)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// A page of jobs, newest first. The cursor is the last entry returned, so pages neither
    /// repeat nor skip jobs when new ones arrive meanwhile. Jobs of the same millisecond (one
    /// score) are ordered by id, the tie-breaker: a page resumes after the cursor's id among its
    /// score's entries however many share it. A cursor that does not parse starts at the top
    /// (the route refuses it first: [`parse_cursor`]).
    async fn list_here(&self, f: &ListFilter) -> Result<Page> {
        let limit = f.limit.clamp(1, 1000);
        let mut conn = self.conn().await?;
        let index = match &f.tenant {
            Some(t) => self.keys().tenant_index(t),
            None => self.keys().index(),
        };
        let batch_len = limit * 2 + 1;
        // Reading resumes at `last`'s score, `skip` entries in: those of that score at or above
        // `last`'s id, already seen (counted as they pass; a cursor from the client starts at
        // 0 and steps over them by id).
        let mut last = f.cursor.as_deref().and_then(parse_cursor);
        let mut skip = 0usize;
        let mut jobs = Vec::new();
        let mut scanned = 0usize;
        loop {
            let max_score = last.as_ref().map_or("+inf".to_string(), |(s, _)| s.to_string());
            let batch: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                .arg(&index)
                .arg(&max_score)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(skip)
                .arg(batch_len)
                .query_async(&mut conn)
                .await?;
            let exhausted = batch.len() < batch_len;
            let batch: Vec<(String, i64)> = batch.into_iter().map(|(id, s)| (id, s as i64)).collect();
            let ids: Vec<JobId> = batch.iter().filter_map(|(id, _)| JobId::parse(id).ok()).collect();
            let mut by_id: HashMap<String, JobRecord> = self
                .get_many_here(&ids)
                .await?
                .into_iter()
                .map(|r| (r.id.to_string(), r))
                .collect();
            for (id, score) in batch {
                skip = match &last {
                    Some((ls, _)) if *ls == score => skip + 1,
                    _ => 1,
                };
                // At or above the cursor (its score's entries come by id, descending).
                if last.as_ref().is_some_and(|(ls, lid)| *ls == score && id >= *lid) {
                    continue;
                }
                last = Some((score, id.clone()));
                scanned += 1;
                if let Some(r) = by_id.remove(&id)
                    && f.state.is_none_or(|s| s == r.state)
                    && f.queue.is_none_or(|q| q == r.queue)
                {
                    jobs.push(r);
                }
                if jobs.len() == limit || scanned >= MAX_SCAN {
                    return Ok(Page {
                        jobs,
                        next_cursor: Some(format!("{score}:{id}")),
                    });
                }
            }
            if exhausted {
                return Ok(Page {
                    jobs,
                    next_cursor: None,
                });
            }
        }
    }

    /// How many waiting jobs of `queue` need more than `units` (CPU slots on `cpu`, GPUs on
    /// `gpu`): no instance of that size can take them, so the scaler leaves them out of its
    /// demand. Looks at the oldest `scan` of each lane (claims step over such jobs, so they
    /// gather at the old end). Returns (fast, standard).
    async fn too_large_for_here(&self, queue: QueueName, units: u32, scan: usize) -> Result<(u64, u64)> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let field = match queue {
            QueueName::Gpu => "gpus",
            QueueName::Cpu => "slots",
        };
        let mut out = (0, 0);
        let lanes: Vec<(QueueName, Lane)> = Lane::ALL.into_iter().map(|l| (queue, l)).collect();
        let lists = self.lane_lists(&mut conn, &lanes).await?;
        for ((_, lane), lane_lists) in lanes.iter().zip(lists) {
            for list in lane_lists {
                let ids: Vec<String> = redis::cmd("LRANGE")
                    .arg(&list)
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
        }
        Ok(out)
    }

    /// Memory (MiB) the jobs of `queue` reserve: the running ones, and the oldest `scan` waiting
    /// ones of each list that an instance of `units` can take. The scaler plans instances by it
    /// as well as by slots when it knows an instance's memory.
    async fn memory_demand_here(&self, queue: QueueName, units: u32, scan: usize) -> Result<u64> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let field = match queue {
            QueueName::Gpu => "gpus",
            QueueName::Cpu => "slots",
        };
        let lanes: Vec<(QueueName, Lane)> = Lane::ALL.into_iter().map(|l| (queue, l)).collect();
        let mut ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(k.running(queue))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        for list in self.lane_lists(&mut conn, &lanes).await?.into_iter().flatten() {
            let waiting: Vec<String> = redis::cmd("LRANGE")
                .arg(&list)
                .arg(-(scan as i64))
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            ids.extend(waiting);
        }
        let ids: Vec<JobId> = ids.iter().filter_map(|id| JobId::parse(id).ok()).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET").arg(k.job(id)).arg(field).arg("memory_mb");
        }
        let sizes: Vec<(Option<u32>, Option<u64>)> = pipe.query_async(&mut conn).await?;
        Ok(sizes
            .into_iter()
            .filter(|(need, _)| need.is_none_or(|n| n <= units))
            .filter_map(|(_, mem)| mem)
            .sum())
    }

    /// Every list jobs wait in for one lane: each tenant's in the lane's ring, and the list of
    /// jobs from before tenants.
    async fn lane_lists(
        &self,
        conn: &mut crate::connection::Conn,
        lanes: &[(QueueName, Lane)],
    ) -> Result<Vec<Vec<String>>> {
        let k = self.keys();
        let mut pipe = redis::pipe();
        for (q, lane) in lanes {
            pipe.cmd("LRANGE").arg(k.ring(*q, *lane)).arg(0).arg(-1);
        }
        let rings: Vec<Vec<String>> = pipe.query_async(conn).await?;
        Ok(lanes
            .iter()
            .zip(rings)
            .map(|((q, lane), tenants)| {
                // '' in a ring stands for the lane's own list, added once below.
                let mut lists: Vec<String> = tenants
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| k.tenant_lane(*q, *lane, t))
                    .collect();
                lists.push(k.lane(*q, *lane));
                lists
            })
            .collect())
    }

    /// Depths of both queues counting only `tenant`'s jobs (its own lists; its running jobs).
    async fn tenant_depths_here(&self, tenant: &str, now: Millis) -> Result<Vec<(QueueName, QueueDepth)>> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let mut out = Vec::new();
        for q in QueueName::ALL {
            let mut d = QueueDepth::default();
            let mut pipe = redis::pipe();
            for lane in Lane::ALL {
                let list = k.tenant_lane(q, lane, tenant);
                pipe.cmd("LLEN").arg(&list).cmd("LINDEX").arg(&list).arg(-1);
            }
            pipe.cmd("HGET")
                .arg(k.backlog())
                .arg(format!("{}:{tenant}", q.as_str()));
            let r: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            let backlog: Option<i64> = redis::from_redis_value_ref(&r[2 * Lane::ALL.len()]).unwrap_or(None);
            d.queued += backlog.unwrap_or(0).max(0) as u64;
            let mut heads = Vec::new();
            for (i, lane) in Lane::ALL.into_iter().enumerate() {
                let n: u64 = redis::from_redis_value_ref(&r[2 * i]).unwrap_or(0);
                match lane {
                    Lane::Fast => d.fast_queued += n,
                    _ => d.queued += n,
                }
                if let Ok(Some(id)) = redis::from_redis_value_ref::<Option<String>>(&r[2 * i + 1])
                    && let Ok(id) = JobId::parse(&id)
                {
                    heads.push(id);
                }
            }
            let running: Vec<String> = redis::cmd("ZRANGE")
                .arg(k.running(q))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await?;
            if running.is_empty() && heads.is_empty() {
                out.push((q, d));
                continue;
            }
            let mut pipe = redis::pipe();
            for id in running.iter().filter_map(|id| JobId::parse(id).ok()) {
                pipe.cmd("HGET").arg(k.job(&id)).arg("tenant");
            }
            for id in &heads {
                pipe.cmd("HGET").arg(k.job(id)).arg("created_ms");
            }
            let r: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
            let (owners, created) = r.split_at(r.len() - heads.len());
            d.running = owners.iter().filter(|t| t.as_deref() == Some(tenant)).count() as u64;
            d.oldest_queued_age_ms = created
                .iter()
                .filter_map(|c| c.as_deref().and_then(|c| c.parse::<i64>().ok()))
                .map(|c| (now - c).max(0))
                .max()
                .unwrap_or(0);
            out.push((q, d));
        }
        Ok(out)
    }

    /// Per tenant, its queued + running jobs and its fast ones (the quota counts).
    async fn tenants_active_here(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut conn = self.conn().await?;
        let m: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(self.keys().tenants_active())
            .query_async(&mut conn)
            .await?;
        let mut out: Vec<(String, u64, u64)> = m
            .iter()
            .filter(|(k, _)| !k.ends_with(":fast"))
            .map(|(t, n)| {
                (
                    t.clone(),
                    (*n).max(0) as u64,
                    m.get(&format!("{t}:fast")).copied().unwrap_or(0).max(0) as u64,
                )
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Depths of both queues: jobs waiting in every tenant's list of every lane, running jobs,
    /// and the age of the oldest waiting job.
    async fn depths_here(&self, now: Millis) -> Result<Vec<(QueueName, QueueDepth)>> {
        let k = self.keys();
        let mut conn = self.conn().await?;
        let lanes: Vec<(QueueName, Lane)> = QueueName::ALL
            .into_iter()
            .flat_map(|q| Lane::ALL.into_iter().map(move |l| (q, l)))
            .collect();
        let lists = self.lane_lists(&mut conn, &lanes).await?;
        let mut pipe = redis::pipe();
        for list in lists.iter().flatten() {
            pipe.cmd("LLEN").arg(list).cmd("LINDEX").arg(list).arg(-1);
        }
        for q in QueueName::ALL {
            pipe.cmd("ZCARD").arg(k.running(q));
        }
        // Array children not made yet: beyond the lists (see Keys::backlog).
        for q in QueueName::ALL {
            pipe.cmd("HGET").arg(k.backlog()).arg(q.as_str());
        }
        let r: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let mut out: Vec<(QueueName, QueueDepth)> =
            QueueName::ALL.into_iter().map(|q| (q, QueueDepth::default())).collect();
        let mut heads = Vec::new();
        let mut at = 0;
        for ((q, lane), lane_lists) in lanes.iter().zip(&lists) {
            let qi = QueueName::ALL.iter().position(|x| x == q).unwrap_or(0);
            for _ in lane_lists {
                let n: u64 = redis::from_redis_value_ref(&r[at]).unwrap_or(0);
                let d = &mut out[qi].1;
                match lane {
                    Lane::Fast => d.fast_queued += n,
                    _ => d.queued += n,
                }
                if let Ok(Some(id)) = redis::from_redis_value_ref::<Option<String>>(&r[at + 1])
                    && let Ok(id) = JobId::parse(&id)
                {
                    heads.push((qi, id));
                }
                at += 2;
            }
        }
        let queues = QueueName::ALL.len();
        for (qi, _) in QueueName::ALL.iter().enumerate() {
            out[qi].1.running = redis::from_redis_value_ref(&r[at + qi]).unwrap_or(0);
            let backlog: Option<i64> = redis::from_redis_value_ref(&r[at + queues + qi]).unwrap_or(None);
            out[qi].1.queued += backlog.unwrap_or(0).max(0) as u64;
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
    async fn due_for_expiry_here(&self, now: Millis, limit: usize) -> Result<Vec<JobId>> {
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

/// The public reads: on a sharded deployment each visits the shards its answer may come from.
impl Queue {
    /// Several jobs, one round trip per shard they live in; missing ones are skipped, the rest
    /// come in the order asked.
    pub async fn get_many(&self, ids: &[JobId]) -> Result<Vec<JobRecord>> {
        if self.shard_count() == 1 {
            return self.get_many_here(ids).await;
        }
        let mut by_shard: HashMap<usize, Vec<JobId>> = HashMap::new();
        for id in ids {
            by_shard.entry(self.shard_of(id.as_str())).or_default().push(id.clone());
        }
        let mut found: HashMap<JobId, JobRecord> = HashMap::new();
        for (shard, ids) in by_shard {
            for r in self.shard(shard).get_many_here(&ids).await? {
                found.insert(r.id.clone(), r);
            }
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// A page of jobs, newest first, across every shard (see [`merge_pages`]).
    pub async fn list(&self, f: &ListFilter) -> Result<Page> {
        if self.shard_count() == 1 {
            return self.list_here(f).await;
        }
        let mut pages = Vec::with_capacity(self.shard_count());
        for q in self.each_shard() {
            pages.push(q.list_here(f).await?);
        }
        Ok(merge_pages(pages, f.limit.clamp(1, 1000)))
    }

    /// How many waiting jobs of `queue` need more than `units` (CPU slots on `cpu`, GPUs on
    /// `gpu`): no instance of that size can take them, so the scaler leaves them out of its
    /// demand. Looks at the oldest `scan` of each lane of each shard (claims step over such
    /// jobs, so they gather at the old end). Returns (fast, standard).
    pub async fn too_large_for(&self, queue: QueueName, units: u32, scan: usize) -> Result<(u64, u64)> {
        let mut out = (0, 0);
        for q in self.each_shard() {
            let (fast, standard) = q.too_large_for_here(queue, units, scan).await?;
            out = (out.0 + fast, out.1 + standard);
        }
        Ok(out)
    }

    /// Memory (MiB) the jobs of `queue` reserve: the running ones, and the oldest `scan` waiting
    /// ones of each list (of each shard) that an instance of `units` can take. The scaler plans
    /// instances by it as well as by slots when it knows an instance's memory.
    pub async fn memory_demand(&self, queue: QueueName, units: u32, scan: usize) -> Result<u64> {
        let mut total = 0;
        for q in self.each_shard() {
            total += q.memory_demand_here(queue, units, scan).await?;
        }
        Ok(total)
    }

    /// Depths of both queues counting only `tenant`'s jobs (its own lists; its running jobs).
    pub async fn tenant_depths(&self, tenant: &str, now: Millis) -> Result<Vec<(QueueName, QueueDepth)>> {
        let mut sum = Vec::new();
        for q in self.each_shard() {
            sum = add_depths(sum, q.tenant_depths_here(tenant, now).await?);
        }
        Ok(sum)
    }

    /// Per tenant, its queued + running jobs and its fast ones (the quota counts).
    pub async fn tenants_active(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut sum: HashMap<String, (u64, u64)> = HashMap::new();
        for q in self.each_shard() {
            for (t, n, fast) in q.tenants_active_here().await? {
                let e = sum.entry(t).or_default();
                *e = (e.0 + n, e.1 + fast);
            }
        }
        let mut out: Vec<(String, u64, u64)> = sum.into_iter().map(|(t, (n, f))| (t, n, f)).collect();
        out.sort();
        Ok(out)
    }

    /// Depths of both queues: jobs waiting in every tenant's list of every lane (of every shard),
    /// running jobs, and the age of the oldest waiting job.
    pub async fn depths(&self, now: Millis) -> Result<Vec<(QueueName, QueueDepth)>> {
        let mut sum = Vec::new();
        for q in self.each_shard() {
            sum = add_depths(sum, q.depths_here(now).await?);
        }
        Ok(sum)
    }

    /// Ids of ended jobs whose retention ended by `now`, at most `limit`: the oldest of each
    /// shard, taken from the shards in turn so that none waits behind another's backlog.
    pub async fn due_for_expiry(&self, now: Millis, limit: usize) -> Result<Vec<JobId>> {
        if self.shard_count() == 1 {
            return self.due_for_expiry_here(now, limit).await;
        }
        let mut each = Vec::with_capacity(self.shard_count());
        for q in self.each_shard() {
            each.push(q.due_for_expiry_here(now, limit).await?.into_iter());
        }
        let mut out = Vec::with_capacity(limit);
        while out.len() < limit {
            let before = out.len();
            out.extend(each.iter_mut().filter_map(|ids| ids.next()));
            if out.len() == before {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Two shards' depths added: counts summed, the oldest waiting job's age the larger.
fn add_depths(a: Vec<(QueueName, QueueDepth)>, b: Vec<(QueueName, QueueDepth)>) -> Vec<(QueueName, QueueDepth)> {
    if a.is_empty() {
        return b;
    }
    a.into_iter()
        .zip(b)
        .map(|((q, x), (_, y))| {
            let d = QueueDepth {
                queued: x.queued + y.queued,
                fast_queued: x.fast_queued + y.fast_queued,
                running: x.running + y.running,
                oldest_queued_age_ms: x.oldest_queued_age_ms.max(y.oldest_queued_age_ms),
            };
            (q, d)
        })
        .collect()
}

/// One page out of the same page of every shard. Every shard's index is ordered alike (creation
/// time, then id, newest first), so the merged page is the newest `limit` of all. A shard whose
/// page stopped early (its scan bound, with more to read) was not read past its cursor: the
/// merged page stops there too, or it would skip that shard's jobs beyond it.
pub fn merge_pages(pages: Vec<Page>, limit: usize) -> Page {
    let order = |r: &JobRecord| (r.created_ms, r.id.to_string());
    let bound = pages
        .iter()
        .filter_map(|p| p.next_cursor.as_deref().and_then(parse_cursor))
        .max();
    let mut jobs: Vec<JobRecord> = pages
        .into_iter()
        .flat_map(|p| p.jobs)
        .filter(|r| bound.as_ref().is_none_or(|b| order(r) >= *b))
        .collect();
    jobs.sort_by_key(|r| std::cmp::Reverse(order(r)));
    if jobs.len() > limit {
        jobs.truncate(limit);
        let last = jobs.last().map(|r| format!("{}:{}", r.created_ms, r.id));
        return Page {
            jobs,
            next_cursor: last,
        };
    }
    let next_cursor = bound.map(|(s, id)| format!("{s}:{id}"));
    Page { jobs, next_cursor }
}
