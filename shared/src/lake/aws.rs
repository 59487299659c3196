//! The lake on S3 (aws-sdk-s3): one bucket is one lake.
//!
//! Conditional puts map onto S3's own conditional writes (`If-None-Match: *`, `If-Match`), so
//! create-if-absent and compare-and-swap hold across every writer, not just this process.
//! Large files go up as multipart uploads whose parts are streamed from disk, so memory stays
//! bounded by the SDK's read buffer whatever the file size.

use std::path::Path;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{LakeError, ObjectMeta, ObjectStore, PutMode, PutResult};

/// Files up to this size go up in one PutObject; larger ones as multipart uploads with parts
/// of this size. 16 MiB keeps the part count of a 5 GiB file (~320) far below S3's limit of
/// 10,000 while each part is still cheap to retry.
const PART_SIZE_BYTES: u64 = 16 * 1024 * 1024;

/// An object store on one S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    /// A store on `bucket`. The client decides endpoint, region and credentials (see
    /// `crate::aws::s3_config` for moto/LocalStack).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    /// The bucket this store reads and writes.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Uploads `path` as a multipart upload, aborting it on failure so no orphaned parts keep
    /// costing storage.
    async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
    ) -> Result<PutResult, LakeError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| service_error("CreateMultipartUpload", key, &e))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(LakeError::Service {
                op: "CreateMultipartUpload",
                key: key.to_string(),
                message: "the response carried no upload id".into(),
                retryable: true,
            });
        };

        let result = self.upload_parts(key, path, size, upload_id).await;
        if result.is_err() {
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                // The upload's own error is the one to return; a bucket lifecycle rule for
                // incomplete uploads cleans up what this abort could not.
                tracing::warn!(
                    bucket = %self.bucket,
                    key,
                    upload_id,
                    error = %crate::aws::error_chain(&e),
                    "could not abort failed multipart upload"
                );
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        upload_id: &str,
    ) -> Result<PutResult, LakeError> {
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size {
            let len = PART_SIZE_BYTES.min(size - offset);
            // Streamed from the file (and re-read on retry): one part never sits in memory.
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| LakeError::Io {
                    key: key.to_string(),
                    source: std::io::Error::other(e),
                })?;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(body)
                .send()
                .await
                .map_err(|e| service_error("UploadPart", key, &e))?;
            let mut part = CompletedPart::builder().part_number(number);
            if let Some(etag) = uploaded.e_tag() {
                part = part.e_tag(etag);
            }
            if let Some(crc) = uploaded.checksum_crc32() {
                part = part.checksum_crc32(crc);
            }
            parts.push(part.build());
            offset += len;
            number += 1;
        }

        let done = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| service_error("CompleteMultipartUpload", key, &e))?;
        Ok(PutResult {
            etag: done.e_tag().map(unquote),
        })
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn s3_bucket(&self) -> Option<&str> {
        Some(&self.bucket)
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, LakeError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| not_found_or(key, service_error("GetObject", key, &e), &e))?;
        let body = out.body.collect().await.map_err(|e| body_error(key, &e))?;
        Ok(body.into_bytes())
    }

    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<ObjectMeta, LakeError> {
        let mut out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| not_found_or(key, service_error("GetObject", key, &e), &e))?;
        let expected = out.content_length().and_then(|n| u64::try_from(n).ok());
        let etag = out.e_tag().map(unquote);

        let io_err = |source| LakeError::Io {
            key: key.to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io_err)?;
        let copied: Result<u64, LakeError> = async {
            let mut written = 0u64;
            while let Some(chunk) = out.body.try_next().await.map_err(|e| body_error(key, &e))? {
                file.write_all(&chunk).await.map_err(io_err)?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(io_err)?;
            Ok(written)
        }
        .await;
        let written = match copied {
            Ok(n) => n,
            Err(e) => {
                // A partial file must not pass for the object; the caller gets the error.
                drop(file);
                let _ = tokio::fs::remove_file(dest).await;
                return Err(e);
            }
        };
        if let Some(expected) = expected.filter(|&n| n != written) {
            drop(file);
            let _ = tokio::fs::remove_file(dest).await;
            return Err(LakeError::Service {
                op: "GetObject",
                key: key.to_string(),
                message: format!("body ended after {written} of {expected} bytes"),
                retryable: true,
            });
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size_bytes: written,
            etag,
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, LakeError> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| not_found_or(key, service_error("HeadObject", key, &e), &e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size_bytes: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            etag: out.e_tag().map(unquote),
        })
    }

    async fn put(&self, key: &str, body: Bytes, mode: PutMode) -> Result<PutResult, LakeError> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body));
        req = match &mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::UpdateIfMatch(etag) => req.if_match(format!("\"{}\"", unquote(etag))),
        };
        let out = req.send().await.map_err(|e| {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let code = e.code();
            let key = key.to_string();
            let failed_condition = status == Some(412) || code == Some("PreconditionFailed");
            // 409: another conditional write to the key was in flight; we lost that race.
            let conflict = status == Some(409) || code == Some("ConditionalRequestConflict");
            let missing = status == Some(404) || code == Some("NoSuchKey");
            match &mode {
                PutMode::Create if failed_condition => LakeError::AlreadyExists { key },
                PutMode::Create if conflict => LakeError::Precondition { key },
                // If-Match on a missing key: the ETag read earlier no longer names an object.
                PutMode::UpdateIfMatch(_) if failed_condition || conflict || missing => {
                    LakeError::Precondition { key }
                }
                _ => service_error("PutObject", &key, &e),
            }
        })?;
        Ok(PutResult {
            etag: out.e_tag().map(unquote),
        })
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<PutResult, LakeError> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|source| LakeError::Io {
                key: key.to_string(),
                source,
            })?
            .len();
        if size > PART_SIZE_BYTES {
            return self.put_multipart(key, path, size).await;
        }
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| LakeError::Io {
                key: key.to_string(),
                source: std::io::Error::other(e),
            })?;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(|e| service_error("PutObject", key, &e))?;
        Ok(PutResult {
            etag: out.e_tag().map(unquote),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), LakeError> {
        // S3 answers 204 for an absent key too, which is the idempotence we promise.
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| service_error("DeleteObject", key, &e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, LakeError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| service_error("ListObjectsV2", prefix, &e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                found.push(ObjectMeta {
                    key: key.to_string(),
                    size_bytes: obj.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                    etag: obj.e_tag().map(unquote),
                });
            }
        }
        // S3 already lists in UTF-8 byte order; sorting keeps the promise for any
        // S3-compatible store that does not.
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }
}

