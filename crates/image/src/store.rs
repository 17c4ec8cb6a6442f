//! The content-addressed store, under `$STATE/images/`:
//!
//! ```text
//! lock                      flock'd: exclusively by an import, rm, prune, mark/release; shared by resolve
//! refs.json                 image records by reference: {"docker.io/library/busybox:latest": "sha256:<id>"}
//! records/<id>.json         image records by id (the config's digest): ImageRecord
//! blobs/sha256/<hex>        every blob (manifest, config, layers) by digest, verified
//! layers/<diff_id>/root/    each layer unpacked once, in overlayfs form (an overlay lower directory)
//! layers/<diff_id>/layer.json   what unpacking it found (size, skipped device nodes)
//! in-use/<id>/<sandbox>     the sandboxes using an image (kept by prune while their directory exists)
//! tmp/                      imports in progress; renamed into place only once everything is verified
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;
use crate::error::ImageError;
use crate::reference::Reference;

/// How a container of the image runs: the image config's `Env`, `WorkingDir`, `User`, `Entrypoint`, `Cmd`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The blob's digest (compressed, as shipped).
    pub digest: String,
    /// The digest of the uncompressed tar (the config's `rootfs.diff_ids`): the unpacked layer's name.
    pub diff_id: String,
    pub media_type: String,
    /// The blob's size.
    pub size: u64,
    /// Bytes of regular files unpacked.
    pub unpacked_size: u64,
    /// Entries not unpacked (device nodes, FIFOs), as `/path (kind)`.
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: its config's digest (`sha256:…`).
    pub id: String,
    /// The references (canonical form) that name it.
    #[serde(default)]
    pub references: Vec<String>,
    /// The manifest's digest, when it came with one (an OCI layout; a `docker save` tarball has none).
    pub manifest_digest: Option<String>,
    pub architecture: String,
    pub os: String,
    pub created: Option<String>,
    pub config: ImageConfig,
    /// Bottom first.
    pub layers: Vec<LayerRecord>,
    /// Bytes of regular files in all its layers.
    pub size: u64,
    /// `oci-layout` or `docker-archive`.
    pub source: String,
    /// Unix time of the import.
    pub imported_at: u64,
}

/// What a sandbox runs on: the image's unpacked layers and config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The config digest (`sha256:…`).
    pub id: String,
    /// The canonical reference it was found by (the id when found by id and it has no reference).
    pub reference: String,
    /// The unpacked layer directories, BOTTOM first (overlayfs lower directories, in overlayfs form).
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// What `remove` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RemoveReport {
    pub id: String,
    /// The references removed.
    pub untagged: Vec<String>,
    /// Whether the image record went too (its last reference was removed, or it was named by id).
    pub deleted: bool,
}

/// What `prune` freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Untagged images no sandbox uses, removed.
    pub images: Vec<String>,
    pub layers: usize,
    pub blobs: usize,
    /// Bytes freed (blobs and unpacked files).
    pub bytes: u64,
}

/// The image store of one state directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    state: PathBuf,
    root: PathBuf,
}

/// A held flock on the store's lock file (released when dropped).
pub(crate) struct StoreLock {
    _file: File,
}

/// A temporary directory under `tmp/`, removed when dropped.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}

impl ImageStore {
    /// The store of the state directory `state_dir` (`$STATE`), under `$STATE/images/`; created if missing.
    pub fn open(state_dir: &Path) -> Result<ImageStore, ImageError> {
        let root = state_dir.join("images");
        for dir in ["records", "blobs/sha256", "layers", "in-use", "tmp"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(|source| ImageError::CreateStore { path, source })?;
        }
        Ok(ImageStore { state: state_dir.to_path_buf(), root })
    }

