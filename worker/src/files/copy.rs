//! Copy mode: inputs go in as one tar upload and outputs come out as one tar download (each
//! archive call costs tens of ms in dockerd, so one each way, and none when there is nothing to
//! move). Both pass through temp files in the attempt's scratch folder, never through memory
//! whole.
//!
//! A root job without inputs needs no upload at all: `/outputs` is an anonymous volume (created
//! with the container, root-owned 0755, removed with it) and `/inputs` an empty read-only tmpfs.
//! A job of another user keeps the upload, which makes `/outputs` writable by anyone (0777).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use dcc_shared::job::spec::validate_input_name;
use futures_util::TryStreamExt;
use tokio::io::AsyncWriteExt;

use super::{
    Attach, Budget, Files, OutputError, Outputs, Transfer, fetch_input, report_skipped, scan, store_outputs, too_large,
};
use crate::docker::daemon_message;
use crate::step::StepError;

/// The modification time `/outputs` gets in the inputs archive (the epoch): still there after the
/// run means nothing was written.
const UNTOUCHED: &str = "1970-01-01T00:00:00";

/// Files through the Docker API's archive calls, for one attempt.
#[derive(Default)]
pub struct CopyFiles {
    /// `/outputs`'s modification time before the start, when it is a volume: unchanged after
    /// the run means nothing was written there.
    baseline: std::sync::Mutex<Option<String>>,
}

/// Whether the attempt goes without an upload: no inputs, and a job that runs as root (the only
/// user that can write into a fresh volume).
fn without_upload(t: &Transfer<'_>) -> bool {
    t.job.run_inputs().is_empty() && t.as_root
}

impl Files for CopyFiles {
    async fn before_create(&self, t: &Transfer<'_>) -> Result<Attach, StepError> {
        if !without_upload(t) {
            return Ok(Attach::default());
        }
        Ok(Attach {
            volumes: vec!["/outputs".to_string()],
            tmpfs: vec![("/inputs".to_string(), "ro,size=64k".to_string())],
            ..Attach::default()
        })
    }

    async fn before_start(&self, t: &Transfer<'_>) -> Result<(), StepError> {
        if !without_upload(t) {
            return upload_inputs(t).await;
        }
        // A stat (a few ms) instead of an upload (tens). Without it the outputs are downloaded.
        if let Ok(Some(mtime)) = outputs_mtime(t).await {
            *self.baseline.lock().unwrap_or_else(|p| p.into_inner()) = Some(mtime);
        }
        Ok(())
    }

    async fn collect(&self, t: &Transfer<'_>) -> Result<Outputs, OutputError> {
        if !self.outputs_touched(t).await {
            return Ok(Outputs::default());
        }
        let tar_path = t.scratch.join("outputs.tar");
        if !download_outputs(t, &tar_path).await? {
            return Ok(Outputs::default());
        }
        let out_dir = t.scratch.join("out");
        let max = t.max_output_bytes;
        let found = tokio::task::spawn_blocking(move || extract_outputs(&tar_path, &out_dir, max))
            .await
            .map_err(|e| OutputError(e.to_string()))??;
        report_skipped(t, &found.skipped);
        let files = store_outputs(t, found.files).await?;
        Ok(Outputs {
            files,
            skipped: found.skipped.len(),
        })
    }
}

/// Fetches the job's inputs from storage and uploads them into the container under `/inputs`
/// (read-only modes), together with an empty, writable `/outputs`.
async fn upload_inputs(t: &Transfer<'_>) -> Result<(), StepError> {
    let dir = t.scratch.join("in");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(StepError::local("making the inputs folder"))?;
    let mut files = Vec::new();
    for (i, name) in t.job.run_inputs().into_iter().enumerate() {
        let local = dir.join(i.to_string());
        fetch_input(t.storage, t.job, name, &local).await?;
        files.push((name.to_string(), local));
    }
    let tar_path = t.scratch.join("inputs.tar");
    let tp = tar_path.clone();
    tokio::task::spawn_blocking(move || build_inputs_tar(&tp, &files))
        .await
        .map_err(StepError::helper("building the inputs archive"))?
        .map_err(StepError::local("building the inputs archive"))?;
    let file = tokio::fs::File::open(&tar_path)
        .await
        .map_err(StepError::local("reading the inputs archive"))?;
    let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
    let opts = UploadToContainerOptionsBuilder::default().path("/").build();
    t.docker
        .upload_to_container(t.container, Some(opts), body)
        .await
        .map_err(|e| StepError::docker("copying inputs into the container failed", &e, false))
}

/// Appends a folder entry (root-owned, mtime 0) to an archive.
fn append_dir<W: std::io::Write>(b: &mut tar::Builder<W>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, format!("{path}/"), std::io::empty())
}

