//! One attempt in a warm container: image → inputs into its folder → the job's command handed to
//! the container's agent (the image's entrypoint + the job's command or the image's, the job's
//! environment; the user and working folder are the container's, made from the image and the
//! job's shape) → wait (deadline, cancel, and the command's exit as the agent reports it) → logs
//! and outputs → result. Same errors, limits and result as a cold run; the differences a job
//! could see are listed in docs/performance.md.

use std::time::{Duration, Instant};

use bollard::query_parameters::StatsOptionsBuilder;
use dcc_shared::job::{ErrorCode, JobRecord, RunStats};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Warm;
use super::agent::{Agent, Instruction, Start};
use super::init::Init;
use crate::executor::{
    AttemptEnd, COLLECT_LIMIT, Collected, Executor, Exit, LOG_GRACE, Leftovers, Run, Stop, Verdict, judge, ms_since,
    not_stopped,
};
use crate::files::{BindFiles, Files};
use crate::logs::{LogCapture, StatsSampler};

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
        let Warm {
            name,
            token,
            scratch,
            init,
            mut agent,
            image,
        } = warm;
        let run = Run {
            job,
            attempt,
            gpus: &[],
            name: &name,
            scratch: scratch.path(),
            cancel,
            storage: &self.blobs,
        };
        let mut stats = RunStats {
            warm: true,
            ..RunStats::default()
        };
        // The image was looked up when the container was made, and the container runs that one.
        let digest = Some(image.id.clone());
        let result = self.warm_steps(&run, image, init, &mut agent, &mut stats).await;
        let end = AttemptEnd::of(result, stats, digest);
        (end, Leftovers::warm(name, scratch, token))
    }

    async fn warm_steps(
        &self,
        run: &Run<'_>,
        image: crate::docker::Image,
        init: Option<Init>,
        agent: &mut Agent,
        stats: &mut RunStats,
    ) -> Result<Verdict, Stop> {
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
        let logs = self.start_command(run, agent, argv).await?;
        stats.start_ms = ms_since(t);
        let t = Instant::now();
        let sampler = StatsSampler::spawn(self.docker.clone(), run.name.to_string());
        let Some((exit, killed)) = self.wait_command(run, agent).await else {
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

    /// Has the agent start `argv` with the job's environment; the capture of its output.
    async fn start_command(&self, run: &Run<'_>, agent: &mut Agent, argv: Vec<String>) -> Result<LogCapture, Stop> {
        let instruction = Instruction {
            argv: argv.into_iter().map(String::into_bytes).collect(),
            env: crate::container::job_env(run.job)
                .into_iter()
                .map(String::into_bytes)
                .collect(),
        };
        let started = agent
            .start(&instruction)
            .await
            .map_err(|e| Stop::with(e.code(), format!("the command did not start: {e}")))?;
        match started {
            Start::Running { output } => Ok(self.capture(run, output)),
            // Where a cold container's create fails, with the runtime's words.
            Start::Refused(why) => Err(Stop::with(
                ErrorCode::ContainerFailed,
                format!("the container did not start: {why}"),
            )),
        }
    }

    /// Waits for the command to end, killing the container at the job's deadline. `None` when
    /// the attempt was stopped from outside. With the exit, whether the worker killed the
    /// container.
    async fn wait_command(&self, run: &Run<'_>, agent: &mut Agent) -> Option<(Exit, bool)> {
        let limit = Duration::from_secs(run.job.spec.parameters.max_duration_secs);
        tokio::select! {
            exited = agent.exited() => Some(match exited {
                Ok(code) => (Exit::Code(code), false),
                // The agent, the container's first process, died: the container with it, as a
                // cold container whose first process was killed (137; the memory check tells
                // an out-of-memory kill apart).
                Err(why) => {
                    tracing::debug!(job = %run.job.id, %why, "a warm container's agent ended without an exit");
                    (Exit::Code(137), false)
                }
            }),
            _ = tokio::time::sleep(limit) => {
                self.kill(run.name).await;
                Some((Exit::Timeout, true))
            }
            _ = run.cancel.cancelled() => {
                self.kill(run.name).await;
                None
            }
        }
    }

    /// After the command ended: the out-of-memory verdict, then the logs (complete once every
    /// writer is gone) and — once every process of the container is dead, so nothing the job
    /// left running can still swap names in `/outputs` — the outputs. Stopped from outside
    /// meanwhile: [`Stop::Aborted`].
    async fn warm_collect(
        &self,
        run: &Run<'_>,
        init: Option<Init>,
        transfer: &crate::files::Transfer<'_>,
        logs: LogCapture,
        (exit, killed): (Exit, bool),
    ) -> Result<(Exit, Collected), Stop> {
        let storage = run.storage.as_ref();
        // Asked before the kill below: Docker's record of the container's stop replaces its
        // out-of-memory flag with the stop's.
        let oom_killed = self.warm_oom(run.name, &exit).await;
        // What the command left running dies before the outputs are read, as a cold
        // container's does with its first process. The logs are stored meanwhile: they end
        // when every writer is gone, at once when the command left nothing running, else with
        // the kill.
        let outputs = async {
            if self.kill_warm(run.name, init).await {
                BindFiles.collect(transfer).await
            } else {
                Err(not_stopped())
            }
        };
        let gather = async { tokio::join!(logs.finish(LOG_GRACE, killed, storage), outputs) };
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
}
