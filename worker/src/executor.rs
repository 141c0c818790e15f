//! One attempt of one job in a container: image → inputs → create → start → wait (deadline,
//! cancel) → logs and outputs → result. Each step is a function that either hands the next one
//! what it needs or stops the attempt ([`Stop`]); whatever happens, the container and the
//! attempt's scratch folder are handed back for [`Executor::clean_up`], which the attempt calls
//! once its result is recorded. How files move is the [`Files`] mode's business; this file only
//! says when.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use dcc_shared::job::{ErrorCode, JobError, JobRecord, JobState, Lane, RunStats};
use dcc_shared::queue::finish::Outcome;
use dcc_shared::storage::{Storage, paths};
use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::container::{self, HostLimits};
use crate::docker::{self, daemon_message};
use crate::files::{self, Attach, BindFiles, CopyFiles, Files, FilesMode, OutputError, Transfer};
use crate::gpu::GpuSettings;
use crate::logs::{LogCapture, StatsSampler};
use crate::step::StepError;
pub(crate) use crate::verdict::{Collected, Exit, Verdict, job_error, judge};
use crate::warm::{Shape, Warm, WarmPool};

/// How an attempt ended.
#[derive(Debug)]
pub enum AttemptEnd {
    /// It produced a result to record.
    Done(Outcome),
    /// It was stopped from outside (cancelled, deleted, lease lost, shutdown): record nothing.
    Aborted,
}

impl AttemptEnd {
    /// The end of an attempt whose steps gave `result`, with what they measured.
    pub(crate) fn of(result: Result<Verdict, Stop>, stats: RunStats, digest: Option<String>) -> Self {
        match result {
            Ok(v) => AttemptEnd::Done(Outcome {
                state: v.state,
                exit_code: v.exit_code,
                error: v.error,
                image_digest: digest,
                stats,
                outputs: v.outputs,
            }),
            Err(Stop::Failed(e)) => failed(e, stats, digest),
            Err(Stop::Aborted) => AttemptEnd::Aborted,
        }
    }
}

/// Settings of the executor.
#[derive(Clone, Debug)]
pub struct ExecSettings {
    /// The worker and its deployment, for labels (the deployment is known once Redis answered).
    pub owner: docker::Owner,
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
    pub pull_timeout: Duration,
    /// Images that may run (checked again here: the API server may be configured differently).
    pub images: dcc_shared::job::image::ImageAllow,
    /// Pull credentials for private registries.
    pub registries: crate::registry::Registries,
}

/// Runs attempts.
pub struct Executor {
    pub(crate) docker: Docker,
    /// Files of standard jobs.
    storage: Arc<dyn Storage>,
    /// Files of fast jobs (in Redis).
    pub(crate) blobs: Arc<dyn Storage>,
    pub(crate) settings: ExecSettings,
    /// Warm containers for fast jobs (bind mode only; `None`: every job runs cold).
    warm: Option<Arc<WarmPool>>,
    /// Bounds concurrent container creations and starts (dockerd slows sharply past a few).
    create_permits: Semaphore,
    /// Bounds the clean-ups that may trail their attempts (see [`Executor::trail_clean_up`]).
    trailing: Semaphore,
    /// How many permits `trailing` has.
    concurrency: u32,
}

/// What an attempt leaves on the worker until [`Executor::clean_up`].
pub struct Leftovers {
    container: String,
    scratch: tempfile::TempDir,
    /// The token of the warm container it ran in.
    warm: Option<String>,
}

impl Leftovers {
    /// What an attempt in a warm container leaves: the container, its folder and its token.
    pub(crate) fn warm(container: String, scratch: tempfile::TempDir, token: String) -> Self {
        Leftovers {
            container,
            scratch,
            warm: Some(token),
        }
    }
}

/// Why an attempt stopped before it had a result of its own.
pub(crate) enum Stop {
    /// It failed with this error (recorded as the job's error).
    Failed(JobError),
    /// It was stopped from outside: record nothing.
    Aborted,
}

impl Stop {
    pub(crate) fn with(code: ErrorCode, message: impl Into<String>) -> Self {
        Stop::Failed(job_error(code, message))
    }
}

impl From<StepError> for Stop {
    fn from(e: StepError) -> Self {
        Stop::with(e.code(), e.to_string())
    }
}

