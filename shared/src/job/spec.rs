//! The job definition a client submits, its defaults and limits, and its validation.
//!
//! Parsing is strict (`deny_unknown_fields`): a misspelt field is an error, not a silently ignored
//! option (the 2018 system accepted both `cmd` and `command` and ran the wrong one). Every error
//! names the field to blame, as `parameters.cpus` or `inputs[1].name`.

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::id::JobId;
use super::state::{Priority, QueueName};

/// The request body of `POST /api/v1/jobs`, as sent. Its OpenAPI schema is derived from this
/// type, so the document describes exactly what the parser accepts.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobRequest {
    /// Optional client-chosen id (idempotent resubmission).
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    pub id: Option<String>,
    /// The Docker image to run; the only required field.
    #[schema(min_length = 1, max_length = 512)]
    pub image: String,
    /// The command; the image's own when absent.
    pub command: Option<Vec<String>>,
    /// Environment variables for the container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The container's working directory; the image's own when absent.
    pub working_dir: Option<String>,
    /// Input files, inline or by URL.
    #[serde(default)]
    pub inputs: Vec<InputRequest>,
    /// Resources and limits.
    #[serde(default)]
    pub parameters: ParametersRequest,
    /// `high` jumps ahead of `normal`.
    #[serde(default)]
    pub priority: Priority,
    /// Opaque client data echoed back in the job view.
    #[schema(value_type = Option<Object>)]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// Block the HTTP request until the job ends.
    #[serde(default)]
    pub wait: bool,
    /// Where to POST the job's view, signed, when it ends (a completion webhook).
    pub notify: Option<Notify>,
    /// Jobs (of the same tenant, existing now) that must end first: the job waits, queued
    /// but not claimable (`waiting.reason: DEPENDENCIES`), until the last of them ends. At most
    /// [`MAX_DEPENDENCIES`].
    #[serde(default)]
    #[schema(max_items = 20)]
    pub depends_on: Vec<DependencyRequest>,
    /// Run `size` copies (children `<id>.0` … `<id>.<size-1>`), each told its index
    /// (`DCC_ARRAY_INDEX`, `DCC_ARRAY_SIZE`); the submitted job is their parent.
    pub array: Option<ArraySpec>,
}

/// An array job: `size` children of one definition, at most `parallelism` running at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArraySpec {
    /// Children, 2 to 10 000.
    #[schema(minimum = 2, maximum = 10000)]
    pub size: u32,
    /// Most children running at once (Slurm's `%N`); all that fit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub parallelism: Option<u32>,
}

/// Most children of one array job.
pub const MAX_ARRAY_SIZE: u32 = 10_000;

/// The folder of per-index inputs: an array child `i` gets the inputs under `index/<i>/` and
/// none under another child's (every child gets the inputs outside `index/`).
pub const PER_INDEX_DIR: &str = "index/";

/// Whether input `name` is for array child `index` (or for every child).
pub fn input_is_for(name: &str, index: u32) -> bool {
    match name.strip_prefix(PER_INDEX_DIR).and_then(|rest| rest.split_once('/')) {
        Some((i, _)) => i.parse::<u32>().ok() == Some(index),
        None => true,
    }
}

/// One dependency as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DependencyRequest {
    /// The job to wait for.
    pub job_id: String,
    /// `succeeded` (default): run only if it succeeded, else fail with `DEPENDENCY_FAILED`;
    /// `ended`: run once it ended, however.
    #[serde(rename = "type", default)]
    pub kind: DependencyKind,
}

/// What a dependency waits for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyKind {
    /// The job must succeed; any other end fails the dependent with `DEPENDENCY_FAILED`.
    #[default]
    Succeeded,
    /// The job must end (succeeded, failed, timed out, cancelled or deleted).
    Ended,
    /// On an array job: its child i waits for child i of another array of the same size to
    /// succeed (and fails with `DEPENDENCY_FAILED` when that one ended otherwise).
    NToN,
}

