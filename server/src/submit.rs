//! Submission: parse and validate, stage inputs to storage, then queue in one script.
//!
//! Inputs are staged under a per-submission prefix before the job exists in Redis. If anything
//! fails (bad input, storage or Redis down, a same-id conflict) that prefix is removed, so a
//! refused submission leaves nothing behind and a job never exists without its inputs.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::multipart::Field;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dcc_shared::clock::now_ms;
use dcc_shared::job::spec::{InputSource, MAX_INPUTS, SpecError, definition_hash, validate_input_name};
use dcc_shared::job::{JobId, JobRequest, JobSpec, JobState, Lane, StagedInput, ValidJob};
use dcc_shared::queue::enqueue::{Enqueued, NewJob};
use dcc_shared::storage::{ByteStream, Storage, paths};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::availability;
use crate::egress::error_chain;
use crate::error::{ApiError, Code, ErrorBody};
use crate::state::AppState;
use crate::tenants::Principal;
use crate::wait;
pub use dcc_shared::api::{Links, SubmitAnswer, SubmitOk};

/// Staged inputs of one submission, removed again unless the job is created.
pub struct Staging {
    storage: Arc<dyn Storage>,
    prefix: String,
    inputs: Vec<StagedInput>,
    /// Bytes the job's inputs may still take, all together (`DCC_MAX_JOB_INPUT_BYTES`).
    room: u64,
    /// That limit, for the error.
    total_limit: u64,
}

impl Staging {
    /// Staging for job `id` into `storage`, at most `total_limit` bytes of inputs in all.
    pub fn new(storage: Arc<dyn Storage>, id: &JobId, total_limit: u64) -> Self {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        Staging {
            storage,
            prefix: paths::inputs(id, &nonce[..12]),
            inputs: Vec::new(),
            room: total_limit,
            total_limit,
        }
    }

    /// Streams one input into storage, hashing it on the way.
    async fn put(&mut self, name: &str, body: ByteStream<'_>, limit: u64) -> Result<(), ApiError> {
        let hasher = Mutex::new(Sha256::new());
        let hashed: ByteStream<'_> = Box::pin(body.map(|chunk| {
            if let Ok(c) = &chunk {
                hasher.lock().unwrap_or_else(|p| p.into_inner()).update(c);
            }
            chunk
        }));
        let by_total = self.room < limit;
        let size = self
            .storage
            .put_stream(&format!("{}{}", self.prefix, name), hashed, limit.min(self.room))
            .await
            .map_err(|e| match e {
                dcc_shared::storage::StorageError::TooLarge { .. } if by_total => ApiError {
                    field: Some("inputs".into()),
                    ..ApiError::new(Code::TooLarge,
                        format!(
                            "the job's inputs are over the {} byte limit for all inputs together (DCC_MAX_JOB_INPUT_BYTES)",
                            self.total_limit
                        ),
                    )
                },
                dcc_shared::storage::StorageError::TooLarge { limit } => ApiError {
                    field: Some(format!("inputs.{name}")),
                    ..ApiError::new(Code::TooLarge,
                        format!("input {name:?} is over the {limit} byte limit"),
                    )
                },
                other => other.into(),
            })?;
        self.room = self.room.saturating_sub(size);
        let sha256 = hex_digest(hasher.into_inner().unwrap_or_else(|p| p.into_inner()));
        self.inputs.push(StagedInput {
            name: name.to_string(),
            sha256,
            size,
        });
        Ok(())
    }

    /// Removes everything staged so far.
    pub async fn discard(self) {
        if let Err(e) = self.storage.delete_prefix(&self.prefix).await {
            tracing::warn!(error = %e, prefix = self.prefix, "could not remove staged inputs");
        }
    }
}

fn hex_digest(h: Sha256) -> String {
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The multipart form of a submission. Documentation of the wire format only: the handler reads
/// the parts as a stream, in order.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct MultipartSubmission {
    /// The job JSON, as the first part. Every further part is an input file, named by its field
    /// name (plain quoted names; RFC 5987 `name*=` is not read).
    job: String,
}

