//! Checkpoints: a sandbox's layer as a stack. `airlock checkpoint` freezes the upper directory as a read-only
//! layer, and the overlay then has `lowerdir=frozen_n:...:frozen_1:WORKSPACE` under a fresh upper directory.
//!
//! What the sandbox changed is then spread over several layers. Diff, discard and commit work on one *composed*
//! layer, the view overlayfs itself gives of "frozen layers + upper": built oldest layer first into a scratch
//! directory beside the layers, newest entry wins, a non-directory (file, symlink, whiteout) replaces whatever an
//! older layer had at its path, an opaque directory drops what older layers had under it, and a directory over an
//! older non-directory is opaque (the kernel stops looking down there too). Files, symlinks and whiteouts are
//! hard links (no data is copied: the cost is that of the changes, not of the workspace); directories are made
//! anew with the newest mode. Every entry is reached from its parent's descriptor, never through a symlink.
//!
//! The composed layer is read by the single-layer code in `layer.rs` and `commit.rs` unchanged. What a discard
//! or commit takes out of the composed layer is then taken out of every real layer at the same path (a frozen
//! layer included: discard and commit rewrite the checkpoints, which keep their labels).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::{
    cstring, diff_filtered, discard_changes, list_dir, open_at, open_dir_at, open_root, overlay_marks, parse_filters,
    remove_tree_at, stat_at, Change, EntryType, LayerError, LayerPaths, MAX_DEPTH,
};
use crate::layer::commit::{commit_listed, CommitError, CommitOutcome};
use crate::layer::exclude::{Exclude, Excluded};

/// A sandbox's layers: the upper directory, the frozen layers (newest first) and the workspace below them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerStack {
    pub upper: PathBuf,
    /// Newest first, as overlayfs stacks them.
    pub frozen: Vec<PathBuf>,
    /// The host workspace.
    pub lower: PathBuf,
    /// A directory on the layers' filesystem where the composed layer is built (and removed after use).
    pub scratch: PathBuf,
}

impl LayerStack {
    /// The upper directory over the workspace, without frozen layers.
    fn single(&self) -> LayerPaths {
        LayerPaths { upper: self.upper.clone(), lower: self.lower.clone() }
    }

    /// Every real layer, newest first.
    fn layers(&self) -> impl Iterator<Item = &PathBuf> {
        std::iter::once(&self.upper).chain(self.frozen.iter())
    }
}

/// The layer stack seen as one layer: the upper directory itself when nothing is frozen, else a composed
/// scratch copy (removed when this value is dropped).
pub struct ComposedLayer {
    paths: LayerPaths,
    scratch: Option<PathBuf>,
}

impl ComposedLayer {
    pub fn paths(&self) -> &LayerPaths {
        &self.paths
    }
}

impl Drop for ComposedLayer {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = remove_path(dir);
        }
    }
}

/// Composes the stack into one layer (see the module documentation).
pub fn compose(stack: &LayerStack) -> Result<ComposedLayer, LayerError> {
    if stack.frozen.is_empty() {
        return Ok(ComposedLayer { paths: stack.single(), scratch: None });
    }
    let dir = stack.scratch.clone();
    // A scratch directory left by an airlock that was killed is stale: start again.
    remove_path(&dir)?;
    std::fs::DirBuilder::new().create(&dir).map_err(|source| LayerError::OpenDir { path: dir.clone(), source })?;
    let composed = ComposedLayer {
        paths: LayerPaths { upper: dir.clone(), lower: stack.lower.clone() },
        scratch: Some(dir.clone()),
    };
    let target = open_root(&dir)?;
    for layer in stack.layers().collect::<Vec<_>>().into_iter().rev() {
        let source = open_root(layer)?;
        merge_dir(source.as_fd(), target.as_fd(), layer, &dir, 0)?;
    }
    Ok(composed)
}

