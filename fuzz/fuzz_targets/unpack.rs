#![no_main]

// The checks live in the crate (image), so that crates/airlock/tests/fuzz_corpus.rs replays this corpus on stable.
libfuzzer_sys::fuzz_target!(|data: &[u8]| image::fuzzing::check_unpack(data));