/// `POST /api/v1/jobs`: JSON or multipart.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", operation_id = "submitJob", summary = "Submit a job (JSON or multipart)",
    request_body(description = "The job. As multipart: a `job` part with the JSON first, then one part per input file.",
        content((JobRequest = "application/json"), (MultipartSubmission = "multipart/form-data"))),
    responses(
        (status = 201, description = "Queued", body = SubmitAnswer),
        (status = 200, description = "With `wait: true`: the ended job; or the same id and definition: the existing job", body = SubmitOk),
        (status = 400, description = "INVALID_JSON, INVALID_JOB, INPUT_FETCH_FAILED or INVALID_REQUEST", body = ErrorBody),
        (status = 409, description = "ID_CONFLICT: the id holds another definition", body = ErrorBody),
        (status = 403, description = "ORIGIN_NOT_ALLOWED: sent by a web page of an origin not in DCC_ALLOWED_ORIGINS; FORBIDDEN: a read-only key", body = ErrorBody),
        (status = 413, description = "TOO_LARGE", body = ErrorBody),
        (status = 415, description = "UNSUPPORTED_MEDIA_TYPE: neither application/json nor multipart/form-data", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED: the key's tenant is over its submits per second; QUOTA_EXCEEDED: it has its quota of queued + running (or fast) jobs (both with `Retry-After`)", body = ErrorBody),
        (status = 422, description = "UNSCHEDULABLE: larger than the largest worker the operator declared (DCC_MAX_CPUS, DCC_MAX_GPUS, DCC_MAX_MEMORY_MB)", body = ErrorBody),
        (status = 503, description = "NO_WORKER (with `wait: true`): no live, non-draining worker of the job's queue can take it (with `Retry-After`; `jobId` when the job was already queued); or UNAVAILABLE", body = ErrorBody),
        (status = 504, description = "WAIT_TIMEOUT (with `wait: true`); the body carries `jobId`", body = ErrorBody)))]
pub async fn submit(state: axum::extract::State<AppState>, req: Request) -> Response {
    let who = crate::tenants::of(&req);
    if let Err(e) = crate::tenants::admit(&state, &who).await {
        return e.into_response();
    }
    let is_multipart = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let r = if is_multipart {
        submit_multipart(&state, &who, req).await
    } else {
        submit_json(&state, &who, req).await
    };
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Refuses a JSON body that does not say it is JSON: a cross-site form or `text/plain` fetch
/// cannot send `application/json` without a CORS preflight, which `origin` answers only for
/// allowed origins.
pub fn require_json(req: &Request) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        Code::UnsupportedMediaType,
        format!(
            "send the job as JSON with `Content-Type: application/json` (or as multipart/form-data), not {:?}",
            if ct.is_empty() { "no content type" } else { ct }
        ),
    ))
}

pub async fn read_body(state: &AppState, req: Request) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes as usize;
    axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
        ApiError::new(
            Code::TooLarge,
            format!(
                "the request body is over the {limit} byte limit (DCC_MAX_BODY_BYTES); send large files as multipart"
            ),
        )
    })
}

/// What both submit forms do once the job is valid: refuse a wait nothing can end, give the job
/// its stored id (the caller's own, scoped to its tenant, or a new one), and open its staging.
async fn admit_valid(state: &AppState, who: &Principal, valid: &ValidJob) -> Result<(JobId, Staging), ApiError> {
    check_notify(state, &valid.spec)?;
    if valid.wait {
        availability::require(state, &valid.spec).await?;
    }
    let id = match &valid.id {
        Some(client) => who.scoped(client)?,
        None => state.queue.new_id(&who.tenant),
    };
    let staging = Staging::new(state.storage.clone(), &id, state.config.max_job_input_bytes);
    Ok((id, staging))
}

async fn submit_json(state: &AppState, who: &Principal, req: Request) -> Result<Response, ApiError> {
    require_json(&req)?;
    let body = read_body(state, req).await?;
    let valid = JobRequest::from_json(&body)?.validate(&state.config.limits)?;
    let (id, mut staging) = admit_valid(state, who, &valid).await?;
    let staged = stage_declared(state, &mut staging, &valid).await;
    if let Err(e) = staged {
        staging.discard().await;
        return Err(e);
    }
    finalize(state, who, id, valid.spec, staging, valid.wait).await
}

