//! The scaling policy, as a pure function from what the scaler sees to what it should do.
//!
//! Demand is queued + fast-queued + running jobs (counting running work is what keeps busy
//! workers alive, KEDA #2900). Rules, per autoscaling group:
//! - **Scale up** in proportion to the backlog: enough instances for the demand at the instances'
//!   slot count, by at most `max_step` per run, within [min, max]. Every run, no cooldown.
//! - **Protect** every in-service instance whose worker runs a job from scale-in; unprotect idle
//!   ones. Nothing the policy does ever terminates or unprotects an instance with a running job.
//! - **Scale down only idle capacity**, after `cooldown` since the last change: first ask idle
//!   workers (idle for `idle_grace`) to drain; on a later run, terminate drained workers that still
//!   run nothing, decrementing desired. Never below min, never below the demand.
//! - **Health**: an in-service instance seen for longer than `health_grace` whose worker has no
//!   health key, or reports `UNHEALTHY`, is terminated without decrementing desired (the group
//!   replaces it); its jobs come back through their leases. A busy one is left alone.

use std::collections::HashMap;

use serde::Serialize;

/// The policy's knobs (see docs/scaling.md for the reasoning behind the defaults).
#[derive(Clone, Debug)]
pub struct Policy {
    /// Job slots one instance offers (CPU slots, or GPUs for the GPU group).
    pub slots_per_instance: u32,
    /// Most instances added in one run.
    pub max_step: u32,
    /// How long a worker must be idle before it is drained (ms).
    pub idle_grace_ms: i64,
    /// Least time between two scale-downs, and after a scale-up before a scale-down (ms).
    pub cooldown_ms: i64,
    /// How long a new instance may go without a healthy worker before it is replaced (ms).
    pub health_grace_ms: i64,
    /// Memory (MiB) jobs may reserve on one instance, when known: instances are then planned by
    /// the jobs' memory as well as by their count (a type with few GiB per vCPU holds fewer jobs
    /// than slots).
    pub memory_mb_per_instance: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            slots_per_instance: 2,
            max_step: 100,
            idle_grace_ms: 2 * 60_000,
            cooldown_ms: 2 * 60_000,
            health_grace_ms: 15 * 60_000,
            memory_mb_per_instance: None,
        }
    }
}

/// Queue depth of the group's queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct Demand {
    /// Standard jobs waiting.
    pub queued: u64,
    /// Fast jobs waiting.
    pub fast_queued: u64,
    /// Jobs running.
    pub running: u64,
    /// Memory (MiB) the running jobs and the waiting ones that fit an instance reserve (0 when
    /// not read).
    pub memory_mb: u64,
}

/// A worker's health as the policy needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerHealth {
    /// Working.
    Healthy,
    /// Alive but unable to run jobs.
    Unhealthy,
    /// Draining (asked to, or shutting down).
    Draining,
}

/// A worker, keyed by its id (= the instance id on AWS).
#[derive(Clone, Copy, Debug)]
pub struct Worker {
    /// Jobs it runs now.
    pub running_jobs: u32,
    /// Its health.
    pub health: WorkerHealth,
    /// Since when it has run nothing (ms), if idle.
    pub idle_since_ms: Option<i64>,
}

/// An instance of the group.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// `InService` (others are pending or leaving and are left alone).
    pub in_service: bool,
    /// Protected from scale-in.
    pub protected: bool,
    /// When the scaler first saw it (ms): the start of its health grace.
    pub first_seen_ms: i64,
}

/// One autoscaling group and what runs on it.
#[derive(Clone, Debug)]
pub struct Pool {
    /// Group name.
    pub group: String,
    /// Min size.
    pub min: u32,
    /// Max size.
    pub max: u32,
    /// Desired capacity now.
    pub desired: u32,
    /// Its instances.
    pub instances: Vec<Instance>,
    /// Workers by id.
    pub workers: HashMap<String, Worker>,
    /// Its queue's depth.
    pub demand: Demand,
    /// When the scaler last changed desired (ms), 0 if never.
    pub last_change_ms: i64,
}

/// An instance to terminate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Termination {
    /// Instance id.
    pub instance: String,
    /// Lower desired capacity with it (scale-down) or not (replacement of a sick one).
    pub decrement: bool,
    /// Why.
    pub reason: &'static str,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Group name.
    pub group: String,
    /// New desired capacity, when it grows.
    pub desired: Option<u32>,
    /// Instances to protect from scale-in.
    pub protect: Vec<String>,
    /// Instances to unprotect.
    pub unprotect: Vec<String>,
    /// Workers to ask to drain.
    pub drain: Vec<String>,
    /// Instances to terminate.
    pub terminate: Vec<Termination>,
    /// Instances the demand needs (for the log).
    pub needed: u32,
}

