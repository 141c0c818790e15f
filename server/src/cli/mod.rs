//! The user-facing client commands of `dcc`: submit, run, status, logs, cancel, rm, ls, queues,
//! workers, top. They talk to a DCC server over HTTP (`--server` / `DCC_URL`, key from
//! `DCC_API_KEY`).
//! On a terminal, waiting shows a live status line; piped output is plain, and `--json` prints the
//! API's JSON. `--wait` exits with the job's exit code, or a distinct code when it did not run to
//! an exit: see [`exit_code`].

mod top;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use clap::Subcommand;
use dcc_client::{ListQuery, Log, Submitted};
use dcc_shared::job::{JobState, JobView};
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
        /// Start only after job ID succeeded (`ID:ended`: after it ended, however); repeatable,
        /// added to the file's `dependsOn`.
        #[arg(long = "depends-on", value_name = "ID[:ended]")]
        depends_on: Vec<String>,
        /// Run N copies (an array job), each told its index (`DCC_ARRAY_INDEX`).
        #[arg(long, value_name = "N")]
        array: Option<u32>,
        /// With --array: at most P copies running at once.
        #[arg(long, value_name = "P", requires = "array")]
        parallelism: Option<u32>,
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
    /// The queues, the workers and your recent jobs, redrawn live (a terminal's dashboard).
    Top {
        /// Seconds between frames.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
}

/// The CLI's client of the API.
type Client = dcc_client::Client<dcc_client::Http>;

fn read_job(file: &Path) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

/// The process exit code for an ended job.
pub fn exit_code(view: &JobView) -> i32 {
    match view.status {
        JobState::Succeeded => 0,
        JobState::TimedOut => EXIT_TIMED_OUT,
        JobState::Cancelled => EXIT_CANCELLED,
        _ => match view.exit_code {
            Some(c) if c != 0 => c.clamp(1, 255) as i32,
            _ => EXIT_FAILED,
        },
    }
}

fn summary(v: &JobView) -> String {
    let progress = match &v.array {
        // An array never runs itself: its children's counts say where it is.
        Some(a) => {
            let c = &a.children;
            format!(
                "{} children: {} succeeded, {} failed, {} timed out, {} cancelled, {} running, {} queued",
                a.size, c.succeeded, c.failed, c.timed_out, c.cancelled, c.running, c.queued
            )
        }
        None => format!("attempt {}/{}", v.attempt, v.max_attempts),
    };
    let mut s = format!("{} {} ({progress})", v.job_id, v.status.as_str());
    if let Some(c) = v.exit_code {
        s.push_str(&format!(" exit {c}"));
    }
    if let Some(e) = &v.error {
        s.push_str(&format!(" {}: {}", e.code, e.message));
    }
    if let Some(ms) = v.stats.as_ref().and_then(|s| s.total_ms) {
        s.push_str(&format!(" in {:.1} s", ms as f64 / 1000.0));
    }
    s
}

/// The API's JSON of an answer, as the server sent it (the types read back field for field).
fn json_of(answer: &impl serde::Serialize) -> String {
    serde_json::to_string(answer).unwrap_or_default()
}

/// Waits for a job to end, with a live status line on a terminal; with `follow`, prints its
/// stdout as it grows.
async fn wait_for(client: &Client, id: &str, follow: bool) -> anyhow::Result<JobView> {
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
    // A terminal's status line refreshes every second; otherwise long-poll in 30 s steps.
    let poll = match (follow, bar.is_some()) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 30,
    };
    loop {
        let ended = client.wait(id, poll).await?;
        if follow {
            let out = client.log(id, Log::Stdout).await.unwrap_or_default();
            if out.len() > printed {
                emit(&out[printed..]);
                printed = out.len();
            }
        }
        if let Some(view) = ended {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(view);
        }
        if let Some(b) = &bar {
            let view = client.job(id).await?;
            let progress = match &view.array {
                // An array: its children, as a bar.
                Some(a) => {
                    if b.length().is_none() {
                        let style = indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {msg}");
                        b.set_style(style.unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
                    }
                    let c = &a.children;
                    let done = c.succeeded + c.failed + c.timed_out + c.cancelled;
                    b.set_length(u64::from(a.size));
                    b.set_position(u64::from(done));
                    format!("{done}/{} children ended, {} running", a.size, c.running)
                }
                None => format!("attempt {}", view.attempt),
            };
            b.set_message(format!(
                "{id}: {} ({progress}) {:.1}s",
                view.status.as_str(),
                start.elapsed().as_secs_f64()
            ));
        }
    }
}

