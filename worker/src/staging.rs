//! Files in and out of the container. Inputs go in as one tar upload and outputs come out as
//! one tar download (each archive call costs ~60 ms, so one each way). Both pass through temp
//! files in the attempt's scratch folder, never through memory whole.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use dcc_shared::job::spec::{MAX_OUTPUTS, validate_input_name};
use dcc_shared::job::{JobRecord, OutputFile};
use dcc_shared::storage::{Storage, StorageError, paths};
use futures_util::TryStreamExt;
use tokio::io::AsyncWriteExt;

/// Tries per storage transfer before giving up (transient errors are common in object stores).
const STORAGE_TRIES: u32 = 3;
/// First pause between tries; doubles each time.
const STORAGE_BACKOFF: Duration = Duration::from_millis(200);

/// The modification time `/outputs` gets in the inputs archive (the epoch): still there after the
/// run means nothing was written.
const UNTOUCHED: &str = "1970-01-01T00:00:00";

/// Runs a storage operation with retries and backoff.
pub async fn with_retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StorageError>>,
{
    let mut pause = STORAGE_BACKOFF;
    let mut tries = 0;
    loop {
        tries += 1;
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < STORAGE_TRIES && e.is_unavailable() => {
                tracing::warn!(error = %e, tries, "{what} failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fetches the job's inputs from storage and uploads them into the container under `/inputs`
/// (read-only modes), together with an empty, writable `/outputs`.
pub async fn upload_inputs(
    docker: &Docker,
    container: &str,
    storage: &dyn Storage,
    job: &JobRecord,
    scratch: &Path,
) -> Result<(), String> {
    let dir = scratch.join("in");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for (i, name) in job.spec.inputs.iter().enumerate() {
        let local = dir.join(i.to_string());
        let object = format!("{}{}", job.inputs_prefix, name);
        let found = with_retry("fetching an input", || storage.get_to_file(&object, &local))
            .await
            .map_err(|e| format!("input {name:?} could not be read from storage: {e}"))?;
        if !found {
            return Err(format!("input {name:?} is missing from storage"));
        }
        files.push((name.clone(), local));
    }
    let tar_path = scratch.join("inputs.tar");
    let tp = tar_path.clone();
    tokio::task::spawn_blocking(move || build_inputs_tar(&tp, &files))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("building the inputs archive failed: {e}"))?;
    let file = tokio::fs::File::open(&tar_path).await.map_err(|e| e.to_string())?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
    docker
        .upload_to_container(
            container,
            Some(UploadToContainerOptionsBuilder::default().path("/").build()),
            body,
        )
        .await
        .map_err(|e| {
            format!(
                "copying inputs into the container failed: {}",
                crate::docker::daemon_message(&e)
            )
        })
}

/// Writes a tar with `inputs/` (0555), every parent folder of an input (0555), each input
/// (0444, owned by root) and an empty `outputs/` (0777).
fn build_inputs_tar(tar_path: &Path, files: &[(String, PathBuf)]) -> std::io::Result<()> {
    let out = std::fs::File::create(tar_path)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(out));
    let mut dirs = BTreeSet::new();
    dirs.insert("inputs".to_string());
    for (name, _) in files {
        let mut acc = String::from("inputs");
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            acc.push('/');
            acc.push_str(part);
            dirs.insert(acc.clone());
        }
    }
    let dir_header = |b: &mut tar::Builder<_>, path: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, format!("{path}/"), std::io::empty())
    };
    // BTreeSet order puts every parent before its children.
    for d in &dirs {
        dir_header(&mut b, d, 0o555)?;
    }
    dir_header(&mut b, "outputs", 0o777)?;
    for (name, local) in files {
        let mut f = std::fs::File::open(local)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o444);
        h.set_size(f.metadata()?.len());
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, format!("inputs/{name}"), &mut f)?;
    }
    std::io::Write::flush(&mut b.into_inner()?)?;
    Ok(())
}

/// Why collecting outputs failed.
#[derive(Debug)]
pub struct OutputError(pub String);

