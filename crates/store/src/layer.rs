//! The copy-on-write workspace's layer: what a sandbox changed, read from the overlayfs upper directory alone, and
//! how to drop those changes.
//!
//! A `cow` workspace is an overlay whose lower directory is the host workspace and whose upper directory airlock
//! keeps. Everything the sandbox changed is in the upper directory, in overlayfs's own format:
//! - a new or changed file, directory, symlink or special file is a real entry (a copy-up whose content and mode
//!   are those of the lower entry, after a `touch` say, is no change);
//! - a deleted entry is a *whiteout*: a character device 0:0, or (newer kernels) a zero-size regular file with the
//!   xattr `trusted.overlay.whiteout` / `user.overlay.whiteout`;
//! - a directory that replaces the lower one wholesale (`rm -rf d; mkdir d`) is *opaque*: `trusted.overlay.opaque`
//!   or `user.overlay.opaque` is `y` (the `user.` names when the overlay is mounted with `userxattr`, rootless);
//! - `overlay.origin`, `impure` and `nlink` are the kernel's bookkeeping and ignored. A `metacopy` file (a
//!   metadata-only copy-up) has its data in the lower file at the same path. A `redirect` (a directory renamed
//!   under `redirect_dir=on`) is refused with an error; airlock's overlay is mounted with `userxattr`, which
//!   turns both redirects and metacopy off, so only a layer made by some other mount holds one.
//!
//! Only the upper directory is walked, the lower looked up beside it name by name, so a diff costs what the changes
//! cost, not what the workspace does. Neither tree's symlinks are ever followed: every entry is reached from its
//! parent directory's descriptor by one name, with `O_NOFOLLOW` or `AT_SYMLINK_NOFOLLOW`, so a link the sandbox
//! planted (to `/etc/passwd`, to `../../outside`) is read as a link, never through, and a directory swapped for a
//! link while airlock reads cannot lead it elsewhere.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

mod commit;
pub mod disk;
mod exclude;
pub mod live;
pub mod live_vm;
mod stack;
pub use commit::{commit_changes, CommitError, CommitOutcome};
pub use exclude::{check_patterns, Exclude, Excluded};
pub use stack::{
    clear_dir, clone_layer, commit_stack, commit_stack_excluding, compose, count_entries, diff_stack, discard_stack,
    patch_stack, remove_path, ComposedLayer, LayerStack,
};

/// Where a sandbox's workspace layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPaths {
    /// The overlay's upper directory: everything the sandbox changed.
    pub upper: PathBuf,
    /// The overlay's lower directory: the host workspace, as it is shown inside the sandbox (same absolute path).
    pub lower: PathBuf,
}

/// What happened to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    /// Still there, as another kind of entry (a file that became a directory, say).
    TypeChanged,
}

impl ChangeKind {
    /// The stable name in `airlock diff --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::TypeChanged => "type_changed",
        }
    }
}

/// What kind of entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryType {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device node.
    Other,
}

impl EntryType {
    /// The stable name in `airlock diff --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::File => "file",
            EntryType::Dir => "dir",
            EntryType::Symlink => "symlink",
            EntryType::Other => "other",
        }
    }
}