/// Lays the layer directory `source` (at `source_path`) over the composed directory `target`.
fn merge_dir(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    source_path: &Path,
    target_path: &Path,
    depth: usize,
) -> Result<(), LayerError> {
    if depth > MAX_DEPTH {
        return Err(LayerError::TooDeep { path: source_path.to_path_buf() });
    }
    let names = list_dir(source).map_err(|source| LayerError::ReadDir { path: source_path.to_path_buf(), source })?;
    for name in &names {
        let cname = cstring(name);
        let from = source_path.join(name);
        let to = target_path.join(name);
        let Some(meta) = stat_at(source, &cname).map_err(|source| LayerError::Stat { path: from.clone(), source })?
        else {
            continue;
        };
        let below = stat_at(target, &cname).map_err(|source| LayerError::Stat { path: to.clone(), source })?;
        if meta.entry_type() != EntryType::Dir {
            // A file, symlink, special file or whiteout hides everything older at its path.
            if below.is_some() {
                remove_tree_at(target, &cname, &to)?;
            }
            link_at(source, &cname, target, &cname).map_err(|source| LayerError::Compose { path: from, source })?;
            continue;
        }
        let sub = open_dir_at(source, &cname).map_err(|source| LayerError::OpenDir { path: from.clone(), source })?;
        let marks = overlay_marks(sub.as_fd()).map_err(|source| LayerError::Xattr { path: from.clone(), source })?;
        if marks.redirect {
            return Err(LayerError::Unsupported { path: from, what: "redirect" });
        }
        let merge_into_older = below.is_some_and(|b| b.entry_type() == EntryType::Dir) && !marks.opaque;
        if !merge_into_older {
            // An opaque directory, or one over an older non-directory: nothing older shows below it, nor does
            // the workspace.
            let opaque = marks.opaque || below.is_some();
            if below.is_some() {
                remove_tree_at(target, &cname, &to)?;
            }
            mkdir_at(target, &cname).map_err(|source| LayerError::Compose { path: to.clone(), source })?;
            if opaque {
                let made =
                    open_dir_at(target, &cname).map_err(|source| LayerError::OpenDir { path: to.clone(), source })?;
                set_opaque(made.as_fd()).map_err(|source| LayerError::Compose { path: to.clone(), source })?;
            }
        }
        let dest = open_dir_at(target, &cname).map_err(|source| LayerError::OpenDir { path: to.clone(), source })?;
        // The newest layer's mode is the directory's mode.
        fchmod(dest.as_fd(), meta.perm()).map_err(|source| LayerError::Compose { path: to.clone(), source })?;
        merge_dir(sub.as_fd(), dest.as_fd(), &from, &to, depth + 1)?;
    }
    Ok(())
}

/// Every change across the stack against the workspace, as [`super::diff_layer`] lists them.
pub fn diff_stack(stack: &LayerStack, filter: &[String]) -> Result<Vec<Change>, LayerError> {
    let filters = parse_filters(&stack.lower, filter)?;
    let composed = compose(stack)?;
    diff_filtered(composed.paths(), &filters)
}

/// A change of the stack as a patch ([`super::unified_patch`] on the composed layer).
pub fn patch_stack(stack: &LayerStack, changes: &[Change]) -> Result<Vec<String>, LayerError> {
    let composed = compose(stack)?;
    changes.iter().map(|c| super::unified_patch(composed.paths(), c)).collect()
}

/// Drops the changes at or under `filter` (all when empty) from every layer of the stack: the workspace then
/// shows the host's entry there, whatever checkpoint is rolled back to later.
pub fn discard_stack(stack: &LayerStack, filter: &[String]) -> Result<Vec<String>, LayerError> {
    if stack.frozen.is_empty() {
        return discard_changes(&stack.single(), filter);
    }
    let filters = parse_filters(&stack.lower, filter)?;
    let composed = compose(stack)?;
    // The composed layer checks what can be discarded (and refuses a part of a directory replaced as a whole).
    let dropped = discard_changes(composed.paths(), filter)?;
    if dropped.is_empty() {
        return Ok(dropped);
    }
    if filters.is_empty() {
        for layer in stack.layers() {
            clear_dir(layer)?;
        }
        return Ok(dropped);
    }
    for filter in &filters {
        if dropped.iter().any(|d| Path::new(d).starts_with(filter)) {
            remove_from_layers(stack, filter)?;
        }
    }
    Ok(dropped)
}

/// Applies the stack's changes at or under `filter` to the host workspace (see [`super::commit_changes`]); what was
/// applied leaves every layer of the stack.
pub fn commit_stack(
    stack: &LayerStack,
    filter: &[String],
    created: f64,
    force: bool,
) -> Result<CommitOutcome, CommitError> {
    commit_stack_excluding(stack, filter, &Exclude::default(), created, force).map(|(outcome, _)| outcome)
}

