#![no_main]

use image::unpack::{unpack_layer, UnpackOptions};

// The check lives in the crate (store), so that crates/airlock/tests/fuzz_corpus.rs replays this corpus on stable. The input
// is a layer tar, unpacked (whiteouts and opaque directories in overlayfs form) as the sandbox's upper directory.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    store::fuzzing::check_commit(data, |data, upper| {
        let _ = unpack_layer(data, upper, UnpackOptions { keep_owners: false });
    })
});