/// Writes a tar with `inputs/` (0555), every parent folder of an input (0555), each input
/// (0444, owned by root) and an empty `outputs/` (0777).
fn build_inputs_tar(tar_path: &Path, files: &[(String, PathBuf)]) -> std::io::Result<()> {
    let out = std::fs::File::create(tar_path)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(out));
    let mut dirs = BTreeSet::from(["inputs".to_string()]);
    for (name, _) in files {
        let parents = Path::new(name).ancestors().skip(1);
        dirs.extend(
            parents
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| format!("inputs/{}", p.display())),
        );
    }
    // BTreeSet order puts every parent before its children.
    for d in &dirs {
        append_dir(&mut b, d, 0o555)?;
    }
    append_dir(&mut b, "outputs", 0o777)?;
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

impl CopyFiles {
    /// A stat of `/outputs` (a few ms, where a download costs tens): it went in empty, with mtime
    /// 0 (uploaded) or the baseline's (a volume), so an unchanged mtime (or no folder at all)
    /// means the job created, renamed or removed nothing there. In doubt: touched.
    async fn outputs_touched(&self, t: &Transfer<'_>) -> bool {
        let before = self.baseline.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (outputs_mtime(t).await, before) {
            (Err(()), _) => true,
            (Ok(None), _) => false,
            (Ok(Some(after)), Some(before)) => after != before,
            (Ok(Some(after)), None) => !after.starts_with(UNTOUCHED),
        }
    }
}

/// The modification time of the container's `/outputs`; `None` when there is no such folder.
async fn outputs_mtime(t: &Transfer<'_>) -> Result<Option<String>, ()> {
    let opts = ContainerArchiveInfoOptionsBuilder::default().path("/outputs").build();
    match t.docker.get_container_archive_info(t.container, Some(opts)).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
        // A stat without a time proves nothing.
        Ok(s) => s.modification_time.map(Some).ok_or(()),
        Err(_) => Err(()),
    }
}

/// Downloads `/outputs` from the (stopped) container into `tar_path`; `false` when it is gone.
async fn download_outputs(t: &Transfer<'_>, tar_path: &Path) -> Result<bool, OutputError> {
    let opts = DownloadFromContainerOptionsBuilder::default().path("/outputs").build();
    let mut stream = t.docker.download_from_container(t.container, Some(opts));
    let io = |e: std::io::Error| OutputError(e.to_string());
    let mut file = tokio::fs::File::create(tar_path).await.map_err(io)?;
    // The tar adds headers, so allow some slack beyond the content limit.
    let max = t.max_output_bytes + (t.max_output_bytes / 10).max(1 << 20);
    let mut size = 0u64;
    loop {
        match stream.try_next().await {
            Ok(Some(chunk)) => {
                size += chunk.len() as u64;
                if size > max {
                    return Err(too_large(t.max_output_bytes));
                }
                file.write_all(&chunk).await.map_err(io)?;
            }
            Ok(None) => break,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(false),
            Err(e) => {
                return Err(OutputError(format!(
                    "copying outputs out of the container failed: {}",
                    daemon_message(&e)
                )));
            }
        }
    }
    file.flush().await.map_err(io)?;
    Ok(true)
}

/// Unpacks the regular files of the `/outputs` archive into numbered files under `out_dir`
/// (names the worker chose: an entry's own name is never a path here). Links, FIFOs and other
/// special entries are skipped: the archive only describes them, nothing is opened.
fn extract_outputs(tar_path: &Path, out_dir: &Path, max_bytes: u64) -> Result<scan::Found, OutputError> {
    let err = |e: std::io::Error| OutputError(format!("reading the outputs archive failed: {e}"));
    std::fs::create_dir_all(out_dir).map_err(err)?;
    let mut archive = tar::Archive::new(std::fs::File::open(tar_path).map_err(err)?);
    let mut budget = Budget::new(max_bytes);
    let mut found = scan::Found::default();
    for (i, entry) in archive.entries().map_err(err)?.enumerate() {
        if i >= scan::MAX_ENTRIES {
            return Err(OutputError(format!(
                "the job left more than {} entries under /outputs",
                scan::MAX_ENTRIES
            )));
        }
        let mut entry = entry.map_err(err)?;
        let path = entry.path().map_err(err)?.to_string_lossy().into_owned();
        let rel = path.strip_prefix("outputs").unwrap_or(&path).trim_start_matches('/');
        let kind = entry.header().entry_type();
        if rel.is_empty() || kind == tar::EntryType::Directory {
            continue;
        }
        if kind != tar::EntryType::Regular {
            found.skipped.push((rel.to_string(), "not a regular file"));
            continue;
        }
        if validate_input_name(rel).is_err() {
            found.skipped.push((rel.to_string(), "not a valid output name"));
            continue;
        }
        let rel = rel.to_string();
        budget.add(entry.size())?;
        let local = out_dir.join(i.to_string());
        let mut f = std::fs::File::create(&local).map_err(err)?;
        let size = std::io::copy(&mut entry, &mut f).map_err(err)?;
        found.files.push((rel, local, size));
    }
    Ok(found)
}
