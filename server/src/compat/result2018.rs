//! 2018 answers made from v1 job views: `JobResult` (`result.json`, reference §2.6), the turbo
//! results (§2.7), `job status`, `stats`, `definition` and `time`.
//!
//! Status names are mapped, not copied: `success` keeps its 2018 meaning ("the container ran";
//! the exit code says how it went), `failed` is an infrastructure failure (2018 wrote `success`
//! to Redis for those), `killed` a cancel that stays observable (2018 deleted killed jobs).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use dcc_client::Log;
use dcc_shared::api::FastAnswer;
use dcc_shared::job::{JobState, JobView, OutputView, StatsView};
use serde_json::{Value, json};

use super::client::{V1, V1Error, job_path};
use super::envelope::Payload;
use super::job2018::{Kept, Kind, META_KEY, Mapped};

/// 2018's `job status`: `pending`, `working` or `finished`.
pub fn job_status(view: &JobView) -> &'static str {
    match view.status {
        JobState::Queued => "pending",
        JobState::Running => "working",
        _ => "finished",
    }
}

/// Whether the job has ended.
pub fn ended(view: &JobView) -> bool {
    view.status.is_terminal()
}

fn error_code(view: &JobView) -> &str {
    view.error.as_ref().map_or("", |e| e.code.as_str())
}

/// 2018's finished status of an ended job.
pub fn finished_status(view: &JobView) -> &'static str {
    match (view.status, error_code(view)) {
        (JobState::Succeeded, _) | (JobState::Failed, "NONZERO_EXIT") => "success",
        (JobState::Failed, "WORKER_LOST") => "TooManyFailedAttempts",
        (JobState::Failed, _) => "failed",
        (JobState::TimedOut, _) => "timeout",
        (JobState::Cancelled, _) => "killed",
        _ => "none",
    }
}

/// Whether the job failed because its image does not exist (2018's `Docker_Image_Unknown`).
pub fn image_unknown(view: &JobView) -> bool {
    error_code(view) == "IMAGE_NOT_FOUND"
}

/// The result's `error`: none when the container ran (whatever its exit code), 2018's
/// `Docker_Image_Unknown` for a missing image, else the v1 error (`{code, message}`).
pub fn error(view: &JobView) -> Value {
    match &view.error {
        None => Value::Null,
        Some(e) if e.code == "NONZERO_EXIT" => Value::Null,
        Some(e) if e.code == "IMAGE_NOT_FOUND" => json!({
            "code": -32602,
            "message": "Docker_Image_Unknown",
            "data": {"docker_image_name": view.image, "error": e.message},
        }),
        Some(e) => json!(e),
    }
}

/// The job's definition: as its 2018 client sent it (input values left out), or for a job
/// submitted through v1, what its view tells.
pub fn definition(view: &JobView) -> Value {
    match Kept::of(view).definition {
        Some(d) => d,
        None => {
            let mut meta = view.meta.clone();
            meta.remove(META_KEY);
            json!({"id": view.job_id, "image": view.image, "meta": meta})
        }
    }
}

/// Input names of the definition.
fn input_names(def: &Value) -> Vec<Value> {
    match &def["inputs"] {
        Value::Array(a) => a.iter().map(|b| b["name"].clone()).collect(),
        Value::Object(o) => o.keys().map(|k| json!(k)).collect(),
        _ => Vec::new(),
    }
}

/// Most bytes of a log a 2018 answer carries inline, as its array of lines (`appendStdOut`,
/// turbo results). The answer takes up to 3 bytes a byte of log (16 MiB of newlines are 48 MB of
/// `"",`), so this bounds what one call holds whatever the log; a longer log is cut after a
/// whole line and a last line says so (with the whole log's URL where it is kept).
pub const MAX_INLINE_LOG_BYTES: usize = 16 << 20;

fn cut_note() -> String {
    format!("[dcc: log cut at {MAX_INLINE_LOG_BYTES} bytes in this answer;")
}

