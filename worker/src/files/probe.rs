//! `DCC_FILES_MODE=auto`: bind mode when the Docker daemon sees the worker's scratch folder at
//! the same path (the worker runs on the Docker host), copy mode otherwise (a remote daemon, or a
//! worker in a container of its own whose folders the daemon cannot see).
//!
//! The probe asks the daemon itself: the worker writes a marker file of a random name into its
//! scratch folder, creates (never starts) a container with that folder bound in, and stats the
//! marker through the container. The container's image is an empty one imported for the probe
//! and referred to by id only, so workers probing side by side on one daemon never touch each
//! other's image; both are removed afterwards.

use std::path::Path;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::FilesMode;
use crate::docker::{self, LABEL_JOB, Owner, daemon_message};
use crate::step::StepError;

/// `DCC_FILES_MODE` as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilesSetting {
    /// Probe the daemon at start (the default).
    Auto,
    /// This mode, whatever the daemon sees.
    Fixed(FilesMode),
}

impl FilesSetting {
    /// Parses `DCC_FILES_MODE`.
    pub fn parse(s: &str) -> Result<Self, crate::WorkerError> {
        match s {
            "" | "auto" => Ok(FilesSetting::Auto),
            "copy" => Ok(FilesSetting::Fixed(FilesMode::Copy)),
            "bind" => Ok(FilesSetting::Fixed(FilesMode::Bind)),
            other => Err(crate::WorkerError::FilesMode(other.to_string())),
        }
    }

    /// The mode to run with: `auto` probes the daemon, and falls back to copy mode (which works
    /// with any daemon) when the probe cannot tell.
    pub async fn resolve(self, docker: &Docker, scratch: &Path, owner: &Owner) -> FilesMode {
        if let FilesSetting::Fixed(mode) = self {
            return mode;
        }
        match daemon_sees(docker, scratch, owner).await {
            Ok(true) => FilesMode::Bind,
            Ok(false) => {
                tracing::info!(scratch = %scratch.display(), "the Docker daemon does not see the worker's scratch folder: copy mode");
                FilesMode::Copy
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not probe the Docker daemon's view of the scratch folder: copy mode");
                FilesMode::Copy
            }
        }
    }
}

/// Whether the daemon sees `scratch` as this process does.
async fn daemon_sees(docker: &Docker, scratch: &Path, owner: &Owner) -> Result<bool, StepError> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let marker = scratch.join(format!("probe-{token}"));
    tokio::fs::write(&marker, token.as_bytes())
        .await
        .map_err(StepError::local("writing the probe marker"))?;
    let image = import_empty_image(docker).await?;
    let name = format!("dcc-probe-{token}");
    let seen = stat_through_container(docker, &image, &name, scratch, owner, &token).await;
    docker::remove(docker, &name).await;
    let opts = RemoveImageOptionsBuilder::default().force(true).build();
    if let Err(e) = docker.remove_image(&image, Some(opts), None).await {
        tracing::debug!(error = %daemon_message(&e), "removing the probe image");
    }
    let _ = tokio::fs::remove_file(&marker).await;
    seen
}

/// Imports an empty image (an empty tar as its only layer); returns its id.
async fn import_empty_image(docker: &Docker) -> Result<String, StepError> {
    const WHAT: &str = "importing the probe image";
    let refused = |message: String| StepError::Docker {
        what: WHAT,
        message,
        gpu: false,
    };
    let empty_tar = bytes::Bytes::from(vec![0u8; 1024]);
    let opts = CreateImageOptionsBuilder::default().from_src("-").build();
    let mut import = docker.create_image(Some(opts), Some(bollard::body_full(empty_tar)), None);
    let mut id = None;
    while let Some(item) = import.next().await {
        let info = item.map_err(|e| StepError::docker(WHAT, &e, false))?;
        if let Some(msg) = info.error_detail.and_then(|d| d.message) {
            return Err(refused(msg));
        }
        id = info.status.filter(|s| s.starts_with("sha256:")).or(id);
    }
    id.ok_or_else(|| refused("the daemon named no image".to_string()))
}

/// Creates `name` from `image` with `scratch` bound in and stats the marker `probe-<token>`
/// through it: there with the token's length means the daemon sees the folder.
async fn stat_through_container(
    docker: &Docker,
    image: &str,
    name: &str,
    scratch: &Path,
    owner: &Owner,
    token: &str,
) -> Result<bool, StepError> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["/never-started".to_string()]),
        network_disabled: Some(true),
        // Labelled as the worker's own, so a crash mid-probe leaves nothing its next start keeps.
        labels: Some(
            owner
                .labels()
                .into_iter()
                .chain([(LABEL_JOB.to_string(), String::new())])
                .collect(),
        ),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/probe:ro", scratch.display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name(name).build();
    docker
        .create_container(Some(opts), body)
        .await
        .map_err(|e| StepError::docker("creating the probe container", &e, false))?;
    let path = format!("/probe/probe-{token}");
    let opts = ContainerArchiveInfoOptionsBuilder::default().path(&path).build();
    match docker.get_container_archive_info(name, Some(opts)).await {
        Ok(stat) => Ok(stat.size == token.len() as i64),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        Err(e) => Err(StepError::docker("stat through the probe container", &e, false)),
    }
}
