//! What the worker and the agent say to each other over the control socket. The worker compiles
//! this same file (by path) so the two sides cannot drift apart; it is plain functions on bytes,
//! with no I/O, for that reason.
//!
//! Worker → agent, once: an [`Instruction`] as a frame (`u32` little-endian length, then the
//! payload: the argument count in decimal, the arguments, then `NAME=value` environment entries,
//! each ended by a NUL byte: what `execve` takes, and nothing it could not take).
//!
//! Agent → worker: [`Reply`] frames (a tag byte, a `u32` little-endian length, the payload):
//! `S` started (the command's pid in the container), or `E` refused (why the command could not
//! be started, in the runtime's words), then `X` exited (its exit code, 128 + the signal when a
//! signal ended it, as Docker reports).

/// Names in the control folder (bound read-only at [`FOLDER`] in the container; the worker made
/// everything in it).
pub const FOLDER: &str = "/.dcc";
/// The worker's listening socket; the agent connects once, at its start.
pub const CONTROL: &str = "control";
/// The FIFOs the command's output goes to (the worker holds their read ends).
pub const STDOUT: &str = "stdout";
pub const STDERR: &str = "stderr";

/// Largest instruction taken (Linux caps a command's arguments and environment at a few MiB).
pub const MAX_INSTRUCTION: usize = 8 << 20;
/// Largest reply payload taken (a refusal's message).
pub const MAX_REPLY: usize = 64 << 10;

/// The command to start.
#[derive(Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The arguments; the first names the program.
    pub argv: Vec<Vec<u8>>,
    /// `NAME=value` entries added to (or replacing in) the agent's own environment.
    pub env: Vec<Vec<u8>>,
}

impl Instruction {
    /// The instruction as a frame; `Err` names the first argument or entry holding a NUL byte
    /// (no program can receive one), or says it is too large.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut payload = format!("{}\0", self.argv.len()).into_bytes();
        for s in self.argv.iter().chain(&self.env) {
            if s.contains(&0) {
                return Err(format!("{:?} holds a NUL byte", String::from_utf8_lossy(s)));
            }
            payload.extend_from_slice(s);
            payload.push(0);
        }
        if payload.len() > MAX_INSTRUCTION {
            return Err(format!(
                "the command and environment take more than {MAX_INSTRUCTION} bytes"
            ));
        }
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&payload);
        Ok(frame)
    }

    /// An instruction from its payload (the frame without its length); `None` when malformed.
    pub fn decode(payload: &[u8]) -> Option<Instruction> {
        let mut fields = payload.strip_suffix(&[0])?.split(|b| *b == 0);
        let argc: usize = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
        let rest: Vec<Vec<u8>> = fields.map(<[u8]>::to_vec).collect();
        if argc == 0 || argc > rest.len() || rest[argc..].iter().any(|e| !e.contains(&b'=')) {
            return None;
        }
        let env = rest[argc..].to_vec();
        let mut argv = rest;
        argv.truncate(argc);
        Some(Instruction { argv, env })
    }
}

/// What the agent says of the command.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// It started, with this pid (in the container's namespace).
    Started(u32),
    /// It could not be started, for this reason.
    Refused(String),
    /// It exited with this code (128 + the signal when killed by one).
    Exited(i32),
}

impl Reply {
    /// The reply as a frame.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, payload) = match self {
            Reply::Started(pid) => (b'S', pid.to_le_bytes().to_vec()),
            Reply::Refused(why) => (b'E', why.as_bytes()[..why.len().min(MAX_REPLY)].to_vec()),
            Reply::Exited(code) => (b'X', code.to_le_bytes().to_vec()),
        };
        let mut frame = vec![tag];
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&payload);
        frame
    }

    /// The tag and payload length of a frame's 5-byte header; `None` when it is no reply's.
    pub fn header(h: [u8; 5]) -> Option<(u8, usize)> {
        let len = u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize;
        let fits = match h[0] {
            b'S' | b'X' => len == 4,
            b'E' => len <= MAX_REPLY,
            _ => false,
        };
        fits.then_some((h[0], len))
    }

    /// A reply from its tag and payload (as [`Reply::header`] accepted them).
    pub fn decode(tag: u8, payload: &[u8]) -> Option<Reply> {
        let word = || <[u8; 4]>::try_from(payload).ok();
        match tag {
            b'S' => Some(Reply::Started(u32::from_le_bytes(word()?))),
            b'X' => Some(Reply::Exited(i32::from_le_bytes(word()?))),
            b'E' => Some(Reply::Refused(String::from_utf8_lossy(payload).into_owned())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_go_and_come_back() {
        let i = Instruction {
            argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo \"$A\"".to_vec(), Vec::new()],
            env: vec![b"A=b=c".to_vec(), b"EMPTY=".to_vec()],
        };
        let frame = i.encode().unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(Instruction::decode(&frame[4..]), Some(i));
    }

    #[test]
    fn malformed_instructions_are_refused() {
        let nul = Instruction {
            argv: vec![b"a\0b".to_vec()],
            env: vec![],
        };
        assert!(nul.encode().unwrap_err().contains("NUL"));
        for bad in [&b""[..], b"0\0", b"2\0a\0", b"x\0a\0", b"1\0a\0NOEQUALS\0", b"1\0a"] {
            assert_eq!(Instruction::decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn replies_go_and_come_back() {
        for r in [
            Reply::Started(7),
            Reply::Refused("exec: \"x\": nope".into()),
            Reply::Exited(-1),
            Reply::Exited(137),
        ] {
            let f = r.encode();
            let (tag, len) = Reply::header(f[..5].try_into().unwrap()).unwrap();
            assert_eq!(len, f.len() - 5);
            assert_eq!(Reply::decode(tag, &f[5..]), Some(r));
        }
        assert_eq!(Reply::header(*b"S\x05\0\0\0"), None);
        assert_eq!(Reply::header(*b"Q\x04\0\0\0"), None);
        assert_eq!(Reply::header([b'E', 0, 0, 0, 1]), None);
    }
}
