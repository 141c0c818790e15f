//! Pull credentials for private registries, per registry host, from (first match wins):
//! 1. `DCC_REGISTRY_AUTH`: JSON `{"<host>": {"username": "…", "password": "…"}}` (Terraform puts
//!    it in SSM);
//! 2. the Docker `config.json` the worker reads (`DCC_DOCKER_CONFIG`, else
//!    `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): its `credHelpers`, `auths`
//!    (what `docker login` writes) and `credsStore`, re-read at every pull so a `docker login`
//!    takes effect without a restart;
//! 3. for Amazon ECR (`<account>.dkr.ecr.<region>.amazonaws.com`): the worker's own AWS
//!    identity (the instance role), through `GetAuthorizationToken`, cached per registry until
//!    15 minutes before the token expires (tokens last 12 hours);
//! 4. none: an anonymous pull.
//!
//! Credentials go to the Docker daemon with the pull and nowhere else: they are never in a job
//! record, a log line or an error (errors name the registry and the source, not the secret).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

/// An ECR token is fetched anew this long before it expires.
const ECR_REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);

/// How long a token whose expiry is not comfortably ahead is kept.
const ECR_SHORT_KEEP: Duration = Duration::from_secs(5 * 60);

/// Longest a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
struct Login {
    username: String,
    password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Where a worker finds pull credentials.
#[derive(Clone, Debug, Default)]
pub struct Registries {
    /// From `DCC_REGISTRY_AUTH`, by registry host.
    configured: HashMap<String, Login>,
    /// The Docker config file, if any.
    docker_config: Option<PathBuf>,
    /// Where credential helpers are found (`None`: on `PATH`, as Docker finds them).
    helper_dir: Option<PathBuf>,
    /// Amazon ECR tokens.
    ecr: Ecr,
}

/// Amazon ECR logins from the worker's AWS identity, cached per registry host.
#[derive(Clone, Default)]
struct Ecr {
    /// The AWS configuration (`None`: the environment's, loaded at first use: the instance role).
    config: Option<aws_config::SdkConfig>,
    /// host → (login, when to fetch a new one).
    cache: Arc<tokio::sync::Mutex<HashMap<String, (Login, SystemTime)>>>,
}

impl std::fmt::Debug for Ecr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ecr").finish_non_exhaustive()
    }
}

/// `DCC_REGISTRY_AUTH`'s shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfiguredLogin {
    username: String,
    password: String,
}

/// The parts of Docker's `config.json` that hold credentials.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthEntry {
    /// base64 of `user:password`.
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// A credential helper's answer (`docker-credential-<name> get`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Why a credential source could not be used. No variant holds a secret: the messages reach
/// job errors and logs.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `DCC_REGISTRY_AUTH` is not the JSON it should be.
    #[error(
        "DCC_REGISTRY_AUTH is not JSON of the form {{\"<registry host>\": {{\"username\": \"…\", \"password\": \"…\"}}}} (line {line}, column {column})"
    )]
    BadAuthSetting {
        /// Where the JSON broke.
        line: usize,
        /// Where the JSON broke.
        column: usize,
    },
    /// The Docker config file could not be read.
    #[error("reading {path}: {source}")]
    ConfigUnreadable {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Docker config file is not one.
    #[error("{path} is not a Docker config file (line {line}, column {column})")]
    ConfigNotJson {
        /// The file.
        path: String,
        /// Where the JSON broke.
        line: usize,
        /// Where the JSON broke.
        column: usize,
    },
    /// An `auths` entry of the Docker config is not `base64(user:password)`.
    #[error("the Docker config's auths entry for {0} is not base64 of user:password")]
    BadAuthEntry(String),
    /// A credential helper named in the Docker config failed.
    #[error("{0}")]
    Helper(String),
    /// Amazon ECR did not hand out a pull token.
    #[error("{0}")]
    Ecr(String),
}

impl Registries {
    /// From `DCC_REGISTRY_AUTH` (JSON, or empty) and the Docker config path (`None`: the
    /// default places). A bad value is an error that never repeats it (it holds secrets).
    pub fn new(registry_auth: Option<&str>, docker_config: Option<PathBuf>) -> Result<Self, RegistryError> {
        let configured = match registry_auth.map(str::trim).filter(|s| !s.is_empty()) {
            None => HashMap::new(),
            Some(json) => serde_json::from_str::<HashMap<String, ConfiguredLogin>>(json)
                .map_err(|e| RegistryError::BadAuthSetting {
                    line: e.line(),
                    column: e.column(),
                })?
                .into_iter()
                .map(|(host, l)| {
                    (
                        normalize(&host),
                        Login {
                            username: l.username,
                            password: l.password,
                        },
                    )
                })
                .collect(),
        };
        let docker_config = docker_config.or_else(default_docker_config);
        Ok(Registries {
            configured,
            docker_config,
            helper_dir: None,
            ecr: Ecr::default(),
        })
    }

