//! Checks for the fuzz targets in `fuzz/` (cargo fuzz, nightly) and for the corpus replay test in
//! `crates/airlock/tests/fuzz_corpus.rs` (stable, every CI run). Not an API: hidden from the docs.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::layer::{commit_changes, LayerPaths};

const MARKER: &[u8] = b"outside the workspace\n";

/// A scratch directory for one commit: `upper/` (the sandbox's layer), `lower/` (the host workspace) and
/// `outside/marker` beside them; removed on drop.
struct Scratch {
    base: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = open_up(&self.base);
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn open_up(dir: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    if meta.file_type().is_dir() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(dir)? {
            let _ = open_up(&entry?.path());
        }
    }
    Ok(())
}

/// The host workspace every fuzzed layer is committed onto: files, a directory, and symlinks that point out of
/// the workspace (a commit must replace or delete them, never write through them).
fn scratch() -> io::Result<Scratch> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("airlock-fuzz-commit-{}-{n}", std::process::id()));
    if base.exists() {
        open_up(&base)?;
        fs::remove_dir_all(&base)?;
    }
    let scratch = Scratch { base };
    let base = &scratch.base;
    fs::create_dir_all(base.join("upper"))?;
    fs::create_dir_all(base.join("lower/src/sub"))?;
    fs::create_dir(base.join("outside"))?;
    fs::write(base.join("outside/marker"), MARKER)?;
    fs::write(base.join("lower/README"), b"workspace\n")?;
    fs::write(base.join("lower/src/main.rs"), b"fn main() {}\n")?;
    fs::write(base.join("lower/src/sub/x"), b"x\n")?;
    std::os::unix::fs::symlink("../outside", base.join("lower/out"))?;
    std::os::unix::fs::symlink("../../outside/marker", base.join("lower/src/marker"))?;
    Ok(scratch)
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, fs::Metadata)>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        let is_dir = meta.file_type().is_dir();
        out.push((path.clone(), meta));
        if is_dir {
            walk(&path, out);
        }
    }
}

/// The commit of a hostile layer: `make_upper` fills the sandbox's upper directory from `data` (the fuzz
/// target and the replay test unpack it as an OCI layer: whiteouts, opaque directories, symlinks, hard links,
/// set-ID modes, names of every kind), then every change is committed with `force` onto a workspace that has
/// symlinks pointing out of it. Whatever the layer holds, the commit returns a result or an error and never
/// panics; nothing appears beside the workspace; the file outside keeps its content and mode and is not
/// hard-linked from the workspace; and no committed file is set-user-ID or set-group-ID.
pub fn check_commit(data: &[u8], make_upper: impl FnOnce(&[u8], &Path)) {
    let scratch = match scratch() {
        Ok(scratch) => scratch,
        Err(e) => panic!("cannot make a scratch directory in {}: {e}", std::env::temp_dir().display()),
    };
    let base = &scratch.base;
    let paths = LayerPaths { upper: base.join("upper"), lower: base.join("lower") };
    make_upper(data, &paths.upper);
    let marker = base.join("outside/marker");
    let before = match fs::symlink_metadata(&marker) {
        Ok(meta) => meta,
        Err(e) => panic!("cannot stat {}: {e}", marker.display()),
    };
    let mut lower_before = Vec::new();
    walk(&paths.lower, &mut lower_before);

    let _ = commit_changes(&paths, &[], 0.0, true);

    let mut top: Vec<String> = match fs::read_dir(base) {
        Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) => panic!("cannot list {}: {e}", base.display()),
    };
    top.sort();
    assert_eq!(top, ["lower", "outside", "upper"], "the commit wrote beside the workspace");
    let mut outside = Vec::new();
    walk(&base.join("outside"), &mut outside);
    let outside: Vec<&PathBuf> = outside.iter().map(|(path, _)| path).collect();
    assert_eq!(outside, [&marker], "the commit wrote through a symlink out of the workspace");
    let after = match fs::symlink_metadata(&marker) {
        Ok(meta) => meta,
        Err(e) => panic!("the file outside the workspace is gone: {e}"),
    };
    assert!(after.file_type().is_file(), "the file outside the workspace was replaced");
    assert_eq!(after.mode(), before.mode(), "the file outside the workspace changed its mode");
    assert_eq!(after.ino(), before.ino(), "the file outside the workspace was replaced");
    assert_eq!(after.nlink(), 1, "the file outside the workspace was hard-linked");
    assert_eq!(fs::read(&marker).ok().as_deref(), Some(MARKER), "the file outside the workspace was written");

    let mut lower = Vec::new();
    walk(&paths.lower, &mut lower);
    for (path, meta) in &lower {
        assert!(
            meta.dev() != before.dev() || meta.ino() != before.ino(),
            "{} is the file outside the workspace",
            path.display()
        );
        let set_id = if meta.file_type().is_dir() { 0o4000 } else { 0o6000 };
        if meta.mode() & set_id != 0 && !meta.file_type().is_symlink() {
            assert!(
                lower_before.iter().any(|(p, m)| p == path && m.mode() == meta.mode()),
                "the commit made {} set-ID (mode {:o})",
                path.display(),
                meta.mode()
            );
        }
    }
}
