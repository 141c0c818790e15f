//! The scaler's configuration, from environment variables (documented in docs/scaling.md).

use std::time::Duration;

use crate::policy::Policy;

/// One group the scaler sizes.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// Autoscaling group name.
    pub name: String,
    /// Queue it serves.
    pub queue: dcc_shared::job::QueueName,
    /// Its policy.
    pub policy: Policy,
}

fn num(k: &str, default: u64) -> Result<u64, String> {
    match std::env::var(k) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| format!("{k}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}

/// The groups configured: `DCC_SCALER_CPU_ASG` and/or `DCC_SCALER_GPU_ASG`, with
/// `DCC_SCALER_{CPU,GPU}_SLOTS` (slots per instance: 2 and 1), `DCC_SCALER_MAX_STEP` (40),
/// `DCC_SCALER_IDLE_GRACE_SECS` (120), `DCC_SCALER_COOLDOWN_SECS` (120),
/// `DCC_SCALER_HEALTH_GRACE_SECS` (900).
pub fn groups() -> Result<Vec<GroupSettings>, String> {
    let base = Policy {
        slots_per_instance: 1,
        max_step: num("DCC_SCALER_MAX_STEP", 40)? as u32,
        idle_grace_ms: Duration::from_secs(num("DCC_SCALER_IDLE_GRACE_SECS", 120)?).as_millis() as i64,
        cooldown_ms: Duration::from_secs(num("DCC_SCALER_COOLDOWN_SECS", 120)?).as_millis() as i64,
        health_grace_ms: Duration::from_secs(num("DCC_SCALER_HEALTH_GRACE_SECS", 900)?).as_millis() as i64,
    };
    let mut out = Vec::new();
    for (queue, var, slots_var, default_slots) in [
        (
            dcc_shared::job::QueueName::Cpu,
            "DCC_SCALER_CPU_ASG",
            "DCC_SCALER_CPU_SLOTS",
            2,
        ),
        (
            dcc_shared::job::QueueName::Gpu,
            "DCC_SCALER_GPU_ASG",
            "DCC_SCALER_GPU_SLOTS",
            1,
        ),
    ] {
        if let Ok(name) = std::env::var(var)
            && !name.trim().is_empty()
        {
            out.push(GroupSettings {
                name: name.trim().to_string(),
                queue,
                policy: Policy {
                    slots_per_instance: num(slots_var, default_slots)?.max(1) as u32,
                    ..base.clone()
                },
            });
        }
    }
    if out.is_empty() {
        return Err("no group to size: set DCC_SCALER_CPU_ASG and/or DCC_SCALER_GPU_ASG".into());
    }
    Ok(out)
}
