//! The warm container's agent (`agent/`, PID 1 of every warm container) as the worker sees it:
//! the program, carried inside the worker (its build script compiles it) and written out at
//! start; and the control folder through which one job's command is handed to it.
//!
//! The control folder is the worker's: made by it under the container's own scratch folder, bound
//! read-only at `/.dcc`, holding the worker's listening socket and two FIFOs for the command's
//! output. The agent connects once, at its start, before any job is known; the worker then
//! removes the socket, so nothing else can ever connect, and checks the peer is the container's
//! first process. What the agent says back is read as untrusted (bounded frames, strict parse):
//! once the command runs, the container is the job's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::LogOutput;
use dcc_shared::job::ErrorCode;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::io::ReaderStream;

use super::init::Init;

#[allow(dead_code, reason = "the agent's half of the protocol lives in the same file")]
#[path = "../../../agent/src/protocol.rs"]
mod protocol;

pub use protocol::Instruction;
use protocol::Reply;

/// Where the agent is bound in a warm container.
pub const PATH_IN_CONTAINER: &str = "/.dcc-agent";

/// How long a new warm container's agent may take to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// The agent for the architecture this worker was built for; `None` where its build script
/// could not build one (the worker then runs every job cold).
pub fn program() -> Option<&'static [u8]> {
    #[cfg(dcc_agent)]
    return Some(include_bytes!(env!("DCC_AGENT_PROGRAM")));
    #[cfg(not(dcc_agent))]
    None
}

/// Writes the agent to `path` (read and execute for everyone: the container's user may be
/// anyone); `false` when this worker has none.
pub fn write(path: &Path) -> std::io::Result<bool> {
    let Some(bytes) = program() else {
        return Ok(false);
    };
    std::fs::write(path, bytes)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555))?;
    Ok(true)
}

