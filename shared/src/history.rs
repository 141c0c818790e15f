//! History: what the fleet did minute by minute, kept in Redis for `DCC_HISTORY_TTL` and read
//! back as series (`GET /api/v1/stats`, the dashboard's graphs, `dcc top`).
//!
//! One HASH per minute ([`Keys::history`]). The queue scripts count each transition in it as it
//! happens (`queue/history.lua`: submitted, started by queue wait, ended by state and run time,
//! failures by code and image; one HINCRBY each), and servers sample the fleet into it a few
//! times a minute ([`Queue::record_sample`]: depth, running, workers, slots, busy). Field names
//! are the contract between the two; [`summarize`] is their only reader.

use std::collections::HashMap;
use std::time::Duration;

use crate::Result;
use crate::api::{FailureCount, QueueSeries, Stats, StatsPoint, TenantTotals};
use crate::clock::Millis;
use crate::job::QueueName;
use crate::queue::Queue;
use crate::queue::read::QueueDepth;
use crate::workers::WorkerInfo;

/// How long a minute is kept unless `DCC_HISTORY_TTL` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The longest range read at once (and kept: `DCC_HISTORY_TTL`'s most): a week of minutes is
/// ~10,000 small hashes; longer views belong to Prometheus (`/metrics`).
pub const MAX_SPAN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most points one answer holds (a day of minutes).
pub const MAX_POINTS: i64 = 1440;

/// One minute, in ms.
pub const MINUTE_MS: i64 = 60_000;

/// Upper bounds (ms) of the wait and run-time bins; the last bin is open. `history.lua`'s
/// HISTORY_BOUNDS is the same list.
pub const BOUNDS_MS: [u64; 11] = [
    100, 300, 1_000, 3_000, 10_000, 30_000, 60_000, 180_000, 600_000, 1_800_000, 3_600_000,
];

/// Minute buckets read in one pipeline.
const CHUNK: usize = 240;

/// The fleet's numbers for one queue at one moment (a server's sample).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Jobs waiting (standard and fast).
    pub depth: u64,
    /// Jobs holding a lease.
    pub running: u64,
    /// Live workers serving the queue.
    pub workers: u64,
    /// Their slots (CPU slots, or GPUs).
    pub slots: u64,
    /// Of those, taken.
    pub busy: u64,
}

impl Sample {
    /// The sample of `queue` from its depth and the live workers.
    pub fn of(queue: QueueName, depth: &QueueDepth, workers: &[WorkerInfo]) -> Sample {
        let (slots, free): (Vec<u32>, Vec<u32>) = workers
            .iter()
            .map(|w| match queue {
                QueueName::Cpu => (w.cpus, w.free_cpu_slots),
                QueueName::Gpu => (w.gpus, w.free_gpus),
            })
            .filter(|(total, _)| *total > 0)
            .unzip();
        Sample {
            depth: depth.queued + depth.fast_queued,
            running: depth.running,
            workers: slots.len() as u64,
            slots: slots.iter().map(|&s| u64::from(s)).sum(),
            busy: slots
                .iter()
                .zip(&free)
                .map(|(&s, &f)| u64::from(s.saturating_sub(f)))
                .sum(),
        }
    }
}

/// The name of a sampled field: `g|<queue>|<what>` (counters start with the queue's name).
fn gauge(queue: &str, what: &str) -> String {
    format!("g|{queue}|{what}")
}

