//! The 2018 RPC methods (reference §2.3): their names, arguments, and what each does in v1 terms.

use axum::http::StatusCode;
use dcc_client::ListQuery;
use dcc_shared::job::{JobState, JobView};
use dcc_shared::queue::read::QueueDepth;
use serde_json::{Map, Value, json};

use super::client::{V1, V1Error};
use super::envelope::{Params, Reply, RpcError};
use super::job2018::Kind;
use super::{result2018, submit2018};

/// The prefix of the methods' full names.
const FULL_PREFIX: &str = "ccc.compute.server.execution.routes.RpcRoutes.";
/// Most job ids a listing method (`jobs`, `pending`, `deleteAllJobs`) goes through; 2018 had
/// no bound.
pub const MAX_LISTED: usize = 10_000;

/// How a GET route's text becomes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// Kept as text (a job id `1e5` stays `"1e5"`).
    Text,
    /// Read as JSON when it parses (numbers, booleans, objects), else kept as text.
    Json,
}

/// One argument.
#[derive(Debug)]
pub struct Arg {
    /// Its name (as in named params and query strings).
    pub name: &'static str,
    /// Required arguments fill a GET route's path segments, in order.
    pub required: bool,
    /// How GET text is read.
    pub kind: ArgKind,
}

const fn req(name: &'static str) -> Arg {
    Arg {
        name,
        required: true,
        kind: ArgKind::Text,
    }
}
const fn req_json(name: &'static str) -> Arg {
    Arg {
        name,
        required: true,
        kind: ArgKind::Json,
    }
}
const fn opt(name: &'static str) -> Arg {
    Arg {
        name,
        required: false,
        kind: ArgKind::Json,
    }
}
const fn opt_text(name: &'static str) -> Arg {
    Arg {
        name,
        required: false,
        kind: ArgKind::Text,
    }
}

/// One method.
#[derive(Debug)]
pub struct Method {
    /// The alias (`submitJobJson`).
    pub alias: &'static str,
    /// The full name without the prefix.
    pub full: &'static str,
    /// Its arguments, in positional order.
    pub args: &'static [Arg],
    /// What it does.
    pub doc: &'static str,
}

/// Every method served.
pub const METHODS: &[Method] = &[
    Method {
        alias: "submitJobJson",
        full: "submitJobJson",
        args: &[req_json("job")],
        doc: "Submit a standard job (BasicBatchProcessRequest); {jobId}, or with wait the JobResult",
    },
    Method {
        alias: "submitjob",
        full: "submitJob",
        args: &[
            opt_text("image"),
            opt("pull_options"),
            opt("command"),
            opt("inputs"),
            opt_text("workingDir"),
            opt("cpus"),
            opt("maxDuration"),
            opt_text("resultsPath"),
            opt_text("inputsPath"),
            opt_text("outputsPath"),
            opt_text("containerInputsMountPath"),
            opt_text("containerOutputsMountPath"),
            opt("wait"),
            opt("meta"),
        ],
        doc: "Submit a standard job from positional arguments",
    },
    Method {
        alias: "runturbojson",
        full: "submitTurboJobJson",
        args: &[req_json("job")],
        doc: "Run a turbo job (inputs as {name: text}); outputs as {name: text}",
    },
    Method {
        alias: "runturbojsonv2",
        full: "submitTurboJobJsonV2",
        args: &[req_json("job")],
        doc: "Run a turbo job (inputs as DataBlobs); outputs base64",
    },
    Method {
        alias: "runturbo",
        full: "submitTurboJob",
        args: &[
            opt_text("image"),
            opt("imagePullOptions"),
            opt("command"),
            opt("inputs"),
            opt_text("workingDir"),
            opt("cpus"),
            opt("maxDuration"),
            opt_text("inputsPath"),
            opt_text("outputsPath"),
            opt("meta"),
        ],
        doc: "Run a turbo job from positional arguments",
    },
    Method {
        alias: "job",
        full: "doJobCommand_v2",
        args: &[req("command"), req("jobId")],
        doc: "status | result | exitcode | definition | stats | time | kill (cancel, kept) | remove (delete)",
    },
    Method {
        alias: "job-wait",
        full: "getJobResult",
        args: &[req("jobId"), opt("timeout")],
        doc: "The JobResult once the job ends (timeout in ms, default 86400000)",
    },
    Method {
        alias: "job-stats",
        full: "jobStats",
        args: &[req("jobId"), opt("raw")],
        doc: "A job's stats (raw: the v1 job view)",
    },
    Method {
        alias: "status",
        full: "status",
        args: &[],
        doc: "Queues, workers and running jobs",
    },
    Method {
        alias: "queues",
        full: "getQueues",
        args: &[],
        doc: "Jobs waiting and active per queue",
    },
    Method {
        alias: "jobs",
        full: "jobs",
        args: &[],
        doc: "Every job id (the caller's tenant's; at most 10000)",
    },
    Method {
        alias: "pending",
        full: "pending",
        args: &[],
        doc: "Ids of queued jobs",
    },
    Method {
        alias: "jobs-pending-delete",
        full: "deletePending",
        args: &[],
        doc: "Delete every queued job",
    },
    Method {
        alias: "deleteAllJobs",
        full: "deleteAllJobs",
        args: &[],
        doc: "Admin: delete every queued and running job",
    },
    Method {
        alias: "remove-all-workers-and-jobs",
        full: "removeAllJobsAndWorkers",
        args: &[],
        doc: "Admin: as deleteAllJobs (workers are not removed)",
    },
    Method {
        alias: "status-workers",
        full: "statusWorkers",
        args: &[],
        doc: "The live workers",
    },
    Method {
        alias: "test-jobs",
        full: "getTestJobsIds",
        args: &[],
        doc: "Monitor jobs (DCC runs none)",
    },
    Method {
        alias: "serverversion",
        full: "serverVersion",
        args: &[],
        doc: "The server's version",
    },
    Method {
        alias: "help",
        full: "help",
        args: &[],
        doc: "These method definitions",
    },
];

