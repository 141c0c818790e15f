//! Fast jobs: `POST /api/v1/run`. Inline inputs only, kept in Redis (never storage); the job
//! jumps ahead of every standard job of its queue, and the answer carries stdout, stderr and the
//! outputs inline once it ends. Leases, cancel and limits are those of standard jobs; a finished
//! fast job and its result leave Redis after `DCC_FAST_RESULT_TTL`.

use axum::Json;
use axum::extract::{Request, State};
use base64::Engine;
use dcc_shared::clock::now_ms;
use dcc_shared::job::spec::{Encoding, InputSource, SpecError};
use dcc_shared::job::{JobId, JobRecord, JobRequest, Lane};
use dcc_shared::storage::paths;
use futures_util::TryStreamExt;

use crate::availability;
use crate::error::{ApiError, Code, ErrorBody};
use crate::state::AppState;
use crate::submit::{Staging, enqueue_staged, read_body, stage_declared};
use crate::wait;
pub use dcc_shared::api::FastAnswer;

/// `POST /api/v1/run`.
#[utoipa::path(post, path = "/api/v1/run", tag = "jobs", operation_id = "runFast", summary = "Run a fast job and answer with its results",
    request_body(content = JobRequest, description = "A job with inline inputs only", content_type = "application/json"),
    responses((status = 200, description = "The ended job with stdout, stderr and outputs inline", body = FastAnswer),
        (status = 400, description = "INVALID_JSON or INVALID_JOB (e.g. a `url` input)", body = ErrorBody),
        (status = 409, description = "ID_CONFLICT", body = ErrorBody),
        (status = 403, description = "ORIGIN_NOT_ALLOWED: sent by a web page of an origin not in DCC_ALLOWED_ORIGINS; FORBIDDEN: a read-only key", body = ErrorBody),
        (status = 413, description = "TOO_LARGE: inline inputs over DCC_FAST_MAX_INLINE_BYTES", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: not application/json", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED: the key's tenant is over its submits per second; QUOTA_EXCEEDED: it has its quota of queued + running (or fast) jobs (both with `Retry-After`)", body = ErrorBody),
        (status = 422, description = "UNSCHEDULABLE: larger than the largest worker the operator declared (DCC_MAX_CPUS, DCC_MAX_GPUS, DCC_MAX_MEMORY_MB)", body = ErrorBody),
        (status = 503, description = "NO_WORKER: no live, non-draining worker of the job's queue can take it; BUSY: fast-job data in Redis is at DCC_FAST_MAX_REDIS_BYTES (both with `Retry-After`); or UNAVAILABLE", body = ErrorBody),
        (status = 504, description = "WAIT_TIMEOUT: not ended in time; the body carries `jobId`", body = ErrorBody)))]