impl Queue {
    /// Writes the fleet's numbers into the minute of `now` (the last sample of a minute wins;
    /// several servers sampling write the same numbers). Nothing when history is off.
    pub async fn record_sample(&self, now: Millis, samples: &[(QueueName, Sample)]) -> Result<()> {
        let ttl = self.history_ttl().as_secs();
        if ttl == 0 {
            return Ok(());
        }
        let key = self.keys().history(now.div_euclid(MINUTE_MS));
        let mut pipe = redis::pipe();
        let hset = pipe.cmd("HSET").arg(&key);
        for (q, s) in samples {
            let q = q.as_str();
            for (what, v) in [
                ("depth", s.depth),
                ("running", s.running),
                ("workers", s.workers),
                ("slots", s.slots),
                ("busy", s.busy),
            ] {
                hset.arg(gauge(q, what)).arg(v);
            }
        }
        pipe.ignore().cmd("EXPIRE").arg(&key).arg(ttl).ignore();
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The buckets of minutes `from..to` (minute numbers), missing ones empty; on a sharded
    /// deployment each shard's counts added up (every field is a count; the fleet's samples are
    /// in shard 0 only).
    pub async fn history(&self, from: i64, to: i64) -> Result<Vec<(i64, HashMap<String, u64>)>> {
        let mut sum = self.shard(0).history_here(from, to).await?;
        for q in self.each_shard().skip(1) {
            for ((_, total), (_, more)) in sum.iter_mut().zip(q.history_here(from, to).await?) {
                for (field, n) in more {
                    *total.entry(field).or_default() += n;
                }
            }
        }
        Ok(sum)
    }

    async fn history_here(&self, from: i64, to: i64) -> Result<Vec<(i64, HashMap<String, u64>)>> {
        let minutes: Vec<i64> = (from..to).collect();
        let mut conn = self.conn().await?;
        let mut out = Vec::with_capacity(minutes.len());
        for chunk in minutes.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for m in chunk {
                pipe.cmd("HGETALL").arg(self.keys().history(*m));
            }
            let maps: Vec<HashMap<String, u64>> = pipe.query_async(&mut conn).await?;
            out.extend(chunk.iter().copied().zip(maps));
        }
        Ok(out)
    }
}

/// What a [`summarize`] covers.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Start (ms, rounded down to a minute) and end (ms, exclusive, rounded up).
    pub from: Millis,
    /// See `from`.
    pub to: Millis,
    /// Minutes per point.
    pub step_minutes: i64,
    /// Count only this tenant's jobs (a tenant's key; an admin's `tenant=`).
    pub tenant: Option<String>,
    /// Whether the fleet's depth and running counts are shown.
    pub fleet: bool,
    /// Only this queue (else both).
    pub queue: Option<QueueName>,
}

impl Scope {
    /// The minute numbers `from..to` to read.
    pub fn minutes(&self) -> (i64, i64) {
        minute_range(self.from, self.to)
    }
}

/// The minutes (numbers, `first..last`) that cover `from..to` (ms): whole minutes, `from` rounded
/// down and `to` up.
pub fn minute_range(from: Millis, to: Millis) -> (i64, i64) {
    (from.div_euclid(MINUTE_MS), (to + MINUTE_MS - 1).div_euclid(MINUTE_MS))
}

/// The series of `buckets` (from [`Queue::history`]) for `scope`.
pub fn summarize(buckets: &[(i64, HashMap<String, u64>)], scope: &Scope) -> Stats {
    let (first, last) = scope.minutes();
    let step = scope.step_minutes.max(1);
    let steps = ((last - first) + step - 1) / step;
    let queues: Vec<QueueName> = QueueName::ALL
        .into_iter()
        .filter(|q| scope.queue.is_none_or(|s| s == *q))
        .collect();
    let mut acc: Vec<Vec<Step>> = queues.iter().map(|_| vec![Step::default(); steps as usize]).collect();
    let mut failures: HashMap<(String, String), u64> = HashMap::new();
    let mut tenants: HashMap<String, TenantTotals> = HashMap::new();
    for (minute, fields) in buckets {
        let Some(i) = usize::try_from((minute - first) / step)
            .ok()
            .filter(|i| *i < steps as usize)
        else {
            continue;
        };
        for (name, &n) in fields {
            let Some(field) = Field::parse(name) else { continue };
            if let Some(qi) = queues.iter().position(|q| q.as_str() == field.queue()) {
                acc[qi][i].add(&field, n, scope);
            }
            field.total(n, scope, &queues, &mut failures, &mut tenants);
        }
    }
    Stats {
        from: first * MINUTE_MS,
        to: (first + steps * step) * MINUTE_MS,
        step_secs: (step * 60) as u64,
        tenant: scope.tenant.clone(),
        queues: queues
            .iter()
            .zip(acc)
            .map(|(q, points)| QueueSeries {
                queue: q.as_str().to_string(),
                points: points
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| s.point((first + i as i64 * step) * MINUTE_MS))
                    .collect(),
            })
            .collect(),
        failures: sorted_failures(failures),
        tenants: sorted_tenants(tenants),
    }
}

