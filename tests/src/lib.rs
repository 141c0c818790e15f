//! Test harness for DCC's end-to-end tests: real Redis servers, the real `dcc` binary, the real
//! Docker Engine. Each test starts its own Redis on a free loopback port and its own `dcc`
//! processes with their own worker ids, so tests run in parallel without touching each other.
//! Waits are on conditions with deadlines, never on bare sleeps.
//!
//! # Layout
//! - [`Redis`]: a `redis-server` child on a free port, killed on drop (from `dcc_shared::testing`).
//! - [`Dcc`]: a `dcc server` or `dcc worker` child, stopped on drop (its log is printed when the
//!   test failed).
//! - [`Api`]: a small HTTP client for the API.
//! - [`eventually`]: polls a condition until a deadline.
//! - [`fleet`]: simulated workers (Redis only, no Docker) for the fleet bench and its test.
//! - [`proxy`]: a TCP proxy that a failover test switches from one Redis to another.

pub mod fleet;
pub mod proxy;

pub use dcc_shared::testing::{Redis, free_port};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The image every test job runs (built locally: no registry is reachable).
pub const IMAGE: &str = "dcc-busybox:latest";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `dcc` binary cargo built for this test run (`target/<profile>/dcc`, next to `deps/`).
pub fn dcc_bin() -> PathBuf {
    if let Ok(p) = std::env::var("DCC_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // Test binaries live in target/<profile>/deps, other binaries (the bench) next to `dcc`.
    let here = exe.parent().expect("a binary lives in a folder");
    [
        here.join("dcc"),
        here.parent().map(|p| p.join("dcc")).unwrap_or_default(),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("no dcc binary next to {}: run `cargo build` first", exe.display()))
}

/// A short random name, for worker ids and prefixes.
pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{:08x}", n as u32)
}

/// Builds the test image once per test binary.
pub fn ensure_image() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/build-test-image.sh"))
            .status()
            .expect("bash runs");
        assert!(status.success(), "building the test image failed");
    });
}

/// The test image with `USER 1000` (a job that does not run as root), built once per test
/// binary; returns its name.
pub fn user_image() -> &'static str {
    static ONCE: Once = Once::new();
    derived_image(&ONCE, "dcc-busybox-user:latest", "USER 1000")
}

/// The test image with an entrypoint and a default command (`echo entry default`).
pub fn entry_image() -> &'static str {
    static ONCE: Once = Once::new();
    derived_image(
        &ONCE,
        "dcc-busybox-entry:latest",
        "ENTRYPOINT [\"/bin/echo\", \"entry\"]\nCMD [\"default\"]",
    )
}

/// Builds `name` from the test image plus `lines` of Dockerfile, once per `once`.
fn derived_image(once: &'static Once, name: &'static str, lines: &str) -> &'static str {
    ensure_image();
    once.call_once(|| {
        let mut child = Command::new("docker")
            .args(["build", "-q", "-t", name, "-"])
            .env("DOCKER_BUILDKIT", "0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("docker runs");
        let dockerfile = format!("FROM {IMAGE}\n{lines}\n");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), dockerfile.as_bytes())
            .expect("Dockerfile written");
        assert!(child.wait().expect("docker build").success(), "building {name} failed");
    });
    name
}

/// The test image plus `/bin/racer` (tests/fixtures/racer.c, built static here with `cc`): a
/// hostile job's helper that swaps names under `/outputs` with links and FIFOs while the worker
/// collects them. Built once per test binary; returns its name.
pub fn racer_image() -> &'static str {
    static ONCE: Once = Once::new();
    const NAME: &str = "dcc-racer:latest";
    ensure_image();
    ONCE.call_once(|| {
        let ctx = tempfile::tempdir().expect("a temp folder");
        let src = repo_root().join("tests/fixtures/racer.c");
        let built = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(ctx.path().join("racer"))
            .arg(&src)
            .status()
            .expect("cc runs");
        assert!(built.success(), "building the racer failed (cc -static; libc6-dev)");
        let dockerfile = format!("FROM {IMAGE}\nCOPY racer /bin/racer\n");
        std::fs::write(ctx.path().join("Dockerfile"), dockerfile).expect("Dockerfile written");
        let status = Command::new("docker")
            .args(["build", "-q", "-t", NAME])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "0")
            .stdout(Stdio::null())
            .status()
            .expect("docker runs");
        assert!(status.success(), "building {NAME} failed");
    });
    NAME
}

