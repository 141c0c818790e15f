//! The user-facing client commands of `dcc`: submit, run, status, logs, cancel, rm, ls, queues,
//! workers. They talk to a DCC server over HTTP (`--server` / `DCC_URL`, key from `DCC_API_KEY`).
//! On a terminal, waiting shows a live status line; piped output is plain, and `--json` prints the
//! API's JSON. `--wait` exits with the job's exit code, or a distinct code when it did not run to
//! an exit: see [`exit_code`].

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use clap::Subcommand;
use serde_json::Value;

/// Writes a line to stdout. A reader that went away (`dcc ls | head -3`) ends the command quietly
/// with 0, as Unix tools do; any other write error is a client-side error (2).
macro_rules! out {
    ($($t:tt)*) => {{
        if let Err(e) = writeln!(std::io::stdout().lock(), $($t)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}

/// What a failed write to stdout ends in (see `out!`).
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("dcc: writing to stdout failed: {e}");
    std::process::exit(2);
}

/// Writes bytes to stdout now (logs as they come); failures as in `out!`.
fn emit(bytes: &[u8]) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_all(bytes).and_then(|()| o.flush()) {
        stdout_failed(e);
    }
}

/// Exit code when the job timed out (like `timeout(1)`).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit code when the job failed without an exit code of its own (bad image, lost worker, …).
pub const EXIT_FAILED: i32 = 125;
/// Exit code when the job was cancelled (like SIGINT).
pub const EXIT_CANCELLED: i32 = 130;

/// The client commands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Submit a job (JSON file, or - for stdin).
    Submit {
        /// The job JSON.
        file: PathBuf,
        /// Wait for the end; exit with the job's exit code.
        #[arg(long)]
        wait: bool,
        /// Wait, printing the job's stdout as it comes.
        #[arg(long)]
        follow: bool,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a fast job and write its outputs to a folder.
    Run {
        /// The job JSON.
        file: PathBuf,
        /// Where to write the outputs.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a job.
    Status {
        /// Job id.
        id: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's stdout (or stderr).
    Logs {
        /// Job id.
        id: String,
        /// Print stderr instead.
        #[arg(long)]
        stderr: bool,
        /// Keep printing until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a job.
    Cancel {
        /// Job id.
        id: String,
    },
    /// Delete a job and its files.
    Rm {
        /// Job id.
        id: String,
    },
    /// List jobs, newest first.
    Ls {
        /// Only jobs in this state.
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue depths.
    Queues {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Workers and their health.
    Workers {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A DCC API client.
pub struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, key: Option<String>) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            key,
            http: reqwest::Client::new(),
        }
    }

    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, format!("{}{}", self.base, path));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// Sends a request and returns (status, JSON body), turning API errors into messages.
    async fn call(&self, m: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<(u16, Value)> {
        let mut r = self.req(m, path);
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r
            .send()
            .await
            .with_context(|| format!("cannot reach the DCC server at {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 && status != 504 {
            let e = &v["error"];
            let field = e["field"].as_str().map(|f| format!(" ({f})")).unwrap_or_default();
            bail!(
                "{} {}{}: {}",
                status,
                e["code"].as_str().unwrap_or("ERROR"),
                field,
                e["message"].as_str().unwrap_or("")
            );
        }
        Ok((status, v))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(reqwest::Method::GET, path, None).await?.1)
    }

    async fn text(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self.req(reqwest::Method::GET, path).send().await?;
        if !resp.status().is_success() {
            bail!("{} for {path}", resp.status());
        }
        Ok(resp.bytes().await?.to_vec())
    }
}

fn read_job(file: &Path) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// The process exit code for an ended job.
pub fn exit_code(view: &Value) -> i32 {
    match view["status"].as_str() {
        Some("succeeded") => 0,
        Some("timed_out") => EXIT_TIMED_OUT,
        Some("cancelled") => EXIT_CANCELLED,
        _ => match view["exitCode"].as_i64() {
            Some(c) if c != 0 => c.clamp(1, 255) as i32,
            _ => EXIT_FAILED,
        },
    }
}

fn summary(v: &Value) -> String {
    let mut s = format!(
        "{} {} (attempt {}/{})",
        v["jobId"].as_str().unwrap_or("?"),
        v["status"].as_str().unwrap_or("?"),
        v["attempt"],
        v["maxAttempts"]
    );
    if let Some(c) = v["exitCode"].as_i64() {
        s.push_str(&format!(" exit {c}"));
    }
    if let Some(code) = v["error"]["code"].as_str() {
        s.push_str(&format!(" {code}: {}", v["error"]["message"].as_str().unwrap_or("")));
    }
    if let Some(ms) = v["stats"]["totalMs"].as_i64() {
        s.push_str(&format!(" in {:.1} s", ms as f64 / 1000.0));
    }
    s
}

/// Waits for a job to end, with a live status line on a terminal; with `follow`, prints its
/// stdout as it grows.
async fn wait_for(client: &Client, id: &str, follow: bool) -> anyhow::Result<Value> {
    let tty = std::io::stderr().is_terminal() && !follow;
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let start = Instant::now();
    let mut printed = 0usize;
    if let Some(b) = &bar {
        b.set_message(format!("{id}: submitted"));
    }
    loop {
        // A terminal's status line refreshes every second; otherwise long-poll in 30 s steps.
        let poll = if follow {
            2
        } else if bar.is_some() {
            1
        } else {
            30
        };
        let (status, v) = client
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/jobs/{id}/wait?timeoutSecs={poll}"),
                None,
            )
            .await?;
        let view = if status == 504 {
            client.get(&format!("/api/v1/jobs/{id}")).await?
        } else {
            v
        };
        if follow {
            let out = client
                .text(&format!("/api/v1/jobs/{id}/stdout"))
                .await
                .unwrap_or_default();
            if out.len() > printed {
                emit(&out[printed..]);
                printed = out.len();
            }
        }
        if let Some(b) = &bar {
            b.set_message(format!(
                "{id}: {} (attempt {}) {:.1}s",
                view["status"].as_str().unwrap_or("?"),
                view["attempt"],
                start.elapsed().as_secs_f64()
            ));
        }
        if status == 200 {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(view);
        }
    }
}

/// Runs one client command; returns the process exit code.
pub async fn run(cmd: ClientCommand, server: &str, key: Option<String>) -> anyhow::Result<i32> {
    let client = Client::new(server, key);
    match cmd {
        ClientCommand::Submit {
            file,
            wait,
            follow,
            json,
        } => submit(&client, &file, wait || follow, follow, json).await,
        ClientCommand::Run { file, out, json } => run_fast(&client, &file, out.as_deref(), json).await,
        ClientCommand::Status { id, json } => {
            let v = client.get(&format!("/api/v1/jobs/{id}")).await?;
            if json {
                out!("{v}")
            } else {
                out!("{}", summary(&v))
            }
            Ok(0)
        }
        ClientCommand::Logs { id, stderr, follow } => {
            let stream = if stderr { "stderr" } else { "stdout" };
            if follow && !stderr {
                let view = wait_for(&client, &id, true).await?;
                return Ok(exit_code(&view));
            }
            emit(&client.text(&format!("/api/v1/jobs/{id}/{stream}")).await?);
            Ok(0)
        }
        ClientCommand::Cancel { id } => {
            let (_, v) = client
                .call(reqwest::Method::POST, &format!("/api/v1/jobs/{id}/cancel"), None)
                .await?;
            out!("{id} {}", v["status"].as_str().unwrap_or("?"));
            Ok(0)
        }
        ClientCommand::Rm { id } => {
            client
                .call(reqwest::Method::DELETE, &format!("/api/v1/jobs/{id}"), None)
                .await?;
            out!("{id} deleted");
            Ok(0)
        }
        ClientCommand::Ls { status, limit, json } => list(&client, status.as_deref(), limit, json).await,
        ClientCommand::Queues { json } => queues(&client, json).await,
        ClientCommand::Workers { json } => workers(&client, json).await,
    }
}

/// `dcc submit`: submits, then (when asked) waits or follows the job to its end.
async fn submit(client: &Client, file: &Path, wait: bool, follow: bool, json: bool) -> anyhow::Result<i32> {
    let mut job = read_job(file)?;
    job["wait"] = Value::Bool(false);
    let (_, v) = client.call(reqwest::Method::POST, "/api/v1/jobs", Some(&job)).await?;
    let id = v["jobId"].as_str().unwrap_or_default().to_string();
    if !wait {
        if json {
            out!("{v}")
        } else {
            out!("{id}")
        }
        return Ok(0);
    }
    let view = wait_for(client, &id, follow).await?;
    if json {
        out!("{view}");
    } else if !follow {
        eprintln!("{}", summary(&view));
        emit(&client.text(&format!("/api/v1/jobs/{id}/stdout")).await?);
    } else {
        eprintln!("{}", summary(&view));
    }
    Ok(exit_code(&view))
}

/// `dcc run`: a fast job; its outputs written under `out` when given.
async fn run_fast(client: &Client, file: &Path, out: Option<&Path>, json: bool) -> anyhow::Result<i32> {
    let job = read_job(file)?;
    let (status, v) = client.call(reqwest::Method::POST, "/api/v1/run", Some(&job)).await?;
    if status == 504 {
        bail!(
            "the fast job did not end in time; follow it with `dcc status {}`",
            v["jobId"].as_str().unwrap_or("?")
        );
    }
    if let Some(dir) = out {
        write_outputs(&v, dir)?;
    }
    if json {
        out!("{v}");
    } else {
        if let Err(e) = write!(std::io::stdout().lock(), "{}", v["stdout"].as_str().unwrap_or("")) {
            stdout_failed(e);
        }
        eprint!("{}", v["stderr"].as_str().unwrap_or(""));
        eprintln!("{}", summary(&v));
    }
    Ok(exit_code(&v))
}

/// Writes a fast job's inline outputs under `dir` (names that would leave it are skipped).
fn write_outputs(v: &Value, dir: &Path) -> anyhow::Result<()> {
    for o in v["outputs"].as_array().into_iter().flatten() {
        let name = o["name"].as_str().unwrap_or_default();
        if name.split('/').any(|p| p == ".." || p.is_empty()) {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(o["value"].as_str().unwrap_or(""))?;
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `dcc ls`: one line per job, newest first.
async fn list(client: &Client, status: Option<&str>, limit: usize, json: bool) -> anyhow::Result<i32> {
    let mut path = format!("/api/v1/jobs?limit={limit}");
    if let Some(s) = status {
        path.push_str(&format!("&status={s}"));
    }
    let v = client.get(&path).await?;
    if json {
        out!("{v}");
        return Ok(0);
    }
    for j in v["jobs"].as_array().into_iter().flatten() {
        out!(
            "{}\t{}\t{}\t{}",
            j["jobId"].as_str().unwrap_or(""),
            j["status"].as_str().unwrap_or(""),
            j["createdAt"].as_str().unwrap_or(""),
            j["image"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}

/// `dcc queues`: depth of each queue.
async fn queues(client: &Client, json: bool) -> anyhow::Result<i32> {
    let v = client.get("/api/v1/queues").await?;
    if json {
        out!("{v}");
        return Ok(0);
    }
    for q in ["cpu", "gpu"] {
        let d = &v[q];
        out!(
            "{q}\tqueued {}\tfast {}\trunning {}\toldest {} ms",
            d["queued"],
            d["fastQueued"],
            d["running"],
            d["oldestQueuedAgeMs"]
        );
    }
    Ok(0)
}

/// `dcc workers`: one line per live worker.
async fn workers(client: &Client, json: bool) -> anyhow::Result<i32> {
    let v = client.get("/api/v1/workers").await?;
    if json {
        out!("{v}");
        return Ok(0);
    }
    for w in v["workers"].as_array().into_iter().flatten() {
        out!(
            "{}\t{}\tcpu {}/{}\tgpu {}/{}\trunning {}",
            w["id"].as_str().unwrap_or(""),
            w["health"].as_str().unwrap_or(""),
            w["freeCpuSlots"],
            w["cpus"],
            w["freeGpus"],
            w["gpus"],
            w["runningJobs"]
        );
    }
    Ok(0)
}