/// A webhook needs this deployment's secret, and a URL the server may reach: an address literal
/// is checked here (names are checked when the delivery resolves them).
pub fn check_notify(state: &AppState, spec: &JobSpec) -> Result<(), ApiError> {
    let Some(n) = &spec.notify else { return Ok(()) };
    let invalid = |message: String| {
        ApiError::from(SpecError::Invalid {
            field: Some("notify.url".into()),
            message,
        })
    };
    if state.config.notify.secret.is_none() {
        return Err(invalid(
            "this deployment sends no webhooks: its operator has set no signing secret (DCC_NOTIFY_SECRET)".into(),
        ));
    }
    let url = reqwest::Url::parse(&n.url).map_err(|e| invalid(format!("notify.url is not a valid URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("notify.url has no host".into()));
    }
    state.notify_egress.check_url(&url).map_err(|e| invalid(e.to_string()))
}

/// Stages the inputs declared in the JSON (inline values and URLs).
pub async fn stage_declared(state: &AppState, staging: &mut Staging, valid: &ValidJob) -> Result<(), ApiError> {
    let limit = state.config.limits.max_input_bytes;
    for (i, (name, source)) in valid.inputs.iter().enumerate() {
        match source {
            InputSource::Inline(bytes) => {
                let b = Bytes::copy_from_slice(bytes);
                let body: ByteStream<'_> = Box::pin(futures_util::stream::once(async move { Ok(b) }));
                staging.put(name, body, limit).await?;
            }
            InputSource::Url(url) => {
                let field = format!("inputs[{i}].url");
                let fetch_err = |m: String| ApiError {
                    field: Some(field.clone()),
                    ..ApiError::new(Code::InputFetchFailed, m)
                };
                let parsed = reqwest::Url::parse(url).map_err(|e| {
                    ApiError::from(SpecError::Invalid {
                        field: Some(field.clone()),
                        message: format!("url is not a valid URL: {e}"),
                    })
                })?;
                state.egress.check_url(&parsed).map_err(|e| {
                    ApiError::from(SpecError::Invalid {
                        field: Some(field.clone()),
                        message: e.to_string(),
                    })
                })?;
                // Refusals by the resolver or the redirect policy come back as the request's
                // error; its chain holds our sentence and nothing the target said.
                let resp = state
                    .http
                    .get(parsed)
                    .send()
                    .await
                    .map_err(|e| fetch_err(format!("fetching {url} failed: {}", error_chain(&e))))?;
                if !resp.status().is_success() {
                    return Err(fetch_err(format!("fetching {url} answered HTTP {}", resp.status())));
                }
                if resp.content_length().is_some_and(|n| n > limit) {
                    return Err(ApiError {
                        field: Some(field),
                        ..ApiError::new(Code::TooLarge, format!("{url} is over the {limit} byte input limit"))
                    });
                }
                let body: ByteStream<'_> = Box::pin(resp.bytes_stream().map(|r| r.map_err(std::io::Error::other)));
                staging.put(name, body, limit).await.map_err(|e| {
                    if e.code == Code::InvalidRequest {
                        fetch_err(format!("fetching {url} broke off: {}", e.message))
                    } else {
                        e
                    }
                })?;
            }
        }
    }
    Ok(())
}

/// Multipart: a `job` part with the JSON first, then one part per input file, named by the
/// part's field name (or its file name when the field name is empty).
async fn submit_multipart(state: &AppState, who: &Principal, req: Request) -> Result<Response, ApiError> {
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("bad multipart body: {e}")))?;
    let mp_err = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(Code::InvalidRequest, format!("reading the multipart body failed: {e}"))
    };
    let first = mp.next_field().await.map_err(mp_err)?;
    let job_field = match first {
        Some(f) if f.name() == Some("job") => f,
        _ => {
            return Err(SpecError::Invalid {
                field: Some("job".into()),
                message: "a multipart submission must start with a part named `job` holding the job JSON".into(),
            }
            .into());
        }
    };
    let json = read_field(job_field, state.config.max_body_bytes).await?;
    let mut valid = JobRequest::from_json(&json)?.validate(&state.config.limits)?;
    let (id, mut staging) = admit_valid(state, who, &valid).await?;
    let result = async {
        stage_declared(state, &mut staging, &valid).await?;
        let limit = state.config.limits.max_input_bytes;
        while let Some(field) = mp.next_field().await.map_err(mp_err)? {
            let name = match field.name().filter(|n| !n.is_empty()) {
                Some(n) => n.to_string(),
                None => field.file_name().unwrap_or_default().to_string(),
            };
            validate_input_name(&name).map_err(|m| SpecError::Invalid {
                field: Some(format!("inputs.{name}")),
                message: m,
            })?;
            if valid.spec.inputs.contains(&name) {
                return Err(SpecError::Invalid {
                    field: Some(format!("inputs.{name}")),
                    message: format!("input name {name:?} is used twice"),
                }
                .into());
            }
            if valid.spec.inputs.len() >= MAX_INPUTS {
                return Err(SpecError::Invalid {
                    field: Some("inputs".into()),
                    message: format!("at most {MAX_INPUTS} inputs are allowed"),
                }
                .into());
            }
            staging.put(&name, field_stream(field), limit).await?;
            valid.spec.inputs.push(name);
        }
        Ok::<(), ApiError>(())
    }
    .await;
    if let Err(e) = result {
        staging.discard().await;
        return Err(e);
    }
    finalize(state, who, id, valid.spec, staging, valid.wait).await
}