/// Polls `cond` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What kind of `dcc` process.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `dcc server` with its in-process worker.
    Server,
    /// `dcc server` with `DISABLE_WORKER=true`.
    ApiOnly,
    /// `dcc worker`.
    Worker,
}

/// A running `dcc` process.
pub struct Dcc {
    child: Option<Child>,
    /// Its HTTP port (servers).
    pub port: u16,
    /// Its worker id.
    pub worker_id: String,
    /// Its storage.
    pub storage: Store,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// Builder of a [`Dcc`].
pub struct DccBuilder {
    role: Role,
    env: Vec<(String, String)>,
    storage: Option<Store>,
    worker_id: Option<String>,
    /// Ready once the API listens, without waiting for the in-process worker.
    listening_only: bool,
    /// Ready once its log has this line (instead of the role's usual ones).
    ready_when: Option<String>,
    /// A command line `dcc` runs under (the program and its arguments come after it).
    wrapper: Vec<String>,
}

impl Dcc {
    /// A `dcc` of `role` on `redis`.
    pub fn builder(role: Role, redis: &Redis) -> DccBuilder {
        DccBuilder {
            role,
            env: vec![("DCC_REDIS_URL".into(), redis.url())],
            storage: None,
            worker_id: None,
            listening_only: false,
            ready_when: None,
            wrapper: Vec::new(),
        }
    }

    /// A server with an in-process worker of 2 slots.
    pub async fn server(redis: &Redis) -> Self {
        Self::builder(Role::Server, redis).start().await
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).expect("the process runs")
    }

