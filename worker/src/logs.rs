//! What a running container says and uses: stdout and stderr captured apart into files (capped)
//! from the attached stream, uploaded every few seconds so `GET …/stdout` shows progress, and
//! once more at the end; and a sampler of Docker's stats stream for peak memory and CPU time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::StatsOptionsBuilder;
use dcc_shared::storage::{Storage, StorageError};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::files::with_retry;

/// How often the logs so far are uploaded while the container runs.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How long a container runs before its stats are sampled: most jobs of a fast queue end
/// sooner, and each stats stream costs dockerd work per container.
const WATCH_AFTER: Duration = Duration::from_millis(500);
/// Appended once when a log reaches its cap.
const CUT_NOTE: &[u8] = b"\n[dcc: log cut at DCC_MAX_LOG_BYTES]\n";

/// One captured stream.
struct Capture {
    file: tokio::fs::File,
    path: PathBuf,
    object: String,
    written: u64,
    cut: bool,
    dirty: bool,
}

impl Capture {
    async fn new(path: PathBuf, object: String) -> std::io::Result<Self> {
        Ok(Capture {
            file: tokio::fs::File::create(&path).await?,
            path,
            object,
            written: 0,
            cut: false,
            dirty: true,
        })
    }

    async fn write(&mut self, bytes: &[u8], cap: u64) -> std::io::Result<()> {
        if self.cut {
            return Ok(());
        }
        let room = cap.saturating_sub(self.written) as usize;
        let take = bytes.len().min(room);
        self.file.write_all(&bytes[..take]).await?;
        self.written += take as u64;
        if take < bytes.len() {
            self.file.write_all(CUT_NOTE).await?;
            self.cut = true;
        }
        self.dirty = true;
        Ok(())
    }

    /// Appends a note from DCC, past the cap if need be.
    async fn mark(&mut self, note: &[u8]) -> std::io::Result<()> {
        self.file.write_all(note).await
    }

    async fn upload(&mut self, storage: &dyn Storage) -> Result<(), StorageError> {
        self.file.flush().await?;
        storage.put_file(&self.object, &self.path).await?;
        self.dirty = false;
        Ok(())
    }
}

/// The captured output of a container (attached before it started) or of an `exec`: both
/// streams written under the attempt's scratch folder as they come, capped, with progress
/// uploads every few seconds. The attached stream is the source of the stored logs, never the
/// daemon's log files: those follow the daemon's rotation (`docker logs` of a long output
/// returns only its tail) and some log drivers keep nothing readable at all. Whatever could be
/// missing is marked in the stored log, never left out silently.
pub struct LogCapture {
    task: JoinHandle<Result<Captured, StorageError>>,
    stop: CancellationToken,
}

/// What a capture holds once its stream ended.
struct Captured {
    out: Capture,
    err: Capture,
    /// The stream ended with an error rather than at its end.
    broken: Option<String>,
    /// The stream was still open when the capture was told to stop.
    unfinished: bool,
}

/// Appended when a stream broke or was still open when the attempt ended.
fn loss_note(why: &str) -> Vec<u8> {
    format!("\n[dcc: the log may be incomplete: {why}]\n").into_bytes()
}

impl LogCapture {
    /// Starts capturing `output` into `scratch/stdout` and `scratch/stderr`, for the two objects.
    pub fn spawn(
        output: impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin + Send + 'static,
        storage: Arc<dyn Storage>,
        scratch: &Path,
        objects: (String, String),
        cap: u64,
    ) -> Self {
        let stop = CancellationToken::new();
        let paths = (scratch.join("stdout"), scratch.join("stderr"));
        let task = tokio::spawn(capture(output, storage, paths, objects, cap, stop.clone()));
        LogCapture { task, stop }
    }

    /// Waits up to `grace` for the output to end, then stores both streams. `killed`: the worker
    /// killed the container, so a stream cut by the kill lost nothing the job could still say.
    pub async fn finish(mut self, grace: Duration, killed: bool, storage: &dyn Storage) -> Result<(), StorageError> {
        let done = tokio::select! {
            r = &mut self.task => joined(r),
            _ = tokio::time::sleep(grace) => {
                self.stop.cancel();
                joined((&mut self.task).await)
            }
        };
        let mut c = done?;
        let why = match (&c.broken, c.unfinished) {
            (_, true) => Some(format!("the output was still open {} s after the end", grace.as_secs())),
            (Some(e), false) if !killed => Some(format!("the output stream broke: {e}")),
            _ => None,
        };
        // Both at once: for a fast job each is a round trip to Redis on the answer's path.
        let (out, err) = tokio::join!(
            store(&mut c.out, why.as_deref(), storage),
            store(&mut c.err, why.as_deref(), storage)
        );
        out.and(err)
    }

