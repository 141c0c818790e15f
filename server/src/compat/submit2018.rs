//! Submitting 2018 jobs through v1: JSON (`submitJobJson`, `submitjob`), multipart
//! (`dockercloudcompute.run`), turbo (`runturbojson*` onto `POST /api/v1/run`), and waiting.

use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use dcc_client::{Body, Submitted};
use dcc_shared::job::JobView;
use serde_json::{Map, Value, json};

use super::client::{V1, V1Error};
use super::envelope::{self, Reply, RpcError};
use super::job2018::{self, Kind, Mapped};
use super::result2018;

/// 2018's longest wait (`wait: true`, `job-wait` without a timeout): 24 h.
pub const WAIT_MS: u64 = 86_400_000;

/// A 2018 job object from positional `submitjob` / `runturbo` arguments.
pub fn from_positional(args: &Map<String, Value>) -> Value {
    let mut job = Map::new();
    let mut params = Map::new();
    for (k, v) in args.iter().filter(|(_, v)| !v.is_null()) {
        match k.as_str() {
            "cpus" | "maxDuration" => params.insert(k.clone(), v.clone()),
            _ => job.insert(k.clone(), v.clone()),
        };
    }
    if !params.is_empty() {
        job.insert("parameters".into(), Value::Object(params));
    }
    Value::Object(job)
}

fn mapped(v1: &V1, raw: &Value, kind: Kind) -> Result<Mapped, RpcError> {
    job2018::map(raw, kind, v1.state().config.limits.max_duration_secs)
}

/// The v1 request of a mapped job: `wait` when the client waits (v1 then refuses at once a job
/// no live worker could run).
fn v1_job(m: &Mapped) -> Value {
    let mut job = m.job.clone();
    if m.wait {
        job["wait"] = json!(true);
    }
    job
}

/// `submitJobJson`: `{jobId}`, or with `wait` the JobResult once it ends.
pub async fn json(v1: &V1, raw: &Value) -> Result<Reply, RpcError> {
    let m = mapped(v1, raw, Kind::Standard)?;
    let outcome = v1.submit(&v1_job(&m)).await;
    submitted(v1, &m, outcome).await
}

