#![no_main]

// The checks live in the crate (policy), so that crates/airlock/tests/fuzz_corpus.rs replays this corpus on stable.
libfuzzer_sys::fuzz_target!(|data: &[u8]| policy::fuzzing::check_profile(data));
