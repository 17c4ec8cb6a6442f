//! What can go wrong in the image store, one variant per failed operation, with the path or value.

use std::io;
use std::path::PathBuf;

use crate::unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("bad digest {digest:?}: {why}")]
    ParseDigest { digest: String, why: &'static str },
    #[error("bad image reference {reference:?}: {why}")]
    ParseReference { reference: String, why: &'static str },
    #[error("creating the image store at {path}")]
    CreateStore { path: PathBuf, source: io::Error },
    #[error("locking the image store ({path})")]
    Lock { path: PathBuf, source: io::Error },
    #[error("reading {path}")]
    ReadSource { path: PathBuf, source: io::Error },
    #[error("unpacking the archive {path}: {why}")]
    ExtractSource { path: PathBuf, why: String },
    #[error("{path} is neither an OCI image layout (index.json) nor a `docker save` tarball (manifest.json)")]
    UnknownFormat { path: PathBuf },
    #[error("parsing {what}")]
    ParseJson { what: String, source: serde_json::Error },
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("{what} does not match its size: expected {expected} bytes, got {actual}")]
    SizeMismatch { what: String, expected: u64, actual: u64 },
    #[error("blob {digest} is missing from {path}")]
    MissingBlob { digest: String, path: PathBuf },
    #[error("no image for {wanted} in {path} (it has: {available})")]
    NoPlatform { path: PathBuf, wanted: String, available: String },
    #[error("the image is for {found}; airlock runs {wanted} images here")]
    WrongPlatform { found: String, wanted: String },
    #[error("{path} holds {count} images for this platform; import a layout or tarball that holds one")]
    AmbiguousSource { path: PathBuf, count: usize },
    #[error("the image config lists {diff_ids} layer diff_ids but the manifest {layers} layers")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("{what} is not supported: {detail}")]
    Unsupported { what: &'static str, detail: String },
    #[error("layer {digest}")]
    Unpack { digest: String, source: UnpackError },
    #[error("writing {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("no image {reference} in the store (see `airlock image ls`)")]
    NotFound { reference: String },
    #[error("{reference} matches {count} images; give more of the id")]
    AmbiguousReference { reference: String, count: usize },
    #[error("image {image} is in use by sandbox {sandboxes} (remove it with `airlock rm` first)")]
    InUse { image: String, sandboxes: String },
    #[error("image {image}: its layer {diff_id} is missing from the store; import the image again")]
    MissingLayer { image: String, diff_id: String },
    #[error("bad sandbox name {name:?}")]
    SandboxName { name: String },
}