fn sorted_failures(m: HashMap<(String, String), u64>) -> Vec<FailureCount> {
    let mut v: Vec<FailureCount> = m
        .into_iter()
        .map(|((code, image), count)| FailureCount { code, image, count })
        .collect();
    v.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.code, &a.image).cmp(&(&b.code, &b.image)))
    });
    v
}

fn sorted_tenants(m: HashMap<String, TenantTotals>) -> Vec<TenantTotals> {
    let mut v: Vec<TenantTotals> = m.into_values().collect();
    v.sort_by(|a, b| b.submitted.cmp(&a.submitted).then_with(|| a.tenant.cmp(&b.tenant)));
    v
}

/// One field of a minute's hash, parsed.
#[derive(Debug, PartialEq)]
enum Field<'a> {
    /// `<queue>|<tenant>|sub`
    Submitted { queue: &'a str, tenant: &'a str },
    /// `<queue>|<tenant>|start|<bin>`
    Started {
        queue: &'a str,
        tenant: &'a str,
        bin: usize,
    },
    /// `<queue>|<tenant>|restart`
    Restarted { queue: &'a str, tenant: &'a str },
    /// `<queue>|<tenant>|<state>|<bin or ->`
    Ended {
        queue: &'a str,
        tenant: &'a str,
        state: &'a str,
        bin: Option<usize>,
    },
    /// `<queue>|<tenant>|code|<code>|<image>`
    Failure {
        queue: &'a str,
        tenant: &'a str,
        code: &'a str,
        image: &'a str,
    },
    /// `g|<queue>|<what>`
    Gauge { queue: &'a str, what: &'a str },
}

impl<'a> Field<'a> {
    fn parse(name: &'a str) -> Option<Field<'a>> {
        let mut parts = name.splitn(5, '|');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next()?);
        if a == "g" {
            return Some(Field::Gauge { queue: b, what: c });
        }
        let (queue, tenant) = (a, b);
        let bin = |s: Option<&str>| {
            s.and_then(|s| s.parse::<usize>().ok())
                .filter(|b| *b <= BOUNDS_MS.len())
        };
        Some(match c {
            "sub" => Field::Submitted { queue, tenant },
            "restart" => Field::Restarted { queue, tenant },
            "start" => Field::Started {
                queue,
                tenant,
                bin: bin(parts.next())?,
            },
            "code" => Field::Failure {
                queue,
                tenant,
                code: parts.next()?,
                image: parts.next()?,
            },
            "succeeded" | "failed" | "timed_out" | "cancelled" => Field::Ended {
                queue,
                tenant,
                state: c,
                bin: bin(parts.next()),
            },
            _ => return None,
        })
    }

