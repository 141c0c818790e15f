//! dcc-agent: PID 1 of a warm container. A warm container is created and started before its job
//! is known; the agent connects to the worker's socket in the control folder and waits. When the
//! job comes, the worker sends its command and environment, and the agent starts it — a `fork`
//! and `exec` inside the running container, where `docker exec` costs runc joining the
//! container's namespaces and cgroups (~50 ms here). The command runs as the container's user, in
//! its working folder, with the container's environment plus the job's, its output going to the
//! two FIFOs the worker reads. The agent reports the exit, and reaps every orphan meanwhile. One
//! job per container: the worker kills the container after it, and the agent with it.
//!
//! It must run in any image, `FROM scratch` included: the worker's build script compiles this
//! file alone, with the standard library and nothing else, into a static executable.
//!
//! What a job could try: the control folder is bound read-only and holds only what the worker
//! made, so no one in the container can plant a link there; the agent opens its files before the
//! command exists, hands the command nothing of its own (every descriptor it holds is
//! close-on-exec), and takes one instruction only. Once the command runs the container is the
//! job's anyway.

#[allow(dead_code, reason = "the worker's half of the protocol lives in the same file")]
mod protocol;
mod start;
mod sys;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use protocol::{FOLDER, Instruction, MAX_INSTRUCTION, Reply};

fn main() {
    let folder = Path::new(FOLDER);
    let mut control = match UnixStream::connect(folder.join(protocol::CONTROL)) {
        Ok(c) => c,
        Err(e) => fail(&format!("cannot reach the worker: {e}")),
    };
    let job = match read_instruction(&mut control) {
        Ok(job) => job,
        Err(e) => fail(&format!("no instruction from the worker: {e}")),
    };
    match start::command(&job, folder) {
        Ok(start::Started::Running(pid)) => {
            say(&mut control, &Reply::Started(pid));
            reap(Some(pid), &mut control)
        }
        Ok(start::Started::Failed(code)) => {
            say(&mut control, &Reply::Started(0));
            say(&mut control, &Reply::Exited(code));
            reap(None, &mut control)
        }
        // Nothing was started: the worker fails the attempt and kills the container.
        Err(why) => {
            say(&mut control, &Reply::Refused(why));
            reap(None, &mut control)
        }
    }
}

/// Reads the worker's one instruction.
fn read_instruction(control: &mut UnixStream) -> std::io::Result<Instruction> {
    let mut len = [0u8; 4];
    control.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_INSTRUCTION {
        return Err(std::io::Error::other(format!("an instruction of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    control.read_exact(&mut payload)?;
    Instruction::decode(&payload).ok_or_else(|| std::io::Error::other("a malformed instruction"))
}

/// Sends a reply. A worker that went away cannot be told anything: it removes the container
/// when it comes back, so the error is dropped.
fn say(control: &mut UnixStream, reply: &Reply) {
    let _ = control.write_all(&reply.encode());
}

/// Waits for every child, the command's and the orphans the kernel hands to PID 1, until the
/// container is killed (signals other than SIGKILL do not reach a namespace's first process that
/// has no handler for them); reports the command's exit when it comes.
fn reap(main: Option<u32>, control: &mut UnixStream) -> ! {
    loop {
        match sys::wait_any() {
            Ok((pid, status)) if Some(pid) == main => say(control, &Reply::Exited(sys::exit_code(status))),
            Ok(_) => {}
            // No child now; a process `docker exec` started may still leave orphans, later.
            Err(e) if e.raw_os_error() == Some(sys::ECHILD) => std::thread::sleep(Duration::from_secs(1)),
            Err(_) => {}
        }
    }
}

/// Ends the agent before any command: the container stops, and the worker, which waits for the
/// agent's connection, gives the container up.
fn fail(why: &str) -> ! {
    eprintln!("dcc-agent: {why}");
    std::process::exit(1)
}
