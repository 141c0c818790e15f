//! Reading a folder that a job's container wrote, on the worker's side of a bind mount, without
//! trusting anything in it. The job chose every name there: a name may be a symbolic link to a
//! host path, a FIFO that blocks whoever opens it, or swapped for either between a check and a
//! read. So:
//! - every entry is opened relative to its parent folder's handle, one name at a time, with
//!   `O_NOFOLLOW`: no symbolic link is followed, not as the last component nor as a middle one;
//! - each entry is first opened with `O_PATH`, which opens nothing (a FIFO does not block, a
//!   device is not woken), and only a regular file or a folder is then opened for reading, and
//!   only when it is the very inode seen at first (same device and inode number);
//! - a regular file is copied into a folder of the worker's own (`staging`), and stored from
//!   there, so no later step reads a path the job can reach;
//! - anything else (links, FIFOs, sockets, devices, names that are not UTF-8) is skipped and
//!   counted, never read.
//!
//! Callers run this only after every process of the job is dead, so nothing moves under it;
//! the rules above are the second wall, not the first.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use dcc_shared::job::spec::{MAX_OUTPUTS, validate_input_name};
use rustix::fs::{Dir, FileType, Mode, OFlags, Stat};

use super::{Budget, OutputError};

/// Most entries of any kind read under `/outputs` before the scan gives up: folders and skipped
/// entries cost a scan as much as files do, and a job must not make the worker walk forever.
pub const MAX_ENTRIES: usize = 10 * MAX_OUTPUTS;

/// What a scan found.
#[derive(Debug, Default)]
pub struct Found {
    /// Each regular file: its name under `/outputs`, its copy in `staging`, its size.
    pub files: Vec<(String, PathBuf, u64)>,
    /// Entries that were not read: their name under `/outputs` (lossy) and why.
    pub skipped: Vec<(String, &'static str)>,
}

/// One folder being read: its entries and its name under the root ("" for the root).
struct Level {
    dir: Dir,
    fd: OwnedFd,
    prefix: String,
}

/// Copies the regular files under `root` into `staging` (created here), within `max_bytes` and
/// [`MAX_OUTPUTS`]; see the module's rules.
pub fn copy_out(root: &Path, staging: &Path, max_bytes: u64) -> Result<Found, OutputError> {
    std::fs::create_dir_all(staging).map_err(|e| read_error("making the staging folder", e))?;
    let mut found = Found::default();
    let Some(root_fd) = open_dir_path(root)? else {
        return Ok(found);
    };
    let mut budget = Budget::new(max_bytes);
    let mut stack = vec![Level {
        dir: Dir::read_from(&root_fd).map_err(|e| read_error("reading /outputs", e.into()))?,
        fd: root_fd,
        prefix: String::new(),
    }];
    let mut seen = 0usize;
    while let Some(level) = stack.last_mut() {
        let Some(entry) = level.dir.next() else {
            stack.pop();
            continue;
        };
        let entry = entry.map_err(|e| read_error("reading /outputs", e.into()))?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        seen += 1;
        if seen > MAX_ENTRIES {
            return Err(OutputError(format!(
                "the job left more than {MAX_ENTRIES} entries under /outputs"
            )));
        }
        let name_os = OsStr::from_bytes(raw).to_owned();
        let Some(name) = name_os.to_str() else {
            let lossy = format!("{}{}", level.prefix, name_os.to_string_lossy());
            found.skipped.push((lossy, "name is not UTF-8"));
            continue;
        };
        let rel = format!("{}{name}", level.prefix);
        match visit(&level.fd, &name_os, &rel)? {
            Entry::Dir(fd) => {
                // No valid output name can be this long or longer: nothing under it is kept.
                if rel.len() + 2 > dcc_shared::job::spec::MAX_INPUT_NAME {
                    found.skipped.push((rel, "path too long"));
                    continue;
                }
                let dir = Dir::read_from(&fd).map_err(|e| read_error("reading /outputs", e.into()))?;
                stack.push(Level {
                    dir,
                    fd,
                    prefix: format!("{rel}/"),
                });
            }
            Entry::File(fd, size) => {
                if validate_input_name(&rel).is_err() {
                    found.skipped.push((rel, "not a valid output name"));
                    continue;
                }
                budget.add(size)?;
                let local = staging.join(found.files.len().to_string());
                let copied = copy_file(fd, &local, size)?;
                found.files.push((rel, local, copied));
            }
            Entry::Skipped(why) => found.skipped.push((rel, why)),
        }
    }
    found.files.sort();
    Ok(found)
}

/// An entry, once looked at.
enum Entry {
    /// A folder, opened for reading.
    Dir(OwnedFd),
    /// A regular file, opened for reading, with its size.
    File(OwnedFd, u64),
    /// Not read, and why.
    Skipped(&'static str),
}

/// Looks at `name` in the folder `parent` without following it, and opens it for reading only
/// when it is a folder or a regular file that is still the inode first seen.
fn visit(parent: &OwnedFd, name: &OsStr, rel: &str) -> Result<Entry, OutputError> {
    let err = |e: rustix::io::Errno| read_error(&format!("reading output {rel:?}"), e.into());
    let path_only = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let handle = match rustix::fs::openat(parent, name, path_only, Mode::empty()) {
        Ok(fd) => fd,
        // Gone since the folder was read (only a live process could do that).
        Err(rustix::io::Errno::NOENT) => return Ok(Entry::Skipped("vanished")),
        Err(e) => return Err(err(e)),
    };
    let first = rustix::fs::fstat(&handle).map_err(err)?;
    let read = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let (flags, is_dir) = match FileType::from_raw_mode(first.st_mode) {
        FileType::Directory => (read | OFlags::DIRECTORY, true),
        FileType::RegularFile => (read, false),
        FileType::Symlink => return Ok(Entry::Skipped("symbolic link")),
        FileType::Fifo => return Ok(Entry::Skipped("FIFO")),
        FileType::Socket => return Ok(Entry::Skipped("socket")),
        FileType::CharacterDevice | FileType::BlockDevice => return Ok(Entry::Skipped("device")),
        FileType::Unknown => return Ok(Entry::Skipped("unknown file type")),
    };
    // Reopened for reading relative to the parent again: O_NOFOLLOW refuses a link planted
    // meanwhile, and the inode check refuses any other swap.
    let fd = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return Ok(Entry::Skipped("changed while read"));
        }
        Err(e) => return Err(err(e)),
    };
    let now = rustix::fs::fstat(&fd).map_err(err)?;
    if !same_inode(&first, &now) {
        return Ok(Entry::Skipped("changed while read"));
    }
    Ok(if is_dir {
        Entry::Dir(fd)
    } else {
        Entry::File(fd, now.st_size as u64)
    })
}

fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino && a.st_mode == b.st_mode
}

/// Opens the worker's own folder `root` (its path is the worker's, not the job's); `None` when
/// it does not exist.
fn open_dir_path(root: &Path) -> Result<Option<OwnedFd>, OutputError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::open(root, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(read_error("opening /outputs", e.into())),
    }
}

/// Copies at most `size` bytes (the size the budget counted) from `fd` into a new file `to`.
fn copy_file(fd: OwnedFd, to: &Path, size: u64) -> Result<u64, OutputError> {
    use std::io::Read;
    let from = std::fs::File::from(fd);
    // The file was opened non-blocking (harmless for a regular file); reads stay ordinary.
    let mut from = from.take(size);
    let mut out = std::fs::File::create(to).map_err(|e| read_error("staging an output", e))?;
    std::io::copy(&mut from, &mut out).map_err(|e| read_error("copying an output", e))
}

fn read_error(what: &str, e: std::io::Error) -> OutputError {
    OutputError(format!("{what} failed: {e}"))
}

/// Whether `fd` is a folder handle (for tests).
#[cfg(test)]
fn is_dir(fd: &impl std::os::fd::AsFd) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn names(f: &Found) -> Vec<&str> {
        f.files.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    #[test]
    fn regular_files_are_copied_and_nothing_else_is_read() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("out");
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("a.txt"), b"aaa").unwrap();
        std::fs::write(root.join("sub/deeper/b.txt"), b"bb").unwrap();
        let secret = t.path().join("secret");
        std::fs::write(&secret, b"host file").unwrap();
        symlink(&secret, root.join("link")).unwrap();
        symlink(t.path(), root.join("sub/dirlink")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let found = copy_out(&root, &t.path().join("staging"), 1 << 20).unwrap();
        assert_eq!(names(&found), ["a.txt", "sub/deeper/b.txt"]);
        for (_, local, size) in &found.files {
            assert!(local.starts_with(t.path().join("staging")));
            assert_eq!(std::fs::metadata(local).unwrap().len(), *size);
        }
        let mut skipped: Vec<_> = found.skipped.iter().map(|(n, why)| format!("{n}: {why}")).collect();
        skipped.sort();
        assert_eq!(
            skipped,
            ["fifo: FIFO", "link: symbolic link", "sub/dirlink: symbolic link"]
        );
    }

    #[test]
    fn a_symlinked_root_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        symlink(t.path().join("real"), t.path().join("out")).unwrap();
        assert!(copy_out(&t.path().join("out"), &t.path().join("s"), 1 << 20).is_err());
    }

    #[test]
    fn limits_hold() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("out");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("big"), vec![0u8; 2048]).unwrap();
        let e = copy_out(&root, &t.path().join("s"), 1024).unwrap_err();
        assert!(e.0.contains("DCC_MAX_OUTPUT_BYTES"), "{e}");
        assert!(is_dir(&open_dir_path(&root).unwrap().unwrap()));
        assert!(
            copy_out(&t.path().join("missing"), &t.path().join("s"), 1)
                .unwrap()
                .files
                .is_empty()
        );
    }
}
