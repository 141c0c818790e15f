//! The local-folder backend: objects are files under a root folder. Writes go to a temporary file
//! in the same filesystem and are renamed into place, so a reader never sees half an object and a
//! failed write leaves nothing behind.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, Object, Storage, StorageError};

/// A temporary file removed when dropped unless it was renamed into place first: a write that
/// fails or is cancelled half-way leaves nothing behind.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Objects as files under `root`.
pub struct LocalStorage {
    /// The folder holding every object.
    root: PathBuf,
}

impl LocalStorage {
    /// A backend rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage { root: root.into() }
    }

    /// The file behind an object name, refusing anything but plain relative components.
    fn path(&self, name: &str) -> Result<PathBuf, StorageError> {
        let rel = Path::new(name.trim_end_matches('/'));
        if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StorageError::BadName(name.to_string()));
        }
        Ok(self.root.join(rel))
    }

    /// A fresh temporary file path inside the root (same filesystem, so rename is atomic).
    async fn temp_path(&self) -> Result<PathBuf, StorageError> {
        let dir = self.root.join(".tmp");
        tokio::fs::create_dir_all(&dir).await?;
        Ok(dir.join(uuid::Uuid::new_v4().simple().to_string()))
    }

    async fn commit(&self, tmp: &Path, name: &str) -> Result<(), StorageError> {
        let dest = self.path(name)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(tmp, &dest).await?;
        Ok(())
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put_stream(&self, name: &str, mut body: ByteStream<'_>, limit: u64) -> Result<u64, StorageError> {
        self.path(name)?;
        let tmp = TempFile(self.temp_path().await?);
        let mut file = tokio::fs::File::create(&tmp.0).await?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StorageError::Source)?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(StorageError::TooLarge { limit });
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        drop(file);
        self.commit(&tmp.0, name).await?;
        Ok(size)
    }

    async fn put_file(&self, name: &str, path: &Path) -> Result<u64, StorageError> {
        self.path(name)?;
        let tmp = TempFile(self.temp_path().await?);
        let size = tokio::fs::copy(path, &tmp.0).await?;
        self.commit(&tmp.0, name).await?;
        Ok(size)
    }

    async fn get(&self, name: &str) -> Result<Option<Object>, StorageError> {
        let path = self.path(name)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => {
                let meta = file.metadata().await?;
                if !meta.is_file() {
                    return Ok(None);
                }
                let body: ByteStream<'static> = Box::pin(tokio_util::io::ReaderStream::new(file));
                Ok(Some(Object { size: meta.len(), body }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(21) => Ok(None), // EISDIR
            Err(e) => Err(e.into()),
        }
    }

    async fn get_to_file(&self, name: &str, path: &Path) -> Result<bool, StorageError> {
        let src = self.path(name)?;
        let mut from = match tokio::fs::File::open(&src).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let mut to = tokio::fs::File::create(path).await.map_err(StorageError::Local)?;
        // Read errors are the store's, write errors the local disk's: a copy in one call
        // (`tokio::fs::copy`) could not tell them apart.
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut from, &mut buf).await?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).await.map_err(StorageError::Local)?;
        }
        to.flush().await.map_err(StorageError::Local)?;
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let base = self.path(prefix)?;
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            while let Some(entry) = rd.next_entry().await? {
                let ft = entry.file_type().await?;
                if ft.is_dir() {
                    stack.push(entry.path());
                } else if ft.is_file() {
                    let size = entry.metadata().await?.len();
                    if let Ok(rel) = entry.path().strip_prefix(&base) {
                        out.push((rel.to_string_lossy().into_owned(), size));
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let path = self.path(prefix)?;
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.raw_os_error() == Some(20) => Ok(tokio::fs::remove_file(&path).await?), // ENOTDIR
            Err(e) => Err(e.into()),
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        let tmp = self.temp_path().await?;
        tokio::fs::write(&tmp, b"ok").await?;
        tokio::fs::remove_file(&tmp).await?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("local folder {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn round_trip_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        s.put_bytes("jobs/a/x/1.txt", Bytes::from_static(b"one")).await.unwrap();
        s.put_bytes("jobs/a/x/sub/2.bin", Bytes::from_static(b"\0\x01"))
            .await
            .unwrap();
        let listed = s.list("jobs/a/x/").await.unwrap();
        assert_eq!(listed, vec![("1.txt".into(), 3), ("sub/2.bin".into(), 2)]);
        let mut o = s.get("jobs/a/x/1.txt").await.unwrap().unwrap();
        assert_eq!(o.size, 3);
        assert_eq!(o.body.next().await.unwrap().unwrap(), Bytes::from_static(b"one"));
        assert!(s.get("jobs/a/none").await.unwrap().is_none());
        s.delete_prefix("jobs/a/").await.unwrap();
        assert!(s.list("jobs/a/").await.unwrap().is_empty());
        s.delete_prefix("jobs/a/").await.unwrap();
    }

    /// A failure to write the local copy is the local disk's, told apart from the store's.
    #[tokio::test]
    async fn a_copy_that_cannot_be_written_is_a_local_failure() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        s.put_bytes("jobs/a/in", Bytes::from_static(b"data")).await.unwrap();
        let to = dir.path().join("copy");
        assert!(s.get_to_file("jobs/a/in", &to).await.unwrap());
        assert_eq!(std::fs::read(&to).unwrap(), b"data");
        assert!(!s.get_to_file("jobs/a/none", &to).await.unwrap());
        let nowhere = dir.path().join("no-such-folder/copy");
        assert!(matches!(
            s.get_to_file("jobs/a/in", &nowhere).await,
            Err(StorageError::Local(_))
        ));
    }

    #[tokio::test]
    async fn limit_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let body: ByteStream<'_> = Box::pin(futures_util::stream::iter(vec![Ok(Bytes::from_static(b"12345"))]));
        assert!(matches!(
            s.put_stream("a", body, 4).await,
            Err(StorageError::TooLarge { .. })
        ));
        assert!(s.get("a").await.unwrap().is_none());
        assert!(matches!(
            s.put_bytes("../x", Bytes::new()).await,
            Err(StorageError::BadName(_))
        ));
        assert!(matches!(
            s.put_bytes("/x", Bytes::new()).await,
            Err(StorageError::BadName(_))
        ));
        assert_eq!(std::fs::read_dir(dir.path().join(".tmp")).unwrap().count(), 0);
    }
}
