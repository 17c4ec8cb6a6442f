//! Fetching one blob into the layout: streamed to `<hex>.partial` while its sha256 is computed, renamed to
//! `<hex>` once complete and verified. A blob already there with the right digest is not fetched again. A
//! download cut short (by the connection, or a `.partial` left by an earlier pull) resumes with a `Range`
//! request; a registry that answers a range with the whole blob has it fetched from the start. Content that does
//! not match the digest, or is longer than the manifest says, is removed and refused.

use reqwest::header::CONTENT_RANGE;
use reqwest::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::http::Session;
use crate::layout::{hash_prefix, hex, remove_if_present, sha256_hex, Layout};
use crate::RegistryError;

/// Progress is reported at most once per this many bytes (and at the end).
const REPORT_EVERY: u64 = 256 * 1024;

/// What `fetch` reports as it goes.
pub(crate) enum BlobEvent {
    /// The download starts (or resumes at `from`).
    Started {
        from: u64,
    },
    Bytes {
        done: u64,
    },
}

/// Fetches `digest` (of `size` bytes) into the layout; answers whether it was already there.
pub(crate) async fn fetch<F: FnMut(BlobEvent) + ?Sized>(
    session: &mut Session,
    layout: &Layout,
    digest: &str,
    size: u64,
    report: &mut F,
) -> Result<bool, RegistryError> {
    let hex_digest = sha256_hex(digest)?.to_owned();
    if layout.has_blob(&hex_digest, size).await? {
        return Ok(true);
    }
    let url = session.blob_url(digest);
    let partial = layout.partial_path(&hex_digest);
    let write_error = |source| RegistryError::WriteFile { path: partial.clone(), source };
    let mut failures = 0u32;
    let mut started = false;
    loop {
        let mut have = match tokio::fs::metadata(&partial).await {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(RegistryError::ReadFile { path: partial.clone(), source }),
        };
        if have > size {
            remove_if_present(&partial).await?;
            have = 0;
        }
        let mut response = session.get(&url, None, (have > 0).then_some(have)).await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT if have > 0 => {
                let range = response.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("");
                if !range.starts_with(&format!("bytes {have}-")) {
                    // Not the range asked for: start again from nothing.
                    remove_if_present(&partial).await?;
                    failures += 1;
                    continue;
                }
            }
            StatusCode::OK => have = 0,
            StatusCode::RANGE_NOT_SATISFIABLE => {
                remove_if_present(&partial).await?;
                failures += 1;
                if failures > session.max_retries {
                    return Err(RegistryError::BlobTruncated {
                        url,
                        digest: digest.to_owned(),
                        got: have,
                        expected: size,
                        attempts: failures,
                    });
                }
                continue;
            }
            status => {
                return Err(RegistryError::Status {
                    url,
                    status: status.as_u16(),
                    body: "an unexpected answer to a blob request".into(),
                })
            }
        }
        let mut hasher = if have > 0 { hash_prefix(&partial, have).await? } else { Sha256::new() };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(have > 0)
            .truncate(have == 0)
            .open(&partial)
            .await
            .map_err(write_error)?;
        if !started || have > 0 {
            report(BlobEvent::Started { from: have });
            started = true;
        }
        let mut reported = have;
        let mut cut_short = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if have + chunk.len() as u64 > size {
                        drop(file);
                        remove_if_present(&partial).await?;
                        return Err(RegistryError::BlobTooLong { url, digest: digest.to_owned(), expected: size });
                    }
                    file.write_all(&chunk).await.map_err(write_error)?;
                    hasher.update(&chunk);
                    have += chunk.len() as u64;
                    if have - reported >= REPORT_EVERY {
                        report(BlobEvent::Bytes { done: have });
                        reported = have;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    cut_short = Some(e);
                    break;
                }
            }
        }
        file.flush().await.map_err(write_error)?;
        file.sync_all().await.map_err(write_error)?;
        drop(file);
        if have < size {
            failures += 1;
            if failures > session.max_retries {
                // The .partial stays: the next pull resumes it.
                return Err(match cut_short {
                    Some(source) => RegistryError::Request { url, source },
                    None => RegistryError::BlobTruncated {
                        url,
                        digest: digest.to_owned(),
                        got: have,
                        expected: size,
                        attempts: failures,
                    },
                });
            }
            tokio::time::sleep(session.backoff(failures - 1)).await;
            continue;
        }
        let actual = hex(&hasher.finalize());
        if actual != hex_digest {
            remove_if_present(&partial).await?;
            return Err(RegistryError::BlobDigest { url, digest: digest.to_owned(), actual });
        }
        if reported != have {
            report(BlobEvent::Bytes { done: have });
        }
        let path = layout.blob_path(&hex_digest);
        tokio::fs::rename(&partial, &path).await.map_err(|source| RegistryError::WriteFile { path, source })?;
        return Ok(false);
    }
}
