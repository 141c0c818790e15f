//! What a running container says and uses: stdout and stderr captured apart into files (capped),
//! uploaded every few seconds so `GET …/stdout` shows progress, and once more at the end; and a
//! sampler of Docker's stats stream for peak memory and CPU time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptionsBuilder, StatsOptionsBuilder};
use dcc_shared::storage::{Storage, StorageError};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::files::with_retry;

/// How often the logs so far are uploaded while the container runs.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How long a container runs before its logs are followed and its stats sampled: most jobs of a
/// fast queue end sooner, and each of these streams costs dockerd work per container. A job that
/// ends within it is read once, at the end (its logs whole; its stats not at all).
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

    async fn upload(&mut self, storage: &dyn Storage) -> Result<(), StorageError> {
        self.file.flush().await?;
        storage.put_file(&self.object, &self.path).await?;
        self.dirty = false;
        Ok(())
    }
}

/// Captures a container's logs: a follow stream feeds progress uploads while it runs; once it
/// stopped, [`LogCollector::finish`] reads the complete logs again (Docker's follow stream can end
/// before a last partial line arrives) and uploads them.
pub struct LogCollector {
    docker: Docker,
    container: String,
    storage: Arc<dyn Storage>,
    paths: (PathBuf, PathBuf),
    objects: (String, String),
    cap: u64,
    progress: JoinHandle<()>,
}

impl LogCollector {
    /// Starts following `container`, writing under `scratch` and uploading to the two objects.
    pub fn spawn(
        docker: Docker,
        container: String,
        storage: Arc<dyn Storage>,
        scratch: &Path,
        objects: (String, String),
        cap: u64,
    ) -> Self {
        let paths = (scratch.join("stdout"), scratch.join("stderr"));
        let progress = tokio::spawn(follow(
            docker.clone(),
            container.clone(),
            storage.clone(),
            paths.clone(),
            objects.clone(),
            cap,
        ));
        LogCollector {
            docker,
            container,
            storage,
            paths,
            objects,
            cap,
            progress,
        }
    }

    /// After the container stopped: reads the whole logs and stores them.
    pub async fn finish(self) -> Result<(), StorageError> {
        self.progress.abort();
        let _ = self.progress.await;
        let mut out = Capture::new(self.paths.0.clone(), self.objects.0.clone()).await?;
        let mut err = Capture::new(self.paths.1.clone(), self.objects.1.clone()).await?;
        let opts = LogsOptionsBuilder::default()
            .follow(false)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(&self.container, Some(opts));
        while let Some(item) = logs.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) => out.write(&message, self.cap).await?,
                Ok(LogOutput::StdErr { message }) => err.write(&message, self.cap).await?,
                Ok(_) => {}
                Err(e) => {
                    return Err(StorageError::Backend(std::io::Error::other(format!(
                        "reading the container's logs failed: {e}"
                    ))));
                }
            }
        }
        for c in [&mut out, &mut err] {
            c.file.flush().await?;
            let (object, path) = (c.object.clone(), c.path.clone());
            with_retry("storing a log", || self.storage.put_file(&object, &path)).await?;
        }
        Ok(())
    }

    /// Stops without a final upload (the attempt was abandoned).
    pub fn abort(self) {
        self.progress.abort();
    }
}

/// Follows the logs while the container runs and uploads what exists every few seconds.
/// Best effort: the upload in [`LogCollector::finish`] is the one that counts.
async fn follow(
    docker: Docker,
    container: String,
    storage: Arc<dyn Storage>,
    paths: (PathBuf, PathBuf),
    objects: (String, String),
    cap: u64,
) {
    tokio::time::sleep(WATCH_AFTER).await;
    let (Ok(mut out), Ok(mut err)) = (
        Capture::new(paths.0.with_extension("live"), objects.0).await,
        Capture::new(paths.1.with_extension("live"), objects.1).await,
    ) else {
        return;
    };
    let opts = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(&container, Some(opts));
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            item = logs.next() => {
                let r = match item {
                    Some(Ok(LogOutput::StdOut { message })) => out.write(&message, cap).await,
                    Some(Ok(LogOutput::StdErr { message })) => err.write(&message, cap).await,
                    Some(Ok(_)) => Ok(()),
                    Some(Err(_)) | None => return,
                };
                if r.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                for c in [&mut out, &mut err] {
                    if c.dirty && let Err(e) = c.upload(storage.as_ref()).await {
                        tracing::debug!(error = %e, "progress log upload failed");
                    }
                }
            }
        }
    }
}

/// Captures the attached output of an `exec` (a warm container's job: its output is not in the
/// container's logs) into the same two files and objects a [`LogCollector`] uses, uploading
/// progress every few seconds and both streams once the output ends (the process and everything
/// holding its pipes exited, or the container was killed).
pub async fn capture_exec(
    mut output: impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
    storage: Arc<dyn Storage>,
    scratch: &Path,
    objects: (String, String),
    cap: u64,
) -> Result<(), StorageError> {
    let mut out = Capture::new(scratch.join("stdout"), objects.0).await?;
    let mut err = Capture::new(scratch.join("stderr"), objects.1).await?;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
    loop {
        tokio::select! {
            item = output.next() => match item {
                Some(Ok(LogOutput::StdOut { message })) => out.write(&message, cap).await?,
                Some(Ok(LogOutput::StdErr { message })) => err.write(&message, cap).await?,
                Some(Ok(_)) => {}
                // The connection ends with an error when the container is killed under it.
                Some(Err(_)) | None => break,
            },
            _ = tick.tick() => {
                for c in [&mut out, &mut err] {
                    if c.dirty && let Err(e) = c.upload(storage.as_ref()).await {
                        tracing::debug!(error = %e, "progress log upload failed");
                    }
                }
            }
        }
    }
    for c in [&mut out, &mut err] {
        c.file.flush().await?;
        let (object, path) = (c.object.clone(), c.path.clone());
        with_retry("storing a log", || storage.put_file(&object, &path)).await?;
    }
    Ok(())
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
