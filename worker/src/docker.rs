//! The Docker daemon: connection, the labels that mark DCC's containers, leftover cleanup and
//! image pulls.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

/// Label on every DCC container: the job id.
pub const LABEL_JOB: &str = "dcc.job";
/// Label on every DCC container: the worker that created it.
pub const LABEL_WORKER: &str = "dcc.worker";
/// Label on every DCC container: the attempt it runs.
pub const LABEL_ATTEMPT: &str = "dcc.attempt";
/// Label on every DCC container: the deployment it belongs to (the id kept in its Redis under
/// its prefix, [`dcc_shared::keys::Keys::deployment`]).
pub const LABEL_DEPLOYMENT: &str = "dcc.deployment";

/// Whose containers these are: one worker of one deployment. A worker's id alone is not enough
/// (the default is the host name, which a second stack on the same Docker host shares): a
/// container is a worker's own only when both labels match, and only its own are ever removed.
#[derive(Clone, Debug)]
pub struct Owner {
    /// The worker's id.
    pub worker: String,
    /// The deployment's id.
    pub deployment: String,
}

impl Owner {
    /// The labels that mark a container as this owner's.
    pub fn labels(&self) -> [(String, String); 2] {
        [
            (LABEL_WORKER.to_string(), self.worker.clone()),
            (LABEL_DEPLOYMENT.to_string(), self.deployment.clone()),
        ]
    }
}

/// Longest wait for the daemon's answer to one call (bollard's default is 120 s). Streams that
/// follow an answer have their own bounds: a container's wait its job's `maxDurationSecs`, a pull
/// `DCC_PULL_TIMEOUT_SECS`, the collection of logs and outputs `COLLECT_LIMIT`; the self-check's
/// ping half a heartbeat.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// True when the daemon did not answer in time or could not be reached (not a refusal).
pub fn daemon_unreachable(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    match e {
        E::RequestTimeoutError | E::HyperResponseError { .. } => true,
        E::IOError { err } => !matches!(
            err.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
        ),
        _ => false,
    }
}

/// Connects to the daemon named by `DOCKER_HOST` (default: the local socket) and agrees on an
/// API version, so a daemon older than bollard's default (e.g. 20.10, API 1.41) works.
pub async fn connect() -> Result<Docker, bollard::errors::Error> {
    let docker = Docker::connect_with_local_defaults()?.with_timeout(CALL_TIMEOUT);
    let docker = docker.negotiate_version().await?;
    docker.ping().await?;
    Ok(docker)
}

/// Every container carrying both of `owner`'s labels: (container id, job id).
pub async fn list_own(docker: &Docker, owner: &Owner) -> Result<Vec<(String, String)>, bollard::errors::Error> {
    // Docker's label filters are ANDed.
    let labels = owner.labels().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let filters: HashMap<String, Vec<String>> = HashMap::from([("label".to_string(), labels)]);
    let list = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let job = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_JOB))
                .cloned()
                .unwrap_or_default();
            c.id.map(|id| (id, job))
        })
        .collect())
}