/// One attempt being run: what every step reads.
pub(crate) struct Run<'a> {
    pub(crate) job: &'a JobRecord,
    pub(crate) attempt: u32,
    pub(crate) gpus: &'a [u32],
    /// The container's name.
    pub(crate) name: &'a str,
    /// The attempt's own scratch folder.
    pub(crate) scratch: &'a Path,
    pub(crate) cancel: &'a CancellationToken,
    /// Where its files are: Redis for fast jobs, storage for the rest.
    pub(crate) storage: &'a Arc<dyn Storage>,
}

/// How long a container may take to stop after a kill before its files are given up on.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the output may stay open after the container's end (a killed container's closes at
/// once) before the log is stored as it is, marked.
pub(crate) const LOG_GRACE: Duration = Duration::from_secs(10);
/// Longest an attempt's collection (logs, outputs, their uploads) may take after the run.
pub(crate) const COLLECT_LIMIT: Duration = Duration::from_secs(600);

/// The error of outputs left by a container that did not stop.
pub(crate) fn not_stopped() -> OutputError {
    OutputError(format!(
        "the container did not stop within {} s of its kill: its outputs were not read",
        STOP_GRACE.as_secs()
    ))
}

pub(crate) fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

impl Executor {
    /// An executor on `docker`, storing into `storage` (standard jobs) and `blobs` (fast jobs).
    pub fn new(
        docker: Docker,
        storage: Arc<dyn Storage>,
        blobs: Arc<dyn Storage>,
        settings: ExecSettings,
        concurrency: usize,
        warm: Option<Arc<WarmPool>>,
    ) -> Self {
        Executor {
            warm,
            docker,
            storage,
            blobs,
            settings,
            create_permits: Semaphore::new(concurrency),
            trailing: Semaphore::new(concurrency),
            concurrency: u32::try_from(concurrency).unwrap_or(u32::MAX),
        }
    }

    /// A place for one clean-up that runs after its attempt freed its slots; waits while as many
    /// as the Docker concurrency are pending, so a slow daemon slows claims down rather than
    /// piling up exited containers. Held until the clean-up is done.
    pub async fn trail_clean_up(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.trailing.acquire().await.ok()
    }

    /// [`Executor::trail_clean_up`] if a place is free now.
    pub fn try_trail_clean_up(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.trailing.try_acquire().ok()
    }

    /// Resolves once no clean-up is pending (at shutdown, so no container is left behind).
    pub async fn clean_ups_done(&self) {
        drop(self.trailing.acquire_many(self.concurrency).await);
    }

    /// The Docker connection.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Runs `attempt` of `job` on the `gpus` it holds; `cancel` stops it from outside. What the
    /// attempt leaves (its container, its scratch folder) is for [`Executor::clean_up`] once the
    /// result is recorded: the client need not wait for Docker to remove a container.
    pub async fn run(
        &self,
        job: &JobRecord,
        attempt: u32,
        gpus: &[u32],
        cancel: &CancellationToken,
    ) -> (AttemptEnd, Option<Leftovers>) {
        if let Some(warm) = self.take_warm(job, gpus) {
            let (end, left) = self.run_warm(job, attempt, cancel, warm).await;
            return (end, Some(left));
        }
        let scratch = match tempfile::Builder::new()
            .prefix(&format!("dcc-{}-", job.id))
            .tempdir_in(&self.settings.tmp_dir)
        {
            Ok(d) => d,
            Err(e) => {
                let e = job_error(ErrorCode::ContainerFailed, format!("worker scratch folder: {e}"));
                return (failed(e, RunStats::default(), None), None);
            }
        };
        let name = container::name(job, attempt, &self.settings.owner);
        let run = Run {
            job,
            attempt,
            gpus,
            name: &name,
            scratch: scratch.path(),
            cancel,
            storage: if job.lane == Lane::Fast {
                &self.blobs
            } else {
                &self.storage
            },
        };
        let end = match self.settings.files {
            FilesMode::Copy => self.run_with(&CopyFiles::default(), &run).await,
            FilesMode::Bind => self.run_with(&BindFiles, &run).await,
        };
        (
            end,
            Some(Leftovers {
                container: name,
                scratch,
                warm: None,
            }),
        )
    }

