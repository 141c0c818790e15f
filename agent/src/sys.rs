//! The one system call the standard library does not offer: waiting for *any* child, which PID 1
//! needs to reap the orphans the kernel hands it.
#![allow(unsafe_code)]

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// `waitpid` found no child at all.
pub const ECHILD: i32 = 10;

unsafe extern "C" {
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
}

/// Waits for any child to end: its pid and wait status.
pub fn wait_any() -> std::io::Result<(u32, i32)> {
    let mut status = 0;
    // SAFETY: `waitpid` writes one `int` through the pointer, which points to a live local.
    let pid = unsafe { waitpid(-1, &mut status, 0) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((pid as u32, status))
}

/// The exit code Docker reports for a wait status: the code, or 128 + the signal that ended it.
pub fn exit_code(status: i32) -> i32 {
    let s = ExitStatus::from_raw(status);
    s.code().or_else(|| s.signal().map(|n| 128 + n)).unwrap_or(255)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exit_codes_are_dockers() {
        assert_eq!(super::exit_code(3 << 8), 3);
        assert_eq!(super::exit_code(9), 137);
        assert_eq!(super::exit_code(15), 143);
    }
}