impl DependencyKind {
    /// The spelling stored in Redis (read by `deps.lua`).
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyKind::Succeeded => "succeeded",
            DependencyKind::Ended => "ended",
            DependencyKind::NToN => "n_to_n",
        }
    }
}

/// A validated dependency (also how the job view shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// The job waited for.
    pub job_id: String,
    /// What it must do.
    #[serde(rename = "type")]
    pub kind: DependencyKind,
}

/// Most dependencies one job may have (AWS Batch's limit).
pub const MAX_DEPENDENCIES: usize = 20;

/// A completion webhook: DCC POSTs the job view to `url` once the job has ended (succeeded,
/// failed, timed out or cancelled), signed with the deployment's secret (`X-DCC-Signature`),
/// at least once, retried with backoff until the receiver answers 2xx. See `docs/webhooks.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// An `http://` or `https://` URL, at most 2048 bytes. Only public addresses are reached
    /// unless the operator allows internal ones (`DCC_NOTIFY_ALLOW`).
    #[schema(max_length = 2048)]
    pub url: String,
}

/// Longest `notify.url`.
pub const MAX_NOTIFY_URL: usize = 2048;

/// One input as sent: exactly one of `value` and `url`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InputRequest {
    /// Path under `/inputs` in the container.
    pub name: String,
    /// Inline content, encoded as `encoding` says.
    pub value: Option<String>,
    /// URL the server fetches at submit time.
    pub url: Option<String>,
    /// `utf8` (default) or `base64`; only with `value`.
    pub encoding: Option<Encoding>,
}

/// How an inline value is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The value is the file's text.
    #[default]
    Utf8,
    /// The value is standard base64 of the file's bytes.
    Base64,
}

/// `parameters` as sent; absent fields take the defaults of [`Limits`].
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParametersRequest {
    /// CPUs (fractions allowed); the job holds `ceil(cpus)` worker slots.
    pub cpus: Option<f64>,
    /// Memory limit in MiB (no swap beyond it).
    pub memory_mb: Option<u64>,
    /// GPUs; more than 0 puts the job on the `gpu` queue.
    pub gpus: Option<u32>,
    /// Wall-clock limit of one attempt, in seconds.
    pub max_duration_secs: Option<u64>,
    /// Attempts before a lost job is failed.
    pub max_attempts: Option<u32>,
    /// Give the container a network.
    pub network: Option<bool>,
}

/// Defaults and upper bounds applied at validation; from configuration.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest `parameters.cpus` accepted.
    pub max_cpus: f64,
    /// Memory given when `memoryMb` is absent, in MiB (a job always has a limit).
    pub default_memory_mb: u64,
    /// Largest `memoryMb` accepted.
    pub max_memory_mb: u64,
    /// Largest `gpus` accepted.
    pub max_gpus: u32,
    /// Largest `maxDurationSecs` accepted.
    pub max_duration_secs: u64,
    /// Largest `maxAttempts` accepted.
    pub max_attempts: u32,
    /// Largest single input, in bytes (inline after decoding, or uploaded).
    pub max_input_bytes: u64,
    /// Images that may run (`DCC_IMAGE_ALLOW`; empty: all).
    pub images: super::image::ImageAllow,
    /// Which of `max_cpus`, `max_gpus`, `max_memory_mb` the operator declared as the largest
    /// worker shape: going over those is `UNSCHEDULABLE` (422), not a schema error.
    pub declared: DeclaredShape,
}

/// Which maxima of [`Limits`] are a declared worker shape.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeclaredShape {
    /// `DCC_MAX_CPUS` was set.
    pub cpus: bool,
    /// `DCC_MAX_GPUS` was set.
    pub gpus: bool,
    /// `DCC_MAX_MEMORY_MB` was set.
    pub memory_mb: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_cpus: 256.0,
            default_memory_mb: 2048,
            max_memory_mb: 4 * 1024 * 1024,
            max_gpus: 16,
            max_duration_secs: 7 * 24 * 3600,
            max_attempts: 10,
            max_input_bytes: 1 << 30,
            images: Default::default(),
            declared: DeclaredShape::default(),
        }
    }
}