    /// Asks ECR with this AWS configuration (its credentials and endpoint; the region comes from
    /// each registry's host) instead of the environment's.
    pub fn with_aws_config(mut self, config: aws_config::SdkConfig) -> Self {
        self.ecr.config = Some(config);
        self
    }

    /// Looks for `docker-credential-*` helpers in `dir` instead of on `PATH`.
    pub fn with_helper_dir(mut self, dir: PathBuf) -> Self {
        self.helper_dir = Some(dir);
        self
    }

    /// Credentials for pulling `image`, `None` for an anonymous pull; `Err` (without secrets)
    /// when a source that names this registry cannot be used.
    pub async fn credentials(&self, image: &str) -> Result<Option<DockerCredentials>, RegistryError> {
        let host = normalize(dcc_shared::job::image::registry(image));
        let mut login = match self.configured.get(&host) {
            Some(l) => Some(l.clone()),
            None => self.docker_config_login(&host).await?,
        };
        if login.is_none()
            && let Some(region) = ecr_region(&host)
        {
            login = Some(self.ecr.login(&host, region).await?);
        }
        Ok(login.map(|l| credentials_for(&host, l)))
    }

    async fn docker_config_login(&self, host: &str) -> Result<Option<Login>, RegistryError> {
        let Some(path) = &self.docker_config else {
            return Ok(None);
        };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RegistryError::ConfigUnreadable {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let config: DockerConfig = serde_json::from_str(&text).map_err(|e| RegistryError::ConfigNotJson {
            path: path.display().to_string(),
            line: e.line(),
            column: e.column(),
        })?;
        if let Some(helper) = config
            .cred_helpers
            .iter()
            .find(|(k, _)| normalize(k) == host)
            .map(|(_, v)| v)
        {
            return self.helper_login(helper, host).await;
        }
        if let Some(entry) = config.auths.iter().find(|(k, _)| normalize(k) == host).map(|(_, v)| v) {
            return entry_login(entry, host).map(Some);
        }
        match &config.creds_store {
            Some(store) if !store.is_empty() => self.helper_login(store, host).await,
            _ => Ok(None),
        }
    }
}

impl Ecr {
    /// The cached login for `host`, or a new token from `GetAuthorizationToken`.
    async fn login(&self, host: &str, region: &str) -> Result<Login, RegistryError> {
        let mut cache = self.cache.lock().await;
        if let Some((login, refresh_at)) = cache.get(host)
            && SystemTime::now() < *refresh_at
        {
            return Ok(login.clone());
        }
        let config = match &self.config {
            Some(c) => c.clone(),
            None => aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
        };
        let client = aws_sdk_ecr::Client::from_conf(
            aws_sdk_ecr::config::Builder::from(&config)
                .region(aws_sdk_ecr::config::Region::new(region.to_string()))
                .build(),
        );
        // One token opens every registry the identity may read; it is cached per host anyway.
        let answer = client
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| {
                RegistryError::Ecr(format!(
                    "Amazon ECR GetAuthorizationToken for {host} failed (the worker's AWS identity needs ecr:GetAuthorizationToken): {}",
                    aws_sdk_ecr::error::DisplayErrorContext(&e)
                ))
            })?;
        let data = answer
            .authorization_data()
            .first()
            .ok_or_else(|| RegistryError::Ecr(format!("Amazon ECR answered no token for {host}")))?;
        let bad = || RegistryError::Ecr(format!("Amazon ECR's token for {host} is not base64 of AWS:<password>"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.authorization_token().unwrap_or_default())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
        let expires = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
        let login = Login {
            username: username.to_string(),
            password: password.to_string(),
        };
        // An expiry not comfortably ahead (a host clock that is off, an emulator's fixed date)
        // still bounds how often the API is asked: the token is kept a few minutes.
        let refresh_at = expires
            .checked_sub(ECR_REFRESH_BEFORE)
            .filter(|t| *t > SystemTime::now())
            .unwrap_or_else(|| SystemTime::now() + ECR_SHORT_KEEP);
        cache.insert(host.to_string(), (login.clone(), refresh_at));
        tracing::info!(registry = host, "fetched an Amazon ECR pull token");
        Ok(login)
    }
}

/// The region of an Amazon ECR registry host (`<12 digits>.dkr.ecr.<region>.amazonaws.com`, or
/// `.amazonaws.com.cn`); `None` for any other registry.
fn ecr_region(host: &str) -> Option<&str> {
    let parts: Vec<&str> = host.split('.').collect();
    let ok = parts.len() >= 6
        && parts[0].len() == 12
        && parts[0].bytes().all(|b| b.is_ascii_digit())
        && parts[1] == "dkr"
        && parts[2] == "ecr"
        && matches!(&parts[4..], ["amazonaws", "com"] | ["amazonaws", "com", "cn"]);
    // Not `then_some`: `parts[3]` must not be read for a short host.
    if ok { Some(parts[3]) } else { None }
}

/// What bollard sends: a token as `identitytoken`, a password as `password`.
fn credentials_for(host: &str, l: Login) -> DockerCredentials {
    let server = Some(if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    });
    if l.username == "<token>" {
        DockerCredentials {
            identitytoken: Some(l.password),
            serveraddress: server,
            ..Default::default()
        }
    } else {
        DockerCredentials {
            username: Some(l.username),
            password: Some(l.password),
            serveraddress: server,
            ..Default::default()
        }
    }
}

