//! The keeper: the only process of a warm container until a job is run in it with `exec`. It must
//! run in any image, `FROM scratch` included, so it is not a program of the image nor one that
//! needs a C library: a static executable of a few dozen bytes, written out by the worker and
//! bound in read-only.
//!
//! What it does, as PID 1 of the container: sets SIGCHLD to "ignore", so the kernel reaps the
//! job's orphaned processes without it, then sleeps in `pause` forever. Signals without a handler
//! do not reach a namespace's PID 1, so only SIGKILL (the container's removal) ends it. The job's
//! own processes are started by `exec`, not by the keeper, and inherit none of this.

use std::path::Path;

/// Where the keeper is bound in a warm container.
pub const PATH_IN_CONTAINER: &str = "/.dcc-keeper";

/// Where the program is loaded (the classic base of a static x86-64 executable).
const BASE: u64 = 0x40_0000;
/// ELF header and the one program header before the code.
const HEADERS: u64 = 64 + 56;

/// The keeper's machine code for x86-64 (Linux system call numbers of that architecture).
#[rustfmt::skip]
const X86_64_CODE: &[u8] = &[
    // struct sigaction on the stack: handler = SIG_IGN (1), flags 0, restorer 0, mask 0.
    0x6a, 0x00,                         // push 0       (sa_mask)
    0x6a, 0x00,                         // push 0       (sa_restorer)
    0x6a, 0x00,                         // push 0       (sa_flags)
    0x6a, 0x01,                         // push 1       (sa_handler = SIG_IGN)
    0xbf, 0x11, 0x00, 0x00, 0x00,       // mov edi, 17  (SIGCHLD)
    0x48, 0x89, 0xe6,                   // mov rsi, rsp (the action)
    0x31, 0xd2,                         // xor edx, edx (no old action)
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8  (sigset size)
    0xb8, 0x0d, 0x00, 0x00, 0x00,       // mov eax, 13  (rt_sigaction)
    0x0f, 0x05,                         // syscall
    // loop: pause() until killed.
    0xb8, 0x22, 0x00, 0x00, 0x00,       // mov eax, 34  (pause)
    0x0f, 0x05,                         // syscall
    0xeb, 0xf7,                         // jmp loop     (back 9 bytes)
];

/// The keeper for the architecture this worker runs on; `None` where there is none yet (the
/// worker then runs every job cold).
pub fn program() -> Option<Vec<u8>> {
    match std::env::consts::ARCH {
        "x86_64" => Some(elf(0x3e, X86_64_CODE)),
        _ => None,
    }
}

/// A static ELF64 executable: the headers, then `code`, all in one read+execute segment.
fn elf(machine: u16, code: &[u8]) -> Vec<u8> {
    let size = HEADERS + code.len() as u64;
    let mut f = Vec::with_capacity(size as usize);
    // ELF header.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&machine.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes()); // version
    f.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // entry: the code
    f.extend_from_slice(&64u64.to_le_bytes()); // program headers right after this header
    f.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    f.extend_from_slice(&64u16.to_le_bytes()); // this header's size
    f.extend_from_slice(&56u16.to_le_bytes()); // one program header's size
    f.extend_from_slice(&1u16.to_le_bytes()); // one program header
    f.extend_from_slice(&[0; 6]); // no section headers, no names
    // Program header: load the whole file at BASE, read + execute.
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    f.extend_from_slice(&0u64.to_le_bytes()); // from file offset 0
    f.extend_from_slice(&BASE.to_le_bytes()); // virtual address
    f.extend_from_slice(&BASE.to_le_bytes()); // physical address
    f.extend_from_slice(&size.to_le_bytes()); // size in the file
    f.extend_from_slice(&size.to_le_bytes()); // size in memory
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    f.extend_from_slice(code);
    f
}

/// Writes the keeper to `path` (read and execute for everyone); `false` when this architecture
/// has none.
pub fn write(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let Some(bytes) = program() else {
        return Ok(false);
    };
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_where_the_entry_point_says() {
        let f = elf(0x3e, X86_64_CODE);
        assert_eq!(f.len() as u64, HEADERS + X86_64_CODE.len() as u64);
        assert_eq!(&f[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(f[24..32].try_into().unwrap());
        assert_eq!(entry - BASE, HEADERS);
        assert_eq!(&f[HEADERS as usize..], X86_64_CODE);
    }

    /// Runs the keeper on this machine (x86-64 only): it must sleep, not exit or crash.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_keeper_sleeps_until_killed() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keeper");
        assert!(write(&path).unwrap());
        let mut child = std::process::Command::new(&path).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "the keeper exited on its own");
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }
}