/// Downloads `/outputs` from the (stopped) container, and stores each regular file under the
/// attempt's output prefix. Symbolic links and special files are skipped.
pub async fn collect_outputs(
    docker: &Docker,
    container: &str,
    storage: &dyn Storage,
    job: &JobRecord,
    attempt: u32,
    scratch: &Path,
    max_bytes: u64,
) -> Result<Vec<OutputFile>, OutputError> {
    // A stat first (a few ms, where a download costs tens): `/outputs` went in empty with mtime
    // 0, so an unchanged mtime means the job created, renamed or removed nothing there.
    let stat = docker
        .get_container_archive_info(
            container,
            Some(ContainerArchiveInfoOptionsBuilder::default().path("/outputs").build()),
        )
        .await;
    match stat {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(Vec::new()),
        Ok(s) if s.modification_time.as_deref().is_some_and(|t| t.starts_with(UNTOUCHED)) => return Ok(Vec::new()),
        _ => {}
    }
    let tar_path = scratch.join("outputs.tar");
    let opts = DownloadFromContainerOptionsBuilder::default().path("/outputs").build();
    let mut stream = docker.download_from_container(container, Some(opts));
    let mut file = tokio::fs::File::create(&tar_path)
        .await
        .map_err(|e| OutputError(e.to_string()))?;
    let mut size = 0u64;
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => {
                size += chunk.len() as u64;
                // The tar adds headers, so allow some slack beyond the content limit.
                if size > max_bytes + (max_bytes / 10).max(1 << 20) {
                    return Err(too_large(max_bytes));
                }
                file.write_all(&chunk).await.map_err(|e| OutputError(e.to_string()))?;
            }
            Ok(None) => break,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(Vec::new()),
            Err(e) => {
                return Err(OutputError(format!(
                    "copying outputs out of the container failed: {}",
                    crate::docker::daemon_message(&e)
                )));
            }
        }
    }
    file.flush().await.map_err(|e| OutputError(e.to_string()))?;
    drop(file);
    let out_dir = scratch.join("out");
    let tp = tar_path.clone();
    let od = out_dir.clone();
    let files = tokio::task::spawn_blocking(move || extract_outputs(&tp, &od, max_bytes))
        .await
        .map_err(|e| OutputError(e.to_string()))??;
    store_outputs(storage, job, attempt, files).await
}

/// Stores each collected output (name under `/outputs`, local file, size) under the attempt's
/// output prefix, with retries; shared by both file modes.
async fn store_outputs(
    storage: &dyn Storage,
    job: &JobRecord,
    attempt: u32,
    files: Vec<(String, PathBuf, u64)>,
) -> Result<Vec<OutputFile>, OutputError> {
    let mut stored = Vec::with_capacity(files.len());
    for (name, local, size) in files {
        let object = paths::output(&job.id, attempt, &name);
        with_retry("storing an output", || storage.put_file(&object, &local))
            .await
            .map_err(|e| OutputError(format!("output {name:?} could not be stored: {e}")))?;
        stored.push(OutputFile { name, size });
    }
    Ok(stored)
}

/// The error of more than [`MAX_OUTPUTS`] output files.
fn too_many() -> OutputError {
    OutputError(format!("the job left more than {MAX_OUTPUTS} output files"))
}

/// The error of outputs over `DCC_MAX_OUTPUT_BYTES`.
fn too_large(max_bytes: u64) -> OutputError {
    OutputError(format!(
        "outputs are larger than the {max_bytes} byte limit (DCC_MAX_OUTPUT_BYTES)"
    ))
}

/// Unpacks the regular files of the `/outputs` archive into numbered files under `out_dir`.
fn extract_outputs(
    tar_path: &Path,
    out_dir: &Path,
    max_bytes: u64,
) -> Result<Vec<(String, PathBuf, u64)>, OutputError> {
    let err = |e: std::io::Error| OutputError(format!("reading the outputs archive failed: {e}"));
    std::fs::create_dir_all(out_dir).map_err(err)?;
    let mut archive = tar::Archive::new(std::fs::File::open(tar_path).map_err(err)?);
    let mut files = Vec::new();
    let mut total = 0u64;
    for (i, entry) in archive.entries().map_err(err)?.enumerate() {
        let mut entry = entry.map_err(err)?;
        let path = entry.path().map_err(err)?.to_string_lossy().into_owned();
        let rel = path
            .strip_prefix("outputs")
            .unwrap_or(&path)
            .trim_start_matches('/')
            .to_string();
        if rel.is_empty() || entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        if validate_input_name(&rel).is_err() {
            tracing::warn!(name = rel, "skipping an output with an unsafe name");
            continue;
        }
        total += entry.size();
        if total > max_bytes {
            return Err(too_large(max_bytes));
        }
        if files.len() >= MAX_OUTPUTS {
            return Err(too_many());
        }
        let local = out_dir.join(i.to_string());
        let mut f = std::fs::File::create(&local).map_err(err)?;
        let size = std::io::copy(&mut entry, &mut f).map_err(err)?;
        files.push((rel, local, size));
    }
    Ok(files)
}