/// One changed path. `old_*` describe the entry in the host workspace, the others the sandbox's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Relative to the workspace, `/`-separated, no leading `/`. Lossy for a name that is not UTF-8: use
    /// `raw_path` to act on the entry, and [`quote_path`] to show it.
    pub path: String,
    /// The exact relative path, bytes as they are on disk.
    pub raw_path: PathBuf,
    pub kind: ChangeKind,
    pub old_type: Option<EntryType>,
    pub new_type: Option<EntryType>,
    /// Permission bits (`st_mode & 0o7777`) of the new entry; `None` for a symlink (links have no mode).
    pub mode: Option<u32>,
    pub old_mode: Option<u32>,
    /// Bytes of the new file, or of the new symlink's target.
    pub size: Option<u64>,
    /// SHA-256 (lowercase hex) of the old file's contents, or of the old symlink's target.
    pub old_hash: Option<String>,
    /// SHA-256 (lowercase hex) of the new file's contents, or of the new symlink's target.
    pub new_hash: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A `PATH` argument that does not name a place inside the workspace.
    #[error("invalid path {path:?}: {reason}")]
    InvalidFilter { path: String, reason: String },
    /// An `--exclude` pattern that is not one gitignore line.
    #[error("invalid exclude pattern {pattern:?}: {reason}")]
    InvalidExclude { pattern: String, reason: String },
    /// Cannot open a directory of the layer or of the workspace.
    #[error("cannot open directory {path}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot list a directory's entries.
    #[error("cannot list directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot stat an entry.
    #[error("cannot stat {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot open or read a file's contents.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot read a symlink's target.
    #[error("cannot read symlink {path}")]
    ReadLink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot read an entry's extended attributes (where overlayfs marks whiteouts and opaque directories).
    #[error("cannot read the extended attributes of {path}")]
    Xattr {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot remove an entry of the layer.
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Directories nested deeper than a diff reads (each level holds two descriptors and a stack frame).
    #[error("cannot read {path}: directories nested more than {MAX_DEPTH} deep (airlock discard can still drop them)")]
    TooDeep { path: PathBuf },
    /// An entry was replaced between looking at it and opening it.
    #[error("{path} changed while airlock was reading it (is something still writing to the layer?)")]
    Raced { path: PathBuf },
    /// An overlayfs feature this module does not interpret; reading on would report wrong changes.
    #[error("cannot read {path}: it is an overlayfs {what}, which airlock does not read (a layer airlock mounted with userxattr holds none)")]
    Unsupported { path: PathBuf, what: &'static str },
    /// Cannot build the composed view of a sandbox's checkpointed layers.
    #[error("cannot compose the checkpoint layers at {path}")]
    Compose {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A change that cannot be dropped by itself: an ancestor replaced the host's directory as a whole.
    #[error("cannot discard {path} alone: the sandbox replaced {whole} as a whole (discard {whole} instead)")]
    DiscardPartOf { path: PathBuf, whole: PathBuf },
}

/// Every change in the layer, at or under the `filter` paths (all when empty), sorted by path (a directory right
/// before what it holds).
///
/// A directory deleted, replaced wholesale (opaque) or replaced by another kind of entry is listed with everything
/// it held, each entry `Deleted`; a new directory with everything it holds, each entry `Added`.
pub fn diff_layer(paths: &LayerPaths, filter: &[String]) -> Result<Vec<Change>, LayerError> {
    let filters = parse_filters(&paths.lower, filter)?;
    diff_filtered(paths, &filters)
}

/// As [`diff_layer`], less what `exclude` leaves out (returned beside, with why).
pub fn diff_excluding(
    paths: &LayerPaths,
    filter: &[String],
    exclude: &Exclude,
) -> Result<(Vec<Change>, Excluded), LayerError> {
    check_patterns(&exclude.patterns)?;
    let filters = parse_filters(&paths.lower, filter)?;
    let changes = diff_filtered(paths, &filters)?;
    if exclude.is_empty() {
        return Ok((changes, Excluded::default()));
    }
    // Which ignore files the sandbox wrote or deleted is read from every change, not only those under the PATHs.
    let all = if filters.is_empty() || !exclude.gitignore { None } else { Some(diff_filtered(paths, &[])?) };
    let all = all.as_deref().unwrap_or(&changes);
    exclude::split(paths, changes.clone(), all, exclude)
}

/// Drops the changes at or under the `filter` paths (all when empty) from the layer, so the workspace shows the host
/// directory there again; returns the paths of the changes dropped (as [`diff_layer`] listed them).
///
/// Nothing may have the overlay mounted meanwhile: overlayfs does not allow its layers to change under it.
///
/// Each `PATH`'s entry is removed from the upper directory (a directory with all it holds, a symlink itself and
/// never what it points to, a whiteout so the host's entry shows again). A change under a directory the sandbox
/// deleted or replaced as a whole cannot be dropped alone when the host has something at its path (removing the
/// sandbox's entry would not bring the host's back): that is an error, and nothing is removed.
pub fn discard_changes(paths: &LayerPaths, filter: &[String]) -> Result<Vec<String>, LayerError> {
    let filters = parse_filters(&paths.lower, filter)?;
    // The changes to report. A layer too deep to list can still be discarded: its removal has no depth limit,
    // and what is reported then is the paths removed.
    let changes = match diff_filtered(paths, &filters) {
        Ok(changes) if changes.is_empty() => return Ok(Vec::new()),
        Ok(changes) => Some(changes),
        Err(LayerError::TooDeep { .. }) => None,
        Err(e) => return Err(e),
    };
    let reported = |removed: Vec<String>| match &changes {
        Some(changes) => changes.iter().map(|c| c.path.clone()).collect(),
        None => removed,
    };
    let upper = open_root(&paths.upper)?;
    if filters.is_empty() {
        let mut names =
            list_dir(upper.as_fd()).map_err(|source| LayerError::ReadDir { path: paths.upper.clone(), source })?;
        names.sort();
        for name in &names {
            remove_tree_at(upper.as_fd(), &cstring(name), &paths.upper.join(name))?;
        }
        return Ok(reported(names.iter().map(|n| n.to_string_lossy().into_owned()).collect()));
    }
    // Check every PATH first, remove after: one that cannot be discarded fails the call with nothing removed.
    let lower = open_root(&paths.lower)?;
    let mut targets = Vec::new();
    for filter in &filters {
        if filters.iter().any(|other| other != filter && filter.starts_with(other)) {
            continue; // inside another PATH, which goes as a whole
        }
        if changes.as_ref().is_some_and(|changes| !changes.iter().any(|c| c.raw_path.starts_with(filter))) {
            continue;
        }
        let located = locate_in_upper(paths, upper.as_fd(), filter)?;
        if let Some(whole) = &located.hidden_by {
            if lower_has(paths, lower.as_fd(), filter)? {
                return Err(LayerError::DiscardPartOf { path: filter.clone(), whole: whole.clone() });
            }
        }
        if let Some(parent) = located.parent {
            targets.push((parent, filter));
        }
    }
    let mut removed = Vec::new();
    for (parent, filter) in targets {
        let name = filter.file_name().map(cstring).unwrap_or_default();
        remove_tree_at(parent.as_fd(), &name, &paths.upper.join(filter))?;
        removed.push(filter.to_string_lossy().into_owned());
    }
    Ok(reported(removed))
}

/// A change as a patch: a git-style unified diff (`a/` and `b/` headers) for a text file; for a binary file
/// `Binary files a/X and b/X differ`, and for a directory, symlink, special file or type change a one-line note.
pub fn unified_patch(paths: &LayerPaths, change: &Change) -> Result<String, LayerError> {
    let raw = &change.raw_path;
    let shown = quote_path(raw);
    let is_file = |t: Option<EntryType>| matches!(t, None | Some(EntryType::File));
    if change.kind == ChangeKind::TypeChanged || !is_file(change.old_type) || !is_file(change.new_type) {
        return Ok(note(paths, change, &shown));
    }
    let a = quote_path(&Path::new("a").join(raw));
    let b = quote_path(&Path::new("b").join(raw));
    let mut out = format!("diff --git {a} {b}\n");
    let git_mode = |mode: Option<u32>| format!("{:06o}", 0o100000 | mode.unwrap_or(0o644));
    match change.kind {
        ChangeKind::Added => out.push_str(&format!("new file mode {}\n", git_mode(change.mode))),
        ChangeKind::Deleted => out.push_str(&format!("deleted file mode {}\n", git_mode(change.old_mode))),
        _ if change.old_mode != change.mode => {
            out.push_str(&format!("old mode {}\nnew mode {}\n", git_mode(change.old_mode), git_mode(change.mode)))
        }
        _ => {}
    }
    if change.old_hash.is_some() && change.old_hash == change.new_hash {
        return Ok(out); // the mode alone changed
    }
    let old = match change.old_type {
        Some(_) => read_beneath(&paths.lower, raw)?,
        None => Some(Vec::new()),
    };
    let new = match change.new_type {
        Some(_) => read_beneath(&paths.upper, raw)?,
        None => Some(Vec::new()),
    };
    let from = if change.old_type.is_some() { a } else { "/dev/null".to_string() };
    let to = if change.new_type.is_some() { b } else { "/dev/null".to_string() };
    let (Some(old), Some(new)) = (old, new) else {
        out.push_str(&format!("Files {from} and {to} differ (too large to show)\n"));
        return Ok(out);
    };
    match (text(&old), text(&new)) {
        (Some(old), Some(new)) => {
            let diff = similar::TextDiff::configure()
                .algorithm(similar::Algorithm::Myers)
                .timeout(PATCH_DIFF_TIMEOUT)
                .diff_lines(old, new);
            out.push_str(&diff.unified_diff().context_radius(3).header(&from, &to).to_string());
        }
        _ => {
            out.push_str(&format!("Binary files {from} and {to} differ\n"));
        }
    }
    Ok(out)
}

/// A path for people to read: as it is when plain, else in double quotes with C-style escapes (`\n`, `\t`, `\"`,
/// `\\`, `\x1b`, `\xff` for a byte that is not UTF-8, `\u{202e}` for invisible and direction-changing
/// characters). A hostile name stays on one line, cannot drive the terminal, and no two names show the same.
pub fn quote_path(raw: &Path) -> String {
    let bytes = raw.as_os_str().as_bytes();
    let plain = std::str::from_utf8(bytes).is_ok_and(|s| !s.chars().any(needs_escape));
    if plain {
        return raw.to_string_lossy().into_owned();
    }
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

/// Turns one `PATH` argument into a path relative to the workspace: relative paths are taken as they are,
/// absolute ones must lie under the workspace. `.` components are dropped; `..` is refused (it could leave the
/// workspace), as is an empty argument. The workspace itself is the empty path (everything).
pub fn parse_filter(workspace: &Path, arg: &str) -> Result<PathBuf, LayerError> {
    let invalid = |reason: String| LayerError::InvalidFilter { path: arg.to_string(), reason };
    if arg.is_empty() {
        return Err(invalid("empty path".into()));
    }
    if arg.contains('\0') {
        return Err(invalid("contains a NUL byte".into()));
    }
    let path = Path::new(arg);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid("`..` is not allowed: name a path inside the workspace".into()));
    }
    let relative = if path.is_absolute() {
        path.strip_prefix(workspace).map_err(|_| invalid(format!("not under the workspace {}", workspace.display())))?
    } else {
        path
    };
    let mut out = PathBuf::new();
    for component in relative.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => {
                return Err(invalid("not a path inside the workspace".into()))
            }
        }
    }
    Ok(out)
}

