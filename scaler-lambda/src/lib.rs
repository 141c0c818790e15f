//! The DCC scaler: sizes the worker autoscaling groups from queue depth and worker health in
//! Redis, without ever terminating a busy worker.
//!
//! # Layout
//! - [`policy`]: the policy as a pure function (state in, plan out) and its tests.
//! - [`simulate`]: a discrete-time simulator comparing it with the 2018 lambda and a fixed fleet.
//! - [`observe`]: reading the state from Redis and the AutoScaling API.
//! - [`apply`]: carrying a plan out (AutoScaling calls, drain requests in Redis).
//! - [`settings`]: configuration from environment variables.
//! - `main.rs`: the `dcc-scaler` binary — the Lambda handler, `once`, `simulate`.

pub mod apply;
pub mod observe;
pub mod policy;
pub mod settings;
pub mod simulate;

#[cfg(test)]
mod tests {
    use crate::policy::Policy;
    use crate::simulate::{World, parse_trace, table};

    fn world() -> World {
        World {
            slots: 2,
            boot_secs: 120,
            min: 1,
            max: 60,
            interruptions_per_hour: 0.0,
        }
    }

    /// On the bursty trace DCC kills no busy worker, waits less at p95 than the 2018 lambda, and
    /// pays no more instance-hours.
    #[test]
    fn dcc_beats_the_2018_policy_on_the_bursty_trace() {
        let trace = parse_trace(include_str!("../traces/bursty.csv"), "cpu").unwrap();
        let (text, [dcc, legacy, _fixed]) = table("bursty", &trace, &world(), &Policy::default(), 20);
        println!("{text}");
        assert_eq!(dcc.busy_killed, 0);
        assert_eq!(dcc.completed, trace.len());
        assert!(
            dcc.p95_wait < legacy.p95_wait,
            "p95 {} vs {}",
            dcc.p95_wait,
            legacy.p95_wait
        );
        assert!(
            dcc.instance_hours <= legacy.instance_hours,
            "{} vs {}",
            dcc.instance_hours,
            legacy.instance_hours
        );
    }

    #[test]
    fn every_shipped_trace_parses_and_completes() {
        for (name, text) in [
            ("steady", include_str!("../traces/steady.csv")),
            ("diurnal", include_str!("../traces/diurnal.csv")),
        ] {
            let trace = parse_trace(text, "cpu").unwrap();
            let (t, [dcc, ..]) = table(name, &trace, &world(), &Policy::default(), 20);
            println!("{t}");
            assert_eq!(dcc.completed, trace.len());
            assert_eq!(dcc.busy_killed, 0);
        }
    }
}

/// Groups that sleep: a fleet at min 0 against the same fleet kept at min 1.
#[cfg(test)]
mod from_zero {
    use crate::policy::Policy;
    use crate::simulate::{Report, Scaler, World, parse_trace, run};

    fn both(trace: &str, queue: &str, world: World, policy: &Policy) -> (Report, Report) {
        let trace = parse_trace(trace, queue).unwrap();
        let zero = run(
            &trace,
            &World {
                min: 0,
                ..world.clone()
            },
            &Scaler::Dcc(policy.clone()),
        );
        let one = run(&trace, &World { min: 1, ..world }, &Scaler::Dcc(policy.clone()));
        for r in [&zero, &one] {
            assert_eq!(r.completed, trace.len());
            assert_eq!(r.busy_killed, 0);
        }
        println!(
            "{queue}: min 0: p50 {:.0} s, p95 {:.0} s, {:.1} instance-hours | min 1: p50 {:.0} s, p95 {:.0} s, {:.1} instance-hours",
            zero.p50_wait, zero.p95_wait, zero.instance_hours, one.p50_wait, one.p95_wait, one.instance_hours
        );
        (zero, one)
    }

    /// GPU bursts every 3 hours: a GPU group that sleeps between them pays for the bursts only,
    /// and its first job waits about a pass and a boot.
    #[test]
    fn a_gpu_group_sleeps_between_bursts() {
        let world = World {
            slots: 1,
            boot_secs: 300,
            min: 0,
            max: 8,
            interruptions_per_hour: 0.0,
        };
        let policy = Policy {
            slots_per_instance: 1,
            ..Policy::default()
        };
        let (zero, one) = both(include_str!("../traces/gpu_bursts.csv"), "gpu", world, &policy);
        assert!(zero.instance_hours < one.instance_hours);
        assert!(zero.p95_wait <= (300 + 60 + 60) as f64, "p95 {}", zero.p95_wait);
    }