    /// `$STATE/images`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn lock(&self, exclusive: bool) -> Result<StoreLock, ImageError> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| ImageError::Lock { path: path.clone(), source })?;
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
        sys::fd::flock(file.as_fd(), op)
            .map_err(|e| ImageError::Lock { path, source: io::Error::from_raw_os_error(e) })?;
        Ok(StoreLock { _file: file })
    }

    pub(crate) fn temp_dir(&self, what: &str) -> Result<TempDir, ImageError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let path = self.root.join("tmp").join(format!("{what}-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|source| ImageError::Write { path: path.clone(), source })?;
        Ok(TempDir { path })
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    pub(crate) fn layer_path(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers").join(sha256_hex(diff_id)?))
    }

    /// The unpacked directory of the layer `diff_id` (an overlayfs lower directory).
    pub fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.layer_path(diff_id)?.join("root"))
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("records").join(format!("{}.json", sha256_hex(id)?)))
    }

    /// Imports an OCI image layout directory; `tag` names it (else the layout's own name annotation does).
    pub fn import_oci_layout(&self, dir: &Path, tag: Option<&str>) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock(true)?;
        crate::import::import_dir(self, dir, tag, true)
    }

    /// Imports an OCI image layout (directory or tar) or a `docker save` tarball.
    pub fn import(&self, path: &Path, tag: Option<&str>) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock(true)?;
        crate::import::import_path(self, path, tag)
    }

    pub(crate) fn read_refs(&self) -> Result<BTreeMap<String, String>, ImageError> {
        let path = self.root.join("refs.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| ImageError::ParseJson { what: path.display().to_string(), source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(ImageError::ReadSource { path, source }),
        }
    }

    pub(crate) fn write_refs(&self, refs: &BTreeMap<String, String>) -> Result<(), ImageError> {
        let bytes = serde_json::to_vec_pretty(refs)
            .map_err(|source| ImageError::ParseJson { what: "refs.json".to_string(), source })?;
        write_atomic(&self.root.join("refs.json"), &bytes)
    }

    pub(crate) fn write_record(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let mut stored = record.clone();
        stored.references.clear();
        let bytes = serde_json::to_vec_pretty(&stored)
            .map_err(|source| ImageError::ParseJson { what: format!("the record of {}", record.id), source })?;
        write_atomic(&self.record_path(&record.id)?, &bytes)
    }

    fn read_record(&self, id: &str, refs: &BTreeMap<String, String>) -> Result<ImageRecord, ImageError> {
        let path = self.record_path(id)?;
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ImageError::NotFound { reference: id.to_string() },
            _ => ImageError::ReadSource { path: path.clone(), source: e },
        })?;
        let mut record: ImageRecord = serde_json::from_slice(&bytes)
            .map_err(|source| ImageError::ParseJson { what: path.display().to_string(), source })?;
        record.references = refs.iter().filter(|(_, v)| *v == id).map(|(k, _)| k.clone()).collect();
        Ok(record)
    }

    fn record_ids(&self) -> Result<Vec<String>, ImageError> {
        let dir = self.root.join("records");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|source| ImageError::ReadSource { path: dir.clone(), source })? {
            let entry = entry.map_err(|source| ImageError::ReadSource { path: dir.clone(), source })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".json") {
                let id = format!("sha256:{hex}");
                if sha256_hex(&id).is_ok() {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every image in the store, by reference then id.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let _lock = self.lock(false)?;
        let refs = self.read_refs()?;
        let mut records = Vec::new();
        for id in self.record_ids()? {
            records.push(self.read_record(&id, &refs)?);
        }
        records.sort_by(|a, b| (a.references.first(), &a.id).cmp(&(b.references.first(), &b.id)));
        Ok(records)
    }

    /// The image `reference` names: a tag (`alpine:3.20`, `localhost:5055/x/y:tag`, normalised), a
    /// `name@sha256:…` manifest digest, or a (prefix of an) image id or manifest digest.
    pub fn inspect(&self, reference: &str) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock(false)?;
        self.find(reference).map(|(record, _)| record)
    }

    /// Finds the record `reference` names, and the canonical reference it matched by name (if it did).
    fn find(&self, reference: &str) -> Result<(ImageRecord, Option<String>), ImageError> {
        let refs = self.read_refs()?;
        let parsed = Reference::parse(reference).ok();
        if let Some(parsed) = &parsed {
            let canonical = parsed.to_string();
            if let Some(id) = refs.get(&canonical) {
                return Ok((self.read_record(id, &refs)?, Some(canonical)));
            }
            if let Some(digest) = &parsed.digest {
                let repository = parsed.repository();
                for id in self.record_ids()? {
                    let record = self.read_record(&id, &refs)?;
                    let same_repo = record
                        .references
                        .iter()
                        .any(|r| Reference::parse(r).is_ok_and(|r| r.repository() == repository));
                    if record.manifest_digest.as_deref() == Some(digest.as_str()) && same_repo {
                        return Ok((record, Some(canonical)));
                    }
                }
            }
        }
        let prefix = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let prefix = prefix.to_ascii_lowercase();
            let mut found = Vec::new();
            for id in self.record_ids()? {
                let record = self.read_record(&id, &refs)?;
                let matches = |d: &str| d.strip_prefix("sha256:").is_some_and(|h| h.starts_with(&prefix));
                if matches(&record.id) || record.manifest_digest.as_deref().is_some_and(matches) {
                    found.push(record);
                }
            }
            match found.len() {
                0 => {}
                1 => return Ok((found.remove(0), None)),
                count => return Err(ImageError::AmbiguousReference { reference: reference.to_string(), count }),
            }
        }
        if parsed.is_none() && !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            Reference::parse(reference)?;
        }
        Err(ImageError::NotFound { reference: reference.to_string() })
    }

    /// What a sandbox runs on: the unpacked layers (bottom first) and config of the image `reference` names.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let _lock = self.lock(false)?;
        let (record, matched) = self.find(reference)?;
        let mut layers = Vec::with_capacity(record.layers.len());
        for layer in &record.layers {
            let dir = self.layer_dir(&layer.diff_id)?;
            if !dir.is_dir() {
                return Err(ImageError::MissingLayer { image: record.id.clone(), diff_id: layer.diff_id.clone() });
            }
            layers.push(dir);
        }
        let reference = matched.or_else(|| record.references.first().cloned()).unwrap_or_else(|| record.id.clone());
        Ok(ResolvedImage { id: record.id, reference, layers, config: record.config })
    }

    /// Removes `reference`: a tag is untagged, and the image deleted when it was its last; an id deletes the image
    /// and all its tags. An image a sandbox uses is not deleted. Blobs and layers are freed by `prune`.
    pub fn remove(&self, reference: &str) -> Result<RemoveReport, ImageError> {
        let _lock = self.lock(true)?;
        let (record, matched) = self.find(reference)?;
        let mut refs = self.read_refs()?;
        let untagged: Vec<String> = match &matched {
            Some(canonical) if refs.contains_key(canonical) => vec![canonical.clone()],
            _ => record.references.clone(),
        };
        let deleted = untagged.len() == record.references.len();
        if deleted {
            let users = self.live_users(&record.id)?;
            if !users.is_empty() {
                return Err(ImageError::InUse { image: display_id(&record), sandboxes: users.join(", ") });
            }
        }
        for r in &untagged {
            refs.remove(r);
        }
        self.write_refs(&refs)?;
        if deleted {
            let path = self.record_path(&record.id)?;
            fs::remove_file(&path).map_err(|source| ImageError::Write { path, source })?;
            let marks = self.in_use_dir(&record.id)?;
            let _ = remove_tree(&marks);
        }
        Ok(RemoveReport { id: record.id, untagged, deleted })
    }

    /// Frees what nothing uses: untagged images no sandbox uses, then every layer and blob no image uses, and
    /// leftovers of interrupted imports. A mark of a sandbox whose directory is gone is dropped.
    pub fn prune(&self) -> Result<PruneReport, ImageError> {
        let _lock = self.lock(true)?;
        let mut report = PruneReport::default();
        let tmp = self.root.join("tmp");
        for entry in read_dir_names(&tmp)? {
            report.bytes += tree_size(&tmp.join(&entry));
            let _ = remove_tree(&tmp.join(entry));
        }
        let refs = self.read_refs()?;
        let mut used_blobs = BTreeSet::new();
        let mut used_layers = BTreeSet::new();
        for id in self.record_ids()? {
            let record = self.read_record(&id, &refs)?;
            if record.references.is_empty() && self.live_users(&id)?.is_empty() {
                let path = self.record_path(&id)?;
                fs::remove_file(&path).map_err(|source| ImageError::Write { path, source })?;
                let _ = remove_tree(&self.in_use_dir(&id)?);
                report.images.push(id);
                continue;
            }
            used_blobs.insert(sha256_hex(&record.id)?.to_string());
            if let Some(m) = &record.manifest_digest {
                used_blobs.insert(sha256_hex(m)?.to_string());
            }
            for layer in &record.layers {
                used_blobs.insert(sha256_hex(&layer.digest)?.to_string());
                used_layers.insert(sha256_hex(&layer.diff_id)?.to_string());
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for name in read_dir_names(&blobs)? {
            if !used_blobs.contains(&name) {
                let path = blobs.join(&name);
                report.bytes += tree_size(&path);
                fs::remove_file(&path).map_err(|source| ImageError::Write { path, source })?;
                report.blobs += 1;
            }
        }
        let layers = self.root.join("layers");
        for name in read_dir_names(&layers)? {
            if !used_layers.contains(&name) {
                let path = layers.join(&name);
                report.bytes += tree_size(&path);
                remove_tree(&path).map_err(|source| ImageError::Write { path, source })?;
                report.layers += 1;
            }
        }
        Ok(report)
    }

    fn in_use_dir(&self, image_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("in-use").join(sha256_hex(image_id)?))
    }

    /// Records that the sandbox `sandbox_name` uses the image `image_id` (`sha256:…`): neither `rm` nor `prune`
    /// removes it while `$STATE/sandboxes/<sandbox_name>` exists.
    pub fn mark_in_use(&self, image_id: &str, sandbox_name: &str) -> Result<(), ImageError> {
        check_sandbox_name(sandbox_name)?;
        let _lock = self.lock(true)?;
        if !self.record_path(image_id)?.exists() {
            return Err(ImageError::NotFound { reference: image_id.to_string() });
        }
        let dir = self.in_use_dir(image_id)?;
        fs::create_dir_all(&dir).map_err(|source| ImageError::Write { path: dir.clone(), source })?;
        let path = dir.join(sandbox_name);
        File::create(&path).map(drop).map_err(|source| ImageError::Write { path, source })
    }

    /// Drops the mark `mark_in_use` made (no error when there is none).
    pub fn release(&self, image_id: &str, sandbox_name: &str) -> Result<(), ImageError> {
        check_sandbox_name(sandbox_name)?;
        let _lock = self.lock(true)?;
        let path = self.in_use_dir(image_id)?.join(sandbox_name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ImageError::Write { path, source: e }),
            _ => Ok(()),
        }
    }

    /// The sandboxes marked as using `image_id` whose directory still exists; stale marks are dropped.
    pub fn users(&self, image_id: &str) -> Result<Vec<String>, ImageError> {
        let _lock = self.lock(false)?;
        self.live_users(image_id)
    }

    fn live_users(&self, image_id: &str) -> Result<Vec<String>, ImageError> {
        let dir = self.in_use_dir(image_id)?;
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut users = Vec::new();
        for name in read_dir_names(&dir)? {
            if self.state.join("sandboxes").join(&name).is_dir() {
                users.push(name);
            } else {
                let _ = fs::remove_file(dir.join(&name));
            }
        }
        Ok(users)
    }
}

