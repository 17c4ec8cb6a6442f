//! Lays out the functions a sandbox start runs together at the start of `airlock`'s code.
//!
//! `startup-symbols.txt` lists them (made by `scripts/startup-symbol-order` from `perf` samples of `run --
//! /bin/true`); the linker places them first, in that order (`--symbol-ordering-file`), so a start maps about
//! 750 KB of code instead of pages spread over the binary's 6 MB: fewer page faults, and far fewer pages mapped
//! and unmapped by each of the start's processes (see docs/benchmarks.md, "Where a start's page faults go"). The
//! list changes what is where, never what runs: a name the linker does not find (a renamed or inlined function,
//! another compiler's hashes) is skipped silently.
//!
//! Only LLD knows the option. Rust links with its own LLD on x86_64-unknown-linux-gnu from 1.90 on; elsewhere,
//! with an older compiler, a linker set in the environment or in RUSTFLAGS, or `AIRLOCK_SYMBOL_ORDER=off`, the
//! list is not passed and the build is as before. (A linker set in a cargo config file's `linker` key is not
//! visible here: with GNU ld, set `AIRLOCK_SYMBOL_ORDER=off`.)

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=startup-symbols.txt");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    println!("cargo::rerun-if-env-changed=AIRLOCK_SYMBOL_ORDER");
    // What is decided also goes to the package's tests, as the cfg `symbol_order_passed`: tests/layout.rs checks
    // the layout where the list was passed.
    println!("cargo::rustc-check-cfg=cfg(symbol_order_passed)");
    if std::env::var_os("AIRLOCK_SYMBOL_ORDER").is_some_and(|v| v == "off") || !links_with_lld() {
        return;
    }
    let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") else { return };
    let list = Path::new(&dir).join("startup-symbols.txt");
    println!("cargo::rustc-link-arg-bin=airlock=-Wl,--symbol-ordering-file={}", list.display());
    println!("cargo::rustc-link-arg-bin=airlock=-Wl,--no-warn-symbol-ordering");
    println!("cargo::rustc-cfg=symbol_order_passed");
}

/// Whether the binary is linked by Rust's own LLD: the target is x86_64-unknown-linux-gnu, the compiler 1.90 or
/// newer, and neither a linker of the user's nor linker flags are set.
fn links_with_lld() -> bool {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu"
        || std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.split('\u{1f}').any(|f| f.contains("linker")) {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = Command::new(rustc).arg("--version").output() else { return false };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let mut numbers = version.split_whitespace().nth(1).unwrap_or_default().split('.').map(|n| n.parse::<u32>());
    matches!((numbers.next(), numbers.next()), (Some(Ok(1)), Some(Ok(minor))) if minor >= 90)
}