/// As [`commit_stack`], less what `exclude` leaves out: those changes stay in the layers (a later diff shows
/// them, discard drops them), and are returned beside the outcome.
pub fn commit_stack_excluding(
    stack: &LayerStack,
    filter: &[String],
    exclude: &Exclude,
    created: f64,
    force: bool,
) -> Result<(CommitOutcome, Excluded), CommitError> {
    let composed = compose(stack)?;
    let (changes, excluded) = super::diff_excluding(composed.paths(), filter, exclude)?;
    let outcome = if stack.frozen.is_empty() {
        commit_listed(composed.paths(), changes, created, force)
    } else {
        commit_composed(stack, &composed, changes, created, force)
    };
    if filter.is_empty() && excluded.changes.is_empty() {
        if let Ok(CommitOutcome::Committed(_)) = &outcome {
            // Everything was applied: the host now is what the layers showed. What is left in them (a copy-up
            // equal to the host's entry, an opaque directory whose contents are now the host's) would only hide
            // the host's entries from now on, so every layer is emptied.
            for layer in stack.layers() {
                clear_dir(layer)?;
            }
        }
    }
    outcome.map(|outcome| (outcome, excluded))
}

fn commit_composed(
    stack: &LayerStack,
    composed: &ComposedLayer,
    changes: Vec<Change>,
    created: f64,
    force: bool,
) -> Result<CommitOutcome, CommitError> {
    // The changes whose composed entry is a file, symlink or whiteout: commit takes such an entry out of the
    // composed layer once it is applied, and then it goes from every real layer.
    let upper = open_root(&composed.paths().upper)?;
    let mut leaves = Vec::new();
    for change in &changes {
        if matches!(leaf_type(upper.as_fd(), &change.raw_path)?, Some(ty) if ty != EntryType::Dir) {
            leaves.push(change.raw_path.clone());
        }
    }
    let outcome = commit_listed(composed.paths(), changes, created, force);
    // Even after an error: what was applied is out of the composed layer and must leave the real ones.
    for rel in &leaves {
        if !entry_exists(upper.as_fd(), rel)? {
            remove_from_layers(stack, rel)?;
        }
    }
    outcome
}

/// The type of the entry at `rel` under `root` (no symlink followed); `None` when there is none.
fn leaf_type(root: BorrowedFd<'_>, rel: &Path) -> Result<Option<EntryType>, LayerError> {
    Ok(lookup(root, rel)?.map(|(_, ty)| ty))
}

fn entry_exists(root: BorrowedFd<'_>, rel: &Path) -> Result<bool, LayerError> {
    Ok(lookup(root, rel)?.is_some())
}

/// The parent directory of `rel` under `root` and the entry's type, when every ancestor is a directory there.
fn lookup(root: BorrowedFd<'_>, rel: &Path) -> Result<Option<(OwnedFd, EntryType)>, LayerError> {
    let Some(parent) = open_parent(root, rel)? else { return Ok(None) };
    let name = cstring(rel.file_name().unwrap_or_default());
    let meta = stat_at(parent.as_fd(), &name).map_err(|source| LayerError::Stat { path: rel.to_path_buf(), source })?;
    Ok(meta.map(|m| (parent, m.entry_type())))
}

/// The directory holding `rel` under `root`, reached one directory at a time; `None` when an ancestor is not a
/// directory there.
fn open_parent(root: BorrowedFd<'_>, rel: &Path) -> Result<Option<OwnedFd>, LayerError> {
    let mut dir = open_at(root, c".", libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|source| LayerError::OpenDir { path: rel.to_path_buf(), source })?;
    for component in rel.parent().map(|p| p.iter().collect::<Vec<_>>()).unwrap_or_default() {
        match open_dir_at(dir.as_fd(), &cstring(component)) {
            Ok(next) => dir = next,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => return Ok(None),
            Err(source) => return Err(LayerError::OpenDir { path: rel.to_path_buf(), source }),
        }
    }
    Ok(Some(dir))
}

/// Removes `rel` (with all it holds) from every real layer of the stack.
fn remove_from_layers(stack: &LayerStack, rel: &Path) -> Result<(), LayerError> {
    for layer in stack.layers() {
        let root = open_root(layer)?;
        if let Some(parent) = open_parent(root.as_fd(), rel)? {
            let name = cstring(rel.file_name().unwrap_or_default());
            remove_tree_at(parent.as_fd(), &name, &layer.join(rel))?;
        }
    }
    Ok(())
}

