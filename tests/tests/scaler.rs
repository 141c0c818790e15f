//! The scaler against moto server's AutoScaling API (through the real aws-sdk-autoscaling
//! client), with a real Redis filled by real server and worker processes, and the Lambda binary
//! driven through a small local Runtime API emulator.

use std::process::Command;
use std::time::Duration;

use aws_sdk_autoscaling::Client;
use dcc_e2e::{Dcc, Moto, Redis, Role, eventually, sh};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn scaler_bin() -> std::path::PathBuf {
    dcc_e2e::dcc_bin().with_file_name("dcc-scaler")
}

async fn asg(moto: &Moto) -> Client {
    let conf = aws_sdk_autoscaling::Config::builder()
        .behavior_version(aws_sdk_autoscaling::config::BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(aws_sdk_autoscaling::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    Client::from_conf(conf)
}

async fn create_group(c: &Client, name: &str, min: i32, max: i32, desired: i32) {
    c.create_launch_configuration()
        .launch_configuration_name(format!("{name}-lc"))
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .expect("CreateLaunchConfiguration");
    c.create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(format!("{name}-lc"))
        .min_size(min)
        .max_size(max)
        .desired_capacity(desired)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("CreateAutoScalingGroup");
}

/// (desired, [(instance id, protected)]) of a group.
async fn group(c: &Client, name: &str) -> (i32, Vec<(String, bool)>) {
    let d = c
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .unwrap();
    let g = &d.auto_scaling_groups()[0];
    let mut inst: Vec<(String, bool)> = g
        .instances()
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap().to_string(),
                i.protected_from_scale_in().unwrap_or(false),
            )
        })
        .collect();
    inst.sort();
    (g.desired_capacity().unwrap(), inst)
}

