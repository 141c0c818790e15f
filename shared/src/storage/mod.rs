//! Where job files live: staged inputs, outputs and logs.
//!
//! # Layout
//! - this file: the [`Storage`] trait every backend implements, its error type, and the object
//!   names of a job's files ([`paths`]).
//! - [`local`]: a folder on the local disk (the default; shared by server and worker on one host).
//! - [`redis_blob`]: fast jobs' files, kept in Redis beside the job record.
//! - [`s3`]: S3 or any S3-compatible store, through aws-sdk-s3.
//!
//! Object names are `/`-separated relative paths built by [`paths`] from validated ids and names.

pub mod local;
pub mod redis_blob;
pub mod s3;

use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use local::LocalStorage;
pub use redis_blob::RedisBlobs;
pub use s3::S3Storage;

/// A stream of bytes flowing into or out of storage.
pub type ByteStream<'a> = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'a>>;

/// An object being read.
pub struct Object {
    /// Its size in bytes.
    pub size: u64,
    /// Its bytes.
    pub body: ByteStream<'static>,
}

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A write went over the limit given to it; nothing was stored.
    #[error("object is over the {limit} byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The stream being stored failed (e.g. the client's upload broke off); nothing was stored.
    #[error("reading the upload failed: {0}")]
    Source(std::io::Error),
    /// The backend itself failed.
    #[error("{0}")]
    Backend(#[from] std::io::Error),
    /// A name that is not a safe relative path (a bug: callers build names with [`paths`]).
    #[error("invalid object name {0:?}")]
    BadName(String),
    /// Writing the local copy of an object failed (`get_to_file`): the caller's own disk (full,
    /// read-only), not the store.
    #[error("writing the local copy failed: {0}")]
    Local(std::io::Error),
    /// A shared budget is used up (fast-job data in Redis); nothing was stored.
    #[error("no room: {what} is used up")]
    Full {
        /// Which budget.
        what: String,
    },
}

impl StorageError {
    /// True when the backend is unreachable or failing, rather than the request being at fault.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StorageError::Backend(_))
    }
}

/// A place to keep job files. Implementations stream: no object is held whole in memory.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Stores `body` under `name`, refusing more than `limit` bytes; returns the size stored.
    /// On any error nothing is left under `name`.
    async fn put_stream(&self, name: &str, body: ByteStream<'_>, limit: u64) -> Result<u64, StorageError>;

    /// Stores a local file under `name`; returns its size.
    async fn put_file(&self, name: &str, path: &Path) -> Result<u64, StorageError>;

    /// Opens an object; `None` when it does not exist.
    async fn get(&self, name: &str) -> Result<Option<Object>, StorageError>;

    /// Copies an object into a local file; `false` when it does not exist. A failure to write
    /// the file is [`StorageError::Local`].
    async fn get_to_file(&self, name: &str, path: &Path) -> Result<bool, StorageError>;

    /// Names (relative to `prefix`) and sizes of the objects under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError>;

    /// Removes every object under `prefix`; succeeds when there is none.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError>;

    /// Fails when the backend cannot be used right now (`/readyz`).
    async fn check(&self) -> Result<(), StorageError>;

    /// Where the objects are, for logs.
    fn describe(&self) -> String;

    /// Whether an object exists.
    async fn exists(&self, name: &str) -> Result<bool, StorageError> {
        Ok(self.get(name).await?.is_some())
    }

    /// A short-lived URL a client can fetch the object from directly, when the backend has such
    /// links (S3); `None` means "stream it through the API".
    async fn presign(&self, _name: &str, _expires: std::time::Duration) -> Result<Option<String>, StorageError> {
        Ok(None)
    }

    /// Stores bytes held in memory.
    async fn put_bytes(&self, name: &str, bytes: Bytes) -> Result<u64, StorageError> {
        let limit = bytes.len() as u64;
        let body: ByteStream<'_> = Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
        self.put_stream(name, body, limit).await
    }
}

/// Opens the backend a `DCC_STORAGE` value names: `s3://bucket/prefix`, or a path or `file://`
/// URL for a local folder.
pub async fn open(spec: &str, s3_force_path_style: bool) -> Result<std::sync::Arc<dyn Storage>, crate::Error> {
    if spec.starts_with("s3://") {
        return Ok(std::sync::Arc::new(
            S3Storage::from_env(spec, s3_force_path_style).await?,
        ));
    }
    let path = spec.strip_prefix("file://").unwrap_or(spec);
    if path.is_empty() {
        return Err(crate::Error::Config("DCC_STORAGE is empty".into()));
    }
    Ok(std::sync::Arc::new(LocalStorage::new(path)))
}

/// Object names of a job's files. Inputs sit under a per-submission prefix (a losing concurrent
/// submit of the same id removes only its own copy); each attempt writes its logs and outputs under
/// its own prefix, so a stale worker of an old attempt can never overwrite the newer one's files.
pub mod paths {
    use crate::job::JobId;

    /// Everything of one job.
    pub fn job(id: &JobId) -> String {
        format!("jobs/{id}/")
    }

    /// The staged inputs of one submission (`nonce` is random per submit).
    pub fn inputs(id: &JobId, nonce: &str) -> String {
        format!("jobs/{id}/inputs-{nonce}/")
    }

    /// Logs and outputs of one attempt.
    pub fn attempt(id: &JobId, attempt: u32) -> String {
        format!("jobs/{id}/a{attempt}/")
    }

    /// One output of one attempt.
    pub fn output(id: &JobId, attempt: u32, name: &str) -> String {
        format!("jobs/{id}/a{attempt}/outputs/{name}")
    }

    /// A log (`stdout` or `stderr`) of one attempt.
    pub fn log(id: &JobId, attempt: u32, stream: &str) -> String {
        format!("jobs/{id}/a{attempt}/{stream}")
    }
}
