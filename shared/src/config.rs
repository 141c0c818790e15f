//! Typed configuration from environment variables (12-factor). Every variable DCC reads is named
//! here, once; `docs/configuration.md` lists them with the same defaults. The defaults run the
//! whole stack on one machine with nothing configured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::job::Limits;
use crate::{Error, Result};

/// Every variable [`Config`] reads; anything else starting with `DCC_` earns a start-up warning.
pub const KNOWN_VARS: &[&str] = &[
    "DCC_REDIS_URL",
    "DCC_REDIS_PREFIX",
    "DCC_REDIS_SHARDS",
    "DCC_STORAGE",
    "DCC_RETENTION",
    "DCC_HISTORY_TTL",
    "DCC_LISTEN",
    "DCC_API_KEYS",
    "DCC_API_KEYS_FILE",
    "DCC_ALLOW_UNAUTHENTICATED",
    "DCC_ALLOWED_ORIGINS",
    "DCC_PUBLIC_HOSTS",
    "DCC_URL",
    "DCC_API_KEY",
    "DISABLE_WORKER",
    "DCC_WORKER_ID",
    "DCC_CPUS",
    "DCC_MEMORY_MB",
    "DCC_MAX_CPUS",
    "DCC_MAX_GPUS",
    "DCC_MAX_MEMORY_MB",
    "DCC_LEASE_SECS",
    "DCC_HEARTBEAT_SECS",
    "DCC_MAX_BODY_BYTES",
    "DCC_MAX_INPUT_BYTES",
    "DCC_MAX_JOB_INPUT_BYTES",
    "DCC_MAX_WAITERS",
    "DCC_MAX_OUTPUT_BYTES",
    "DCC_MAX_LOG_BYTES",
    "DCC_DEFAULT_MEMORY_MB",
    "DCC_MAX_DURATION_SECS",
    "DCC_PIDS_LIMIT",
    "DCC_MAX_WAIT_SECS",
    "DCC_DOCKER_CONCURRENCY",
    "DCC_TMP_DIR",
    "DCC_URL_FETCH_TIMEOUT_SECS",
    "DCC_URL_INPUT_ALLOW",
    "DCC_NOTIFY_SECRET",
    "DCC_NOTIFY_ALLOW",
    "DCC_NOTIFY_MAX_ATTEMPTS",
    "DCC_NOTIFY_BACKOFF_MS",
    "DCC_NOTIFY_TIMEOUT_SECS",
    "DCC_IMAGE_ALLOW",
    "DCC_REGISTRY_AUTH",
    "DCC_REGISTRY_AUTH_FILE",
    "DCC_DOCKER_CONFIG",
    "DCC_PULL_TIMEOUT_SECS",
    "DCC_DOCKER_RUNTIME",
    "DCC_LOG_FORMAT",
    "DCC_DRAIN_TIMEOUT",
    "DCC_SPOT_IMDS",
    "DCC_SPOT_POLL_SECS",
    "DCC_FAST_RESULT_TTL",
    "DCC_S3_FORCE_PATH_STYLE",
    "DCC_GPUS",
    "DCC_GPU_MODE",
    "DCC_GPU_DEVICE_DIR",
    "DCC_GPU_DRIVER_BINDS",
    "DCC_GPU_LD_LIBRARY_PATH",
    "DCC_CPU_SLOTS",
    "DCC_FILES_MODE",
    "DCC_WARM_POOL",
    "DCC_WARM_IDLE_SECS",
    "DCC_MONITOR_IMAGE",
    "DCC_S3_PRESIGN_SECS",
    "DCC_FAST_MAX_INLINE_BYTES",
    "DCC_FAST_MAX_OUTPUT_BYTES",
    "DCC_FAST_MAX_REDIS_BYTES",
    "DCC_DISK_MIN_FREE_PERCENT",
    "DCC_LOG",
    "DCC_DURABILITY",
    "DCC_DURABILITY_TIMEOUT",
];