/// 2018 methods DCC does not serve, and why.
const NOT_SERVED: &[(&str, &str)] = &[
    ("log", "log levels are set with RUST_LOG at start"),
    (
        "worker-remove",
        "drain a worker with POST /api/v1/workers/{id}/drain; the scaler removes idle ones",
    ),
    ("cwl", "CWL workflows were disabled in 2018 already"),
];

/// The method called `name` (alias or full name).
pub fn find(name: &str) -> Result<&'static Method, RpcError> {
    let short = name.strip_prefix(FULL_PREFIX).unwrap_or(name);
    if let Some(m) = METHODS.iter().find(|m| m.alias == short || m.full == short) {
        return Ok(m);
    }
    match NOT_SERVED.iter().find(|(n, _)| *n == short) {
        Some((n, why)) => Err(RpcError::no_method(format!("{n} is not served by DCC: {why}"))),
        None => Err(RpcError::no_method(format!("Method not found: {name}"))),
    }
}

/// The method definitions (`GET /v1`, `help`).
pub fn definitions() -> Value {
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|m| {
            let args: Vec<Value> = m
                .args
                .iter()
                .map(|a| json!({"name": a.name, "optional": !a.required}))
                .collect();
            json!({"name": format!("{FULL_PREFIX}{}", m.full), "alias": m.alias, "doc": m.doc, "args": args})
        })
        .collect();
    json!({"methods": methods})
}

impl Method {
    /// The call's params by name: positional ones matched in order; unknown names and missing
    /// required ones refused.
    pub fn named(&self, params: Params) -> Result<Map<String, Value>, RpcError> {
        let named = match params {
            Params::None => Map::new(),
            Params::Named(m) => m,
            Params::Positional(a) if a.len() > self.args.len() => {
                return Err(RpcError::invalid_params(format!(
                    "{} takes at most {} arguments, not {}",
                    self.alias,
                    self.args.len(),
                    a.len()
                )));
            }
            Params::Positional(a) => self.args.iter().map(|x| x.name.to_string()).zip(a).collect(),
        };
        if let Some(k) = named.keys().find(|k| !self.args.iter().any(|a| a.name == k.as_str())) {
            return Err(RpcError::invalid_params(format!(
                "{} has no argument {k:?}",
                self.alias
            )));
        }
        if let Some(a) = self
            .args
            .iter()
            .find(|a| a.required && named.get(a.name).is_none_or(Value::is_null))
        {
            return Err(RpcError::invalid_params(format!(
                "{} needs the argument {}",
                self.alias, a.name
            )));
        }
        Ok(named)
    }
}

/// A text argument (numbers taken as their text).
fn text(args: &Map<String, Value>, name: &str) -> Result<String, RpcError> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(RpcError::invalid_params(format!("{name} must be a string"))),
    }
}