/// All `PATH` arguments, parsed; empty when one of them is the whole workspace (or there are none).
pub fn parse_filters(workspace: &Path, args: &[String]) -> Result<Vec<PathBuf>, LayerError> {
    let mut filters = Vec::new();
    for arg in args {
        let filter = parse_filter(workspace, arg)?;
        if filter.as_os_str().is_empty() {
            return Ok(Vec::new());
        }
        if !filters.contains(&filter) {
            filters.push(filter);
        }
    }
    Ok(filters)
}

/// How deep a diff follows nested directories. Far beyond real trees; it keeps a hostile one from exhausting
/// the descriptors (two per level) or the stack.
pub const MAX_DEPTH: usize = 256;
/// How many directories a removal keeps open at once; deeper ones are opened again from their ancestors.
const REMOVE_OPEN_DIRS: usize = 64;
/// How long `similar` may look for the smallest diff of one file before it settles for a larger one.
const PATCH_DIFF_TIMEOUT: Duration = Duration::from_secs(2);
/// Files larger than this are not read whole for `--patch`.
const PATCH_MAX_FILE: u64 = 64 << 20;
/// How much of a file is looked at for a NUL byte, the sign of binary content (as git does).
const BINARY_SNIFF: usize = 8000;

const OPAQUE_XATTRS: [&[u8]; 2] = [b"trusted.overlay.opaque", b"user.overlay.opaque"];
const WHITEOUT_XATTRS: [&[u8]; 2] = [b"trusted.overlay.whiteout", b"user.overlay.whiteout"];
const METACOPY_XATTRS: [&[u8]; 2] = [b"trusted.overlay.metacopy", b"user.overlay.metacopy"];
const REDIRECT_XATTRS: [&[u8]; 2] = [b"trusted.overlay.redirect", b"user.overlay.redirect"];

fn diff_filtered(paths: &LayerPaths, filters: &[PathBuf]) -> Result<Vec<Change>, LayerError> {
    let upper = open_root(&paths.upper)?;
    let lower = open_root(&paths.lower)?;
    let marks =
        overlay_marks(upper.as_fd()).map_err(|source| LayerError::Xattr { path: paths.upper.clone(), source })?;
    let mut walk = Walk { paths, filters, changes: Vec::new(), buf: vec![0; 64 << 10] };
    walk.upper_dir_entries(upper.as_fd(), Some(lower.as_fd()), Path::new(""), marks.opaque)?;
    let mut changes = walk.changes;
    changes.sort_by(|a, b| a.raw_path.cmp(&b.raw_path));
    Ok(changes)
}

/// Which part of the tree the `PATH` filters select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// At or under a filter: reported.
    In,
    /// Above a filter: walked through, not reported.
    Above,
    /// Elsewhere: skipped.
    Out,
}

fn scope(filters: &[PathBuf], path: &Path) -> Scope {
    if filters.is_empty() || filters.iter().any(|f| path.starts_with(f)) {
        Scope::In
    } else if filters.iter().any(|f| f.starts_with(path)) {
        Scope::Above
    } else {
        Scope::Out
    }
}

/// Which tree an entry is in (for error messages).
#[derive(Debug, Clone, Copy)]
enum Tree {
    Upper,
    Lower,
}

/// One side of a change.
#[derive(Debug, Clone)]
struct Side {
    ty: EntryType,
    mode: Option<u32>,
    size: Option<u64>,
    hash: Option<String>,
}

/// What `lstat` says about an entry, reduced to what a diff needs.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    size: u64,
    rdev: u64,
    dev: u64,
    ino: u64,
    uid: u32,
    gid: u32,
    /// Last status change (`st_ctime`), seconds and nanoseconds.
    ctime: (i64, i64),
}