/// Removes every container of `owner` whose job `keep` does not name. `keep` is asked after the
/// listing, so a container created meanwhile for a running job is never taken for a leftover.
/// Returns how many were removed.
pub async fn remove_leftovers(
    docker: &Docker,
    owner: &Owner,
    keep: impl Fn(&str) -> bool,
) -> Result<usize, bollard::errors::Error> {
    let mut removed = 0;
    for (id, job) in list_own(docker, owner).await? {
        if !keep(&job) {
            remove(docker, &id).await;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Force-removes a container and its anonymous volumes; a container already gone is fine.
pub async fn remove(docker: &Docker, name: &str) {
    let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
    match docker.remove_container(name, Some(opts)).await {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => tracing::warn!(container = name, error = %e, "could not remove container"),
    }
}

/// Kills a container (SIGKILL); one already stopped or gone is fine.
pub async fn kill(docker: &Docker, name: &str) {
    let opts = KillContainerOptionsBuilder::default().signal("KILL").build();
    if let Err(e) = docker.kill_container(name, Some(opts)).await {
        tracing::debug!(container = name, error = %daemon_message(&e), "kill");
    }
}

/// Adds `:latest` to a reference without tag or digest, so a pull fetches one image, not all tags.
pub fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// An image present on the daemon.
#[derive(Debug)]
pub struct Image {
    /// `sha256:…`
    pub id: String,
    /// Whether its processes run as root (it names no other user).
    pub as_root: bool,
    /// Its `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// Its `Cmd`.
    pub cmd: Vec<String>,
}

impl Image {
    /// The command line a container of this image runs for a job's `command`: the entrypoint,
    /// then the job's command, or the image's when the job gives none (Docker's rule).
    pub fn argv(&self, command: Option<&[String]>) -> Vec<String> {
        let args = command.filter(|c| !c.is_empty()).unwrap_or(&self.cmd);
        self.entrypoint.iter().chain(args).cloned().collect()
    }
}

impl From<bollard::models::ImageInspect> for Image {
    fn from(img: bollard::models::ImageInspect) -> Self {
        let config = img.config.unwrap_or_default();
        Image {
            id: img.id.unwrap_or_default(),
            as_root: is_root(config.user.as_deref().unwrap_or_default()),
            entrypoint: config.entrypoint.unwrap_or_default(),
            cmd: config.cmd.unwrap_or_default(),
        }
    }
}

/// Whether an image's `User` (`name`, `uid`, either with `:group`) is root.
fn is_root(user: &str) -> bool {
    matches!(user.split(':').next().unwrap_or(""), "" | "root" | "0")
}

/// Why an image could not be had.
#[derive(Debug)]
pub enum PullError {
    /// A credential source for its registry failed (the sentence holds no secret).
    Credentials(crate::registry::RegistryError),
    /// The daemon's (or registry's) message.
    Daemon(String),
}

/// The image, pulling it first (with its registry's credentials) when it is not present.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    registries: &crate::registry::Registries,
) -> Result<Image, PullError> {
    if let Ok(img) = docker.inspect_image(image).await {
        return Ok(img.into());
    }
    let credentials = registries.credentials(image).await.map_err(PullError::Credentials)?;
    let reference = with_default_tag(image);
    let opts = CreateImageOptionsBuilder::default().from_image(&reference).build();
    let mut pull = docker.create_image(Some(opts), None, credentials);
    while let Some(item) = pull.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(PullError::Daemon(detail));
                }
            }
            Err(e) => return Err(PullError::Daemon(daemon_message(&e))),
        }
    }
    match docker.inspect_image(&reference).await {
        Ok(img) => Ok(img.into()),
        Err(e) => Err(PullError::Daemon(daemon_message(&e))),
    }
}

/// The daemon's own sentence from an error, without bollard's wrapping.
pub fn daemon_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_that_does_not_answer_is_not_a_refusal() {
        use bollard::errors::Error as E;
        assert!(daemon_unreachable(&E::RequestTimeoutError));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(daemon_unreachable(&E::IOError { err: refused }));
        let no_socket = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(daemon_unreachable(&E::IOError { err: no_socket }));
        let said_no = E::DockerResponseServerError {
            status_code: 500,
            message: "no such image".into(),
        };
        assert!(!daemon_unreachable(&said_no));
    }

    #[test]
    fn default_tag() {
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("busybox:1.36"), "busybox:1.36");
        assert_eq!(with_default_tag("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(with_default_tag("x@sha256:abc"), "x@sha256:abc");
    }

    #[test]
    fn argv_follows_dockers_rule() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let image = Image {
            id: String::new(),
            as_root: true,
            entrypoint: v(&["/entry", "-x"]),
            cmd: v(&["default"]),
        };
        assert_eq!(image.argv(None), v(&["/entry", "-x", "default"]));
        assert_eq!(image.argv(Some(&[])), v(&["/entry", "-x", "default"]));
        assert_eq!(image.argv(Some(&v(&["mine"]))), v(&["/entry", "-x", "mine"]));
        let bare = Image {
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            ..image
        };
        assert!(bare.argv(None).is_empty());
        assert_eq!(bare.argv(Some(&v(&["sh"]))), v(&["sh"]));
    }

    #[test]
    fn root_users() {
        for u in ["", "root", "0", "root:root", "0:1000"] {
            assert!(is_root(u), "{u:?}");
        }
        for u in ["1000", "nobody", "1000:0", "rooty", "00"] {
            assert!(!is_root(u), "{u:?}");
        }
    }
}
