//! The 2018 job JSON (`BasicBatchProcessRequest`, the turbo requests, `DataBlob` inputs; reference
//! §2.4, §2.5, §2.7) as a v1 job request. What v1 has no field for and the 2018 answers need
//! (the definition as sent, `appendStdOut`/`appendStdErr`) travels in the job's `meta` under
//! [`META_KEY`]. Anything DCC cannot honour is refused with a sentence saying why, never ignored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::envelope::RpcError;

/// The image a 2018 job without one runs (the 2018 default).
pub const DEFAULT_IMAGE: &str = "docker.io/busybox:latest";
/// The `meta` key under which the adapter keeps the 2018 definition and answer options.
pub const META_KEY: &str = "dcc2018";
/// 2018's `maxDuration` when a standard job gave none, in seconds.
const DEFAULT_MAX_DURATION: u64 = 600;
/// 2018's limit for a turbo job without `maxDuration` (`JOB_TURBO_MAX_TIME_SECONDS`).
const TURBO_MAX_DURATION: u64 = 300;

/// A 2018 job as sent: the standard fields, the turbo ones, and the ones 2018 declared but never
/// read (accepted, without effect).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Job2018 {
    id: Option<String>,
    image: Option<String>,
    cmd: Option<Value>,
    command: Option<Value>,
    #[serde(rename = "createOptions", alias = "CreateContainerOptions")]
    create_options: Option<Map<String, Value>>,
    #[serde(rename = "pull_options", alias = "imagePullOptions")]
    pull_options: Option<Value>,
    inputs: Option<Value>,
    #[serde(rename = "workingDir")]
    working_dir: Option<String>,
    parameters: Option<Params2018>,
    #[serde(rename = "inputsPath")]
    inputs_path: Option<String>,
    #[serde(rename = "outputsPath")]
    outputs_path: Option<String>,
    #[serde(rename = "resultsPath")]
    results_path: Option<String>,
    #[serde(rename = "containerInputsMountPath")]
    container_inputs: Option<String>,
    #[serde(rename = "containerOutputsMountPath")]
    container_outputs: Option<String>,
    wait: Option<bool>,
    meta: Option<Map<String, Value>>,
    #[serde(rename = "appendStdOut")]
    append_stdout: Option<bool>,
    #[serde(rename = "appendStdErr")]
    append_stderr: Option<bool>,
    #[serde(rename = "mountApiServer")]
    mount_api_server: Option<bool>,
    priority: Option<bool>,
    #[serde(rename = "ignoreOutputs")]
    ignore_outputs: Option<bool>,
    #[serde(rename = "forceUtf8Outputs")]
    force_utf8_outputs: Option<bool>,
    #[allow(dead_code)]
    md5: Option<Value>,
    #[serde(rename = "contextPath")]
    #[allow(dead_code)]
    context_path: Option<Value>,
    #[allow(dead_code)]
    turbo: Option<Value>,
}

/// `parameters` (`JobParams`), with DCC's `memoryMb` and `network` beside 2018's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params2018 {
    #[serde(rename = "maxDuration")]
    max_duration: Option<f64>,
    cpus: Option<f64>,
    gpu: Option<u32>,
    #[serde(rename = "memoryMb")]
    memory_mb: Option<u64>,
    network: Option<bool>,
    #[serde(rename = "IgnoreOutputs")]
    ignore_outputs: Option<bool>,
    #[serde(rename = "ForceUtf8Outputs")]
    force_utf8_outputs: Option<bool>,
    /// 2018 test switch; GPUs are attached as the worker's `DCC_GPU_MODE` says.
    #[serde(rename = "DISABLE_NVIDIA_DOCKER_RUNTIME")]
    #[allow(dead_code)]
    disable_nvidia_runtime: Option<Value>,
    #[serde(rename = "DisableCache")]
    #[allow(dead_code)]
    disable_cache: Option<Value>,
    #[serde(rename = "DisablePersistance")]
    #[allow(dead_code)]
    disable_persistance: Option<Value>,
}

/// Which 2018 job form a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `submitJobJson`, `submitjob`, multipart `dockercloudcompute.run`.
    Standard,
    /// `runturbojsonv2`: inputs are `DataBlob`s.
    TurboV2,
    /// `runturbojson` / `runturbo`: inputs are `{name: utf8 text}`.
    TurboV1,
}