impl Meta {
    fn from_stat(st: &libc::stat) -> Meta {
        Meta {
            mode: st.st_mode,
            size: u64::try_from(st.st_size).unwrap_or(0),
            rdev: st.st_rdev,
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
            gid: st.st_gid,
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    fn entry_type(&self) -> EntryType {
        match self.mode & libc::S_IFMT {
            libc::S_IFREG => EntryType::File,
            libc::S_IFDIR => EntryType::Dir,
            libc::S_IFLNK => EntryType::Symlink,
            _ => EntryType::Other,
        }
    }

    fn perm(&self) -> u32 {
        self.mode & 0o7777
    }

    /// overlayfs's classic whiteout: a character device 0:0.
    fn is_device_whiteout(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFCHR && self.rdev == 0
    }

    fn same_inode(&self, other: &Meta) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// The overlayfs xattrs an upper entry carries.
#[derive(Debug, Default, Clone, Copy)]
struct OverlayMarks {
    opaque: bool,
    whiteout: bool,
    metacopy: bool,
    redirect: bool,
}

/// One name of an upper directory, as the walk meets it.
#[derive(Debug, Clone, Copy)]
struct Entry<'a> {
    /// The upper directory holding it.
    upper: BorrowedFd<'a>,
    /// The lower directory at the same place, when the lower has a directory there.
    lower: Option<BorrowedFd<'a>>,
    name: &'a CStr,
    /// Relative to the workspace.
    path: &'a Path,
    /// The upper entry's `lstat`.
    um: Meta,
    /// The lower entry's `lstat`, when there is one.
    lm: Option<Meta>,
}

impl<'a> Entry<'a> {
    /// The lower directory and the lower entry's `lstat`, when the lower has an entry at this path.
    fn lower_entry(&self) -> Option<(BorrowedFd<'a>, Meta)> {
        self.lower.zip(self.lm)
    }
}

/// The walk over the upper directory, collecting changes.
struct Walk<'a> {
    paths: &'a LayerPaths,
    filters: &'a [PathBuf],
    changes: Vec<Change>,
    /// Read buffer for hashing, reused across files.
    buf: Vec<u8>,
}

impl Walk<'_> {
    fn full(&self, tree: Tree, rel: &Path) -> PathBuf {
        match tree {
            Tree::Upper => self.paths.upper.join(rel),
            Tree::Lower => self.paths.lower.join(rel),
        }
    }

    fn push(&mut self, rel: &Path, kind: ChangeKind, old: Option<&Side>, new: Option<&Side>) {
        if scope(self.filters, rel) != Scope::In {
            return;
        }
        self.changes.push(Change {
            path: rel.to_string_lossy().into_owned(),
            raw_path: rel.to_path_buf(),
            kind,
            old_type: old.map(|s| s.ty),
            new_type: new.map(|s| s.ty),
            mode: new.and_then(|s| s.mode),
            old_mode: old.and_then(|s| s.mode),
            size: new.and_then(|s| s.size),
            old_hash: old.and_then(|s| s.hash.clone()),
            new_hash: new.and_then(|s| s.hash.clone()),
        });
    }

    /// The entries of the upper directory `upper` at `rel`, against the lower directory there (`None` when the
    /// lower has no directory at `rel`). `hidden`: the lower directory's contents are not shown through (this
    /// directory or an ancestor is opaque), so every lower entry absent from the upper is deleted.
    fn upper_dir_entries(
        &mut self,
        upper: BorrowedFd<'_>,
        lower: Option<BorrowedFd<'_>>,
        rel: &Path,
        hidden: bool,
    ) -> Result<(), LayerError> {
        if rel.components().count() > MAX_DEPTH {
            return Err(LayerError::TooDeep { path: self.full(Tree::Upper, rel) });
        }
        let names =
            list_dir(upper).map_err(|source| LayerError::ReadDir { path: self.full(Tree::Upper, rel), source })?;
        for name in &names {
            let path = rel.join(name);
            if scope(self.filters, &path) == Scope::Out {
                continue;
            }
            let cname = cstring(name);
            let Some(um) = self.stat(Tree::Upper, upper, &cname, &path)? else { continue };
            let lm = match lower {
                Some(lower) => self.stat(Tree::Lower, lower, &cname, &path)?,
                None => None,
            };
            self.upper_entry(Entry { upper, lower, name: &cname, path: &path, um, lm }, hidden)?;
        }
        let (true, Some(lower)) = (hidden, lower) else { return Ok(()) };
        let in_upper: HashSet<&OsString> = names.iter().collect();
        let lower_names =
            list_dir(lower).map_err(|source| LayerError::ReadDir { path: self.full(Tree::Lower, rel), source })?;
        for name in lower_names.iter().filter(|n| !in_upper.contains(n)) {
            let path = rel.join(name);
            if scope(self.filters, &path) == Scope::Out {
                continue;
            }
            let cname = cstring(name);
            if let Some(lm) = self.stat(Tree::Lower, lower, &cname, &path)? {
                self.deleted(lower, &cname, &path, &lm)?;
            }
        }
        Ok(())
    }

    fn upper_entry(&mut self, e: Entry<'_>, hidden: bool) -> Result<(), LayerError> {
        if e.um.is_device_whiteout() {
            return self.whited_out(e);
        }
        match e.um.entry_type() {
            EntryType::Dir => self.upper_dir(e, hidden),
            EntryType::File => self.upper_file(e),
            EntryType::Symlink => {
                let target = readlink_at(e.upper, e.name)
                    .map_err(|source| LayerError::ReadLink { path: self.full(Tree::Upper, e.path), source })?;
                let new = Side {
                    ty: EntryType::Symlink,
                    mode: None,
                    size: Some(target.len() as u64),
                    hash: Some(sha256_hex(&target)),
                };
                self.compare_leaf(e, &new)
            }
            EntryType::Other => {
                let new = Side { ty: EntryType::Other, mode: Some(e.um.perm()), size: None, hash: None };
                self.compare_leaf(e, &new)
            }
        }
    }

    /// A whiteout: the lower entry is deleted (a whiteout with nothing below is no change).
    fn whited_out(&mut self, e: Entry<'_>) -> Result<(), LayerError> {
        match e.lower_entry() {
            Some((lower, lm)) => self.deleted(lower, e.name, e.path, &lm),
            None => Ok(()),
        }
    }

