//! What the tests look at on the Docker host: containers by label, and fake GPU device nodes.

use std::process::Command;
use std::time::Duration;

use crate::eventually;

/// Ids of the containers carrying every `(label, value)` of `labels`; stopped ones too unless
/// `running_only`.
pub fn containers_labelled(labels: &[(&str, &str)], running_only: bool) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-q"]);
    if !running_only {
        cmd.arg("-a");
    }
    for (k, v) in labels {
        cmd.args(["--filter", &format!("label={k}={v}")]);
    }
    let out = cmd.output().expect("docker CLI runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Ids of the containers that carry `worker`'s label (running or not).
pub fn containers_of(worker: &str) -> Vec<String> {
    containers_labelled(&[("dcc.worker", worker)], false)
}

/// Ids of the containers of one job (running or not).
pub fn containers_of_job(job: &str) -> Vec<String> {
    containers_labelled(&[("dcc.job", job)], false)
}

/// Inspects the (running) container of `job`, waiting for it to exist. A container id seen in a
/// listing can be gone by the time it is inspected if the worker had to create the container again
/// (a create the daemon finished after the client gave up): look again then.
pub async fn inspect_job_container(job: &str) -> bollard::models::ContainerInspectResponse {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker socket");
    eventually(Duration::from_secs(30), "the job's container to exist", || async {
        let id = containers_of_job(job).into_iter().next()?;
        docker.inspect_container(&id, None).await.ok()
    })
    .await
}

/// A folder with fake `nvidia<N>`, `nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools` nodes (they are
/// /dev/null underneath: the container can open them, and `ls` shows which ones it got), for
/// `DCC_GPU_DEVICE_DIR`.
pub fn fake_gpu_devices(n: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = (0..n).map(|i| format!("nvidia{i}")).collect();
    names.extend(["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"].map(String::from));
    for name in names {
        let status = Command::new("mknod")
            .arg(dir.path().join(name))
            .args(["c", "1", "3"])
            .status()
            .expect("mknod runs");
        assert!(status.success(), "mknod needs root (the test machines run as root)");
    }
    dir
}
