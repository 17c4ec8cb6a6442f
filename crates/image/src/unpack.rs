//! Unpacking one layer's tar stream into a directory, in overlayfs form, without ever writing outside it.
//!
//! Every entry is created relative to a descriptor of its parent directory, which is opened from the layer's
//! root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, and named by a single component: a path with
//! `..` or a leading `/` is refused, and so is a path through a symlink (the layer's directory starts empty, so
//! any symlink on the way is one the layer itself planted: the tar-slip attack). Regular files, directories,
//! symlinks and hard links (to an entry of the same layer) keep their modes, mtimes and `user.*` xattrs, and as
//! root their uids/gids (unprivileged, the caller owns everything). Device nodes and FIFOs are skipped and
//! reported. Whiteouts become overlayfs's: `.wh.NAME` a character device 0/0 named NAME, `.wh..wh..opq` the
//! xattr `user.overlay.opaque=y` on its directory (the form overlayfs reads with `userxattr`).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use tar::EntryType;

/// The xattr overlayfs (mounted with `userxattr`) reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the layer's tar stream")]
    ReadArchive(#[source] io::Error),
    #[error("refused tar entry {path:?}: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error("refused tar entry {path:?}: {kind} entries are not supported")]
    UnsupportedEntry { path: String, kind: String },
    #[error("opening the layer directory {path}")]
    OpenRoot { path: PathBuf, source: io::Error },
    #[error("{op} {path:?} in the layer")]
    CreateEntry { op: &'static str, path: String, source: io::Error },
}

/// What unpacking a layer found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Entries in the tar stream.
    pub entries: u64,
    /// Bytes of regular files written.
    pub size: u64,
    /// Paths skipped (device nodes, FIFOs), as `/path (kind)`.
    pub skipped: Vec<String>,
}

/// How to unpack.
#[derive(Debug, Clone, Copy)]
pub struct UnpackOptions {
    /// Give entries the uids/gids the tar names (needs root); otherwise the caller owns everything.
    pub keep_owners: bool,
}

impl Default for UnpackOptions {
    fn default() -> UnpackOptions {
        UnpackOptions { keep_owners: sys::process::effective_uid() == 0 }
    }
}

/// Unpacks the (uncompressed) tar stream `reader` into `dest`, an existing empty directory.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path, options: UnpackOptions) -> Result<UnpackReport, UnpackError> {
    let root: OwnedFd =
        File::open(dest).map_err(|source| UnpackError::OpenRoot { path: dest.to_path_buf(), source })?.into();
    let mut unpacker = Unpacker { root, options, report: UnpackReport::default(), dirs: Vec::new() };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UnpackError::ReadArchive)? {
        let mut entry = entry.map_err(UnpackError::ReadArchive)?;
        unpacker.report.entries += 1;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish_dirs()?;
    Ok(unpacker.report)
}

/// The metadata of one tar entry that is applied to what it creates.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    options: UnpackOptions,
    report: UnpackReport,
    /// Directories created, with their metadata, applied at the end (deepest first) so that a read-only
    /// directory does not stop its own entries from being created and their creation does not change its mtime.
    dirs: Vec<(Vec<String>, Meta)>,
}

const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