    fn upper_dir(&mut self, e: Entry<'_>, hidden: bool) -> Result<(), LayerError> {
        let upper_path = || self.full(Tree::Upper, e.path);
        let dir = match open_dir_at(e.upper, e.name) {
            Ok(dir) => dir,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(err) if matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                return Err(LayerError::Raced { path: upper_path() })
            }
            Err(source) => return Err(LayerError::OpenDir { path: upper_path(), source }),
        };
        let now = fstat(dir.as_fd()).map_err(|source| LayerError::Stat { path: upper_path(), source })?;
        if !now.same_inode(&e.um) {
            return Err(LayerError::Raced { path: upper_path() });
        }
        let marks = overlay_marks(dir.as_fd()).map_err(|source| LayerError::Xattr { path: upper_path(), source })?;
        if marks.redirect {
            return Err(LayerError::Unsupported { path: upper_path(), what: "redirect" });
        }
        let new = Side { ty: EntryType::Dir, mode: Some(e.um.perm()), size: None, hash: None };
        match e.lower_entry() {
            Some((lower, lm)) if lm.entry_type() == EntryType::Dir => {
                if lm.perm() != e.um.perm() {
                    let old = Side { ty: EntryType::Dir, mode: Some(lm.perm()), size: None, hash: None };
                    self.push(e.path, ChangeKind::Modified, Some(&old), Some(&new));
                }
                let lower_dir = open_dir_at(lower, e.name)
                    .map_err(|source| LayerError::OpenDir { path: self.full(Tree::Lower, e.path), source })?;
                self.upper_dir_entries(dir.as_fd(), Some(lower_dir.as_fd()), e.path, hidden || marks.opaque)
            }
            Some((lower, lm)) => {
                if scope(self.filters, e.path) == Scope::In {
                    let old = self.describe(Tree::Lower, lower, e.name, e.path, &lm)?;
                    self.push(e.path, ChangeKind::TypeChanged, Some(&old), Some(&new));
                }
                self.upper_dir_entries(dir.as_fd(), None, e.path, false)
            }
            None => {
                self.push(e.path, ChangeKind::Added, None, Some(&new));
                self.upper_dir_entries(dir.as_fd(), None, e.path, false)
            }
        }
    }

    fn upper_file(&mut self, e: Entry<'_>) -> Result<(), LayerError> {
        let Some(mut file) = self.open_regular(Tree::Upper, e.upper, e.name, e.path, &e.um)? else {
            return Ok(()); // gone meanwhile
        };
        let marks = overlay_marks(file.as_fd())
            .map_err(|source| LayerError::Xattr { path: self.full(Tree::Upper, e.path), source })?;
        if marks.whiteout && e.um.size == 0 {
            return self.whited_out(e);
        }
        if marks.redirect {
            return Err(LayerError::Unsupported { path: self.full(Tree::Upper, e.path), what: "redirect" });
        }
        if scope(self.filters, e.path) != Scope::In {
            // Only what lies under this path is asked for: the contents of a directory the file replaced.
            return match e.lower_entry() {
                Some((lower, lm)) if lm.entry_type() == EntryType::Dir => self.deleted_contents(lower, e.name, e.path),
                _ => Ok(()),
            };
        }
        let hash = if marks.metacopy {
            // A metadata-only copy-up: the data is still the lower file's.
            match e.lower_entry() {
                Some((lower, lm)) if lm.entry_type() == EntryType::File => {
                    self.describe(Tree::Lower, lower, e.name, e.path, &lm)?.hash
                }
                _ => return Err(LayerError::Unsupported { path: self.full(Tree::Upper, e.path), what: "metacopy" }),
            }
        } else {
            let hash = self
                .hash_file(&mut file)
                .map_err(|source| LayerError::Read { path: self.full(Tree::Upper, e.path), source })?;
            Some(hash)
        };
        let new = Side { ty: EntryType::File, mode: Some(e.um.perm()), size: Some(e.um.size), hash };
        self.compare_leaf(e, &new)
    }

    /// An upper entry that is not a directory (`new`), against the lower entry at its path.
    fn compare_leaf(&mut self, e: Entry<'_>, new: &Side) -> Result<(), LayerError> {
        let Some((lower, lm)) = e.lower_entry() else {
            self.push(e.path, ChangeKind::Added, None, Some(new));
            return Ok(());
        };
        let in_scope = scope(self.filters, e.path) == Scope::In;
        if lm.entry_type() != new.ty {
            if in_scope {
                let old = self.describe(Tree::Lower, lower, e.name, e.path, &lm)?;
                self.push(e.path, ChangeKind::TypeChanged, Some(&old), Some(new));
            }
            if lm.entry_type() == EntryType::Dir {
                self.deleted_contents(lower, e.name, e.path)?;
            }
            return Ok(());
        }
        if !in_scope {
            return Ok(());
        }
        // The old hash is reported with every change, so the lower file is hashed even when the sizes differ.
        let old = self.describe(Tree::Lower, lower, e.name, e.path, &lm)?;
        let changed = match new.ty {
            EntryType::File => lm.perm() != e.um.perm() || lm.size != e.um.size || old.hash != new.hash,
            EntryType::Symlink => old.hash != new.hash,
            EntryType::Other => lm.mode != e.um.mode || lm.rdev != e.um.rdev,
            EntryType::Dir => false,
        };
        if changed {
            self.push(e.path, ChangeKind::Modified, Some(&old), Some(new));
        }
        Ok(())
    }

    /// The lower entry `name` of `lower` (at `path`) is gone: it and, for a directory, all it holds.
    fn deleted(&mut self, lower: BorrowedFd<'_>, name: &CStr, path: &Path, lm: &Meta) -> Result<(), LayerError> {
        let scope = scope(self.filters, path);
        if scope == Scope::In {
            let old = self.describe(Tree::Lower, lower, name, path, lm)?;
            self.push(path, ChangeKind::Deleted, Some(&old), None);
        }
        if scope != Scope::Out && lm.entry_type() == EntryType::Dir {
            self.deleted_contents(lower, name, path)?;
        }
        Ok(())
    }

    /// Everything the lower directory `name` of `lower` (at `path`) holds is gone.
    fn deleted_contents(&mut self, lower: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<(), LayerError> {
        if path.components().count() > MAX_DEPTH {
            return Err(LayerError::TooDeep { path: self.full(Tree::Lower, path) });
        }
        let dir = open_dir_at(lower, name)
            .map_err(|source| LayerError::OpenDir { path: self.full(Tree::Lower, path), source })?;
        let names = list_dir(dir.as_fd())
            .map_err(|source| LayerError::ReadDir { path: self.full(Tree::Lower, path), source })?;
        for child in &names {
            let child_path = path.join(child);
            if scope(self.filters, &child_path) == Scope::Out {
                continue;
            }
            let cname = cstring(child);
            if let Some(meta) = self.stat(Tree::Lower, dir.as_fd(), &cname, &child_path)? {
                self.deleted(dir.as_fd(), &cname, &child_path, &meta)?;
            }
        }
        Ok(())
    }

    /// Type, mode, size and hash of an entry (a file's contents hashed, a symlink's target read).
    fn describe(
        &mut self,
        tree: Tree,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        meta: &Meta,
    ) -> Result<Side, LayerError> {
        let ty = meta.entry_type();
        Ok(match ty {
            EntryType::File => {
                let Some(mut file) = self.open_regular(tree, dir, name, path, meta)? else {
                    return Err(LayerError::Raced { path: self.full(tree, path) });
                };
                let hash = self
                    .hash_file(&mut file)
                    .map_err(|source| LayerError::Read { path: self.full(tree, path), source })?;
                Side { ty, mode: Some(meta.perm()), size: Some(meta.size), hash: Some(hash) }
            }
            EntryType::Symlink => {
                let target = readlink_at(dir, name)
                    .map_err(|source| LayerError::ReadLink { path: self.full(tree, path), source })?;
                Side { ty, mode: None, size: Some(target.len() as u64), hash: Some(sha256_hex(&target)) }
            }
            EntryType::Dir | EntryType::Other => Side { ty, mode: Some(meta.perm()), size: None, hash: None },
        })
    }

    /// `lstat` of one entry; `None` when there is none.
    fn stat(&self, tree: Tree, dir: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<Option<Meta>, LayerError> {
        stat_at(dir, name).map_err(|source| LayerError::Stat { path: self.full(tree, path), source })
    }

    /// Opens the regular file `name` of `dir` for reading, never through a symlink, and checks it is still the
    /// entry `seen` described. `None` when it is gone.
    fn open_regular(
        &self,
        tree: Tree,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &Path,
        seen: &Meta,
    ) -> Result<Option<File>, LayerError> {
        let fd = match open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(LayerError::Raced { path: self.full(tree, path) })
            }
            Err(source) => return Err(LayerError::Read { path: self.full(tree, path), source }),
        };
        let now = fstat(fd.as_fd()).map_err(|source| LayerError::Stat { path: self.full(tree, path), source })?;
        if now.entry_type() != EntryType::File || !now.same_inode(seen) {
            return Err(LayerError::Raced { path: self.full(tree, path) });
        }
        Ok(Some(File::from(fd)))
    }

    fn hash_file(&mut self, file: &mut File) -> io::Result<String> {
        let mut hasher = Sha256::new();
        loop {
            match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(hex(&hasher.finalize()))
    }
}

