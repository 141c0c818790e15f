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
    /// Memory (MiB) a job may reserve on one instance, when known: a job needing more is never
    /// promised to this group.
    pub memory_mb: Option<u64>,
    /// About how long an instance takes to boot and register its worker.
    pub boot_secs: u64,
}

/// How long a published outlook holds (`DCC_SCALER_OUTLOOK_TTL_SECS`, 180: three passes of the
/// one-minute schedule), so a scaler that stopped stops promising workers within that.
pub fn outlook_ttl() -> Result<Duration, String> {
    Ok(Duration::from_secs(num("DCC_SCALER_OUTLOOK_TTL_SECS", 180)?.max(1)))
}

fn num(k: &str, default: u64) -> Result<u64, String> {
    match std::env::var(k) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| format!("{k}={v:?} is not a whole number")),
        _ => Ok(default),
    }
}

/// The groups configured: `DCC_SCALER_CPU_ASG` and/or `DCC_SCALER_GPU_ASG`, with
/// `DCC_SCALER_{CPU,GPU}_SLOTS` (slots per instance: 2 and 1), `DCC_SCALER_{CPU,GPU}_MEMORY_MB`
/// (unset: not checked), `DCC_SCALER_{CPU,GPU}_IDLE_GRACE_SECS` (the global grace),
/// `DCC_SCALER_BOOT_SECS` (120), `DCC_SCALER_MAX_STEP` (100),
/// `DCC_SCALER_IDLE_GRACE_SECS` (120), `DCC_SCALER_COOLDOWN_SECS` (120),
/// `DCC_SCALER_HEALTH_GRACE_SECS` (900).
pub fn groups() -> Result<Vec<GroupSettings>, String> {
    let base = Policy {
        slots_per_instance: 1,
        max_step: num("DCC_SCALER_MAX_STEP", 100)? as u32,
        idle_grace_ms: Duration::from_secs(num("DCC_SCALER_IDLE_GRACE_SECS", 120)?).as_millis() as i64,
        cooldown_ms: Duration::from_secs(num("DCC_SCALER_COOLDOWN_SECS", 120)?).as_millis() as i64,
        health_grace_ms: Duration::from_secs(num("DCC_SCALER_HEALTH_GRACE_SECS", 900)?).as_millis() as i64,
        memory_mb_per_instance: None,
    };
    let mut out = Vec::new();
    let boot_secs = num("DCC_SCALER_BOOT_SECS", 120)?;
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
        let upper = queue.as_str().to_uppercase();
        // How long an idle instance of this group is kept (a GPU group may sleep sooner or later
        // than a CPU one); the global grace by default.
        let grace_var = format!("DCC_SCALER_{upper}_IDLE_GRACE_SECS");
        let idle_grace_ms = match std::env::var(&grace_var) {
            Ok(v) if !v.trim().is_empty() => Duration::from_secs(num(&grace_var, 0)?).as_millis() as i64,
            _ => base.idle_grace_ms,
        };
        let memory_var = format!("DCC_SCALER_{upper}_MEMORY_MB");
        let memory_mb = match num(&memory_var, 0)? {
            0 => None,
            m => Some(m),
        };
        if let Ok(name) = std::env::var(var)
            && !name.trim().is_empty()
        {
            out.push(GroupSettings {
                name: name.trim().to_string(),
                queue,
                policy: Policy {
                    slots_per_instance: num(slots_var, default_slots)?.max(1) as u32,
                    idle_grace_ms,
                    memory_mb_per_instance: memory_mb,
                    ..base.clone()
                },
                memory_mb,
                boot_secs,
            });
        }
    }
    if out.is_empty() {
        return Err("no group to size: set DCC_SCALER_CPU_ASG and/or DCC_SCALER_GPU_ASG".into());
    }
    Ok(out)
}
