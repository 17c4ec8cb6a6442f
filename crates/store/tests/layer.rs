//! `store::layer` on real overlayfs: a lower and an upper directory in a temporary directory, the overlay mounted
//! with the `mount` command, real changes made through the mount, then (unmounted) `diff_layer` must list exactly
//! what changed, `discard_changes` drop exactly what it is asked to, and planted symlinks and hostile names must
//! never lead it outside the layer.
//!
//! Mounting needs root: the overlay tests skip with a printed reason otherwise, and fail instead under `CI=true`.
//! The 10,000-file timing and the `PATH` parsing need nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Like the store itself: the few system calls the set-up needs are the sys crate's.
#![forbid(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs::{self, Permissions};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};
use store::layer::{
    commit_stack, diff_layer, diff_stack, discard_changes, discard_stack, parse_filter, parse_filters, patch_stack,
    quote_path, unified_patch, Change, ChangeKind, CommitOutcome, EntryType, LayerError, LayerPaths, LayerStack,
};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Prints `SKIP: reason` (or panics under CI, where the machine can run every test here).
fn skip(reason: &str) {
    assert!(!in_ci(), "CI=true: this machine should run this test, but: {reason}");
    println!("SKIP: {reason}");
}

fn sha(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("airlock-layer-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// lower/, upper/, work/ and the mount point merged/ in a scratch directory.
struct Overlay {
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    options: String,
    mounted: bool,
    // Last: dropped (removed) after `Drop for Overlay` has unmounted.
    scratch: Scratch,
}

impl Overlay {
    /// The directories, or `None` (after a SKIP line) when this process cannot mount overlayfs.
    fn new(tag: &str, extra_options: &str) -> Option<Overlay> {
        if !runtime::host::is_host_root() {
            skip("mounting overlayfs needs root");
            return None;
        }
        let scratch = Scratch::new(tag);
        let dir = |name: &str| {
            let path = scratch.0.join(name);
            fs::create_dir(&path).unwrap();
            path
        };
        let (lower, upper, work, merged) = (dir("lower"), dir("upper"), dir("work"), dir("merged"));
        let overlay =
            Overlay { lower, upper, work, merged, options: extra_options.to_string(), mounted: false, scratch };
        Some(overlay)
    }

    fn root(&self) -> &Path {
        &self.scratch.0
    }

    /// Mounts; `Err` with the reason when the kernel refuses.
    fn try_mount(&mut self) -> Result<(), String> {
        let mut options = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            self.upper.display(),
            self.work.display()
        );
        if !self.options.is_empty() {
            options = format!("{options},{}", self.options);
        }
        let out = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&self.merged).output();
        match out {
            Ok(out) if out.status.success() => {
                self.mounted = true;
                Ok(())
            }
            Ok(out) => {
                Err(format!("mount -t overlay -o {options} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
            }
            Err(e) => Err(format!("cannot run mount: {e}")),
        }
    }

    fn unmount(&mut self) {
        let status = Command::new("umount").arg(&self.merged).status().unwrap();
        assert!(status.success(), "umount {} failed", self.merged.display());
        self.mounted = false;
    }

    fn paths(&self) -> LayerPaths {
        LayerPaths { upper: self.upper.clone(), lower: self.lower.clone() }
    }

    /// `self.merged` joined with `rel`: where the sandbox would see it.
    fn m(&self, rel: &str) -> PathBuf {
        self.merged.join(rel)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.merged).status();
        }
    }
}

/// A mounted overlay, or `None` after a SKIP line.
fn mounted_overlay(tag: &str, extra_options: &str, populate: impl FnOnce(&Path)) -> Option<Overlay> {
    let mut overlay = Overlay::new(tag, extra_options)?;
    populate(&overlay.lower);
    if let Err(reason) = overlay.try_mount() {
        skip(&reason);
        return None;
    }
    Some(overlay)
}