/// Copies the layer directory `source` to `target` (which must not exist) without copying data: files,
/// symlinks and whiteouts are hard links, directories are made anew with the source's mode, owner and `user.`
/// xattrs (overlayfs's marks: opaque, origin, impure). For a change to the layers of a *running* sandbox
/// (`layer::live`): the copy is changed and becomes the new overlay's layer, while the mounted overlay keeps
/// the untouched original (overlayfs allows a directory as the upper of one mount only).
pub fn clone_layer(source: &Path, target: &Path) -> Result<(), LayerError> {
    let from = open_root(source)?;
    let meta = stat_at(from.as_fd(), c".")
        .map_err(|e| LayerError::Stat { path: source.to_path_buf(), source: e })?
        .ok_or_else(|| LayerError::Stat { path: source.to_path_buf(), source: io::ErrorKind::NotFound.into() })?;
    std::fs::DirBuilder::new()
        .create(target)
        .map_err(|e| LayerError::Compose { path: target.to_path_buf(), source: e })?;
    let to = open_root(target)?;
    copy_dir_attrs(from.as_fd(), to.as_fd(), &meta)
        .map_err(|e| LayerError::Compose { path: target.to_path_buf(), source: e })?;
    clone_dir(from.as_fd(), to.as_fd(), source, target, 0)
}

fn clone_dir(
    source: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    source_path: &Path,
    target_path: &Path,
    depth: usize,
) -> Result<(), LayerError> {
    if depth > MAX_DEPTH {
        return Err(LayerError::TooDeep { path: source_path.to_path_buf() });
    }
    let names = list_dir(source).map_err(|source| LayerError::ReadDir { path: source_path.to_path_buf(), source })?;
    for name in &names {
        let cname = cstring(name);
        let from = source_path.join(name);
        let to = target_path.join(name);
        let Some(meta) = stat_at(source, &cname).map_err(|source| LayerError::Stat { path: from.clone(), source })?
        else {
            continue;
        };
        if meta.entry_type() != EntryType::Dir {
            link_at(source, &cname, target, &cname).map_err(|source| LayerError::Compose { path: from, source })?;
            continue;
        }
        let sub = open_dir_at(source, &cname).map_err(|source| LayerError::OpenDir { path: from.clone(), source })?;
        mkdir_at(target, &cname).map_err(|source| LayerError::Compose { path: to.clone(), source })?;
        let dest = open_dir_at(target, &cname).map_err(|source| LayerError::OpenDir { path: to.clone(), source })?;
        copy_dir_attrs(sub.as_fd(), dest.as_fd(), &meta)
            .map_err(|source| LayerError::Compose { path: to.clone(), source })?;
        clone_dir(sub.as_fd(), dest.as_fd(), &from, &to, depth + 1)?;
    }
    Ok(())
}

/// A cloned directory's owner, `user.` xattrs and mode (last: a chown may clear set-group-ID).
fn copy_dir_attrs(from: BorrowedFd<'_>, to: BorrowedFd<'_>, meta: &super::Meta) -> io::Result<()> {
    // Only when it differs: an ordinary user (rootless) owns its whole layer, and cannot chown.
    let made = stat_at(to, c".")?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    if (made.uid, made.gid) != (meta.uid, meta.gid) {
        sys::fd::fchown(to.as_raw_fd(), meta.uid, meta.gid).map_err(io::Error::from_raw_os_error)?;
    }
    let names = super::list_xattrs(from)?;
    for name in names.split(|&b| b == 0).filter(|n| n.starts_with(b"user.")) {
        let Some(value) = super::get_xattr(from, name)? else { continue };
        let cname = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        sys::xattr::fsetxattr(to, &cname, &value, 0).map_err(io::Error::from_raw_os_error)?;
    }
    fchmod(to, meta.perm())
}

/// Removes everything in the directory `dir` (never following a symlink), keeping the directory.
pub fn clear_dir(dir: &Path) -> Result<(), LayerError> {
    let root = open_root(dir)?;
    let names = list_dir(root.as_fd()).map_err(|source| LayerError::ReadDir { path: dir.to_path_buf(), source })?;
    for name in &names {
        remove_tree_at(root.as_fd(), &cstring(name), &dir.join(name))?;
    }
    Ok(())
}

/// Removes `path` and all it holds, if it exists (a symlink itself, never what it points to).
pub fn remove_path(path: &Path) -> Result<(), LayerError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(LayerError::InvalidFilter { path: path.display().to_string(), reason: "no parent".into() });
    };
    let parent_fd = open_root(if parent.as_os_str().is_empty() { Path::new(".") } else { parent })?;
    remove_tree_at(parent_fd.as_fd(), &cstring(name), path)
}

