//! Checks for the fuzz targets in `fuzz/` (cargo fuzz, nightly) and for the corpus replay test in
//! `crates/airlock/tests/fuzz_corpus.rs` (stable, every CI run). Not an API: hidden from the docs.

use crate::profile::Profile;

/// The profile parser on arbitrary bytes (as text, lossily): it returns a profile or an error and never
/// panics, and an error renders as one message that names the origin.
pub fn check_profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = Profile::parse(&text, "fuzz.toml") {
        let shown = error.to_string();
        assert!(shown.contains("fuzz.toml"), "a profile error that does not name its file: {shown}");
    }
}
