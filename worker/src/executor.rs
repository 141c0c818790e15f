//! One attempt of one job: image → container → inputs → start → wait (deadline, cancel) →
//! logs and outputs → result. Whatever happens, the container is removed before this returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{CreateContainerOptionsBuilder, KillContainerOptionsBuilder};
use dcc_shared::job::{ErrorCode, JobError, JobRecord, JobState, Lane, RunStats};
use dcc_shared::queue::finish::Outcome;
use dcc_shared::storage::{Storage, paths};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::container::{self, HostLimits};
use crate::docker::{self, daemon_message};
use crate::gpu::{self, GpuSettings};
use crate::logs::{LogCollector, StatsSampler};
use crate::staging::{self, FilesMode};

/// How an attempt ended.
#[derive(Debug)]
pub enum AttemptEnd {
    /// It produced a result to record.
    Done(Outcome),
    /// It was stopped from outside (cancelled, deleted, lease lost, shutdown): record nothing.
    Aborted,
}

/// Settings of the executor.
#[derive(Clone, Debug)]
pub struct ExecSettings {
    /// The worker's id, for labels.
    pub worker_id: String,
    /// Limits from configuration.
    pub limits: HostLimits,
    /// Most bytes of outputs per job.
    pub max_output_bytes: u64,
    /// Most bytes kept per log stream.
    pub max_log_bytes: u64,
    /// Scratch folder for tar files.
    pub tmp_dir: PathBuf,
    /// How GPUs are attached (`None` on a worker without GPUs).
    pub gpu: Option<GpuSettings>,
    /// How inputs and outputs reach the container.
    pub files: FilesMode,
    /// Longest an image pull may take.
    pub pull_timeout: std::time::Duration,
    /// Images that may run (checked again here: the API server may be configured differently).
    pub images: dcc_shared::job::image::ImageAllow,
}

/// Runs attempts.
pub struct Executor {
    docker: Docker,
    /// Files of standard jobs.
    storage: Arc<dyn Storage>,
    /// Files of fast jobs (in Redis).
    blobs: Arc<dyn Storage>,
    settings: ExecSettings,
    /// Bounds concurrent container creations and starts (dockerd slows sharply past a few).
    create_permits: Semaphore,
}

fn fail(code: ErrorCode, message: impl Into<String>) -> JobError {
    JobError {
        code: code.as_str().to_string(),
        message: message.into(),
    }
}