fn entry_login(e: &AuthEntry, host: &str) -> Result<Login, RegistryError> {
    if let Some(token) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Login {
            username: "<token>".into(),
            password: token.clone(),
        });
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Login {
            username: u.clone(),
            password: p.clone(),
        });
    }
    let bad = || RegistryError::BadAuthEntry(host.to_string());
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(e.auth.as_deref().unwrap_or_default().trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Login {
        username: u.to_string(),
        password: p.to_string(),
    })
}

impl Registries {
    /// Asks `docker-credential-<helper>` for `host`'s login; `None` when it has none.
    async fn helper_login(&self, helper: &str, host: &str) -> Result<Option<Login>, RegistryError> {
        let failed = |m: String| RegistryError::Helper(m);
        use tokio::io::AsyncWriteExt;
        if helper.is_empty()
            || !helper
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(failed(format!("credential helper name {helper:?} is not a plain name")));
        }
        let program = format!("docker-credential-{helper}");
        let path = match &self.helper_dir {
            Some(dir) => dir.join(&program),
            None => PathBuf::from(&program),
        };
        let mut child = tokio::process::Command::new(path)
            .arg("get")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("running {program} for {host}: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(host.as_bytes()).await;
        }
        let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                failed(format!(
                    "{program} did not answer for {host} within {} s",
                    HELPER_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| failed(format!("running {program} for {host}: {e}")))?;
        if !out.status.success() {
            // Helpers say "credentials not found in native keychain" on stdout: no login for it.
            let said = String::from_utf8_lossy(&out.stdout);
            if said.contains("not found") {
                return Ok(None);
            }
            return Err(failed(format!("{program} failed for {host} ({})", out.status)));
        }
        let a: HelperAnswer = serde_json::from_slice(&out.stdout)
            .map_err(|_| failed(format!("{program} answered something other than its JSON for {host}")))?;
        Ok(Some(Login {
            username: a.username,
            password: a.secret,
        }))
    }
}

/// Registry host as keys name it: without scheme or path, Docker Hub's aliases as `docker.io`.
fn normalize(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    }
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Whether a pull failed because the registry's pull rate limit was reached.
pub fn pull_rate_limited(daemon_message: &str) -> bool {
    let m = daemon_message.to_ascii_lowercase();
    // The registry's error code (Docker Hub: "toomanyrequests: You have reached your pull rate
    // limit…") or the bare HTTP status.
    m.contains("toomanyrequests") || m.contains("pull rate limit") || m.contains("429 too many requests")
}