fn field_stream(field: Field<'_>) -> ByteStream<'_> {
    Box::pin(futures_util::stream::unfold(field, |mut f| async move {
        match f.chunk().await {
            Ok(Some(c)) => Some((Ok(c), f)),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), f)),
        }
    }))
}

async fn read_field(mut field: Field<'_>, limit: u64) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    while let Some(c) = field
        .chunk()
        .await
        .map_err(|e| ApiError::new(Code::InvalidRequest, format!("reading the `job` part failed: {e}")))?
    {
        out.extend_from_slice(&c);
        if out.len() as u64 > limit {
            return Err(ApiError::new(Code::TooLarge, "the `job` part is too large"));
        }
    }
    Ok(out)
}

/// Queues a staged job in `lane`, applying the same-id rule: `201` when created, `200` when the
/// same job exists (its staged copy is dropped), `409` when another definition holds the id.
pub async fn enqueue_staged(
    state: &AppState,
    who: &Principal,
    id: &JobId,
    spec: &JobSpec,
    staging: Staging,
    lane: Lane,
) -> Result<StatusCode, ApiError> {
    let def_hash = definition_hash(spec, &staging.inputs);
    let job = NewJob {
        id,
        spec,
        lane,
        def_hash: &def_hash,
        inputs_prefix: &staging.prefix,
        tenant: &who.tenant,
        quota: who.quota,
        retention: state.config.retention().of(lane),
    };
    let created = match state.queue.enqueue(job, now_ms()).await {
        Ok(r) => r,
        // The job is written: its staged inputs stay, a retry with this id finds it.
        Err(e @ dcc_shared::Error::NotDurable { .. }) => {
            return Err(who.error(ApiError::of_job(id.as_str(), e)));
        }
        Err(e) => {
            staging.discard().await;
            return Err(e.into());
        }
    };
    match created {
        Enqueued::Created | Enqueued::DependencyFailed => Ok(StatusCode::CREATED),
        // Nothing written: the staged inputs go.
        other => {
            staging.discard().await;
            not_created(who, id, spec, other)
        }
    }
}

/// What a client hears when the enqueue script wrote nothing: `200` for the same job already
/// there, an error for the rest.
fn not_created(who: &Principal, id: &JobId, spec: &JobSpec, answer: Enqueued) -> Result<StatusCode, ApiError> {
    match answer {
        Enqueued::Created | Enqueued::DependencyFailed => Ok(StatusCode::CREATED),
        Enqueued::MissingDependency(i) => Err(missing_dependency(who, spec, i)),
        Enqueued::OtherShard(i) => Err(ApiError::from(dcc_shared::job::spec::SpecError::Invalid {
            field: Some(format!("dependsOn[{i}].jobId")),
            message: "on this sharded deployment that job lives in another shard than this one: \
                      give both ids the same part before the first '.' (see docs/scaling.md)"
                .into(),
        })),
        Enqueued::NotTwin(i) => Err(ApiError::from(dcc_shared::job::spec::SpecError::Invalid {
            field: Some(format!("dependsOn[{i}].type")),
            message: format!(
                "an n_to_n dependency must be an array job of this one's size ({})",
                spec.array.map_or(0, |a| a.size)
            ),
        })),
        Enqueued::Exists => Ok(StatusCode::OK),
        Enqueued::OverQuota | Enqueued::OverFastQuota => {
            let (what, n) = match answer {
                Enqueued::OverQuota => ("queued and running jobs", who.quota.active),
                _ => ("fast jobs at once", who.quota.fast),
            };
            Err(ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    Code::QuotaExceeded,
                    format!("{:?} may have {n} {what}; wait for some to end", who.tenant),
                )
            })
        }
        Enqueued::Conflict => Err(ApiError {
            field: Some("id".into()),
            ..ApiError::new(
                Code::IdConflict,
                format!(
                    "a job with id {} already exists with a different definition (or as a standard job for a fast one, or back)",
                    who.external(id.as_str())
                ),
            )
        }),
    }
}

