//! What can go wrong in a pull: one variant per failed operation, each naming the reference, URL, digest or
//! path it failed on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("parse the image reference {reference:?}: {reason}")]
    ParseReference { reference: String, reason: String },

    #[error("build the HTTP client: {0}")]
    BuildClient(#[source] reqwest::Error),

    #[error("start the tokio runtime for the pull: {0}")]
    StartRuntime(#[source] std::io::Error),

    #[error("pull_to_oci_layout was called inside a tokio runtime; call pull_to_oci_layout_async there")]
    InsideRuntime,

    #[error("read the Docker credentials {path}: {source}")]
    ReadDockerConfig { path: PathBuf, source: std::io::Error },

    #[error("parse the Docker credentials {path}: {reason}")]
    ParseDockerConfig { path: PathBuf, reason: String },

    #[error("request {url}: {source}")]
    Request { url: String, source: reqwest::Error },

    #[error("request {url}: the registry answered HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },

    #[error("request {url}: unauthorized ({detail})")]
    Unauthorized { url: String, detail: String },

    #[error("refuse {url}: plain HTTP to a host that is not a loopback address needs the insecure option")]
    InsecureUrl { url: String },

    #[error("fetch a registry token from {realm}: {reason}")]
    FetchToken { realm: String, reason: String },

    #[error("fetch the manifest {url}: content type {content_type:?} is not a manifest or image index type")]
    ManifestContentType { url: String, content_type: String },

    #[error("fetch the manifest {url}: larger than {limit} bytes")]
    ManifestTooLarge { url: String, limit: usize },

    #[error("parse the manifest {url}: {reason}")]
    ParseManifest { url: String, reason: String },

    #[error("verify the manifest {url}: expected digest {expected}, its content has {actual}")]
    ManifestDigest { url: String, expected: String, actual: String },

    #[error("select linux/amd64 in the image index of {reference}: it has only {available}")]
    NoMatchingPlatform { reference: String, available: String },

    #[error("check the platform of {reference}: the image is for {platform}, not linux/amd64")]
    WrongPlatform { reference: String, platform: String },

    #[error("parse the image config {digest}: {reason}")]
    ParseConfig { digest: String, reason: String },

    #[error("check the digest {digest:?}: only sha256 digests of 64 lowercase hex characters are supported")]
    UnsupportedDigest { digest: String },

    #[error("verify the blob {digest} from {url}: its content has digest sha256:{actual}")]
    BlobDigest { url: String, digest: String, actual: String },

    #[error("verify the blob {digest} from {url}: the registry sent more than the {expected} bytes the manifest says")]
    BlobTooLong { url: String, digest: String, expected: u64 },

    #[error(
        "download the blob {digest} from {url}: the registry stopped after {got} of {expected} bytes, {attempts} times"
    )]
    BlobTruncated { url: String, digest: String, got: u64, expected: u64, attempts: u32 },

    #[error("lock the pull directory {path}: {source}")]
    LockDest { path: PathBuf, source: std::io::Error },

    #[error("read {path}: {source}")]
    ReadFile { path: PathBuf, source: std::io::Error },

    #[error("write {path}: {source}")]
    WriteFile { path: PathBuf, source: std::io::Error },

    #[error("parse the layout index {path}: {reason}")]
    ParseIndex { path: PathBuf, reason: String },
}
