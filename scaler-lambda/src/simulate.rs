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

/// A xorshift step: the simulator's only randomness, seeded, so every run is the same.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// One run's state: the queue (arrival, duration), the instances, and what is measured.
struct Sim<'a> {
    world: &'a World,
    queue: VecDeque<(u64, u64)>,
    instances: Vec<Inst>,
    desired: u32,
    serial: u32,
    waits: Vec<f64>,
    instance_secs: u64,
    busy_killed: u32,
    restarted: u32,
    last_change: i64,
    last_finished: u64,
    last_scale_down: u64,
    rng: u64,
    spot_rng: u64,
}

impl<'a> Sim<'a> {
    fn new(world: &'a World, initial: u32) -> Self {
        let mut sim = Sim {
            world,
            queue: VecDeque::new(),
            instances: Vec::new(),
            desired: initial,
            serial: 0,
            waits: Vec::new(),
            instance_secs: 0,
            busy_killed: 0,
            restarted: 0,
            last_change: -1_000_000_000,
            last_finished: 0,
            last_scale_down: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            spot_rng: 0x2545_f491_4f6c_dd1d,
        };
        for _ in 0..initial {
            sim.launch(0);
        }
        sim
    }

    fn launch(&mut self, t: u64) {
        self.serial += 1;
        self.instances.push(Inst {
            id: format!("i-{}", self.serial),
            launched: t,
            ready_at: t + self.world.boot_secs,
            jobs: Vec::new(),
            draining: false,
            idle_since: t + self.world.boot_secs,
        });
    }

    /// Removes instance `k`, paid until `paid_until`; the caller decides what its jobs become.
    fn take_back(&mut self, k: usize, paid_until: u64) -> Inst {
        let i = self.instances.remove(k);
        self.instance_secs += paid_until - i.launched;
        i
    }

    fn end_jobs(&mut self, t: u64) {
        for i in self.instances.iter_mut() {
            let before = i.jobs.len();
            i.jobs.retain(|(end, _, _)| *end > t);
            if i.jobs.len() < before {
                self.last_finished = t;
                if i.jobs.is_empty() {
                    i.idle_since = t;
                }
            }
        }
    }

    /// Spot: each ready instance is taken back with the world's chance per second. The notice
    /// hands its jobs back at once; the instance is paid until EC2 reclaims it (two minutes
    /// later) and the group replaces it.
    fn interrupt(&mut self, t: u64, chance: f64) {
        let mut k = 0;
        while k < self.instances.len() {
            let draw = (xorshift(&mut self.spot_rng) >> 11) as f64 / (1u64 << 53) as f64;
            if self.instances[k].ready_at > t || draw >= chance {
                k += 1;
                continue;
            }
            let i = self.take_back(k, t + 120);
            for (end, arrived, duration) in i.jobs.iter().rev() {
                let waited = (end - duration - arrived) as f64;
                if let Some(pos) = self.waits.iter().rposition(|w| *w == waited) {
                    self.waits.remove(pos);
                }
                self.queue.push_front((*arrived, *duration));
                self.restarted += 1;
            }
            self.launch(t);
        }
    }

    fn start_jobs(&mut self, t: u64) {
        let slots = self.world.slots;
        for i in self.instances.iter_mut().filter(|i| i.ready_at <= t && !i.draining) {
            while (i.jobs.len() as u32) < slots {
                let Some((arrived, duration)) = self.queue.pop_front() else {
                    break;
                };
                self.waits.push((t - arrived) as f64);
                i.jobs.push((t + duration, arrived, duration));
            }
        }
    }

    /// What DCC's scaler would read at `t`.
    fn pool(&self, t: u64) -> Pool {
        let instances = self.instances.iter().map(|i| Instance {
            id: i.id.clone(),
            in_service: i.ready_at <= t,
            protected: !i.jobs.is_empty(),
            first_seen_ms: i.launched as i64 * 1000,
        });
        let workers = self.instances.iter().filter(|i| i.ready_at <= t).map(|i| {
            let health = if i.draining {
                WorkerHealth::Draining
            } else {
                WorkerHealth::Healthy
            };
            let worker = Worker {
                running_jobs: i.jobs.len() as u32,
                health,
                idle_since_ms: i.jobs.is_empty().then_some(i.idle_since as i64 * 1000),
            };
            (i.id.clone(), worker)
        });
        Pool {
            group: "sim".into(),
            min: self.world.min,
            max: self.world.max,
            desired: self.desired,
            instances: instances.collect(),
            workers: workers.collect::<HashMap<_, _>>(),
            demand: Demand {
                queued: self.queue.len() as u64,
                fast_queued: 0,
                running: self.instances.iter().map(|i| i.jobs.len() as u64).sum(),
                memory_mb: 0,
            },
            last_change_ms: self.last_change,
        }
    }