fn write(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir(path).unwrap();
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

// ---- the main scenario: every kind of change, made through a real overlay ----

fn populate_workspace(l: &Path) {
    write(&l.join("README.md"), b"hello\nworld\n", 0o644);
    write(&l.join("modify.txt"), b"one\ntwo\nthree\n", 0o644);
    write(&l.join("delete.txt"), b"bye\n", 0o644);
    mkdir(&l.join("deldir"), 0o755);
    write(&l.join("deldir/a.txt"), b"a\n", 0o644);
    mkdir(&l.join("deldir/sub"), 0o755);
    write(&l.join("deldir/sub/b.txt"), b"b\n", 0o644);
    mkdir(&l.join("opaque"), 0o755);
    write(&l.join("opaque/old1.txt"), b"old\n", 0o644);
    write(&l.join("opaque/keep.txt"), b"same\n", 0o644);
    mkdir(&l.join("opaque/sub"), 0o755);
    write(&l.join("opaque/sub/x"), b"x\n", 0o644);
    write(&l.join("rename_from.txt"), b"moving\n", 0o644);
    write(&l.join("chmod.sh"), b"#!/bin/sh\n", 0o644);
    symlink("README.md", l.join("retarget")).unwrap();
    write(&l.join("file2dir"), b"f\n", 0o644);
    write(&l.join("file2link"), b"l\n", 0o644);
    mkdir(&l.join("dir2file"), 0o755);
    write(&l.join("dir2file/inner"), b"i\n", 0o644);
    write(&l.join("touched.txt"), b"t\n", 0o644);
    write(&l.join("chmodback.txt"), b"c\n", 0o644);
    mkdir(&l.join("modedir"), 0o755);
    write(&l.join("modedir/f"), b"m\n", 0o644);
    write(&l.join("untouched.txt"), b"u\n", 0o644);
}

/// What an agent might do in its workspace.
fn change_workspace(o: &Overlay) {
    write(&o.m("new.rs"), b"fn main() {}\n", 0o644);
    mkdir(&o.m("newdir"), 0o755);
    mkdir(&o.m("newdir/inner"), 0o755);
    write(&o.m("newdir/inner/deep.txt"), b"deep\n", 0o644);
    write(&o.m("modify.txt"), b"one\ntwo\nthree\nfour\n", 0o644);
    fs::remove_file(o.m("delete.txt")).unwrap();
    fs::remove_dir_all(o.m("deldir")).unwrap();
    // rm -rf and re-create: an opaque directory; keep.txt comes back identical, so it is no change.
    fs::remove_dir_all(o.m("opaque")).unwrap();
    mkdir(&o.m("opaque"), 0o755);
    write(&o.m("opaque/keep.txt"), b"same\n", 0o644);
    write(&o.m("opaque/new.txt"), b"new\n", 0o644);
    fs::rename(o.m("rename_from.txt"), o.m("renamed.txt")).unwrap();
    fs::set_permissions(o.m("chmod.sh"), Permissions::from_mode(0o755)).unwrap();
    symlink("/etc/passwd", o.m("symlink_new")).unwrap();
    fs::remove_file(o.m("retarget")).unwrap();
    symlink("untouched.txt", o.m("retarget")).unwrap();
    fs::remove_file(o.m("file2dir")).unwrap();
    mkdir(&o.m("file2dir"), 0o755);
    write(&o.m("file2dir/child"), b"c\n", 0o644);
    fs::remove_file(o.m("file2link")).unwrap();
    symlink("README.md", o.m("file2link")).unwrap();
    fs::remove_dir_all(o.m("dir2file")).unwrap();
    write(&o.m("dir2file"), b"now a file\n", 0o644);
    // Copy-ups that change nothing a diff shows: new times, a mode changed and changed back.
    let status = Command::new("touch").arg(o.m("touched.txt")).status().unwrap();
    assert!(status.success());
    fs::set_permissions(o.m("chmodback.txt"), Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(o.m("chmodback.txt"), Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(o.m("modedir"), Permissions::from_mode(0o700)).unwrap();
}

/// The full expected diff of `change_workspace`, one line per change: kind, path, old and new type, modes.
const EXPECTED: &[&str] = &[
    "M chmod.sh file 644 -> file 755",
    "D deldir dir 755 -> -",
    "D deldir/a.txt file 644 -> -",
    "D deldir/sub dir 755 -> -",
    "D deldir/sub/b.txt file 644 -> -",
    "D delete.txt file 644 -> -",
    "T dir2file dir 755 -> file 644",
    "D dir2file/inner file 644 -> -",
    "T file2dir file 644 -> dir 755",
    "A file2dir/child - -> file 644",
    "T file2link file 644 -> symlink -",
    "M modedir dir 755 -> dir 700",
    "M modify.txt file 644 -> file 644",
    "A new.rs - -> file 644",
    "A newdir - -> dir 755",
    "A newdir/inner - -> dir 755",
    "A newdir/inner/deep.txt - -> file 644",
    "A opaque/new.txt - -> file 644",
    "D opaque/old1.txt file 644 -> -",
    "D opaque/sub dir 755 -> -",
    "D opaque/sub/x file 644 -> -",
    "D rename_from.txt file 644 -> -",
    "A renamed.txt - -> file 644",
    "M retarget symlink - -> symlink -",
    "A symlink_new - -> symlink -",
];

fn line(c: &Change) -> String {
    let kind = match c.kind {
        ChangeKind::Added => "A",
        ChangeKind::Modified => "M",
        ChangeKind::Deleted => "D",
        ChangeKind::TypeChanged => "T",
    };
    let side = |t: Option<EntryType>, mode: Option<u32>| match t {
        None => "-".to_string(),
        Some(t) => format!("{} {}", t.as_str(), mode.map_or("-".to_string(), |m| format!("{m:o}"))),
    };
    format!("{kind} {} {} -> {}", c.path, side(c.old_type, c.old_mode), side(c.new_type, c.mode))
}

fn lines(changes: &[Change]) -> Vec<String> {
    changes.iter().map(line).collect()
}

fn find<'a>(changes: &'a [Change], path: &str) -> &'a Change {
    changes.iter().find(|c| c.path == path).unwrap_or_else(|| panic!("no change at {path}"))
}

fn expected_without(prefixes: &[&str]) -> Vec<String> {
    EXPECTED
        .iter()
        .filter(|l| {
            let path = l.split(' ').nth(1).unwrap();
            !prefixes.iter().any(|p| Path::new(path).starts_with(p))
        })
        .map(|l| l.to_string())
        .collect()
}

/// The scenario's overlay, changed and unmounted.
fn changed_overlay(tag: &str) -> Option<Overlay> {
    let mut o = mounted_overlay(tag, "", populate_workspace)?;
    change_workspace(&o);
    o.unmount();
    // The no-op copy-ups did reach the layer, so "no change" is the diff's judgment, not an absent entry.
    assert!(o.upper.join("touched.txt").exists() && o.upper.join("chmodback.txt").exists());
    Some(o)
}

#[test]
fn diff_lists_exactly_what_changed_through_a_real_overlay() {
    let Some(o) = changed_overlay("diff") else { return };
    let started = Instant::now();
    let changes = diff_layer(&o.paths(), &[]).unwrap();
    println!("diff of {} changes: {:?}", changes.len(), started.elapsed());
    assert_eq!(lines(&changes), EXPECTED);

    // Hashes and sizes: of the contents for files, of the target for symlinks.
    let modify = find(&changes, "modify.txt");
    assert_eq!(modify.old_hash.as_deref(), Some(sha(b"one\ntwo\nthree\n").as_str()));
    assert_eq!(modify.new_hash.as_deref(), Some(sha(b"one\ntwo\nthree\nfour\n").as_str()));
    assert_eq!(modify.size, Some(19));
    let chmod = find(&changes, "chmod.sh");
    assert_eq!(chmod.old_hash, chmod.new_hash, "a mode change keeps the contents");
    let added = find(&changes, "new.rs");
    assert_eq!((added.old_hash.as_deref(), added.new_hash.as_deref()), (None, Some(sha(b"fn main() {}\n").as_str())));
    let deleted = find(&changes, "deldir/sub/b.txt");
    assert_eq!((deleted.old_hash.as_deref(), deleted.new_hash.as_deref()), (Some(sha(b"b\n").as_str()), None));
    assert_eq!(deleted.size, None);
    let link = find(&changes, "symlink_new");
    assert_eq!((link.new_hash.as_deref(), link.size), (Some(sha(b"/etc/passwd").as_str()), Some(11)));
    let retarget = find(&changes, "retarget");
    assert_eq!(retarget.old_hash.as_deref(), Some(sha(b"README.md").as_str()));
    assert_eq!(retarget.new_hash.as_deref(), Some(sha(b"untouched.txt").as_str()));
    let typed = find(&changes, "file2link");
    assert_eq!(typed.old_hash.as_deref(), Some(sha(b"l\n").as_str()));
    assert_eq!(typed.new_hash.as_deref(), Some(sha(b"README.md").as_str()));
    assert!(changes.iter().all(|c| c.raw_path == Path::new(&c.path)));

    // PATH filters: by component, relative or absolute under the workspace, above a deleted directory too.
    let only = |filters: &[&str]| {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        lines(&diff_layer(&o.paths(), &filters).unwrap())
    };
    assert_eq!(only(&["deldir/sub"]), ["D deldir/sub dir 755 -> -", "D deldir/sub/b.txt file 644 -> -"]);
    let absolute = o.lower.join("opaque").to_string_lossy().into_owned();
    assert_eq!(
        only(&[&absolute, "./new.rs"]),
        [
            "A new.rs - -> file 644",
            "A opaque/new.txt - -> file 644",
            "D opaque/old1.txt file 644 -> -",
            "D opaque/sub dir 755 -> -",
            "D opaque/sub/x file 644 -> -"
        ]
    );
    assert_eq!(only(&["newdir/inner/deep.txt"]), ["A newdir/inner/deep.txt - -> file 644"]);
    assert_eq!(only(&["dir2file/inner"]), ["D dir2file/inner file 644 -> -"]);
    assert_eq!(only(&["new"]), Vec::<String>::new(), "a prefix of a name is not a prefix of the path");
    assert_eq!(only(&["untouched.txt", "touched.txt"]), Vec::<String>::new());
    assert_eq!(only(&["."]), EXPECTED);
    assert!(matches!(diff_layer(&o.paths(), &["../lower".into()]), Err(LayerError::InvalidFilter { .. })));
    assert!(matches!(diff_layer(&o.paths(), &["/etc".into()]), Err(LayerError::InvalidFilter { .. })));
}

#[test]
fn discard_drops_exactly_the_named_changes_and_the_host_version_shows_again() {
    let Some(mut o) = changed_overlay("discard") else { return };
    let paths = o.paths();
    let discard = |filters: &[&str]| {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        discard_changes(&paths, &filters)
    };
    let diff = || lines(&diff_layer(&paths, &[]).unwrap());

    assert_eq!(discard(&["modify.txt"]).unwrap(), ["modify.txt"]);
    assert_eq!(diff(), expected_without(&["modify.txt"]));
    assert!(!o.upper.join("modify.txt").exists());

    // Changes under a directory the sandbox replaced as a whole cannot go alone while the host has the path;
    // nothing is removed then.
    for (path, whole) in [("opaque/old1.txt", "opaque"), ("deldir/sub/b.txt", "deldir"), ("dir2file/inner", "dir2file")]
    {
        match discard(&[path]) {
            Err(err @ LayerError::DiscardPartOf { .. }) => {
                let text = err.to_string();
                assert!(text.contains(path) && text.contains(&format!("discard {whole} instead")), "{text}");
            }
            other => panic!("discard {path}: expected DiscardPartOf, got {other:?}"),
        }
    }
    assert!(matches!(discard(&["modify.txt", "opaque/sub/x"]), Err(LayerError::DiscardPartOf { .. })));
    assert_eq!(diff(), expected_without(&["modify.txt"]));
    // ... but a new file there can (the host has nothing at its path).
    assert_eq!(discard(&["opaque/new.txt"]).unwrap(), ["opaque/new.txt"]);

    assert_eq!(discard(&["deldir"]).unwrap(), ["deldir", "deldir/a.txt", "deldir/sub", "deldir/sub/b.txt"]);
    assert_eq!(
        discard(&["file2dir", "chmod.sh", "retarget"]).unwrap(),
        ["chmod.sh", "file2dir", "file2dir/child", "retarget"]
    );
    assert_eq!(discard(&["untouched.txt"]).unwrap(), Vec::<String>::new(), "nothing changed there");
    assert_eq!(
        diff(),
        expected_without(&["modify.txt", "opaque/new.txt", "deldir", "file2dir", "chmod.sh", "retarget"])
    );

    // The host's version is what the workspace shows again.
    o.try_mount().unwrap();
    assert_eq!(fs::read(o.m("modify.txt")).unwrap(), b"one\ntwo\nthree\n");
    assert_eq!(fs::read(o.m("deldir/sub/b.txt")).unwrap(), b"b\n");
    assert_eq!(fs::read(o.m("file2dir")).unwrap(), b"f\n");
    assert_eq!(fs::read_link(o.m("retarget")).unwrap(), Path::new("README.md"));
    assert_eq!(fs::metadata(o.m("chmod.sh")).unwrap().permissions().mode() & 0o7777, 0o644);
    assert!(!o.m("opaque/old1.txt").exists(), "opaque stays replaced until it is discarded as a whole");
    o.unmount();

    // Everything else.
    let rest = discard(&[]).unwrap();
    assert_eq!(
        rest.len(),
        expected_without(&["modify.txt", "opaque/new.txt", "deldir", "file2dir", "chmod.sh", "retarget"]).len()
    );
    assert_eq!(diff(), Vec::<String>::new());
    assert_eq!(fs::read_dir(&o.upper).unwrap().count(), 0, "the layer is empty");
    o.try_mount().unwrap();
    assert_eq!(fs::read(o.m("opaque/old1.txt")).unwrap(), b"old\n");
    assert_eq!(fs::read(o.m("delete.txt")).unwrap(), b"bye\n");
    assert!(fs::metadata(o.m("dir2file")).unwrap().is_dir());
    o.unmount();
}

#[test]
fn patch_shows_text_diffs_and_notes() {
    let Some(mut o) = mounted_overlay("patch", "", populate_workspace) else { return };
    change_workspace(&o);
    write(&o.m("blob.bin"), b"\x00\x01\x02\xff", 0o644);
    o.unmount();
    let paths = o.paths();
    let changes = diff_layer(&paths, &[]).unwrap();
    let patch = |path: &str| unified_patch(&paths, find(&changes, path)).unwrap();

    assert_eq!(
        patch("modify.txt"),
        "diff --git a/modify.txt b/modify.txt\n--- a/modify.txt\n+++ b/modify.txt\n@@ -1,3 +1,4 @@\n one\n two\n three\n+four\n"
    );
    assert_eq!(
        patch("new.rs"),
        "diff --git a/new.rs b/new.rs\nnew file mode 100644\n--- /dev/null\n+++ b/new.rs\n@@ -0,0 +1 @@\n+fn main() {}\n"
    );
    assert_eq!(
        patch("delete.txt"),
        "diff --git a/delete.txt b/delete.txt\ndeleted file mode 100644\n--- a/delete.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\n"
    );
    assert_eq!(patch("chmod.sh"), "diff --git a/chmod.sh b/chmod.sh\nold mode 100644\nnew mode 100755\n");
    assert_eq!(
        patch("blob.bin"),
        "diff --git a/blob.bin b/blob.bin\nnew file mode 100644\nBinary files /dev/null and b/blob.bin differ\n"
    );
    assert_eq!(patch("retarget"), "symlink retarget: \"README.md\" -> \"untouched.txt\"\n");
    assert_eq!(patch("symlink_new"), "new symlink symlink_new -> \"/etc/passwd\"\n");
    assert_eq!(patch("modedir"), "directory modedir: mode 755 -> 700\n");
    assert_eq!(patch("newdir"), "new directory newdir\n");
    assert_eq!(patch("deldir"), "deleted directory deldir\n");
    assert_eq!(patch("file2link"), "type changed file2link: file -> symlink\n");
    for change in &changes {
        let text = unified_patch(&paths, change).unwrap();
        assert!(text.ends_with('\n') && !text.is_empty(), "{}: {text:?}", change.path);
    }
}

// ---- hostile names and planted symlinks ----

#[test]
fn hostile_names_and_planted_symlinks_are_never_followed() {
    let Some(mut o) = mounted_overlay("hostile", "", |l| {
        mkdir(&l.join("sub"), 0o755);
        write(&l.join("sub/keep"), b"keep\n", 0o644);
    }) else {
        return;
    };
    // Outside the workspace, where a followed link would lead.
    let outside_file = o.root().join("outside_file");
    let outside_dir = o.root().join("outside_dir");
    write(&outside_file, b"secret\n", 0o644);
    mkdir(&outside_dir, 0o755);
    write(&outside_dir.join("precious"), b"precious\n", 0o644);

    write(&o.m("new\nline.txt"), b"x\n", 0o644);
    let bad = OsStr::from_bytes(b"bad\xff\xfe.bin");
    write(&o.merged.join(bad), b"y\n", 0o644);
    write(&o.m("\u{1b}[31mred"), b"z\n", 0o644);
    symlink("/etc/passwd", o.m("evil")).unwrap();
    symlink("../outside_file", o.m("up")).unwrap();
    symlink(&outside_dir, o.m("linkdir")).unwrap();
    fs::remove_dir_all(o.m("sub")).unwrap();
    symlink(&outside_dir, o.m("sub")).unwrap();
    o.unmount();
    let paths = o.paths();

    let changes = diff_layer(&paths, &[]).unwrap();
    assert_eq!(
        lines(&changes),
        [
            "A \u{1b}[31mred - -> file 644",
            "A bad\u{fffd}\u{fffd}.bin - -> file 644",
            "A evil - -> symlink -",
            "A linkdir - -> symlink -",
            "A new\nline.txt - -> file 644",
            "T sub dir 755 -> symlink -",
            "D sub/keep file 644 -> -",
            "A up - -> symlink -",
        ]
    );
    let raw_bad = &changes[1].raw_path;
    assert_eq!(raw_bad.as_os_str().as_bytes(), b"bad\xff\xfe.bin", "the raw name is kept exactly");
    assert_eq!(quote_path(raw_bad), "\"bad\\xff\\xfe.bin\"");
    assert_eq!(quote_path(&changes[4].raw_path), "\"new\\nline.txt\"");
    assert_eq!(quote_path(&changes[0].raw_path), "\"\\x1b[31mred\"");
    assert_eq!(find(&changes, "evil").new_hash.as_deref(), Some(sha(b"/etc/passwd").as_str()));
    assert_eq!(find(&changes, "up").new_hash.as_deref(), Some(sha(b"../outside_file").as_str()));
    assert_eq!(find(&changes, "linkdir").new_hash.as_deref(), Some(sha(outside_dir.as_os_str().as_bytes()).as_str()));
    assert!(!changes.iter().any(|c| c.path.contains("precious")), "a symlinked directory was entered");
    assert!(unified_patch(&paths, &changes[4])
        .unwrap()
        .starts_with("diff --git \"a/new\\nline.txt\" \"b/new\\nline.txt\"\n"));

    // Filters through a symlink in the layer find nothing beneath it (and do not enter it).
    assert_eq!(lines(&diff_layer(&paths, &["linkdir/precious".into()]).unwrap()), Vec::<String>::new());
    assert_eq!(lines(&diff_layer(&paths, &["sub/keep".into()]).unwrap()), ["D sub/keep file 644 -> -"]);

    // Discard removes the links themselves, never what they point to.
    assert_eq!(discard_changes(&paths, &["up".into(), "linkdir".into()]).unwrap(), ["linkdir", "up"]);
    assert!(
        fs::symlink_metadata(o.upper.join("up")).is_err() && fs::symlink_metadata(o.upper.join("linkdir")).is_err()
    );
    assert_eq!(fs::read(&outside_file).unwrap(), b"secret\n");
    assert_eq!(fs::read(outside_dir.join("precious")).unwrap(), b"precious\n");
    assert_eq!(discard_changes(&paths, &["sub".into()]).unwrap(), ["sub", "sub/keep"]);
    assert_eq!(discard_changes(&paths, &[]).unwrap().len(), 4);
    assert_eq!(fs::read(&outside_file).unwrap(), b"secret\n");
    assert_eq!(fs::read(outside_dir.join("precious")).unwrap(), b"precious\n");
    assert!(fs::metadata("/etc/passwd").unwrap().len() > 0);
    assert_eq!(fs::read_dir(&o.upper).unwrap().count(), 0);
    assert_eq!(fs::read(o.lower.join("sub/keep")).unwrap(), b"keep\n");
}

#[test]
fn a_symlinked_directory_in_the_lower_is_not_entered_when_deleted() {
    let Some(mut o) = mounted_overlay("lowerlink", "", |_| {}) else { return };
    let outside_dir = o.root().join("outside_dir");
    mkdir(&outside_dir, 0o755);
    write(&outside_dir.join("precious"), b"precious\n", 0o644);
    o.unmount();
    symlink(&outside_dir, o.lower.join("lowlink")).unwrap();
    o.try_mount().unwrap();
    fs::remove_file(o.m("lowlink")).unwrap();
    o.unmount();
    let changes = diff_layer(&o.paths(), &[]).unwrap();
    assert_eq!(lines(&changes), ["D lowlink symlink - -> -"]);
    assert_eq!(changes[0].old_hash.as_deref(), Some(sha(outside_dir.as_os_str().as_bytes()).as_str()));
    assert_eq!(discard_changes(&o.paths(), &[]).unwrap(), ["lowlink"]);
    assert!(fs::symlink_metadata(o.lower.join("lowlink")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(outside_dir.join("precious")).unwrap(), b"precious\n");
}

// ---- overlayfs's other formats ----

/// Sets an xattr on a path (the test's own files and directories, opened; no symlink involved).
fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let file = fs::File::open(path).unwrap();
    let name_c = CString::new(name).unwrap();
    let set = sys::xattr::fsetxattr(file.as_fd(), &name_c, value, 0);
    assert_eq!(set, Ok(()), "setxattr {name} on {}", path.display());
}

/// The xattr names of a path (a file or directory, opened), space-separated.
fn xattr_names(path: &Path) -> String {
    let file = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sys::xattr::flistxattr(file.as_fd(), &mut buf);
    let n = n.unwrap_or_else(|e| panic!("listxattr {}: errno {e}", path.display()));
    buf.truncate(n);
    buf.split(|&b| b == 0).map(|n| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>().join(" ")
}

#[test]
fn whiteouts_and_opaque_marks_in_every_form() {
    if !runtime::host::is_host_root() {
        skip("trusted.* xattrs and whiteout devices need root");
        return;
    }
    let scratch = Scratch::new("forms");
    let (lower, upper) = (scratch.0.join("lower"), scratch.0.join("upper"));
    mkdir(&lower, 0o755);
    mkdir(&upper, 0o755);
    write(&lower.join("gone.txt"), b"g\n", 0o644);
    write(&lower.join("xgone.txt"), b"x\n", 0o644);
    write(&lower.join("ugone.txt"), b"u\n", 0o644);
    for dir in ["topaque", "uopaque", "xmarked"] {
        mkdir(&lower.join(dir), 0o755);
        write(&lower.join(dir).join("old"), b"o\n", 0o644);
        mkdir(&upper.join(dir), 0o755);
    }
    let mknod = |path: &Path| {
        let status = Command::new("mknod").arg(path).args(["c", "0", "0"]).status().unwrap();
        assert!(status.success());
    };
    mknod(&upper.join("gone.txt")); // whiteout device over a file
    mknod(&upper.join("ghost")); // whiteout over nothing: no change
    write(&upper.join("xgone.txt"), b"", 0o644);
    set_xattr(&upper.join("xgone.txt"), "trusted.overlay.whiteout", b"");
    write(&upper.join("ugone.txt"), b"", 0o644);
    set_xattr(&upper.join("ugone.txt"), "user.overlay.whiteout", b"");
    write(&upper.join("empty_new"), b"", 0o644); // zero size, no mark: a new empty file
    set_xattr(&upper.join("topaque"), "trusted.overlay.opaque", b"y");
    set_xattr(&upper.join("uopaque"), "user.overlay.opaque", b"y");
    set_xattr(&upper.join("xmarked"), "trusted.overlay.opaque", b"x"); // "holds xattr whiteouts", not opaque
    set_xattr(&upper.join("topaque"), "trusted.overlay.origin", b"\x00\xfb"); // bookkeeping: ignored
    let changes = diff_layer(&LayerPaths { upper, lower }, &[]).unwrap();
    assert_eq!(
        lines(&changes),
        [
            "A empty_new - -> file 644",
            "D gone.txt file 644 -> -",
            "D topaque/old file 644 -> -",
            "D ugone.txt file 644 -> -",
            "D uopaque/old file 644 -> -",
            "D xgone.txt file 644 -> -",
        ]
    );
    assert_eq!(find(&changes, "empty_new").new_hash.as_deref(), Some(sha(b"").as_str()));
}

#[test]
fn rootless_userxattr_overlay_marks_opaque_dirs_with_user_xattrs() {
    let Some(mut o) = mounted_overlay("userxattr", "userxattr", populate_workspace) else { return };
    fs::remove_dir_all(o.m("opaque")).unwrap();
    mkdir(&o.m("opaque"), 0o755);
    write(&o.m("opaque/new.txt"), b"new\n", 0o644);
    fs::remove_file(o.m("delete.txt")).unwrap();
    o.unmount();
    let marks = xattr_names(&o.upper.join("opaque"));
    assert!(marks.contains("user.overlay.opaque") && !marks.contains("trusted."), "{marks}");
    assert_eq!(
        lines(&diff_layer(&o.paths(), &[]).unwrap()),
        [
            "D delete.txt file 644 -> -",
            "D opaque/keep.txt file 644 -> -",
            "A opaque/new.txt - -> file 644",
            "D opaque/old1.txt file 644 -> -",
            "D opaque/sub dir 755 -> -",
            "D opaque/sub/x file 644 -> -",
        ]
    );
}

#[test]
fn metacopy_is_read_through_and_redirects_are_refused() {
    let Some(mut o) = mounted_overlay("metacopy", "redirect_dir=on,metacopy=on", |l| {
        write(&l.join("big.txt"), &vec![b'a'; 100_000], 0o644);
        mkdir(&l.join("d"), 0o755);
        write(&l.join("d/f"), b"f\n", 0o644);
    }) else {
        return;
    };
    fs::set_permissions(o.m("big.txt"), Permissions::from_mode(0o755)).unwrap();
    o.unmount();
    let marks = xattr_names(&o.upper.join("big.txt"));
    assert!(marks.contains("trusted.overlay.metacopy"), "the chmod made no metadata-only copy-up: {marks}");
    let changes = diff_layer(&o.paths(), &[]).unwrap();
    assert_eq!(lines(&changes), ["M big.txt file 644 -> file 755"]);
    assert_eq!(changes[0].new_hash.as_deref(), Some(sha(&vec![b'a'; 100_000]).as_str()));
    assert_eq!(changes[0].old_hash, changes[0].new_hash);
    assert_eq!(
        unified_patch(&o.paths(), &changes[0]).unwrap(),
        "diff --git a/big.txt b/big.txt\nold mode 100644\nnew mode 100755\n"
    );

    o.try_mount().unwrap();
    fs::rename(o.m("d"), o.m("d2")).unwrap();
    o.unmount();
    match diff_layer(&o.paths(), &[]) {
        Err(LayerError::Unsupported { what: "redirect", .. }) => {}
        other => panic!("a redirect must be refused, got {other:?}"),
    }
}

// ---- trees deeper than PATH_MAX ----

/// `dir/d/d/.../d/leaf`, `depth` directories deep, made one level at a time from descriptors (the full path is
/// too long for the path-based calls).
fn deep_tree(dir: &Path, depth: usize) {
    let open = |at: RawFd, name: &std::ffi::CStr| {
        sys::fd::openat(at, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0)
            .unwrap_or_else(|e| panic!("openat: errno {e}"))
    };
    let root = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut fd = open(libc::AT_FDCWD, &root);
    for _ in 0..depth {
        assert_eq!(sys::fs::mkdirat(fd.as_raw_fd(), c"d", 0o755), Ok(()));
        // The parent's descriptor is closed as `fd` is replaced.
        fd = open(fd.as_raw_fd(), c"d");
    }
    let leaf = sys::fd::openat(fd.as_raw_fd(), c"leaf", libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
    assert!(leaf.is_ok());
}

#[test]
fn a_hostile_deep_tree_is_refused_by_diff_and_still_discarded() {
    let scratch = Scratch::new("deep");
    let (lower, upper) = (scratch.0.join("lower"), scratch.0.join("upper"));
    mkdir(&lower, 0o755);
    mkdir(&upper, 0o755);
    mkdir(&upper.join("deep"), 0o755);
    mkdir(&upper.join("deeper"), 0o755);
    deep_tree(&upper.join("deep"), 300);
    deep_tree(&upper.join("deeper"), 3000);
    write(&upper.join("shallow.txt"), b"s\n", 0o644);
    let paths = LayerPaths { upper: upper.clone(), lower };
    // Refused with a clear error, not a stack overflow or a run out of descriptors.
    match diff_layer(&paths, &[]) {
        Err(err @ LayerError::TooDeep { .. }) => assert!(err.to_string().contains("airlock discard"), "{err}"),
        other => panic!("expected TooDeep, got {other:?}"),
    }
    assert_eq!(lines(&diff_layer(&paths, &["shallow.txt".into()]).unwrap()), ["A shallow.txt - -> file 644"]);
    assert_eq!(discard_changes(&paths, &["deeper".into()]).unwrap(), ["deeper"]);
    assert!(!upper.join("deeper").exists());
    assert_eq!(discard_changes(&paths, &[]).unwrap(), ["deep", "shallow.txt"]);
    assert_eq!(fs::read_dir(&upper).unwrap().count(), 0);
}

// ---- speed: only the layer is walked ----

#[test]
fn ten_thousand_changed_files_diff_in_well_under_a_second() {
    let scratch = Scratch::new("perf");
    let (lower, upper) = (scratch.0.join("lower"), scratch.0.join("upper"));
    mkdir(&lower, 0o755);
    mkdir(&upper, 0o755);
    // 10,000 new files in 100 directories, straight into the upper directory (no overlay needed).
    for d in 0..100 {
        let dir = upper.join(format!("dir{d:03}"));
        mkdir(&dir, 0o755);
        for f in 0..100 {
            write(&dir.join(format!("file{f:03}.rs")), format!("// file {d}/{f}\nfn main() {{}}\n").as_bytes(), 0o644);
        }
    }
    // A big lower tree beside them costs nothing: it is not walked.
    mkdir(&lower.join("untouched"), 0o755);
    for f in 0..2000 {
        write(&lower.join("untouched").join(format!("f{f}")), b"x\n", 0o644);
    }
    let paths = LayerPaths { upper: upper.clone(), lower: lower.clone() };
    let _ = diff_layer(&paths, &[]).unwrap(); // warm the caches, as a second `airlock diff` would find them
    let started = Instant::now();
    let changes = diff_layer(&paths, &[]).unwrap();
    let added = started.elapsed();
    assert_eq!(changes.len(), 10_100);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Added));

    // The same files in the lower too, each changed in the upper: both sides hashed.
    for d in 0..100 {
        let dir = lower.join(format!("dir{d:03}"));
        mkdir(&dir, 0o755);
        for f in 0..100 {
            write(&dir.join(format!("file{f:03}.rs")), format!("// old {d}/{f}\n").as_bytes(), 0o644);
        }
    }
    let _ = diff_layer(&paths, &[]).unwrap();
    let started = Instant::now();
    let changes = diff_layer(&paths, &[]).unwrap();
    let modified = started.elapsed();
    assert_eq!(changes.len(), 10_000);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Modified));
    println!("diff_layer: 10,000 added files in {added:?}; 10,000 modified files in {modified:?}");
    assert!(added.as_secs_f64() < 1.0, "10,000 added files took {added:?}");
    assert!(modified.as_secs_f64() < 1.0, "10,000 modified files took {modified:?}");
}