/// A 2018 job as a v1 request.
#[derive(Debug)]
pub struct Mapped {
    /// The v1 job JSON.
    pub job: Value,
    /// Its id (the client's, or one made here, as 2018 made one): also `CCC_JOB_ID`.
    pub id: String,
    /// The client asked to wait for the end.
    pub wait: bool,
    /// Turbo answers: outputs left out.
    pub ignore_outputs: bool,
    /// Turbo answers: outputs as UTF-8 text.
    pub force_utf8: bool,
}

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError::invalid_params(message)
}

/// Maps a 2018 job. `max_duration` is the deployment's largest `maxDurationSecs`: 2018 had no
/// limit (its README asks for 600000 s), so a longer one is lowered to it, not refused.
pub fn map(raw: &Value, kind: Kind, max_duration: u64) -> Result<Mapped, RpcError> {
    if !raw.is_object() {
        return Err(invalid("the job must be a JSON object"));
    }
    let j: Job2018 = serde_json::from_value(raw.clone()).map_err(|e| invalid(format!("bad job: {e}")))?;
    refuse_unsupported(&j, kind)?;
    let id = j.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let p = j.parameters.as_ref();
    let mut out = Map::new();
    out.insert("id".into(), json!(id));
    let opts = j.create_options.clone().unwrap_or_default();
    let (image, command, working_dir, env, host) = create_options(&opts)?;
    out.insert(
        "image".into(),
        json!(j.image.clone().or(image).unwrap_or_else(|| DEFAULT_IMAGE.to_string())),
    );
    if let Some(c) = command_of(&j)?.or(command) {
        out.insert("command".into(), json!(c));
    }
    if let Some(w) = j.working_dir.clone().or(working_dir) {
        out.insert("workingDir".into(), json!(w));
    }
    let mut env = env;
    env.insert("INPUTS".into(), json!("/inputs"));
    env.insert("OUTPUTS".into(), json!("/outputs"));
    env.insert("CCC_JOB_ID".into(), json!(id));
    out.insert("env".into(), Value::Object(env));
    out.insert("inputs".into(), Value::Array(inputs(j.inputs.as_ref(), kind)?));
    let default_secs = if kind == Kind::Standard {
        DEFAULT_MAX_DURATION
    } else {
        TURBO_MAX_DURATION
    };
    out.insert("parameters".into(), parameters(p, host, default_secs, max_duration)?);
    if j.priority == Some(true) {
        out.insert("priority".into(), json!("high"));
    }
    let mut meta = j.meta.clone().unwrap_or_default();
    meta.insert(META_KEY.into(), kept(raw, &j, &id));
    out.insert("meta".into(), Value::Object(meta));
    let either = |a: Option<bool>, b: Option<bool>| a.or(b).unwrap_or(false);
    Ok(Mapped {
        job: Value::Object(out),
        id,
        wait: j.wait.unwrap_or(false),
        ignore_outputs: either(j.ignore_outputs, p.and_then(|p| p.ignore_outputs)),
        force_utf8: either(j.force_utf8_outputs, p.and_then(|p| p.force_utf8_outputs)),
    })
}

/// What the 2018 answers need later: the definition as sent (input values and pull options
/// left out) and the log options.
fn kept(raw: &Value, j: &Job2018, id: &str) -> Value {
    let mut def = raw.clone();
    def["id"] = json!(id);
    if let Some(o) = def.as_object_mut() {
        o.remove("pull_options");
        o.remove("imagePullOptions");
        // How the client waits is not part of the job: the same job sent again without `wait`
        // is the same job (v1's same-id rule compares definitions, `meta` included).
        o.remove("wait");
    }
    match def.get_mut("inputs") {
        Some(Value::Array(a)) => a.iter_mut().filter_map(Value::as_object_mut).for_each(|b| {
            b.remove("value");
        }),
        Some(Value::Object(o)) => o.values_mut().for_each(|v| *v = Value::Null),
        _ => {}
    }
    serde_json::to_value(Kept {
        definition: Some(def),
        append_std_out: j.append_stdout.unwrap_or(false),
        append_std_err: j.append_stderr.unwrap_or(false),
    })
    .unwrap_or_default()
}

/// What the adapter keeps of a 2018 job in its `meta` under [`META_KEY`]: what v1 has no field
/// for. A job submitted through v1 has none of it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    /// The definition as the client sent it, input values left out.
    pub definition: Option<Value>,
    /// Whether the result carries stdout inline.
    #[serde(default)]
    pub append_std_out: bool,
    /// Whether the result carries stderr inline.
    #[serde(default)]
    pub append_std_err: bool,
}