fn failed(error: JobError, stats: RunStats, digest: Option<String>) -> AttemptEnd {
    AttemptEnd::Done(Outcome {
        state: JobState::Failed,
        exit_code: None,
        error: Some(error),
        image_digest: digest,
        stats,
        outputs: Vec::new(),
    })
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

impl Executor {
    /// An executor on `docker`, storing into `storage`.
    pub fn new(
        docker: Docker,
        storage: Arc<dyn Storage>,
        blobs: Arc<dyn Storage>,
        settings: ExecSettings,
        concurrency: usize,
    ) -> Self {
        Executor {
            docker,
            storage,
            blobs,
            settings,
            create_permits: Semaphore::new(concurrency),
        }
    }

    /// The Docker connection.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Runs `attempt` of `job`; `cancel` stops it from outside.
    pub async fn run(&self, job: &JobRecord, attempt: u32, gpus: &[u32], cancel: &CancellationToken) -> AttemptEnd {
        let name = container::name(job, attempt);
        let scratch = match tempfile::Builder::new()
            .prefix(&format!("dcc-{}-", job.id))
            .tempdir_in(&self.settings.tmp_dir)
        {
            Ok(d) => d,
            Err(e) => {
                return failed(
                    fail(ErrorCode::ContainerFailed, format!("worker scratch folder: {e}")),
                    RunStats::default(),
                    None,
                );
            }
        };
        let end = self.run_in(job, attempt, gpus, &name, scratch.path(), cancel).await;
        docker::remove(&self.docker, &name).await;
        // Bind mode left read-only folders; open them so the scratch folder can be removed.
        staging::unlock(scratch.path());
        end
    }

    async fn run_in(
        &self,
        job: &JobRecord,
        attempt: u32,
        gpus: &[u32],
        name: &str,
        scratch: &std::path::Path,
        cancel: &CancellationToken,
    ) -> AttemptEnd {
        let mut stats = RunStats::default();
        let spec = &job.spec;
        let storage = if job.lane == Lane::Fast {
            &self.blobs
        } else {
            &self.storage
        };

        let t = Instant::now();
        if !self.settings.images.allows(&spec.image) {
            return failed(
                fail(
                    ErrorCode::ImageNotAllowed,
                    format!(
                        "image {:?} is not on this worker's allow-list (DCC_IMAGE_ALLOW)",
                        spec.image
                    ),
                ),
                stats,
                None,
            );
        }
        let limit = self.settings.pull_timeout;
        let pull = async {
            tokio::time::timeout(limit, docker::ensure_image(&self.docker, &spec.image))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the pull did not finish within {} s (DCC_PULL_TIMEOUT_SECS)",
                        limit.as_secs()
                    ))
                })
        };
        let digest = tokio::select! {
            r = pull => match r {
                Ok((id, _)) => id,
                Err(msg) => {
                    stats.pull_ms = ms_since(t);
                    return failed(fail(ErrorCode::ImageNotFound, format!("image {:?} is not available: {msg}", spec.image)), stats, None);
                }
            },
            _ = cancel.cancelled() => return AttemptEnd::Aborted,
        };
        stats.pull_ms = ms_since(t);
        let digest = Some(digest);

        // Bind mode stages the inputs before the container exists and binds them in.
        let t_inputs = Instant::now();
        let bound = if self.settings.files == FilesMode::Bind {
            match staging::stage_inputs_bind(storage.as_ref(), job, scratch).await {
                Ok(dirs) => {
                    stats.inputs_ms = ms_since(t_inputs);
                    Some(dirs)
                }
                Err(msg) => return failed(fail(ErrorCode::InputFetchFailed, msg), stats, digest),
            }
        } else {
            None
        };
        let mut body = container::body(
            job,
            attempt,
            &self.settings.worker_id,
            &self.settings.limits,
            gpus,
            self.settings.gpu.as_ref(),
        );
        if let (Some((inp, out)), Some(host)) = (&bound, body.host_config.as_mut()) {
            host.binds.get_or_insert_with(Vec::new).extend([
                format!("{}:/inputs:ro", inp.display()),
                format!("{}:/outputs:rw", out.display()),
            ]);
        }
        // A Docker refusal that is about GPUs (no runtime, no device, no driver) is GPU_UNAVAILABLE.
        let refused = |what: &str, msg: String| {
            let code = if !gpus.is_empty() && gpu::is_gpu_error(&msg) {
                ErrorCode::GpuUnavailable
            } else {
                ErrorCode::ContainerFailed
            };
            fail(code, format!("{what}: {msg}"))
        };
        let created = {
            let _permit = self.create_permits.acquire().await;
            self.create(name, body).await
        };
        if let Err(e) = created {
            return failed(refused("creating the container failed", e), stats, digest);
        }

        let staged = if bound.is_some() {
            Ok(())
        } else {
            let t = Instant::now();
            let r = tokio::select! {
                r = staging::upload_inputs(&self.docker, name, storage.as_ref(), job, scratch) => r,
                _ = cancel.cancelled() => return AttemptEnd::Aborted,
            };
            stats.inputs_ms = ms_since(t);
            r
        };
        if let Err(msg) = staged {
            return failed(fail(ErrorCode::InputFetchFailed, msg), stats, digest);
        }

        let t_run = Instant::now();
        let started = {
            let _permit = self.create_permits.acquire().await;
            self.docker.start_container(name, None).await
        };
        if let Err(e) = started {
            return failed(
                refused("the container did not start", daemon_message(&e)),
                stats,
                digest,
            );
        }
        let logs = LogCollector::spawn(
            self.docker.clone(),
            name.to_string(),
            storage.clone(),
            scratch,
            (
                paths::log(&job.id, attempt, "stdout"),
                paths::log(&job.id, attempt, "stderr"),
            ),
            self.settings.max_log_bytes,
        );
        let sampler = StatsSampler::spawn(self.docker.clone(), name.to_string());

        let limit = Duration::from_secs(spec.parameters.max_duration_secs);
        let mut wait = self.docker.wait_container(name, None);
        enum Exit {
            Code(i64),
            Timeout,
            Broken(String),
        }
        let exit = tokio::select! {
            r = tokio::time::timeout(limit, wait.next()) => match r {
                Ok(Some(Ok(resp))) => Exit::Code(resp.status_code),
                Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Exit::Code(code),
                Ok(Some(Err(e))) => Exit::Broken(daemon_message(&e)),
                Ok(None) => Exit::Broken("the wait stream ended without a status".into()),
                Err(_) => Exit::Timeout,
            },
            _ = cancel.cancelled() => {
                self.kill(name).await;
                logs.abort();
                sampler.finish();
                return AttemptEnd::Aborted;
            }
        };
        if matches!(exit, Exit::Timeout) {
            self.kill(name).await;
        }
        stats.run_ms = ms_since(t_run);
        let usage = sampler.finish();
        stats.max_memory_bytes = usage.max_memory_bytes;
        stats.cpu_secs = usage.cpu_nanos as f64 / 1e9;

        // Logs, outputs and the exit details are independent: fetch them at once.
        let t = Instant::now();
        let (inspect, logs_result, outputs) =
            tokio::join!(self.docker.inspect_container(name, None), logs.finish(), async {
                match &bound {
                    Some((_, out)) => {
                        staging::collect_outputs_bind(
                            storage.as_ref(),
                            job,
                            attempt,
                            out,
                            self.settings.max_output_bytes,
                        )
                        .await
                    }
                    None => {
                        staging::collect_outputs(
                            &self.docker,
                            name,
                            storage.as_ref(),
                            job,
                            attempt,
                            scratch,
                            self.settings.max_output_bytes,
                        )
                        .await
                    }
                }
            });
        stats.outputs_ms = ms_since(t);
        let oom = inspect
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false);

        let (mut state, exit_code, mut error) = match exit {
            Exit::Code(0) => (JobState::Succeeded, Some(0), None),
            Exit::Code(c) if oom => (
                JobState::Failed,
                Some(c),
                Some(fail(
                    ErrorCode::NonzeroExit,
                    format!(
                        "the container ran out of memory (memoryMb {}) and was killed (exit code {c})",
                        spec.parameters.memory_mb
                    ),
                )),
            ),
            Exit::Code(c) => (
                JobState::Failed,
                Some(c),
                Some(fail(
                    ErrorCode::NonzeroExit,
                    format!("the command exited with code {c}"),
                )),
            ),
            Exit::Timeout => (
                JobState::TimedOut,
                None,
                Some(fail(
                    ErrorCode::TimedOut,
                    format!(
                        "ran past maxDurationSecs ({} s); the container was killed",
                        limit.as_secs()
                    ),
                )),
            ),
            Exit::Broken(msg) => (
                JobState::Failed,
                None,
                Some(fail(
                    ErrorCode::ContainerFailed,
                    format!("lost track of the container: {msg}"),
                )),
            ),
        };
        // Never `succeeded` with missing outputs or logs.
        let outputs = match (outputs, logs_result) {
            (Ok(o), Ok(())) => o,
            (Err(e), _) => {
                state = JobState::Failed;
                error = Some(fail(ErrorCode::OutputUploadFailed, e.0));
                Vec::new()
            }
            (Ok(_), Err(e)) => {
                state = JobState::Failed;
                error = Some(fail(
                    ErrorCode::OutputUploadFailed,
                    format!("the logs could not be stored: {e}"),
                ));
                Vec::new()
            }
        };
        AttemptEnd::Done(Outcome {
            state,
            exit_code,
            error,
            image_digest: digest,
            stats,
            outputs,
        })
    }

    /// Creates the container; a same-named leftover (a crash between create and remove) is
    /// removed and the create tried once more.
    async fn create(&self, name: &str, body: bollard::models::ContainerCreateBody) -> Result<(), String> {
        for round in 0..2 {
            let opts = CreateContainerOptionsBuilder::default().name(name).build();
            match self.docker.create_container(Some(opts), body.clone()).await {
                Ok(_) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) if round == 0 => {
                    docker::remove(&self.docker, name).await;
                }
                Err(e) => return Err(daemon_message(&e)),
            }
        }
        Err("a container with the same name keeps coming back".into())
    }

    async fn kill(&self, name: &str) {
        let opts = KillContainerOptionsBuilder::default().signal("KILL").build();
        if let Err(e) = self.docker.kill_container(name, Some(opts)).await {
            tracing::debug!(container = name, error = %daemon_message(&e), "kill");
        }
    }
}