    /// Its API.
    pub fn api(&self) -> Api {
        Api::new(format!("http://127.0.0.1:{}", self.port))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory of the process so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(s))) => {
                    self.child = None;
                    return Some(s);
                }
                None => return None,
                _ => {}
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl DccBuilder {
    /// Sets an environment variable.
    pub fn env(mut self, k: &str, v: impl ToString) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Shares another process's storage.
    pub fn storage(mut self, store: &Store) -> Self {
        self.storage = Some(store.clone());
        self
    }

    /// Uses this worker id (a restarted worker keeps its id, and removes its own leftovers).
    pub fn worker_id(mut self, id: &str) -> Self {
        self.worker_id = Some(id.to_string());
        self
    }

    /// Runs `dcc` under this command line (e.g. `unshare …`), which gets the program and its
    /// arguments after its own.
    pub fn wrapped(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Counts the process as started once its API listens, before its in-process worker has
    /// registered (which needs Redis).
    pub fn listening_only(mut self) -> Self {
        self.listening_only = true;
        self
    }

    /// Counts the process as started once its log has `line` (a worker that waits at start-up).
    pub fn ready_when(mut self, line: &str) -> Self {
        self.ready_when = Some(line.to_string());
        self
    }

    /// Starts it and waits until it is ready (the API listens; workers, also in-process, have
    /// registered).
    pub async fn start(self) -> Dcc {
        ensure_image();
        // A "free" port can be taken by another test before dcc binds it: then start again.
        for _ in 0..5 {
            match self.try_start().await {
                Ok(dcc) => return dcc,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("dcc did not start:\n{log}"),
            }
        }
        panic!("dcc found no free port");
    }

    async fn try_start(&self) -> Result<Dcc, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = match &self.storage {
            Some(s) => s.clone(),
            None => Store::new(dir.path()).await,
        };
        let port = free_port();
        let worker_id = self.worker_id.clone().unwrap_or_else(|| random_name("t-"));
        let log = dir.path().join("dcc.log");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(dcc_bin());
                c
            }
            None => Command::new(dcc_bin()),
        };
        cmd.arg(if self.role == Role::Worker { "worker" } else { "server" })
            .env("DCC_LISTEN", format!("127.0.0.1:{port}"))
            .env("DCC_WORKER_ID", &worker_id)
            .env("DCC_CPUS", "2")
            .env("DCC_TMP_DIR", dir.path())
            .env("DCC_LOG", "info,dcc_worker=debug")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::options().append(true).open(&log).expect("log file"));
        if self.role == Role::ApiOnly {
            cmd.env("DISABLE_WORKER", "true");
        }
        for (k, v) in storage.env() {
            cmd.env(k, v);
        }
        // Copy mode unless `DCC_TEST_FILES_MODE=bind` runs the same tests with inputs/outputs
        // bound in (or a test asks for a mode).
        let mode = std::env::var("DCC_TEST_FILES_MODE").unwrap_or_else(|_| "copy".into());
        cmd.env("DCC_FILES_MODE", mode);
        // No warm containers unless a test asks (warm.rs): every other test runs jobs cold.
        cmd.env("DCC_WARM_POOL", "0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("dcc starts");
        let mut dcc = Dcc {
            child: Some(child),
            port,
            worker_id,
            storage,
            log,
            _dir: Some(dir),
        };
        // Ready when it says so (its own log, so a stranger on the port cannot fool us). A server
        // listens before its in-process worker has registered: wait for both.
        let custom = self.ready_when.as_deref().map(|l| [l]);
        let ready: &[&str] = match self.role {
            _ if custom.is_some() => custom.as_ref().map_or(&[][..], |c| &c[..]),
            Role::Worker => &["worker started"],
            Role::Server if self.listening_only => &["API listening"],
            Role::Server => &["API listening", "worker started"],
            Role::ApiOnly => &["API listening"],
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.iter().all(|r| dcc.log().contains(r)) {
            if let Some(Ok(Some(_))) = dcc.child.as_mut().map(|c| c.try_wait()) {
                dcc.child = None;
                return Err(dcc.log());
            }
            if Instant::now() > deadline {
                return Err(dcc.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(dcc)
    }
}

impl Drop for Dcc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- dcc log ({}) ----\n{}", self.worker_id, self.log());
        }
        self.kill();
        // A killed worker leaves its containers; remove them so the host stays clean. A removal
        // can lose a race with a create or start the daemon is still carrying out for the dead
        // worker (a warm container being made when it was killed then appears `Created` after a
        // first empty look), so the worker's containers must stay gone for a moment.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut gone_since = None::<Instant>;
        while Instant::now() < deadline {
            let left = containers_of(&self.worker_id);
            if left.is_empty() {
                let since = *gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            gone_since = None;
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&left)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

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

/// A small client of the DCC API.
#[derive(Clone)]
pub struct Api {
    /// `http://host:port`.
    pub base: String,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Bearer key to send, if any.
    pub key: Option<String>,
}

/// An answer: status and JSON body (or the text wrapped as a JSON string).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Value,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    /// A client of `base`.
    pub fn new(base: String) -> Self {
        Api {
            base,
            http: reqwest::Client::new(),
            key: None,
        }
    }

    /// The same client sending `key`.
    pub fn with_key(&self, key: &str) -> Self {
        Api {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, format!("{}{}", self.base, path));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn answer(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    /// Sends a request with an optional JSON body.
    pub async fn call(&self, m: reqwest::Method, path: &str, body: Option<&Value>) -> Answer {
        let mut r = self.req(m, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        Self::answer(r.send().await.expect("the server answers")).await
    }

    /// Sends raw bytes as the body.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>, content_type: &str) -> Answer {
        let r = self
            .req(reqwest::Method::POST, path)
            .header("content-type", content_type)
            .body(body);
        Self::answer(r.send().await.expect("the server answers")).await
    }

    /// Sends a multipart form.
    pub async fn post_multipart(&self, path: &str, form: reqwest::multipart::Form) -> Answer {
        Self::answer(
            self.req(reqwest::Method::POST, path)
                .multipart(form)
                .send()
                .await
                .expect("the server answers"),
        )
        .await
    }

    /// GET as JSON.
    pub async fn get(&self, path: &str) -> Answer {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// GET as bytes, with the status.
    pub async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .req(reqwest::Method::GET, path)
            .send()
            .await
            .expect("the server answers");
        let s = r.status().as_u16();
        (s, r.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Submits a job; returns the answer.
    pub async fn submit(&self, job: Value) -> Answer {
        self.post("/api/v1/jobs", &job).await
    }

    /// Submits a job; `None` when the server could not be reached or did not answer in 30 s.
    pub async fn try_submit(&self, job: Value) -> Option<Answer> {
        let r = self
            .req(reqwest::Method::POST, "/api/v1/jobs")
            .json(&job)
            .timeout(Duration::from_secs(30));
        Some(Self::answer(r.send().await.ok()?).await)
    }

    /// Submits a job and returns its id (asserting 201).
    pub async fn submit_id(&self, job: Value) -> String {
        let a = self.submit(job).await;
        assert_eq!(a.status, 201, "submit failed: {:?}", a.body);
        a.body["jobId"].as_str().expect("jobId").to_string()
    }

    /// Submits with `wait: true` and returns the final view (asserting 200).
    pub async fn run(&self, mut job: Value) -> Value {
        job["wait"] = json!(true);
        let a = self.submit(job).await;
        assert_eq!(a.status, 200, "wait submit failed: {:?}", a.body);
        a.body
    }

    /// The job view.
    pub async fn job(&self, id: &str) -> Value {
        let a = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(a.status, 200, "job view failed: {:?}", a.body);
        a.body
    }

    /// Waits for a job to reach `status`.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        eventually(timeout, &format!("job {id} to be {status}"), || async {
            let v = self.job(id).await;
            (v["status"] == status).then_some(v)
        })
        .await
    }

    /// A job's stdout or stderr as text.
    pub async fn log(&self, id: &str, stream: &str) -> String {
        let (s, b) = self.get_bytes(&format!("/api/v1/jobs/{id}/{stream}")).await;
        assert_eq!(s, 200);
        String::from_utf8_lossy(&b).into_owned()
    }
}

/// A job running `script` in the test image.
pub fn sh(script: &str) -> Value {
    json!({"image": IMAGE, "command": ["sh", "-c", script]})
}

/// How many of `ids` are in a terminal state (one listing request per 1000 jobs).
pub async fn count_terminal(api: &Api, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        let v = api.get(&format!("/api/v1/jobs/{id}")).await.body;
        if matches!(
            v["status"].as_str(),
            Some("succeeded" | "failed" | "timed_out" | "cancelled")
        ) {
            n += 1;
        }
    }
    n
}

/// Where a test's `dcc` processes keep files: a local folder, or a bucket on a moto server (when
/// `DCC_TEST_STORAGE=s3`, so the same tests run against both backends).
#[derive(Clone)]
pub enum Store {
    /// A local folder.
    Local(PathBuf),
    /// A bucket on a moto S3 server.
    S3 {
        /// The server (stopped when the last user drops it).
        moto: std::sync::Arc<Moto>,
        /// The bucket.
        bucket: String,
    },
}

impl Store {
    /// The backend the environment asks for; a local folder under `dir` by default.
    pub async fn new(dir: &Path) -> Self {
        if std::env::var("DCC_TEST_STORAGE").as_deref() == Ok("s3") {
            Self::s3().await
        } else {
            Store::Local(dir.join("data"))
        }
    }

    /// A fresh bucket on a fresh moto server.
    pub async fn s3() -> Self {
        let moto = Moto::start();
        moto.create_bucket("dcc-test").await;
        Store::S3 {
            moto: std::sync::Arc::new(moto),
            bucket: "dcc-test".into(),
        }
    }

    /// The environment that points `dcc` at this store.
    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Store::Local(p) => vec![("DCC_STORAGE".into(), p.display().to_string())],
            Store::S3 { moto, bucket } => vec![
                ("DCC_STORAGE".into(), format!("s3://{bucket}/dcc")),
                ("AWS_ENDPOINT_URL".into(), moto.endpoint()),
                ("AWS_ACCESS_KEY_ID".into(), "test".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                ("DCC_S3_FORCE_PATH_STYLE".into(), "true".into()),
            ],
        }
    }

    /// The local folder (tests that reach into the local backend only).
    pub fn path(&self) -> &Path {
        match self {
            Store::Local(p) => p,
            Store::S3 { .. } => panic!("this test needs the local storage backend"),
        }
    }

    /// Names of the stored objects under `prefix` (e.g. `jobs/<id>/`), relative to it.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        match self {
            Store::Local(p) => {
                let base = p.join(prefix);
                let mut out = Vec::new();
                let mut stack = vec![base.clone()];
                while let Some(d) = stack.pop() {
                    let Ok(rd) = std::fs::read_dir(&d) else { continue };
                    for e in rd.flatten() {
                        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            stack.push(e.path());
                        } else {
                            out.push(e.path().strip_prefix(&base).unwrap().display().to_string());
                        }
                    }
                }
                out.sort();
                out
            }
            Store::S3 { moto, bucket } => {
                let full = format!("dcc/{prefix}");
                let mut keys = moto.keys(bucket, &full).await;
                for k in keys.iter_mut() {
                    *k = k[full.len()..].to_string();
                }
                keys
            }
        }
    }
}