/// Where a `PATH` to discard is in the upper directory.
struct Located {
    /// The upper directory holding the entry, when every ancestor is a directory there.
    parent: Option<OwnedFd>,
    /// The nearest ancestor that hides the lower tree below it: a whiteout, an opaque directory, or an entry that
    /// is not a directory.
    hidden_by: Option<PathBuf>,
}

fn locate_in_upper(paths: &LayerPaths, upper: BorrowedFd<'_>, path: &Path) -> Result<Located, LayerError> {
    let mut dir: Option<OwnedFd> = None;
    let mut hidden_by = None;
    let mut walked = PathBuf::new();
    let ancestors: Vec<&OsStr> = path.parent().map(|p| p.iter().collect()).unwrap_or_default();
    for component in ancestors {
        walked.push(component);
        let here = dir.as_ref().map_or(upper, |d| d.as_fd());
        let name = cstring(component);
        let full = || paths.upper.join(&walked);
        let meta = stat_at(here, &name).map_err(|source| LayerError::Stat { path: full(), source })?;
        let Some(meta) = meta else { return Ok(Located { parent: None, hidden_by }) };
        if meta.entry_type() != EntryType::Dir {
            // A whiteout (a device or a marked file) or a file or link where the host has a directory.
            return Ok(Located { parent: None, hidden_by: hidden_by.or(Some(walked)) });
        }
        let next = open_dir_at(here, &name).map_err(|source| LayerError::OpenDir { path: full(), source })?;
        let marks = overlay_marks(next.as_fd()).map_err(|source| LayerError::Xattr { path: full(), source })?;
        if marks.opaque && hidden_by.is_none() {
            hidden_by = Some(walked.clone());
        }
        dir = Some(next);
    }
    let parent = match dir {
        Some(dir) => dir,
        None => open_at(upper, c".", libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|source| LayerError::OpenDir { path: paths.upper.clone(), source })?,
    };
    Ok(Located { parent: Some(parent), hidden_by })
}

/// Whether the host workspace has an entry at `path` (no symlink followed on the way).
fn lower_has(paths: &LayerPaths, lower: BorrowedFd<'_>, path: &Path) -> Result<bool, LayerError> {
    let mut dir: Option<OwnedFd> = None;
    let mut walked = PathBuf::new();
    let components: Vec<&OsStr> = path.iter().collect();
    for (i, component) in components.iter().enumerate() {
        walked.push(component);
        let here = dir.as_ref().map_or(lower, |d| d.as_fd());
        let name = cstring(component);
        let meta =
            stat_at(here, &name).map_err(|source| LayerError::Stat { path: paths.lower.join(&walked), source })?;
        match meta {
            None => return Ok(false),
            Some(_) if i + 1 == components.len() => return Ok(true),
            Some(meta) if meta.entry_type() != EntryType::Dir => return Ok(false),
            Some(_) => {
                let next = open_dir_at(here, &name)
                    .map_err(|source| LayerError::OpenDir { path: paths.lower.join(&walked), source })?;
                dir = Some(next);
            }
        }
    }
    Ok(true)
}

