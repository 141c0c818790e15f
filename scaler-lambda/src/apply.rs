//! Carrying a plan out. Each call is independent: one that fails is logged in the result and
//! the rest still happen (the next run sees the state and tries again). Desired capacity is only
//! ever raised with SetDesiredCapacity (clamped to max, which moto does not enforce); it is lowered
//! only by terminating specific drained, idle instances with a decrement, so the group never picks
//! a victim itself.

use aws_sdk_autoscaling::Client;
use dcc_shared::clock::Millis;
use dcc_shared::queue::Queue;
use serde_json::{Value, json};

use crate::policy::Plan;

fn err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

/// Applies `plan`; returns one JSON record of what was done and what failed.
pub async fn apply(plan: &Plan, queue: &Queue, asg: &Client, now: Millis) -> Value {
    let mut errors: Vec<String> = Vec::new();
    if let Some(d) = plan.desired
        && let Err(e) = asg
            .set_desired_capacity()
            .auto_scaling_group_name(&plan.group)
            .desired_capacity(d as i32)
            .honor_cooldown(false)
            .send()
            .await
    {
        errors.push(format!("SetDesiredCapacity {d}: {}", err(e)));
    }
    for (ids, protect) in [(&plan.protect, true), (&plan.unprotect, false)] {
        if ids.is_empty() {
            continue;
        }
        if let Err(e) = asg
            .set_instance_protection()
            .auto_scaling_group_name(&plan.group)
            .set_instance_ids(Some(ids.clone()))
            .protected_from_scale_in(protect)
            .send()
            .await
        {
            errors.push(format!("SetInstanceProtection {protect} {ids:?}: {}", err(e)));
        }
    }
    for w in &plan.drain {
        if let Err(e) = queue.request_drain(w).await {
            errors.push(format!("drain {w}: {e}"));
        }
    }
    for t in &plan.terminate {
        if let Err(e) = asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&t.instance)
            .should_decrement_desired_capacity(t.decrement)
            .send()
            .await
        {
            errors.push(format!(
                "TerminateInstanceInAutoScalingGroup {}: {}",
                t.instance,
                err(e)
            ));
        }
    }
    if plan.changes_capacity()
        && let Ok(mut c) = queue.conn().await
    {
        let r: redis::RedisResult<()> = redis::cmd("HSET")
            .arg(queue.keys().scaler(&plan.group))
            .arg("last_change")
            .arg(now)
            .query_async(&mut c)
            .await;
        if let Err(e) = r {
            errors.push(format!("recording the change: {e}"));
        }
    }
    json!({"plan": plan, "errors": errors})
}
