#![no_main]

// The checks live in the crate (netgw), so that crates/airlock/tests/fuzz_corpus.rs replays this corpus on stable.
libfuzzer_sys::fuzz_target!(|data: &[u8]| netgw::fuzzing::check_dns(data));