/// The answer to a standard submission.
async fn submitted(v1: &V1, m: &Mapped, outcome: Result<Submitted, V1Error>) -> Result<Reply, RpcError> {
    match outcome {
        Ok(_) if !m.wait => Ok(json!({"jobId": m.id}).into()),
        Ok(Submitted::Ended(view)) => ended_reply(v1, &view).await,
        // v1 waits at most DCC_MAX_WAIT; 2018 clients were promised 24 h. The same job
        // submitted before is answered as it is, without a wait: wait for it here.
        Ok(Submitted::Queued(_) | Submitted::Existing(_)) => {
            let view = wait_ended(v1, &m.id, Duration::from_millis(WAIT_MS)).await?;
            ended_reply(v1, &view).await
        }
        Err(e) if m.wait && e.is("WAIT_TIMEOUT") => {
            let view = wait_ended(v1, &m.id, Duration::from_millis(WAIT_MS)).await?;
            ended_reply(v1, &view).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The JobResult of an ended job; HTTP 400 when its image does not exist (as 2018 answered).
pub async fn ended_reply(v1: &V1, view: &JobView) -> Result<Reply, RpcError> {
    let value = result2018::job_result(v1, view).await?;
    let status = if result2018::image_unknown(view) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(Reply { value, status })
}

/// The view of job `id` once it ended, waiting at most `total` in v1 long-polls of at most
/// `DCC_MAX_WAIT` each. Past `total`: 504 with 2018's "Job Timeout".
pub async fn wait_ended(v1: &V1, id: &str, total: Duration) -> Result<JobView, RpcError> {
    let deadline = Instant::now() + total;
    let longest = v1.state().config.max_wait.as_secs().max(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let secs = left.as_secs().clamp(1, longest);
        match v1.wait(id, secs).await {
            Ok(Some(view)) => return Ok(view),
            Ok(None) if Instant::now() + Duration::from_millis(100) < deadline => {}
            Ok(None) => {
                return Err(
                    RpcError::http(StatusCode::GATEWAY_TIMEOUT, "Job Timeout").with_data(json!({
                        "code": "WAIT_TIMEOUT", "jobId": id, "timeout": total.as_millis() as u64,
                    })),
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `runturbojson` / `runturbojsonv2` / `runturbo`: runs the job on `POST /api/v1/run` and answers
/// the turbo result. 2018 kept nothing of a turbo job: the fast job is deleted once answered.
pub async fn turbo(v1: &V1, raw: &Value, kind: Kind) -> Result<Reply, RpcError> {
    let m = mapped(v1, raw, kind)?;
    let answer = v1.run(&m.job).await?;
    let result = result2018::turbo(answer, &m, kind);
    if let Err(e) = v1.delete(&m.id).await {
        tracing::warn!(job_id = m.id, error = %e, "could not delete an answered turbo job; it expires with DCC_FAST_RESULT_TTL");
    }
    Ok(result.into())
}

/// The method a multipart submission calls.
const MULTIPART_METHOD: &str = "dockercloudcompute.run";

/// A multipart submission (`POST /v1` or `/api/rpc`): a `jsonrpc` part first with
/// `dockercloudcompute.run` and the job as `params` (or a `submitJobJson`/`submitjob` call), then one input per part, named by its field
/// name. The parts are streamed on into a v1 multipart submission (a `job` part first), so large
/// files never sit in memory. Returns the call's id for the envelope.
pub async fn multipart(v1: &V1, req: Request) -> (Value, Result<Reply, RpcError>) {
    let mut mp = match Multipart::from_request(req, &()).await {
        Ok(mp) => mp,
        Err(e) => {
            return (
                Value::Null,
                Err(RpcError::invalid_request(format!("bad multipart body: {e}"))),
            );
        }
    };
    let call = match first_part(v1, &mut mp).await {
        Ok(c) => c,
        Err(e) => return (Value::Null, Err(e)),
    };
    let id = call.id.clone();
    let m = match multipart_job(call).and_then(|raw| mapped(v1, &raw, Kind::Standard)) {
        Ok(m) => m,
        Err(e) => return (id, Err(e)),
    };
    let boundary = format!("dcc2018{}", uuid::Uuid::new_v4().simple());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let head = format!(
        "--{boundary}\r\ncontent-disposition: form-data; name=\"job\"\r\ncontent-type: application/json\r\n\r\n{}\r\n",
        v1_job(&m)
    );
    tokio::spawn(forward_parts(mp, tx, head, boundary.clone()));
    let body = Body::Stream(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })));
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let outcome = v1.submit_multipart(&content_type, body).await;
    (id, submitted(v1, &m, outcome).await)
}

/// Reads the `jsonrpc` part, which must come first (2018: a field before it is a 404).
async fn first_part(v1: &V1, mp: &mut Multipart) -> Result<envelope::Call, RpcError> {
    let not_first = |status| {
        RpcError::http(
            status,
            "The \"jsonrpc\" multipart key must be the FIRST entry, holding the JSON-RPC call; inputs follow it",
        )
    };
    let field = mp
        .next_field()
        .await
        .map_err(|e| RpcError::invalid_request(format!("reading the multipart body failed: {e}")))?;
    let mut field = match field {
        Some(f) if f.name() == Some("jsonrpc") => f,
        Some(f) if f.file_name().is_some() => return Err(not_first(StatusCode::BAD_REQUEST)),
        _ => return Err(not_first(StatusCode::NOT_FOUND)),
    };
    let limit = v1.state().config.max_body_bytes as usize;
    let mut text = Vec::new();
    while let Some(c) = field
        .chunk()
        .await
        .map_err(|e| RpcError::invalid_request(format!("reading the jsonrpc part failed: {e}")))?
    {
        text.extend_from_slice(&c);
        if text.len() > limit {
            return Err(RpcError::http(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the jsonrpc part is too large",
            ));
        }
    }
    // 2018 also took the call URL-encoded.
    let value: Value = serde_json::from_slice(&text)
        .or_else(|_| serde_json::from_str(&percent_decode(&String::from_utf8_lossy(&text))))
        .map_err(|e| RpcError::parse(format!("the jsonrpc part is not JSON: {e}")))?;
    envelope::from_value(value).map_err(|(_, e)| e)
}

/// The job of a multipart call: `dockercloudcompute.run` takes it as `params` (what 2018's
/// clients send); `submitJobJson` and `submitjob` take their usual params.
fn multipart_job(call: envelope::Call) -> Result<Value, RpcError> {
    if call.method == MULTIPART_METHOD {
        return match call.params {
            envelope::Params::Named(o) => Ok(Value::Object(o)),
            _ => Err(RpcError::invalid_params("params must be the job object")),
        };
    }
    let m = super::methods::find(&call.method)?;
    let args = m.named(call.params)?;
    match m.alias {
        "submitJobJson" => Ok(args.get("job").cloned().unwrap_or(Value::Null)),
        "submitjob" => Ok(from_positional(&args)),
        _ => Err(RpcError::no_method(format!(
            "a multipart submission calls {MULTIPART_METHOD} (or submitJobJson, submitjob), not {:?}",
            call.method
        ))),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Writes the v1 body: `head` (the `job` part), then each remaining 2018 part as an input part.
/// A read error is passed on, so the v1 submission fails and removes what it staged.
async fn forward_parts(
    mut mp: Multipart,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    head: String,
    boundary: String,
) {
    if tx.send(Ok(Bytes::from(head))).await.is_err() {
        return;
    }
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        if name.is_empty() || name.contains(['"', '\\', '\r', '\n']) {
            let _ = tx
                .send(Err(std::io::Error::other(format!(
                    "the part name {name:?} cannot name an input"
                ))))
                .await;
            return;
        }
        let part = format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n");
        if tx.send(Ok(Bytes::from(part))).await.is_err() {
            return;
        }
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(c)) => Ok(c),
                Ok(None) => break,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
        if tx.send(Ok(Bytes::from_static(b"\r\n"))).await.is_err() {
            return;
        }
    }
    let _ = tx.send(Ok(Bytes::from(format!("--{boundary}--\r\n")))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_arguments_make_a_job() {
        let mut args = Map::new();
        args.insert("image".into(), json!("img"));
        args.insert("command".into(), json!(["ls"]));
        args.insert("cpus".into(), json!(2));
        args.insert("maxDuration".into(), json!(30));
        args.insert("wait".into(), Value::Null);
        let job = from_positional(&args);
        assert_eq!(
            job,
            json!({"image": "img", "command": ["ls"], "parameters": {"cpus": 2, "maxDuration": 30}})
        );
        assert_eq!(percent_decode("%7B%22a%22%3A1%7D+x"), "{\"a\":1} x");
    }
}