    /// Stops without a final upload (the attempt was abandoned).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Stores one stream, marked with `why` when something of it may be missing.
async fn store(s: &mut Capture, why: Option<&str>, storage: &dyn Storage) -> Result<(), StorageError> {
    if let Some(why) = why {
        s.mark(&loss_note(why)).await?;
    }
    s.file.flush().await?;
    let (object, path) = (s.object.clone(), s.path.clone());
    with_retry("storing a log", || storage.put_file(&object, &path)).await?;
    Ok(())
}

fn joined(r: Result<Result<Captured, StorageError>, tokio::task::JoinError>) -> Result<Captured, StorageError> {
    r.unwrap_or_else(|e| Err(StorageError::Backend(std::io::Error::other(e))))
}

/// Writes the stream into the two files until it ends or `stop`, uploading progress.
async fn capture(
    mut output: impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    storage: Arc<dyn Storage>,
    paths: (PathBuf, PathBuf),
    objects: (String, String),
    cap: u64,
    stop: CancellationToken,
) -> Result<Captured, StorageError> {
    let mut out = Capture::new(paths.0, objects.0).await?;
    let mut err = Capture::new(paths.1, objects.1).await?;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
    let (mut broken, mut unfinished) = (None, false);
    loop {
        tokio::select! {
            item = output.next() => match item {
                Some(Ok(LogOutput::StdOut { message })) => out.write(&message, cap).await?,
                Some(Ok(LogOutput::StdErr { message })) => err.write(&message, cap).await?,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    broken = Some(crate::docker::daemon_message(&e));
                    break;
                }
                None => break,
            },
            _ = tick.tick() => {
                for c in [&mut out, &mut err] {
                    if c.dirty && let Err(e) = c.upload(storage.as_ref()).await {
                        tracing::debug!(error = %e, "progress log upload failed");
                    }
                }
            }
            _ = stop.cancelled() => {
                unfinished = true;
                break;
            }
        }
    }
    Ok(Captured {
        out,
        err,
        broken,
        unfinished,
    })
}

/// Peak memory and CPU time seen on Docker's stats stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Highest memory use reported, in bytes.
    pub max_memory_bytes: u64,
    /// Total CPU time, in nanoseconds.
    pub cpu_nanos: u64,
}

impl Usage {
    /// Notes what was seen in an attempt's stats.
    pub fn into_stats(self, stats: &mut dcc_shared::job::RunStats) {
        stats.max_memory_bytes = self.max_memory_bytes;
        stats.cpu_secs = self.cpu_nanos as f64 / 1e9;
    }
}

/// Samples a container's stats (Docker sends one about every second) until it stops.
pub struct StatsSampler {
    task: JoinHandle<()>,
    usage: Arc<std::sync::Mutex<Usage>>,
}

impl StatsSampler {
    /// Starts sampling `container`.
    pub fn spawn(docker: Docker, container: String) -> Self {
        let usage = Arc::new(std::sync::Mutex::new(Usage::default()));
        let u = usage.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(WATCH_AFTER).await;
            let opts = StatsOptionsBuilder::default().stream(true).build();
            let mut stats = docker.stats(&container, Some(opts));
            while let Some(Ok(s)) = stats.next().await {
                let mem = s
                    .memory_stats
                    .as_ref()
                    .map(|m| m.max_usage.unwrap_or(0).max(m.usage.unwrap_or(0)));
                let cpu = s
                    .cpu_stats
                    .as_ref()
                    .and_then(|c| c.cpu_usage.as_ref())
                    .and_then(|c| c.total_usage);
                let mut g = u.lock().unwrap_or_else(|p| p.into_inner());
                g.max_memory_bytes = g.max_memory_bytes.max(mem.unwrap_or(0));
                g.cpu_nanos = g.cpu_nanos.max(cpu.unwrap_or(0));
            }
        });
        StatsSampler { task, usage }
    }

    /// Stops sampling and returns what was seen.
    pub fn finish(self) -> Usage {
        self.task.abort();
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}