// ---- PATH arguments ----

#[test]
fn path_filters_are_workspace_relative_and_cannot_escape() {
    let ws = Path::new("/srv/app");
    let ok = |arg: &str| parse_filter(ws, arg).unwrap();
    assert_eq!(ok("src"), Path::new("src"));
    assert_eq!(ok("./src/"), Path::new("src"));
    assert_eq!(ok("src//lib/./a.rs"), Path::new("src/lib/a.rs"));
    assert_eq!(ok("/srv/app/src/a.rs"), Path::new("src/a.rs"));
    assert_eq!(ok("/srv/app/"), Path::new(""));
    assert_eq!(ok("."), Path::new(""));
    assert_eq!(ok("new\nline"), Path::new("new\nline"));
    for bad in [
        "",
        "..",
        "../app",
        "src/../../etc",
        "src/..",
        "/srv/app/../x",
        "/srv/application",
        "/srv",
        "/etc/passwd",
        "a\0b",
    ] {
        match parse_filter(ws, bad) {
            Err(LayerError::InvalidFilter { path, .. }) => assert_eq!(path, bad),
            other => panic!("{bad:?}: expected InvalidFilter, got {other:?}"),
        }
    }
    let many = |args: &[&str]| parse_filters(ws, &args.iter().map(|a| a.to_string()).collect::<Vec<_>>()).unwrap();
    assert_eq!(many(&["a", "./a", "b"]), [PathBuf::from("a"), PathBuf::from("b")]);
    assert!(many(&["a", "."]).is_empty(), "the whole workspace: no filter");
    assert!(many(&[]).is_empty());
    let err = parse_filter(ws, "../x").unwrap_err().to_string();
    assert!(err.contains("\"../x\"") && err.contains(".."), "{err}");
}