/// The configuration of a `dcc` process (server, worker, or both).
#[derive(Clone, Debug)]
pub struct Config {
    /// Redis to use (`DCC_REDIS_URL`, default `redis://127.0.0.1:6379`).
    pub redis_url: String,
    /// Key prefix, so deployments and tests can share one Redis (`DCC_REDIS_PREFIX`, `dcc`).
    pub prefix: String,
    /// Shards of a new deployment (`DCC_REDIS_SHARDS`; unset: as the deployment was started).
    pub shards: Option<usize>,
    /// Storage backend: a folder path or `file://` URL (`DCC_STORAGE`, `./dcc-data`).
    pub storage: String,
    /// How long finished jobs and their files are kept (`DCC_RETENTION`, `7d`).
    pub retention: Duration,
    /// How long each minute of history (`GET /api/v1/stats`) is kept; zero keeps none
    /// (`DCC_HISTORY_TTL`, `1d`).
    pub history_ttl: Duration,
    /// HTTP listen address (`DCC_LISTEN`, `127.0.0.1:8080`: local only unless asked).
    pub listen: SocketAddr,
    /// Accepted API keys; empty means no authentication (`DCC_API_KEYS`, comma-separated).
    pub api_keys: Vec<String>,
    /// Named keys with roles and limits, as SHA-256 digests (`DCC_API_KEYS_FILE`, a JSON file
    /// re-read when it changes; see docs/security.md).
    pub api_keys_file: Option<PathBuf>,
    /// Serve a non-loopback address without API keys (`DCC_ALLOW_UNAUTHENTICATED`, false): an
    /// explicit opt-in, since anyone reaching such a server can run any container.
    pub allow_unauthenticated: bool,
    /// Web origins (`https://app.example`) whose pages may call the API from a browser
    /// (`DCC_ALLOWED_ORIGINS`, none: only the server's own dashboard).
    pub allowed_origins: Vec<String>,
    /// Host names browsers reach this server by, besides `localhost` and addresses
    /// (`DCC_PUBLIC_HOSTS`, lower case; none). A keyless server answers only those (DNS
    /// rebinding); a keyed one checks `Host` only when this is set.
    pub public_hosts: Vec<String>,
    /// Run the API without an in-process worker (`DISABLE_WORKER=true`).
    pub disable_worker: bool,
    /// Stable worker id, so a restarted worker finds its own leftovers (`DCC_WORKER_ID`,
    /// default the host name).
    pub worker_id: Option<String>,
    /// CPU slots of the worker (`DCC_CPUS`, default the host's CPU count).
    pub cpus: Option<u32>,
    /// Memory (MiB) the worker gives to jobs, reserved by each job's `memoryMb` while it runs
    /// (`DCC_MEMORY_MB`, default the Docker host's memory).
    pub memory_mb: Option<u64>,
    /// Lease of a running attempt; a worker silent this long loses its jobs (`DCC_LEASE_SECS`, 30).
    pub lease: Duration,
    /// How often a worker renews leases and its health key (`DCC_HEARTBEAT_SECS`, 10).
    pub heartbeat: Duration,
    /// Largest JSON request body (`DCC_MAX_BODY_BYTES`, 64 MiB).
    pub max_body_bytes: u64,
    /// Defaults and bounds of job parameters (`DCC_MAX_INPUT_BYTES` 1 GiB, `DCC_DEFAULT_MEMORY_MB`
    /// 2048, `DCC_MAX_DURATION_SECS` 7 days).
    pub limits: Limits,
    /// Most bytes one job may leave under `/outputs` (`DCC_MAX_OUTPUT_BYTES`, 10 GiB).
    pub max_output_bytes: u64,
    /// Most bytes kept of each of stdout and stderr; the rest is cut (`DCC_MAX_LOG_BYTES`, 64 MiB).
    pub max_log_bytes: u64,
    /// Process limit inside each container (`DCC_PIDS_LIMIT`, 1024).
    pub pids_limit: i64,
    /// Longest a `wait: true` submit or `/wait` blocks (`DCC_MAX_WAIT_SECS`, 600).
    pub max_wait: Duration,
    /// Concurrent container creations per worker; dockerd slows down sharply past a few
    /// (moby #42096) (`DCC_DOCKER_CONCURRENCY`, 4).
    pub docker_concurrency: usize,
    /// Scratch folder for the worker's tar files (`DCC_TMP_DIR`, the system temp folder).
    pub tmp_dir: PathBuf,
    /// Time limit for fetching one `url` input (`DCC_URL_FETCH_TIMEOUT_SECS`, 60).
    pub url_fetch_timeout: Duration,
    /// Internal sources `url` inputs may reach on purpose (`DCC_URL_INPUT_ALLOW`: comma-separated
    /// CIDRs, addresses or host names; none): by default only public addresses are fetched.
    pub url_input_allow: Vec<String>,
    /// Completion webhooks.
    pub notify: NotifyConfig,
    /// Pull credentials per registry host (`DCC_REGISTRY_AUTH`: JSON
    /// `{"<host>": {"username", "password"}}`; none). Never logged.
    pub registry_auth: Option<String>,
    /// A file holding `DCC_REGISTRY_AUTH`'s JSON (`DCC_REGISTRY_AUTH_FILE`; Terraform writes
    /// it from SSM); read when the worker starts.
    pub registry_auth_file: Option<PathBuf>,
    /// The Docker `config.json` a worker reads pull credentials from (`DCC_DOCKER_CONFIG`;
    /// default `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
    /// Longest an image pull may take (`DCC_PULL_TIMEOUT_SECS`, 600): then the job fails with
    /// `IMAGE_NOT_FOUND` instead of holding its slot.
    pub pull_timeout: Duration,
    /// OCI runtime for every CPU job's container (`DCC_DOCKER_RUNTIME`, none: dockerd's default),
    /// e.g. gVisor's `runsc` for untrusted code. GPU jobs use their GPU mode's runtime.
    pub docker_runtime: Option<String>,
    /// `pretty` (default) or `json` logs (`DCC_LOG_FORMAT`).
    pub log_json: bool,
    /// After the first SIGTERM/SIGINT, how long running jobs may go on before they are stopped
    /// and handed back to the queue (`DCC_DRAIN_TIMEOUT`, `10m`).
    pub drain_timeout: Duration,
    /// What confirms a write before a client is told of it (`DCC_DURABILITY`, `none`; see
    /// `queue::durable`), and for how long (`DCC_DURABILITY_TIMEOUT`, `1s`).
    pub durability: crate::queue::durable::DurabilityPolicy,
    /// The instance metadata service a Spot worker watches for its interruption notice and
    /// rebalance recommendation (`DCC_SPOT_IMDS`, e.g. `http://169.254.169.254`; unset: not
    /// watched). The Terraform stack sets it on Spot groups.
    pub spot_imds: Option<String>,
    /// How often it is asked (`DCC_SPOT_POLL_SECS`, 5).
    pub spot_poll: Duration,
    /// The worker reports `UNHEALTHY` (and claims nothing) while its scratch disk has less free
    /// space than this, in percent (`DCC_DISK_MIN_FREE_PERCENT`, 5; 0 turns the check off).
    pub disk_min_free_percent: u64,
    /// How long a finished fast job and its inline result stay in Redis (`DCC_FAST_RESULT_TTL`, `60s`).
    pub fast_result_ttl: Duration,
    /// Most bytes of inline inputs one fast job may carry (`DCC_FAST_MAX_INLINE_BYTES`, 1 MiB).
    pub fast_max_inline_bytes: u64,
    /// Largest single output or log of a fast job; they travel inline through Redis
    /// (`DCC_FAST_MAX_OUTPUT_BYTES`, 16 MiB).
    pub fast_max_output_bytes: u64,
    /// Most bytes all fast jobs' inputs, logs and outputs may hold in Redis together
    /// (`DCC_FAST_MAX_REDIS_BYTES`, 256 MiB): past it `POST /api/v1/run` answers 503 `BUSY`.
    pub fast_max_redis_bytes: u64,
    /// Most bytes of all of one job's inputs together (`DCC_MAX_JOB_INPUT_BYTES`, 10 GiB).
    pub max_job_input_bytes: u64,
    /// Most requests one API process holds open waiting (long-polls, `wait: true`, fast jobs,
    /// WebSockets) (`DCC_MAX_WAITERS`, 10 000): beyond, 503 `BUSY`.
    pub max_waiters: usize,
    /// Path-style S3 URLs (`host/bucket/key`), needed by MinIO and moto
    /// (`DCC_S3_FORCE_PATH_STYLE`, false).
    pub s3_force_path_style: bool,
    /// Lifetime of the presigned links the API redirects to for S3 (`DCC_S3_PRESIGN_SECS`, 300).
    pub s3_presign: Duration,
    /// GPUs of the worker, overriding detection (`DCC_GPUS`; default: NVML, then `/dev/nvidia<N>`).
    pub gpus: Option<u32>,
    /// How GPUs reach containers: `auto`, `runtime`, `device-requests`, `devices` (`DCC_GPU_MODE`).
    pub gpu_mode: String,
    /// Where the NVIDIA device nodes are (`DCC_GPU_DEVICE_DIR`, `/dev`).
    pub gpu_device_dir: PathBuf,
    /// Driver folders bound read-only in `devices` mode, `host[:container]`, comma-separated
    /// (`DCC_GPU_DRIVER_BINDS`, `/usr/local/nvidia`).
    pub gpu_driver_binds: Vec<String>,
    /// `LD_LIBRARY_PATH` of GPU containers in `devices` mode (`DCC_GPU_LD_LIBRARY_PATH`,
    /// `/usr/local/nvidia/lib64`; empty to leave it unset).
    pub gpu_ld_library_path: Option<String>,
    /// CPU-queue slots of the worker (`DCC_CPU_SLOTS`; default CPUs − GPUs, the GPUs' share of the
    /// host being left to GPU jobs).
    pub cpu_slots: Option<u32>,
    /// How inputs and outputs reach containers: `auto` (default: `bind` when the Docker daemon
    /// sees the worker's scratch folder, `copy` otherwise), `copy` (tar through the Docker API)
    /// or `bind` (a host folder bound in; needs the worker on the Docker host)
    /// (`DCC_FILES_MODE`).
    pub files_mode: String,
    /// Most warm containers a worker keeps for fast jobs (`DCC_WARM_POOL`, 2; 0: none).
    pub warm_pool: usize,
    /// How long a shape of fast job keeps its warm containers after the last job of that shape
    /// (`DCC_WARM_IDLE_SECS`, 300).
    pub warm_idle: Duration,
    /// The image of the 2018 `/monitor` route's test job (`DCC_MONITOR_IMAGE`, `busybox:latest`,
    /// 2018's own).
    pub monitor_image: String,
}