/// S3 sends ETags in HTTP form (`"abc"`); callers compare bare values.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// `NotFound` when the error is S3's 404 for the key, otherwise `other`.
fn not_found_or<E>(key: &str, other: LakeError, err: &SdkError<E>) -> LakeError
where
    E: ProvideErrorMetadata,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    // HEAD responses have no body, so their 404 carries no `NoSuchKey` code.
    if status == Some(404) || matches!(err.code(), Some("NoSuchKey" | "NotFound")) {
        LakeError::NotFound {
            key: key.to_string(),
        }
    } else {
        other
    }
}

/// A failure while reading a response body: the connection broke, so trying again may work.
fn body_error(key: &str, err: &aws_sdk_s3::primitives::ByteStreamError) -> LakeError {
    LakeError::Service {
        op: "GetObject",
        key: key.to_string(),
        message: format!("reading the body failed: {}", crate::aws::error_chain(err)),
        retryable: true,
    }
}

/// Turns an SDK error into `LakeError::Service` through the one classifier every client uses.
fn service_error<E>(op: &'static str, key: &str, err: &SdkError<E>) -> LakeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let f = crate::aws::classify(err);
    LakeError::Service {
        op,
        key: key.to_string(),
        message: f.message,
        retryable: f.retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_their_quotes() {
        assert_eq!(unquote("\"abc-2\""), "abc-2");
        assert_eq!(unquote("abc"), "abc");
    }
}