/// Smallest CPU share Docker accepts (`--cpus 0.01`).
pub const MIN_CPUS: f64 = 0.01;
/// Fewest MiB Docker accepts as a memory limit.
pub const MIN_MEMORY_MB: u64 = 6;
/// Default `maxDurationSecs` (contract).
pub const DEFAULT_MAX_DURATION_SECS: u64 = 600;
/// Default `maxAttempts` (contract).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Most inputs one job may have; each becomes a storage object and a tar entry.
pub const MAX_INPUTS: usize = 1000;
/// Most output files one attempt may leave: each becomes a storage object and an entry in the
/// job record (and, for fast jobs, a field in Redis).
pub const MAX_OUTPUTS: usize = 10_000;
/// Longest input name in bytes (contract).
pub const MAX_INPUT_NAME: usize = 255;
/// Most command arguments / environment variables; far above real use, below abuse.
pub const MAX_LIST_ITEMS: usize = 4096;
/// Bound on the serialized size of `command`, `env` and `meta` each: they live in Redis.
pub const MAX_FIELD_BYTES: usize = 256 * 1024;

/// Resources and limits with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameters {
    /// CPUs.
    pub cpus: f64,
    /// Memory limit in MiB.
    pub memory_mb: u64,
    /// GPUs.
    pub gpus: u32,
    /// Wall-clock limit of one attempt, in seconds.
    pub max_duration_secs: u64,
    /// Attempts before a lost job is failed.
    pub max_attempts: u32,
    /// Whether the container gets a network.
    pub network: bool,
}

impl Parameters {
    /// Worker CPU slots the job holds while it runs.
    pub fn slots(&self) -> u32 {
        self.cpus.ceil().max(1.0) as u32
    }

    /// The queue the job goes to.
    pub fn queue(&self) -> QueueName {
        if self.gpus > 0 { QueueName::Gpu } else { QueueName::Cpu }
    }
}

/// The normalized definition stored with the job and read by the worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    /// Docker image reference.
    pub image: String,
    /// Command, or the image's own.
    pub command: Option<Vec<String>>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory, or the image's own.
    pub working_dir: Option<String>,
    /// Names of the staged inputs (their bytes are in storage, or in Redis for fast jobs).
    pub inputs: Vec<String>,
    /// Resources and limits.
    pub parameters: Parameters,
    /// Queue priority.
    pub priority: Priority,
    /// Opaque client data.
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The completion webhook, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// Jobs that must end before this one is claimable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// An array job's size and parallelism (its children run this same spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<ArraySpec>,
}

/// Where an input's bytes come from.
#[derive(Debug)]
pub enum InputSource {
    /// Decoded inline bytes.
    Inline(Vec<u8>),
    /// A URL the server fetches.
    Url(String),
}

/// A validated submission.
#[derive(Debug)]
pub struct ValidJob {
    /// Client-chosen id, if any.
    pub id: Option<JobId>,
    /// The normalized definition.
    pub spec: JobSpec,
    /// Inputs to stage, in request order (names are in `spec.inputs` too).
    pub inputs: Vec<(String, InputSource)>,
    /// Block until the job ends.
    pub wait: bool,
}

/// An input after staging: what the definition hash covers.
#[derive(Debug, Clone)]
pub struct StagedInput {
    /// Input name.
    pub name: String,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// The body is not JSON at all (`INVALID_JSON`).
    #[error("{0}")]
    Json(String),
    /// The JSON breaks the schema (`INVALID_JOB`).
    #[error("{message}")]
    Invalid {
        /// The field to blame, if one is.
        field: Option<String>,
        /// A sentence saying what is wrong.
        message: String,
    },
    /// Something is over its size limit (`TOO_LARGE`).
    #[error("{message}")]
    TooLarge {
        /// The field to blame, if one is.
        field: Option<String>,
        /// A sentence saying which limit.
        message: String,
    },
    /// Valid, but larger than any worker the operator declared (`UNSCHEDULABLE`).
    #[error("{message}")]
    Unschedulable {
        /// The parameter to blame.
        field: Option<String>,
        /// A sentence naming the largest worker.
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: Some(field.into()),
        message: message.into(),
    }
}