    fn queue(&self) -> &'a str {
        match self {
            Field::Submitted { queue, .. }
            | Field::Started { queue, .. }
            | Field::Restarted { queue, .. }
            | Field::Ended { queue, .. }
            | Field::Failure { queue, .. }
            | Field::Gauge { queue, .. } => queue,
        }
    }

    fn tenant(&self) -> Option<&'a str> {
        match self {
            Field::Submitted { tenant, .. }
            | Field::Started { tenant, .. }
            | Field::Restarted { tenant, .. }
            | Field::Ended { tenant, .. }
            | Field::Failure { tenant, .. } => Some(tenant),
            Field::Gauge { .. } => None,
        }
    }

    /// Whether `scope` counts this field (a job's tenant; fleet numbers are kept by [`Step`]).
    fn in_scope(&self, scope: &Scope) -> bool {
        match (self.tenant(), &scope.tenant) {
            (Some(t), Some(only)) => t == only,
            _ => true,
        }
    }

    /// Adds a counter to the range's failures and tenants' totals.
    fn total(
        &self,
        n: u64,
        scope: &Scope,
        queues: &[QueueName],
        failures: &mut HashMap<(String, String), u64>,
        tenants: &mut HashMap<String, TenantTotals>,
    ) {
        if !self.in_scope(scope) || !queues.iter().any(|q| q.as_str() == self.queue()) {
            return;
        }
        if let Field::Failure { code, image, .. } = self {
            *failures.entry((code.to_string(), image.to_string())).or_default() += n;
            return;
        }
        let Some(tenant) = self.tenant() else { return };
        let t = tenants.entry(tenant.to_string()).or_insert_with(|| TenantTotals {
            tenant: tenant.to_string(),
            ..TenantTotals::default()
        });
        match self {
            Field::Submitted { .. } => t.submitted += n,
            Field::Started { .. } | Field::Restarted { .. } => t.started += n,
            Field::Ended { state: "succeeded", .. } => t.succeeded += n,
            Field::Ended { state: "cancelled", .. } => t.cancelled += n,
            Field::Ended { .. } => t.failed += n,
            _ => {}
        }
    }
}

/// One step of one queue, being added up.
#[derive(Clone, Debug, Default)]
struct Step {
    point: StatsPoint,
    wait: [u64; BOUNDS_MS.len() + 1],
    run: [u64; BOUNDS_MS.len() + 1],
}

impl Step {
    fn add(&mut self, f: &Field, n: u64, scope: &Scope) {
        if !f.in_scope(scope) {
            return;
        }
        let p = &mut self.point;
        match *f {
            Field::Submitted { .. } => p.submitted += n,
            Field::Started { bin, .. } => {
                p.started += n;
                self.wait[bin] += n;
            }
            Field::Restarted { .. } => {
                p.started += n;
                p.restarted += n;
            }
            Field::Ended { state, bin, .. } => {
                *match state {
                    "succeeded" => &mut p.succeeded,
                    "failed" => &mut p.failed,
                    "timed_out" => &mut p.timed_out,
                    _ => &mut p.cancelled,
                } += n;
                if let Some(b) = bin {
                    self.run[b] += n;
                }
            }
            Field::Failure { .. } => {}
            Field::Gauge { what, .. } => {
                let slot = match what {
                    "depth" | "running" if !scope.fleet => return,
                    "depth" => &mut p.depth,
                    "running" => &mut p.running,
                    "workers" => &mut p.workers,
                    "slots" => &mut p.slots,
                    "busy" => &mut p.busy,
                    _ => return,
                };
                // The peak of the step's minutes.
                *slot = Some(slot.unwrap_or(0).max(n));
            }
        }
    }

    fn point(mut self, at: i64) -> StatsPoint {
        self.point.at = at;
        self.point.wait_p50_ms = percentile(&self.wait, 0.5);
        self.point.wait_p95_ms = percentile(&self.wait, 0.95);
        self.point.run_p50_ms = percentile(&self.run, 0.5);
        self.point.run_p95_ms = percentile(&self.run, 0.95);
        self.point
    }
}

