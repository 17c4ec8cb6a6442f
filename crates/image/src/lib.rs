//! airlock's image store: OCI images as root filesystems.
//!
//! An image comes in as an OCI image layout (a directory or a tar of one, as `skopeo copy … oci:DIR`, `umoci`
//! or the registry client write it) or a `docker save` tarball, and goes into a content-addressed store under
//! `$STATE/images/` (see [`store`] for the layout): every blob kept by its digest and verified, every layer
//! unpacked once ([`unpack`], which can never write outside the layer's directory) into overlayfs form, shared
//! by every image and sandbox that uses it. [`ImageStore::resolve`] turns a reference (`alpine:3.20`,
//! `localhost:5055/x/y:tag`, an image id or a digest prefix) into the unpacked layers, bottom first, and the
//! image's config.
//!
//! Synchronous and without unsafe code: the few system calls the unpacker needs (`openat2`, `mknodat`,
//! `utimensat`...) are `sys`'s wrappers.
#![forbid(unsafe_code)]

pub mod digest;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod import;
pub mod oci;
pub mod reference;
pub mod store;
pub mod unpack;

pub use error::ImageError;
pub use reference::Reference;
pub use store::{ImageConfig, ImageRecord, ImageStore, LayerRecord, PruneReport, RemoveReport, ResolvedImage};
pub use unpack::UnpackError;

#[cfg(test)]
pub(crate) mod testutil;
