//! Manifests and image indexes: fetched with their content type checked and digest verified, linux/amd64 chosen
//! from an index, and Docker's schema 2 media types rewritten to OCI's for the layout.

use oci_spec::image::{Arch, ImageIndex, ImageManifest, Os};
use reqwest::header::CONTENT_TYPE;
use sha2::{Digest as _, Sha256};

use crate::http::{quote, Session};
use crate::layout::hex;
use crate::RegistryError;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_NONDISTRIBUTABLE_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";

/// The largest manifest accepted (the distribution spec's registries allow 4 MiB).
const MANIFEST_LIMIT: usize = 4 << 20;

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

pub(crate) enum Fetched {
    Index(Box<ImageIndex>),
    Image(Box<ImageManifest>),
}

pub(crate) struct FetchedManifest {
    pub url: String,
    pub body: Vec<u8>,
    /// `sha256:<hex>` of `body`.
    pub digest: String,
    pub content: Fetched,
}

/// GETs a manifest or index by tag or digest. Refused: a content type that is not one of the four manifest
/// types, a body that does not parse as what the content type says (or whose `mediaType` says otherwise), a
/// digest that differs from `expected` or from the registry's `Docker-Content-Digest`.
pub(crate) async fn fetch(
    session: &mut Session,
    reference: &str,
    expected: Option<&str>,
) -> Result<FetchedManifest, RegistryError> {
    let url = session.manifest_url(reference);
    let mut response = session.get(&url, Some(ACCEPT), None).await?;
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_index = match content_type.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        _ => return Err(RegistryError::ManifestContentType { url, content_type }),
    };
    let header_digest =
        response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MANIFEST_LIMIT {
                    return Err(RegistryError::ManifestTooLarge { url, limit: MANIFEST_LIMIT });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(source) => return Err(RegistryError::Request { url, source }),
        }
    }
    let digest = format!("sha256:{}", hex(&Sha256::digest(&body)));
    for expected in expected.into_iter().chain(header_digest.as_deref().filter(|d| d.starts_with("sha256:"))) {
        if expected != digest {
            return Err(RegistryError::ManifestDigest { url, expected: expected.to_owned(), actual: digest });
        }
    }
    let bad = |reason: String| RegistryError::ParseManifest { url: url.clone(), reason };
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON ({e}): {}", quote(&body))))?;
    if let Some(media_type) = value.get("mediaType").and_then(|v| v.as_str()) {
        if media_type != content_type {
            return Err(bad(format!("its mediaType is {media_type:?} but it was served as {content_type:?}")));
        }
    }
    let content = if is_index {
        Fetched::Index(Box::new(serde_json::from_value(value).map_err(|e| bad(format!("not an image index: {e}")))?))
    } else {
        let manifest: ImageManifest =
            serde_json::from_value(value).map_err(|e| bad(format!("not an image manifest: {e}")))?;
        if manifest.schema_version() != 2 {
            return Err(bad(format!("schemaVersion {} (only 2 is supported)", manifest.schema_version())));
        }
        Fetched::Image(Box::new(manifest))
    };
    Ok(FetchedManifest { url, body, digest, content })
}

/// The digest of the linux/amd64 image manifest in an index, or an error listing the platforms it has.
pub(crate) fn select_linux_amd64(index: &ImageIndex, reference: &str) -> Result<String, RegistryError> {
    let is_manifest = |m: &oci_spec::image::Descriptor| {
        let media_type = m.media_type().to_string();
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    };
    let chosen = index
        .manifests()
        .iter()
        .filter(|m| is_manifest(m))
        .find(|m| m.platform().as_ref().is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64));
    if let Some(m) = chosen {
        return Ok(m.digest().to_string());
    }
    let available: Vec<String> = index
        .manifests()
        .iter()
        .map(|m| match m.platform() {
            Some(p) => match p.variant() {
                Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
                None => format!("{}/{}", p.os(), p.architecture()),
            },
            None => format!("{} without a platform", m.media_type()),
        })
        .collect();
    let available = if available.is_empty() { "no manifests".to_owned() } else { available.join(", ") };
    Err(RegistryError::NoMatchingPlatform { reference: reference.to_owned(), available })
}

/// The manifest as the layout stores it: an OCI manifest is kept byte for byte; a Docker schema 2 manifest gets
/// OCI's media types (the blobs are the same).
pub(crate) fn for_layout(fetched: &FetchedManifest) -> Result<Vec<u8>, RegistryError> {
    let bad = |reason: String| RegistryError::ParseManifest { url: fetched.url.clone(), reason };
    let mut value: serde_json::Value = serde_json::from_slice(&fetched.body).map_err(|e| bad(e.to_string()))?;
    let is_docker = value.get("mediaType").and_then(|v| v.as_str()) == Some(DOCKER_MANIFEST)
        || value.pointer("/config/mediaType").and_then(|v| v.as_str()) == Some(DOCKER_CONFIG);
    if !is_docker {
        return Ok(fetched.body.clone());
    }
    let set = |v: &mut serde_json::Value, to: &str| *v = serde_json::Value::String(to.to_owned());
    if let Some(object) = value.as_object_mut() {
        object.insert("mediaType".to_owned(), OCI_MANIFEST.into());
    }
    if let Some(m) = value.pointer_mut("/config/mediaType") {
        set(m, OCI_CONFIG);
    }
    if let Some(layers) = value.get_mut("layers").and_then(|l| l.as_array_mut()) {
        for layer in layers {
            if let Some(m) = layer.get_mut("mediaType") {
                match m.as_str() {
                    Some(DOCKER_LAYER) => set(m, OCI_LAYER_GZIP),
                    Some(DOCKER_FOREIGN_LAYER) => set(m, OCI_NONDISTRIBUTABLE_GZIP),
                    _ => {}
                }
            }
        }
    }
    serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))
}
