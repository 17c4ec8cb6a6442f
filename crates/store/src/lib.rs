//! airlock's workspace store: what airlock keeps on the host for each sandbox, and the transactions that change
//! it. One module owns the on-disk layout ([`layout`]: every file and directory name is spelled there and only
//! there); [`sandbox`] claims a sandbox's state (its lock, its record, its layer's directories); [`layer`] is the
//! copy-on-write layer engine (diff, discard, commit, checkpoint stacks composed; [`layer::disk`] the `--disk`
//! image on a loop device ([`loopdev`]), [`layer::live`] the overlay of a running sandbox replaced in place);
//! [`checkpoint`] holds the checkpoint, rollback and live-change transactions, each of which either completes or
//! puts every directory back.
//!
//! Synchronous and free of unsafe code: its system calls (walking layers without following symlinks, mounting a
//! disk-bounded layer, the live checkpoint's helper in the sandbox's namespaces) are the sys crate's, and what it
//! shares with the sandbox engine (namespaces, the workspace overlay's mount, id maps) the runtime crate's.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod layer;
pub mod layout;
pub mod loopdev;
pub mod record;
pub mod sandbox;

pub use checkpoint::{Checkpoint, LayerCopy};
pub use error::StoreError;
pub use layout::{LayerDir, RootLayerDir, SandboxDir, StateDir};
pub use record::SandboxRecord;
pub use sandbox::{ClaimedLayer, SandboxState};

/// `16M` for 16 MiB: how a size is shown back to the user.
pub fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Unix time now, in seconds (fractional): what records and checkpoint markers store.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_read_back_in_the_largest_whole_unit() {
        assert_eq!(human_size(16 << 20), "16M");
        assert_eq!(human_size(1 << 30), "1G");
        assert_eq!(human_size(1536), "1536");
        assert_eq!(human_size(3 << 10), "3K");
        assert_eq!(human_size(0), "0");
    }
}
