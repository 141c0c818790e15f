//! `dcc top`: the queues, the workers, the last minutes' history and the caller's recent jobs,
//! redrawn every few seconds, for an operator on a bastion host with no browser. Everything comes
//! from the v1 API as the caller (a tenant's key shows its own jobs, an admin's all of them):
//! queue depths, the workers view, `GET /api/v1/stats` (per minute: jobs by state, waits, depth,
//! busy slots: the dashboard's graphs as a table), and the newest jobs, from which states, run
//! times and failures are counted.
//! On a terminal each frame replaces the last; otherwise (a pipe, a log) frames follow each
//! other, as `top -b` prints them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use dcc_client::ListQuery;
use dcc_shared::api::{JobList, Queues, Stats, StatsPoint, Workers};
use dcc_shared::clock::{now_ms, parse_rfc3339, rfc3339};
use dcc_shared::job::{JobState, JobView};

use super::{Client, emit};

/// Jobs read per frame: the newest, enough to count a busy minute.
const RECENT: usize = 500;
/// Minutes of history shown (a line each).
const HISTORY_MINUTES: i64 = 10;
/// Lines of failures shown per grouping.
const TOP_FAILURES: usize = 5;

/// Draws frames every `interval` until interrupted; with `once`, one frame.
pub async fn top(client: &Client, server: &str, interval: Duration, once: bool) -> anyhow::Result<i32> {
    let tty = std::io::stdout().is_terminal();
    loop {
        let frame = frame(client, server, interval).await?;
        match (once, tty) {
            (true, _) => emit(frame.as_bytes()),
            // Home, clear the screen, then the frame.
            (false, true) => emit(format!("\x1b[H\x1b[2J{frame}").as_bytes()),
            (false, false) => emit(format!("{frame}\n").as_bytes()),
        }
        if once {
            return Ok(0);
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
    }
}

/// One frame: what the server says now.
async fn frame(client: &Client, server: &str, interval: Duration) -> anyhow::Result<String> {
    let recent = ListQuery {
        status: None,
        limit: Some(RECENT),
        cursor: None,
    };
    let now = now_ms();
    let (queues, workers, jobs, stats) = tokio::try_join!(
        client.queues(),
        client.workers(),
        client.list(&recent),
        client.stats(now - HISTORY_MINUTES * 60_000, 60)
    )?;
    let mut f = format!(
        "dcc top: {server} at {} (every {} s; Ctrl-C quits)\n\n",
        rfc3339(now),
        interval.as_secs()
    );
    f.push_str(&queue_table(&queues));
    f.push('\n');
    f.push_str(&worker_table(&workers, now));
    f.push('\n');
    f.push_str(&history_table(&stats));
    f.push_str(&job_summary(&jobs, now));
    Ok(f)
}

fn queue_table(q: &Queues) -> String {
    let mut s = format!(
        "{:<6}{:>8}{:>8}{:>9}{:>14}\n",
        "QUEUE", "QUEUED", "FAST", "RUNNING", "OLDEST WAIT"
    );
    for (name, d) in [("cpu", &q.cpu), ("gpu", &q.gpu)] {
        let oldest = match d.oldest_queued_age_ms {
            0 => "-".to_string(),
            ms => seconds(ms),
        };
        s.push_str(&format!(
            "{name:<6}{:>8}{:>8}{:>9}{oldest:>14}\n",
            d.queued, d.fast_queued, d.running
        ));
    }
    s
}

fn worker_table(w: &Workers, now: i64) -> String {
    let slots: u32 = w.workers.iter().map(|w| w.cpus).sum();
    let busy: u32 = w.workers.iter().map(|w| w.cpus - w.free_cpu_slots.min(w.cpus)).sum();
    let gpus: u32 = w.workers.iter().map(|w| w.gpus).sum();
    let gpus_busy: u32 = w.workers.iter().map(|w| w.gpus - w.free_gpus.min(w.gpus)).sum();
    let mut s = format!(
        "WORKERS {}   CPU SLOTS {busy}/{slots} busy   GPUS {gpus_busy}/{gpus} busy\n",
        w.workers.len()
    );
    s.push_str(&format!(
        "{:<28}{:<11}{:>8}{:>7}{:>9}{:>6}{:>11}\n",
        "WORKER", "HEALTH", "SLOTS", "GPUS", "RUNNING", "WARM", "SEEN"
    ));
    for w in &w.workers {
        let health = w.health.as_str();
        s.push_str(&format!(
            "{:<28}{health:<11}{:>8}{:>7}{:>9}{:>6}{:>11}\n",
            w.id,
            format!("{}/{}", w.cpus - w.free_cpu_slots.min(w.cpus), w.cpus),
            format!("{}/{}", w.gpus - w.free_gpus.min(w.gpus), w.gpus),
            w.running_jobs,
            w.warm_containers,
            format!("{} ago", seconds(now - w.last_seen)),
        ));
    }
    s
}

/// Per queue that did anything, a line per minute: jobs by state, waits, depth, busy slots.
fn history_table(stats: &Stats) -> String {
    let mut s = String::new();
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for q in &stats.queues {
        let active = |p: &StatsPoint| p.submitted + p.started + p.succeeded + p.failed + p.timed_out + p.cancelled > 0;
        if !q.points.iter().any(|p| active(p) || p.slots.unwrap_or(0) > 0) {
            continue;
        }
        s.push_str(&format!(
            "HISTORY {} (per minute)\n{:<7}{:>8}{:>8}{:>6}{:>8}{:>8}{:>10}{:>10}{:>7}{:>12}\n",
            q.queue,
            "MINUTE",
            "SUBMIT",
            "START",
            "OK",
            "FAILED",
            "CANCEL",
            "WAIT P50",
            "WAIT P95",
            "DEPTH",
            "BUSY/SLOTS"
        ));
        for p in &q.points {
            let failed = p.failed + p.timed_out;
            let busy = format!("{}/{}", opt(p.busy), opt(p.slots));
            s.push_str(&format!(
                "{:<7}{:>8}{:>8}{:>6}{failed:>8}{:>8}{:>10}{:>10}{:>7}{busy:>12}\n",
                &rfc3339(p.at)[11..16],
                p.submitted,
                p.started,
                p.succeeded,
                p.cancelled,
                p.wait_p50_ms.map_or("-".into(), |ms| seconds(ms as i64)),
                p.wait_p95_ms.map_or("-".into(), |ms| seconds(ms as i64)),
                opt(p.depth),
            ));
        }
        s.push('\n');
    }
    s
}

/// Counts over the newest jobs: by state, ended per minute, waits and run times, failures by
/// error code and by image.
fn job_summary(jobs: &JobList, now: i64) -> String {
    let list = &jobs.jobs;
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for j in list {
        *by_state.entry(j.status.as_str()).or_default() += 1;
    }
    let states: Vec<String> = by_state.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let ended_within = |ms: i64| {
        list.iter()
            .filter(|j| finished(j).is_some_and(|t| now - t <= ms))
            .count()
    };
    let mut waits: Vec<i64> = list.iter().filter_map(|j| j.stats.as_ref()?.queued_ms).collect();
    let mut runs: Vec<i64> = list
        .iter()
        .filter(|j| j.status.is_terminal())
        .filter_map(|j| j.stats.as_ref().map(|s| s.run_ms as i64))
        .collect();
    let mut s = format!("LAST {} JOBS   {}\n", list.len(), states.join("   "));
    s.push_str(&format!(
        "  ended in the last minute {}, the last 5 minutes {}\n",
        ended_within(60_000),
        ended_within(300_000)
    ));
    s.push_str(&format!(
        "  wait p50 {} p95 {}   run p50 {} p95 {}\n",
        percentile(&mut waits, 0.5),
        percentile(&mut waits, 0.95),
        percentile(&mut runs, 0.5),
        percentile(&mut runs, 0.95)
    ));
    let failed: Vec<&JobView> = list
        .iter()
        .filter(|j| matches!(j.status, JobState::Failed | JobState::TimedOut))
        .collect();
    s.push_str(&format!(
        "FAILURES BY CODE   {}\n",
        ranked(failed.iter().map(|j| j.error.as_ref().map_or("-", |e| e.code.as_str())))
    ));
    s.push_str(&format!(
        "FAILURES BY IMAGE  {}\n",
        ranked(failed.iter().map(|j| j.image.as_str()))
    ));
    s
}

fn finished(j: &JobView) -> Option<i64> {
    j.finished_at.as_deref().and_then(parse_rfc3339)
}

/// The most frequent values first, with their counts; `-` when there are none.
fn ranked<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut top: Vec<(&str, usize)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = top.iter().take(TOP_FAILURES).map(|(v, n)| format!("{v} {n}")).collect();
    if shown.is_empty() { "-".into() } else { shown.join(", ") }
}

/// The `p` quantile of `v` (ms) in seconds, `-` when empty.
fn percentile(v: &mut [i64], p: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    seconds(v[i])
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms.max(0) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_rank_by_count_and_quantiles_read_in_seconds() {
        assert_eq!(ranked(["b", "a", "b", "c", "a", "b"].into_iter()), "b 3, a 2, c 1");
        assert_eq!(ranked(std::iter::empty()), "-");
        let mut v = vec![3000, 1000, 2000];
        assert_eq!(percentile(&mut v, 0.5), "2.0 s");
        assert_eq!(percentile(&mut [], 0.5), "-");
    }
}