/// Runs `m` with `args` for the caller of `v1`.
pub async fn call(v1: &V1, m: &Method, args: Map<String, Value>) -> Result<Reply, RpcError> {
    let job = || args.get("job").cloned().unwrap_or(Value::Null);
    match m.alias {
        "submitJobJson" => submit2018::json(v1, &job()).await,
        "submitjob" => submit2018::json(v1, &submit2018::from_positional(&args)).await,
        "runturbojson" => submit2018::turbo(v1, &job(), Kind::TurboV1).await,
        "runturbojsonv2" => submit2018::turbo(v1, &job(), Kind::TurboV2).await,
        "runturbo" => submit2018::turbo(v1, &submit2018::from_positional(&args), Kind::TurboV1).await,
        "job" => job_command(v1, &text(&args, "command")?, &text(&args, "jobId")?).await,
        "job-wait" => job_wait(v1, &text(&args, "jobId")?, args.get("timeout")).await,
        "job-stats" => {
            let view = view_2018(v1, &text(&args, "jobId")?).await?;
            Ok(if args.get("raw") == Some(&json!(true)) {
                json!(view)
            } else {
                result2018::stats(&view)
            }
            .into())
        }
        "status" => status(v1).await.map(Reply::from),
        "queues" => queues(v1).await.map(Reply::from),
        "jobs" => ids(v1, None).await.map(|i| json!(i).into()),
        "pending" => ids(v1, Some(JobState::Queued)).await.map(|i| json!(i).into()),
        "jobs-pending-delete" => delete_pending(v1).await.map(Reply::from),
        "deleteAllJobs" => delete_all(v1).await.map(Reply::from),
        "remove-all-workers-and-jobs" => delete_all(v1).await.map(|_| json!(true).into()),
        "status-workers" => Ok(json!(v1.workers().await?.workers).into()),
        "test-jobs" => Ok(json!([]).into()),
        "serverversion" => Ok(
            json!({"npm": null, "git": null, "compiler": "rustc", "compile_time": null,
                                     "VERSION": env!("CARGO_PKG_VERSION")})
            .into(),
        ),
        _ => Ok(definitions()["methods"].clone().into()),
    }
}

/// 2018's answer for an unknown job (the same words, the same 404).
fn no_entry(e: V1Error) -> RpcError {
    match e {
        V1Error::Api { status, body, .. } if status == StatusCode::NOT_FOUND => {
            RpcError::http(StatusCode::NOT_FOUND, "No entry found for that jobId").with_data(json!(body.error))
        }
        e => e.into(),
    }
}

/// The v1 view of a job, 404 in 2018's words.
pub async fn view_2018(v1: &V1, id: &str) -> Result<JobView, RpcError> {
    v1.job(id).await.map_err(no_entry)
}

/// `job <command> <jobId>`. `kill` cancels and keeps the job (its result says `killed`);
/// `remove` deletes it. Both answer `true`, or `false` for an unknown job (200, as 2018).
async fn job_command(v1: &V1, command: &str, id: &str) -> Result<Reply, RpcError> {
    let known = |r: Result<(), V1Error>| match r {
        Ok(()) => Ok(json!(true).into()),
        Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(json!(false).into()),
        Err(e) => Err(RpcError::from(e)),
    };
    match command {
        "kill" => return known(v1.cancel(id).await.map(drop)),
        "remove" => return known(v1.delete(id).await),
        "exitcode" => {
            return match v1.job(id).await {
                Ok(v) => Ok(json!(v.exit_code).into()),
                Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(Value::Null.into()),
                Err(e) => Err(e.into()),
            };
        }
        "status" | "result" | "definition" | "stats" | "time" => {}
        other => {
            return Err(RpcError::invalid_params(format!(
                "Unrecognized job subcommand={other}: one of status, result, exitcode, definition, stats, time, kill, remove"
            )));
        }
    }
    let view = view_2018(v1, id).await?;
    Ok(match command {
        "status" => json!(result2018::job_status(&view)),
        "definition" => result2018::definition(&view),
        "stats" => result2018::stats(&view),
        "time" => result2018::time(&view),
        _ if !result2018::ended(&view) => {
            return Err(
                RpcError::http(StatusCode::NOT_FOUND, "No result yet: the job has not finished")
                    .with_data(json!({"jobId": id, "status": result2018::job_status(&view)})),
            );
        }
        _ => return Ok(result2018::job_result(v1, &view).await?.into()),
    }
    .into())
}

