//! The container definition of one attempt: resource limits from the job's parameters, no
//! network unless asked, no privileges, and the labels that let a worker find its own leftovers.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use dcc_shared::job::JobRecord;

use crate::docker::{LABEL_ATTEMPT, LABEL_JOB, Owner};
use crate::files::Attach;
use crate::gpu::{self, GpuSettings};

/// Limits that come from the worker's configuration rather than the job.
#[derive(Clone, Debug)]
pub struct HostLimits {
    /// Process limit inside the container.
    pub pids_limit: i64,
    /// OCI runtime for CPU jobs (`None`: the daemon's default).
    pub runtime: Option<String>,
}

/// The only capabilities a job keeps, of Docker's default set: what ordinary batch work needs
/// (package installs and tools that change owners, files of other users, `su`-style drops, and
/// signalling its own processes). Dropped, among others: NET_RAW (raw sockets, ARP/ICMP spoofing
/// on a job network), MKNOD (device nodes), AUDIT_WRITE, SETFCAP (file capabilities), SETPCAP,
/// SYS_CHROOT and NET_BIND_SERVICE. A job cannot add any: the API has no field for it.
pub const KEPT_CAPABILITIES: &[&str] = &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID"];

/// The container name of an attempt: readable in `docker ps`, unique per attempt and per
/// deployment (the start of its id): two deployments on one Docker host may run jobs of the same
/// id (client-chosen ids, or the same test twice at once), and Docker refuses a name in use.
pub fn name(job: &JobRecord, attempt: u32, owner: &Owner) -> String {
    let deployment: String = owner.deployment.chars().take(8).collect();
    format!("dcc-{}-a{}-{deployment}", job.id, attempt)
}

/// The create body for `job`'s attempt `attempt` on `owner`.
pub fn body(
    job: &JobRecord,
    attempt: u32,
    owner: &Owner,
    limits: &HostLimits,
    gpus: &[u32],
    gpu: Option<&GpuSettings>,
) -> ContainerCreateBody {
    let spec = &job.spec;
    let p = &spec.parameters;
    let mut labels = HashMap::from([
        (LABEL_JOB.to_string(), job.id.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]);
    labels.extend(owner.labels());
    let mut env = job_env(job);
    let mut host = limited(nano_cpus(p.cpus), p.memory_mb, p.network, limits);
    if let Some(g) = gpu {
        gpu::attach(&mut host, &mut env, gpus, g);
    }
    ContainerCreateBody {
        network_disabled: (!p.network).then_some(true),
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        env: Some(env),
        working_dir: spec.working_dir.clone(),
        labels: Some(labels),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host),
        ..Default::default()
    }
}

/// Variables DCC sets in every job's container: which job it is, where its files are, and an
/// array child's index and its array's size. They win over the job's own `env` of the same names.
pub const DCC_ENV: [&str; 5] = [
    "DCC_JOB_ID",
    "DCC_INPUTS",
    "DCC_OUTPUTS",
    "DCC_ARRAY_INDEX",
    "DCC_ARRAY_SIZE",
];

/// The job's environment (`KEY=value`): its own `env`, then [`DCC_ENV`] (the job's id as
/// stored, `/inputs`, `/outputs`). A warm container's `exec` gets the same.
pub fn job_env(job: &JobRecord) -> Vec<String> {
    let mut env: Vec<String> = job
        .spec
        .env
        .iter()
        .filter(|(k, _)| !DCC_ENV.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.push(format!("DCC_JOB_ID={}", job.id));
    env.push("DCC_INPUTS=/inputs".into());
    env.push("DCC_OUTPUTS=/outputs".into());
    if let (Some(child), Some(array)) = (&job.child_of, job.spec.array) {
        env.push(format!("DCC_ARRAY_INDEX={}", child.index));
        env.push(format!("DCC_ARRAY_SIZE={}", array.size));
    }
    env
}

/// Docker's `NanoCpus` for a job's `cpus`.
pub fn nano_cpus(cpus: f64) -> i64 {
    (cpus * 1e9) as i64
}

/// The host configuration every job container gets: its CPU and memory limits, no network
/// unless asked, no privileges, and only the kept capabilities.
pub fn limited(nano_cpus: i64, memory_mb: u64, network: bool, limits: &HostLimits) -> HostConfig {
    let memory = (memory_mb * 1024 * 1024) as i64;
    HostConfig {
        nano_cpus: Some(nano_cpus),
        memory: Some(memory),
        // Equal to `memory`: no swap beyond the limit, so the limit is real.
        memory_swap: Some(memory),
        pids_limit: Some(limits.pids_limit),
        // Without `network`, the container gets `NetworkDisabled` below rather than
        // `NetworkMode: none`: the same isolation (its own network namespace with only `lo`, no
        // route), without the libnetwork sandbox dockerd sets up for `none` (~150 ms a start).
        network_mode: network.then(|| "bridge".to_string()),
        privileged: Some(false),
        security_opt: Some(vec!["no-new-privileges".to_string()]),
        cap_drop: Some(vec!["ALL".to_string()]),
        cap_add: Some(KEPT_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
        runtime: limits.runtime.clone(),
        auto_remove: Some(false),
        // The worker captures stdout and stderr from the attached stream (capped by
        // DCC_MAX_LOG_BYTES); a daemon copy would only cost dockerd work and disk, and its
        // rotation cuts long outputs.
        log_config: Some(HostConfigLogConfig {
            typ: Some("none".to_string()),
            config: None,
        }),
        ..Default::default()
    }
}

/// Adds a files mode's mounts to a create body.
pub fn attach(body: &mut ContainerCreateBody, a: Attach) {
    if !a.volumes.is_empty() {
        body.volumes.get_or_insert_with(Vec::new).extend(a.volumes);
    }
    let Some(host) = body.host_config.as_mut() else { return };
    if !a.binds.is_empty() {
        host.binds.get_or_insert_with(Vec::new).extend(a.binds);
    }
    if !a.tmpfs.is_empty() {
        host.tmpfs.get_or_insert_with(HashMap::new).extend(a.tmpfs);
    }
}
