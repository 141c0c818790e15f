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

use crate::staging::with_retry;

/// How often the logs so far are uploaded while the container runs.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
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

/// Follows a container's logs until it stops.
pub struct LogCollector {
    task: JoinHandle<Result<(), StorageError>>,
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
        let (out_path, err_path) = (scratch.join("stdout"), scratch.join("stderr"));
        let task = tokio::spawn(async move {
            let mut out = Capture::new(out_path, objects.0).await?;
            let mut err = Capture::new(err_path, objects.1).await?;
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
                    item = logs.next() => match item {
                        Some(Ok(LogOutput::StdOut { message })) => out.write(&message, cap).await?,
                        Some(Ok(LogOutput::StdErr { message })) => err.write(&message, cap).await?,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::warn!(container, error = %e, "log stream broke off");
                            break;
                        }
                        None => break,
                    },
                    _ = tick.tick() => {
                        // Progress uploads are best effort: the final one below is what counts.
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
        });
        LogCollector { task }
    }

    /// Waits for the stream to end (the container stopped) and the final upload.
    pub async fn finish(self) -> Result<(), StorageError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(StorageError::Backend(std::io::Error::other(e.to_string()))),
        }
    }

    /// Stops without a final upload (the attempt was abandoned).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Peak memory and CPU time seen on Docker's stats stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// Highest memory use reported, in bytes.
    pub max_memory_bytes: u64,
    /// Total CPU time, in nanoseconds.
    pub cpu_nanos: u64,
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