/// Whether a pull failed because the registry refused the credentials (or their absence), as
/// opposed to the image not existing. Docker Hub answers "pull access denied … repository does
/// not exist or may require 'docker login'" for both; that stays `IMAGE_NOT_FOUND`.
pub fn pull_denied(daemon_message: &str) -> bool {
    let m = daemon_message.to_ascii_lowercase();
    if m.contains("repository does not exist") {
        return false;
    }
    // The registry's own error codes (`UNAUTHORIZED`, `DENIED`) and Docker's wording of a
    // missing login; not a bare "denied", which the daemon also says of its own files.
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "incorrect username or password",
        "denied: ",
        "403 forbidden",
    ]
    .iter()
    .any(|w| m.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_config(json: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    #[tokio::test]
    async fn sources_in_order_and_hosts_normalized() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:from-config");
        let (_d, path) = write_config(&format!(
            r#"{{"auths": {{"https://registry.example.com/v2/": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"identitytoken": "tok"}}}}}}"#
        ));
        let r = Registries::new(
            Some(r#"{"ghcr.io": {"username": "ci", "password": "from-env"}}"#),
            Some(path),
        )
        .unwrap();
        let c = r.credentials("ghcr.io/team/app:1").await.unwrap().unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("ci"), Some("from-env"))
        );
        let c = r
            .credentials("registry.example.com/x/y@sha256:ab")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("bob"), Some("from-config"))
        );
        assert_eq!(c.serveraddress.as_deref(), Some("registry.example.com"));
        let c = r.credentials("someone/private").await.unwrap().unwrap();
        assert_eq!(c.identitytoken.as_deref(), Some("tok"));
        assert_eq!(r.credentials("quay.io/open/thing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn missing_config_is_anonymous_and_bad_values_never_echo_secrets() {
        let r = Registries::new(None, Some("/nonexistent/config.json".into())).unwrap();
        assert_eq!(r.credentials("busybox").await.unwrap(), None);
        let e = Registries::new(Some(r#"{"ghcr.io": "hunter2-secret"}"#), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("DCC_REGISTRY_AUTH") && !e.contains("hunter2"), "{e}");
        let (_d, path) = write_config(r#"{"auths": {"r.example": {"auth": "!!hunter2!!"}}}"#);
        let r = Registries::new(None, Some(path)).unwrap();
        let e = r.credentials("r.example/app").await.unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            format!(
                "{:?}",
                Login {
                    username: "u".into(),
                    password: "hunter2".into()
                }
            )
            .contains("u")
        );
        assert!(
            !format!(
                "{:?}",
                Login {
                    username: "u".into(),
                    password: "hunter2".into()
                }
            )
            .contains("hunter2")
        );
    }

    #[tokio::test]
    async fn credential_helpers_are_asked_with_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-dcctest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread host\nif [ \"$host\" = \"helped.example\" ]; then echo '{\"ServerURL\":\"helped.example\",\"Username\":\"h\",\"Secret\":\"s3\"}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credHelpers": {"helped.example": "dcctest"}, "credsStore": "dcctest"}"#,
        )
        .unwrap();
        let r = Registries::new(None, Some(path))
            .unwrap()
            .with_helper_dir(dir.path().to_path_buf());
        let c = r.credentials("helped.example/app").await.unwrap().unwrap();
        assert_eq!((c.username.as_deref(), c.password.as_deref()), (Some("h"), Some("s3")));
        assert_eq!(
            r.credentials("other.example/app").await.unwrap(),
            None,
            "the store has none"
        );
    }

    #[test]
    fn ecr_hosts_are_recognised() {
        assert_eq!(
            ecr_region("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some("eu-west-1")
        );
        assert_eq!(
            ecr_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some("cn-north-1")
        );
        assert_eq!(ecr_region("12345.dkr.ecr.eu-west-1.amazonaws.com"), None);
        assert_eq!(ecr_region("123456789012.dkr.ecr.eu-west-1.evil.example"), None);
        assert_eq!(ecr_region("ghcr.io"), None);
    }

    #[test]
    fn a_rate_limit_is_told_apart() {
        let hub = "toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit";
        assert!(pull_rate_limited(hub));
        assert!(!pull_denied(hub));
        assert!(!pull_rate_limited("unauthorized: authentication required"));
    }

    #[test]
    fn denied_is_told_apart_from_not_found() {
        assert!(pull_denied(
            "Head \"http://127.0.0.1:5000/v2/p/b/manifests/latest\": no basic auth credentials"
        ));
        assert!(pull_denied("unauthorized: authentication required"));
        assert!(pull_denied("Get \"https://ghcr.io/v2/\": denied: denied"));
        assert!(!pull_denied(
            "manifest for 127.0.0.1:5000/p/none:latest not found: manifest unknown"
        ));
        assert!(!pull_denied(
            "pull access denied for nope, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"
        ));
        assert!(!pull_denied("dial tcp: lookup registry-1.docker.io: no such host"));
        assert!(
            !pull_denied("open /var/lib/docker/tmp/x: permission denied"),
            "the daemon's own files"
        );
    }
}
