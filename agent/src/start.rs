//! Starting the job's command as runc would have started it in a cold container: the program
//! found the way runc finds it (Go's `exec.LookPath` on the command's own `PATH`), and a refusal
//! worded as runc words it, so a job cannot tell from its result that it ran warm.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::protocol::{self, Instruction};

/// What became of a command that could be started.
pub enum Started {
    /// It runs, with this pid.
    Running(u32),
    /// Its program was found but the kernel would not run it: runc has already started the
    /// container by then, so a cold job sees the reason on its stderr and exits with 1. So here.
    Failed(i32),
}

/// Starts `job`'s command with its output to the FIFOs in `folder`, or gives the runtime's words
/// for why it cannot (what a cold container's create fails with).
pub fn command(job: &Instruction, folder: &Path) -> Result<Started, String> {
    let out = fifo(&folder.join(protocol::STDOUT))?;
    let mut err = fifo(&folder.join(protocol::STDERR))?;
    let env: Vec<(OsString, OsString)> = job.env.iter().map(|e| split_entry(e)).collect();
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os("PATH"));
    let name = &job.argv[0];
    // Worded as Docker relays runc's refusal, containerd's error code ("unknown") included.
    let program =
        look_path(name, path.as_deref()).map_err(|why| format!("unable to start container process: {why}: unknown"))?;
    let spawned = Command::new(&program)
        .arg0(OsStr::from_bytes(name))
        .args(job.argv[1..].iter().map(|a| OsStr::from_bytes(a)))
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err.try_clone().map_err(|e| format!("dcc-agent: {e}"))?)
        .spawn();
    match spawned {
        Ok(child) => Ok(Started::Running(child.id())),
        Err(e) => {
            let _ = writeln!(err, "exec {}: {}", program.display(), go_error(&e));
            Ok(Started::Failed(1))
        }
    }
}

/// Opens one of the worker's FIFOs for writing (the worker holds its read end open already).
fn fifo(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("dcc-agent: {}: {e}", path.display()))
}

/// `NAME=value` as its two halves.
fn split_entry(entry: &[u8]) -> (OsString, OsString) {
    let at = entry.iter().position(|b| *b == b'=').unwrap_or(entry.len());
    let value = entry.get(at + 1..).unwrap_or_default();
    (OsStr::from_bytes(&entry[..at]).into(), OsStr::from_bytes(value).into())
}

/// Where `name` is, as Go's `exec.LookPath` (which runc uses) finds it, or its error's words.
fn look_path(name: &[u8], path: Option<&OsStr>) -> Result<PathBuf, String> {
    let quoted = format!("{:?}", String::from_utf8_lossy(name));
    if name.contains(&b'/') {
        let file = PathBuf::from(OsStr::from_bytes(name));
        return executable(&file)
            .map(|()| file)
            .map_err(|e| format!("exec: {quoted}: {e}"));
    }
    let path = path.map(OsStr::as_bytes).unwrap_or_default();
    // An empty PATH has no folders; an empty entry in a longer one is the working folder.
    let dirs = path.split(|b| *b == b':').filter(|_| !path.is_empty());
    for dir in dirs {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(OsStr::from_bytes(name));
        if executable(&candidate).is_ok() {
            // A relative folder gives a name without a slash, which `Command` would look up again.
            return Ok(if candidate.is_relative() {
                Path::new(".").join(candidate)
            } else {
                candidate
            });
        }
    }
    Err(format!("exec: {quoted}: executable file not found in $PATH"))
}

/// Go's `findExecutable`: a file that is not a folder and has an execute bit.
fn executable(file: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("stat {}: {}", file.display(), go_error(&e)))?;
    if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
        return Err("permission denied".into());
    }
    Ok(())
}

/// An OS error as Go prints it: the C library's words, lower-case, without Rust's "(os error N)".
fn go_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_and_refused_in_runc_words() {
        let path = OsStr::new("/no/such:/bin:/usr/bin");
        assert_eq!(look_path(b"sh", Some(path)).unwrap(), Path::new("/bin/sh"));
        assert_eq!(
            look_path(b"/no/such/program", Some(path)).unwrap_err(),
            "exec: \"/no/such/program\": stat /no/such/program: no such file or directory"
        );
        assert_eq!(
            look_path(b"nosuch", Some(path)).unwrap_err(),
            "exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(
            look_path(b"/etc", Some(path)).unwrap_err(),
            "exec: \"/etc\": permission denied"
        );
        assert_eq!(
            look_path(b"/etc/passwd", Some(path)).unwrap_err(),
            "exec: \"/etc/passwd\": permission denied"
        );
        assert!(
            look_path(b"sh", Some(OsStr::new(""))).is_err(),
            "an empty PATH has no folders"
        );
    }

    #[test]
    fn environment_entries_split_at_the_first_equals() {
        assert_eq!(split_entry(b"A=b=c"), ("A".into(), "b=c".into()));
        assert_eq!(split_entry(b"A="), ("A".into(), "".into()));
    }
}
