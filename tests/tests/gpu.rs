//! GPU scheduling without a GPU: a faked GPU count (`DCC_GPUS`) and fake device nodes (`mknod`
//! character devices in a temp folder, `DCC_GPU_DEVICE_DIR`), on the real Docker daemon.

use std::time::Duration;

use dcc_e2e::{Dcc, DccBuilder, IMAGE, Redis, Role, eventually};
use serde_json::{Value, json};

fn gpu_job(gpus: u32, script: &str) -> Value {
    json!({"image": IMAGE, "command": ["sh", "-c", script], "parameters": {"gpus": gpus}})
}

fn gpu_builder(redis: &Redis, devices: &tempfile::TempDir, gpus: u32, mode: &str) -> DccBuilder {
    Dcc::builder(Role::Server, redis)
        .env("DCC_CPUS", 4)
        .env("DCC_GPUS", gpus)
        .env("DCC_GPU_MODE", mode)
        .env("DCC_GPU_DEVICE_DIR", devices.path().display())
        .env("DCC_GPU_DRIVER_BINDS", "")
        .env("DCC_GPU_LD_LIBRARY_PATH", "")
}

async fn gpu_server(redis: &Redis, devices: &tempfile::TempDir, gpus: u32, mode: &str) -> Dcc {
    gpu_builder(redis, devices, gpus, mode).start().await
}

const SEE: &str = "ls /dev | grep -E '^nvidia[0-9]+$' | tr '\\n' ' '; echo \"$NVIDIA_VISIBLE_DEVICES\"";

#[tokio::test]
async fn jobs_get_distinct_gpus_and_wait_for_a_free_one() {
    let redis = Redis::start();
    let devs = dcc_e2e::fake_gpu_devices(2);
    let dcc = gpu_server(&redis, &devs, 2, "devices").await;
    let api = dcc.api();
    let w = api.get("/api/v1/workers").await.body;
    assert_eq!(
        (w["workers"][0]["gpus"].as_u64(), w["workers"][0]["cpus"].as_u64()),
        (Some(2), Some(2)),
        "cpu slots shrink by the GPU count: {w}"
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(api.submit_id(gpu_job(1, &format!("{SEE}; sleep 3"))).await);
    }
    let running = eventually(Duration::from_secs(30), "two GPU jobs running", || async {
        let mut r = Vec::new();
        for id in &ids {
            if api.job(id).await["status"] == "running" {
                r.push(id.clone());
            }
        }
        (r.len() == 2).then_some(r)
    })
    .await;
    let third = ids.iter().find(|i| !running.contains(i)).unwrap().clone();
    assert_eq!(
        api.job(&third).await["status"],
        "queued",
        "a third 1-GPU job waits while both GPUs are busy"
    );
    // Capacity shows in the workers view within CAPACITY_BEAT_GAP (0.5 s) of a change.
    eventually(Duration::from_secs(5), "the workers view shows no free GPU", || async {
        let w = api.get("/api/v1/workers").await.body;
        (w["workers"][0]["freeGpus"] == 0).then_some(())
    })
    .await;
    let mut seen = Vec::new();
    for id in &running {
        api.wait_status(id, "succeeded", Duration::from_secs(30)).await;
        seen.push(api.log(id, "stdout").await);
    }
    assert_ne!(seen[0], seen[1], "two concurrent jobs shared a GPU: {seen:?}");
    for s in &seen {
        assert!(s == "nvidia0 0\n" || s == "nvidia1 1\n", "{s:?}");
    }
    api.wait_status(&third, "succeeded", Duration::from_secs(30)).await;

    // A 2-GPU job gets both.
    let v = api.run(gpu_job(2, SEE)).await;
    assert_eq!(
        api.log(v["jobId"].as_str().unwrap(), "stdout").await,
        "nvidia0 nvidia1 0,1\n"
    );
}

#[tokio::test]
async fn devices_mode_container_config() {
    let redis = Redis::start();
    let devs = dcc_e2e::fake_gpu_devices(1);
    let dcc = gpu_server(&redis, &devs, 1, "devices").await;
    let api = dcc.api();
    let id = api.submit_id(gpu_job(1, "sleep 30")).await;
    let info = dcc_e2e::inspect_job_container(&id).await;
    let hc = info.host_config.unwrap();
    let devices: Vec<(String, String)> = hc
        .devices
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            (
                d.path_on_host.unwrap_or_default(),
                d.path_in_container.unwrap_or_default(),
            )
        })
        .collect();
    let on_host = |n: &str| devs.path().join(n).display().to_string();
    assert!(
        devices.contains(&(on_host("nvidia0"), "/dev/nvidia0".into())),
        "{devices:?}"
    );
    assert!(
        devices.contains(&(on_host("nvidiactl"), "/dev/nvidiactl".into())),
        "{devices:?}"
    );
    assert!(
        devices.contains(&(on_host("nvidia-uvm"), "/dev/nvidia-uvm".into())),
        "{devices:?}"
    );
    assert!(hc.runtime.as_deref() != Some("nvidia") && hc.device_requests.is_none());
    assert!(
        info.config
            .unwrap()
            .env
            .unwrap()
            .contains(&"NVIDIA_VISIBLE_DEVICES=0".to_string())
    );
    api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
}

