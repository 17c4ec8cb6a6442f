//! Checks for the fuzz targets in `fuzz/` (cargo fuzz, nightly) and for the corpus replay test in
//! `crates/airlock/tests/fuzz_corpus.rs` (stable, every CI run). Not an API: hidden from the docs.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::unpack::{unpack_layer, UnpackOptions};

const MARKER: &[u8] = b"outside the layer\n";

/// A scratch directory for one unpack: `dest/` (the layer's directory) beside `outside/marker`, removed on drop.
struct Scratch {
    base: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The layer may have made read-only directories; as an ordinary user they must be opened up first.
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

fn scratch() -> io::Result<Scratch> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = std::env::temp_dir().join(format!("airlock-fuzz-unpack-{}-{n}", std::process::id()));
    if base.exists() {
        open_up(&base)?;
        fs::remove_dir_all(&base)?;
    }
    let scratch = Scratch { base };
    fs::create_dir_all(scratch.base.join("dest"))?;
    fs::create_dir(scratch.base.join("outside"))?;
    fs::write(scratch.base.join("outside/marker"), MARKER)?;
    Ok(scratch)
}

/// Every path under `dir` (not following symlinks), with its metadata.
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

/// The layer unpacker on an arbitrary (uncompressed) tar stream, into a fresh directory beside another:
/// whatever the stream holds (`..`, absolute paths, symlinks planted on the way, hard links out, whiteouts),
/// the unpacker returns a report or an error and never panics; nothing appears beside the layer's directory,
/// the file beside it keeps its content and mode, and nothing in the layer is a hard link to it.
pub fn check_unpack(data: &[u8]) {
    let scratch = match scratch() {
        Ok(scratch) => scratch,
        Err(e) => panic!("cannot make a scratch directory in {}: {e}", std::env::temp_dir().display()),
    };
    let base = &scratch.base;
    let marker = base.join("outside/marker");
    let before = match fs::symlink_metadata(&marker) {
        Ok(meta) => meta,
        Err(e) => panic!("cannot stat {}: {e}", marker.display()),
    };
    let _ = unpack_layer(data, &base.join("dest"), UnpackOptions { keep_owners: false });

    let mut top: Vec<String> = match fs::read_dir(base) {
        Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(e) => panic!("cannot list {}: {e}", base.display()),
    };
    top.sort();
    assert_eq!(top, ["dest", "outside"], "the unpacker wrote beside the layer's directory");
    let mut outside = Vec::new();
    walk(&base.join("outside"), &mut outside);
    let outside: Vec<&PathBuf> = outside.iter().map(|(path, _)| path).collect();
    assert_eq!(outside, [&marker], "the unpacker wrote into a directory beside the layer's");
    let after = match fs::symlink_metadata(&marker) {
        Ok(meta) => meta,
        Err(e) => panic!("the file beside the layer is gone: {e}"),
    };
    assert!(after.file_type().is_file(), "the file beside the layer was replaced");
    assert_eq!(after.mode(), before.mode(), "the file beside the layer changed its mode");
    assert_eq!(after.ino(), before.ino(), "the file beside the layer was replaced");
    assert_eq!(after.nlink(), 1, "the file beside the layer was hard-linked");
    assert_eq!(fs::read(&marker).ok().as_deref(), Some(MARKER), "the file beside the layer was written");

    let mut inside = Vec::new();
    walk(&base.join("dest"), &mut inside);
    for (path, meta) in &inside {
        assert!(
            meta.dev() != before.dev() || meta.ino() != before.ino(),
            "{} is the file beside the layer",
            path.display()
        );
    }
}
