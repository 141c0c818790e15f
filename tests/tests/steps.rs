//! Each failed step of an attempt ends the job with its own error code, end to end on the real
//! Docker daemon: the worker's scratch disk filling up while it builds the inputs archive or
//! writes an input (`WORKER_FAILED`, the worker's failure, not the input's), Docker refusing
//! the inputs upload (`CONTAINER_FAILED`), and a full disk under a GPU job, which is not a GPU
//! failure. Before the typed step errors all three were `INPUT_FETCH_FAILED`, and the full
//! disk of a GPU job read as `GPU_UNAVAILABLE` ("no space left on *device*").

use std::process::Command;

use std::sync::Arc;

use dcc_e2e::docker_proxy::{RefusingDocker, Rule};
use dcc_e2e::{Api, Dcc, DccBuilder, IMAGE, Redis, Role};
use hyper::Method;
use serde_json::{Value, json};

/// A 1 MiB tmpfs the test mounts as a worker's scratch disk (`DCC_TMP_DIR`), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test machines run as root)"
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A worker moving files through the Docker API (`copy`), its scratch folder on `disk`, the
/// disk check off (a fresh 1 MiB disk is all free; the test fills it with a job).
fn worker(redis: &Redis, server: &Dcc, disk: &SmallDisk) -> DccBuilder {
    Dcc::builder(Role::Worker, redis)
        .storage(&server.storage)
        .env("DCC_FILES_MODE", "copy")
        .env("DCC_TMP_DIR", disk.dir.path().display())
        .env("DCC_DISK_MIN_FREE_PERCENT", 0)
}

/// Submits `job` with one input file of `size` bytes (multipart) and returns the ended view.
async fn run_with_input(api: &Api, mut job: Value, size: usize) -> Value {
    job["wait"] = json!(true);
    job["parameters"]["maxAttempts"] = json!(1);
    let form = reqwest::multipart::Form::new()
        .text("job", job.to_string())
        .part("big.bin", reqwest::multipart::Part::bytes(vec![7u8; size]));
    let a = api.post_multipart("/api/v1/jobs", form).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

/// A worker with one faked GPU: device nodes (kept in the returned folder) and the devices mode.
fn gpu_worker(builder: DccBuilder) -> (DccBuilder, tempfile::TempDir) {
    let devices = dcc_e2e::fake_gpu_devices(1);
    let b = builder
        .env("DCC_CPUS", 2)
        .env("DCC_GPUS", 1)
        .env("DCC_GPU_MODE", "devices")
        .env("DCC_GPU_DEVICE_DIR", devices.path().display())
        .env("DCC_GPU_DRIVER_BINDS", "")
        .env("DCC_GPU_LD_LIBRARY_PATH", "");
    (b, devices)
}

fn cat_input() -> Value {
    json!({"image": IMAGE, "command": ["sh", "-c", "wc -c < /inputs/big.bin"], "parameters": {}})
}

/// 700 KiB fits once on the 1 MiB disk (the fetched input), not twice (its archive beside it).
#[tokio::test]
async fn an_inputs_archive_that_cannot_be_built_is_the_workers_failure() {
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let disk = SmallDisk::mount();
    let _w = worker(&redis, &server, &disk).start().await;
    let v = run_with_input(&server.api(), cat_input(), 700 << 10).await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("WORKER_FAILED")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("building the inputs archive"), "{message}");
    assert!(message.to_lowercase().contains("no space left"), "{message}");
    // The disk is the worker's: the next job that fits runs there.
    let ok = run_with_input(&server.api(), cat_input(), 10 << 10).await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(
        server.api().log(ok["jobId"].as_str().unwrap(), "stdout").await.trim(),
        "10240"
    );
}

/// A GPU worker behind a Docker socket at `sock` that refuses the calls `rule` picks.
async fn refused_worker(
    redis: &Redis,
    server: &Dcc,
    disk: &SmallDisk,
    sock: &std::path::Path,
    rule: Rule,
) -> (RefusingDocker, Dcc, tempfile::TempDir) {
    let proxy = RefusingDocker::start(sock, rule);
    let (b, devices) = gpu_worker(worker(redis, server, disk));
    let w = b.env("DOCKER_HOST", proxy.docker_host()).start().await;
    (proxy, w, devices)
}

/// The daemon refuses the inputs upload (`PUT …/archive`): the container's failure, not the
/// input's.
#[tokio::test]
async fn an_inputs_upload_docker_refuses_is_a_container_failure() {
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let disk = SmallDisk::mount();
    let dir = tempfile::tempdir().unwrap();
    let rule: Rule = Arc::new(|m, path| {
        (*m == Method::PUT && path.ends_with("/archive")).then(|| "extraction point is not a directory".to_string())
    });
    let (_proxy, _w, _devices) = refused_worker(&redis, &server, &disk, &dir.path().join("docker.sock"), rule).await;
    let v = run_with_input(&server.api(), cat_input(), 1000).await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("CONTAINER_FAILED")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("copying inputs into the container failed"),
        "{message}"
    );
    assert!(message.contains("extraction point is not a directory"), "{message}");
}

/// The daemon's own disk is full when it creates a GPU job's container: "no space left on
/// device" names no GPU problem, so the job fails as any container would, not `GPU_UNAVAILABLE`
/// (which would send it looking for another GPU).
#[tokio::test]
async fn a_daemon_out_of_disk_under_a_gpu_job_is_not_a_gpu_failure() {
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let disk = SmallDisk::mount();
    let dir = tempfile::tempdir().unwrap();
    let full = "failed to register layer: write /var/lib/docker/overlay2/x/diff/a: no space left on device";
    let rule: Rule =
        Arc::new(move |m, path| (*m == Method::POST && path.ends_with("/containers/create")).then(|| full.to_string()));
    let (_proxy, _w, _devices) = refused_worker(&redis, &server, &disk, &dir.path().join("docker.sock"), rule).await;
    let mut job = cat_input();
    job["parameters"]["gpus"] = json!(1);
    let v = run_with_input(&server.api(), job, 1000).await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("CONTAINER_FAILED")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no space left on device"),
        "{v}"
    );
}

/// A GPU job's input larger than the whole scratch disk: the worker cannot write it. No GPU is
/// at fault, whatever the words of the error ("no space left on device").
#[tokio::test]
async fn a_full_disk_under_a_gpu_job_is_not_a_gpu_failure() {
    let redis = Redis::start();
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let disk = SmallDisk::mount();
    let (w, _devices) = gpu_worker(worker(&redis, &server, &disk));
    let _w = w.start().await;
    let mut job = cat_input();
    job["parameters"]["gpus"] = json!(1);
    let v = run_with_input(&server.api(), job, 1536 << 10).await;
    assert_eq!(
        (v["status"].as_str(), v["error"]["code"].as_str()),
        (Some("failed"), Some("WORKER_FAILED")),
        "{v}"
    );
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("writing an input to the scratch disk"), "{message}");
    assert!(message.to_lowercase().contains("no space left on device"), "{message}");
    // The GPU is free again: a GPU job that fits runs.
    let mut small = cat_input();
    small["parameters"]["gpus"] = json!(1);
    let ok = run_with_input(&server.api(), small, 1000).await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
}