impl Config {
    /// Refuses to serve the API on an address other machines can reach without API keys, unless
    /// the operator said so (`DCC_ALLOW_UNAUTHENTICATED=true`): such a server runs any image,
    /// with a network if asked, for whoever finds it.
    pub fn check_exposure(&self) -> Result<()> {
        let keyed = !self.api_keys.is_empty() || self.api_keys_file.is_some();
        if self.listen.ip().is_loopback() || keyed || self.allow_unauthenticated {
            return Ok(());
        }
        Err(Error::Config(format!(
            "DCC_LISTEN={} can be reached from other machines, and no DCC_API_KEYS is set: anyone who \
             reaches it could run any container on this host. Set DCC_API_KEYS (comma-separated keys), \
             listen on 127.0.0.1, or set DCC_ALLOW_UNAUTHENTICATED=true to accept the risk",
            self.listen
        )))
    }

    /// How long ended jobs are kept, standard and fast.
    pub fn retention(&self) -> crate::queue::reap::Retention {
        crate::queue::reap::Retention {
            standard: self.retention,
            fast: self.fast_result_ttl,
        }
    }
}

/// Most shards `DCC_REDIS_SHARDS` may ask for: a claim that finds nothing visits every shard.
pub const MAX_SHARDS: usize = 64;

