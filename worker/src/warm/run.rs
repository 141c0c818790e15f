//! One attempt in a warm container: image → inputs into its folder → `exec` of the job's command
//! (the image's entrypoint + the job's command or the image's, the job's environment; the user and
//! working folder are the container's, made from the image and the job's shape) → wait (deadline,
//! cancel, and the command's own exit) → logs and outputs → result. Same errors, limits and
//! result as a cold run; the differences a job could see are listed in docs/performance.md.

use std::time::{Duration, Instant};

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::StatsOptionsBuilder;
use dcc_shared::job::{ErrorCode, JobRecord, RunStats};
use dcc_shared::storage::paths;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Warm;
use super::init::Init;
use crate::docker::daemon_message;
use crate::executor::{
    AttemptEnd, COLLECT_LIMIT, Collected, Executor, Exit, LOG_GRACE, Leftovers, Run, Stop, Verdict, judge, ms_since,
    not_stopped,
};
use crate::files::{BindFiles, Files};
use crate::logs::{LogCapture, StatsSampler};

/// First and longest pause between checks that the command is still running (only a command
/// that exits while something else keeps its output open needs them).
const EXIT_CHECK: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

impl Executor {
    /// Runs `attempt` of `job` in the warm container `warm`; what it leaves is for
    /// [`Executor::clean_up`], like a cold attempt's.
    pub(crate) async fn run_warm(
        &self,
        job: &JobRecord,
        attempt: u32,
        cancel: &CancellationToken,
        warm: Warm,
    ) -> (AttemptEnd, Leftovers) {
        let run = Run {
            job,
            attempt,
            gpus: &[],
            name: &warm.name,
            scratch: warm.scratch.path(),
            cancel,
            storage: &self.blobs,
        };
        let mut stats = RunStats {
            warm: true,
            ..RunStats::default()
        };
        let mut digest = None;
        let result = self.warm_steps(&run, warm.init, &mut stats, &mut digest).await;
        let end = AttemptEnd::of(result, stats, digest);
        (end, Leftovers::warm(warm))
    }

    async fn warm_steps(
        &self,
        run: &Run<'_>,
        init: Option<Init>,
        stats: &mut RunStats,
        digest: &mut Option<String>,
    ) -> Result<Verdict, Stop> {
        let image = self.timed_pull(run, stats, digest).await?;
        let argv = image.argv(run.job.spec.command.as_deref());
        if argv.is_empty() {
            // What Docker answers a cold create of the same job.
            return Err(Stop::with(
                ErrorCode::ContainerFailed,
                "creating the container failed: No command specified",
            ));
        }
        let transfer = self.transfer(run, image.as_root);
        let t = Instant::now();
        // Stages the inputs into the folder the container already has bound at `/inputs`.
        BindFiles.before_create(&transfer).await.map_err(Stop::from)?;
        stats.inputs_ms = ms_since(t);
        let t = Instant::now();
        let (exec, mut logs) = self.exec(run, argv).await?;
        stats.start_ms = ms_since(t);
        let t = Instant::now();
        let sampler = StatsSampler::spawn(self.docker.clone(), run.name.to_string());
        let Some((exit, killed)) = self.wait_exec(run, &exec, &mut logs).await else {
            logs.abort();
            sampler.finish();
            return Err(Stop::Aborted);
        };
        stats.run_ms = ms_since(t);
        sampler.finish().into_stats(stats);
        let t = Instant::now();
        let collected = self.warm_collect(run, init, &transfer, logs, (exit, killed)).await?;
        stats.outputs_ms = ms_since(t);
        stats.outputs_skipped = collected.1.skipped();
        Ok(judge(collected.0, collected.1, &run.job.spec.parameters))
    }

    /// After the command ended: the logs, the out-of-memory verdict, then — once the container
    /// is dead, so nothing the job left running can still swap names in `/outputs` — the
    /// outputs. Stopped from outside meanwhile: [`Stop::Aborted`].
    async fn warm_collect(
        &self,
        run: &Run<'_>,
        init: Option<Init>,
        transfer: &crate::files::Transfer<'_>,
        logs: LogCapture,
        (exit, killed): (Exit, bool),
    ) -> Result<(Exit, Collected), Stop> {
        let storage = run.storage.as_ref();
        // The runtime's own refusal arrives as the command's output: read from the stored log.
        let (logs, stored) = if let Exit::Code(126 | 127) = exit {
            let stored = logs.finish(LOG_GRACE, killed, storage).await;
            if let Some(why) = self.exec_failure(run).await {
                return Err(Stop::with(
                    ErrorCode::ContainerFailed,
                    format!("the container did not start: {why}"),
                ));
            }
            (None, stored)
        } else {
            (Some(logs), Ok(()))
        };
        // Asked before the kill below: Docker's record of the container's stop replaces its
        // out-of-memory flag with the stop's.
        let oom_killed = self.warm_oom(run.name, &exit).await;
        let gather = async {
            // What the command left running dies before anything is read, as a cold
            // container's does with its first process.
            let dead = self.kill_warm(run.name, init).await;
            let logs = async {
                match logs {
                    Some(l) => l.finish(LOG_GRACE, killed, storage).await,
                    None => stored,
                }
            };
            let outputs = async {
                if dead {
                    BindFiles.collect(transfer).await
                } else {
                    Err(not_stopped())
                }
            };
            tokio::join!(logs, outputs)
        };
        let (logs, outputs) = tokio::select! {
            r = tokio::time::timeout(COLLECT_LIMIT, gather) => r.unwrap_or_else(|_| {
                let e = crate::files::OutputError(format!("collecting outputs and logs took longer than {} s", COLLECT_LIMIT.as_secs()));
                (Ok(()), Err(e))
            }),
            _ = run.cancel.cancelled() => return Err(Stop::Aborted),
        };
        Ok((
            exit,
            Collected {
                oom_killed,
                logs,
                outputs,
            },
        ))
    }

