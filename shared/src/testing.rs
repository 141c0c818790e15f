//! Test support for DCC's own tests and those of crates built on it (feature `test-util`): a
//! real `redis-server` per test, on a free loopback port, killed on drop. With it the queue's Lua
//! transitions are tested against Redis itself (`cargo test -p dcc-shared`), no Docker needed.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the loopback interface has free ports")
}

/// A `redis-server` on a free loopback port.
pub struct Redis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Redis {
    /// Starts one without persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with extra arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, free_port(), extra)
    }

    fn start_in(dir: tempfile::TempDir, _port: u16, extra: &[&str]) -> Self {
        // Another test may take a "free" port between our probe and redis-server's bind: then our
        // server exits, or we would talk to someone else's. Check the pid behind the port; retry.
        for _ in 0..10 {
            let port = free_port();
            let mut args: Vec<String> = vec![
                "--port".into(),
                port.to_string(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--dir".into(),
                dir.path().display().to_string(),
                "--maxmemory-policy".into(),
                "noeviction".into(),
                // As the Terraform parameter group.
                "--hash-max-listpack-value".into(),
                crate::queue::RECORD_LISTPACK_VALUE.to_string(),
            ];
            if !extra.contains(&"--appendonly") {
                args.extend(["--appendonly".into(), "no".into()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            if let Some(child) = Self::spawn(&args, port) {
                return Redis { child, port, dir, args };
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts redis-server and waits until the port answers with this very process.
    fn spawn(args: &[String], port: u16) -> Option<Child> {
        let mut child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if server_pid(port) == Some(child.id()) {
                return Some(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server and starts it again on the same port and folder (with AOF on, what it
    /// had acknowledged comes back).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.args, self.port).expect("redis-server restarts on its port");
    }

    /// The folder holding its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (to pause it with SIGSTOP, as a lagging replica).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A plain connection for assertions.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers")
    }

    /// Every key (tests only: SCAN is fine on a test server).
    pub async fn all_keys(&self) -> Vec<String> {
        let mut c = self.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.expect("KEYS");
        keys
    }

    /// Stops the server (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `process_id` of the Redis answering on `port`, if one does.
fn server_pid(port: u16) -> Option<u32> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut buf = vec![0u8; 16384];
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        let text = String::from_utf8_lossy(&buf[..got]);
        if let Some(rest) = text.split("process_id:").nth(1)
            && let Some(line) = rest.split("\r\n").next()
            && rest.contains("\r\n")
        {
            return line.trim().parse().ok();
        }
    }
    None
}