/// `INVALID_JOB` naming dependency `i`: not a job of this tenant (or gone since).
fn missing_dependency(who: &Principal, spec: &JobSpec, i: usize) -> ApiError {
    let id = spec.depends_on.get(i).map_or("", |d| who.external(&d.job_id));
    ApiError::from(dcc_shared::job::spec::SpecError::Invalid {
        field: Some(format!("dependsOn[{i}].jobId")),
        message: format!("there is no job {id:?} of yours to depend on"),
    })
}

/// The stored id of each dependency, as the caller spelt it (its own client-chosen id, or a
/// stored one): the first spelling that names a job the caller owns. The enqueue script checks
/// again, atomically, that each still exists.
async fn resolve_dependencies(state: &AppState, who: &Principal, mut spec: JobSpec) -> Result<JobSpec, ApiError> {
    if spec.depends_on.is_empty() {
        return Ok(spec);
    }
    // Every spelling of every dependency, read in one round trip.
    let spellings: Vec<Vec<JobId>> = spec
        .depends_on
        .iter()
        .map(|d| {
            who.candidates(&d.job_id)
                .iter()
                .filter_map(|c| JobId::parse(c).ok())
                .collect()
        })
        .collect();
    let all: Vec<JobId> = spellings.iter().flatten().cloned().collect();
    // Same tenant, as the enqueue script checks (an admin too depends on its own).
    let mine: Vec<JobId> = state
        .queue
        .get_many(&all)
        .await?
        .into_iter()
        .filter(|j| j.tenant == who.tenant)
        .map(|j| j.id)
        .collect();
    for (i, candidates) in spellings.iter().enumerate() {
        match candidates.iter().find(|c| mine.contains(c)) {
            Some(stored) => spec.depends_on[i].job_id = stored.to_string(),
            None => return Err(missing_dependency(who, &spec, i)),
        }
    }
    Ok(spec)
}

/// Queues the job (or applies the same-id rule), then answers, waiting first if asked.
async fn finalize(
    state: &AppState,
    who: &Principal,
    id: JobId,
    spec: JobSpec,
    staging: Staging,
    wait_for_end: bool,
) -> Result<Response, ApiError> {
    // Its children's ids add `.<index>` (up to 6 characters) to its own.
    if spec.array.is_some() && id.as_str().len() > dcc_shared::job::id::MAX_ID_LEN - 6 {
        staging.discard().await;
        return Err(ApiError::from(dcc_shared::job::spec::SpecError::Invalid {
            field: Some("id".into()),
            message: format!(
                "an array job's id is at most {} characters (as stored): its children's add .<index>",
                dcc_shared::job::id::MAX_ID_LEN - 6
            ),
        }));
    }
    let spec = match resolve_dependencies(state, who, spec).await {
        Ok(s) => s,
        Err(e) => {
            staging.discard().await;
            return Err(e);
        }
    };
    let status = enqueue_staged(state, who, &id, &spec, staging, Lane::for_priority(spec.priority)).await?;
    if wait_for_end {
        let record = wait::until_ended(state, &id, state.config.max_wait, wait::IfStuck::Answer)
            .await
            .map_err(|e| who.error(e))?;
        return Ok((StatusCode::OK, Json(SubmitOk::Ended(Box::new(who.view(record.view()))))).into_response());
    }
    // A job failed at once by a dependency is created `failed`; an existing one is as it is.
    let current = match (status, spec.depends_on.is_empty()) {
        (StatusCode::CREATED, true) => JobState::Queued,
        _ => state.queue.get(&id).await?.map(|r| r.state).unwrap_or(JobState::Queued),
    };
    let external = who.external(id.as_str());
    let answer = SubmitAnswer {
        job_id: external.to_string(),
        status: current,
        links: Links::of(external),
    };
    if status == StatusCode::OK {
        return Ok((status, Json(SubmitOk::Existing(answer))).into_response());
    }
    Ok((status, Json(answer)).into_response())
}