#[tokio::test]
async fn toolkit_modes_on_a_host_without_the_toolkit_fail_with_gpu_unavailable() {
    let redis = Redis::start();
    let devs = dcc_e2e::fake_gpu_devices(1);
    for mode in ["runtime", "device-requests"] {
        let dcc = gpu_server(&redis, &devs, 1, mode).await;
        let v = dcc.api().run(gpu_job(1, "echo should not run")).await;
        assert_eq!(v["status"], "failed", "{mode}: {v}");
        assert_eq!(v["error"]["code"], "GPU_UNAVAILABLE", "{mode}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("runtime") || msg.contains("driver"),
            "{mode}: the daemon's message: {msg}"
        );
        assert_eq!(v["attempt"], 1);
    }
}

#[tokio::test]
async fn gpu_and_cpu_jobs_go_to_the_right_workers() {
    let redis = Redis::start();
    let devs = dcc_e2e::fake_gpu_devices(1);
    let api_server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = api_server.api();
    // GPU jobs wait (and show as queued) while no GPU worker exists.
    let early = api.submit_id(gpu_job(1, "echo early")).await;
    let cpu_worker = Dcc::builder(Role::Worker, &redis)
        .storage(&api_server.storage)
        .env("DCC_GPUS", 0)
        .start()
        .await;
    let q = api.get("/api/v1/queues").await.body;
    assert_eq!(q["gpu"]["queued"], 1, "{q}");
    assert_eq!(api.job(&early).await["status"], "queued");
    let gpu_worker = Dcc::builder(Role::Worker, &redis)
        .storage(&api_server.storage)
        .env("DCC_CPUS", 2)
        .env("DCC_GPUS", 1)
        .env("DCC_GPU_MODE", "devices")
        .env("DCC_GPU_DEVICE_DIR", devs.path().display())
        .env("DCC_GPU_DRIVER_BINDS", "")
        .start()
        .await;
    let mut gpu_ids = vec![early];
    let mut cpu_ids = Vec::new();
    for i in 0..4 {
        gpu_ids.push(api.submit_id(gpu_job(1, &format!("echo gpu {i}"))).await);
        cpu_ids.push(api.submit_id(json!({"image": IMAGE, "command": ["echo", "cpu"]})).await);
    }
    for id in &gpu_ids {
        let v = api.wait_status(id, "succeeded", Duration::from_secs(60)).await;
        assert_eq!(
            v["workerId"],
            json!(gpu_worker.worker_id),
            "a GPU job ran on the CPU worker"
        );
        assert_eq!(v["queue"], "gpu");
        assert_eq!(v["attempt"], 1);
    }
    for id in &cpu_ids {
        let v = api.wait_status(id, "succeeded", Duration::from_secs(60)).await;
        assert_eq!(v["attempt"], 1);
        assert!(v["workerId"] == json!(cpu_worker.worker_id) || v["workerId"] == json!(gpu_worker.worker_id));
    }
}

/// A GPU whose device node disappears (driver unloaded, GPU off the bus) makes the worker
/// `UNHEALTHY` with the reason, so it claims nothing and the scaler replaces it; the node coming
/// back makes it healthy again.
#[tokio::test]
async fn a_vanished_gpu_makes_the_worker_unhealthy_until_it_returns() {
    let redis = Redis::start();
    let devs = dcc_e2e::fake_gpu_devices(2);
    let dcc = gpu_builder(&redis, &devs, 2, "devices")
        .env("DCC_HEARTBEAT_SECS", 1)
        .start()
        .await;
    let api = dcc.api();
    let health = || async {
        let w = api.get("/api/v1/workers").await.body;
        (
            w["workers"][0]["health"].as_str().unwrap_or("").to_string(),
            w["workers"][0]["reason"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(health().await.0, "HEALTHY");
    let node = devs.path().join("nvidia1");
    std::fs::remove_file(&node).unwrap();
    let reason = eventually(Duration::from_secs(20), "the worker to turn UNHEALTHY", || async {
        let (h, r) = health().await;
        (h == "UNHEALTHY").then_some(r)
    })
    .await;
    assert!(reason.contains("nvidia1"), "{reason}");
    // Unhealthy claims nothing, GPU or CPU: the job is still queued a heartbeat later (claims
    // are woken by the job's event, so a healthy worker would have taken it at once).
    let id = api.submit_id(json!({"image": IMAGE, "command": ["true"]})).await;
    let seen = api.get("/api/v1/workers").await.body["workers"][0]["lastSeen"].clone();
    eventually(Duration::from_secs(20), "another heartbeat", || async {
        let now = api.get("/api/v1/workers").await.body["workers"][0]["lastSeen"].clone();
        (now != seen).then_some(())
    })
    .await;
    assert_eq!(
        api.job(&id).await["status"],
        "queued",
        "an unhealthy worker claimed a job"
    );
    let status = std::process::Command::new("mknod")
        .arg(&node)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(Duration::from_secs(20), "the worker to be HEALTHY again", || async {
        (health().await.0 == "HEALTHY").then_some(())
    })
    .await;
    api.wait_status(&id, "succeeded", Duration::from_secs(30)).await;
}