/// `job-wait <jobId> [timeout ms]`.
async fn job_wait(v1: &V1, id: &str, timeout: Option<&Value>) -> Result<Reply, RpcError> {
    let ms = match timeout {
        None | Some(Value::Null) => submit2018::WAIT_MS,
        Some(t) => t
            .as_u64()
            .filter(|t| *t > 0)
            .ok_or_else(|| RpcError::invalid_params("timeout must be a whole number of milliseconds above 0"))?,
    };
    let view = submit2018::wait_ended(v1, id, std::time::Duration::from_millis(ms))
        .await
        .map_err(|e| match e.code {
            404 => RpcError::http(StatusCode::NOT_FOUND, "No entry found for that jobId"),
            _ => e,
        })?;
    submit2018::ended_reply(v1, &view).await
}

/// Views of the caller's jobs (of one state), newest first, at most [`MAX_LISTED`].
async fn views(v1: &V1, status: Option<JobState>) -> Result<Vec<JobView>, RpcError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = v1
            .list(&ListQuery {
                status,
                limit: Some(1000),
                cursor: cursor.as_deref(),
            })
            .await?;
        out.extend(page.jobs);
        cursor = page.next_cursor;
        if cursor.is_none() || out.len() >= MAX_LISTED {
            out.truncate(MAX_LISTED);
            return Ok(out);
        }
    }
}

async fn ids(v1: &V1, status: Option<JobState>) -> Result<Vec<String>, RpcError> {
    Ok(views(v1, status).await?.into_iter().map(|v| v.job_id).collect())
}

/// `queues`: bull's counts from v1's depths. DCC counts no finished jobs per queue: `completed`,
/// `failed` and `delayed` are 0.
async fn queues(v1: &V1) -> Result<Value, RpcError> {
    let q = v1.queues().await?;
    let counts = |d: &QueueDepth| json!({"waiting": d.queued + d.fast_queued, "active": d.running, "completed": 0, "failed": 0, "delayed": 0});
    Ok(json!({"cpu": counts(&q.cpu), "gpu": counts(&q.gpu)}))
}

/// `status` (`SystemStatus`): queues, the live workers with the jobs each runs, running jobs.
async fn status(v1: &V1) -> Result<Value, RpcError> {
    let running = views(v1, Some(JobState::Running)).await?;
    let workers: Vec<Value> = v1
        .workers()
        .await?
        .workers
        .into_iter()
        .map(|w| {
            let jobs: Vec<&str> = running
                .iter()
                .filter(|j| j.worker_id.as_deref() == Some(w.id.as_str()))
                .map(|j| j.job_id.as_str())
                .collect();
            let w = json!(w);
            json!({"id": w["id"], "cpus": w["cpus"], "gpus": w["gpus"], "status": w["health"],
                   "starts": [w["startedAt"]], "lastJobTime": w["idleSince"], "jobs": jobs, "finished": null})
        })
        .collect();
    Ok(json!({
        "queues": queues(v1).await?,
        "servers": null,
        "workers": workers,
        "jobs": running.iter().map(|j| &j.job_id).collect::<Vec<_>>(),
    }))
}

/// Deletes each of `jobs`; `{id: "OK" | why not}`.
async fn delete_each(v1: &V1, jobs: &[JobView]) -> Map<String, Value> {
    let mut out = Map::new();
    for j in jobs {
        let said = match v1.delete(&j.job_id).await {
            Ok(()) => "OK".to_string(),
            Err(e) => format!("Failed: {}", RpcError::from(e).message),
        };
        out.insert(j.job_id.clone(), json!(said));
    }
    out
}

async fn delete_pending(v1: &V1) -> Result<Value, RpcError> {
    let pending = views(v1, Some(JobState::Queued)).await?;
    Ok(Value::Object(delete_each(v1, &pending).await))
}

/// `deleteAllJobs`: every queued and running job of the fleet, deleted. Admin keys only.
async fn delete_all(v1: &V1) -> Result<Value, RpcError> {
    if !v1.who.is_admin() {
        return Err(RpcError::http(
            StatusCode::FORBIDDEN,
            "deleteAllJobs needs an admin key",
        ));
    }
    let pending = views(v1, Some(JobState::Queued)).await?;
    let running = views(v1, Some(JobState::Running)).await?;
    delete_each(v1, &pending).await;
    delete_each(v1, &running).await;
    Ok(json!({"total": pending.len() + running.len(), "pending": pending.len(), "running": running.len()}))
}
