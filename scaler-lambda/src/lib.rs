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