/// The `q` quantile of a binned histogram: linear within the bin it falls in (the open last bin
/// answers its lower bound); `None` when empty. An estimate within the bin's width.
pub fn percentile(bins: &[u64], q: f64) -> Option<u64> {
    let total: u64 = bins.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut seen = 0u64;
    for (i, &n) in bins.iter().enumerate() {
        if n > 0 && (seen + n) as f64 >= rank {
            let lo = if i == 0 { 0 } else { BOUNDS_MS[i - 1] };
            let Some(&hi) = BOUNDS_MS.get(i) else { return Some(lo) };
            // (the middle of the rank's share of the bin: one value reads as the bin's middle)
            let within = (rank - 0.5 - seen as f64) / n as f64;
            return Some(lo + ((hi - lo) as f64 * within).round() as u64);
        }
        seen += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(tenant: Option<&str>, fleet: bool) -> Scope {
        Scope {
            from: 10 * MINUTE_MS,
            to: 14 * MINUTE_MS,
            step_minutes: 2,
            tenant: tenant.map(String::from),
            fleet,
            queue: None,
        }
    }

    fn bucket(minute: i64, fields: &[(&str, u64)]) -> (i64, HashMap<String, u64>) {
        (minute, fields.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn fields_parse_and_unknown_ones_are_skipped() {
        assert_eq!(
            Field::parse("cpu|team-a|code|NONZERO_EXIT|repo/img:1|x"),
            Some(Field::Failure {
                queue: "cpu",
                tenant: "team-a",
                code: "NONZERO_EXIT",
                image: "repo/img:1|x"
            })
        );
        assert_eq!(
            Field::parse("gpu||failed|-"),
            Some(Field::Ended {
                queue: "gpu",
                tenant: "",
                state: "failed",
                bin: None
            })
        );
        assert_eq!(Field::parse("cpu|a|start|99"), None);
        assert_eq!(Field::parse("cpu|a|later"), None);
        assert_eq!(Field::parse("junk"), None);
    }

    #[test]
    fn steps_add_minutes_and_tenants_see_their_own() {
        let b = vec![
            bucket(
                10,
                &[
                    ("cpu|a|sub", 3),
                    ("cpu|b|sub", 5),
                    ("cpu|a|start|2", 2),
                    ("g|cpu|depth", 7),
                ],
            ),
            bucket(
                11,
                &[
                    ("cpu|a|succeeded|3", 1),
                    ("cpu|a|failed|4", 1),
                    ("cpu|a|code|NONZERO_EXIT|img", 1),
                    ("g|cpu|depth", 4),
                ],
            ),
            bucket(13, &[("cpu|b|restart", 1), ("gpu|a|cancelled|-", 1), ("g|cpu|busy", 2)]),
        ];
        let all = summarize(&b, &scope(None, true));
        assert_eq!((all.from, all.to, all.step_secs), (10 * MINUTE_MS, 14 * MINUTE_MS, 120));
        let cpu = &all.queues[0].points;
        assert_eq!(cpu.len(), 2);
        assert_eq!(
            (cpu[0].submitted, cpu[0].started, cpu[0].succeeded, cpu[0].failed),
            (8, 2, 1, 1)
        );
        assert_eq!(cpu[0].depth, Some(7), "the step's peak");
        assert_eq!((cpu[1].restarted, cpu[1].busy, cpu[1].depth), (1, Some(2), None));
        assert_eq!(cpu[0].wait_p50_ms, Some(475), "bin 300..1000 ms, a quarter in");
        assert_eq!(all.queues[1].points[1].cancelled, 1);
        assert_eq!(
            all.failures,
            vec![FailureCount {
                code: "NONZERO_EXIT".into(),
                image: "img".into(),
                count: 1
            }]
        );
        assert_eq!(
            all.tenants.iter().map(|t| t.tenant.as_str()).collect::<Vec<_>>(),
            ["b", "a"]
        );
        let a = summarize(&b, &scope(Some("a"), false));
        let cpu = &a.queues[0].points;
        assert_eq!(
            (cpu[0].submitted, cpu[0].depth, cpu[1].restarted, cpu[1].busy),
            (3, None, 0, Some(2))
        );
        assert_eq!(a.tenants.len(), 1);
    }

    #[test]
    fn percentiles_fall_within_their_bin() {
        let mut bins = [0u64; BOUNDS_MS.len() + 1];
        assert_eq!(percentile(&bins, 0.5), None);
        bins[0] = 10;
        assert_eq!(percentile(&bins, 0.5), Some(45));
        bins[11] = 90;
        assert_eq!(
            percentile(&bins, 0.95),
            Some(3_600_000),
            "the open bin: its lower bound"
        );
        let mut bins = [0u64; BOUNDS_MS.len() + 1];
        bins[2] = 1;
        bins[4] = 1;
        assert_eq!(percentile(&bins, 0.5), Some(650));
        assert_eq!(percentile(&bins, 0.95), Some(6_500));
    }
}