#[test]
fn quoting_keeps_plain_names_and_escapes_the_rest() {
    assert_eq!(quote_path(Path::new("src/main.rs")), "src/main.rs");
    assert_eq!(quote_path(Path::new("with space/ünïcode.txt")), "with space/ünïcode.txt");
    assert_eq!(quote_path(Path::new("tab\there")), "\"tab\\there\"");
    assert_eq!(quote_path(Path::new("quote\"back\\slash")), "\"quote\\\"back\\\\slash\"");
    assert_eq!(quote_path(Path::new("rtl\u{202e}txt.exe")), "\"rtl\\u{202e}txt.exe\"");
    assert_eq!(quote_path(Path::new("c1\u{85}")), "\"c1\\u{85}\"");
    assert_eq!(quote_path(Path::new(OsStr::from_bytes(b"\xff"))), "\"\\xff\"");
    // A name that merely looks like an escape stays distinct from the escaped one.
    assert_ne!(quote_path(Path::new("\\xff")), quote_path(Path::new(OsStr::from_bytes(b"\xff"))));
}

// ---- checkpoints: a frozen layer under a new upper, composed ----

/// Second-stage edits over the first: undoing, redoing and deepening what `change_workspace` did.
fn change_workspace_again(m: &dyn Fn(&str) -> PathBuf) {
    fs::remove_file(m("new.rs")).unwrap();
    write(&m("modify.txt"), b"one\ntwo\nthree\nfour\nfive\n", 0o644);
    fs::remove_dir_all(m("newdir")).unwrap();
    mkdir(&m("newdir"), 0o750);
    write(&m("newdir/again.txt"), b"again\n", 0o644);
    write(&m("delete.txt"), b"back\n", 0o644);
    mkdir(&m("deldir"), 0o755);
    write(&m("deldir/fresh"), b"fresh\n", 0o644);
    fs::remove_file(m("modedir/f")).unwrap();
    write(&m("opaque/stage2.txt"), b"2\n", 0o644);
    fs::remove_file(m("renamed.txt")).unwrap();
    fs::set_permissions(m("chmod.sh"), Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(m("untouched.txt")).unwrap();
    fs::remove_file(m("symlink_new")).unwrap();
    fs::remove_dir_all(m("file2dir")).unwrap();
    write(&m("file2dir"), b"f\n", 0o644);
}

/// Every entry under `dir`: type, mode, and contents or link target.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if meta.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
            } else if meta.is_dir() {
                out.push(format!("{rel}/ {:o}", meta.permissions().mode() & 0o7777));
                walk(root, &p, out);
            } else {
                out.push(format!("{rel} {:o} {:?}", meta.permissions().mode() & 0o7777, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_frozen_layer_and_its_upper_compose_to_what_the_kernel_shows() {
    // The reference: both stages through one overlay, one upper directory.
    let Some(mut single) = mounted_overlay("stack-ref", "", populate_workspace) else { return };
    change_workspace(&single);
    change_workspace_again(&|rel| single.m(rel));
    single.unmount();
    let reference = lines(&diff_layer(&single.paths(), &[]).unwrap());

    // Stage one, frozen (the upper renamed), then stage two over lowerdir=frozen:workspace.
    let Some(mut o) = changed_overlay("stack") else { return };
    let frozen = o.root().join("frozen1");
    fs::rename(&o.upper, &frozen).unwrap();
    fs::create_dir(&o.upper).unwrap();
    let work2 = o.root().join("work2");
    fs::create_dir(&work2).unwrap();
    let options = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        frozen.display(),
        o.lower.display(),
        o.upper.display(),
        work2.display()
    );
    let status = Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options]).arg(&o.merged).status();
    assert!(status.unwrap().success(), "mount -o {options}");
    o.mounted = true;
    change_workspace_again(&|rel| o.m(rel));
    let seen = tree(&o.merged);
    o.unmount();

    let stack = LayerStack {
        upper: o.upper.clone(),
        frozen: vec![frozen.clone()],
        lower: o.lower.clone(),
        scratch: o.root().join("compose"),
    };
    let changes = diff_stack(&stack, &[]).unwrap();
    assert_eq!(lines(&changes), reference, "the stack differs from the same edits in one layer");
    assert!(!o.root().join("compose").exists(), "the composed layer is removed after use");
    for path in ["new.rs", "renamed.txt", "symlink_new", "chmod.sh"] {
        assert!(changes.iter().all(|c| c.path != path), "{path}: created or changed, then undone: no change");
    }
    let patches = patch_stack(&stack, &[find(&changes, "modify.txt").clone()]).unwrap();
    assert!(patches[0].contains("+four") && patches[0].contains("+five"), "{}", patches[0]);

    // Discard drops a path from every layer.
    let dropped = discard_stack(&stack, &["modify.txt".to_string()]).unwrap();
    assert_eq!(dropped, ["modify.txt"]);
    assert!(!o.upper.join("modify.txt").exists() && !frozen.join("modify.txt").exists());
    let after: Vec<String> = reference.iter().filter(|l| !l.contains(" modify.txt ")).cloned().collect();
    assert_eq!(lines(&diff_stack(&stack, &[]).unwrap()), after);

    // Commit applies the composed view: the host then holds what the sandbox saw (but modify.txt).
    match commit_stack(&stack, &[], 0.0, true).unwrap() {
        CommitOutcome::Committed(applied) => assert_eq!(lines(&applied), after),
        CommitOutcome::Refused(c) => panic!("refused: {c:?}"),
    }
    let mut expected = seen;
    for l in expected.iter_mut().filter(|l| l.starts_with("modify.txt ")) {
        *l = format!("modify.txt 644 {:?}", b"one\ntwo\nthree\n");
    }
    assert_eq!(tree(&o.lower), expected);
    let left = diff_stack(&stack, &[]).unwrap();
    assert!(left.is_empty(), "{:?}", lines(&left));
}