    /// A warm container for `job` when it may run in one and one is idle. Asking makes the pool
    /// learn the job's shape, so the next job of that shape finds one.
    fn take_warm(&self, job: &JobRecord, gpus: &[u32]) -> Option<Warm> {
        let eligible = self.settings.files == FilesMode::Bind
            && gpus.is_empty()
            // Never a container of an image this worker may not run, not even one that only
            // runs the agent.
            && self.settings.images.allows(&job.spec.image);
        let pool = self.warm.as_ref().filter(|_| eligible)?;
        pool.take(&Shape::of(job)?)
    }

    /// The warm containers, when there are any.
    pub fn warm_pool(&self) -> Option<&Arc<WarmPool>> {
        self.warm.as_ref()
    }

    /// Removes what an attempt left: its container (whatever state it is in) and its scratch
    /// folder (bind mode left read-only folders: opened first).
    pub async fn clean_up(&self, left: Leftovers) {
        docker::remove(&self.docker, &left.container).await;
        if let Some(pool) = &self.warm {
            pool.after_job(left.warm.as_deref());
        }
        files::unlock(left.scratch.path());
        drop(left.scratch);
    }

    async fn run_with<F: Files>(&self, files: &F, run: &Run<'_>) -> AttemptEnd {
        let mut stats = RunStats::default();
        let mut digest = None;
        let result = self.steps(files, run, &mut stats, &mut digest).await;
        AttemptEnd::of(result, stats, digest)
    }

    /// The attempt, step by step; timings go into `stats` as each step ends.
    async fn steps<F: Files>(
        &self,
        files: &F,
        run: &Run<'_>,
        stats: &mut RunStats,
        digest: &mut Option<String>,
    ) -> Result<Verdict, Stop> {
        let image = self.timed_pull(run, stats, digest).await?;
        let transfer = self.transfer(run, image.as_root);
        let t = Instant::now();
        let attach = files.before_create(&transfer).await.map_err(Stop::from)?;
        stats.inputs_ms = ms_since(t);
        let t = Instant::now();
        self.create(run, attach).await?;
        stats.create_ms = ms_since(t);
        let t = Instant::now();
        tokio::select! {
            r = files.before_start(&transfer) => r.map_err(Stop::from)?,
            _ = run.cancel.cancelled() => return Err(Stop::Aborted),
        }
        stats.inputs_ms += ms_since(t);
        let t = Instant::now();
        // Attached before the start, so the capture has every byte from the first one on.
        let logs = self.attach(run).await?;
        if let Err(stop) = self.start(run).await {
            logs.abort();
            return Err(stop);
        }
        stats.start_ms = ms_since(t);
        let t = Instant::now();
        let sampler = StatsSampler::spawn(self.docker.clone(), run.name.to_string());
        let Some(exit) = self.wait(run).await else {
            logs.abort();
            sampler.finish();
            return Err(Stop::Aborted);
        };
        stats.run_ms = ms_since(t);
        sampler.finish().into_stats(stats);
        let t = Instant::now();
        let collected = self
            .collect(files, &transfer, logs, &exit, run.cancel)
            .await
            .ok_or(Stop::Aborted)?;
        stats.outputs_ms = ms_since(t);
        stats.outputs_skipped = collected.skipped();
        Ok(judge(exit, collected, &run.job.spec.parameters))
    }

    /// Attaches to the created container's stdout and stderr and starts capturing them.
    async fn attach(&self, run: &Run<'_>) -> Result<LogCapture, Stop> {
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let attached = self
            .docker
            .attach_container(run.name, Some(opts))
            .await
            .map_err(|e| Self::daemon_failed(run, "attaching to the container failed", &e))?;
        Ok(self.capture(run, attached.output))
    }

    /// Captures `output` as the attempt's two logs.
    pub(crate) fn capture(
        &self,
        run: &Run<'_>,
        output: impl futures_util::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>
        + Unpin
        + Send
        + 'static,
    ) -> LogCapture {
        LogCapture::spawn(
            output,
            run.storage.clone(),
            run.scratch,
            (
                paths::log(&run.job.id, run.attempt, "stdout"),
                paths::log(&run.job.id, run.attempt, "stderr"),
            ),
            self.settings.max_log_bytes,
        )
    }