fn scaler_env(redis: &Redis, moto: &Moto, group: &str) -> Vec<(String, String)> {
    [
        ("DCC_REDIS_URL", redis.url()),
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("DCC_SCALER_CPU_ASG", group.into()),
        ("DCC_SCALER_IDLE_GRACE_SECS", "0".into()),
        ("DCC_SCALER_COOLDOWN_SECS", "0".into()),
        ("DCC_SCALER_HEALTH_GRACE_SECS", "3600".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn once(env: &[(String, String)]) -> Value {
    let out = Command::new(scaler_bin())
        .arg("once")
        .envs(env.iter().cloned())
        .output()
        .expect("dcc-scaler runs");
    assert!(
        out.status.success(),
        "dcc-scaler once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON record");
    assert_eq!(v["groups"][0]["errors"], serde_json::json!([]), "{v}");
    v
}

#[tokio::test]
async fn backlog_raises_desired_in_proportion_within_max() {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    create_group(&c, "cpu-workers", 0, 10, 0).await;
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    for _ in 0..7 {
        server.api().submit_id(sh("true")).await;
    }
    // Jobs no 2-slot instance can take are no reason to add instances.
    for _ in 0..5 {
        let mut big = sh("true");
        big["parameters"] = serde_json::json!({"cpus": 3});
        server.api().submit_id(big).await;
    }
    let env = scaler_env(&redis, &moto, "cpu-workers");
    let v = once(&env);
    assert_eq!(
        v["groups"][0]["plan"]["desired"], 4,
        "7 queued jobs at 2 slots (and 5 too large for any instance): 4 instances: {v}"
    );
    assert_eq!(group(&c, "cpu-workers").await.0, 4);
    // Clamped to max (moto would accept more; AWS refuses).
    for _ in 0..20 {
        server.api().submit_id(sh("true")).await;
    }
    c.update_auto_scaling_group()
        .auto_scaling_group_name("cpu-workers")
        .max_size(6)
        .send()
        .await
        .unwrap();
    once(&env);
    assert_eq!(group(&c, "cpu-workers").await.0, 6);
}

#[tokio::test]
async fn idle_workers_drain_then_go_busy_ones_are_protected_and_stay() {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    create_group(&c, "cpu-workers", 0, 5, 2).await;
    let (_, instances) = group(&c, "cpu-workers").await;
    assert_eq!(instances.len(), 2);
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = server.api();
    let mut workers = Vec::new();
    for (id, _) in &instances {
        workers.push(
            Dcc::builder(Role::Worker, &redis)
                .storage(&server.storage)
                .worker_id(id)
                .start()
                .await,
        );
    }
    let job = api.submit_id(sh("sleep 60")).await;
    let busy = api.wait_status(&job, "running", Duration::from_secs(30)).await["workerId"]
        .as_str()
        .unwrap()
        .to_string();
    let idle = instances.iter().map(|(i, _)| i.clone()).find(|i| *i != busy).unwrap();
    eventually(Duration::from_secs(10), "the busy worker to report its job", || async {
        let ws = api.get("/api/v1/workers").await.body;
        ws["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == busy.as_str() && w["runningJobs"] == 1)
            .then_some(())
    })
    .await;

    let env = scaler_env(&redis, &moto, "cpu-workers");
    let v = once(&env);
    let plan = &v["groups"][0]["plan"];
    assert_eq!(plan["protect"], serde_json::json!([busy]), "{v}");
    assert_eq!(plan["drain"], serde_json::json!([idle]), "{v}");
    assert_eq!(
        plan["terminate"],
        serde_json::json!([]),
        "nothing dies on the first pass: {v}"
    );
    let (_, now) = group(&c, "cpu-workers").await;
    assert!(
        now.contains(&(busy.clone(), true)),
        "the busy instance is protected: {now:?}"
    );
    eventually(
        Duration::from_secs(20),
        "the idle worker to report DRAINING",
        || async {
            let ws = api.get("/api/v1/workers").await.body;
            ws["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["id"] == idle.as_str() && w["health"] == "DRAINING")
                .then_some(())
        },
    )
    .await;

    let v = once(&env);
    let plan = &v["groups"][0]["plan"];
    assert_eq!(plan["terminate"][0]["instance"], idle.as_str(), "{v}");
    assert_eq!(plan["terminate"][0]["decrement"], true);
    let (desired, now) = group(&c, "cpu-workers").await;
    assert_eq!(desired, 1);
    assert_eq!(
        now.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
        vec![busy.clone()],
        "only the busy one is left"
    );
    // Later passes leave the busy one alone.
    let v = once(&env);
    assert_eq!(v["groups"][0]["plan"]["terminate"], serde_json::json!([]));
    assert_eq!(api.job(&job).await["status"], "running");
}

#[tokio::test]
async fn instance_without_a_healthy_worker_past_grace_is_replaced() {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    create_group(&c, "cpu-workers", 1, 3, 1).await;
    let (_, before) = group(&c, "cpu-workers").await;
    let mut env = scaler_env(&redis, &moto, "cpu-workers");
    env.push(("DCC_SCALER_HEALTH_GRACE_SECS".into(), "0".into()));
    let v = once(&env);
    let t = &v["groups"][0]["plan"]["terminate"][0];
    assert_eq!(
        (t["instance"].as_str(), t["decrement"].as_bool()),
        (Some(before[0].0.as_str()), Some(false)),
        "{v}"
    );
    let (desired, after) = group(&c, "cpu-workers").await;
    assert_eq!(desired, 1);
    assert_eq!(after.len(), 1);
    assert_ne!(after[0].0, before[0].0, "the group launched a replacement");
}

/// The Lambda binary, driven through the Runtime API by a minimal emulator: one scheduled event
/// in, one response out.
#[tokio::test]
async fn lambda_processes_one_scheduled_event() {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    create_group(&c, "cpu-workers", 0, 10, 0).await;
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    for _ in 0..3 {
        server.api().submit_id(sh("true")).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = tokio::process::Command::new(scaler_bin())
        .envs(scaler_env(&redis, &moto, "cpu-workers"))
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "dcc-scaler")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let event = r#"{"version":"0","id":"e1","detail-type":"Scheduled Event","source":"aws.events","detail":{}}"#;
    let response = tokio::time::timeout(Duration::from_secs(60), async {
        let mut served = false;
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            sock.set_nodelay(true).unwrap();
            let (method, path, body) = read_request(&mut sock).await;
            if method == "GET" && path.ends_with("/invocation/next") {
                if served {
                    // No more events: hold the long-poll open, as the real API does.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        drop(sock);
                    });
                    continue;
                }
                served = true;
                let deadline = dcc_shared::clock::now_ms() + 60_000;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: req-1\r\nLambda-Runtime-Deadline-Ms: {deadline}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:dcc-scaler\r\nContent-Length: {}\r\n\r\n",
                    event.len()
                );
                sock.write_all(head.as_bytes()).await.unwrap();
                sock.write_all(event.as_bytes()).await.unwrap();
            } else if path.ends_with("/invocation/req-1/response") {
                sock.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n").await.unwrap();
                return serde_json::from_slice::<Value>(&body).expect("the response is JSON");
            } else if path.contains("/error") {
                panic!("the function reported an error: {}", String::from_utf8_lossy(&body));
            }
        }
    })
    .await
    .expect("the function answered within 60 s");
    let _ = child.kill().await;
    assert_eq!(response["event"], "ScalerPass");
    assert_eq!(response["groups"][0]["plan"]["desired"], 2, "{response}");
    assert_eq!(group(&c, "cpu-workers").await.0, 2);
}

/// Reads one HTTP/1.1 request: method, path, body.
async fn read_request(sock: &mut tokio::net::TcpStream) -> (String, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut first = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (
        first.next().unwrap_or_default().to_string(),
        first.next().unwrap_or_default().to_string(),
    );
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    (method, path, buf[head_end..].to_vec())
}

/// CPU and GPU groups are sized separately, each from its own queue and at its own slots per
/// instance (GPU jobs wait queued while no GPU worker exists, and only the GPU group grows for them).
#[tokio::test]
async fn cpu_and_gpu_groups_grow_from_their_own_queues() {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    create_group(&c, "cpu-workers", 0, 10, 0).await;
    create_group(&c, "gpu-workers", 0, 10, 0).await;
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    for _ in 0..3 {
        let mut job = sh("true");
        job["parameters"] = serde_json::json!({"gpus": 1});
        server.api().submit_id(job).await;
    }
    for _ in 0..2 {
        server.api().submit_id(sh("true")).await;
    }
    let q = server.api().get("/api/v1/queues").await.body;
    assert_eq!(
        (q["cpu"]["queued"].as_u64(), q["gpu"]["queued"].as_u64()),
        (Some(2), Some(3)),
        "{q}"
    );
    let mut env = scaler_env(&redis, &moto, "cpu-workers");
    env.push(("DCC_SCALER_GPU_ASG".into(), "gpu-workers".into()));
    let v = once(&env);
    for g in v["groups"].as_array().unwrap() {
        assert_eq!(g["errors"], serde_json::json!([]), "{v}");
    }
    // 2 CPU jobs at 2 slots per instance: 1; 3 one-GPU jobs at 1 GPU per instance: 3.
    assert_eq!(group(&c, "cpu-workers").await.0, 1, "{v}");
    assert_eq!(group(&c, "gpu-workers").await.0, 3, "{v}");
}

/// The id of the one job the API lists as queued, once there is one.
async fn queued_job(api: &dcc_e2e::Api) -> String {
    eventually(Duration::from_secs(20), "the job queued", || async {
        let list = api.get("/api/v1/jobs?status=queued").await.body;
        list["jobs"][0]["jobId"].as_str().map(str::to_string)
    })
    .await
}

/// A fleet at zero (a group at min 0, no live worker) answers a fast job and a waited job of
/// `queue`: with no scaler outlook, `503 NO_WORKER` at once, as a fixed fleet would; once a
/// scaler pass published the outlook, the job is taken and waits (`WORKERS_STARTING`), the next
/// pass raises the group's desired capacity for it, and a worker started under the new
/// instance's id (standing in for the instance booting) answers it in the same request.
async fn from_zero(queue: &str, job: Value, worker: impl FnOnce(&Redis, &str) -> dcc_e2e::DccBuilder) {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    let group_name = format!("{queue}-zero");
    create_group(&c, &group_name, 0, 3, 0).await;
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = server.api();
    let a = api.post("/api/v1/run", &job).await;
    assert_eq!((a.status, a.code()), (503, "NO_WORKER"), "{:?}", a.body);

    let mut env = scaler_env(&redis, &moto, &group_name);
    if queue == "gpu" {
        env.retain(|(k, _)| k != "DCC_SCALER_CPU_ASG");
        env.push(("DCC_SCALER_GPU_ASG".into(), group_name.clone()));
    }
    once(&env);
    assert_eq!(group(&c, &group_name).await.0, 0, "no demand yet");
    let run = tokio::spawn({
        let (api, job) = (api.clone(), job.clone());
        async move { api.post("/api/v1/run", &job).await }
    });
    let id = queued_job(&api).await;
    let v = api.job(&id).await;
    assert_eq!(v["waiting"]["reason"], "WORKERS_STARTING", "{v}");
    let mut waited = job.clone();
    waited["wait"] = serde_json::json!(true);
    let wait = tokio::spawn({
        let api = api.clone();
        async move { api.submit(waited).await }
    });

    // The pass sees the fast job (and the waited one) and asks for an instance.
    eventually(Duration::from_secs(20), "the group grown", || {
        let (c, env, name) = (c.clone(), env.clone(), group_name.clone());
        async move {
            once(&env);
            let (desired, instances) = group(&c, &name).await;
            (desired >= 1 && !instances.is_empty()).then_some(())
        }
    })
    .await;
    let instance = group(&c, &group_name).await.1[0].0.clone();
    let _worker = worker(&redis, &instance).worker_id(&instance).start().await;
    let a = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["status"], "succeeded", "{:?}", a.body);
    assert_eq!(a.body["stdout"], "from zero\n", "{:?}", a.body);
    let w = tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("answered")
        .unwrap();
    assert!(w.status == 200 || w.status == 201, "{:?}", w.body);
    assert_eq!(w.body["status"], "succeeded", "{:?}", w.body);
}

