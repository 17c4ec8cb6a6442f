//! Importing an OCI image layout (a directory or a tar of one) or a `docker save` tarball into the store: every
//! blob copied in and verified against its digest, every new layer unpacked and verified against its diff_id,
//! all in a temporary directory of the store's, renamed into place only once everything checked out. The
//! caller holds the store's lock.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use crate::digest::{sha256_hex, sha256_of, HashingReader};
use crate::error::ImageError;
use crate::oci::{self, Config, Descriptor, DockerSaveEntry, Index, Manifest};
use crate::reference::Reference;
use crate::store::{write_atomic, ImageConfig, ImageRecord, ImageStore, LayerRecord};
use crate::unpack::{self, UnpackError, UnpackOptions};

/// The largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;
const ANNOTATION_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF: &str = "org.opencontainers.image.ref.name";

/// A layer as the source has it.
struct SourceLayer {
    /// The blob's digest, when the source names it (an OCI manifest); computed otherwise.
    digest: Option<String>,
    size: Option<u64>,
    media_type: String,
    path: PathBuf,
}

/// What an import brings in, before anything is written.
struct Plan {
    source: &'static str,
    manifest: Option<(String, Vec<u8>)>,
    config_digest: String,
    config_bytes: Vec<u8>,
    layers: Vec<SourceLayer>,
    references: Vec<String>,
}

/// Imports `path`: a directory (OCI layout or unpacked `docker save`) or a tar of one.
pub(crate) fn import_path(store: &ImageStore, path: &Path, tag: Option<&str>) -> Result<ImageRecord, ImageError> {
    let meta = fs::metadata(path).map_err(|source| ImageError::ReadSource { path: path.to_path_buf(), source })?;
    if meta.is_dir() {
        return import_dir(store, path, tag, false);
    }
    let unpacked = store.temp_dir("source")?;
    extract_source(path, &unpacked.path)?;
    import_dir(store, &unpacked.path, tag, false).map_err(|e| match e {
        ImageError::UnknownFormat { .. } => ImageError::UnknownFormat { path: path.to_path_buf() },
        other => other,
    })
}

/// Imports the directory `dir`: an OCI layout, or (unless `oci_only`) an unpacked `docker save` tarball.
pub(crate) fn import_dir(
    store: &ImageStore,
    dir: &Path,
    tag: Option<&str>,
    oci_only: bool,
) -> Result<ImageRecord, ImageError> {
    let tag = tag.map(Reference::parse).transpose()?;
    let plan = if dir.join("index.json").is_file() {
        plan_oci(dir, tag.as_ref())?
    } else if !oci_only && dir.join("manifest.json").is_file() {
        plan_docker(dir)?
    } else {
        return Err(ImageError::UnknownFormat { path: dir.to_path_buf() });
    };
    commit(store, plan, tag)
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::ParseJson { what: what.to_string(), source })
}

