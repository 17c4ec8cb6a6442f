//! airlock's OCI registry client: pulls an image over the OCI distribution API (registry v2) into an OCI
//! image-layout directory, which the image store then imports.
//!
//! [`pull_to_oci_layout`] resolves the reference (Docker's normalisation: `busybox` is
//! `docker.io/library/busybox:latest`), fetches its manifest (from an image index, the linux/amd64 one), the
//! config and every layer, each verified against its sha256 while it streams to disk, and writes `oci-layout`
//! and `index.json`. The destination is a cache: blobs already there are kept, an interrupted download resumes,
//! and two pulls into one directory take turns on its `.lock`. The crate is async
//! (tokio, reqwest with rustls); `pull_to_oci_layout` runs it on a runtime of its own for synchronous callers.
#![forbid(unsafe_code)]

mod auth;
mod blob;
mod error;
mod http;
mod layout;
mod manifest;
mod reference;

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::{Arch, ImageConfiguration, Os};

pub use error::RegistryError;
pub use layout::{PARTIAL_SUFFIX, REF_NAME_ANNOTATION};

use crate::blob::BlobEvent;
use crate::layout::{sha256_hex, Layout};
use crate::manifest::{Fetched, OCI_MANIFEST};
use crate::reference::ImageRef;

/// How a pull talks to the registry.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Plain HTTP to any registry. Without it, plain HTTP is used only for a loopback registry (`localhost`,
    /// `127.0.0.0/8`, `::1`), HTTPS for every other.
    pub insecure: bool,
    /// The directory of Docker's `config.json` (credentials). `None`: `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// How many times a request is retried after a connection error, a 429 or a 5xx, and how many times a
    /// download cut short is resumed.
    pub max_retries: u32,
    /// The first retry's delay; each next one waits twice as long (at most 30 s).
    pub retry_delay: Duration,
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of an answer.
    pub read_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            insecure: false,
            docker_config_dir: None,
            max_retries: 4,
            retry_delay: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// What a pull reports as it goes, for a progress bar per layer on a terminal or plain lines otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The manifest was resolved: `layers` layers of `total_size` bytes in all are to come.
    Resolved { reference: String, manifest_digest: String, layers: usize, total_size: u64 },
    /// Layer `index` (0-based) starts downloading; `from` > 0 when it resumes a partial download.
    LayerStarted { index: usize, digest: String, size: u64, from: u64 },
    /// `done` of the layer's `size` bytes are on disk.
    LayerBytes { index: usize, digest: String, done: u64, size: u64 },
    /// The layer is complete and verified; `reused` when it was already in the destination.
    LayerDone { index: usize, digest: String, size: u64, reused: bool },
}

/// What a pull wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The normalised reference, e.g. `docker.io/library/busybox:latest`; also the
    /// `org.opencontainers.image.ref.name` of its entry in the layout's `index.json`.
    pub reference: String,
    /// The digest the registry resolved the reference to: the image index's when it served one, else the
    /// manifest's (what `docker pull` prints as the image's digest).
    pub registry_digest: String,
    /// The digest of the image manifest in the layout. It equals the registry's for an OCI manifest; a Docker
    /// schema 2 manifest is stored with OCI media types, so it differs.
    pub manifest_digest: String,
    pub config_digest: String,
    /// The layers, bottom first.
    pub layer_digests: Vec<String>,
}

/// Pulls `reference` into the OCI image-layout directory `dest` (created if needed), for synchronous callers:
/// the pull runs on a tokio runtime of its own. Refused when called on a tokio runtime's thread (use
/// [`pull_to_oci_layout_async`] there).
pub fn pull_to_oci_layout(
    reference: &str,
    dest: &Path,
    options: &PullOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<PulledImage, RegistryError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(RegistryError::InsideRuntime);
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RegistryError::StartRuntime)?;
    runtime.block_on(pull(reference, dest, options, progress))
}