    /// One pass of DCC's policy, carried out as the group would.
    fn dcc_pass(&mut self, t: u64, policy: &Policy) {
        let plan = policy::plan(&self.pool(t), policy, t as i64 * 1000);
        if let Some(d) = plan.desired {
            for _ in self.desired..d {
                self.launch(t);
            }
            self.desired = d;
        }
        for id in &plan.drain {
            if let Some(i) = self.instances.iter_mut().find(|i| &i.id == id) {
                i.draining = true;
            }
        }
        for term in &plan.terminate {
            if let Some(pos) = self.instances.iter().position(|i| i.id == term.instance) {
                let i = self.take_back(pos, t);
                if !i.jobs.is_empty() {
                    self.busy_killed += 1;
                }
                if term.decrement {
                    self.desired -= 1;
                } else {
                    self.launch(t);
                }
            }
        }
        if plan.changes_capacity() {
            self.last_change = t as i64 * 1000;
        }
    }

    /// One pass of the 2018 lambda: +1 while anything is queued; straight to min once the queue
    /// has been empty a while, the group picking the victims, busy or not.
    fn legacy_pass(&mut self, t: u64, empty_delay_secs: u64) {
        if !self.queue.is_empty() {
            if self.desired < self.world.max {
                self.desired += 1;
                self.launch(t);
            }
            return;
        }
        if t.saturating_sub(self.last_finished) <= empty_delay_secs
            || t.saturating_sub(self.last_scale_down) <= 600
            || self.desired <= self.world.min
        {
            return;
        }
        while self.instances.len() as u32 > self.world.min {
            let k = (xorshift(&mut self.rng) % self.instances.len() as u64) as usize;
            let i = self.take_back(k, t);
            if !i.jobs.is_empty() {
                self.busy_killed += 1;
                // Its jobs start over (after a stall timeout in bull; at once here).
                for (_, arrived, duration) in i.jobs.iter().rev() {
                    self.waits.pop();
                    self.queue.push_front((*arrived, *duration));
                }
            }
        }
        self.desired = self.world.min;
        self.last_scale_down = t;
    }

    fn report(mut self, t: u64) -> Report {
        for i in &self.instances {
            self.instance_secs += t - i.launched;
        }
        let waits = &mut self.waits;
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
            instance_hours: self.instance_secs as f64 / 3600.0,
            busy_killed: self.busy_killed,
            completed: waits.len(),
            restarted: self.restarted,
        }
    }
}

/// Runs the simulation until every job completed (or a day past the last arrival).
pub fn run(trace: &[Arrival], world: &World, scaler: &Scaler) -> Report {
    let initial = match scaler {
        Scaler::Fixed(n) => *n,
        _ => world.min,
    };
    let mut sim = Sim::new(world, initial);
    // Per instance and second; compared with a uniform draw in [0, 1).
    let interruption_chance = world.interruptions_per_hour / 3600.0;
    let end_limit = trace.last().map(|a| a.at).unwrap_or(0) + 86_400;
    let mut next = 0usize;
    let mut t = 0u64;
    while sim.waits.len() < trace.len() && t < end_limit {
        while next < trace.len() && trace[next].at <= t {
            sim.queue.push_back((trace[next].at, trace[next].duration));
            next += 1;
        }
        sim.end_jobs(t);
        if interruption_chance > 0.0 {
            sim.interrupt(t, interruption_chance);
        }
        sim.start_jobs(t);
        if t.is_multiple_of(60) {
            match scaler {
                Scaler::Fixed(_) => {}
                Scaler::Dcc(policy) => sim.dcc_pass(t, policy),
                Scaler::Legacy2018 { empty_delay_secs } => sim.legacy_pass(t, *empty_delay_secs),
            }
        }
        t += 1;
    }
    sim.report(t)
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