#[tokio::test]
async fn a_cpu_fleet_at_zero_answers_a_fast_job_and_a_waited_one() {
    from_zero("cpu", sh("echo from zero"), |redis, _| {
        Dcc::builder(Role::Worker, redis)
    })
    .await;
}

#[tokio::test]
async fn a_gpu_fleet_at_zero_answers_a_fast_gpu_job_and_a_waited_one() {
    let devs = dcc_e2e::fake_gpu_devices(1);
    let dir = devs.path().display().to_string();
    let mut job = sh("echo from zero");
    job["parameters"] = serde_json::json!({"gpus": 1});
    from_zero("gpu", job, |redis, _| {
        Dcc::builder(Role::Worker, redis)
            .env("DCC_CPUS", 2)
            .env("DCC_GPUS", 1)
            .env("DCC_GPU_MODE", "devices")
            .env("DCC_GPU_DEVICE_DIR", &dir)
            .env("DCC_GPU_DRIVER_BINDS", "")
            .env("DCC_GPU_LD_LIBRARY_PATH", "")
    })
    .await;
    drop(devs);
}

#[tokio::test]
async fn no_outlook_promises_what_no_instance_can_run() {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    create_group(&c, "cpu-small", 0, 3, 0).await;
    create_group(&c, "cpu-none", 0, 0, 0).await;
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    let api = server.api();
    let mut env = scaler_env(&redis, &moto, "cpu-small");
    env.push(("DCC_SCALER_CPU_MEMORY_MB".into(), "1024".into()));
    once(&env);
    // Larger than an instance (2 slots, 1024 MiB): never promised.
    for params in [serde_json::json!({"cpus": 3}), serde_json::json!({"memoryMb": 2048})] {
        let mut job = sh("true");
        job["parameters"] = params;
        let a = api.post("/api/v1/run", &job).await;
        assert_eq!((a.status, a.code()), (503, "NO_WORKER"), "{:?}", a.body);
    }
    // A group at max 0 promises nothing either.
    let env = scaler_env(&redis, &moto, "cpu-none");
    once(&env);
    let a = api.post("/api/v1/run", &sh("true")).await;
    assert_eq!((a.status, a.code()), (503, "NO_WORKER"), "{:?}", a.body);
}