fn read_small(path: &Path) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(|source| ImageError::ReadSource { path: path.to_path_buf(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON)
        .read_to_end(&mut bytes)
        .map_err(|source| ImageError::ReadSource { path: path.to_path_buf(), source })?;
    Ok(bytes)
}

fn blob_in(dir: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    Ok(dir.join("blobs/sha256").join(sha256_hex(digest)?))
}

/// A JSON blob of a layout, verified against its descriptor.
fn read_blob(dir: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>, ImageError> {
    let path = blob_in(dir, &desc.digest)?;
    if !path.is_file() {
        return Err(ImageError::MissingBlob { digest: desc.digest.clone(), path });
    }
    let bytes = read_small(&path)?;
    let actual = sha256_of(&bytes);
    if actual != desc.digest {
        return Err(ImageError::DigestMismatch { what: what.to_string(), expected: desc.digest.clone(), actual });
    }
    if bytes.len() as u64 != desc.size {
        return Err(ImageError::SizeMismatch {
            what: what.to_string(),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

fn wanted_platform() -> String {
    format!("linux/{}", oci::host_architecture())
}

/// The image manifests of a layout's index (nested indexes followed) for this platform.
fn collect_manifests(
    dir: &Path,
    descriptors: &[Descriptor],
    inherited: Option<&BTreeMap<String, String>>,
    depth: usize,
    found: &mut Vec<(Descriptor, BTreeMap<String, String>)>,
    platforms: &mut Vec<String>,
) -> Result<(), ImageError> {
    for desc in descriptors {
        let annotations = inherited.cloned().unwrap_or_else(|| desc.annotations.clone());
        match desc.media_type.as_str() {
            oci::MEDIA_OCI_INDEX | oci::MEDIA_DOCKER_LIST => {
                if depth >= 4 {
                    return Err(ImageError::Unsupported {
                        what: "image indexes nested this deep",
                        detail: desc.digest.clone(),
                    });
                }
                let index: Index = parse_json(&read_blob(dir, desc, "an image index")?, "an image index")?;
                collect_manifests(dir, &index.manifests, Some(&annotations), depth + 1, found, platforms)?;
            }
            oci::MEDIA_OCI_MANIFEST | oci::MEDIA_DOCKER_MANIFEST | "" => {
                if let Some(p) = &desc.platform {
                    let name = match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    };
                    platforms.push(name);
                    if p.os != "linux" || p.architecture != oci::host_architecture() {
                        continue;
                    }
                }
                if !found.iter().any(|(d, _)| d.digest == desc.digest) {
                    found.push((desc.clone(), annotations));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn plan_oci(dir: &Path, tag: Option<&Reference>) -> Result<Plan, ImageError> {
    let index: Index = parse_json(&read_small(&dir.join("index.json"))?, "index.json")?;
    let mut found = Vec::new();
    let mut platforms = Vec::new();
    collect_manifests(dir, &index.manifests, None, 0, &mut found, &mut platforms)?;
    if found.len() > 1 {
        // Several images in one layout (`airlock image pull`'s cache holds one per reference, annotated with the
        // whole reference; umoci's with just their tags): the one --tag names is meant.
        if let Some(tag) = tag {
            let whole = tag.to_string();
            let exact: Vec<_> = found.iter().filter(|(_, a)| a.get(ANNOTATION_REF) == Some(&whole)).cloned().collect();
            if exact.is_empty() {
                if let Some(short) = tag.tag.clone() {
                    found.retain(|(_, a)| {
                        a.get(ANNOTATION_REF).is_some_and(|r| *r == short || r.ends_with(&format!(":{short}")))
                    });
                }
            } else {
                found = exact;
            }
        }
    }
    let (desc, annotations) = match found.len() {
        0 => {
            let available = if platforms.is_empty() { "no image manifests".to_string() } else { platforms.join(", ") };
            return Err(ImageError::NoPlatform { path: dir.to_path_buf(), wanted: wanted_platform(), available });
        }
        1 => found.remove(0),
        count => return Err(ImageError::AmbiguousSource { path: dir.to_path_buf(), count }),
    };
    let manifest_bytes = read_blob(dir, &desc, "the image manifest")?;
    let manifest: Manifest = parse_json(&manifest_bytes, "the image manifest")?;
    let config_bytes = read_blob(dir, &manifest.config, "the image config")?;
    let mut layers = Vec::new();
    for layer in &manifest.layers {
        layers.push(SourceLayer {
            digest: Some(layer.digest.clone()),
            size: Some(layer.size),
            media_type: layer.media_type.clone(),
            path: blob_in(dir, &layer.digest)?,
        });
    }
    let name =
        annotations.get(ANNOTATION_NAME).or_else(|| annotations.get(ANNOTATION_REF).filter(|r| r.contains(['/', ':'])));
    Ok(Plan {
        source: "oci-layout",
        manifest: Some((desc.digest.clone(), manifest_bytes)),
        config_digest: manifest.config.digest.clone(),
        config_bytes,
        layers,
        references: name.into_iter().cloned().collect(),
    })
}

/// `dir` joined with a relative path a `docker save` manifest names (`..` and absolute paths refused).
fn inside(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let parts = unpack::components(name.as_bytes())
        .map_err(|e| ImageError::ExtractSource { path: dir.to_path_buf(), why: e.to_string() })?;
    Ok(parts.iter().fold(dir.to_path_buf(), |p, c| p.join(c)))
}

fn plan_docker(dir: &Path) -> Result<Plan, ImageError> {
    let mut entries: Vec<DockerSaveEntry> = parse_json(&read_small(&dir.join("manifest.json"))?, "manifest.json")?;
    if entries.len() != 1 {
        return Err(ImageError::AmbiguousSource { path: dir.to_path_buf(), count: entries.len() });
    }
    let entry = entries.remove(0);
    let config_path = inside(dir, &entry.config)?;
    let config_bytes = read_small(&config_path)?;
    let config_digest = sha256_of(&config_bytes);
    // The config's file is named by its digest (`<hex>.json`, `blobs/sha256/<hex>`): check it.
    let stem = config_path.file_name().map(|n| n.to_string_lossy().trim_end_matches(".json").to_string());
    if let Some(stem) = stem.filter(|s| sha256_hex(&format!("sha256:{s}")).is_ok()) {
        let expected = format!("sha256:{stem}");
        if expected != config_digest {
            return Err(ImageError::DigestMismatch {
                what: "the image config".to_string(),
                expected,
                actual: config_digest,
            });
        }
    }
    let mut layers = Vec::new();
    for layer in &entry.layers {
        layers.push(SourceLayer { digest: None, size: None, media_type: String::new(), path: inside(dir, layer)? });
    }
    Ok(Plan {
        source: "docker-archive",
        manifest: None,
        config_digest,
        config_bytes,
        layers,
        references: entry.repo_tags.unwrap_or_default(),
    })
}

/// The compression of a layer blob, from its media type and first bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
}

fn compression_of(path: &Path, media_type: &str) -> Result<Compression, ImageError> {
    let mut magic = [0u8; 4];
    let mut file = File::open(path).map_err(|source| ImageError::ReadSource { path: path.to_path_buf(), source })?;
    let n = file.read(&mut magic).map_err(|source| ImageError::ReadSource { path: path.to_path_buf(), source })?;
    let magic = magic.get(..n).unwrap_or(&[]);
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || media_type.contains("zstd") {
        return Err(ImageError::Unsupported { what: "zstd-compressed layers", detail: path.display().to_string() });
    }
    Ok(if magic.starts_with(&[0x1f, 0x8b]) { Compression::Gzip } else { Compression::None })
}

/// Copies `from` to `to`, returning its digest and size.
fn copy_hashed(from: &Path, to: &Path) -> Result<(String, u64), ImageError> {
    let src = File::open(from).map_err(|source| ImageError::ReadSource { path: from.to_path_buf(), source })?;
    let mut reader = HashingReader::new(BufReader::new(src));
    let mut dst = File::create_new(to).map_err(|source| ImageError::Write { path: to.to_path_buf(), source })?;
    io::copy(&mut reader, &mut dst).map_err(|source| ImageError::ReadSource { path: from.to_path_buf(), source })?;
    Ok(reader.finish())
}

/// Unpacks the layer blob `blob` into `root`, verifying the uncompressed stream against `diff_id`.
fn unpack_blob(
    blob: &Path,
    compression: Compression,
    root: &Path,
    digest: &str,
    diff_id: &str,
) -> Result<unpack::UnpackReport, ImageError> {
    let mut file = File::open(blob).map_err(|source| ImageError::ReadSource { path: blob.to_path_buf(), source })?;
    file.rewind().map_err(|source| ImageError::ReadSource { path: blob.to_path_buf(), source })?;
    let reader: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::None => Box::new(BufReader::new(file)),
    };
    let mut hashed = HashingReader::new(reader);
    let unpack_err = |source| ImageError::Unpack { digest: digest.to_string(), source };
    let report = unpack::unpack_layer(&mut hashed, root, UnpackOptions::default()).map_err(unpack_err)?;
    hashed.drain().map_err(|e| unpack_err(UnpackError::ReadArchive(e)))?;
    let (actual, _) = hashed.finish();
    if actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("the uncompressed layer {digest} (its diff_id)"),
            expected: diff_id.to_string(),
            actual,
        });
    }
    Ok(report)
}

/// What `layers/<diff_id>/layer.json` keeps.
#[derive(serde::Serialize, serde::Deserialize)]
struct LayerInfo {
    unpacked_size: u64,
    skipped: Vec<String>,
}

fn commit(store: &ImageStore, plan: Plan, tag: Option<Reference>) -> Result<ImageRecord, ImageError> {
    sha256_hex(&plan.config_digest)?;
    let config: Config = parse_json(&plan.config_bytes, "the image config")?;
    let found = format!("{}/{}", config.os, config.architecture);
    if config.os != "linux" || config.architecture != oci::host_architecture() {
        return Err(ImageError::WrongPlatform { found, wanted: wanted_platform() });
    }
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != plan.layers.len() {
        return Err(ImageError::LayerCount { layers: plan.layers.len(), diff_ids: diff_ids.len() });
    }
    for diff_id in diff_ids {
        sha256_hex(diff_id)?;
    }
    let references: Vec<String> = match tag {
        Some(tag) => vec![tag.to_string()],
        None => plan.references.iter().map(|r| Reference::parse(r).map(|r| r.to_string())).collect::<Result<_, _>>()?,
    };

    let work = store.temp_dir("import")?;
    let mut new_blobs: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut new_layers: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut done: HashMap<String, LayerInfo> = HashMap::new();
    let mut layer_records = Vec::new();
    for (i, (layer, diff_id)) in plan.layers.iter().zip(diff_ids).enumerate() {
        if !layer.path.is_file() {
            let digest = layer.digest.clone().unwrap_or_else(|| layer.path.display().to_string());
            return Err(ImageError::MissingBlob { digest, path: layer.path.clone() });
        }
        // The blob: already in the store, or copied in and verified.
        let existing = match &layer.digest {
            Some(d) => Some(store.blob_path(d)?).filter(|p| p.is_file()),
            None => None,
        };
        let (digest, size, blob) = match (existing, &layer.digest) {
            (Some(path), Some(d)) => {
                let size =
                    fs::metadata(&path).map_err(|source| ImageError::ReadSource { path: path.clone(), source })?.len();
                (d.clone(), size, path)
            }
            _ => {
                let copy = work.path.join(format!("blob-{i}"));
                let (actual, size) = copy_hashed(&layer.path, &copy)?;
                let what = format!("layer blob {}", layer.path.display());
                if let Some(expected) = &layer.digest {
                    if *expected != actual {
                        return Err(ImageError::DigestMismatch { what, expected: expected.clone(), actual });
                    }
                }
                if let Some(expected) = layer.size.filter(|s| *s != size) {
                    return Err(ImageError::SizeMismatch { what, expected, actual: size });
                }
                let dest = store.blob_path(&actual)?;
                if !dest.exists() && !new_blobs.iter().any(|(_, d)| *d == dest) {
                    new_blobs.push((copy.clone(), dest));
                }
                (actual, size, copy)
            }
        };
        let compression = compression_of(&blob, &layer.media_type)?;
        let media_type = match (layer.media_type.is_empty(), compression) {
            (false, _) => layer.media_type.clone(),
            (true, Compression::Gzip) => format!("{}+gzip", oci::MEDIA_OCI_LAYER_TAR),
            (true, Compression::None) => oci::MEDIA_OCI_LAYER_TAR.to_string(),
        };
        // The unpacked layer: already in the store, already done by this import, or unpacked now.
        let final_dir = store.layer_path(diff_id)?;
        let info = if let Some(info) = done.get(diff_id) {
            LayerInfo { unpacked_size: info.unpacked_size, skipped: info.skipped.clone() }
        } else if final_dir.join("root").is_dir() && final_dir.join("layer.json").is_file() {
            parse_json(&read_small(&final_dir.join("layer.json"))?, "layer.json")?
        } else {
            let dir = work.path.join(format!("layer-{i}"));
            let root = dir.join("root");
            fs::create_dir_all(&root).map_err(|source| ImageError::Write { path: root.clone(), source })?;
            let report = unpack_blob(&blob, compression, &root, &digest, diff_id)?;
            let info = LayerInfo { unpacked_size: report.size, skipped: report.skipped };
            let bytes = serde_json::to_vec_pretty(&info)
                .map_err(|source| ImageError::ParseJson { what: "layer.json".to_string(), source })?;
            write_atomic(&dir.join("layer.json"), &bytes)?;
            new_layers.push((dir, final_dir));
            info
        };
        layer_records.push(LayerRecord {
            digest: digest.clone(),
            diff_id: diff_id.clone(),
            media_type,
            size,
            unpacked_size: info.unpacked_size,
            skipped: info.skipped.clone(),
        });
        done.insert(diff_id.clone(), info);
    }
    // The manifest and config blobs (their bytes were verified when read, or are what the digest is of).
    let mut small = vec![(plan.config_digest.clone(), plan.config_bytes.clone())];
    if let Some((digest, bytes)) = &plan.manifest {
        small.push((digest.clone(), bytes.clone()));
    }
    for (n, (digest, bytes)) in small.into_iter().enumerate() {
        let dest = store.blob_path(&digest)?;
        if !dest.exists() {
            let path = work.path.join(format!("json-{n}"));
            fs::write(&path, &bytes).map_err(|source| ImageError::Write { path: path.clone(), source })?;
            new_blobs.push((path, dest));
        }
    }
    // Everything verified: into place.
    for (from, to) in new_blobs.iter().chain(&new_layers) {
        if !to.exists() {
            fs::rename(from, to).map_err(|source| ImageError::Write { path: to.clone(), source })?;
        }
    }
    let run = config.config.unwrap_or_default();
    let imported_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut record = ImageRecord {
        id: plan.config_digest.clone(),
        references: Vec::new(),
        manifest_digest: plan.manifest.map(|(d, _)| d),
        architecture: config.architecture,
        os: config.os,
        created: config.created,
        config: ImageConfig {
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir.filter(|w| !w.is_empty()),
            user: run.user.filter(|u| !u.is_empty()),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
        },
        size: layer_records.iter().map(|l| l.unpacked_size).sum(),
        layers: layer_records,
        source: plan.source.to_string(),
        imported_at,
    };
    store.write_record(&record)?;
    let mut refs = store.read_refs()?;
    for r in references {
        refs.insert(r, record.id.clone());
    }
    store.write_refs(&refs)?;
    record.references = refs.iter().filter(|(_, id)| **id == record.id).map(|(r, _)| r.clone()).collect();
    Ok(record)
}

/// Unpacks a layout or `docker save` tar (optionally gzipped) into `dest`: only directories and regular files
/// are written, at checked relative paths; a symlink (older `docker save` links repeated layers) becomes a hard
/// link to the file it names inside the archive.
fn extract_source(path: &Path, dest: &Path) -> Result<(), ImageError> {
    let fail = |why: String| ImageError::ExtractSource { path: path.to_path_buf(), why };
    let compression = compression_of(path, "")?;
    let file = File::open(path).map_err(|source| ImageError::ReadSource { path: path.to_path_buf(), source })?;
    let reader: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::None => Box::new(BufReader::new(file)),
    };
    let mut archive = tar::Archive::new(reader);
    let mut links = Vec::new();
    for entry in archive.entries().map_err(|e| fail(e.to_string()))? {
        let mut entry = entry.map_err(|e| fail(e.to_string()))?;
        let parts = unpack::components(&entry.path_bytes()).map_err(|e| fail(e.to_string()))?;
        if parts.is_empty() {
            continue;
        }
        let target = parts.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(|e| fail(format!("{}: {e}", target.display())))?
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|e| fail(format!("{}: {e}", parent.display())))?;
                }
                let mut out = File::create_new(&target).map_err(|e| fail(format!("{}: {e}", target.display())))?;
                io::copy(&mut entry, &mut out).map_err(|e| fail(e.to_string()))?;
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
                links.push((parts, link));
            }
            _ => {}
        }
    }
    for (parts, link) in links {
        if link.starts_with(b"/") {
            return Err(fail(format!("the symlink {} points outside the archive", parts.join("/"))));
        }
        let mut resolved: Vec<String> = parts[..parts.len() - 1].to_vec();
        for part in String::from_utf8_lossy(&link).split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    if resolved.pop().is_none() {
                        return Err(fail(format!("the symlink {} points outside the archive", parts.join("/"))));
                    }
                }
                other => resolved.push(other.to_string()),
            }
        }
        let from = resolved.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
        let to = parts.iter().fold(dest.to_path_buf(), |p, c| p.join(c));
        if fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
            fs::hard_link(&from, &to).map_err(|e| fail(format!("{}: {e}", to.display())))?;
        }
    }
    Ok(())
}