fn errno_io(errno: sys::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn cstr(name: &str, shown: &str) -> Result<CString, UnpackError> {
    CString::new(name).map_err(|_| UnpackError::UnsafePath { path: shown.to_string(), why: "a NUL byte in the name" })
}

/// The components of an entry's path: `.` and empty parts dropped, `..` and absolute paths refused.
pub(crate) fn components(raw: &[u8]) -> Result<Vec<String>, UnpackError> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    let unsafe_path = |why| UnpackError::UnsafePath { path: shown.clone(), why };
    if raw.starts_with(b"/") {
        return Err(unsafe_path("an absolute path"));
    }
    let text = std::str::from_utf8(raw).map_err(|_| unsafe_path("the name is not UTF-8"))?;
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_path("a `..` component")),
            _ if part.contains('\0') => return Err(unsafe_path("a NUL byte in the name")),
            _ => parts.push(part.to_string()),
        }
    }
    Ok(parts)
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let mut parts = components(&raw_path)?;
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            return Ok(());
        }
        let meta = self.meta(entry, &shown)?;
        let Some(leaf) = parts.pop() else {
            // The layer's root itself (`./`): only its metadata applies.
            if kind.is_dir() {
                self.dirs.push((Vec::new(), meta));
            }
            return Ok(());
        };
        let parent = self.open_dir(&parts, true, &shown)?;
        if let Some(target) = leaf.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&parent, target, &shown);
        }
        let name = cstr(&leaf, &shown)?;
        let create = |op, source| UnpackError::CreateEntry { op, path: shown.clone(), source };
        match kind {
            EntryType::Directory => {
                if !self.remove_existing(&parent, &name, true, &shown)? {
                    sys::fs::mkdirat(parent.as_raw_fd(), &name, 0o700).map_err(|e| create("mkdir", errno_io(e)))?;
                }
                parts.push(leaf);
                if !meta.xattrs.is_empty() {
                    let dir = self.open_dir(&parts, false, &shown)?;
                    self.set_xattrs(&dir, &meta.xattrs, &shown)?;
                }
                self.dirs.push((parts, meta));
            }
            EntryType::Regular | EntryType::Continuous => {
                self.remove_existing(&parent, &name, false, &shown)?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                let fd = sys::fd::openat(parent.as_raw_fd(), &name, flags, 0o600)
                    .map_err(|e| create("create", errno_io(e)))?;
                let mut file = File::from(fd);
                let written = io::copy(entry, &mut file).map_err(UnpackError::ReadArchive)?;
                self.report.size += written;
                if self.options.keep_owners {
                    sys::fd::fchown(file.as_raw_fd(), meta.uid, meta.gid).map_err(|e| create("chown", errno_io(e)))?;
                }
                sys::fs::fchmod(file.as_fd(), meta.mode & 0o7777).map_err(|e| create("chmod", errno_io(e)))?;
                self.set_xattrs(&file.into(), &meta.xattrs, &shown)?;
                self.set_times(&parent, &name, &meta, &shown)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or(UnpackError::UnsafePath { path: shown.clone(), why: "a symlink without a target" })?;
                let target = CString::new(target.into_owned())
                    .map_err(|_| UnpackError::UnsafePath { path: shown.clone(), why: "a NUL byte in the target" })?;
                self.remove_existing(&parent, &name, false, &shown)?;
                sys::fd::symlinkat(&target, parent.as_raw_fd(), &name).map_err(|e| create("symlink", errno_io(e)))?;
                if self.options.keep_owners {
                    sys::fs::fchownat(parent.as_raw_fd(), &name, meta.uid, meta.gid, libc::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| create("chown", errno_io(e)))?;
                }
                self.set_times(&parent, &name, &meta, &shown)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or(UnpackError::UnsafePath { path: shown.clone(), why: "a hard link without a target" })?
                    .into_owned();
                let mut target_parts = components(&target)?;
                let Some(target_leaf) = target_parts.pop() else {
                    return Err(UnpackError::UnsafePath { path: shown, why: "a hard link to the layer's root" });
                };
                if target_parts == parts && target_leaf == leaf {
                    return Ok(());
                }
                let target_dir = self.open_dir(&target_parts, false, &shown)?;
                let target_name = cstr(&target_leaf, &shown)?;
                let st = sys::fs::fstatat(target_dir.as_raw_fd(), &target_name, libc::AT_SYMLINK_NOFOLLOW).map_err(
                    |_| UnpackError::UnsafePath {
                        path: shown.clone(),
                        why: "a hard link to an entry this layer does not have",
                    },
                )?;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Err(UnpackError::UnsafePath { path: shown, why: "a hard link to a directory" });
                }
                self.remove_existing(&parent, &name, false, &shown)?;
                sys::fs::linkat(target_dir.as_raw_fd(), &target_name, parent.as_raw_fd(), &name, 0)
                    .map_err(|e| create("link", errno_io(e)))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let what = match kind {
                    EntryType::Char => "character device",
                    EntryType::Block => "block device",
                    _ => "FIFO",
                };
                let mut path = parts;
                path.push(leaf);
                self.report.skipped.push(format!("/{} ({what})", path.join("/")));
            }
            other => {
                return Err(UnpackError::UnsupportedEntry { path: shown, kind: format!("{other:?}") });
            }
        }
        Ok(())
    }

    /// The entry's mode, owner, mtime and the xattrs worth keeping (`user.*`, except overlayfs's own marks,
    /// which only whiteouts make).
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let bad = |why| UnpackError::UnsafePath { path: shown.to_string(), why };
        let mode = header.mode().map_err(|_| bad("an unreadable mode"))?;
        let mut uid = header.uid().map_err(|_| bad("an unreadable uid"))?;
        let mut gid = header.gid().map_err(|_| bad("an unreadable gid"))?;
        let mut mtime = (header.mtime().map_err(|_| bad("an unreadable mtime"))? as i64, 0i64);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().map_err(UnpackError::ReadArchive)? {
            for ext in pax {
                let ext = ext.map_err(UnpackError::ReadArchive)?;
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let text = std::str::from_utf8(value).unwrap_or("");
                match key {
                    "uid" => uid = text.parse().map_err(|_| bad("an unreadable PAX uid"))?,
                    "gid" => gid = text.parse().map_err(|_| bad("an unreadable PAX gid"))?,
                    "mtime" => mtime = parse_pax_time(text).ok_or(bad("an unreadable PAX mtime"))?,
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            if name.starts_with("user.") && !name.starts_with("user.overlay.") {
                                xattrs.push((name.to_string(), value.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        let uid = u32::try_from(uid).map_err(|_| bad("a uid out of range"))?;
        let gid = u32::try_from(gid).map_err(|_| bad("a gid out of range"))?;
        Ok(Meta { mode, uid, gid, mtime, xattrs })
    }

    /// The directory at `parts` under the root, opened beneath it without following any symlink; missing ones
    /// are created (0755) when `create`.
    fn open_dir(&self, parts: &[String], create: bool, shown: &str) -> Result<OwnedFd, UnpackError> {
        // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS refuses a symlink anywhere, the last component included (ELOOP).
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
        let refuse = |errno: sys::Errno| match errno {
            libc::ELOOP => UnpackError::UnsafePath { path: shown.to_string(), why: "a path through a symlink" },
            libc::ENOTDIR => UnpackError::UnsafePath { path: shown.to_string(), why: "a path through a non-directory" },
            libc::EXDEV => UnpackError::UnsafePath { path: shown.to_string(), why: "a path outside the layer" },
            other => UnpackError::CreateEntry {
                op: "open the directory of",
                path: shown.to_string(),
                source: errno_io(other),
            },
        };
        let joined = if parts.is_empty() { ".".to_string() } else { parts.join("/") };
        match sys::fd::openat2(self.root.as_raw_fd(), &cstr(&joined, shown)?, flags, resolve) {
            Ok(fd) => return Ok(fd),
            Err(libc::ENOENT) if create => {}
            Err(libc::ENOENT) => {
                return Err(UnpackError::UnsafePath { path: shown.to_string(), why: "a path this layer does not have" })
            }
            Err(errno) => return Err(refuse(errno)),
        }
        let mut dir = sys::fd::openat2(self.root.as_raw_fd(), c".", flags, resolve).map_err(refuse)?;
        for part in parts {
            let name = cstr(part, shown)?;
            let next = match sys::fd::openat2(dir.as_raw_fd(), &name, flags, resolve) {
                Err(libc::ENOENT) => {
                    sys::fs::mkdirat(dir.as_raw_fd(), &name, 0o755).map_err(|e| UnpackError::CreateEntry {
                        op: "mkdir the parent of",
                        path: shown.to_string(),
                        source: errno_io(e),
                    })?;
                    sys::fd::openat2(dir.as_raw_fd(), &name, flags, resolve)
                }
                other => other,
            };
            dir = next.map_err(refuse)?;
        }
        Ok(dir)
    }

    /// Clears `name` in `parent` for a new entry. With `keep_dir`, an existing directory stays (a directory
    /// entry then only updates its metadata): the return value says whether one did.
    fn remove_existing(
        &self,
        parent: &OwnedFd,
        name: &CString,
        keep_dir: bool,
        shown: &str,
    ) -> Result<bool, UnpackError> {
        let st = match sys::fs::fstatat(parent.as_raw_fd(), name, libc::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(libc::ENOENT) => return Ok(false),
            Err(e) => {
                return Err(UnpackError::CreateEntry { op: "stat", path: shown.to_string(), source: errno_io(e) })
            }
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir && keep_dir {
            return Ok(true);
        }
        let removed = if is_dir {
            match sys::fs::unlinkat(parent.as_raw_fd(), name, libc::AT_REMOVEDIR) {
                Err(libc::ENOTEMPTY) => {
                    // A directory this layer filled, replaced by a non-directory later in the same layer.
                    return Err(UnpackError::UnsafePath {
                        path: shown.to_string(),
                        why: "replaces a non-empty directory of the same layer",
                    });
                }
                other => other,
            }
        } else {
            sys::fs::unlinkat(parent.as_raw_fd(), name, 0)
        };
        removed.map_err(|e| UnpackError::CreateEntry {
            op: "replace",
            path: shown.to_string(),
            source: errno_io(e),
        })?;
        Ok(false)
    }

    /// `.wh.NAME`: a character device 0/0 named NAME (unless this layer itself has NAME, which a whiteout
    /// never hides); `.wh..wh..opq`: the parent directory made opaque; other `.wh..wh.` names (aufs's own) are
    /// dropped.
    fn whiteout(&mut self, parent: &OwnedFd, target: &str, shown: &str) -> Result<(), UnpackError> {
        let fail = |op, errno| UnpackError::CreateEntry { op, path: shown.to_string(), source: errno_io(errno) };
        if format!("{WHITEOUT_PREFIX}{target}") == OPAQUE_MARKER {
            return sys::xattr::fsetxattr(parent.as_fd(), &cstr(OPAQUE_XATTR, shown)?, b"y", 0)
                .map_err(|e| fail("set the opaque xattr for", e));
        }
        if target.starts_with(WHITEOUT_PREFIX) {
            return Ok(());
        }
        if target.is_empty() || target == "." || target == ".." {
            return Err(UnpackError::UnsafePath { path: shown.to_string(), why: "a whiteout of no name" });
        }
        let name = cstr(target, shown)?;
        match sys::fs::fstatat(parent.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW) {
            Err(libc::ENOENT) => {}
            Ok(_) => return Ok(()),
            Err(e) => return Err(fail("stat", e)),
        }
        sys::fs::mknodat(parent.as_raw_fd(), &name, libc::S_IFCHR, 0, 0).map_err(|e| fail("make the whiteout", e))
    }

    fn set_xattrs(&self, fd: &OwnedFd, xattrs: &[(String, Vec<u8>)], shown: &str) -> Result<(), UnpackError> {
        for (name, value) in xattrs {
            sys::xattr::fsetxattr(fd.as_fd(), &cstr(name, shown)?, value, 0).map_err(|e| UnpackError::CreateEntry {
                op: "set an xattr on",
                path: shown.to_string(),
                source: errno_io(e),
            })?;
        }
        Ok(())
    }

    fn set_times(&self, dir: &OwnedFd, name: &CString, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        sys::fs::set_times_nofollow(dir.as_raw_fd(), name, meta.mtime, meta.mtime).map_err(|e| {
            UnpackError::CreateEntry { op: "set the times of", path: shown.to_string(), source: errno_io(e) }
        })
    }

    /// The directories' owners, modes and mtimes, deepest (last created) first.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for (parts, meta) in dirs.iter().rev() {
            let shown = if parts.is_empty() { ".".to_string() } else { parts.join("/") };
            let dir = self.open_dir(parts, false, &shown)?;
            let fail = |op, errno| UnpackError::CreateEntry { op, path: shown.clone(), source: errno_io(errno) };
            if self.options.keep_owners {
                sys::fd::fchown(dir.as_raw_fd(), meta.uid, meta.gid).map_err(|e| fail("chown", e))?;
            }
            sys::fs::fchmod(dir.as_fd(), meta.mode & 0o7777).map_err(|e| fail("chmod", e))?;
            self.set_times(&dir, &CString::from(c"."), meta, &shown)?;
        }
        Ok(())
    }
}

/// A PAX time, `SECONDS[.FRACTION]`: seconds and nanoseconds.
fn parse_pax_time(text: &str) -> Option<(i64, i64)> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() { 0 } else { format!("{digits:0<9}").parse().ok()? };
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;
    use crate::testutil::{scratch, tar_of, Item};

    /// A layer unpacked into `root` of a scratch directory (removed with it).
    struct Unpacked {
        root: PathBuf,
        _dir: crate::testutil::Scratch,
    }

    impl std::ops::Deref for Unpacked {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.root
        }
    }

    fn unpack(items: &[Item<'_>]) -> (Unpacked, Result<UnpackReport, UnpackError>) {
        let dir = scratch("unpack");
        let root = dir.join("root");
        std::fs::create_dir(&root).unwrap();
        let result = unpack_layer(&tar_of(items)[..], &root, UnpackOptions::default());
        (Unpacked { root, _dir: dir }, result)
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        let file = File::open(path).unwrap();
        let mut buf = [0u8; 64];
        let name = CString::new(name).unwrap();
        sys::xattr::fgetxattr(file.as_fd(), &name, &mut buf).ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn entries_land_in_overlay_form() {
        let (root, result) = unpack(&[
            Item::Dir("./", 0o755),
            Item::Dir("etc/", 0o750),
            Item::File("etc/f", 0o640, b"data"),
            Item::Link("etc/hard", "etc/f"),
            Item::Symlink("etc/link", "/etc/f"),
            Item::File("etc/.wh.gone", 0o644, b""),
            Item::Dir("opaque/", 0o755),
            Item::File("opaque/.wh..wh..opq", 0o644, b""),
            Item::File("deep/implicit/file", 0o600, b"x"),
            Item::Fifo("etc/fifo"),
            Item::Pax(
                "etc/x",
                vec![
                    ("SCHILY.xattr.user.kept", b"1"),
                    ("SCHILY.xattr.trusted.dropped", b"1"),
                    ("SCHILY.xattr.user.overlay.opaque", b"y"),
                ],
                b"",
            ),
        ]);
        let report = result.unwrap();
        assert_eq!(report.skipped, vec!["/etc/fifo (FIFO)".to_string()]);
        let f = std::fs::symlink_metadata(root.join("etc/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o640);
        assert_eq!(f.mtime(), 1_600_000_000);
        assert_eq!(f.nlink(), 2);
        assert_eq!(std::fs::symlink_metadata(root.join("etc/hard")).unwrap().ino(), f.ino());
        assert_eq!(std::fs::read_link(root.join("etc/link")).unwrap(), PathBuf::from("/etc/f"));
        let wh = std::fs::symlink_metadata(root.join("etc/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert_eq!(xattr(&root.join("opaque"), OPAQUE_XATTR), Some(b"y".to_vec()));
        assert!(!root.join("opaque/.wh..wh..opq").exists());
        assert_eq!(std::fs::symlink_metadata(root.join("etc")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(std::fs::read(root.join("deep/implicit/file")).unwrap(), b"x");
        assert!(!root.join("etc/fifo").exists());
        assert_eq!(xattr(&root.join("etc/x"), "user.kept"), Some(b"1".to_vec()));
        assert_eq!(xattr(&root.join("etc/x"), "user.overlay.opaque"), None);
    }

    #[test]
    fn a_whiteout_never_hides_its_own_layers_entry() {
        let (root, result) = unpack(&[Item::File("a", 0o644, b"mine"), Item::File(".wh.a", 0o644, b"")]);
        result.unwrap();
        assert_eq!(std::fs::read(root.join("a")).unwrap(), b"mine");
    }

    #[test]
    fn hostile_paths_are_refused_and_nothing_leaves_the_layer() {
        let outside = scratch("outside");
        let target = outside.to_str().unwrap().to_string();
        let escape = "../escape-unit";
        let cases: Vec<(Vec<Item<'_>>, &str)> = vec![
            (vec![Item::File(escape, 0o644, b"x")], "`..`"),
            (vec![Item::File("a/../../escape-unit", 0o644, b"x")], "`..`"),
            (vec![Item::File("/abs-unit", 0o644, b"x")], "absolute"),
            (vec![Item::Symlink("evil", &target), Item::File("evil/x", 0o644, b"x")], "symlink"),
            (vec![Item::Symlink("evil", &target), Item::Dir("evil/d/", 0o755)], "symlink"),
            (vec![Item::Symlink("evil", "/etc"), Item::Link("h", "evil/passwd")], "symlink"),
            (vec![Item::Link("h", "../../etc/passwd")], "`..`"),
            (vec![Item::Link("h", "/etc/passwd")], "absolute"),
            (vec![Item::Symlink("evil", &target), Item::File("evil/.wh.x", 0o644, b"")], "symlink"),
        ];
        for (items, why) in cases {
            let (root, result) = unpack(&items);
            let err = result.expect_err("a hostile layer must be refused").to_string();
            assert!(err.contains(why), "{err} should say {why}");
            assert!(!root.parent().unwrap().join("escape-unit").exists());
            assert!(!Path::new("/abs-unit").exists());
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the symlink");
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let tar = tar_of(&[Item::File("f", 0o644, &[7u8; 4096])]);
        let dir = scratch("trunc");
        let err = unpack_layer(&tar[..1000], &dir, UnpackOptions::default()).unwrap_err();
        assert!(matches!(err, UnpackError::ReadArchive(_)), "{err}");
    }
}