/// What went wrong between the worker and a warm container's agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent did not connect in time (it could not start, or the container died).
    #[error("the agent did not connect within {} s", CONNECT_LIMIT.as_secs())]
    NoConnection,
    /// Taking the connection failed.
    #[error("the agent's connection failed: {0}")]
    Accept(#[source] std::io::Error),
    /// Someone other than the container's first process connected.
    #[error("the connection came from pid {0:?}, not the container's first process")]
    WrongPeer(Option<i32>),
    /// The command cannot be handed over as it is (a NUL byte, too large).
    #[error("the command cannot be started: {0}")]
    Instruction(String),
    /// The worker could not open its end of the output FIFOs.
    #[error("opening the command's output failed on the worker: {0}")]
    Output(#[source] std::io::Error),
    /// The channel broke (the agent died, or was killed with its container).
    #[error("the agent's channel ended: {0}")]
    Channel(#[source] std::io::Error),
    /// The agent said something it never says, or out of turn.
    #[error("the agent sent a malformed or untimely reply")]
    Malformed,
}

impl AgentError {
    /// The job's error code for an attempt this ended: the worker's own disk is the worker's
    /// failure; the rest is the container's.
    pub fn code(&self) -> ErrorCode {
        match self {
            AgentError::Output(_) => ErrorCode::WorkerFailed,
            _ => ErrorCode::ContainerFailed,
        }
    }
}

/// A control folder waiting for its container's agent.
pub struct Channel {
    dir: PathBuf,
    listener: UnixListener,
}

impl Channel {
    /// Makes the control folder `dir`: the socket and the two FIFOs, open to the container's
    /// user whoever it is (the folder's parent is the worker's alone on the host).
    pub fn make(dir: &Path) -> std::io::Result<Channel> {
        std::fs::create_dir(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        for name in [protocol::STDOUT, protocol::STDERR] {
            let path = dir.join(name);
            rustix::fs::mknodat(rustix::fs::CWD, &path, rustix::fs::FileType::Fifo, 0o600.into(), 0)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        }
        let socket = dir.join(protocol::CONTROL);
        let listener = UnixListener::bind(&socket)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
        Ok(Channel {
            dir: dir.to_path_buf(),
            listener,
        })
    }

    /// The bind that puts the folder at `/.dcc`, read-only, in the container.
    pub fn bind(&self) -> String {
        format!("{}:{}:ro", self.dir.display(), protocol::FOLDER)
    }

    /// Takes the agent's connection, then closes the door behind it. `init`: the container's
    /// first process, when the worker sees it; the peer must be that process.
    pub async fn accept(self, init: Option<Init>) -> Result<Agent, AgentError> {
        let accepted = tokio::time::timeout(CONNECT_LIMIT, self.listener.accept()).await;
        let _ = std::fs::remove_file(self.dir.join(protocol::CONTROL));
        drop(self.listener);
        let (control, _) = accepted
            .map_err(|_| AgentError::NoConnection)?
            .map_err(AgentError::Accept)?;
        if let Some(init) = init {
            let peer = control.peer_cred().ok().and_then(|c| c.pid());
            if peer != Some(init.pid()) {
                return Err(AgentError::WrongPeer(peer));
            }
        }
        Ok(Agent { control, dir: self.dir })
    }
}

/// A warm container's agent, connected and waiting for its one instruction.
pub struct Agent {
    control: UnixStream,
    dir: PathBuf,
}

/// What starting a command gave.
pub enum Start {
    /// It runs; its output (stdout and stderr, as Docker's attach stream gives them) comes on
    /// `output`, and [`Agent::exited`] tells its end.
    Running { output: Output },
    /// The runtime's words for why it could not be started.
    Refused(String),
}

/// The command's output, read from the FIFOs.
pub type Output = futures_util::stream::BoxStream<'static, Result<LogOutput, bollard::errors::Error>>;

impl Agent {
    /// Starts `instruction`'s command. `Err`: the agent could not be told or did not answer.
    pub async fn start(&mut self, instruction: &Instruction) -> Result<Start, AgentError> {
        let frame = instruction.encode().map_err(AgentError::Instruction)?;
        // Opened before the agent opens them for writing: a FIFO read with no writer yet would
        // read as ended.
        let pipe = |name: &str| tokio::net::unix::pipe::OpenOptions::new().open_receiver(self.dir.join(name));
        let (out, err) = (pipe(protocol::STDOUT), pipe(protocol::STDERR));
        let (out, err) = (out.map_err(AgentError::Output)?, err.map_err(AgentError::Output)?);
        self.control.write_all(&frame).await.map_err(AgentError::Channel)?;
        match self.reply().await? {
            Reply::Started(_) => {}
            Reply::Refused(why) => return Ok(Start::Refused(why)),
            Reply::Exited(_) => return Err(AgentError::Malformed),
        }
        let io = |err| bollard::errors::Error::IOError { err };
        let out = ReaderStream::new(out).map(move |r| r.map(|message| LogOutput::StdOut { message }).map_err(io));
        let err = ReaderStream::new(err).map(move |r| r.map(|message| LogOutput::StdErr { message }).map_err(io));
        Ok(Start::Running {
            output: futures_util::stream::select(out, err).boxed(),
        })
    }

    /// The command's exit code. `Err` when the agent went without telling it (killed with its
    /// container, by the kernel for memory, or by someone outside). Cancel-safe only in that a
    /// dropped call leaves the channel unusable, which nothing reads again.
    pub async fn exited(&mut self) -> Result<i64, AgentError> {
        match self.reply().await? {
            Reply::Exited(code) => Ok(i64::from(code)),
            _ => Err(AgentError::Malformed),
        }
    }

    /// Reads one reply frame.
    async fn reply(&mut self) -> Result<Reply, AgentError> {
        let mut header = [0u8; 5];
        self.control
            .read_exact(&mut header)
            .await
            .map_err(AgentError::Channel)?;
        let (tag, len) = Reply::header(header).ok_or(AgentError::Malformed)?;
        let mut payload = vec![0u8; len];
        self.control
            .read_exact(&mut payload)
            .await
            .map_err(AgentError::Channel)?;
        Reply::decode(tag, &payload).ok_or(AgentError::Malformed)
    }
}