impl JobRequest {
    /// Parses a JSON body, telling "not JSON" apart from "JSON of the wrong shape".
    pub fn from_json(body: &[u8]) -> Result<Self, SpecError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| SpecError::Json(format!("body is not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Deserializes an already-parsed JSON value, naming the failing field.
    pub fn from_value(value: serde_json::Value) -> Result<Self, SpecError> {
        if !value.is_object() {
            return Err(SpecError::Invalid {
                field: None,
                message: "the job must be a JSON object".into(),
            });
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            // serde reports a missing field at its parent's path: name the field itself.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next());
            let field = match (path.as_str(), missing) {
                (".", Some(n)) => Some(n.to_string()),
                (".", None) => None,
                (p, Some(n)) => Some(format!("{p}.{n}")),
                (p, None) => Some(p.to_string()),
            };
            SpecError::Invalid { field, message }
        })
    }

    /// Applies defaults and limits; the result is safe to store and to run.
    pub fn validate(self, limits: &Limits) -> Result<ValidJob, SpecError> {
        let id = match &self.id {
            Some(s) => Some(JobId::parse(s).map_err(|m| invalid("id", m))?),
            None => None,
        };
        validate_image(&self.image)?;
        if !limits.images.allows(&self.image) {
            return Err(invalid(
                "image",
                format!(
                    "image {:?} is not on this server's allow-list (DCC_IMAGE_ALLOW)",
                    self.image
                ),
            ));
        }
        if let Some(cmd) = &self.command {
            if cmd.is_empty() {
                return Err(invalid(
                    "command",
                    "command must not be empty; leave it out to run the image's own",
                ));
            }
            check_list("command", cmd.len(), cmd.iter().map(|s| s.len()).sum())?;
            if cmd.iter().any(|a| a.contains('\0')) {
                return Err(invalid("command", "command arguments must not contain NUL"));
            }
        }
        validate_env(&self.env)?;
        if let Some(dir) = &self.working_dir
            && (!dir.starts_with('/') || dir.contains('\0') || dir.len() > 4096)
        {
            return Err(invalid("workingDir", "workingDir must be an absolute path"));
        }
        let meta = self.meta.unwrap_or_default();
        if serde_json::to_vec(&meta).map(|v| v.len()).unwrap_or(0) > MAX_FIELD_BYTES {
            return Err(SpecError::TooLarge {
                field: Some("meta".into()),
                message: format!("meta is over {MAX_FIELD_BYTES} bytes"),
            });
        }
        if let Some(n) = &self.notify {
            validate_notify(n)?;
        }
        let parameters = validate_parameters(&self.parameters, limits)?;
        let depends_on = validate_dependencies(self.depends_on, self.array.is_some())?;
        let inputs = validate_inputs(self.inputs, limits)?;
        if let Some(a) = &self.array {
            validate_array(a, &inputs)?;
        }
        let spec = JobSpec {
            image: self.image,
            command: self.command,
            env: self.env,
            working_dir: self.working_dir,
            inputs: inputs.iter().map(|(n, _)| n.clone()).collect(),
            parameters,
            priority: self.priority,
            meta,
            notify: self.notify,
            depends_on,
            array: self.array,
        };
        Ok(ValidJob {
            id,
            spec,
            inputs,
            wait: self.wait,
        })
    }
}

fn validate_env(env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    check_list("env", env.len(), env.iter().map(|(k, v)| k.len() + v.len()).sum())?;
    for (k, v) in env {
        if k.starts_with("NVIDIA_") {
            // The NVIDIA runtime reads these to pick GPUs: a job selects none of its own.
            return Err(invalid(
                format!("env.{k}"),
                "NVIDIA_* variables are reserved: GPUs are given by parameters.gpus",
            ));
        }
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(invalid(
                format!("env.{k}"),
                "environment variable names must be non-empty without '=' or NUL, values without NUL",
            ));
        }
    }
    Ok(())
}

