//! Job ids: client-chosen (validated) or generated (UUIDv7, so ids sort by creation time).

use std::fmt;

/// Longest id a client may choose; ids appear in keys, paths and container names.
pub const MAX_ID_LEN: usize = 128;

/// A job id that is safe in Redis keys, storage paths and Docker container names:
/// 1–128 characters of `[A-Za-z0-9._-]`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// A fresh, unique, time-ordered id.
    pub fn generate() -> Self {
        JobId(uuid::Uuid::now_v7().to_string())
    }

    /// A fresh id that lives in shard `shard` of `shards` ([`crate::keys::shard_of`]): ids are
    /// drawn until one lands there (about `shards` draws; a draw is a UUIDv7, so the id still
    /// sorts by creation time).
    pub fn generate_in(shard: usize, shards: usize) -> Self {
        loop {
            let id = Self::generate();
            if crate::keys::shard_of(id.as_str(), shards) == shard % shards.max(1) {
                return id;
            }
        }
    }

    /// Validates a client-chosen id, saying what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_ID_LEN {
            return Err(format!("id must be 1 to {MAX_ID_LEN} characters long"));
        }
        if !s.as_bytes()[0].is_ascii_alphanumeric() {
            return Err("id must start with a letter or a digit".into());
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return Err("id may only contain letters, digits, '.', '_' and '-'".into());
        }
        Ok(JobId(s.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        assert!(JobId::parse("my-job_1.2").is_ok());
        assert!(JobId::parse("").is_err());
        assert!(JobId::parse("-x").is_err());
        assert!(JobId::parse("..").is_err());
        assert!(JobId::parse("a/b").is_err());
        assert!(JobId::parse("a b").is_err());
        assert!(JobId::parse(&"a".repeat(129)).is_err());
        assert!(JobId::parse(JobId::generate().as_str()).is_ok());
    }
}