/// Where a process finds the queue: the only part of [`Config`] the scaler needs.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `DCC_REDIS_URL`, default `redis://127.0.0.1:6379`.
    pub url: String,
    /// `DCC_REDIS_PREFIX`, default `dcc`.
    pub prefix: String,
    /// `DCC_REDIS_SHARDS` as set, checked by [`RedisConfig::shards`].
    shards: Option<String>,
}

impl RedisConfig {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads through `lookup`; unset or empty variables take the defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        RedisConfig {
            url: get("DCC_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into()),
            prefix: get("DCC_REDIS_PREFIX").unwrap_or_else(|| "dcc".into()),
            shards: get("DCC_REDIS_SHARDS"),
        }
    }

    /// `DCC_REDIS_SHARDS`: how many shards a new deployment's queue is split over (1 to
    /// [`MAX_SHARDS`]); unset, a process takes the count the deployment was started with
    /// ([`crate::queue::Queue::agree_on_shards`]).
    pub fn shards(&self) -> Result<Option<usize>> {
        let Some(raw) = &self.shards else { return Ok(None) };
        match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_SHARDS).contains(&n) => Ok(Some(n)),
            _ => Err(crate::Error::Config(format!(
                "DCC_REDIS_SHARDS must be a whole number from 1 to {MAX_SHARDS}, not {raw:?}"
            ))),
        }
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// `DCC_*` variables set in the environment that DCC does not know (likely typos).
    pub fn unknown_vars() -> Vec<String> {
        std::env::vars()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("DCC_") && !KNOWN_VARS.contains(&k.as_str()))
            .collect()
    }

    /// Reads configuration through `get` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let redis = RedisConfig::from_lookup(&lookup);
        let v = Vars(lookup);
        let (lease, heartbeat) = lease_and_heartbeat(&v)?;
        Ok(Config {
            shards: redis.shards()?,
            redis_url: redis.url,
            prefix: redis.prefix,
            storage: v.get("DCC_STORAGE").unwrap_or_else(|| "./dcc-data".into()),
            retention: v.duration("DCC_RETENTION", 7 * 24 * 3600)?,
            history_ttl: history_ttl(v.get("DCC_HISTORY_TTL"))?,
            listen: listen(&v)?,
            api_keys: v.list("DCC_API_KEYS"),
            allowed_origins: v.list("DCC_ALLOWED_ORIGINS"),
            public_hosts: v
                .list("DCC_PUBLIC_HOSTS")
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            api_keys_file: v.get("DCC_API_KEYS_FILE").map(PathBuf::from),
            allow_unauthenticated: v.flag("DCC_ALLOW_UNAUTHENTICATED"),
            disable_worker: v.flag("DISABLE_WORKER"),
            worker_id: v.get("DCC_WORKER_ID"),
            cpus: cpus(&v)?,
            memory_mb: v.get("DCC_MEMORY_MB").map(|_| v.num("DCC_MEMORY_MB", 0)).transpose()?,
            lease,
            heartbeat,
            max_body_bytes: v.num("DCC_MAX_BODY_BYTES", 64 << 20)?,
            limits: limits(&v)?,
            max_output_bytes: v.num("DCC_MAX_OUTPUT_BYTES", 10 << 30)?,
            max_log_bytes: v.num("DCC_MAX_LOG_BYTES", 64 << 20)?,
            pids_limit: v.num("DCC_PIDS_LIMIT", 1024)? as i64,
            max_wait: v.secs("DCC_MAX_WAIT_SECS", 600)?,
            docker_concurrency: v.num("DCC_DOCKER_CONCURRENCY", 4)?.max(1) as usize,
            tmp_dir: v
                .get("DCC_TMP_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir),
            url_fetch_timeout: v.secs("DCC_URL_FETCH_TIMEOUT_SECS", 60)?,
            url_input_allow: v.list("DCC_URL_INPUT_ALLOW"),
            notify: NotifyConfig::from_vars(&v)?,
            pull_timeout: v.secs("DCC_PULL_TIMEOUT_SECS", 600)?,
            registry_auth: v.get("DCC_REGISTRY_AUTH"),
            registry_auth_file: v.get("DCC_REGISTRY_AUTH_FILE").map(PathBuf::from),
            docker_config: v.get("DCC_DOCKER_CONFIG").map(PathBuf::from),
            docker_runtime: v.get("DCC_DOCKER_RUNTIME"),
            log_json: v.get("DCC_LOG_FORMAT").as_deref() == Some("json"),
            drain_timeout: v.duration("DCC_DRAIN_TIMEOUT", 600)?,
            durability: durability(&v)?,
            spot_imds: v.get("DCC_SPOT_IMDS").map(|u| u.trim_end_matches('/').to_string()),
            spot_poll: v.secs("DCC_SPOT_POLL_SECS", 5)?,
            disk_min_free_percent: v.num("DCC_DISK_MIN_FREE_PERCENT", 5)?.min(100),
            fast_result_ttl: v.duration("DCC_FAST_RESULT_TTL", 60)?,
            fast_max_inline_bytes: v.num("DCC_FAST_MAX_INLINE_BYTES", 1 << 20)?,
            fast_max_output_bytes: v.num("DCC_FAST_MAX_OUTPUT_BYTES", 16 << 20)?,
            fast_max_redis_bytes: v.num("DCC_FAST_MAX_REDIS_BYTES", 256 << 20)?,
            max_job_input_bytes: v.num("DCC_MAX_JOB_INPUT_BYTES", 10 << 30)?,
            max_waiters: v.num("DCC_MAX_WAITERS", 10_000)? as usize,
            s3_force_path_style: v.flag("DCC_S3_FORCE_PATH_STYLE"),
            s3_presign: v.secs("DCC_S3_PRESIGN_SECS", 300)?,
            gpus: v.opt_u32("DCC_GPUS")?,
            gpu_mode: v.get("DCC_GPU_MODE").unwrap_or_else(|| "auto".into()),
            gpu_device_dir: v
                .get("DCC_GPU_DEVICE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/dev")),
            gpu_driver_binds: gpu_driver_binds(&v),
            gpu_ld_library_path: gpu_ld_library_path(&v),
            files_mode: v.get("DCC_FILES_MODE").unwrap_or_else(|| "auto".into()),
            warm_pool: v.num("DCC_WARM_POOL", 2)? as usize,
            warm_idle: v.secs("DCC_WARM_IDLE_SECS", 300)?,
            monitor_image: v.get("DCC_MONITOR_IMAGE").unwrap_or_else(|| "busybox:latest".into()),
            cpu_slots: v.opt_u32("DCC_CPU_SLOTS")?,
        })
    }
}