/// Runs one client command; returns the process exit code.
pub async fn run(cmd: ClientCommand, server: &str, key: Option<String>) -> anyhow::Result<i32> {
    let client = Client::new(dcc_client::Http::new(server, key));
    match cmd {
        ClientCommand::Submit {
            file,
            wait,
            follow,
            depends_on,
            array,
            parallelism,
            json,
        } => {
            let mut job = read_job(&file)?;
            add_dependencies(&mut job, &depends_on)?;
            if let Some(size) = array {
                job["array"] = serde_json::json!({"size": size});
                if let Some(p) = parallelism {
                    job["array"]["parallelism"] = serde_json::json!(p);
                }
            }
            submit(&client, job, wait || follow, follow, json).await
        }
        ClientCommand::Run { file, out, json } => run_fast(&client, &file, out.as_deref(), json).await,
        ClientCommand::Status { id, json } => {
            let v = client.job(&id).await?;
            if json {
                out!("{}", json_of(&v))
            } else {
                out!("{}", summary(&v))
            }
            Ok(0)
        }
        ClientCommand::Logs { id, stderr, follow } => {
            if follow && !stderr {
                let view = wait_for(&client, &id, true).await?;
                return Ok(exit_code(&view));
            }
            let log = if stderr { Log::Stderr } else { Log::Stdout };
            emit(&client.log(&id, log).await?);
            Ok(0)
        }
        ClientCommand::Cancel { id } => {
            let a = client.cancel(&id).await?;
            out!("{id} {}", a.status.as_str());
            Ok(0)
        }
        ClientCommand::Rm { id } => {
            client.delete(&id).await?;
            out!("{id} deleted");
            Ok(0)
        }
        ClientCommand::Ls { status, limit, json } => list(&client, status.as_deref(), limit, json).await,
        ClientCommand::Queues { json } => queues(&client, json).await,
        ClientCommand::Workers { json } => workers(&client, json).await,
        ClientCommand::Top { interval, once } => top::top(&client, server, Duration::from_secs(interval), once).await,
    }
}

/// Appends `--depends-on ID[:succeeded|:ended]` to the job's `dependsOn` (ids have no ':').
fn add_dependencies(job: &mut Value, deps: &[String]) -> anyhow::Result<()> {
    if deps.is_empty() {
        return Ok(());
    }
    let Some(obj) = job.as_object_mut() else {
        bail!("the job must be a JSON object");
    };
    let list = obj.entry("dependsOn").or_insert_with(|| Value::Array(Vec::new()));
    let Some(list) = list.as_array_mut() else {
        bail!("the job's dependsOn must be a list");
    };
    for d in deps {
        let (id, kind) = d.split_once(':').unwrap_or((d, "succeeded"));
        if !matches!(kind, "succeeded" | "ended") {
            bail!("--depends-on {d}: the type after ':' is succeeded or ended");
        }
        list.push(serde_json::json!({"jobId": id, "type": kind}));
    }
    Ok(())
}

