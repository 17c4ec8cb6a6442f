//! Replays the fuzz corpora (`fuzz/corpus/<target>/`: kept by `cargo fuzz cmin`, seeds written by hand, and every
//! input that once found a bug) through the same check functions the cargo-fuzz targets in `fuzz/` call (each
//! crate's hidden `fuzzing` module), so that every CI run on stable Rust re-checks them. New inputs come from
//! `scripts/fuzz` (nightly). Here, in the crate that depends on all of them, so one replay serves every target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use image::unpack::{unpack_layer, UnpackOptions};

fn replay(target: &str, check: &dyn Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{} of {} corpus inputs fail: {failed:?}", failed.len(), files.len());
    println!("{target}: {} corpus inputs pass", files.len());
}

#[test]
fn profile_corpus_passes() {
    replay("profile", &policy::fuzzing::check_profile);
}

#[test]
fn dns_corpus_passes() {
    replay("dns", &netgw::fuzzing::check_dns);
}

#[test]
fn packet_filter_corpus_passes() {
    replay("packet_filter", &netgw::fuzzing::check_filter);
}

#[test]
fn first_bytes_corpus_passes() {
    replay("first_bytes", &netgw::fuzzing::check_inspect);
}

#[test]
fn unpack_corpus_passes() {
    replay("unpack", &image::fuzzing::check_unpack);
}

#[test]
fn commit_corpus_passes() {
    // The hostile upper layers are built with the image unpacker, as the `commit` target builds them.
    replay("commit", &|data| {
        store::fuzzing::check_commit(data, |data, upper| {
            let _ = unpack_layer(data, upper, UnpackOptions { keep_owners: false });
        })
    });
}