/// The shape of a webhook URL; where it may point is the server's check (its egress policy).
/// 2 to [`MAX_ARRAY_SIZE`] children, a parallelism of at least 1, per-index inputs
/// (`index/<i>/…`) only for children that exist.
fn validate_array(a: &ArraySpec, inputs: &[(String, InputSource)]) -> Result<(), SpecError> {
    if !(2..=MAX_ARRAY_SIZE).contains(&a.size) {
        return Err(invalid(
            "array.size",
            format!("an array has 2 to {MAX_ARRAY_SIZE} children"),
        ));
    }
    if a.parallelism == Some(0) {
        return Err(invalid("array.parallelism", "parallelism is at least 1"));
    }
    for (i, (name, _)) in inputs.iter().enumerate() {
        let Some(rest) = name.strip_prefix(PER_INDEX_DIR) else {
            continue;
        };
        let index = rest.split_once('/').and_then(|(n, _)| n.parse::<u32>().ok());
        if !matches!(index, Some(n) if n < a.size) {
            return Err(invalid(
                format!("inputs[{i}].name"),
                format!(
                    "inputs under {PER_INDEX_DIR} are per child: {PER_INDEX_DIR}<index>/<name>, index below {}",
                    a.size
                ),
            ));
        }
    }
    Ok(())
}