/// A moto server (S3 API) on a free loopback port, killed on drop. `scripts/test.sh` installs
/// moto into `~/.cache/dcc/moto`; `DCC_MOTO_SERVER` names another `moto_server`.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts one and waits until it answers.
    pub fn start() -> Self {
        let bin = std::env::var("DCC_MOTO_SERVER").map(PathBuf::from).unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/dcc/moto/bin/moto_server")
        });
        assert!(
            bin.exists(),
            "{} is missing: run scripts/test.sh, which installs moto",
            bin.display()
        );
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // moto answers its own reset route; a stranger on the port would not.
                let ok = std::process::Command::new("curl")
                    .args(["-sf", "-X", "POST", &format!("http://127.0.0.1:{port}/moto-api/reset")])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if ok {
                    return Moto { child, port };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("moto_server did not start");
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, name: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{name}", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "creating bucket {name}: {}", r.status());
    }

    /// Keys under `prefix` in `bucket` (full keys).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.endpoint());
        let xml = reqwest::get(url).await.unwrap().text().await.unwrap();
        let mut out: Vec<String> = xml
            .split("<Key>")
            .skip(1)
            .filter_map(|p| p.split("</Key>").next())
            .map(String::from)
            .collect();
        out.sort();
        out
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that no key of `redis` names `id` and no member, list item or hash value mentions it.
pub async fn assert_no_redis_trace(redis: &Redis, id: &str) {
    let mut c = redis.conn().await;
    for key in redis.all_keys().await {
        assert!(!key.contains(id), "key {key} remains");
        let t: String = redis::cmd("TYPE").arg(&key).query_async(&mut c).await.unwrap();
        let read = match t.as_str() {
            "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
            "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
            "hash" => redis::cmd("HVALS").arg(&key).clone(),
            _ => continue,
        };
        let members: Vec<String> = read.query_async(&mut c).await.unwrap();
        assert!(!members.iter().any(|m| m.contains(id)), "{key} still mentions {id}");
    }
}

/// A WebSocket client connection.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message of `ws` as JSON (other frames skipped), within 60 s.
pub async fn ws_next(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("a message within 60 s")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).unwrap();
            }
            Some(Ok(_)) => {}
            other => panic!("socket ended: {other:?}"),
        }
    }
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

/// (tenant, role, key, optional (submits per second, burst)): one entry of a keys file.
pub type KeySpec<'a> = (&'a str, &'a str, &'a str, Option<(f64, u32)>);

/// A `DCC_API_KEYS_FILE` holding these keys (as SHA-256 digests).
pub fn keys_file(entries: &[KeySpec<'_>]) -> String {
    use sha2::Digest;
    let keys: Vec<Value> = entries
        .iter()
        .map(|(name, role, key, rate)| {
            let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
            let mut k = json!({"name": name, "role": role, "sha256": digest});
            if let Some((per_sec, burst)) = rate {
                k["submitsPerSec"] = json!(per_sec);
                k["burst"] = json!(burst);
            }
            k
        })
        .collect();
    json!({ "keys": keys }).to_string()
}