/// Removes the entry `name` of `parent`: a directory with everything in it, anything else unlinked. An entry
/// already gone is no error.
///
/// Depth first without recursion, every directory reached from its parent's descriptor with `O_NOFOLLOW` (a
/// symlink is removed itself, never followed), at most [`REMOVE_OPEN_DIRS`] open at once: no tree is too deep.
fn remove_tree_at(parent: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<(), LayerError> {
    let Some(meta) = stat_at(parent, name).map_err(|source| LayerError::Stat { path: path.to_path_buf(), source })?
    else {
        return Ok(());
    };
    if meta.entry_type() != EntryType::Dir {
        return unlink_at(parent, name, 0).map_err(|source| LayerError::Remove { path: path.to_path_buf(), source });
    }
    let mut levels = vec![RemoveLevel::enter(parent, name, path)?];
    loop {
        let depth = levels.len() - 1;
        let next = levels.last_mut().and_then(|level| level.subdirs.pop());
        match next {
            Some(sub) => {
                let sub_path = levels[depth].path.join(OsStr::from_bytes(sub.as_bytes()));
                let dir = RemoveLevel::dir_fd(&mut levels, parent, depth)?;
                let level = RemoveLevel::enter(dir, &sub, &sub_path)?;
                levels.push(level);
                if let Some(oldest) = levels.len().checked_sub(REMOVE_OPEN_DIRS + 1) {
                    levels[oldest].fd = None; // opened again from `parent` when the walk climbs back
                }
            }
            None => {
                let Some(done) = levels.pop() else { return Ok(()) };
                let holder = match levels.len().checked_sub(1) {
                    Some(up) => RemoveLevel::dir_fd(&mut levels, parent, up)?,
                    None => parent,
                };
                unlink_at(holder, &done.name, libc::AT_REMOVEDIR)
                    .map_err(|source| LayerError::Remove { path: done.path.clone(), source })?;
                if levels.is_empty() {
                    return Ok(());
                }
            }
        }
    }
}

/// One directory of a removal in progress.
struct RemoveLevel {
    name: CString,
    path: PathBuf,
    /// Its descriptor, while it is among the deepest [`REMOVE_OPEN_DIRS`] of the walk.
    fd: Option<OwnedFd>,
    /// Subdirectories still to remove (everything else in it is already gone).
    subdirs: Vec<CString>,
}

impl RemoveLevel {
    /// Opens the directory `name` of `parent`, makes it writable for its owner, unlinks everything in it but the
    /// subdirectories, and lists those.
    fn enter(parent: BorrowedFd<'_>, name: &CStr, path: &Path) -> Result<RemoveLevel, LayerError> {
        let remove_err = |source: io::Error| LayerError::Remove { path: path.to_path_buf(), source };
        let dir =
            open_dir_at(parent, name).map_err(|source| LayerError::OpenDir { path: path.to_path_buf(), source })?;
        let meta = fstat(dir.as_fd()).map_err(|source| LayerError::Stat { path: path.to_path_buf(), source })?;
        if meta.perm() & 0o700 != 0o700 {
            // A directory the sandbox made read-only: its owner may empty it once it is writable again.
            File::from(dir.try_clone().map_err(remove_err)?)
                .set_permissions(std::fs::Permissions::from_mode(meta.perm() | 0o700))
                .map_err(remove_err)?;
        }
        let names = list_dir(dir.as_fd()).map_err(|source| LayerError::ReadDir { path: path.to_path_buf(), source })?;
        let mut subdirs = Vec::new();
        for child in &names {
            let cname = cstring(child);
            match unlink_at(dir.as_fd(), &cname, 0) {
                Ok(()) => {}
                // unlink refuses a directory: it is removed after its contents.
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => subdirs.push(cname),
                Err(source) => return Err(LayerError::Remove { path: path.join(child), source }),
            }
        }
        Ok(RemoveLevel { name: name.to_owned(), path: path.to_path_buf(), fd: Some(dir), subdirs })
    }

    /// The descriptor of `levels[at]`, opened again (from the nearest open ancestor, else from `base`) if it was
    /// closed to bound the open descriptors.
    fn dir_fd<'a>(
        levels: &'a mut [RemoveLevel],
        base: BorrowedFd<'a>,
        at: usize,
    ) -> Result<BorrowedFd<'a>, LayerError> {
        if levels[at].fd.is_none() {
            let open_from = (0..at).rev().find(|&i| levels[i].fd.is_some());
            let mut start = open_from.map_or(0, |i| i + 1);
            while start <= at {
                let opened = {
                    let from = match start.checked_sub(1) {
                        Some(up) => levels[up].fd.as_ref().map(|fd| fd.as_fd()),
                        None => Some(base),
                    };
                    let Some(from) = from else { break };
                    open_dir_at(from, &levels[start].name)
                        .map_err(|source| LayerError::OpenDir { path: levels[start].path.clone(), source })?
                };
                levels[start].fd = Some(opened);
                // Only the deepest levels stay open; the one above was needed just to reach this one.
                if let Some(above) = start.checked_sub(1).filter(|&above| above + REMOVE_OPEN_DIRS <= at) {
                    levels[above].fd = None;
                }
                start += 1;
            }
        }
        match &levels[at].fd {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(LayerError::OpenDir {
                path: levels[at].path.clone(),
                source: io::Error::from_raw_os_error(libc::EBADF),
            }),
        }
    }
}

/// Reads the file at `rel` under `root` (every component reached without following a symlink); `None` when it is
/// too large to show.
fn read_beneath(root: &Path, rel: &Path) -> Result<Option<Vec<u8>>, LayerError> {
    let full = root.join(rel);
    let read_err = |source: io::Error| LayerError::Read { path: full.clone(), source };
    let mut dir = open_root(root)?;
    let components: Vec<&OsStr> = rel.iter().collect();
    let Some((last, ancestors)) = components.split_last() else {
        return Err(read_err(io::Error::from_raw_os_error(libc::EISDIR)));
    };
    for component in ancestors {
        dir = open_dir_at(dir.as_fd(), &cstring(component)).map_err(read_err)?;
    }
    let fd =
        open_at(dir.as_fd(), &cstring(last), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY).map_err(read_err)?;
    let meta = fstat(fd.as_fd()).map_err(|source| LayerError::Stat { path: full.clone(), source })?;
    if meta.entry_type() != EntryType::File {
        return Err(LayerError::Raced { path: full });
    }
    if meta.size > PATCH_MAX_FILE {
        return Ok(None);
    }
    let mut content = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
    File::from(fd).read_to_end(&mut content).map_err(read_err)?;
    Ok(Some(content))
}

/// The one-line patch note for a change that is not a file's content.
fn note(paths: &LayerPaths, change: &Change, shown: &str) -> String {
    let target = |tree: &Path| -> String {
        match read_link_beneath(tree, &change.raw_path) {
            Ok(target) => quote_always(&target),
            Err(_) => "(unreadable)".to_string(),
        }
    };
    let octal = |mode: Option<u32>| mode.map(|m| format!("{m:o}")).unwrap_or_else(|| "-".to_string());
    let ty = |t: Option<EntryType>| t.map_or("nothing", EntryType::as_str);
    let line = match (change.kind, change.old_type, change.new_type) {
        (ChangeKind::TypeChanged, old, new) => format!("type changed {shown}: {} -> {}", ty(old), ty(new)),
        (ChangeKind::Added, _, Some(EntryType::Dir)) => format!("new directory {shown}"),
        (ChangeKind::Deleted, Some(EntryType::Dir), _) => format!("deleted directory {shown}"),
        (_, _, Some(EntryType::Dir)) => {
            format!("directory {shown}: mode {} -> {}", octal(change.old_mode), octal(change.mode))
        }
        (ChangeKind::Added, _, Some(EntryType::Symlink)) => format!("new symlink {shown} -> {}", target(&paths.upper)),
        (ChangeKind::Deleted, Some(EntryType::Symlink), _) => {
            format!("deleted symlink {shown} (was -> {})", target(&paths.lower))
        }
        (_, _, Some(EntryType::Symlink)) => {
            format!("symlink {shown}: {} -> {}", target(&paths.lower), target(&paths.upper))
        }
        (ChangeKind::Added, _, _) => format!("new special file {shown}"),
        (ChangeKind::Deleted, _, _) => format!("deleted special file {shown}"),
        _ => format!("special file {shown} changed"),
    };
    line + "\n"
}