    /// What the files mode needs to move `run`'s files.
    pub(crate) fn transfer<'a>(&'a self, run: &'a Run<'_>, as_root: bool) -> Transfer<'a> {
        Transfer {
            docker: &self.docker,
            storage: run.storage.as_ref(),
            job: run.job,
            attempt: run.attempt,
            scratch: run.scratch,
            container: run.name,
            max_output_bytes: self.settings.max_output_bytes,
            as_root,
        }
    }

    /// [`Executor::pull`], its time and the image's id noted for the result.
    pub(crate) async fn timed_pull(
        &self,
        run: &Run<'_>,
        stats: &mut RunStats,
        digest: &mut Option<String>,
    ) -> Result<docker::Image, Stop> {
        let t = Instant::now();
        let pulled = self.pull(run).await;
        stats.pull_ms = ms_since(t);
        let image = pulled?;
        *digest = Some(image.id.clone());
        Ok(image)
    }

    /// Makes sure the image is allowed and present.
    pub(crate) async fn pull(&self, run: &Run<'_>) -> Result<docker::Image, Stop> {
        let image = &run.job.spec.image;
        if !self.settings.images.allows(image) {
            return Err(Stop::with(
                ErrorCode::ImageNotAllowed,
                format!("image {image:?} is not on this worker's allow-list (DCC_IMAGE_ALLOW)"),
            ));
        }
        let limit = self.settings.pull_timeout;
        let registries = &self.settings.registries;
        let pulled = tokio::select! {
            r = tokio::time::timeout(limit, docker::ensure_image(&self.docker, image, registries)) => r,
            _ = run.cancel.cancelled() => return Err(Stop::Aborted),
        };
        match pulled {
            Ok(Ok(image)) => Ok(image),
            Ok(Err(docker::PullError::Credentials(msg))) => Err(Stop::with(
                ErrorCode::ImagePullDenied,
                format!("image {image:?} cannot be pulled: no usable credentials for its registry: {msg}"),
            )),
            Ok(Err(docker::PullError::Daemon(msg))) if crate::registry::pull_rate_limited(&msg) => Err(Stop::with(
                ErrorCode::ImagePullRateLimited,
                format!(
                    "image {image:?} cannot be pulled now: the registry's pull rate limit was reached ({msg}); give the workers credentials for it or pull through a cache (docs/registries.md)"
                ),
            )),
            Ok(Err(docker::PullError::Daemon(msg))) if crate::registry::pull_denied(&msg) => Err(Stop::with(
                ErrorCode::ImagePullDenied,
                format!("image {image:?} cannot be pulled: the registry refused the credentials: {msg}"),
            )),
            Ok(Err(docker::PullError::Daemon(msg))) => Err(Stop::with(
                ErrorCode::ImageNotFound,
                format!("image {image:?} is not available: {msg}"),
            )),
            Err(_) => Err(Stop::with(
                ErrorCode::ImageNotFound,
                format!(
                    "image {image:?} is not available: the pull did not finish within {} s (DCC_PULL_TIMEOUT_SECS)",
                    limit.as_secs()
                ),
            )),
        }
    }

    /// A Docker call failed: the daemon's refusal fails the attempt (`GPU_UNAVAILABLE` when it is
    /// about the GPUs, `CONTAINER_FAILED` otherwise: [`StepError::docker`]); a daemon that did not
    /// answer in time or cannot be reached is not the job's fault, so it goes back to the queue
    /// (the self-check makes the worker `UNHEALTHY` meanwhile).
    pub(crate) fn daemon_failed(run: &Run<'_>, what: &'static str, e: &bollard::errors::Error) -> Stop {
        if docker::daemon_unreachable(e) {
            tracing::warn!(error = %e, "{what}: the Docker daemon did not answer; handing the job back");
            return Stop::Aborted;
        }
        StepError::docker(what, e, !run.gpus.is_empty()).into()
    }

    /// Creates the container with the job's limits and the mode's mounts. A same-named
    /// leftover (a crash between create and remove) is removed and the create tried once more.
    async fn create(&self, run: &Run<'_>, attach: Attach) -> Result<(), Stop> {
        let mut body = container::body(
            run.job,
            run.attempt,
            &self.settings.owner,
            &self.settings.limits,
            run.gpus,
            self.settings.gpu.as_ref(),
        );
        container::attach(&mut body, attach);
        let _permit = self.create_permits.acquire().await;
        let opts = CreateContainerOptionsBuilder::default().name(run.name).build();
        for round in 0..2 {
            match self.docker.create_container(Some(opts.clone()), body.clone()).await {
                Ok(_) => return Ok(()),
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) if round == 0 => {
                    docker::remove(&self.docker, run.name).await;
                }
                Err(e) => return Err(Self::daemon_failed(run, "creating the container failed", &e)),
            }
        }
        Err(Stop::with(
            ErrorCode::ContainerFailed,
            "creating the container failed: a container with the same name keeps coming back",
        ))
    }

    async fn start(&self, run: &Run<'_>) -> Result<(), Stop> {
        let _permit = self.create_permits.acquire().await;
        self.docker
            .start_container(run.name, None)
            .await
            .map_err(|e| Self::daemon_failed(run, "the container did not start", &e))
    }

    /// Waits for the container to exit, killing it at the job's deadline; `None` when the
    /// attempt was stopped from outside (the container is killed too).
    async fn wait(&self, run: &Run<'_>) -> Option<Exit> {
        let limit = Duration::from_secs(run.job.spec.parameters.max_duration_secs);
        let mut wait = self.docker.wait_container(run.name, None);
        let exit = tokio::select! {
            r = tokio::time::timeout(limit, wait.next()) => match r {
                Ok(Some(Ok(resp))) => Exit::Code(resp.status_code),
                Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Exit::Code(code),
                Ok(Some(Err(e))) => Exit::Broken(daemon_message(&e)),
                Ok(None) => Exit::Broken("the wait stream ended without a status".into()),
                Err(_) => Exit::Timeout,
            },
            _ = run.cancel.cancelled() => {
                self.kill(run.name).await;
                return None;
            }
        };
        if matches!(exit, Exit::Timeout | Exit::Broken(_)) {
            self.kill(run.name).await;
        }
        Some(exit)
    }

    /// Logs, outputs and the exit details are independent: fetched at once, once no process of
    /// the container is alive. `None` when the attempt was stopped from outside meanwhile (a
    /// collection never holds a slot past a cancel, a lost lease or a shutdown); bounded by
    /// [`COLLECT_LIMIT`] in any case.
    async fn collect<F: Files>(
        &self,
        files: &F,
        t: &Transfer<'_>,
        logs: LogCapture,
        exit: &Exit,
        cancel: &CancellationToken,
    ) -> Option<Collected> {
        // An exit code means the container's first process is gone, and with it every other
        // process of its PID namespace; a timeout or a lost track was killed in `wait`.
        let dead = matches!(exit, Exit::Code(_)) || self.stopped(t.container).await;
        let killed = !matches!(exit, Exit::Code(_));
        let outputs = async {
            if dead {
                files.collect(t).await
            } else {
                Err(not_stopped())
            }
        };
        let all = async {
            tokio::join!(
                self.oom_killed(t.container, exit),
                logs.finish(LOG_GRACE, killed, t.storage),
                outputs
            )
        };
        let (oom_killed, logs, outputs) = tokio::select! {
            r = tokio::time::timeout(COLLECT_LIMIT, all) => r.unwrap_or_else(|_| {
                let e = OutputError(format!("collecting outputs and logs took longer than {} s", COLLECT_LIMIT.as_secs()));
                (false, Ok(()), Err(e))
            }),
            _ = cancel.cancelled() => return None,
        };
        Some(Collected {
            oom_killed,
            logs,
            outputs,
        })
    }

    /// Waits (up to [`STOP_GRACE`]) until the container is not running, after a kill: its files
    /// are read only then. `false` when it still runs.
    pub(crate) async fn stopped(&self, name: &str) -> bool {
        let opts = WaitContainerOptionsBuilder::default().condition("not-running").build();
        let mut wait = self.docker.wait_container(name, Some(opts));
        match tokio::time::timeout(STOP_GRACE, wait.next()).await {
            Ok(Some(Ok(_)) | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) | None) => true,
            // Gone already: nothing of it runs.
            Ok(Some(Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }))) => true,
            Ok(Some(Err(e))) => {
                tracing::warn!(container = name, error = %daemon_message(&e), "could not tell whether the container stopped");
                false
            }
            Err(_) => false,
        }
    }

    /// Whether the kernel killed the container for memory: asked of Docker only when the exit
    /// code could mean it (a clean exit cannot).
    pub(crate) async fn oom_killed(&self, name: &str, exit: &Exit) -> bool {
        if matches!(exit, Exit::Code(0) | Exit::Timeout) {
            return false;
        }
        self.docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.oom_killed)
            .unwrap_or(false)
    }

    pub(crate) async fn kill(&self, name: &str) {
        docker::kill(&self.docker, name).await;
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
