//! Bind mode: the attempt's scratch folder holds `in/` (bound read-only at `/inputs`) and `out/`
//! (bound read-write at `/outputs`). No archive calls, but the Docker daemon must see the
//! worker's folders at the same paths.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Attach, Files, OutputError, Outputs, Transfer, fetch_input, report_skipped, scan, store_outputs};
use crate::step::StepError;

/// Files through bound host folders.
pub struct BindFiles;

impl Files for BindFiles {
    async fn before_create(&self, t: &Transfer<'_>) -> Result<Attach, StepError> {
        let (inp, out) = stage_inputs(t).await?;
        Ok(Attach {
            binds: vec![
                format!("{}:/inputs:ro", inp.display()),
                format!("{}:/outputs:rw", out.display()),
            ],
            ..Attach::default()
        })
    }

    async fn before_start(&self, _: &Transfer<'_>) -> Result<(), StepError> {
        Ok(())
    }

    /// Reads `out/` with [`scan::copy_out`]'s rules (no link followed, no special file
    /// opened), into `collected/`, which the container never saw.
    async fn collect(&self, t: &Transfer<'_>) -> Result<Outputs, OutputError> {
        let (root, staging) = (t.scratch.join("out"), t.scratch.join("collected"));
        let max = t.max_output_bytes;
        let found = tokio::task::spawn_blocking(move || scan::copy_out(&root, &staging, max))
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

fn mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Writes the inputs under `scratch/in` (files 0444, folders 0555) and makes an empty, writable
/// `scratch/out`; returns the two host folders to bind.
async fn stage_inputs(t: &Transfer<'_>) -> Result<(PathBuf, PathBuf), StepError> {
    let (inp, out) = (t.scratch.join("in"), t.scratch.join("out"));
    let io = |e: std::io::Error| StepError::local("staging the inputs")(e);
    // Metadata calls on the worker's own disk, done in place like the `chmod`s below: two hops
    // to the blocking pool cost more than the calls (a warm container's folders exist already).
    std::fs::create_dir_all(&inp).map_err(io)?;
    std::fs::create_dir_all(&out).map_err(io)?;
    mode(&out, 0o777).map_err(io)?;
    let mut dirs = BTreeSet::new();
    for name in t.job.run_inputs() {
        let local = inp.join(name);
        if let Some(parent) = local.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
            dirs.extend(parent.ancestors().take_while(|p| *p != inp).map(Path::to_path_buf));
        }
        fetch_input(t.storage, t.job, name, &local).await?;
        mode(&local, 0o444).map_err(io)?;
    }
    // Deepest folders first, so a parent is closed only after its children.
    for d in dirs.iter().rev().chain(std::iter::once(&inp)) {
        mode(d, 0o555).map_err(io)?;
    }
    Ok((inp, out))
}
