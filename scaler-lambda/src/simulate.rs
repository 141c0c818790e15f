//! A discrete-time simulation (1 s steps, the scaler running every 60 s) of one worker group fed
//! by an arrival trace, to compare DCC's policy with the 2018 one and with a fixed fleet on the
//! same work: queue-wait percentiles, instance-hours, and busy workers killed.

use std::collections::{HashMap, VecDeque};

use crate::policy::{self, Demand, Instance, Policy, Pool, Worker, WorkerHealth};

/// One job of a trace.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// Arrival time, seconds from the start.
    pub at: u64,
    /// Run time, seconds.
    pub duration: u64,
}

/// Reads a trace: CSV lines `time_secs,queue,duration_secs` (a header line is skipped); only
/// rows of `queue` are kept.
pub fn parse_trace(text: &str, queue: &str) -> Result<Vec<Arrival>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("time") {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = || format!("line {}: expected time_secs,queue,duration_secs", n + 1);
        if f.len() != 3 {
            return Err(bad());
        }
        if f[1] != queue {
            continue;
        }
        out.push(Arrival {
            at: f[0].parse().map_err(|_| bad())?,
            duration: f[2].parse().map_err(|_| bad())?,
        });
    }
    out.sort_by_key(|a| a.at);
    Ok(out)
}

/// Which policy drives the group.
#[derive(Clone, Debug)]
pub enum Scaler {
    /// DCC's policy.
    Dcc(Policy),
    /// The 2018 lambda: +1 per minute while anything is queued; straight to min once the queue
    /// has been empty for `empty_delay` after the last finished job (the group picks victims).
    Legacy2018 {
        /// Minutes after the last finished job before scaling down (its code default: 10).
        empty_delay_secs: u64,
    },
    /// A fixed number of instances, always on.
    Fixed(u32),
}

/// Group and instance parameters.
#[derive(Clone, Debug)]
pub struct World {
    /// Job slots per instance.
    pub slots: u32,
    /// Boot time of a new instance, seconds.
    pub boot_secs: u64,
    /// Group min size.
    pub min: u32,
    /// Group max size.
    pub max: u32,
    /// Spot interruptions per instance-hour (0: on-demand). An interrupted instance hands its
    /// jobs back to the head of the queue at once (they start over elsewhere), is reclaimed two
    /// minutes later, and the group replaces it.
    pub interruptions_per_hour: f64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Median queue wait, seconds.
    pub p50_wait: f64,
    /// 95th percentile queue wait, seconds.
    pub p95_wait: f64,
    /// Instance-hours paid.
    pub instance_hours: f64,
    /// Instances terminated while running a job.
    pub busy_killed: u32,
    /// Jobs that completed.
    pub completed: usize,
    /// Jobs handed back by an interrupted instance (each started over).
    pub restarted: u32,
}

struct Inst {
    id: String,
    launched: u64,
    ready_at: u64,
    /// (end time, arrival time, duration) of running jobs.
    jobs: Vec<(u64, u64, u64)>,
    draining: bool,
    idle_since: u64,
}