/// `dcc submit`: submits, then (when asked) waits or follows the job to its end.
async fn submit(client: &Client, mut job: Value, wait: bool, follow: bool, json: bool) -> anyhow::Result<i32> {
    job["wait"] = Value::Bool(false);
    let answer = client.submit(&job).await?;
    let id = answer.job_id().to_string();
    if !wait {
        match (&answer, json) {
            (Submitted::Queued(a) | Submitted::Existing(a), true) => out!("{}", json_of(a)),
            (Submitted::Ended(v), true) => out!("{}", json_of(v)),
            (_, false) => out!("{id}"),
        }
        return Ok(0);
    }
    let view = wait_for(client, &id, follow).await?;
    if json {
        out!("{}", json_of(&view));
    } else {
        eprintln!("{}", summary(&view));
        // An array job has no log of its own: its children have theirs.
        if !follow && view.array.is_none() {
            emit(&client.log(&id, Log::Stdout).await?);
        }
    }
    Ok(exit_code(&view))
}

/// `dcc run`: a fast job; its outputs written under `out` when given.
async fn run_fast(client: &Client, file: &Path, out: Option<&Path>, json: bool) -> anyhow::Result<i32> {
    let job = read_job(file)?;
    let a = match client.run(&job).await {
        Ok(a) => a,
        Err(e) if e.is("WAIT_TIMEOUT") => bail!(
            "the fast job did not end in time; follow it with `dcc status {}`",
            e.job_id().unwrap_or("?")
        ),
        Err(e) => return Err(e.into()),
    };
    if let Some(dir) = out {
        write_outputs(&a.job, dir)?;
    }
    if json {
        out!("{}", json_of(&a));
    } else {
        if let Err(e) = write!(std::io::stdout().lock(), "{}", a.stdout) {
            stdout_failed(e);
        }
        eprint!("{}", a.stderr);
        eprintln!("{}", summary(&a.job));
    }
    Ok(exit_code(&a.job))
}

/// Writes a fast job's inline outputs under `dir` (names that would leave it are skipped).
fn write_outputs(v: &JobView, dir: &Path) -> anyhow::Result<()> {
    for o in &v.outputs {
        if o.name.split('/').any(|p| p == ".." || p.is_empty()) {
            continue;
        }
        let bytes = base64::engine::general_purpose::STANDARD.decode(o.value.as_deref().unwrap_or(""))?;
        let path = dir.join(&o.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `dcc ls`: one line per job, newest first.
async fn list(client: &Client, status: Option<&str>, limit: usize, json: bool) -> anyhow::Result<i32> {
    let status = status
        .map(|s| JobState::parse(s).with_context(|| format!("--status: no job state is called {s:?}")))
        .transpose()?;
    let page = client
        .list(&ListQuery {
            status,
            limit: Some(limit),
            cursor: None,
        })
        .await?;
    if json {
        out!("{}", json_of(&page));
        return Ok(0);
    }
    for j in &page.jobs {
        out!("{}\t{}\t{}\t{}", j.job_id, j.status.as_str(), j.created_at, j.image);
    }
    Ok(0)
}

/// `dcc queues`: depth of each queue.
async fn queues(client: &Client, json: bool) -> anyhow::Result<i32> {
    let q = client.queues().await?;
    if json {
        out!("{}", json_of(&q));
        return Ok(0);
    }
    for (name, d) in [("cpu", &q.cpu), ("gpu", &q.gpu)] {
        out!(
            "{name}\tqueued {}\tfast {}\trunning {}\toldest {} ms",
            d.queued,
            d.fast_queued,
            d.running,
            d.oldest_queued_age_ms
        );
    }
    Ok(0)
}

/// `dcc workers`: one line per live worker.
async fn workers(client: &Client, json: bool) -> anyhow::Result<i32> {
    let w = client.workers().await?;
    if json {
        out!("{}", json_of(&w));
        return Ok(0);
    }
    for w in &w.workers {
        out!(
            "{}\t{}\tcpu {}/{}\tgpu {}/{}\trunning {}",
            w.id,
            w.health.as_str(),
            w.free_cpu_slots,
            w.cpus,
            w.free_gpus,
            w.gpus,
            w.running_jobs
        );
    }
    Ok(0)
}