impl Kept {
    /// What the adapter kept of the job of `view` (nothing for a v1 job).
    pub fn of(view: &dcc_shared::job::JobView) -> Self {
        view.meta
            .get(META_KEY)
            .and_then(|k| serde_json::from_value(k.clone()).ok())
            .unwrap_or_default()
    }
}

/// 2018 options DCC cannot honour, each refused with the reason.
fn refuse_unsupported(j: &Job2018, kind: Kind) -> Result<(), RpcError> {
    if j.mount_api_server == Some(true) {
        return Err(invalid(
            "mountApiServer is not supported: it put jobs inside the API server's network (a hole 2018 itself flagged); give the job parameters.network and call the API with a key",
        ));
    }
    if j.pull_options.as_ref().is_some_and(|p| !p.is_null() && p != &json!({})) {
        return Err(invalid(
            "pull_options/imagePullOptions are not taken: registry credentials are the deployment's (see docs/registries.md)",
        ));
    }
    let (inputs_at, outputs_at) = match kind {
        // Standard jobs: these two are storage paths (see `kept`); the mount points are these.
        Kind::Standard => (&j.container_inputs, &j.container_outputs),
        _ => (&j.inputs_path, &j.outputs_path),
    };
    for (what, path, want) in [("inputs", inputs_at, "/inputs"), ("outputs", outputs_at, "/outputs")] {
        if let Some(p) = path
            && p.trim_end_matches('/') != want
        {
            return Err(invalid(format!(
                "DCC mounts a job's {what} at {want}, not {p:?}: the job reads ${} (set to {want})",
                what.to_uppercase()
            )));
        }
    }
    let standard_only = [
        ("wait", j.wait.is_some()),
        ("appendStdOut", j.append_stdout.is_some()),
        ("appendStdErr", j.append_stderr.is_some()),
        ("resultsPath", j.results_path.is_some()),
        ("containerInputsMountPath", j.container_inputs.is_some()),
        ("containerOutputsMountPath", j.container_outputs.is_some()),
    ];
    let turbo_only = [
        ("ignoreOutputs", j.ignore_outputs.is_some()),
        ("forceUtf8Outputs", j.force_utf8_outputs.is_some()),
    ];
    let (wrong, form) = match kind {
        Kind::Standard => (&turbo_only[..], "a standard job"),
        _ => (&standard_only[..], "a turbo job"),
    };
    match wrong.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(invalid(format!("{name} is not a field of {form}"))),
        None => Ok(()),
    }
}

/// `cmd` or `command` (2018 read `cmd` for standard jobs and `command` for turbo ones; either is
/// taken, both only when equal), which must be an array of strings.
fn command_of(j: &Job2018) -> Result<Option<Vec<String>>, RpcError> {
    let pick = match (&j.cmd, &j.command) {
        (Some(a), Some(b)) if !a.is_null() && !b.is_null() && a != b => {
            return Err(invalid("cmd and command are both given and differ: send one"));
        }
        (Some(a), _) if !a.is_null() => a,
        (_, Some(b)) => b,
        _ => return Ok(None),
    };
    strings(pick, "command").map(Some)
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, RpcError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(_) => Err(invalid(format!("{field} field must be an array, not a string"))),
        Value::Array(a) => a
            .iter()
            .map(|s| s.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("{field} must be an array of strings"))),
        _ => Err(invalid(format!("{field} must be an array of strings"))),
    }
}

type FromOptions = (
    Option<String>,
    Option<Vec<String>>,
    Option<String>,
    Map<String, Value>,
    HostLimits,
);

/// Limits from `createOptions.HostConfig`.
#[derive(Debug, Default)]
struct HostLimits {
    memory_mb: Option<u64>,
    cpus: Option<f64>,
}