/// Cuts `text` to at most `max` bytes, after its last whole line there (or at a character);
/// whether it was cut.
fn cut(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = text.as_bytes()[..max]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(max, |i| i + 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// The 2018 `JobResult` of a job (meant for ended ones; a running one gives its state so far).
/// Logs asked for inline (`appendStdOut`, `appendStdErr`) are arrays of lines, written from the
/// text as the answer is serialized ([`Payload`]).
pub async fn job_result(v1: &V1, view: &JobView) -> Result<Payload, V1Error> {
    let id = view.job_id.as_str();
    let kept = Kept::of(view);
    let mut logs = Vec::new();
    let mut urls = [Value::Null, Value::Null];
    let streams = [
        (Log::Stdout, kept.append_std_out, &view.stdout_url),
        (Log::Stderr, kept.append_std_err, &view.stderr_url),
    ];
    for ((log, inline, url), slot) in streams.into_iter().zip(urls.iter_mut()) {
        match (view.attempt > 0, inline) {
            (false, _) => {}
            (true, true) => {
                let (mut text, cut) = v1.log_head(id, log, MAX_INLINE_LOG_BYTES).await?;
                if cut {
                    text.push_str(&format!("{} the whole log: {}]", cut_note(), v1.url(url)));
                }
                logs.push((log.as_str(), text));
            }
            (true, false) => *slot = json!(v1.url(url)),
        }
    }
    let def = kept.definition.unwrap_or_else(|| definition(view));
    let outputs: Vec<&str> = view.outputs.iter().map(|o| o.name.as_str()).collect();
    let [stdout, stderr] = urls;
    let value = json!({
        "jobId": id,
        "status": finished_status(view),
        "exitCode": view.exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "resultJson": v1.url(&result_json_path(id)),
        "inputsBaseUrl": Value::Null,
        "outputsBaseUrl": v1.url(&job_path(id, "/outputs/")),
        "inputs": input_names(&def),
        "outputs": outputs,
        "error": error(view),
        "definition": def,
        "stats": stats(view),
    });
    Ok(Payload { value, logs })
}

/// Where the adapter serves a job's `result.json`.
pub fn result_json_path(id: &str) -> String {
    job_path(id, "/result.json").replacen("/api/v1/jobs/", "/v1/results/", 1)
}

/// A duration as 2018 printed them for people.
pub fn pretty_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn pretty(ms: Option<i64>) -> Value {
    ms.map(|ms| json!(pretty_ms(ms))).unwrap_or(Value::Null)
}

/// 2018's pretty stats (`job stats`, `result.json`'s `stats`). DCC keeps timings of the last
/// attempt only: `attempts` holds that one.
pub fn stats(view: &JobView) -> Value {
    let s = view.stats.as_ref();
    let ms = |f: fn(&StatsView) -> u64| s.map(|s| f(s) as i64);
    let attempt = (view.attempt > 0).then(|| {
        json!({
            "attempt": view.attempt,
            "workerId": view.worker_id,
            "enqueued": view.created_at,
            "dequeued": view.started_at,
            "pending": pretty(s.and_then(|s| s.queued_ms)),
            "inputs": pretty(ms(|s| s.inputs_ms)),
            "image": pretty(ms(|s| s.pull_ms)),
            "inputsAndImage": pretty(ms(|s| s.inputs_ms + s.pull_ms)),
            "container": pretty(ms(|s| s.create_ms + s.start_ms + s.run_ms)),
            "outputsAndLogs": pretty(ms(|s| s.outputs_ms)),
            "exitCode": view.exit_code,
            "error": view.error,
        })
    });
    json!({
        "recieved": view.created_at,
        "uploaded": view.created_at,
        "finished": view.finished_at,
        "duration": pretty(s.and_then(|s| s.total_ms)),
        "error": view.error,
        "attempts": attempt.into_iter().collect::<Vec<_>>(),
    })
}

/// `job time` (broken in 2018): when the last attempt started and how long the job took.
pub fn time(view: &JobView) -> Value {
    json!({"start": view.started_at, "duration": pretty(view.stats.as_ref().and_then(|s| s.total_ms))})
}

/// A turbo result from the answer of `POST /api/v1/run`: V2 (outputs as a list, base64 unless
/// `forceUtf8Outputs`) or V1 (outputs as `{name: text}`). The logs are taken out of the answer,
/// not copied, and written as arrays of lines ([`Payload`]).
pub fn turbo(answer: FastAnswer, m: &Mapped, kind: Kind) -> Payload {
    let FastAnswer { job, stdout, stderr } = answer;
    // Fast jobs' logs are bounded by DCC_FAST_MAX_OUTPUT_BYTES, which an operator may raise:
    // the answer stays within the adapter's bound regardless. (The job is deleted once
    // answered: there is no whole log to point at.)
    let bounded = |mut s: String| {
        if cut(&mut s, MAX_INLINE_LOG_BYTES) {
            s.push_str(&format!("{} the job is not kept]", cut_note()));
        }
        s
    };
    let logs = vec![("stdout", bounded(stdout)), ("stderr", bounded(stderr))];
    let s = job.stats.as_ref();
    let ms = |f: fn(&StatsView) -> u64| pretty(s.map(|s| f(s) as i64));
    let mut r = json!({
        "id": job.job_id,
        "stdout": Value::Null,
        "stderr": Value::Null,
        "exitCode": job.exit_code,
        "outputs": turbo_outputs(&job.outputs, m, kind),
        "stats": {
            "ensureImage": ms(|s| s.pull_ms),
            "copyInputs": ms(|s| s.inputs_ms),
            "containerCreation": ms(|s| s.create_ms + s.start_ms),
            "containerExecution": ms(|s| s.run_ms),
            "copyLogs": ms(|s| s.outputs_ms),
            "copyOutputs": ms(|s| s.outputs_ms),
            "total": pretty(s.and_then(|s| s.total_ms)),
        },
    });
    let e = error(&job);
    if !e.is_null() {
        r["error"] = e;
    }
    Payload { value: r, logs }
}

/// A turbo result's outputs from the fast answer's (`value` base64): V1 `{name: text}`; V2 a
/// list, base64 or (`forceUtf8Outputs`) text; empty with `ignoreOutputs`.
fn turbo_outputs(files: &[OutputView], m: &Mapped, kind: Kind) -> Value {
    fn value(o: &OutputView) -> &str {
        o.value.as_deref().unwrap_or_default()
    }
    let text = |o: &OutputView| {
        let bytes = STANDARD.decode(value(o)).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let files = if m.ignore_outputs { &[][..] } else { files };
    match kind {
        Kind::TurboV1 => Value::Object(files.iter().map(|o| (o.name.clone(), json!(text(o)))).collect()),
        _ if m.force_utf8 => files
            .iter()
            .map(|o| json!({"name": o.name, "value": text(o), "encoding": "utf8"}))
            .collect(),
        _ => files
            .iter()
            .map(|o| json!({"name": o.name, "value": value(o), "encoding": "base64"}))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_onto_the_2018_names() {
        let v = |status: &str, code: &str| {
            let mut view: JobView = serde_json::from_value(json!({
                "jobId": "j", "status": status, "queue": "cpu", "fast": false, "attempt": 1,
                "maxAttempts": 3, "createdAt": "2026-12-02T10:00:00Z", "startedAt": null,
                "finishedAt": null, "exitCode": null, "error": null, "workerId": null, "image": "i",
                "imageDigest": null, "stdoutUrl": "/o", "stderrUrl": "/e", "outputs": [],
                "stats": null, "meta": {}}))
            .unwrap();
            view.error = (!code.is_empty()).then(|| dcc_shared::job::JobError {
                code: code.into(),
                message: "m".into(),
            });
            view
        };
        assert_eq!(job_status(&v("queued", "")), "pending");
        assert_eq!(job_status(&v("running", "")), "working");
        assert_eq!(job_status(&v("cancelled", "")), "finished");
        assert_eq!(finished_status(&v("succeeded", "")), "success");
        assert_eq!(finished_status(&v("failed", "NONZERO_EXIT")), "success");
        assert_eq!(finished_status(&v("failed", "IMAGE_NOT_FOUND")), "failed");
        assert_eq!(finished_status(&v("failed", "WORKER_LOST")), "TooManyFailedAttempts");
        assert_eq!(finished_status(&v("timed_out", "TIMED_OUT")), "timeout");
        assert_eq!(finished_status(&v("cancelled", "")), "killed");
        assert_eq!(error(&v("failed", "NONZERO_EXIT")), Value::Null);
        assert_eq!(
            error(&v("failed", "IMAGE_NOT_FOUND"))["message"],
            "Docker_Image_Unknown"
        );
        assert_eq!(error(&v("failed", "CONTAINER_FAILED"))["code"], "CONTAINER_FAILED");
    }

    #[test]
    fn long_logs_are_cut_after_a_whole_line() {
        let mut t = "ab\ncd\nef".to_string();
        assert!(!cut(&mut t, 8));
        assert!(cut(&mut t, 7) && t == "ab\ncd\n");
        let mut t = "éééé".to_string();
        assert!(cut(&mut t, 3) && t == "é", "a character is never split");
    }

    #[test]
    fn durations_read_as_2018_printed_them() {
        assert_eq!(pretty_ms(12), "12ms");
        assert_eq!(pretty_ms(1234), "1.23s");
        assert_eq!(pretty_ms(125_000), "2m5s");
        assert_eq!(result_json_path("a b"), "/v1/results/a%20b/result.json");
    }
}
