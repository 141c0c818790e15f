//! Pull credentials for private registries, per registry host, from (first match wins):
//! 1. `DCC_REGISTRY_AUTH`: JSON `{"<host>": {"username": "…", "password": "…"}}` (Terraform puts
//!    it in SSM);
//! 2. the Docker `config.json` the worker reads (`DCC_DOCKER_CONFIG`, else
//!    `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): its `credHelpers`, `auths`
//!    (what `docker login` writes) and `credsStore`, re-read at every pull so a `docker login`
//!    takes effect without a restart;
//! 3. none: an anonymous pull.
//!
//! Credentials go to the Docker daemon with the pull and nowhere else: they are never in a job
//! record, a log line or an error (errors name the registry and the source, not the secret).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

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

impl Registries {
    /// From `DCC_REGISTRY_AUTH` (JSON, or empty) and the Docker config path (`None`: the
    /// default places). A bad value is an error that never repeats it (it holds secrets).
    pub fn new(registry_auth: Option<&str>, docker_config: Option<PathBuf>) -> Result<Self, String> {
        let configured = match registry_auth.map(str::trim).filter(|s| !s.is_empty()) {
            None => HashMap::new(),
            Some(json) => serde_json::from_str::<HashMap<String, ConfiguredLogin>>(json)
                .map_err(|e| {
                    format!(
                        "DCC_REGISTRY_AUTH is not JSON of the form {{\"<registry host>\": {{\"username\": \"…\", \"password\": \"…\"}}}} (line {}, column {})",
                        e.line(),
                        e.column()
                    )
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
        })
    }

    /// Looks for `docker-credential-*` helpers in `dir` instead of on `PATH`.
    pub fn with_helper_dir(mut self, dir: PathBuf) -> Self {
        self.helper_dir = Some(dir);
        self
    }

    /// Credentials for pulling `image`, `None` for an anonymous pull; `Err` (without secrets)
    /// when a source that names this registry cannot be used.
    pub async fn credentials(&self, image: &str) -> Result<Option<DockerCredentials>, String> {
        let host = normalize(dcc_shared::job::image::registry(image));
        let login = match self.configured.get(&host) {
            Some(l) => Some(l.clone()),
            None => self.docker_config_login(&host).await?,
        };
        Ok(login.map(|l| credentials_for(&host, l)))
    }

    async fn docker_config_login(&self, host: &str) -> Result<Option<Login>, String> {
        let Some(path) = &self.docker_config else {
            return Ok(None);
        };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let config: DockerConfig = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a Docker config file (line {}, column {})",
                path.display(),
                e.line(),
                e.column()
            )
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

fn entry_login(e: &AuthEntry, host: &str) -> Result<Login, String> {
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
    let bad = || format!("the Docker config's auths entry for {host} is not base64 of user:password");
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
    async fn helper_login(&self, helper: &str, host: &str) -> Result<Option<Login>, String> {
        use tokio::io::AsyncWriteExt;
        if helper.is_empty()
            || !helper
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!("credential helper name {helper:?} is not a plain name"));
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
            .map_err(|e| format!("running {program} for {host}: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(host.as_bytes()).await;
        }
        let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                format!(
                    "{program} did not answer for {host} within {} s",
                    HELPER_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("running {program} for {host}: {e}"))?;
        if !out.status.success() {
            // Helpers say "credentials not found in native keychain" on stdout: no login for it.
            let said = String::from_utf8_lossy(&out.stdout);
            if said.contains("not found") {
                return Ok(None);
            }
            return Err(format!("{program} failed for {host} ({})", out.status));
        }
        let a: HelperAnswer = serde_json::from_slice(&out.stdout)
            .map_err(|_| format!("{program} answered something other than its JSON for {host}"))?;
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

/// Whether a pull failed because the registry refused the credentials (or their absence), as
/// opposed to the image not existing. Docker Hub answers "pull access denied … repository does
/// not exist or may require 'docker login'" for both; that stays `IMAGE_NOT_FOUND`.
pub fn pull_denied(daemon_message: &str) -> bool {
    let m = daemon_message.to_ascii_lowercase();
    if m.contains("repository does not exist") {
        return false;
    }
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
        "incorrect username or password",
        "401 unauthorized",
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
        let e = Registries::new(Some(r#"{"ghcr.io": "hunter2-secret"}"#), None).unwrap_err();
        assert!(e.contains("DCC_REGISTRY_AUTH") && !e.contains("hunter2"), "{e}");
        let (_d, path) = write_config(r#"{"auths": {"r.example": {"auth": "!!hunter2!!"}}}"#);
        let r = Registries::new(None, Some(path)).unwrap();
        let e = r.credentials("r.example/app").await.unwrap_err();
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
    }
}
