//! A warm container's first process (the agent) as the worker's host sees it, so the worker can
//! make sure nothing of a job is alive before it reads the job's outputs, in a millisecond
//! rather than the ~70 ms Docker's kill takes to report the container stopped here.
//!
//! The kernel lets a PID namespace's first process finish dying only after every other process
//! in the namespace has exited: once it is a zombie (or reaped), nothing the job started can run.
//! The worker sends it SIGKILL directly (a signal from an ancestor namespace reaches a namespace's
//! init) and watches `/proc/<pid>/stat`. When the worker does not share the host's PID namespace
//! (it cannot see the process), or the process is not the one recorded (its start time differs),
//! there is no [`Init`] and the caller uses Docker's kill and waits for the stop instead.

use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// How long the first process may take to die before the caller falls back to Docker.
const DEATH_LIMIT: Duration = Duration::from_secs(2);

/// A container's first process: its host pid and its start time (clock ticks after boot), which
/// tells it apart from a later process given the same pid.
#[derive(Clone, Copy, Debug)]
pub struct Init {
    pid: i32,
    start: u64,
}

/// What `/proc/<pid>/stat` says of a process.
enum Seen {
    /// Running (or stopped, sleeping): alive, with its start time.
    Alive(u64),
    /// Dead (a zombie or being reaped).
    Dead,
    /// No such process.
    Gone,
}

impl Init {
    /// The process `pid` (Docker's `State.Pid`), when this worker sees it alive.
    pub fn find(pid: i64) -> Option<Init> {
        let pid = i32::try_from(pid).ok().filter(|p| *p > 0)?;
        match read(pid) {
            Some(Seen::Alive(start)) => Some(Init { pid, start }),
            _ => None,
        }
    }

    /// Its pid, as the worker sees it.
    pub fn pid(self) -> i32 {
        self.pid
    }

    /// Kills the process, and with it every process of its namespace; `true` once they are all
    /// dead, `false` when that could not be seen within [`DEATH_LIMIT`].
    pub async fn kill_all(self) -> bool {
        let Some(pid) = Pid::from_raw(self.pid) else {
            return false;
        };
        match read(self.pid) {
            Some(Seen::Alive(start)) if start == self.start => {}
            // Not the recorded process any more: that one is dead.
            Some(Seen::Gone) => return true,
            Some(Seen::Alive(_) | Seen::Dead) | None => return self.dead(),
        }
        if let Some(dead) = self.kill_by_pidfd(pid).await {
            return dead;
        }
        if let Err(e) = rustix::process::kill_process(pid, Signal::KILL) {
            tracing::debug!(pid = self.pid, error = %e, "could not kill a warm container's first process");
            return false;
        }
        let began = Instant::now();
        let mut pause = Duration::from_micros(200);
        while began.elapsed() < DEATH_LIMIT {
            if self.dead() {
                return true;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        false
    }

    /// Kills through a pidfd and is woken by its death, instead of polling `/proc` (whose
    /// pauses cost a millisecond or more per job: the timer's granularity). A pidfd becomes
    /// readable only once the process is a zombie, and a namespace's first process becomes one
    /// only after every other process of the namespace is gone. `None` when no pidfd could be
    /// had (a kernel before 5.3, a seccomp filter) or it is not the recorded process: the caller
    /// polls.
    async fn kill_by_pidfd(&self, pid: Pid) -> Option<bool> {
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        // The pidfd pins the process it names: that must be the recorded one.
        if !matches!(read(self.pid), Some(Seen::Alive(start)) if start == self.start) {
            return None;
        }
        rustix::process::pidfd_send_signal(&fd, Signal::KILL).ok()?;
        // Waited for on a blocking thread: registering a raw descriptor with Tokio's reactor
        // needs `unsafe`, and one thread hop costs microseconds.
        let waited = tokio::task::spawn_blocking(move || {
            use rustix::event::{PollFd, PollFlags, poll};
            let limit = rustix::time::Timespec {
                tv_sec: DEATH_LIMIT.as_secs() as _,
                tv_nsec: 0,
            };
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            loop {
                match poll(&mut fds, Some(&limit)) {
                    Err(rustix::io::Errno::INTR) => continue,
                    r => return r.is_ok_and(|n| n > 0),
                }
            }
        });
        Some(waited.await.unwrap_or(false))
    }

    /// Whether the recorded process is dead: gone, a zombie, or its pid taken by another.
    fn dead(&self) -> bool {
        match read(self.pid) {
            Some(Seen::Gone) => true,
            Some(Seen::Dead) => true,
            Some(Seen::Alive(start)) => start != self.start,
            None => false,
        }
    }
}

/// Reads `/proc/<pid>/stat`; `None` when it cannot be read or understood.
fn read(pid: i32) -> Option<Seen> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Seen::Gone),
        // ESRCH: the process went away while the file was read.
        Err(e) if e.raw_os_error() == Some(3) => Some(Seen::Gone),
        Err(_) => None,
    }
}

/// The state (field 3) and start time (field 22) of a stat line. The command name (field 2) is
/// in parentheses and may hold anything, so fields are counted after its last `)`.
fn parse(text: &str) -> Option<Seen> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some(match state {
        'Z' | 'X' | 'x' => Seen::Dead,
        _ => Seen::Alive(start),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_name() {
        let line = "31335 (a) b (c) S 31315 31335 31335 0 -1 4194560 954 0 20 0 1 1 0 0 20 0 1 0 25501 1 2";
        assert!(matches!(parse(line), Some(Seen::Alive(25501))));
        let zombie = "7 (x) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0 0";
        assert!(matches!(parse(zombie), Some(Seen::Dead)));
        assert!(parse("garbage").is_none());
    }

    #[tokio::test]
    async fn a_child_is_killed_and_seen_dead() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let init = Init::find(i64::from(child.id())).expect("this process sees its child");
        assert!(init.kill_all().await, "a zombie child counts as dead");
        assert!(!child.wait().unwrap().success());
        assert!(Init::find(i64::from(child.id())).is_none());
        assert!(Init::find(0).is_none());
    }
}
