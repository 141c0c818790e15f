//! `dcc` processes of a test: servers and workers, each with its own port, worker id, scratch
//! folder and log, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Api, Redis, Store, containers_of, ensure_image, free_port};

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

/// Runs `dcc server` (API only, local storage in a temporary folder) with `env` and expects it to
/// refuse to start within 30 s: what it printed on stderr.
pub async fn server_refused_at_start(env: &[(&str, String)]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = tokio::process::Command::new(dcc_bin());
    cmd.arg("server")
        .env("DCC_LISTEN", format!("127.0.0.1:{}", crate::free_port()))
        .env("DISABLE_WORKER", "true")
        .env("DCC_STORAGE", dir.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("dcc server exits at once")
        .expect("dcc runs");
    assert!(!out.status.success(), "dcc server started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A short random name, for worker ids and prefixes.
pub fn random_name(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{:08x}", n as u32)
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
    /// A keys file's text (`keys_file`), written into the process's own temp dir.
    keys: Option<String>,
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
            keys: None,
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

    /// Turns API keys on with these keys (`DCC_API_KEYS_FILE`, written into the process's own
    /// temp dir, which lives as long as it does). A test that rewrites the file (reloads) keeps
    /// its own.
    pub fn keys(mut self, entries: &[crate::api::KeySpec<'_>]) -> Self {
        self.keys = Some(crate::api::keys_file(entries));
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
        if let Some(keys) = &self.keys {
            let file = dir.path().join("keys.json");
            std::fs::write(&file, keys).expect("keys file");
            cmd.env("DCC_API_KEYS_FILE", file);
        }
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