    /// Kills the warm container and every process in it; `true` once none is alive: seen on the
    /// host when the worker sees the container's first process ([`Init`]), else Docker's stop.
    async fn kill_warm(&self, name: &str, init: Option<Init>) -> bool {
        if let Some(init) = init
            && init.kill_all().await
        {
            return true;
        }
        self.kill(name).await;
        self.stopped(name).await
    }

    /// Creates and starts the `exec` of `argv` with the job's environment, its output captured;
    /// returns the exec's id and the capture.
    async fn exec(&self, run: &Run<'_>, argv: Vec<String>) -> Result<(String, LogCapture), Stop> {
        let env = crate::container::job_env(run.job);
        let config = ExecConfig {
            cmd: Some(argv),
            env: Some(env),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            ..Default::default()
        };
        let refused = |e: bollard::errors::Error| Self::daemon_failed(run, "the command did not start", &e);
        let id = self.docker.create_exec(run.name, config).await.map_err(refused)?.id;
        let opts = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        let StartExecResults::Attached { output, .. } =
            self.docker.start_exec(&id, Some(opts)).await.map_err(refused)?
        else {
            return Err(Stop::with(ErrorCode::ContainerFailed, "the command started detached"));
        };
        Ok((id, self.capture(run, output)))
    }

    /// Waits for the command to end, killing the container at the job's deadline, or when the
    /// command exited while something it left still holds its output. `None` when the attempt
    /// was stopped from outside. With the exit, whether the container was killed.
    async fn wait_exec(&self, run: &Run<'_>, exec: &str, logs: &mut LogCapture) -> Option<(Exit, bool)> {
        let limit = Duration::from_secs(run.job.spec.parameters.max_duration_secs);
        let deadline = tokio::time::sleep(limit);
        let (timed_out, killed) = tokio::select! {
            // The output ends when the command and whatever still held its output have exited.
            _ = logs.ended() => (false, false),
            // Or the command exited and left something running that holds its output.
            _ = self.exec_exited(exec) => {
                self.kill(run.name).await;
                (false, true)
            }
            _ = deadline => {
                self.kill(run.name).await;
                (true, true)
            }
            _ = run.cancel.cancelled() => {
                self.kill(run.name).await;
                return None;
            }
        };
        if timed_out {
            return Some((Exit::Timeout, killed));
        }
        Some((self.exec_exit(exec).await, killed))
    }

    /// The command's exit code. Docker may close the output a moment before it has the exit, so
    /// it is asked again for a little while.
    async fn exec_exit(&self, exec: &str) -> Exit {
        for _ in 0..200 {
            match self.docker.inspect_exec(exec).await {
                Ok(i) if i.running == Some(true) => tokio::time::sleep(Duration::from_millis(10)).await,
                Ok(i) => {
                    return i
                        .exit_code
                        .map_or_else(|| Exit::Broken("the command's exit code is unknown".into()), Exit::Code);
                }
                Err(e) => return Exit::Broken(daemon_message(&e)),
            }
        }
        Exit::Broken("the command's exit code did not come within 2 s of its end".into())
    }

    /// Whether the kernel killed the command for memory. The container outlives its command, and
    /// Docker sets its flag only when the container itself dies: a SIGKILL exit after the
    /// container's memory reached its limit (peak usage or `failcnt`, cgroup v1) counts too.
    async fn warm_oom(&self, name: &str, exit: &Exit) -> bool {
        if self.oom_killed(name, exit).await {
            return true;
        }
        if !matches!(exit, Exit::Code(137)) {
            return false;
        }
        let opts = StatsOptionsBuilder::default().stream(false).one_shot(true).build();
        let stats = self.docker.stats(name, Some(opts)).next().await;
        let Some(m) = stats.and_then(Result::ok).and_then(|s| s.memory_stats) else {
            return false;
        };
        let at_limit = matches!((m.max_usage, m.limit), (Some(peak), Some(limit)) if peak >= limit);
        at_limit || m.failcnt.is_some_and(|n| n > 0)
    }

    /// When the runtime could not start the command at all (no such program, not executable):
    /// its message. Docker reports that as the exec's output and exit code 126 or 127, where a
    /// cold container's start fails; the attempt then fails the same way, and the message is
    /// taken out of the job's stdout, where a cold start leaves nothing either.
    async fn exec_failure(&self, run: &Run<'_>) -> Option<String> {
        const RUNTIME: &str = "OCI runtime exec failed";
        let path = run.scratch.join("stdout");
        let head = tokio::fs::read(&path).await.ok()?;
        let text = String::from_utf8_lossy(&head[..head.len().min(4096)]).into_owned();
        if !text.starts_with(RUNTIME) {
            return None;
        }
        let object = paths::log(&run.job.id, run.attempt, "stdout");
        if tokio::fs::write(&path, b"").await.is_ok()
            && let Err(e) = run.storage.put_file(&object, &path).await
        {
            tracing::warn!(error = %e, "could not clear the runtime's message from stdout");
        }
        Some(text.lines().next().unwrap_or(RUNTIME).trim().to_string())
    }

    /// Resolves once the exec's command is no longer running (checks that slow down over time).
    async fn exec_exited(&self, exec: &str) {
        let mut pause = EXIT_CHECK.0;
        loop {
            tokio::time::sleep(pause).await;
            if let Ok(i) = self.docker.inspect_exec(exec).await
                && i.running == Some(false)
            {
                return;
            }
            pause = (pause * 2).min(EXIT_CHECK.1);
        }
    }
}