/// How many changes one frozen layer holds against what is below it: its entries, a directory counting for
/// what it holds (whiteouts included).
pub fn count_entries(dir: &Path) -> Result<u64, LayerError> {
    let root = open_root(dir)?;
    count_in(root.as_fd(), dir, 0)
}

fn count_in(dir: BorrowedFd<'_>, path: &Path, depth: usize) -> Result<u64, LayerError> {
    if depth > MAX_DEPTH {
        return Err(LayerError::TooDeep { path: path.to_path_buf() });
    }
    let names = list_dir(dir).map_err(|source| LayerError::ReadDir { path: path.to_path_buf(), source })?;
    let mut count = 0;
    for name in &names {
        let cname = cstring(name);
        let here = path.join(name);
        let meta = stat_at(dir, &cname).map_err(|source| LayerError::Stat { path: here.clone(), source })?;
        match meta {
            Some(m) if m.entry_type() == EntryType::Dir => {
                let sub =
                    open_dir_at(dir, &cname).map_err(|source| LayerError::OpenDir { path: here.clone(), source })?;
                let inner = count_in(sub.as_fd(), &here, depth + 1)?;
                count += inner.max(1);
            }
            Some(_) => count += 1,
            None => {}
        }
    }
    Ok(count)
}

/// `linkat(from_dir, from, to_dir, to, 0)`: a hard link to the entry itself (without `AT_SYMLINK_FOLLOW` a
/// symlink is linked, not followed).
fn link_at(from_dir: BorrowedFd<'_>, from: &CStr, to_dir: BorrowedFd<'_>, to: &CStr) -> io::Result<()> {
    sys::fs::linkat(from_dir.as_raw_fd(), from, to_dir.as_raw_fd(), to, 0).map_err(io::Error::from_raw_os_error)
}

/// `mkdirat(dir, name, 0700)` (the mode is set afterwards with `fchmod`, free of the umask); never follows a
/// symlink at `name` (it fails with EEXIST).
fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    sys::fs::mkdirat(dir.as_raw_fd(), name, 0o700).map_err(io::Error::from_raw_os_error)
}

fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    sys::fs::fchmod(fd, mode as libc::mode_t).map_err(io::Error::from_raw_os_error)
}

/// Marks a composed directory opaque the way airlock's overlay does (`userxattr`).
fn set_opaque(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::xattr::fsetxattr(fd, c"user.overlay.opaque", b"y", 0).map_err(io::Error::from_raw_os_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn a_cloned_layer_shares_files_and_copies_directories() {
        let base = std::env::temp_dir().join(format!("airlock-clone-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (source, target) = (base.join("upper"), base.join("copy"));
        std::fs::create_dir_all(source.join("d/e")).unwrap();
        std::fs::write(source.join("d/f"), "data").unwrap();
        std::os::unix::fs::symlink("../nowhere", source.join("d/link")).unwrap();
        std::fs::set_permissions(source.join("d"), std::fs::Permissions::from_mode(0o751)).unwrap();
        // An opaque mark, where the filesystem holds user xattrs.
        let opaque = std::fs::File::open(source.join("d/e")).map(OwnedFd::from).unwrap();
        let marked = set_opaque(opaque.as_fd()).is_ok();

        clone_layer(&source, &target).unwrap();
        let meta = |p: &str| std::fs::symlink_metadata(base.join(p)).unwrap();
        assert_eq!(meta("copy/d/f").ino(), meta("upper/d/f").ino(), "a file is a hard link");
        assert_eq!(std::fs::read_link(target.join("d/link")).unwrap(), Path::new("../nowhere"));
        assert_ne!(meta("copy/d").ino(), meta("upper/d").ino(), "a directory is made anew");
        assert_eq!(meta("copy/d").mode() & 0o7777, 0o751);
        if marked {
            let copied = std::fs::File::open(target.join("d/e")).map(OwnedFd::from).unwrap();
            assert!(super::super::overlay_marks(copied.as_fd()).unwrap().opaque);
        }
        // Taking an entry out of the copy leaves the original alone.
        std::fs::remove_file(target.join("d/f")).unwrap();
        assert!(source.join("d/f").exists());
        assert!(clone_layer(&source, &target).is_err(), "the target must not exist");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
