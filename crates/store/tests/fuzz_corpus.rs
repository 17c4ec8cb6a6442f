//! Replays the fuzz corpus of the `commit` target (`fuzz/corpus/commit/`, kept by `cargo fuzz cmin`, seeds
//! written by hand and every input that once found a bug) through the check the cargo-fuzz target calls, so that
//! each CI run on stable Rust re-checks it. New inputs come from `scripts/fuzz` (nightly).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use image::unpack::{unpack_layer, UnpackOptions};

fn check(data: &[u8]) {
    store::fuzzing::check_commit(data, |data, upper| {
        let _ = unpack_layer(data, upper, UnpackOptions { keep_owners: false });
    })
}

#[test]
fn commit_corpus_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/commit");
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
    println!("commit: {} corpus inputs pass", files.len());
}
