//! How the `airlock` executable is laid out: the functions a sandbox start runs (`startup-symbols.txt`) sit
//! together, because build.rs hands the list to the linker (docs/benchmarks.md, "Where a start's page faults go").
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::process::Command;

#[test]
fn the_functions_a_start_runs_are_laid_out_together() {
    if !cfg!(symbol_order_passed) {
        skip_or_fail!("build.rs did not pass the symbol order to the linker (not Rust's own LLD; see build.rs)");
    }
    let binary = common::airlock_path();
    let out = match Command::new("nm").args(["--defined-only", "--print-size"]).arg(&binary).output() {
        Ok(out) if out.status.success() => out,
        other => skip_or_fail!("nm (binutils) cannot list {}'s symbols: {other:?}", binary.display()),
    };
    let listed: HashSet<&str> = include_str!("../startup-symbols.txt").lines().collect();
    // (address, size) of each listed function found; aliases of one function count once.
    let found: BTreeSet<(u64, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [address, size, kind, name] if matches!(kind, "t" | "T" | "w" | "W") && listed.contains(name) => {
                Some((u64::from_str_radix(address, 16).ok()?, u64::from_str_radix(size, 16).ok()?))
            }
            _ => None,
        })
        .collect();
    // Debug builds name fewer of them the same way as the release build the list was made from (other hashes),
    // but still well over a hundred: glibc's, std's, and every non-generic function of airlock's own crates.
    assert!(
        found.len() >= 100,
        "only {} of the {} listed functions are in {}",
        found.len(),
        listed.len(),
        binary.display()
    );
    let start = found.first().map(|&(address, _)| address).unwrap();
    let end = found.iter().map(|&(address, size)| address + size).max().unwrap();
    let size: u64 = found.iter().map(|&(_, size)| size).sum();
    // Laid out together, they span little more than their own size (what lies between: the rest of a glibc object
    // file whose section holds a listed function, alignment); left where they were, they span most of the code.
    assert!(
        end - start <= size + size / 2 + 128 * 1024,
        "the {} listed functions found ({size} bytes) are spread over {} bytes of {}: the linker did not take the list",
        found.len(),
        end - start,
        binary.display()
    );
}