/// `DCC_LISTEN`: loopback unless asked.
fn listen<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<SocketAddr> {
    let listen = v.get("DCC_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into());
    listen
        .parse()
        .map_err(|_| Error::Config(format!("DCC_LISTEN={listen:?} is not an address like 0.0.0.0:8080")))
}

/// `DCC_CPUS`: a positive whole number when set.
fn cpus<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<Option<u32>> {
    let cpus = v.opt_u32("DCC_CPUS")?;
    if cpus == Some(0) {
        return Err(Error::Config("DCC_CPUS=\"0\" is not a positive whole number".into()));
    }
    Ok(cpus)
}

/// `DCC_LEASE_SECS` and `DCC_HEARTBEAT_SECS`; a beat must come within a lease.
fn lease_and_heartbeat<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<(Duration, Duration)> {
    let lease = v.secs("DCC_LEASE_SECS", 30)?;
    let heartbeat = v.secs("DCC_HEARTBEAT_SECS", 10)?;
    if heartbeat >= lease {
        return Err(Error::Config(
            "DCC_HEARTBEAT_SECS must be shorter than DCC_LEASE_SECS, or leases lapse between beats".into(),
        ));
    }
    Ok((lease, heartbeat))
}

/// `DCC_DURABILITY` and `DCC_DURABILITY_TIMEOUT`.
fn durability<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<crate::queue::durable::DurabilityPolicy> {
    let mode = match v.get("DCC_DURABILITY") {
        Some(s) => s.parse().map_err(|e| Error::Config(format!("DCC_DURABILITY={e}")))?,
        None => Default::default(),
    };
    let timeout = v.duration("DCC_DURABILITY_TIMEOUT", 1)?;
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(Error::Config(
            "DCC_DURABILITY_TIMEOUT must be more than 0 and at most 60s".into(),
        ));
    }
    Ok(crate::queue::durable::DurabilityPolicy { mode, timeout })
}