impl Plan {
    /// True when the plan changes desired capacity (scale-up or a decrementing termination).
    pub fn changes_capacity(&self) -> bool {
        self.desired.is_some() || self.terminate.iter().any(|t| t.decrement)
    }
}

/// Instances the demand needs, within the group's bounds: by the jobs' count over the slots of an
/// instance, and, when an instance's memory is known, by the memory they reserve.
fn needed(pool: &Pool, policy: &Policy) -> u32 {
    let slots = policy.slots_per_instance.max(1) as u64;
    let demand = pool.demand.queued + pool.demand.fast_queued + pool.demand.running;
    let by_memory = policy
        .memory_mb_per_instance
        .filter(|m| *m > 0)
        .map_or(0, |m| pool.demand.memory_mb.div_ceil(m));
    (demand.div_ceil(slots).max(by_memory) as u32).clamp(pool.min, pool.max.max(pool.min))
}

/// Decides what to do with `pool` at time `now`.
pub fn plan(pool: &Pool, policy: &Policy, now: i64) -> Plan {
    let needed = needed(pool, policy);
    let mut plan = Plan {
        group: pool.group.clone(),
        needed,
        ..Plan::default()
    };
    let busy = |id: &str| pool.workers.get(id).is_some_and(|w| w.running_jobs > 0);

    for i in pool.instances.iter().filter(|i| i.in_service) {
        if busy(&i.id) && !i.protected {
            plan.protect.push(i.id.clone());
        }
        if !busy(&i.id) && i.protected {
            plan.unprotect.push(i.id.clone());
        }
    }

    // Health: replace instances whose worker never came up or went bad (not while busy).
    for i in pool.instances.iter().filter(|i| i.in_service) {
        if now - i.first_seen_ms < policy.health_grace_ms || busy(&i.id) {
            continue;
        }
        let sick = match pool.workers.get(&i.id) {
            None => true,
            Some(w) => w.health == WorkerHealth::Unhealthy,
        };
        if sick {
            plan.terminate.push(Termination {
                instance: i.id.clone(),
                decrement: false,
                reason: "no healthy worker past the health grace",
            });
        }
    }

    if needed > pool.desired {
        plan.desired = Some(needed.min(pool.desired.saturating_add(policy.max_step)).min(pool.max));
        return plan;
    }
    if needed == pool.desired || now - pool.last_change_ms < policy.cooldown_ms {
        return plan;
    }
    scale_down(pool, policy, now, &mut plan);
    plan
}