/// How files reach the container (`DCC_FILES_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilesMode {
    /// Inputs as one tar upload, outputs as one tar download through the Docker API (default:
    /// works with any daemon, local or remote).
    Copy,
    /// A per-attempt scratch folder bound read-only at `/inputs` and read-write at `/outputs`:
    /// no archive calls (~35 ms each in dockerd), but the worker must share its filesystem with
    /// the Docker daemon (worker on the Docker host, not in a container with other paths).
    Bind,
}

impl FilesMode {
    /// Parses `DCC_FILES_MODE`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "copy" => Ok(FilesMode::Copy),
            "bind" => Ok(FilesMode::Bind),
            other => Err(format!("DCC_FILES_MODE={other:?}: use copy or bind")),
        }
    }
}

/// Bind mode: writes the inputs under `dir/in` (files 0444, folders 0555) and makes an empty,
/// writable `dir/out`; returns the two host folders to bind.
pub async fn stage_inputs_bind(
    storage: &dyn Storage,
    job: &JobRecord,
    dir: &Path,
) -> Result<(PathBuf, PathBuf), String> {
    use std::os::unix::fs::PermissionsExt;
    let (inp, out) = (dir.join("in"), dir.join("out"));
    tokio::fs::create_dir_all(&inp).await.map_err(|e| e.to_string())?;
    tokio::fs::create_dir_all(&out).await.map_err(|e| e.to_string())?;
    tokio::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777))
        .await
        .map_err(|e| e.to_string())?;
    let mut dirs = BTreeSet::new();
    for name in &job.spec.inputs {
        let local = inp.join(name);
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| e.to_string())?;
            let mut p = parent.to_path_buf();
            while p != inp {
                dirs.insert(p.clone());
                if !p.pop() {
                    break;
                }
            }
        }
        let object = format!("{}{}", job.inputs_prefix, name);
        let found = with_retry("fetching an input", || storage.get_to_file(&object, &local))
            .await
            .map_err(|e| format!("input {name:?} could not be read from storage: {e}"))?;
        if !found {
            return Err(format!("input {name:?} is missing from storage"));
        }
        tokio::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o444))
            .await
            .map_err(|e| e.to_string())?;
    }
    // Deepest folders first, so a parent is closed only after its children.
    for d in dirs.iter().rev().chain(std::iter::once(&inp)) {
        tokio::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok((inp, out))
}

/// Bind mode: stores the regular files the (stopped) container left in `out`. Symbolic links and
/// special files are skipped and never followed (the container wrote this folder).
pub async fn collect_outputs_bind(
    storage: &dyn Storage,
    job: &JobRecord,
    attempt: u32,
    out: &Path,
    max_bytes: u64,
) -> Result<Vec<OutputFile>, OutputError> {
    let root = out.to_path_buf();
    let files = tokio::task::spawn_blocking(move || -> Result<Vec<(String, PathBuf, u64)>, OutputError> {
        let mut found = Vec::new();
        let mut total = 0u64;
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let rd = std::fs::read_dir(&d).map_err(|e| OutputError(format!("reading outputs: {e}")))?;
            for entry in rd.flatten() {
                let meta = match std::fs::symlink_metadata(entry.path()) {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if meta.is_file() {
                    let rel = entry
                        .path()
                        .strip_prefix(&root)
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if validate_input_name(&rel).is_err() {
                        continue;
                    }
                    total += meta.len();
                    if total > max_bytes {
                        return Err(too_large(max_bytes));
                    }
                    if found.len() >= MAX_OUTPUTS {
                        return Err(too_many());
                    }
                    found.push((rel, entry.path(), meta.len()));
                }
            }
        }
        found.sort();
        Ok(found)
    })
    .await
    .map_err(|e| OutputError(e.to_string()))??;
    store_outputs(storage, job, attempt, files).await
}

/// Makes every folder under `dir` writable again (bind mode closed the inputs read-only), so the
/// scratch folder can be removed by a worker that is not root. Best effort.
pub fn unlock(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755));
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
    }
}
