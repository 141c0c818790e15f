//! The worker's self-check, run on every heartbeat: can it run jobs right now? A worker that
//! cannot (Docker not answering, scratch disk nearly full, a GPU's device node gone — see
//! `gpu::WatchedDevices`) reports `UNHEALTHY` with the reason and
//! claims nothing, instead of failing every job it would take; it turns healthy again by itself.

use std::path::Path;
use std::time::Duration;

use bollard::Docker;

/// The result of one check: `None` when healthy, else why not.
pub async fn check(docker: &Docker, scratch: &Path, min_free_percent: u64, limit: Duration) -> Option<String> {
    // A stalled daemon answers nothing, not even an error: the ping has its own short limit
    // (bollard's default is 120 s).
    match tokio::time::timeout(limit, docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Some(format!("the Docker daemon does not answer: {e}")),
        Err(_) => {
            return Some(format!(
                "the Docker daemon does not answer: no reply to a ping within {} ms",
                limit.as_millis()
            ));
        }
    }
    if min_free_percent > 0
        && let Some(free) = free_percent(scratch)
        && free < min_free_percent as f64
    {
        return Some(format!(
            "{} has {free:.1}% free, under DCC_DISK_MIN_FREE_PERCENT={min_free_percent}",
            scratch.display()
        ));
    }
    None
}

/// Free space (for unprivileged users) of the filesystem holding `path`, in percent.
pub fn free_percent(path: &Path) -> Option<f64> {
    let s = rustix::fs::statvfs(path).ok()?;
    if s.f_blocks == 0 {
        return None;
    }
    Some(s.f_bavail as f64 * 100.0 / s.f_blocks as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn measures_the_temp_filesystem() {
        let p = super::free_percent(&std::env::temp_dir()).expect("statvfs works on the temp dir");
        assert!((0.0..=100.0).contains(&p));
    }
}