/// Scales down by `pool.desired - plan.needed`, idle capacity only: terminates drained idle
/// workers, drains idle ones (not those `plan` already replaces).
fn scale_down(pool: &Pool, policy: &Policy, now: i64, plan: &mut Plan) {
    let mut surplus = pool.desired - plan.needed;
    let replacing: Vec<&str> = plan.terminate.iter().map(|t| t.instance.as_str()).collect();
    let mut candidates: Vec<(&Instance, &Worker)> = pool
        .instances
        .iter()
        .filter(|i| i.in_service && !replacing.contains(&i.id.as_str()))
        .filter_map(|i| pool.workers.get(&i.id).map(|w| (i, w)))
        .filter(|(_, w)| w.running_jobs == 0)
        .collect();
    // Drained ones first (they are done), then the longest idle.
    candidates.sort_by_key(|(i, w)| {
        (
            w.health != WorkerHealth::Draining,
            w.idle_since_ms.unwrap_or(now),
            i.id.clone(),
        )
    });
    for (i, w) in candidates {
        if surplus == 0 {
            break;
        }
        match w.health {
            WorkerHealth::Draining => {
                plan.terminate.push(Termination {
                    instance: i.id.clone(),
                    decrement: true,
                    reason: "drained and idle",
                });
                surplus -= 1;
            }
            WorkerHealth::Healthy if w.idle_since_ms.is_some_and(|t| now - t >= policy.idle_grace_ms) => {
                plan.drain.push(i.id.clone());
                surplus -= 1;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn pool(instances: &[(&str, u32, WorkerHealth)], queued: u64, desired: u32) -> Pool {
        Pool {
            group: "g".into(),
            min: 1,
            max: 20,
            desired,
            instances: instances
                .iter()
                .map(|(id, _, _)| Instance {
                    id: id.to_string(),
                    in_service: true,
                    protected: false,
                    first_seen_ms: 0,
                })
                .collect(),
            workers: instances
                .iter()
                .map(|(id, busy, h)| {
                    (
                        id.to_string(),
                        Worker {
                            running_jobs: *busy,
                            health: *h,
                            idle_since_ms: if *busy == 0 { Some(0) } else { None },
                        },
                    )
                })
                .collect(),
            demand: Demand {
                queued,
                fast_queued: 0,
                running: instances.iter().map(|(_, b, _)| *b as u64).sum(),
                memory_mb: 0,
            },
            last_change_ms: 0,
        }
    }

    #[test]
    fn scales_up_in_proportion_bounded_by_step_and_max() {
        let p = pool(&[("a", 2, WorkerHealth::Healthy)], 20, 1);
        let policy = Policy::default();
        // 22 jobs at 2 slots: 11 instances, from 1 that is one step of 10.
        assert_eq!(plan(&p, &policy, 100 * MIN).desired, Some(11));
        let small_step = Policy {
            max_step: 3,
            ..policy.clone()
        };
        let policy = Policy { max_step: 10, ..policy };
        assert_eq!(plan(&p, &small_step, 100 * MIN).desired, Some(4));
        let mut capped = p.clone();
        capped.max = 5;
        assert_eq!(plan(&capped, &policy, 100 * MIN).desired, Some(5));
    }

    /// With an instance's memory known, jobs that reserve more of it than their count says
    /// need more instances: 6 jobs of 3 GiB on 2-slot instances of 7 GiB need 3 by count but
    /// 18 GiB / 7 GiB = 3 by memory; 6 jobs of 6 GiB need 6.
    #[test]
    fn plans_by_memory_as_well_as_by_count() {
        let mut p = pool(&[], 6, 0);
        let policy = Policy {
            memory_mb_per_instance: Some(7 * 1024),
            ..Policy::default()
        };
        p.demand.memory_mb = 6 * 3 * 1024;
        assert_eq!(plan(&p, &policy, 100 * MIN).desired, Some(3));
        p.demand.memory_mb = 6 * 6 * 1024;
        assert_eq!(plan(&p, &policy, 100 * MIN).desired, Some(6));
        // Unknown instance memory: by count only.
        assert_eq!(plan(&p, &Policy::default(), 100 * MIN).desired, Some(3));
    }

    #[test]
    fn protects_busy_and_never_touches_them() {
        let mut p = pool(
            &[("busy", 1, WorkerHealth::Healthy), ("idle", 0, WorkerHealth::Healthy)],
            0,
            2,
        );
        p.instances[1].protected = true;
        let out = plan(&p, &Policy::default(), 100 * MIN);
        assert_eq!(out.protect, vec!["busy"]);
        assert_eq!(out.unprotect, vec!["idle"]);
    }

    #[test]
    fn scale_down_drains_then_terminates_idle_only() {
        let p = pool(
            &[("a", 0, WorkerHealth::Healthy), ("b", 1, WorkerHealth::Healthy)],
            0,
            2,
        );
        let out = plan(&p, &Policy::default(), 100 * MIN);
        assert_eq!(out.drain, vec!["a"]);
        assert!(out.terminate.is_empty(), "first drain, terminate later");
        let p2 = pool(
            &[("a", 0, WorkerHealth::Draining), ("b", 1, WorkerHealth::Healthy)],
            0,
            2,
        );
        let out = plan(&p2, &Policy::default(), 100 * MIN);
        assert_eq!(
            out.terminate,
            vec![Termination {
                instance: "a".into(),
                decrement: true,
                reason: "drained and idle"
            }]
        );
    }

    #[test]
    fn waits_for_idle_grace_and_cooldown() {
        let mut p = pool(
            &[("a", 0, WorkerHealth::Healthy), ("b", 0, WorkerHealth::Healthy)],
            0,
            2,
        );
        p.workers.get_mut("a").unwrap().idle_since_ms = Some(100 * MIN - 60_000);
        p.workers.get_mut("b").unwrap().idle_since_ms = Some(100 * MIN - 60_000);
        assert!(
            plan(&p, &Policy::default(), 100 * MIN).drain.is_empty(),
            "idle for 1 min < 5 min grace"
        );
        let mut q = pool(
            &[("a", 0, WorkerHealth::Healthy), ("b", 0, WorkerHealth::Healthy)],
            0,
            2,
        );
        q.last_change_ms = 100 * MIN - 60_000;
        assert!(plan(&q, &Policy::default(), 100 * MIN).drain.is_empty(), "cooldown");
    }

    #[test]
    fn never_below_min_or_demand() {
        let p = pool(&[("a", 0, WorkerHealth::Healthy)], 0, 1);
        assert!(plan(&p, &Policy::default(), 100 * MIN).drain.is_empty(), "min is 1");
        let q = pool(
            &[
                ("a", 0, WorkerHealth::Healthy),
                ("b", 0, WorkerHealth::Healthy),
                ("c", 0, WorkerHealth::Healthy),
            ],
            4,
            3,
        );
        // 4 queued at 2 slots = 2 needed of 3: one drains.
        assert_eq!(plan(&q, &Policy::default(), 100 * MIN).drain.len(), 1);
    }

    #[test]
    fn replaces_sick_instances_past_grace_without_decrement() {
        let mut p = pool(
            &[("ok", 0, WorkerHealth::Healthy), ("sick", 0, WorkerHealth::Unhealthy)],
            2,
            3,
        );
        p.instances.push(Instance {
            id: "ghost".into(),
            in_service: true,
            protected: false,
            first_seen_ms: 0,
        });
        p.instances.push(Instance {
            id: "new".into(),
            in_service: true,
            protected: false,
            first_seen_ms: 100 * MIN - 1000,
        });
        let out = plan(&p, &Policy::default(), 100 * MIN);
        let t: Vec<(&str, bool)> = out
            .terminate
            .iter()
            .map(|t| (t.instance.as_str(), t.decrement))
            .collect();
        assert_eq!(
            t,
            vec![("sick", false), ("ghost", false)],
            "the new one is within its grace"
        );
    }

    /// The invariant, over many random states: no plan terminates or unprotects an instance
    /// whose worker runs a job.
    #[test]
    fn property_never_kills_or_unprotects_a_busy_worker() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        for _ in 0..20_000 {
            let count = rnd(12) as usize;
            let now = 100 * MIN + rnd(1000 * MIN as u64) as i64;
            let mut p = Pool {
                group: "g".into(),
                min: rnd(3) as u32,
                max: 3 + rnd(20) as u32,
                desired: rnd(15) as u32,
                instances: Vec::new(),
                workers: HashMap::new(),
                demand: Demand {
                    queued: rnd(50),
                    fast_queued: rnd(3),
                    running: rnd(30),
                    memory_mb: rnd(100_000),
                },
                last_change_ms: now - rnd(20 * MIN as u64) as i64,
            };
            for k in 0..count {
                let id = format!("i-{k}");
                p.instances.push(Instance {
                    id: id.clone(),
                    in_service: rnd(5) != 0,
                    protected: rnd(2) == 0,
                    first_seen_ms: now - rnd(60 * MIN as u64) as i64,
                });
                if rnd(6) != 0 {
                    let health =
                        [WorkerHealth::Healthy, WorkerHealth::Unhealthy, WorkerHealth::Draining][rnd(3) as usize];
                    let running_jobs = if rnd(2) == 0 { 0 } else { 1 + rnd(4) as u32 };
                    let idle_since_ms = (running_jobs == 0).then(|| now - rnd(30 * MIN as u64) as i64);
                    p.workers.insert(
                        id,
                        Worker {
                            running_jobs,
                            health,
                            idle_since_ms,
                        },
                    );
                }
            }
            let out = plan(&p, &Policy::default(), now);
            for t in &out.terminate {
                assert!(
                    p.workers.get(&t.instance).is_none_or(|w| w.running_jobs == 0),
                    "terminated a busy worker: {p:?} {out:?}"
                );
            }
            for u in &out.unprotect {
                assert!(
                    p.workers.get(u).is_none_or(|w| w.running_jobs == 0),
                    "unprotected a busy worker"
                );
            }
            if let Some(d) = out.desired {
                assert!(d <= p.max.max(p.min) && d > p.desired);
            }
            let decrements = out.terminate.iter().filter(|t| t.decrement).count() as u32;
            assert!(
                p.desired - decrements.min(p.desired) >= p.min.min(p.desired),
                "below min"
            );
        }
    }
}
