//! Errors of the shared crate, named by what failed.

use crate::storage::StorageError;

/// What can go wrong in a queue or registry operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis answered with an error or the connection broke: the operation may not have happened.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// No connection could be taken from the pool (Redis unreachable or the pool exhausted).
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool::managed::PoolError<redis::RedisError>),
    /// The storage backend failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A value read back from Redis did not have the expected shape (a bug or a foreign writer).
    #[error("corrupt record for job {job}: {why}")]
    Corrupt {
        /// The job whose record is unreadable.
        job: String,
        /// What was wrong with it.
        why: String,
    },
    /// The write happened on the primary but was not confirmed as `DCC_DURABILITY` asks within
    /// its timeout: it may not survive a failover. Retrying the same request is safe.
    #[error("the write was not confirmed as {mode} within {waited_ms} ms")]
    NotDurable {
        /// The durability setting.
        mode: String,
        /// How long it waited.
        waited_ms: u64,
    },
    /// A configuration value could not be parsed.
    #[error("configuration: {0}")]
    Config(String),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        if is_read_only(&e) {
            crate::pool::saw_demoted_primary();
        }
        Error::Redis(e)
    }
}

/// A write sent to a replica: the endpoint's primary was demoted (a failover).
fn is_read_only(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

impl Error {
    /// True when the failure means "Redis is unreachable" rather than "Redis said no": the API
    /// answers 503 for these.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Pool(_) => true,
            Error::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
                    || is_read_only(e)
            }
            Error::Storage(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

/// Result alias of the shared crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
