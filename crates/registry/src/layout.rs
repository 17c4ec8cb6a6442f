//! The OCI image-layout directory a pull writes: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! The directory is a cache shared by pulls: a blob is only ever present under its final name complete and
//! verified (it is written as `<hex>.partial` and renamed); a `.partial` left by an interrupted pull is resumed by
//! the next. `.lock` (an exclusive `flock`, held for a whole pull) makes two pulls into one directory take turns.
//! `index.json` has one entry per reference pulled, its `org.opencontainers.image.ref.name` the normalised
//! reference; a new pull of the same reference replaces its entry.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use crate::RegistryError;

pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";
const INDEX_FILE: &str = "index.json";
const LOCK_FILE: &str = ".lock";
pub const PARTIAL_SUFFIX: &str = ".partial";

pub(crate) struct Layout {
    root: PathBuf,
    blobs: PathBuf,
    /// Held (locked) while this value lives.
    _lock: File,
}

impl Layout {
    /// Creates the directory if needed, waits for the lock, writes `oci-layout` if it is missing.
    pub async fn open(root: &Path) -> Result<Self, RegistryError> {
        let blobs = root.join("blobs").join("sha256");
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|source| RegistryError::WriteFile { path: blobs.clone(), source })?;
        let lock_path = root.join(LOCK_FILE);
        let lock = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|source| RegistryError::LockDest { path: lock_path.clone(), source })?;
            file.lock().map_err(|source| RegistryError::LockDest { path: lock_path, source })?;
            Ok(file)
        })
        .await
        .map_err(|e| RegistryError::LockDest { path: root.join(LOCK_FILE), source: std::io::Error::other(e) })??;
        let layout = Layout { root: root.to_path_buf(), blobs, _lock: lock };
        let marker = root.join(LAYOUT_FILE);
        if !tokio::fs::try_exists(&marker).await.unwrap_or(false) {
            layout.write_atomically(&marker, LAYOUT_CONTENT.as_bytes()).await?;
        }
        Ok(layout)
    }

    pub fn blob_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(hex)
    }

    pub fn partial_path(&self, hex: &str) -> PathBuf {
        self.blobs.join(format!("{hex}{PARTIAL_SUFFIX}"))
    }

    /// Whether the blob is already here, complete and with the right digest. One that is not (the wrong size
    /// or content) is removed.
    pub async fn has_blob(&self, hex: &str, size: u64) -> Result<bool, RegistryError> {
        let path = self.blob_path(hex);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.len() == size && hash_file(&path, size).await? == hex => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(RegistryError::ReadFile { path, source }),
        }
        remove_if_present(&path).await?;
        Ok(false)
    }

    /// Stores a small blob already in memory whose digest the caller has checked.
    pub async fn put_blob(&self, hex: &str, content: &[u8]) -> Result<(), RegistryError> {
        if self.has_blob(hex, content.len() as u64).await? {
            return Ok(());
        }
        self.write_atomically(&self.blob_path(hex), content).await
    }

    /// Adds (or replaces) the entry for `ref_name` in `index.json`.
    pub async fn add_to_index(&self, ref_name: &str, manifest: serde_json::Value) -> Result<(), RegistryError> {
        let path = self.root.join(INDEX_FILE);
        let mut manifests = match tokio::fs::read(&path).await {
            Ok(text) => {
                let bad = |reason: String| RegistryError::ParseIndex { path: path.clone(), reason };
                let index: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
                match index.get("manifests") {
                    Some(serde_json::Value::Array(m)) => m.clone(),
                    None | Some(serde_json::Value::Null) => Vec::new(),
                    Some(_) => return Err(bad("`manifests` is not an array".into())),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(RegistryError::ReadFile { path, source }),
        };
        manifests.retain(|m| {
            m.get("annotations").and_then(|a| a.get(REF_NAME_ANNOTATION)).and_then(|v| v.as_str()) != Some(ref_name)
        });
        manifests.push(manifest);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let text = serde_json::to_vec_pretty(&index)
            .map_err(|e| RegistryError::WriteFile { path: path.clone(), source: e.into() })?;
        self.write_atomically(&path, &text).await
    }

    /// Writes `path` by way of a temporary name beside it and a rename, synced, so a reader sees the old
    /// content or the new, never part of it.
    async fn write_atomically(&self, path: &Path, content: &[u8]) -> Result<(), RegistryError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        let result = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, content).await?;
            file.sync_all().await?;
            tokio::fs::rename(&temp, path).await
        }
        .await;
        if let Err(source) = result {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(RegistryError::WriteFile { path: path.to_path_buf(), source });
        }
        Ok(())
    }
}

/// The sha256 (hex) of the first `len` bytes of a file, or of all of it if shorter.
pub(crate) async fn hash_file(path: &Path, len: u64) -> Result<String, RegistryError> {
    Ok(hex(&hash_prefix(path, len).await?.finalize()))
}

/// A hasher fed the first `len` bytes of a file.
pub(crate) async fn hash_prefix(path: &Path, len: u64) -> Result<Sha256, RegistryError> {
    let read_error = |source| RegistryError::ReadFile { path: path.to_path_buf(), source };
    let file = tokio::fs::File::open(path).await.map_err(read_error)?;
    let mut file = file.take(len);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).await.map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher)
}

pub(crate) async fn remove_if_present(path: &Path) -> Result<(), RegistryError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RegistryError::WriteFile { path: path.to_path_buf(), source }),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The hex part of a `sha256:<64 hex>` digest; anything else is refused (it also becomes a file name).
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, RegistryError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(hex)
        }
        _ => Err(RegistryError::UnsupportedDigest { digest: digest.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_must_be_sha256_hex() {
        let good = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(sha256_hex(&good).unwrap(), "0a".repeat(32));
        for bad in ["sha512:00", "sha256:../../etc/passwd", &format!("sha256:{}", "A".repeat(64)), "sha256:"] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
        assert_eq!(hex(&Sha256::digest(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