fn check_sandbox_name(name: &str) -> Result<(), ImageError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) || name.len() > 255 {
        return Err(ImageError::SandboxName { name: name.to_string() });
    }
    Ok(())
}

/// The short id people see: the first 12 hex digits, with the first reference if any.
pub fn display_id(record: &ImageRecord) -> String {
    let short = short_id(&record.id);
    match record.references.first() {
        Some(r) => format!("{r} ({short})"),
        None => short,
    }
}

/// The first 12 hex digits of a digest.
pub fn short_id(digest: &str) -> String {
    digest.strip_prefix("sha256:").unwrap_or(digest).chars().take(12).collect()
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(source) => return Err(ImageError::ReadSource { path: dir.to_path_buf(), source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| ImageError::ReadSource { path: dir.to_path_buf(), source })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Writes `path` through a temporary file renamed over it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> io::Result<()> {
        let file = File::create(&tmp)?;
        io::Write::write_all(&mut &file, bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| {
        let _ = fs::remove_file(&tmp);
        ImageError::Write { path: path.to_path_buf(), source }
    })
}

/// Bytes in the files under `path` (symlinks not followed).
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else { return 0 };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path).map_or(0, |entries| entries.flatten().map(|e| tree_size(&e.path())).sum())
}

/// Removes a tree an unpacked layer may have made unremovable for its owner (read-only directories) too.
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    fn open_up(path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::symlink_metadata(path) {
            if meta.is_dir() {
                if meta.permissions().mode() & 0o700 != 0o700 {
                    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
                }
                if let Ok(entries) = fs::read_dir(path) {
                    for entry in entries.flatten() {
                        open_up(&entry.path());
                    }
                }
            }
        }
    }
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Ok(meta) if !meta.is_dir() => return fs::remove_file(path),
        _ => {}
    }
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    open_up(path);
    fs::remove_dir_all(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::testutil::{docker_save_dir, gzip, scratch, tar_of, Item};

    fn image(dir: &Path, tag: &str) {
        let base =
            tar_of(&[Item::Dir("etc/", 0o755), Item::File("etc/os", 0o644, b"test"), Item::File("old", 0o644, b"o")]);
        let top = gzip(&tar_of(&[Item::File(".wh.old", 0o644, b""), Item::File("new", 0o644, b"n")]));
        docker_save_dir(dir, &[base, top], None, tag);
    }

    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[test]
    fn import_resolve_rm_prune() {
        let state = scratch("state");
        let src = scratch("src");
        image(&src, "example.com/a/b:1");
        let store = ImageStore::open(&state).unwrap();
        let record = store.import(&src, None).unwrap();
        assert_eq!(record.references, vec!["example.com/a/b:1".to_string()]);
        assert_eq!(record.layers.len(), 2);
        let resolved = store.resolve("example.com/a/b:1").unwrap();
        assert_eq!(resolved.id, record.id);
        assert_eq!(resolved.layers.len(), 2);
        assert_eq!(std::fs::read(resolved.layers[0].join("etc/os")).unwrap(), b"test");
        assert!(resolved.layers[1].join("new").exists());
        assert_eq!(resolved.config.env, vec!["PATH=/bin", "A=1"]);
        assert_eq!(resolved.config.working_dir.as_deref(), Some("/w"));
        assert_eq!(resolved.config.user.as_deref(), Some("1000:1000"));
        assert_eq!(resolved.config.cmd, vec!["/bin/sh"]);
        assert_eq!(store.resolve(&record.id[7..15]).unwrap().id, record.id);
        assert!(matches!(store.resolve("nothere").unwrap_err(), ImageError::NotFound { .. }));

        // A second tag on the same image shares everything.
        store.import(&src, Some("other:2")).unwrap();
        assert_eq!(store.resolve("docker.io/library/other:2").unwrap().id, record.id);
        assert_eq!(count(&state.join("images/layers")), 2);

        // In use by a sandbox whose directory exists: neither rm nor prune removes it.
        std::fs::create_dir_all(state.join("sandboxes/s1")).unwrap();
        store.mark_in_use(&record.id, "s1").unwrap();
        store.remove("other:2").unwrap();
        let err = store.remove("example.com/a/b:1").unwrap_err();
        assert!(matches!(err, ImageError::InUse { .. }), "{err}");
        assert_eq!(store.prune().unwrap().layers, 0);
        store.release(&record.id, "s1").unwrap();

        // A stale mark (the sandbox is gone) does not keep it.
        store.mark_in_use(&record.id, "gone").unwrap();
        let report = store.remove(&record.id).unwrap();
        assert!(report.deleted);
        let pruned = store.prune().unwrap();
        assert_eq!((pruned.layers, pruned.blobs), (2, 3));
        assert_eq!(count(&state.join("images/layers")), 0);
        assert_eq!(count(&state.join("images/blobs/sha256")), 0);
    }

    #[test]
    fn bad_layers_leave_nothing() {
        let state = scratch("state");
        let store = ImageStore::open(&state).unwrap();
        let good = tar_of(&[Item::File("f", 0o644, b"x")]);
        type Case<'a> = (Vec<Vec<u8>>, Option<Vec<String>>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (vec![good.clone()], Some(vec![crate::digest::sha256_of(b"other")]), "does not match its digest"),
            (
                vec![{
                    let g = gzip(&good);
                    g[..g.len() / 2].to_vec()
                }],
                Some(vec![crate::digest::sha256_of(&good)]),
                "reading the layer",
            ),
            (vec![tar_of(&[Item::File("../x", 0o644, b"x")])], None, "`..`"),
        ];
        for (layers, diff_ids, why) in cases {
            let src = scratch("src");
            docker_save_dir(&src, &layers, diff_ids, "bad:1");
            let err = store.import(&src, None).unwrap_err();
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text = format!("{text}: {cause}");
                source = cause.source();
            }
            let err = text;
            assert!(err.contains(why), "{err} should say {why}");
            for dir in ["records", "layers", "blobs/sha256", "tmp"] {
                assert_eq!(count(&state.join("images").join(dir)), 0, "{dir} after {err}");
            }
            assert!(store.read_refs().unwrap().is_empty());
        }
    }

    #[test]
    fn concurrent_imports_of_one_image_are_safe() {
        let state = scratch("state");
        let src = scratch("src");
        image(&src, "c:1");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (state, src) = (state.to_path_buf(), src.to_path_buf());
                std::thread::spawn(move || ImageStore::open(&state).unwrap().import(&src, None).map(|r| r.id))
            })
            .collect();
        let ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(count(&state.join("images/layers")), 2);
        assert_eq!(count(&state.join("images/tmp")), 0);
    }
}