/// `DCC_GPU_DRIVER_BINDS`: set to empty, none; unset, the default.
fn gpu_driver_binds<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Vec<String> {
    match v.raw("DCC_GPU_DRIVER_BINDS") {
        Some(_) => v.list("DCC_GPU_DRIVER_BINDS"),
        None => vec!["/usr/local/nvidia".into()],
    }
}

/// `DCC_GPU_LD_LIBRARY_PATH`: set to empty, none; unset, the default.
fn gpu_ld_library_path<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Option<String> {
    match v.raw("DCC_GPU_LD_LIBRARY_PATH") {
        Some(p) if p.is_empty() => None,
        Some(p) => Some(p),
        None => Some("/usr/local/nvidia/lib64".into()),
    }
}

/// Shortest webhook secret: a short one could be guessed from signed bodies.
const MIN_NOTIFY_SECRET: usize = 16;

/// Completion webhooks' settings (`docs/webhooks.md`).
#[derive(Clone)]
pub struct NotifyConfig {
    /// The deployment's signing secret (`DCC_NOTIFY_SECRET`, none: jobs with `notify` are
    /// refused). Every server must have the same one.
    pub secret: Option<String>,
    /// Internal receivers webhooks may reach on purpose (`DCC_NOTIFY_ALLOW`, the syntax of
    /// `DCC_URL_INPUT_ALLOW`; none): by default only public addresses.
    pub allow: Vec<String>,
    /// POSTs of one webhook before its delivery is `failed` (`DCC_NOTIFY_MAX_ATTEMPTS`, 20:
    /// one to two hours of retries).
    pub max_attempts: u32,
    /// Wait before the first retry, doubling up to 5 minutes, plus up to as much jitter
    /// (`DCC_NOTIFY_BACKOFF_MS`, 1000).
    pub backoff: Duration,
    /// Time limit of one POST (`DCC_NOTIFY_TIMEOUT_SECS`, 10).
    pub timeout: Duration,
}

impl std::fmt::Debug for NotifyConfig {
    /// Without the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("allow", &self.allow)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl NotifyConfig {
    fn from_vars<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<Self> {
        let secret = match v.get("DCC_NOTIFY_SECRET") {
            Some(s) if s.len() < MIN_NOTIFY_SECRET => {
                return Err(Error::Config(format!(
                    "DCC_NOTIFY_SECRET must be at least {MIN_NOTIFY_SECRET} characters (e.g. `openssl rand -hex 32`)"
                )));
            }
            s => s,
        };
        Ok(NotifyConfig {
            secret,
            allow: v.list("DCC_NOTIFY_ALLOW"),
            max_attempts: v.num("DCC_NOTIFY_MAX_ATTEMPTS", 20)?.clamp(1, 1000) as u32,
            backoff: Duration::from_millis(v.num("DCC_NOTIFY_BACKOFF_MS", 1000)?.max(10)),
            timeout: v.secs("DCC_NOTIFY_TIMEOUT_SECS", 10)?,
        })
    }
}

