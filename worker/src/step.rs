//! Why a step of an attempt failed, typed: each kind of failure is one variant, and
//! [`StepError::code`] is the one place a failure meets the job error code clients see.

use dcc_shared::job::ErrorCode;
use dcc_shared::storage::StorageError;

use crate::docker::daemon_message;

/// A failed step of an attempt (files in, files out, the container).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An input could not be read from storage.
    #[error("input {name:?} could not be read from storage: {source}")]
    InputRead {
        /// The input's name.
        name: String,
        /// What the store said.
        #[source]
        source: StorageError,
    },
    /// An input is no longer in storage.
    #[error("input {name:?} is missing from storage")]
    InputMissing {
        /// The input's name.
        name: String,
    },
    /// The worker's own disk failed: its scratch folder, or an archive it builds.
    #[error("{what} failed on the worker: {source}")]
    Local {
        /// What the worker was doing.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The Docker daemon refused a call.
    #[error("{what}: {message}")]
    Docker {
        /// What was asked of it.
        what: &'static str,
        /// The daemon's own message.
        message: String,
        /// The refusal is about the GPUs the job asked for ([`is_gpu_refusal`]).
        gpu: bool,
    },
    /// A blocking helper task of the worker died (a bug).
    #[error("{what}: a helper task of the worker failed: {source}")]
    Helper {
        /// What it was doing.
        what: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl StepError {
    /// The worker's disk failed while doing `what`.
    pub fn local(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| StepError::Local { what, source }
    }

    /// A helper task died while doing `what`.
    pub fn helper(what: &'static str) -> impl FnOnce(tokio::task::JoinError) -> Self {
        move |source| StepError::Helper { what, source }
    }

    /// The daemon refused `what`; `gpus`: the job asked for GPUs.
    pub fn docker(what: &'static str, e: &bollard::errors::Error, gpus: bool) -> Self {
        let message = daemon_message(e);
        let gpu = gpus && is_gpu_refusal(&message);
        StepError::Docker { what, message, gpu }
    }

    /// The job error code this failure means.
    pub fn code(&self) -> ErrorCode {
        match self {
            StepError::InputRead { .. } | StepError::InputMissing { .. } => ErrorCode::InputFetchFailed,
            StepError::Docker { gpu: true, .. } => ErrorCode::GpuUnavailable,
            StepError::Docker { .. } => ErrorCode::ContainerFailed,
            StepError::Local { .. } | StepError::Helper { .. } => ErrorCode::WorkerFailed,
        }
    }
}

/// True when the daemon's refusal is about GPUs: the NVIDIA runtime or device driver, or a GPU
/// device node. Words that other refusals share ("device" in "no space left on device", "runtime"
/// in every "OCI runtime create failed") do not count on their own.
pub fn is_gpu_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "nvidia",
        "could not select device driver",
        "capabilities: [[gpu]]",
        "unknown or invalid runtime name",
        "/dev/dri",
        "cuda",
    ]
    .iter()
    .any(|w| m.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> std::io::Error {
        std::io::Error::from(kind)
    }

    #[test]
    fn each_failure_has_its_own_code() {
        let refusal = |message: &str, gpu: bool| StepError::Docker {
            what: "copying inputs into the container failed",
            message: message.into(),
            gpu,
        };
        let cases = [
            (
                StepError::InputMissing { name: "a".into() },
                ErrorCode::InputFetchFailed,
            ),
            (
                StepError::InputRead {
                    name: "a".into(),
                    source: StorageError::Backend(io(std::io::ErrorKind::PermissionDenied)),
                },
                ErrorCode::InputFetchFailed,
            ),
            // Building the inputs archive on a full scratch disk is the worker's failure.
            (
                StepError::local("building the inputs archive")(io(std::io::ErrorKind::StorageFull)),
                ErrorCode::WorkerFailed,
            ),
            // Docker refusing the upload is the daemon's, not the input's.
            (
                refusal("Could not find the file /inputs in container", false),
                ErrorCode::ContainerFailed,
            ),
            (
                refusal("could not select device driver \"nvidia\"", true),
                ErrorCode::GpuUnavailable,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }

    #[test]
    fn a_full_disk_on_a_gpu_job_is_not_a_gpu_failure() {
        let gpu_job = true;
        let full = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "write /var/lib/docker/tmp/x: no space left on device".into(),
        };
        let e = StepError::docker("creating the container failed", &full, gpu_job);
        assert_eq!(e.code(), ErrorCode::ContainerFailed, "{e}");
        let oci = "OCI runtime create failed: runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH";
        assert!(!is_gpu_refusal(oci));
        for gpu in [
            "could not select device driver \"nvidia\" with capabilities: [[gpu]]",
            "unknown or invalid runtime name: nvidia",
            "error gathering device information while adding custom device \"/dev/nvidia0\": no such file or directory",
            "nvidia-container-cli: initialization error: nvml error: driver not loaded",
        ] {
            let e = bollard::errors::Error::DockerResponseServerError {
                status_code: 500,
                message: gpu.into(),
            };
            assert_eq!(
                StepError::docker("x", &e, gpu_job).code(),
                ErrorCode::GpuUnavailable,
                "{gpu}"
            );
            assert_eq!(
                StepError::docker("x", &e, false).code(),
                ErrorCode::ContainerFailed,
                "{gpu}"
            );
        }
    }
}