/// The parts of Docker's create options DCC maps (`Image`, `Cmd`, `WorkingDir`, `Env`,
/// `HostConfig.Memory`, `HostConfig.NanoCpus`); the job's own fields win over them, as in 2018.
/// Raw Docker options are not passed through: anything else is refused.
fn create_options(o: &Map<String, Value>) -> Result<FromOptions, RpcError> {
    let text = |k: &str| o.get(k).and_then(Value::as_str).map(String::from);
    let command = o.get("Cmd").map(|c| strings(c, "createOptions.Cmd")).transpose()?;
    let mut env = Map::new();
    if let Some(e) = o.get("Env") {
        for kv in strings(e, "createOptions.Env")? {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| invalid(format!("createOptions.Env entry {kv:?} is not NAME=value")))?;
            env.insert(k.into(), json!(v));
        }
    }
    let mut host = HostLimits::default();
    for (k, v) in o.get("HostConfig").and_then(Value::as_object).into_iter().flatten() {
        match (k.as_str(), v.as_f64()) {
            ("Memory", Some(b)) if b > 0.0 => host.memory_mb = Some((b / 1048576.0).ceil() as u64),
            ("NanoCpus", Some(n)) if n > 0.0 => host.cpus = Some(n / 1e9),
            _ => return Err(unsupported_option(&format!("HostConfig.{k}"))),
        }
    }
    if let Some(k) = o
        .keys()
        .find(|k| !["Image", "Cmd", "WorkingDir", "Env", "HostConfig"].contains(&k.as_str()))
    {
        return Err(unsupported_option(k));
    }
    Ok((text("Image"), command, text("WorkingDir"), env, host))
}

fn unsupported_option(k: &str) -> RpcError {
    invalid(format!(
        "createOptions.{k} is not supported: DCC maps Image, Cmd, WorkingDir, Env, HostConfig.Memory and HostConfig.NanoCpus, and passes no raw Docker options (see docs/compat.md)"
    ))
}

fn parameters(p: Option<&Params2018>, host: HostLimits, default_secs: u64, max_secs: u64) -> Result<Value, RpcError> {
    let mut out = Map::new();
    let secs = match p.and_then(|p| p.max_duration) {
        Some(d) if d.is_finite() && d > 0.0 => d.ceil() as u64,
        Some(_) => return Err(invalid("parameters.maxDuration must be a number of seconds above 0")),
        None => default_secs,
    };
    out.insert("maxDurationSecs".into(), json!(secs.min(max_secs)));
    let gpus = p.and_then(|p| p.gpu).unwrap_or(0);
    if gpus > 0 {
        out.insert("gpus".into(), json!(gpus));
    }
    // 2018 set cpus to 0 for GPU jobs and never applied it: 0 means "the default" here.
    if let Some(c) = p.and_then(|p| p.cpus).or(host.cpus).filter(|c| *c > 0.0) {
        out.insert("cpus".into(), json!(c));
    }
    if let Some(m) = p.and_then(|p| p.memory_mb).or(host.memory_mb) {
        out.insert("memoryMb".into(), json!(m));
    }
    if let Some(n) = p.and_then(|p| p.network) {
        out.insert("network".into(), json!(n));
    }
    Ok(Value::Object(out))
}

/// A `DataBlob` (`{name, value, source?, encoding?}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataBlob {
    name: String,
    value: Option<String>,
    source: Option<String>,
    encoding: Option<String>,
}

fn inputs(v: Option<&Value>, kind: Kind) -> Result<Vec<Value>, RpcError> {
    match (v, kind) {
        (None | Some(Value::Null), _) => Ok(Vec::new()),
        (Some(Value::Object(o)), Kind::TurboV1) => o
            .iter()
            .map(|(name, text)| match text {
                Value::String(s) => Ok(json!({"name": name, "value": s})),
                _ => Err(invalid(format!("inputs.{name} must be a string"))),
            })
            .collect(),
        (Some(Value::Array(a)), Kind::Standard | Kind::TurboV2) => a
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let blob: DataBlob =
                    serde_json::from_value(b.clone()).map_err(|e| invalid(format!("inputs[{i}]: {e}")))?;
                blob_input(blob).map_err(|m| invalid(format!("inputs[{i}]: {m}")))
            })
            .collect(),
        (Some(_), Kind::TurboV1) => Err(invalid("inputs must be an object of name to text")),
        (Some(_), _) => Err(invalid("inputs must be an array of {name, value, source?, encoding?}")),
    }
}

