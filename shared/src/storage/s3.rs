//! The S3 backend (`DCC_STORAGE=s3://bucket/prefix`) through aws-sdk-s3: AWS, or any
//! S3-compatible store via the standard `AWS_ENDPOINT_URL` (MinIO, moto). Credentials and region
//! come from the default AWS provider chain (instance roles in production; never static keys in
//! config files). Uploads stream: objects up to one part go in one PutObject, larger ones as a
//! multipart upload holding one 8 MiB part in memory at a time (aborted on any error, so nothing
//! half-written remains). Reads stream too. The bucket stays private: clients get short-lived
//! presigned links.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{ByteStream, Object, Storage, StorageError};

/// Size of one multipart part: the memory one upload holds (S3's minimum part is 5 MiB).
const PART: usize = 8 << 20;
/// Most keys per DeleteObjects call (S3's limit).
const DELETE_BATCH: usize = 1000;

/// Objects in one bucket under one key prefix.
pub struct S3Storage {
    client: Client,
    bucket: String,
    /// Key prefix, empty or ending in `/`.
    prefix: String,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(std::io::Error::other(e.to_string()))
}

/// Splits `s3://bucket/prefix` into bucket and prefix (`""` or ending in `/`).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return None;
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Some((bucket.to_string(), prefix))
}

impl S3Storage {
    /// A backend on `s3://bucket/prefix`, configured from the environment.
    pub async fn from_env(url: &str, force_path_style: bool) -> Result<Self, crate::Error> {
        let (bucket, prefix) = parse_url(url)
            .ok_or_else(|| crate::Error::Config(format!("DCC_STORAGE={url:?} is not s3://bucket[/prefix]")))?;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        let conf = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(force_path_style)
            .build();
        Ok(S3Storage {
            client: Client::from_conf(conf),
            bucket,
            prefix,
        })
    }

    fn key(&self, name: &str) -> Result<String, StorageError> {
        if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == ".." || p == ".") {
            return Err(StorageError::BadName(name.to_string()));
        }
        Ok(format!("{}{}", self.prefix, name))
    }

    async fn upload_part(&self, key: &str, upload: &str, n: i32, part: Bytes) -> Result<CompletedPart, StorageError> {
        let r = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(n)
            .body(S3Body::from(part))
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(CompletedPart::builder().set_e_tag(r.e_tag).part_number(n).build())
    }

    /// The multipart path: parts as they fill, then complete; abort on any error.
    async fn put_multipart(
        &self,
        key: &str,
        mut buf: BytesMut,
        mut body: ByteStream<'_>,
        mut size: u64,
        limit: u64,
    ) -> Result<u64, StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/octet-stream")
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        let upload = created.upload_id.ok_or_else(|| backend("S3 gave no upload id"))?;
        let result = async {
            let mut parts = Vec::new();
            loop {
                while buf.len() >= PART {
                    let part = buf.split_to(PART).freeze();
                    let n = parts.len() as i32 + 1;
                    parts.push(self.upload_part(key, &upload, n, part).await?);
                }
                let Some(chunk) = body.next().await else { break };
                let chunk = chunk.map_err(StorageError::Source)?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(StorageError::TooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            if !buf.is_empty() {
                let n = parts.len() as i32 + 1;
                parts.push(
                    self.upload_part(key, &upload, n, std::mem::take(&mut buf).freeze())
                        .await?,
                );
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload)
                .send()
                .await;
        }
        result
    }

    /// Every key under `prefix` (full keys) with sizes.
    async fn keys_under(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((k.to_string(), o.size().unwrap_or(0).max(0) as u64));
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn put_stream(&self, name: &str, mut body: ByteStream<'_>, limit: u64) -> Result<u64, StorageError> {
        let key = self.key(name)?;
        let mut buf = BytesMut::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StorageError::Source)?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(StorageError::TooLarge { limit });
            }
            buf.extend_from_slice(&chunk);
            if buf.len() >= PART {
                return self.put_multipart(&key, buf, body, size, limit).await;
            }
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/octet-stream")
            .body(S3Body::from(buf.freeze()))
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(size)
    }

    async fn put_file(&self, name: &str, path: &Path) -> Result<u64, StorageError> {
        let file = tokio::fs::File::open(path).await?;
        let body: ByteStream<'_> = Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        self.put_stream(name, body, u64::MAX).await
    }

    async fn get(&self, name: &str) -> Result<Option<Object>, StorageError> {
        let key = self.key(name)?;
        match self.client.get_object().bucket(&self.bucket).key(&key).send().await {
            Ok(o) => {
                let size = o.content_length().unwrap_or(0).max(0) as u64;
                let reader = o.body.into_async_read();
                let body: ByteStream<'static> = Box::pin(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20));
                Ok(Some(Object { size, body }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(backend(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    async fn get_to_file(&self, name: &str, path: &Path) -> Result<bool, StorageError> {
        let Some(mut obj) = self.get(name).await? else {
            return Ok(false);
        };
        let mut f = tokio::fs::File::create(path).await.map_err(StorageError::Local)?;
        while let Some(chunk) = obj.body.next().await {
            f.write_all(&chunk.map_err(backend)?)
                .await
                .map_err(StorageError::Local)?;
        }
        f.flush().await.map_err(StorageError::Local)?;
        Ok(true)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let full = self.key(prefix)?;
        let mut out: Vec<(String, u64)> = self
            .keys_under(&full)
            .await?
            .into_iter()
            .map(|(k, s)| (k[full.len()..].to_string(), s))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let full = self.key(prefix)?;
        let keys = self.keys_under(&full).await?;
        for batch in keys.chunks(DELETE_BATCH) {
            let ids: Vec<ObjectIdentifier> = batch
                .iter()
                .filter_map(|(k, _)| ObjectIdentifier::builder().key(k).build().ok())
                .collect();
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(backend)?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn exists(&self, name: &str) -> Result<bool, StorageError> {
        let key = self.key(name)?;
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(backend(aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }

    async fn presign(&self, name: &str, expires: Duration) -> Result<Option<String>, StorageError> {
        let key = self.key(name)?;
        let cfg = PresigningConfig::expires_in(expires).map_err(backend)?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .presigned(cfg)
            .await
            .map_err(|e| backend(aws_sdk_s3::error::DisplayErrorContext(e)))?;
        Ok(Some(req.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn parses_bucket_and_prefix() {
        assert_eq!(parse_url("s3://b"), Some(("b".into(), "".into())));
        assert_eq!(parse_url("s3://b/"), Some(("b".into(), "".into())));
        assert_eq!(parse_url("s3://b/dcc/prod/"), Some(("b".into(), "dcc/prod/".into())));
        assert_eq!(parse_url("s3:///x"), None);
        assert_eq!(parse_url("file:///x"), None);
    }
}