/// At most [`MAX_DEPENDENCIES`], each a valid id named once; `n_to_n` only on an array job, at
/// most once. Whether each exists (and is the tenant's; an n_to_n one an array of the same size)
/// is checked atomically at enqueue.
fn validate_dependencies(deps: Vec<DependencyRequest>, array: bool) -> Result<Vec<Dependency>, SpecError> {
    if deps.len() > MAX_DEPENDENCIES {
        return Err(invalid(
            "dependsOn",
            format!("a job may depend on at most {MAX_DEPENDENCIES} jobs"),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(deps.len());
    for (i, d) in deps.into_iter().enumerate() {
        let id = JobId::parse(&d.job_id).map_err(|m| invalid(format!("dependsOn[{i}].jobId"), m))?;
        if !seen.insert(id.clone()) {
            return Err(invalid(
                format!("dependsOn[{i}].jobId"),
                format!("job {id} is named twice"),
            ));
        }
        if d.kind == DependencyKind::NToN && (!array || out.iter().any(|o: &Dependency| o.kind == d.kind)) {
            return Err(invalid(
                format!("dependsOn[{i}].type"),
                "n_to_n links child i of this array to child i of another array of its size: once, on an array job",
            ));
        }
        out.push(Dependency {
            job_id: id.to_string(),
            kind: d.kind,
        });
    }
    Ok(out)
}

fn validate_notify(n: &Notify) -> Result<(), SpecError> {
    let u = &n.url;
    if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > MAX_NOTIFY_URL {
        return Err(invalid(
            "notify.url",
            format!("notify.url must be an http:// or https:// URL of at most {MAX_NOTIFY_URL} bytes"),
        ));
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "notify.url",
            "notify.url must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

fn check_list(field: &str, items: usize, bytes: usize) -> Result<(), SpecError> {
    if items > MAX_LIST_ITEMS {
        return Err(invalid(field, format!("{field} has more than {MAX_LIST_ITEMS} items")));
    }
    if bytes > MAX_FIELD_BYTES {
        return Err(SpecError::TooLarge {
            field: Some(field.into()),
            message: format!("{field} is over {MAX_FIELD_BYTES} bytes"),
        });
    }
    Ok(())
}

fn validate_image(image: &str) -> Result<(), SpecError> {
    if image.is_empty() || image.len() > 512 {
        return Err(invalid(
            "image",
            "image must be a Docker image reference of 1 to 512 characters",
        ));
    }
    if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "image",
            "image must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

fn validate_parameters(p: &ParametersRequest, limits: &Limits) -> Result<Parameters, SpecError> {
    let cpus = p.cpus.unwrap_or(1.0);
    let too_large = |field: &str, what: String| SpecError::Unschedulable {
        field: Some(field.to_string()),
        message: format!("no worker can run this job: {what} (the operator declared the largest worker)"),
    };
    if limits.declared.cpus && cpus.is_finite() && cpus > limits.max_cpus {
        return Err(too_large(
            "parameters.cpus",
            format!("it asks for {cpus} CPUs, the largest worker has {}", limits.max_cpus),
        ));
    }
    if let Some(m) = p.memory_mb
        && limits.declared.memory_mb
        && m > limits.max_memory_mb
    {
        return Err(too_large(
            "parameters.memoryMb",
            format!("it asks for {m} MiB, the largest worker has {}", limits.max_memory_mb),
        ));
    }
    if let Some(g) = p.gpus
        && limits.declared.gpus
        && g > limits.max_gpus
    {
        return Err(too_large(
            "parameters.gpus",
            format!("it asks for {g} GPUs, the largest worker has {}", limits.max_gpus),
        ));
    }
    if !cpus.is_finite() || cpus < MIN_CPUS || cpus > limits.max_cpus {
        return Err(invalid(
            "parameters.cpus",
            format!("cpus must be between {MIN_CPUS} and {}", limits.max_cpus),
        ));
    }
    let memory_mb = p.memory_mb.unwrap_or(limits.default_memory_mb);
    if !(MIN_MEMORY_MB..=limits.max_memory_mb).contains(&memory_mb) {
        return Err(invalid(
            "parameters.memoryMb",
            format!("memoryMb must be between {MIN_MEMORY_MB} and {}", limits.max_memory_mb),
        ));
    }
    let gpus = p.gpus.unwrap_or(0);
    if gpus > limits.max_gpus {
        return Err(invalid(
            "parameters.gpus",
            format!("gpus must be at most {}", limits.max_gpus),
        ));
    }
    let max_duration_secs = p.max_duration_secs.unwrap_or(DEFAULT_MAX_DURATION_SECS);
    if !(1..=limits.max_duration_secs).contains(&max_duration_secs) {
        return Err(invalid(
            "parameters.maxDurationSecs",
            format!("maxDurationSecs must be between 1 and {}", limits.max_duration_secs),
        ));
    }
    let max_attempts = p.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=limits.max_attempts).contains(&max_attempts) {
        return Err(invalid(
            "parameters.maxAttempts",
            format!("maxAttempts must be between 1 and {}", limits.max_attempts),
        ));
    }
    Ok(Parameters {
        cpus,
        memory_mb,
        gpus,
        max_duration_secs,
        max_attempts,
        network: p.network.unwrap_or(false),
    })
}

fn validate_inputs(inputs: Vec<InputRequest>, limits: &Limits) -> Result<Vec<(String, InputSource)>, SpecError> {
    if inputs.len() > MAX_INPUTS {
        return Err(invalid("inputs", format!("at most {MAX_INPUTS} inputs are allowed")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let field = |f: &str| format!("inputs[{i}].{f}");
        validate_input_name(&input.name).map_err(|m| invalid(field("name"), m))?;
        if !seen.insert(input.name.clone()) {
            return Err(invalid(
                field("name"),
                format!("input name '{}' is used twice", input.name),
            ));
        }
        let source = match (input.value, input.url) {
            (Some(value), None) => {
                let bytes = match input.encoding.unwrap_or_default() {
                    Encoding::Utf8 => value.into_bytes(),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD
                        .decode(value.as_bytes())
                        .map_err(|e| invalid(field("value"), format!("value is not valid base64: {e}")))?,
                };
                if bytes.len() as u64 > limits.max_input_bytes {
                    return Err(SpecError::TooLarge {
                        field: Some(field("value")),
                        message: format!("input is over the {} byte limit", limits.max_input_bytes),
                    });
                }
                InputSource::Inline(bytes)
            }
            (None, Some(url)) => {
                if input.encoding.is_some() {
                    return Err(invalid(field("encoding"), "encoding applies to inline values only"));
                }
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 8192 {
                    return Err(invalid(field("url"), "url must be an http:// or https:// URL"));
                }
                InputSource::Url(url)
            }
            _ => return Err(invalid(field("value"), "an input needs exactly one of value and url")),
        };
        out.push((input.name, source));
    }
    Ok(out)
}

/// Checks an input (or output) name: a relative path of normal components, so it can never
/// escape `/inputs` in the container or the job's folder in storage.
pub fn validate_input_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("input name must not be empty".into());
    }
    if name.len() > MAX_INPUT_NAME {
        return Err(format!("input name must be at most {MAX_INPUT_NAME} bytes"));
    }
    if name.contains('\0') {
        return Err("input name must not contain NUL".into());
    }
    if name.starts_with('/') {
        return Err("input name must be a relative path".into());
    }
    for part in name.split('/') {
        match part {
            ".." => return Err("input name must not contain '..'".into()),
            "" | "." => return Err("input name must not contain empty or '.' path components".into()),
            _ => {}
        }
    }
    Ok(())
}

/// The definition hash behind the same-id rule: identical definitions (including input bytes)
/// hash the same; anything else makes a resubmission with the same id a 409.
pub fn definition_hash(spec: &JobSpec, inputs: &[StagedInput]) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    for i in inputs {
        h.update(b"\0input\0");
        h.update(i.name.as_bytes());
        h.update(b"\0");
        h.update(i.sha256.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> Result<ValidJob, SpecError> {
        JobRequest::from_value(v)?.validate(&Limits::default())
    }

    fn field_of(r: Result<ValidJob, SpecError>) -> Option<String> {
        match r {
            Err(SpecError::Invalid { field, .. }) => field,
            other => panic!("expected INVALID_JOB, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let j = parse(serde_json::json!({"image": "busybox"})).unwrap();
        assert_eq!(j.spec.parameters.cpus, 1.0);
        assert_eq!(j.spec.parameters.gpus, 0);
        assert_eq!(j.spec.parameters.max_duration_secs, 600);
        assert_eq!(j.spec.parameters.max_attempts, 3);
        assert!(!j.spec.parameters.network);
        assert_eq!(j.spec.priority, Priority::Normal);
        assert_eq!(j.spec.parameters.queue(), QueueName::Cpu);
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field_of(parse(serde_json::json!({}))), Some("image".into()));
        assert_eq!(
            field_of(parse(serde_json::json!({"image": "x", "bogus": 1}))),
            Some("bogus".into())
        );
        assert_eq!(
            field_of(parse(serde_json::json!({"image": "x", "parameters": {"cpus": -1}}))),
            Some("parameters.cpus".into())
        );
        assert_eq!(
            field_of(parse(serde_json::json!({"image": "x", "parameters": {"memoryMb": -5}}))),
            Some("parameters.memoryMb".into())
        );
        assert_eq!(
            field_of(parse(serde_json::json!({"image": "x", "command": "ls"}))),
            Some("command".into())
        );
        assert_eq!(
            field_of(parse(
                serde_json::json!({"image": "x", "inputs": [{"name": "a", "value": "1"}, {"name": "../x", "value": "2"}]})
            )),
            Some("inputs[1].name".into())
        );
    }

    #[test]
    fn input_names() {
        assert!(validate_input_name("a.txt").is_ok());
        assert!(validate_input_name("data/blob.bin").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a\0b"] {
            assert!(validate_input_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_input_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn base64_and_too_large() {
        let j =
            parse(serde_json::json!({"image": "x", "inputs": [{"name": "b", "value": "AAEC", "encoding": "base64"}]}))
                .unwrap();
        assert!(matches!(&j.inputs[0].1, InputSource::Inline(b) if b == &[0u8, 1, 2]));
        let limits = Limits {
            max_input_bytes: 2,
            ..Limits::default()
        };
        let r = JobRequest::from_value(serde_json::json!({"image": "x", "inputs": [{"name": "b", "value": "abc"}]}))
            .unwrap()
            .validate(&limits);
        assert!(matches!(r, Err(SpecError::TooLarge { .. })));
    }

    #[test]
    fn not_json() {
        assert!(matches!(JobRequest::from_json(b"{nope"), Err(SpecError::Json(_))));
    }
}