/// One `DataBlob` as a v1 input: inline values in the Node encodings 2018 took (turned into
/// base64 where not UTF-8), or an http(s) URL the server fetches.
fn blob_input(b: DataBlob) -> Result<Value, String> {
    let value = b.value.ok_or("an input needs a value")?;
    match b.source.as_deref().unwrap_or("inline") {
        "inline" => {}
        "url" if value.starts_with("http://") || value.starts_with("https://") => {
            if b.encoding.is_some() {
                return Err("a url input takes no encoding".into());
            }
            return Ok(json!({"name": b.name, "url": value}));
        }
        "url" => {
            return Err(format!(
                "a url input must be an http(s) URL, not {value:?}: DCC jobs cannot read paths in the server's storage"
            ));
        }
        other => return Err(format!("source must be inline or url, not {other:?}")),
    }
    let bytes = match b.encoding.as_deref().unwrap_or("utf8").to_ascii_lowercase().as_str() {
        "utf8" | "utf-8" => return Ok(json!({"name": b.name, "value": value})),
        "base64" => node_base64(&value)?,
        "hex" => hex::decode(value.trim()).map_err(|e| format!("the value is not hex: {e}"))?,
        // Node's `ascii`, `binary` and `latin1` all take each UTF-16 unit's low byte.
        "ascii" | "binary" | "latin1" => value.encode_utf16().map(|u| u as u8).collect(),
        "utf16le" | "utf-16le" | "ucs2" | "ucs-2" => value.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        other => {
            return Err(format!(
                "encoding {other:?} is not one of utf8, base64, hex, ascii, binary, latin1, utf16le, ucs2"
            ));
        }
    };
    Ok(json!({"name": b.name, "value": STANDARD.encode(bytes), "encoding": "base64"}))
}