pub async fn run(State(state): State<AppState>, req: Request) -> Result<Json<FastAnswer>, ApiError> {
    let who = crate::tenants::of(&req);
    crate::tenants::admit(&state, &who).await?;
    crate::submit::require_json(&req)?;
    let body = read_body(&state, req).await?;
    let valid = JobRequest::from_json(&body)?.validate(&state.config.limits)?;
    crate::submit::check_notify(&state, &valid.spec)?;
    if !valid.spec.depends_on.is_empty() || valid.spec.array.is_some() {
        let field = if valid.spec.array.is_some() {
            "array"
        } else {
            "dependsOn"
        };
        return Err(SpecError::Invalid {
            field: Some(field.into()),
            message: "fast jobs are single jobs that run at once: no array, no dependencies; submit a standard job"
                .into(),
        }
        .into());
    }
    // Two independent reads of Redis on the answer's path: at once.
    let (available, fast_bytes) = tokio::join!(availability::require(&state, &valid.spec), state.queue.fast_bytes());
    available?;
    let mut inline = 0u64;
    for (i, (_, source)) in valid.inputs.iter().enumerate() {
        match source {
            InputSource::Inline(b) => inline += b.len() as u64,
            InputSource::Url(_) => {
                return Err(SpecError::Invalid {
                    field: Some(format!("inputs[{i}].url")),
                    message: "fast jobs take inline inputs only; submit a standard job for url inputs".into(),
                }
                .into());
            }
        }
    }
    // Admitted only with room left for its inputs and a full answer (the blob script caps
    // what concurrent jobs store in any case).
    let budget = state.config.fast_max_redis_bytes;
    let headroom = state.config.fast_max_output_bytes.min(budget / 2);
    if fast_bytes? + inline + headroom > budget {
        return Err(dcc_shared::storage::StorageError::Full {
            what: format!("the {budget} byte budget for fast-job data in Redis (DCC_FAST_MAX_REDIS_BYTES)"),
        }
        .into());
    }
    let limit = state.config.fast_max_inline_bytes;
    if inline > limit {
        return Err(SpecError::TooLarge {
            field: Some("inputs".into()),
            message: format!(
                "fast job inputs total {inline} bytes, over the {limit} byte limit (DCC_FAST_MAX_INLINE_BYTES); submit a standard job"
            ),
        }
        .into());
    }
    let id = match &valid.id {
        Some(client) => who.scoped(client)?,
        None => state.queue.new_id(&who.tenant),
    };
    let mut staging = Staging::new(state.blobs.clone(), &id, state.config.max_job_input_bytes);
    if let Err(e) = stage_declared(&state, &mut staging, &valid).await {
        staging.discard().await;
        return Err(e);
    }
    enqueue_staged(&state, &who, &id, &valid.spec, staging, Lane::Fast).await?;
    let record = match wait::until_ended(&state, &id, state.config.max_wait, wait::IfStuck::Answer).await {
        Ok(r) => r,
        Err(e) if e.code == Code::NoWorker => {
            // Nobody waits for its answer any more: it must not run later.
            withdraw(&state, &id).await;
            return Err(who.error(e));
        }
        Err(e) => return Err(who.error(e)),
    };
    Ok(Json(answer(&state, &who, &record).await?))
}

/// Cancels a fast job whose client is answered without it (best effort: a failure leaves it
/// queued, to run and expire like any fast job).
async fn withdraw(state: &AppState, id: &JobId) {
    let Ok(Some(job)) = state.queue.get(id).await else {
        return;
    };
    if let Err(e) = state
        .queue
        .cancel(&job, state.config.retention().of(job.lane), now_ms())
        .await
    {
        tracing::warn!(job_id = %id, error = %e, "could not cancel a fast job left without a worker");
    }
}

/// The job view with stdout, stderr and outputs inline.
async fn answer(state: &AppState, who: &crate::tenants::Principal, job: &JobRecord) -> Result<FastAnswer, ApiError> {
    let mut view = who.view(job.view());
    let mut logs = [String::new(), String::new()];
    let read = |name: String| async move {
        match state.storage_for(job).get(&name).await? {
            Some(obj) => {
                let chunks: Vec<bytes::Bytes> = obj
                    .body
                    .try_collect()
                    .await
                    .map_err(|e| ApiError::unavailable(format!("reading a fast job's result failed: {e}")))?;
                Ok::<_, ApiError>(Some(chunks.concat()))
            }
            None => Ok(None),
        }
    };
    let log = |stream| async move {
        if job.attempt == 0 {
            return Ok(Vec::new());
        }
        Ok::<_, ApiError>(
            read(paths::log(&job.id, job.attempt, stream))
                .await?
                .unwrap_or_default(),
        )
    };
    // Both at once: each is a read of Redis on the answer's path.
    let (out, err) = tokio::try_join!(log("stdout"), log("stderr"))?;
    for (bytes, text) in [out, err].into_iter().zip(logs.iter_mut()) {
        // Valid UTF-8 (the usual case) becomes the text without a copy: a log may be 16 MiB.
        *text = String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    }
    for o in view.outputs.iter_mut() {
        let bytes = read(paths::output(&job.id, job.attempt, &o.name))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    Code::Internal,
                    format!("output {} of fast job {} is missing", o.name, job.id),
                )
            })?;
        o.value = Some(base64::engine::general_purpose::STANDARD.encode(&bytes));
        o.encoding = Some(Encoding::Base64);
    }
    let [stdout, stderr] = logs;
    Ok(FastAnswer {
        job: view,
        stdout,
        stderr,
    })
}