/// A symlink's target, the link reached from `root` without following any symlink.
fn read_link_beneath(root: &Path, rel: &Path) -> io::Result<Vec<u8>> {
    let mut dir = open_root(root).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    let components: Vec<&OsStr> = rel.iter().collect();
    let Some((last, ancestors)) = components.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    for component in ancestors {
        dir = open_dir_at(dir.as_fd(), &cstring(component))?;
    }
    readlink_at(dir.as_fd(), &cstring(last))
}

/// A symlink target, always in double quotes, escaped as [`quote_path`] does.
fn quote_always(bytes: &[u8]) -> String {
    let quoted = quote_path(Path::new(OsStr::from_bytes(bytes)));
    if quoted.starts_with('"') {
        quoted
    } else {
        format!("\"{quoted}\"")
    }
}

/// Characters [`quote_path`] escapes: control characters, quote and backslash, and the invisible or
/// direction-changing ones that can make a name look like another.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '"'
        || c == '\\'
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Text to diff line by line, or `None` for binary content (a NUL byte early on, or not UTF-8).
fn text(content: &[u8]) -> Option<&str> {
    if content[..content.len().min(BINARY_SNIFF)].contains(&0) {
        return None;
    }
    std::str::from_utf8(content).ok()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// A name from a directory listing or a parsed path, as the C string the system calls take. Such names never
/// hold a NUL byte (the kernel refuses them, `parse_filter` too); an impossible one becomes the empty name,
/// which every call refuses with ENOENT.
fn cstring(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).unwrap_or_default()
}

// ---- system calls: one name at a time, relative to a directory descriptor, never following a symlink ----

/// Opens a layer's root directory (its last component must not be a symlink).
fn open_root(path: &Path) -> Result<OwnedFd, LayerError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| LayerError::OpenDir { path: path.to_path_buf(), source })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`: a symlink at `name` fails with ELOOP.
fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    sys::fd::openat(dir.as_raw_fd(), name, flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0)
        .map_err(io::Error::from_raw_os_error)
}

/// A subdirectory, opened for listing; fails with ELOOP or ENOTDIR on anything but a directory.
fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)` (a symlink is described, not followed); `None` when there is no
/// such entry.
fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Meta>> {
    match sys::fs::fstatat(dir.as_raw_fd(), name, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Meta::from_stat(&st))),
        Err(libc::ENOENT) => Ok(None),
        Err(e) => Err(io::Error::from_raw_os_error(e)),
    }
}

/// `fstat(fd)`.
fn fstat(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    sys::fd::fstat(fd.as_raw_fd()).map(|st| Meta::from_stat(&st)).map_err(io::Error::from_raw_os_error)
}

/// `readlinkat(dir, name)`: a symlink's target, as bytes.
fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    loop {
        let n = sys::fs::readlinkat(dir.as_raw_fd(), name, &mut buf).map_err(io::Error::from_raw_os_error)?;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // The target may have been cut short: try again with more room.
        buf.resize(buf.len() * 2, 0);
    }
}

/// `unlinkat(dir, name, flags)` (never following a symlink at `name`: the link itself is removed); an entry
/// already gone is no error.
fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    match sys::fs::unlinkat(dir.as_raw_fd(), name, flags) {
        Ok(()) | Err(libc::ENOENT) => Ok(()),
        Err(e) => Err(io::Error::from_raw_os_error(e)),
    }
}

/// How many bytes of entries one `getdents64` reads (what glibc's `readdir` asks for).
const DIR_BUFFER: usize = 32 << 10;

/// The names in a directory, without `.` and `..`.
fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    // A descriptor of its own for the reading (the offset belongs to the open file, so a dup would share it).
    let own = open_at(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut buf = vec![0u8; DIR_BUFFER];
    let mut names = Vec::new();
    loop {
        let n = sys::dir::getdents64(own.as_fd(), &mut buf).map_err(io::Error::from_raw_os_error)?;
        if n == 0 {
            return Ok(names);
        }
        for name in sys::dir::Entries::new(&buf[..n]) {
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
    }
}

/// The overlayfs marks among an entry's xattrs: one `flistxattr`, then `fgetxattr` for the values that matter.
fn overlay_marks(fd: BorrowedFd<'_>) -> io::Result<OverlayMarks> {
    let mut marks = OverlayMarks::default();
    let names = list_xattrs(fd)?;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if OPAQUE_XATTRS.contains(&name) {
            // "y": opaque. ("x" marks a directory holding xattr whiteouts, which is not opaque.)
            marks.opaque |= get_xattr(fd, name)?.as_deref() == Some(b"y");
        } else if WHITEOUT_XATTRS.contains(&name) {
            marks.whiteout = true;
        } else if METACOPY_XATTRS.contains(&name) {
            marks.metacopy = true;
        } else if REDIRECT_XATTRS.contains(&name) {
            marks.redirect = true;
        }
    }
    Ok(marks)
}

/// `flistxattr(fd)`: the xattr names, NUL-separated. A filesystem without xattrs has none.
fn list_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match sys::xattr::flistxattr(fd, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(libc::ENOTSUP) => return Ok(Vec::new()),
            Err(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// `fgetxattr(fd, name)`: an xattr's value, `None` when the entry has no such xattr.
fn get_xattr(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = vec![0u8; 256];
    loop {
        match sys::xattr::fgetxattr(fd, &name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(libc::ENODATA) | Err(libc::ENOTSUP) => return Ok(None),
            Err(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_is_by_component() {
        let filters = vec![PathBuf::from("src/lib")];
        assert_eq!(scope(&filters, Path::new("src/lib")), Scope::In);
        assert_eq!(scope(&filters, Path::new("src/lib/a.rs")), Scope::In);
        assert_eq!(scope(&filters, Path::new("src")), Scope::Above);
        assert_eq!(scope(&filters, Path::new("src/library")), Scope::Out);
        assert_eq!(scope(&filters, Path::new("docs")), Scope::Out);
        assert_eq!(scope(&[], Path::new("anything")), Scope::In);
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn binary_content_is_told_from_text() {
        assert_eq!(text(b"plain\n"), Some("plain\n"));
        assert_eq!(text(b"nul\0inside"), None);
        assert_eq!(text(b"\xff\xfe not utf-8"), None);
    }
}
