//! Fast jobs' files in Redis: a [`Storage`] whose objects are fields of one hash per job
//! (`{p}:blob:<id>`), so the executor and the API serve fast jobs with the same code as standard
//! ones while their bytes never touch the storage backend. The job id is read from the object name
//! (`jobs/<id>/…`, see [`super::paths`]). Every object is bounded: Redis holds them in memory.

use std::path::Path;
use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use redis::Script;

use super::{ByteStream, Object, Storage, StorageError};

static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("blob_put.lua")));
static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("blob_delete.lua")));
use crate::job::JobId;
use crate::queue::Queue;

/// Fast-job files in Redis.
pub struct RedisBlobs {
    /// Where the hashes live.
    queue: Queue,
    /// Largest object accepted (outputs and logs of a fast job travel inline, so they stay small).
    max_object: u64,
    /// Most bytes all fast jobs together may keep in Redis.
    budget: u64,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(std::io::Error::other(e.to_string()))
}

impl RedisBlobs {
    /// Blobs in `queue`'s Redis, each at most `max_object` bytes.
    pub fn new(queue: Queue, max_object: u64, budget: u64) -> Self {
        RedisBlobs {
            queue,
            max_object,
            budget,
        }
    }

    /// The hash key holding an object, and the queue seen from its job's shard.
    fn key(&self, name: &str) -> Result<(String, Queue), StorageError> {
        let id = name
            .strip_prefix("jobs/")
            .and_then(|r| r.split('/').next())
            .and_then(|id| JobId::parse(id).ok())
            .ok_or_else(|| StorageError::BadName(name.to_string()))?;
        let shard = self.queue.for_job(&id).into_owned();
        Ok((shard.keys().blob(&id), shard))
    }

    /// The hash of `prefix`'s job, its shard, a connection, and the object names under `prefix`.
    async fn names_under(
        &self,
        prefix: &str,
    ) -> Result<(String, Queue, crate::connection::Conn, Vec<String>), StorageError> {
        let (key, shard) = self.key(prefix)?;
        let mut c = shard.conn().await.map_err(backend)?;
        let fields: Vec<String> = redis::cmd("HKEYS")
            .arg(&key)
            .query_async(&mut c)
            .await
            .map_err(backend)?;
        let names = fields.into_iter().filter(|f| f.starts_with(prefix)).collect();
        Ok((key, shard, c, names))
    }

    /// One object's bytes, if it exists.
    async fn fetch(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (key, shard) = self.key(name)?;
        let mut c = shard.conn().await.map_err(backend)?;
        redis::cmd("HGET")
            .arg(&key)
            .arg(name)
            .query_async(&mut c)
            .await
            .map_err(backend)
    }

    async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<u64, StorageError> {
        let (key, shard) = self.key(name)?;
        let mut c = shard.conn().await.map_err(backend)?;
        let n = bytes.len() as u64;
        // Each shard counts its own jobs' bytes (one script, one slot): the budget is split.
        let grew: i64 = PUT
            .key(&key)
            .key(shard.keys().fast_bytes())
            .arg(name)
            .arg(bytes)
            .arg(self.budget.div_ceil(shard.shard_count() as u64))
            .invoke_async(&mut c)
            .await
            .map_err(backend)?;
        if grew < 0 {
            return Err(StorageError::Full {
                what: format!(
                    "the {} byte budget for fast-job data in Redis (DCC_FAST_MAX_REDIS_BYTES)",
                    self.budget
                ),
            });
        }
        Ok(n)
    }
}

#[async_trait]
impl Storage for RedisBlobs {
    async fn put_stream(&self, name: &str, mut body: ByteStream<'_>, limit: u64) -> Result<u64, StorageError> {
        let limit = limit.min(self.max_object);
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StorageError::Source)?;
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(StorageError::TooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
        }
        self.put(name, buf).await
    }

    async fn put_file(&self, name: &str, path: &Path) -> Result<u64, StorageError> {
        let size = tokio::fs::metadata(path).await?.len();
        if size > self.max_object {
            return Err(StorageError::TooLarge { limit: self.max_object });
        }
        let bytes = tokio::fs::read(path).await?;
        self.put(name, bytes).await
    }

    async fn get(&self, name: &str) -> Result<Option<Object>, StorageError> {
        let v = self.fetch(name).await?;
        Ok(v.map(|b| {
            let size = b.len() as u64;
            let bytes = Bytes::from(b);
            let body: ByteStream<'static> = Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
            Object { size, body }
        }))
    }

    async fn get_to_file(&self, name: &str, path: &Path) -> Result<bool, StorageError> {
        let v = self.fetch(name).await?;
        match v {
            Some(b) => {
                tokio::fs::write(path, b).await.map_err(StorageError::Local)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let (key, _, mut c, names) = self.names_under(prefix).await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in &names {
            pipe.cmd("HSTRLEN").arg(&key).arg(n);
        }
        let sizes: Vec<u64> = pipe.query_async(&mut c).await.map_err(backend)?;
        let mut out: Vec<(String, u64)> = names
            .into_iter()
            .zip(sizes)
            .map(|(n, s)| (n[prefix.len()..].to_string(), s))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let (key, shard, mut c, doomed) = self.names_under(prefix).await?;
        if !doomed.is_empty() {
            let _: i64 = DELETE
                .key(&key)
                .key(shard.keys().fast_bytes())
                .arg(doomed)
                .invoke_async(&mut c)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.queue.ping().await.map_err(backend)
    }

    fn describe(&self) -> String {
        "fast-job blobs in Redis".into()
    }
}