/// The job limits. The largest worker shape (`DCC_MAX_CPUS`, `DCC_MAX_GPUS`,
/// `DCC_MAX_MEMORY_MB`) counts only when the operator declares it: jobs beyond are refused at
/// submit with 422 UNSCHEDULABLE (the hard bounds stay for what is merely absurd).
fn limits<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> Result<Limits> {
    let mut limits = Limits {
        max_input_bytes: v.num("DCC_MAX_INPUT_BYTES", 1 << 30)?,
        default_memory_mb: v.num("DCC_DEFAULT_MEMORY_MB", 2048)?,
        max_duration_secs: v.num("DCC_MAX_DURATION_SECS", 7 * 24 * 3600)?,
        declared: crate::job::spec::DeclaredShape {
            cpus: v.get("DCC_MAX_CPUS").is_some(),
            gpus: v.get("DCC_MAX_GPUS").is_some(),
            memory_mb: v.get("DCC_MAX_MEMORY_MB").is_some(),
        },
        images: crate::job::image::ImageAllow::parse(&v.list("DCC_IMAGE_ALLOW")).map_err(Error::Config)?,
        ..Limits::default()
    };
    if limits.declared.cpus {
        limits.max_cpus = v.num("DCC_MAX_CPUS", 0)? as f64;
    }
    if limits.declared.gpus {
        limits.max_gpus = v.num("DCC_MAX_GPUS", 0)? as u32;
    }
    if limits.declared.memory_mb {
        limits.max_memory_mb = v.num("DCC_MAX_MEMORY_MB", 0)?;
    }
    Ok(limits)
}