    /// Fast jobs arriving at an empty CPU fleet are run once an instance boots.
    #[test]
    fn fast_jobs_at_an_empty_fleet_run_after_a_boot() {
        let world = World {
            slots: 2,
            boot_secs: 120,
            min: 0,
            max: 20,
            interruptions_per_hour: 0.0,
        };
        let policy = Policy {
            slots_per_instance: 2,
            ..Policy::default()
        };
        let (zero, one) = both(include_str!("../traces/fast_from_zero.csv"), "cpu", world, &policy);
        assert!(zero.instance_hours < one.instance_hours);
        assert!(zero.p95_wait <= (120 + 60 + 60) as f64, "p95 {}", zero.p95_wait);
    }
}

/// Spot: the same fleet with instances taken back.
#[cfg(test)]
mod spot {
    use crate::policy::Policy;
    use crate::simulate::{Scaler, World, parse_trace, run};

    /// Interrupted instances hand their jobs back: every job still completes, none is lost, the
    /// restarts cost some wait and some instance-hours.
    #[test]
    fn interruptions_lose_no_job() {
        for (name, text) in [
            ("bursty", include_str!("../traces/bursty.csv")),
            ("mixed", include_str!("../traces/mixed.csv")),
        ] {
            interrupted(name, text);
        }
    }

    fn interrupted(name: &str, text: &str) {
        let trace = parse_trace(text, "cpu").unwrap();
        let mut last_restarts = 0;
        for rate in [0.0, 0.05, 0.2] {
            let world = World {
                slots: 2,
                boot_secs: 120,
                min: 1,
                max: 60,
                interruptions_per_hour: rate,
            };
            let r = run(&trace, &world, &Scaler::Dcc(Policy::default()));
            println!(
                "| {name} | {rate} | {:.0} | {:.0} | {:.1} | {} |",
                r.p50_wait, r.p95_wait, r.instance_hours, r.restarted
            );
            assert_eq!((r.completed, r.busy_killed), (trace.len(), 0), "rate {rate}");
            assert!(r.restarted >= last_restarts, "rate {rate}");
            last_restarts = r.restarted;
        }
        assert!(last_restarts > 0, "{name}: the highest rate interrupted something");
    }
}

/// Faster scale-up on bursts: a burst is served in one pass, not in steps of 40 instances.
#[cfg(test)]
mod bursts {
    use crate::policy::Policy;
    use crate::simulate::{Scaler, World, parse_trace, run};

    /// On the bursty, diurnal and mixed traces, p95 queue wait within a boot plus a pass (the
    /// scaler runs every 60 s), at no more instance-hours than with the old step of 40.
    #[test]
    fn p95_wait_within_a_boot_and_a_pass_at_no_more_cost() {
        let world = World {
            slots: 2,
            boot_secs: 120,
            min: 1,
            max: 60,
            interruptions_per_hour: 0.0,
        };
        let before = Policy {
            max_step: 40,
            ..Policy::default()
        };
        for (name, text) in [
            ("bursty", include_str!("../traces/bursty.csv")),
            ("diurnal", include_str!("../traces/diurnal.csv")),
            ("mixed", include_str!("../traces/mixed.csv")),
        ] {
            let trace = parse_trace(text, "cpu").unwrap();
            let now = run(&trace, &world, &Scaler::Dcc(Policy::default()));
            let old = run(&trace, &world, &Scaler::Dcc(before.clone()));
            println!(
                "{name}: step 40: p50 {:.0} p95 {:.0} {:.1} h | default: p50 {:.0} p95 {:.0} {:.1} h",
                old.p50_wait, old.p95_wait, old.instance_hours, now.p50_wait, now.p95_wait, now.instance_hours
            );
            assert!(
                now.p95_wait <= (world.boot_secs + 60) as f64,
                "{name}: p95 {}",
                now.p95_wait
            );
            assert!(now.instance_hours <= 1.1 * old.instance_hours, "{name}");
            assert_eq!((now.completed, now.busy_killed), (trace.len(), 0), "{name}");
        }
    }
}

#[cfg(test)]
mod tuning {
    use crate::policy::Policy;
    use crate::simulate::{World, parse_trace, table};

    #[test]
    #[ignore]
    fn sweep() {
        let trace = parse_trace(include_str!("../traces/bursty.csv"), "cpu").unwrap();
        let world = World {
            slots: 2,
            boot_secs: 120,
            min: 1,
            max: 60,
            interruptions_per_hour: 0.0,
        };
        for step in [10, 20, 40, 60] {
            for grace in [60, 120, 300] {
                for cool in [60, 120, 300] {
                    let p = Policy {
                        max_step: step,
                        idle_grace_ms: grace * 1000,
                        cooldown_ms: cool * 1000,
                        ..Policy::default()
                    };
                    let (_, [d, l, _]) = table("b", &trace, &world, &p, 20);
                    println!(
                        "step {step} grace {grace} cool {cool}: p50 {} p95 {} hours {:.1} (legacy p95 {} hours {:.1})",
                        d.p50_wait, d.p95_wait, d.instance_hours, l.p95_wait, l.instance_hours
                    );
                }
            }
        }
    }
}
