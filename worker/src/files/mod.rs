//! How a job's files reach its container and come back. One trait, [`Files`], with a method for
//! each point of an attempt where files move; each mode (`DCC_FILES_MODE`) implements it:
//! - [`copy::CopyFiles`]: inputs as one tar upload into the created container, outputs as one
//!   tar download from the stopped one, through the Docker API (any daemon, local or remote).
//! - [`bind::BindFiles`]: inputs staged in a scratch folder bound read-only at `/inputs`, and a
//!   writable folder bound at `/outputs` (no archive calls; the daemon must see the worker's
//!   folders).
//!
//! Both store outputs the same way ([`store_outputs`]) and apply the same limits. `auto` (the
//! default) picks bind mode when the daemon sees the worker's folders ([`probe`]).

pub mod bind;
pub mod copy;
pub mod probe;
pub mod scan;

use std::path::{Path, PathBuf};

use backon::Retryable;
use bollard::Docker;
use dcc_shared::job::spec::MAX_OUTPUTS;
use dcc_shared::job::{JobRecord, OutputFile};
use dcc_shared::storage::{Storage, StorageError, paths};

use crate::step::StepError;

pub use bind::BindFiles;
pub use copy::CopyFiles;
pub use probe::FilesSetting;

/// How files reach the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilesMode {
    /// [`CopyFiles`]: works with any daemon, local or remote.
    Copy,
    /// [`BindFiles`]: the worker must share its filesystem with the Docker daemon (worker on the
    /// Docker host, not in a container with other paths).
    Bind,
}

impl FilesMode {
    /// The configured spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FilesMode::Copy => "copy",
            FilesMode::Bind => "bind",
        }
    }
}

/// Everything a mode needs to move one attempt's files.
pub struct Transfer<'a> {
    /// The Docker connection (copy mode's archive calls).
    pub docker: &'a Docker,
    /// Where the job's inputs are and its outputs go (Redis for fast jobs).
    pub storage: &'a dyn Storage,
    /// The job.
    pub job: &'a JobRecord,
    /// The attempt (outputs are stored per attempt).
    pub attempt: u32,
    /// The attempt's own scratch folder on the worker.
    pub scratch: &'a Path,
    /// The container's name.
    pub container: &'a str,
    /// Most bytes of outputs (`DCC_MAX_OUTPUT_BYTES`).
    pub max_output_bytes: u64,
    /// Whether the job runs as root (the image names no other user; jobs cannot name one).
    pub as_root: bool,
}

/// What a mode adds to the container's definition before it is created.
#[derive(Debug, Default)]
pub struct Attach {
    /// Host folders bound in (`host:container:mode`).
    pub binds: Vec<String>,
    /// Anonymous volumes (container paths), removed with the container.
    pub volumes: Vec<String>,
    /// tmpfs mounts: container path and mount options.
    pub tmpfs: Vec<(String, String)>,
}

/// Why collecting outputs failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OutputError(pub String);

/// What an attempt left under `/outputs`: the files stored, and how many entries were not read
/// (links, FIFOs, devices, sockets, unsafe names).
#[derive(Debug, Default)]
pub struct Outputs {
    /// The stored files.
    pub files: Vec<OutputFile>,
    /// Entries skipped.
    pub skipped: usize,
}

/// Notes the skipped entries of an attempt in the worker's log (the job's stats count them).
pub(crate) fn report_skipped(t: &Transfer<'_>, skipped: &[(String, &'static str)]) {
    for (name, why) in skipped.iter().take(20) {
        tracing::warn!(job = %t.job.id, attempt = t.attempt, output = %name, why, "output not read");
    }
    if skipped.len() > 20 {
        tracing::warn!(job = %t.job.id, more = skipped.len() - 20, "more outputs not read");
    }
}

/// The points of an attempt where files move.
pub trait Files: Send + Sync {
    /// Before the container is created: returns the mounts it needs.
    fn before_create(&self, t: &Transfer<'_>) -> impl Future<Output = Result<Attach, StepError>> + Send;
    /// After it is created, before it starts.
    fn before_start(&self, t: &Transfer<'_>) -> impl Future<Output = Result<(), StepError>> + Send;
    /// After it exited and every process of it is dead: stores the outputs and lists them.
    fn collect(&self, t: &Transfer<'_>) -> impl Future<Output = Result<Outputs, OutputError>> + Send;
}

/// Runs a storage operation, retrying while the store is unreachable.
pub(crate) async fn with_retry<T, F, Fut>(what: &str, op: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StorageError>>,
{
    op.retry(dcc_shared::retry::storage())
        .when(|e: &StorageError| e.is_unavailable())
        .notify(|e, pause| tracing::warn!(error = %e, ?pause, "{what} failed; retrying"))
        .await
}

/// Fetches the input `name` of `job` into `local`.
async fn fetch_input(storage: &dyn Storage, job: &JobRecord, name: &str, local: &Path) -> Result<(), StepError> {
    let object = format!("{}{}", job.inputs_prefix, name);
    let found = with_retry("fetching an input", || storage.get_to_file(&object, local))
        .await
        .map_err(|source| match source {
            StorageError::Local(source) => StepError::Local {
                what: "writing an input to the scratch disk",
                source,
            },
            source => StepError::InputRead {
                name: name.to_string(),
                source,
            },
        })?;
    if found {
        Ok(())
    } else {
        Err(StepError::InputMissing { name: name.to_string() })
    }
}

/// Stores each collected output (name under `/outputs`, local file, size) under the attempt's
/// output prefix; shared by both modes.
async fn store_outputs(t: &Transfer<'_>, files: Vec<(String, PathBuf, u64)>) -> Result<Vec<OutputFile>, OutputError> {
    let mut stored = Vec::with_capacity(files.len());
    for (name, local, size) in files {
        let object = paths::output(&t.job.id, t.attempt, &name);
        with_retry("storing an output", || t.storage.put_file(&object, &local))
            .await
            .map_err(|e| OutputError(format!("output {name:?} could not be stored: {e}")))?;
        stored.push(OutputFile { name, size });
    }
    Ok(stored)
}

/// Counts outputs against the limits as they are found: more than [`MAX_OUTPUTS`] files or
/// more than `DCC_MAX_OUTPUT_BYTES` fails the attempt.
struct Budget {
    max_bytes: u64,
    bytes: u64,
    files: usize,
}

impl Budget {
    fn new(max_bytes: u64) -> Self {
        Budget {
            max_bytes,
            bytes: 0,
            files: 0,
        }
    }

    /// Books one more file of `size` bytes.
    fn add(&mut self, size: u64) -> Result<(), OutputError> {
        self.bytes += size;
        if self.bytes > self.max_bytes {
            return Err(too_large(self.max_bytes));
        }
        if self.files >= MAX_OUTPUTS {
            return Err(OutputError(format!(
                "the job left more than {MAX_OUTPUTS} output files"
            )));
        }
        self.files += 1;
        Ok(())
    }
}

/// The error of outputs over `DCC_MAX_OUTPUT_BYTES`.
fn too_large(max_bytes: u64) -> OutputError {
    OutputError(format!(
        "outputs are larger than the {max_bytes} byte limit (DCC_MAX_OUTPUT_BYTES)"
    ))
}

/// Makes every folder under `dir` writable again (bind mode closes the inputs read-only, and a
/// container may leave folders closed), so the scratch folder can be removed by a worker that is
/// not root. Each folder is opened up before it is read, which a walker that reads first cannot
/// do. Best effort.
pub fn unlock(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755));
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        stack.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
}