/// The process's variables, read through a lookup, with one parser per kind of value.
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    /// Trimmed, set or not: "set to empty" (meaning none) is not "unset" (meaning the default).
    fn raw(&self, k: &str) -> Option<String> {
        (self.0)(k).map(|v| v.trim().to_string())
    }

    /// Trimmed; unset or empty: `None`.
    fn get(&self, k: &str) -> Option<String> {
        self.raw(k).filter(|v| !v.is_empty())
    }

    /// A whole number (`_` separators allowed).
    fn num(&self, k: &str, default: u64) -> Result<u64> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .replace('_', "")
                .parse()
                .map_err(|_| Error::Config(format!("{k}={v:?} is not a whole number"))),
        }
    }

    /// A whole number when set.
    fn opt_u32(&self, k: &str) -> Result<Option<u32>> {
        self.get(k)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| Error::Config(format!("{k}={v:?} is not a whole number")))
            })
            .transpose()
    }

    /// Seconds, more than 0.
    fn secs(&self, k: &str, default: u64) -> Result<Duration> {
        let n = self.num(k, default)?;
        if n == 0 {
            return Err(Error::Config(format!("{k} must be more than 0")));
        }
        Ok(Duration::from_secs(n))
    }

    /// A duration like `90s`, `15m`, `7d` ([`parse_duration`]).
    fn duration(&self, k: &str, default_secs: u64) -> Result<Duration> {
        match self.get(k) {
            None => Ok(Duration::from_secs(default_secs)),
            Some(v) => parse_duration(&v).map_err(|m| Error::Config(format!("{k}: {m}"))),
        }
    }

    /// A comma-separated list; unset or empty: none.
    fn list(&self, k: &str) -> Vec<String> {
        self.get(k)
            .map(|v| {
                v.split(',')
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `1`, `true` or `yes` (any case).
    fn flag(&self, k: &str) -> bool {
        matches!(
            self.get(k).map(|v| v.to_ascii_lowercase()).as_deref(),
            Some("1" | "true" | "yes")
        )
    }
}

/// Parses `90`, `90s`, `15m`, `12h` or `7d`.
/// `DCC_HISTORY_TTL`: `0` (keep none), else from an hour (the dashboard's shortest view) to 7
/// days (the longest range `GET /api/v1/stats` reads); a day when unset.
fn history_ttl(v: Option<String>) -> Result<Duration> {
    let ttl = match v.as_deref().map(str::trim) {
        None => return Ok(crate::history::DEFAULT_TTL),
        Some("0") => return Ok(Duration::ZERO),
        Some(v) => parse_duration(v).map_err(|m| Error::Config(format!("DCC_HISTORY_TTL: {m}")))?,
    };
    if !(3600..=crate::history::MAX_SPAN.as_secs()).contains(&ttl.as_secs()) {
        return Err(Error::Config(
            "DCC_HISTORY_TTL: 0 (no history), or from 1h to 7d".into(),
        ));
    }
    Ok(ttl)
}

pub fn parse_duration(v: &str) -> std::result::Result<Duration, String> {
    let v = v.trim();
    if let Some(ms) = v.strip_suffix("ms") {
        return match ms.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
            _ => Err(format!("{v:?} is not a duration like 500ms, 90s, 15m, 12h or 7d")),
        };
    }
    let (num, mult) = match v.char_indices().last() {
        Some((i, 's')) => (&v[..i], 1),
        Some((i, 'm')) => (&v[..i], 60),
        Some((i, 'h')) => (&v[..i], 3600),
        Some((i, 'd')) => (&v[..i], 86400),
        _ => (v, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a duration like 500ms, 90s, 15m, 12h or 7d"))?;
    if n == 0 {
        return Err("a duration must be more than 0".into());
    }
    Ok(Duration::from_secs(n * mult))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_work_with_nothing_set() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
        assert_eq!(c.retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.lease, Duration::from_secs(30));
        assert!(c.api_keys.is_empty());
        assert!(!c.allow_unauthenticated);
        c.check_exposure().expect("loopback needs no key");
        assert!(!c.disable_worker);
    }

    #[test]
    fn parses_and_rejects() {
        let c = cfg(&[
            ("DCC_RETENTION", "12h"),
            ("DCC_API_KEYS", "a, b,"),
            ("DISABLE_WORKER", "TRUE"),
        ])
        .unwrap();
        assert_eq!(c.retention, Duration::from_secs(12 * 3600));
        assert_eq!(c.api_keys, vec!["a", "b"]);
        assert!(c.disable_worker);
        assert!(cfg(&[("DCC_CPUS", "0")]).is_err());
        assert!(cfg(&[("DCC_LISTEN", "nope")]).is_err());
        assert!(cfg(&[("DCC_LEASE_SECS", "5"), ("DCC_HEARTBEAT_SECS", "5")]).is_err());
        assert!(parse_duration("7x").is_err());
        let g = cfg(&[("DCC_GPU_DRIVER_BINDS", ""), ("DCC_GPU_LD_LIBRARY_PATH", " ")]).unwrap();
        assert!(
            g.gpu_driver_binds.is_empty() && g.gpu_ld_library_path.is_none(),
            "empty means none"
        );
        let d = cfg(&[]).unwrap();
        assert_eq!(d.gpu_driver_binds, vec!["/usr/local/nvidia"]);
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(d.history_ttl, Duration::from_secs(86400));
        assert_eq!(cfg(&[("DCC_HISTORY_TTL", "0")]).unwrap().history_ttl, Duration::ZERO);
        assert_eq!(
            cfg(&[("DCC_HISTORY_TTL", "7d")]).unwrap().history_ttl,
            Duration::from_secs(7 * 86400)
        );
        for bad in ["30m", "8d", "soon"] {
            assert!(cfg(&[("DCC_HISTORY_TTL", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reachable_listener_needs_keys_or_an_explicit_opt_out() {
        let open = cfg(&[("DCC_LISTEN", "0.0.0.0:8080")]).unwrap();
        let e = open.check_exposure().unwrap_err().to_string();
        assert!(
            e.contains("DCC_API_KEYS") && e.contains("DCC_ALLOW_UNAUTHENTICATED"),
            "{e}"
        );
        assert!(cfg(&[("DCC_LISTEN", "[::]:8080")]).unwrap().check_exposure().is_err());
        let keyed = cfg(&[("DCC_LISTEN", "0.0.0.0:8080"), ("DCC_API_KEYS", "k")]).unwrap();
        keyed.check_exposure().unwrap();
        let opted = cfg(&[("DCC_LISTEN", "10.0.0.5:8080"), ("DCC_ALLOW_UNAUTHENTICATED", "true")]).unwrap();
        opted.check_exposure().unwrap();
        cfg(&[("DCC_LISTEN", "[::1]:8080")]).unwrap().check_exposure().unwrap();
    }

    /// Every variable is declared once in `KNOWN_VARS`: the configuration reads no other, and
    /// docs/configuration.md's table lists exactly those (a variable added in one place and not
    /// the others fails here).
    #[test]
    fn shard_counts_are_checked() {
        let shards = |v: &str| RedisConfig::from_lookup(|k| (k == "DCC_REDIS_SHARDS").then(|| v.to_string())).shards();
        assert_eq!(shards("").unwrap(), None);
        assert_eq!(shards("3").unwrap(), Some(3));
        assert_eq!(shards("64").unwrap(), Some(64));
        for bad in ["0", "65", "three", "-1"] {
            let e = shards(bad).unwrap_err().to_string();
            assert!(
                e.contains("DCC_REDIS_SHARDS must be a whole number from 1 to 64"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn known_vars_are_the_ones_read_and_the_ones_documented() {
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let _ = Config::from_lookup(|k| {
            read.borrow_mut().insert(k.to_string());
            None
        });
        for k in read.borrow().iter() {
            assert!(KNOWN_VARS.contains(&k.as_str()), "{k} is read but not in KNOWN_VARS");
        }
        let docs = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md"));
        let documented: std::collections::BTreeSet<&str> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| "))
            .filter_map(|l| l.split(" | ").next())
            .flat_map(|first| first.split(", "))
            .filter_map(|n| n.strip_prefix('`')?.strip_suffix('`'))
            .filter(|n| n.starts_with("DCC_") || *n == "DISABLE_WORKER")
            .collect();
        let known: std::collections::BTreeSet<&str> = KNOWN_VARS.iter().copied().collect();
        assert_eq!(documented, known, "docs/configuration.md and KNOWN_VARS differ");
    }
}