/// With an instance's memory given (`DCC_SCALER_CPU_MEMORY_MB`), jobs that reserve more memory
/// than their count says get more instances: 4 jobs of 3 GiB on 2-slot instances of 4 GiB need
/// 2 instances by count and 3 by memory.
#[tokio::test]
async fn instances_are_planned_by_memory_as_well_as_by_count() {
    let redis = Redis::start();
    let moto = Moto::start();
    let c = asg(&moto).await;
    create_group(&c, "cpu-mem", 0, 10, 0).await;
    let server = Dcc::builder(Role::ApiOnly, &redis).start().await;
    for _ in 0..4 {
        let mut job = sh("true");
        job["parameters"] = serde_json::json!({"memoryMb": 3072});
        server.api().submit_id(job).await;
    }
    let by_count = scaler_env(&redis, &moto, "cpu-mem");
    let mut by_memory = by_count.clone();
    by_memory.push(("DCC_SCALER_CPU_MEMORY_MB".into(), "4096".into()));
    once(&by_count);
    assert_eq!(group(&c, "cpu-mem").await.0, 2, "by count: 4 jobs, 2 slots each");
    once(&by_memory);
    assert_eq!(group(&c, "cpu-mem").await.0, 3, "by memory: 12 GiB on 4 GiB instances");
}