/// Runs the simulation until every job completed (or a day past the last arrival).
pub fn run(trace: &[Arrival], world: &World, scaler: &Scaler) -> Report {
    let mut queue: VecDeque<(u64, u64)> = VecDeque::new();
    let mut next = 0usize;
    let mut instances: Vec<Inst> = Vec::new();
    let mut serial = 0u32;
    let mut waits: Vec<f64> = Vec::new();
    let mut instance_secs: u64 = 0;
    let mut busy_killed = 0u32;
    let mut last_change: i64 = -1_000_000_000;
    let mut last_finished: u64 = 0;
    let mut last_scale_down: u64 = 0;
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut spot_rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut restarted = 0u32;
    // Per instance and second; compared with a uniform draw in [0, 1).
    let interruption_chance = world.interruptions_per_hour / 3600.0;
    let launch = |instances: &mut Vec<Inst>, t: u64, serial: &mut u32| {
        *serial += 1;
        instances.push(Inst {
            id: format!("i-{serial}"),
            launched: t,
            ready_at: t + world.boot_secs,
            jobs: Vec::new(),
            draining: false,
            idle_since: t + world.boot_secs,
        });
    };
    let initial = match scaler {
        Scaler::Fixed(n) => *n,
        _ => world.min,
    };
    for _ in 0..initial {
        launch(&mut instances, 0, &mut serial);
    }
    let mut desired = initial;
    let end_limit = trace.last().map(|a| a.at).unwrap_or(0) + 86_400;
    let total = trace.len();
    let mut t = 0u64;
    while waits.len() < total && t < end_limit {
        while next < trace.len() && trace[next].at <= t {
            queue.push_back((trace[next].at, trace[next].duration));
            next += 1;
        }
        for i in instances.iter_mut() {
            let before = i.jobs.len();
            i.jobs.retain(|(end, _, _)| *end > t);
            if i.jobs.len() < before {
                last_finished = t;
                if i.jobs.is_empty() {
                    i.idle_since = t;
                }
            }
        }
        if interruption_chance > 0.0 {
            let mut k = 0;
            while k < instances.len() {
                spot_rng ^= spot_rng << 13;
                spot_rng ^= spot_rng >> 7;
                spot_rng ^= spot_rng << 17;
                let draw = (spot_rng >> 11) as f64 / (1u64 << 53) as f64;
                if instances[k].ready_at > t || draw >= interruption_chance {
                    k += 1;
                    continue;
                }
                // The notice: jobs back to the head of the queue (their waits are measured again
                // when they start over), the instance paid until EC2 reclaims it, and replaced.
                let i = instances.remove(k);
                instance_secs += t + 120 - i.launched;
                for (end, arrived, duration) in i.jobs.iter().rev() {
                    let waited = (end - duration - arrived) as f64;
                    if let Some(pos) = waits.iter().rposition(|w| *w == waited) {
                        waits.remove(pos);
                    }
                    queue.push_front((*arrived, *duration));
                    restarted += 1;
                }
                launch(&mut instances, t, &mut serial);
            }
        }
        for i in instances.iter_mut().filter(|i| i.ready_at <= t && !i.draining) {
            while (i.jobs.len() as u32) < world.slots {
                let Some((arrived, duration)) = queue.pop_front() else {
                    break;
                };
                waits.push((t - arrived) as f64);
                i.jobs.push((t + duration, arrived, duration));
            }
        }
        if t.is_multiple_of(60) {
            let running: u64 = instances.iter().map(|i| i.jobs.len() as u64).sum();
            match scaler {
                Scaler::Fixed(_) => {}
                Scaler::Dcc(policy) => {
                    let pool = Pool {
                        group: "sim".into(),
                        min: world.min,
                        max: world.max,
                        desired,
                        instances: instances
                            .iter()
                            .map(|i| Instance {
                                id: i.id.clone(),
                                in_service: i.ready_at <= t,
                                protected: !i.jobs.is_empty(),
                                first_seen_ms: i.launched as i64 * 1000,
                            })
                            .collect(),
                        workers: instances
                            .iter()
                            .filter(|i| i.ready_at <= t)
                            .map(|i| {
                                (
                                    i.id.clone(),
                                    Worker {
                                        running_jobs: i.jobs.len() as u32,
                                        health: if i.draining {
                                            WorkerHealth::Draining
                                        } else {
                                            WorkerHealth::Healthy
                                        },
                                        idle_since_ms: i.jobs.is_empty().then_some(i.idle_since as i64 * 1000),
                                    },
                                )
                            })
                            .collect::<HashMap<_, _>>(),
                        demand: Demand {
                            queued: queue.len() as u64,
                            fast_queued: 0,
                            running,
                            memory_mb: 0,
                        },
                        last_change_ms: last_change,
                    };
                    let plan = policy::plan(&pool, policy, t as i64 * 1000);
                    if let Some(d) = plan.desired {
                        for _ in desired..d {
                            launch(&mut instances, t, &mut serial);
                        }
                        desired = d;
                    }
                    for id in &plan.drain {
                        if let Some(i) = instances.iter_mut().find(|i| &i.id == id) {
                            i.draining = true;
                        }
                    }
                    for term in &plan.terminate {
                        if let Some(pos) = instances.iter().position(|i| i.id == term.instance) {
                            let i = instances.remove(pos);
                            instance_secs += t - i.launched;
                            if !i.jobs.is_empty() {
                                busy_killed += 1;
                            }
                            if term.decrement {
                                desired -= 1;
                            } else {
                                launch(&mut instances, t, &mut serial);
                            }
                        }
                    }
                    if plan.changes_capacity() {
                        last_change = t as i64 * 1000;
                    }
                }
                Scaler::Legacy2018 { empty_delay_secs } => {
                    if !queue.is_empty() {
                        if desired < world.max {
                            desired += 1;
                            launch(&mut instances, t, &mut serial);
                        }
                    } else if t.saturating_sub(last_finished) > *empty_delay_secs
                        && t.saturating_sub(last_scale_down) > 600
                        && desired > world.min
                    {
                        // Straight to min; the group picks the victims, busy or not.
                        while instances.len() as u32 > world.min {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let i = instances.remove((rng % instances.len() as u64) as usize);
                            instance_secs += t - i.launched;
                            if !i.jobs.is_empty() {
                                busy_killed += 1;
                                // Its jobs start over (after a stall timeout in bull; at once here).
                                for (_, arrived, duration) in i.jobs.iter().rev() {
                                    waits.pop();
                                    queue.push_front((*arrived, *duration));
                                }
                            }
                        }
                        desired = world.min;
                        last_scale_down = t;
                    }
                }
            }
        }
        t += 1;
    }
    for i in &instances {
        instance_secs += t - i.launched;
    }
    waits.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| {
        if waits.is_empty() {
            0.0
        } else {
            waits[((waits.len() - 1) as f64 * p).round() as usize]
        }
    };
    Report {
        p50_wait: pct(0.5),
        p95_wait: pct(0.95),
        instance_hours: instance_secs as f64 / 3600.0,
        busy_killed,
        completed: waits.len(),
        restarted,
    }
}

/// The comparison table for one trace.
pub fn table(name: &str, trace: &[Arrival], world: &World, policy: &Policy, fixed: u32) -> (String, [Report; 3]) {
    let reports = [
        run(trace, world, &Scaler::Dcc(policy.clone())),
        run(trace, world, &Scaler::Legacy2018 { empty_delay_secs: 600 }),
        run(trace, world, &Scaler::Fixed(fixed)),
    ];
    let mut s = format!(
        "trace {name}: {} jobs, {} slots/instance, boot {} s, min {} max {}\n",
        trace.len(),
        world.slots,
        world.boot_secs,
        world.min,
        world.max
    );
    s.push_str(
        "| policy | p50 wait (s) | p95 wait (s) | instance-hours | busy workers killed |\n|---|---|---|---|---|\n",
    );
    for (label, r) in [
        ("DCC", &reports[0]),
        ("2018 lambda", &reports[1]),
        (&*format!("fixed {fixed}"), &reports[2]),
    ] {
        s.push_str(&format!(
            "| {label} | {:.0} | {:.0} | {:.1} | {} |\n",
            r.p50_wait, r.p95_wait, r.instance_hours, r.busy_killed
        ));
    }
    (s, reports)
}