/// Base64 as Node reads it: either alphabet, padding optional, whitespace ignored.
fn node_base64(v: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let cleaned: String = v
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    let lenient = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    lenient
        .decode(cleaned)
        .map_err(|e| format!("the value is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_job(v: Value) -> Result<Mapped, RpcError> {
        map(&v, Kind::Standard, 86400)
    }

    #[test]
    fn a_2018_job_becomes_a_v1_job() {
        let m = std_job(json!({
            "id": "j1", "image": "busybox:latest", "cmd": ["sh", "-c", "ls"], "workingDir": "/tmp",
            "inputs": [{"name": "a", "value": "foo"}, {"name": "b", "value": "AQI=", "encoding": "base64"},
                       {"name": "c", "value": "0aff", "encoding": "hex"}, {"name": "u", "value": "https://x.org/f", "source": "url"}],
            "parameters": {"maxDuration": 600000, "cpus": 1}, "priority": true, "wait": true,
            "meta": {"name": "n", "keywords": ["k"]}, "appendStdOut": true, "resultsPath": "r/"
        }))
        .unwrap();
        let j = &m.job;
        assert_eq!((m.id.as_str(), m.wait), ("j1", true));
        assert_eq!(j["command"], json!(["sh", "-c", "ls"]));
        assert_eq!(j["workingDir"], "/tmp");
        assert_eq!(
            j["env"],
            json!({"INPUTS": "/inputs", "OUTPUTS": "/outputs", "CCC_JOB_ID": "j1"})
        );
        assert_eq!(j["inputs"][0], json!({"name": "a", "value": "foo"}));
        assert_eq!(
            j["inputs"][1],
            json!({"name": "b", "value": "AQI=", "encoding": "base64"})
        );
        assert_eq!(
            j["inputs"][2],
            json!({"name": "c", "value": "Cv8=", "encoding": "base64"})
        );
        assert_eq!(j["inputs"][3], json!({"name": "u", "url": "https://x.org/f"}));
        // 600000 s (the 2018 README's) is lowered to the deployment's largest.
        assert_eq!(j["parameters"], json!({"maxDurationSecs": 86400, "cpus": 1.0}));
        assert_eq!(j["priority"], "high");
        assert_eq!(j["meta"]["name"], "n");
        let kept = &j["meta"][META_KEY];
        assert_eq!(kept["appendStdOut"], true);
        assert_eq!(kept["definition"]["resultsPath"], "r/");
        assert!(
            kept["definition"]["inputs"][0].get("value").is_none(),
            "values are not kept twice"
        );
        assert!(j.get("wait").is_none(), "the adapter waits itself");
        assert!(kept["definition"].get("wait").is_none(), "not part of the definition");
    }

    #[test]
    fn defaults_and_the_other_spellings() {
        let m = std_job(json!({"command": ["true"]})).unwrap();
        assert_eq!(m.job["image"], DEFAULT_IMAGE);
        assert_eq!(m.job["command"], json!(["true"]));
        assert_eq!(m.job["parameters"]["maxDurationSecs"], 600);
        assert_eq!(m.id.len(), 36, "a UUID, as 2018 made");
        assert_eq!(m.job["env"]["CCC_JOB_ID"], json!(m.id));
        let m = std_job(json!({"cmd": ["a"], "command": ["a"], "parameters": {"gpu": 1, "cpus": 0}})).unwrap();
        assert_eq!(m.job["parameters"], json!({"maxDurationSecs": 600, "gpus": 1}));
        let m = std_job(json!({"createOptions": {"Image": "img", "Cmd": ["x"], "Env": ["A=1"],
                                                 "HostConfig": {"Memory": 268435456}}}))
        .unwrap();
        assert_eq!((&m.job["image"], &m.job["command"]), (&json!("img"), &json!(["x"])));
        assert_eq!(m.job["env"]["A"], "1");
        assert_eq!(m.job["parameters"]["memoryMb"], 256);
        let m = map(
            &json!({"inputs": {"a.txt": "hi"}, "ignoreOutputs": true}),
            Kind::TurboV1,
            100,
        )
        .unwrap();
        assert_eq!(m.job["inputs"], json!([{"name": "a.txt", "value": "hi"}]));
        assert_eq!(m.job["parameters"]["maxDurationSecs"], 100);
        assert!(m.ignore_outputs && !m.force_utf8);
        let m = map(
            &json!({"inputs": [{"name": "a", "value": "héllo", "encoding": "utf16le"}]}),
            Kind::TurboV2,
            900,
        )
        .unwrap();
        assert_eq!(
            m.job["inputs"][0]["value"],
            STANDARD.encode([104, 0, 233, 0, 108, 0, 108, 0, 111, 0])
        );
        assert_eq!(node_base64("A Q=\n").unwrap(), vec![1]);
        assert_eq!(node_base64("-_8").unwrap(), node_base64("+/8=").unwrap());
    }

    #[test]
    fn what_dcc_cannot_honour_is_refused_with_a_reason() {
        let refused = |v: Value, kind: Kind, words: &str| {
            let e = map(&v, kind, 100).unwrap_err();
            assert_eq!(e.code, -32602);
            assert!(e.message.contains(words), "{v}: {}", e.message);
        };
        refused(json!({"cmd": "ls"}), Kind::Standard, "must be an array, not a string");
        refused(json!({"cmd": ["a"], "command": ["b"]}), Kind::Standard, "differ");
        refused(json!({"mountApiServer": true}), Kind::Standard, "mountApiServer");
        refused(
            json!({"pull_options": {"authconfig": {"password": "p"}}}),
            Kind::Standard,
            "registry credentials",
        );
        refused(
            json!({"createOptions": {"HostConfig": {"Privileged": true}}}),
            Kind::Standard,
            "HostConfig.Privileged",
        );
        refused(
            json!({"createOptions": {"User": "root"}}),
            Kind::Standard,
            "createOptions.User",
        );
        refused(json!({"containerInputsMountPath": "/data"}), Kind::Standard, "/inputs");
        refused(json!({"inputsPath": "/data"}), Kind::TurboV2, "/inputs");
        refused(
            json!({"wait": true}),
            Kind::TurboV2,
            "wait is not a field of a turbo job",
        );
        refused(
            json!({"ignoreOutputs": true}),
            Kind::Standard,
            "not a field of a standard job",
        );
        refused(json!({"nope": 1}), Kind::Standard, "unknown field");
        refused(
            json!({"inputs": [{"name": "a", "value": "/etc/passwd", "source": "url"}]}),
            Kind::Standard,
            "http(s) URL",
        );
        refused(
            json!({"inputs": [{"name": "a", "value": "x", "encoding": "utf7"}]}),
            Kind::Standard,
            "utf7",
        );
        refused(
            json!({"inputs": [{"name": "a", "value": "zz", "encoding": "hex"}]}),
            Kind::Standard,
            "not hex",
        );
        refused(json!({"parameters": {"maxDuration": -1}}), Kind::Standard, "above 0");
        refused(json!([1]), Kind::Standard, "JSON object");
        // Storage paths of a standard job are only kept (the job's files stay in its own place).
        assert!(map(&json!({"inputsPath": "x/", "outputsPath": "y/"}), Kind::Standard, 100).is_ok());
    }
}
