//! The built-in seccomp rules (`seccomp/*.toml`) as JSON, for `src/seccomp.rs` to embed.
//!
//! Every sandbox start reads the default rules, and parsing their TOML took ~90-110 us of it (release build; JSON
//! of the same rules: ~10 us). So the TOML, which stays the one source people read and edit, is parsed here, at
//! build time, and the start parses the same document as JSON into the same types and validates it as before.
//! A TOML error fails the build.

use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR for build scripts")?);
    for name in ["default", "set-id"] {
        let source = format!("seccomp/{name}.toml");
        println!("cargo::rerun-if-changed={source}");
        let text = std::fs::read_to_string(&source).map_err(|e| format!("cannot read {source}: {e}"))?;
        let document: toml::Value = toml::from_str(&text).map_err(|e| format!("cannot parse {source}: {e}"))?;
        std::fs::write(out.join(format!("{name}.json")), serde_json::to_string(&document)?)?;
    }
    Ok(())
}