/// [`pull_to_oci_layout`] for callers already on a tokio runtime.
pub async fn pull_to_oci_layout_async(
    reference: &str,
    dest: &Path,
    options: &PullOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PulledImage, RegistryError> {
    pull(reference, dest, options, progress).await
}

async fn pull<F: FnMut(Progress) + ?Sized>(
    reference: &str,
    dest: &Path,
    options: &PullOptions,
    progress: &mut F,
) -> Result<PulledImage, RegistryError> {
    let image = ImageRef::parse(reference)?;
    let normalised = image.normalised();
    let credentials = match auth::docker_config_dir(options.docker_config_dir.as_deref()) {
        Some(dir) => auth::load_credentials(&dir, &image.registry)?,
        None => None,
    };
    let mut session = http::Session::new(&image, options, credentials)?;

    // The manifest, through the index when the registry serves one.
    let first = manifest::fetch(&mut session, image.manifest_reference(), image.digest.as_deref()).await?;
    let registry_digest = first.digest.clone();
    let fetched = match &first.content {
        Fetched::Image(_) => first,
        Fetched::Index(index) => {
            let digest = manifest::select_linux_amd64(index, &normalised)?;
            let chosen = manifest::fetch(&mut session, &digest, Some(&digest)).await?;
            if let Fetched::Index(_) = chosen.content {
                return Err(RegistryError::ParseManifest {
                    url: chosen.url,
                    reason: "the index's linux/amd64 entry is another index".into(),
                });
            }
            chosen
        }
    };
    let Fetched::Image(image_manifest) = &fetched.content else {
        return Err(RegistryError::ParseManifest { url: fetched.url, reason: "not an image manifest".into() });
    };
    let layers: Vec<(String, u64)> =
        image_manifest.layers().iter().map(|l| (l.digest().to_string(), l.size())).collect();
    let config_digest = image_manifest.config().digest().to_string();
    let config_size = image_manifest.config().size();
    // Refuse digests that are not sha256 before anything is written.
    sha256_hex(&config_digest)?;
    for (digest, _) in &layers {
        sha256_hex(digest)?;
    }

    let layout = Layout::open(dest).await?;

    // The config first: it says the platform, and an image for another one is refused before its layers come.
    blob::fetch(&mut session, &layout, &config_digest, config_size, &mut |_| {}).await?;
    check_config(&layout, &config_digest, &normalised).await?;

    let layout_manifest = manifest::for_layout(&fetched)?;
    let manifest_hex = layout::hex(&<sha2::Sha256 as sha2::Digest>::digest(&layout_manifest));
    let manifest_digest = format!("sha256:{manifest_hex}");
    progress(Progress::Resolved {
        reference: normalised.clone(),
        manifest_digest: manifest_digest.clone(),
        layers: layers.len(),
        total_size: layers.iter().map(|(_, size)| size).sum(),
    });

    for (index, (digest, size)) in layers.iter().enumerate() {
        let size = *size;
        let mut report = |event: BlobEvent| match event {
            BlobEvent::Started { from } => {
                progress(Progress::LayerStarted { index, digest: digest.clone(), size, from })
            }
            BlobEvent::Bytes { done } => progress(Progress::LayerBytes { index, digest: digest.clone(), done, size }),
        };
        let reused = blob::fetch(&mut session, &layout, digest, size, &mut report).await?;
        progress(Progress::LayerDone { index, digest: digest.clone(), size, reused });
    }

    layout.put_blob(&manifest_hex, &layout_manifest).await?;
    let entry = serde_json::json!({
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": layout_manifest.len(),
        "annotations": { REF_NAME_ANNOTATION: normalised },
        "platform": { "architecture": "amd64", "os": "linux" },
    });
    layout.add_to_index(&normalised, entry).await?;
    Ok(PulledImage {
        reference: normalised,
        registry_digest,
        manifest_digest,
        config_digest,
        layer_digests: layers.into_iter().map(|(digest, _)| digest).collect(),
    })
}

/// Parses the config blob and refuses an image that is not for linux/amd64.
async fn check_config(layout: &Layout, digest: &str, reference: &str) -> Result<(), RegistryError> {
    let path = layout.blob_path(sha256_hex(digest)?);
    let text = tokio::fs::read(&path).await.map_err(|source| RegistryError::ReadFile { path, source })?;
    let config: ImageConfiguration = serde_json::from_slice(&text)
        .map_err(|e| RegistryError::ParseConfig { digest: digest.to_owned(), reason: e.to_string() })?;
    if *config.os() != Os::Linux || *config.architecture() != Arch::Amd64 {
        return Err(RegistryError::WrongPlatform {
            reference: reference.to_owned(),
            platform: format!("{}/{}", config.os(), config.architecture()),
        });
    }
    Ok(())
}
