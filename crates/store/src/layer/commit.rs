//! `airlock commit`: applying a layer's changes to the host workspace.
//!
//! The layer is hostile data (the sandbox wrote it) and the host workspace may change under airlock while it
//! works (CVE-2018-15664: a directory swapped for a symlink between check and use). So:
//! - every host directory is reached from the workspace's descriptor one component at a time with `openat2`
//!   and `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`: a symlink, a mount
//!   point or a `..` on the way fails the change (naming the path) and nothing is written through it; the last
//!   component is only ever used with calls that act on the entry itself (`renameat`, `unlinkat`, `mkdirat`,
//!   `symlinkat`, `fstatat(AT_SYMLINK_NOFOLLOW)`, `openat(O_EXCL)`);
//! - the layer is read the same way (`O_NOFOLLOW` on every component): a symlink the sandbox planted is
//!   reproduced as a symlink with the same target text, never read through;
//! - each file is written beside its target under a `.airlock-commit-*` name created with `O_EXCL`, fsynced,
//!   given its owner and mode, then renamed over the target, and the directory fsynced: the host never holds
//!   half a file;
//! - each change, once applied, is removed from the layer, so a commit killed half way is finished by running it
//!   again (what it applied is no change any more), and the temporary files it left are removed then.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{
    diff_layer, fstat, list_dir, open_at, open_dir_at, open_root, overlay_marks, readlink_at, remove_tree_at,
    sha256_hex, stat_at, unlink_at, Change, ChangeKind, EntryType, LayerError, LayerPaths, Meta,
};

/// The prefix of the temporary files a commit writes beside their targets (and removes when it finds them left
/// over by a commit that was killed).
pub const TEMP_PREFIX: &str = ".airlock-commit-";

/// What a commit did.
#[derive(Debug)]
pub enum CommitOutcome {
    /// Every change (at or under the filters) was applied, in this order.
    Committed(Vec<Change>),
    /// Host entries changed since the sandbox started; nothing was applied.
    Refused(Vec<Change>),
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A name in the layer that cannot be a single path component.
    #[error("invalid name in the layer: {path:?}")]
    InvalidName { path: PathBuf },
    /// A host directory on the way is a symlink, a mount point or not a directory: nothing is written through it.
    #[error("cannot commit {change}: {path} on the host is a symlink, a mount point or not a directory (nothing was written through it)")]
    UnsafeHostPath {
        change: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Cannot open a host directory.
    #[error("cannot open host directory {path}")]
    OpenHostDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The sandbox changed the contents of a directory the host has since replaced with something else.
    #[error("cannot commit {path}: the sandbox changed a directory there, but the host now has a {host} (nothing was written; discard the path or restore the directory)")]
    HostNotADirectory { path: PathBuf, host: &'static str },
    /// Device nodes, FIFOs and sockets are not committed.
    #[error("cannot commit {path}: it is a special file (device, FIFO or socket), which airlock does not commit (discard it)")]
    SpecialFile { path: PathBuf },
    /// A metadata-only copy-up (not made by airlock's overlay).
    #[error("cannot commit {path}: it is an overlayfs metacopy entry, which airlock does not commit")]
    Metacopy { path: PathBuf },
    #[error("cannot read {path} from the layer")]
    ReadUpper {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create symlink {path}")]
    Symlink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the owner of {path}")]
    Chown {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the mode of {path}")]
    Chmod {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot rename {from} to {path}")]
    Rename {
        from: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot sync {path}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Applies the layer's changes at or under `filter` (all when empty) to the host workspace.
///
/// `created` is the unix time the sandbox was created. A change conflicts when the host entry at its path (not a
/// directory: a directory's ctime moves with its contents, which are checked themselves) changed after it, unless
/// it already holds exactly what the change writes (a commit that was killed after writing it). Without `force`,
/// any conflict refuses the whole commit and nothing is applied.
///
/// Nothing may have the overlay mounted meanwhile, and only one commit may run at a time (the caller holds the
/// sandbox's lock). On an error, the changes applied before it are applied and out of the layer, the rest are
/// still in the layer: running the commit again goes on from there.
pub fn commit_changes(
    paths: &LayerPaths,
    filter: &[String],
    created: f64,
    force: bool,
) -> Result<CommitOutcome, CommitError> {
    let changes = diff_layer(paths, filter)?;
    commit_listed(paths, changes, created, force)
}

/// As [`commit_changes`], of these changes of the layer (as a diff listed them, in its order): a partial commit,
/// which leaves every other change in the layer.
pub(crate) fn commit_listed(
    paths: &LayerPaths,
    changes: Vec<Change>,
    created: f64,
    force: bool,
) -> Result<CommitOutcome, CommitError> {
    for change in &changes {
        validated_components(&change.raw_path)?;
    }
    let mut commit = Commit::new(paths)?;
    if !force {
        let mut conflicts = Vec::new();
        for change in &changes {
            if commit.conflicts(change, created)? {
                conflicts.push(change.clone());
            }
        }
        if !conflicts.is_empty() {
            return Ok(CommitOutcome::Refused(conflicts));
        }
    }
    for step in order(&changes) {
        match step {
            Step::Apply(i) => commit.apply(&changes[i])?,
            Step::FinishDir(i) => commit.finish_dir(&changes[i])?,
        }
    }
    Ok(CommitOutcome::Committed(changes))
}

/// Splits a layer path into its components, each checked to be one plain name: not empty, not `.` or `..`, no
/// `/` or NUL. (The layer's walk only produces such names; this is the last check before they reach the host.)
pub fn validated_components(rel: &Path) -> Result<Vec<CString>, CommitError> {
    let invalid = || CommitError::InvalidName { path: rel.to_path_buf() };
    let bytes = rel.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(invalid());
    }
    bytes
        .split(|&b| b == b'/')
        .map(|name| if valid_name(name) { CString::new(name).map_err(|_| invalid()) } else { Err(invalid()) })
        .collect()
}

/// Whether `name` can be one path component that stays in its directory.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// Whether a host entry last changed (`ctime`) after the sandbox was created (`created`, unix seconds).
pub fn changed_since(ctime: (i64, i64), created: f64) -> bool {
    let ctime = ctime.0 as f64 + ctime.1 as f64 / 1e9;
    ctime > created
}

/// The mode a committed file gets: the layer's, without set-user-ID and set-group-ID (a program the sandbox
/// wrote must not run as the workspace's owner for whoever starts it). Directories keep set-group-ID (group
/// inheritance), not set-user-ID.
pub fn committed_mode(ty: EntryType, mode: u32) -> u32 {
    match ty {
        EntryType::Dir => mode & 0o3777,
        _ => mode & 0o1777,
    }
}

/// One step of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Apply a change.
    Apply(usize),
    /// After everything under a directory the change creates or keeps: its final mode, and out of the layer.
    FinishDir(usize),
}

/// The order of a commit, from changes sorted by path (a directory right before what it holds): a directory is
/// created before its contents and finished after them; an entry that removes a host directory (deleted, or
/// replaced by a file or link) is applied after everything under it.
fn order(changes: &[Change]) -> Vec<Step> {
    let mut steps = Vec::with_capacity(changes.len() * 2);
    let mut pending: Vec<(&Path, Step)> = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        while let Some((dir, _)) = pending.last() {
            if change.raw_path.starts_with(dir) && change.raw_path != *dir {
                break;
            }
            if let Some((_, step)) = pending.pop() {
                steps.push(step);
            }
        }
        let removes_dir = change.old_type == Some(EntryType::Dir) && change.new_type != Some(EntryType::Dir);
        if removes_dir {
            pending.push((&change.raw_path, Step::Apply(i)));
        } else if change.new_type == Some(EntryType::Dir) {
            steps.push(Step::Apply(i));
            pending.push((&change.raw_path, Step::FinishDir(i)));
        } else {
            steps.push(Step::Apply(i));
        }
    }
    while let Some((_, step)) = pending.pop() {
        steps.push(step);
    }
    steps
}

/// A commit in progress.
struct Commit<'a> {
    paths: &'a LayerPaths,
    host_root: OwnedFd,
    upper_root: OwnedFd,
    /// Host directories already cleared of temporary files left by a killed commit.
    swept: HashSet<PathBuf>,
    is_root: bool,
}

impl<'a> Commit<'a> {
    fn new(paths: &'a LayerPaths) -> Result<Commit<'a>, CommitError> {
        Ok(Commit {
            paths,
            host_root: open_root(&paths.lower)?,
            upper_root: open_root(&paths.upper)?,
            swept: HashSet::new(),
            is_root: sys::process::effective_uid() == 0,
        })
    }

    fn host_path(&self, rel: &Path) -> PathBuf {
        self.paths.lower.join(rel)
    }

    /// The host directory holding the change's entry, and the entry's name. `None` when a directory on the way
    /// does not exist on the host.
    fn host_parent(&self, change: &Change) -> Result<Option<(OwnedFd, CString)>, CommitError> {
        let mut names = validated_components(&change.raw_path)?;
        let Some(name) = names.pop() else { return Err(CommitError::InvalidName { path: change.raw_path.clone() }) };
        let mut dir = open_at(self.host_root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|source| CommitError::OpenHostDir { path: self.paths.lower.clone(), source })?;
        let mut walked = PathBuf::new();
        for component in &names {
            walked.push(OsStr::from_bytes(component.as_bytes()));
            dir = match open_beneath(dir.as_fd(), component) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(source) if matches!(source.raw_os_error(), Some(libc::ELOOP | libc::EXDEV | libc::ENOTDIR)) => {
                    return Err(CommitError::UnsafeHostPath {
                        change: change.path.clone(),
                        path: self.host_path(&walked),
                        source,
                    })
                }
                Err(source) => return Err(CommitError::OpenHostDir { path: self.host_path(&walked), source }),
            };
        }
        Ok(Some((dir, name)))
    }

    /// The layer directory holding the change's entry, reached without following a symlink; `None` when the
    /// layer has no directory there (the entry is under a deleted or replaced directory).
    fn upper_parent(&self, change: &Change) -> Result<Option<OwnedFd>, CommitError> {
        let mut names = validated_components(&change.raw_path)?;
        names.pop();
        let mut dir = open_at(self.upper_root.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|source| LayerError::OpenDir { path: self.paths.upper.clone(), source })?;
        for component in &names {
            dir = match open_dir_at(dir.as_fd(), component) {
                Ok(next) => next,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => {
                    return Ok(None)
                }
                Err(source) => {
                    return Err(LayerError::OpenDir { path: self.paths.upper.join(&change.raw_path), source }.into())
                }
            };
        }
        Ok(Some(dir))
    }

    fn conflicts(&mut self, change: &Change, created: f64) -> Result<bool, CommitError> {
        // A host path that cannot be walked safely is not a conflict but an error, when the change is applied.
        let Ok(Some((dir, name))) = self.host_parent(change) else { return Ok(false) };
        let path = self.host_path(&change.raw_path);
        let Some(meta) = stat_at(dir.as_fd(), &name).map_err(|source| LayerError::Stat { path, source })? else {
            return Ok(false);
        };
        if meta.entry_type() == EntryType::Dir || !changed_since(meta.ctime, created) {
            return Ok(false);
        }
        Ok(!self.already_applied(change, dir.as_fd(), &name, &meta))
    }

    /// Whether the host entry already is what the change makes it (a killed commit wrote it, then could not
    /// take it out of the layer).
    fn already_applied(&self, change: &Change, dir: BorrowedFd<'_>, name: &CStr, meta: &Meta) -> bool {
        if change.new_type != Some(EntryType::File) || meta.entry_type() != EntryType::File {
            return false;
        }
        if Some(meta.perm()) != change.mode.map(|m| committed_mode(EntryType::File, m))
            || Some(meta.size) != change.size
        {
            return false;
        }
        let Ok(fd) = open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY) else { return false };
        let mut content = Vec::new();
        if io::Read::read_to_end(&mut File::from(fd), &mut content).is_err() {
            return false;
        }
        change.new_hash.as_deref() == Some(sha256_hex(&content).as_str())
    }

    fn apply(&mut self, change: &Change) -> Result<(), CommitError> {
        let rel = &change.raw_path;
        let path = self.host_path(rel);
        let Some((dir, name)) = self.host_parent(change)? else {
            if change.kind == ChangeKind::Deleted {
                return self.drop_from_layer(change); // gone from the host already
            }
            let missing = io::Error::from_raw_os_error(libc::ENOENT);
            return Err(CommitError::OpenHostDir {
                path: path.parent().unwrap_or(&path).to_path_buf(),
                source: missing,
            });
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        self.sweep(dir.as_fd(), &parent_rel)?;
        let host = stat_at(dir.as_fd(), &name).map_err(|source| LayerError::Stat { path: path.clone(), source })?;
        match change.new_type {
            None => {
                remove_tree_at(dir.as_fd(), &name, &path)?;
            }
            Some(EntryType::File) => self.write_file(change, dir.as_fd(), &name, host.as_ref())?,
            Some(EntryType::Symlink) => self.write_symlink(change, dir.as_fd(), &name, host.as_ref())?,
            Some(EntryType::Dir) => {
                self.make_dir(change, dir.as_fd(), &name, host.as_ref())?;
                return Ok(()); // finished, and taken out of the layer, after its contents
            }
            Some(EntryType::Other) => return Err(CommitError::SpecialFile { path: self.paths.upper.join(rel) }),
        }
        fsync(dir.as_fd()).map_err(|source| CommitError::Sync { path: self.host_path(&parent_rel), source })?;
        self.drop_from_layer(change)
    }

    /// After its contents: a directory's final mode (and sync), then its layer entry goes if nothing is left in it.
    fn finish_dir(&mut self, change: &Change) -> Result<(), CommitError> {
        let path = self.host_path(&change.raw_path);
        let Some((parent, name)) = self.host_parent(change)? else {
            return Err(CommitError::OpenHostDir { path, source: io::Error::from_raw_os_error(libc::ENOENT) });
        };
        let dir = open_beneath(parent.as_fd(), &name).map_err(|source| CommitError::UnsafeHostPath {
            change: change.path.clone(),
            path: path.clone(),
            source,
        })?;
        let mode = committed_mode(EntryType::Dir, change.mode.unwrap_or(0o755));
        fchmod(dir.as_fd(), mode).map_err(|source| CommitError::Chmod { path: path.clone(), source })?;
        fsync(dir.as_fd()).map_err(|source| CommitError::Sync { path: path.clone(), source })?;
        fsync(parent.as_fd()).map_err(|source| CommitError::Sync { path, source })?;
        let Some(upper) = self.upper_parent(change)? else { return Ok(()) };
        // Left when it still holds something (a change outside the PATH filters, a copy-up equal to the host's).
        match unlink_at(upper.as_fd(), &name, libc::AT_REMOVEDIR) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) => Ok(()),
            Err(source) => Err(LayerError::Remove { path: self.paths.upper.join(&change.raw_path), source }.into()),
            Ok(()) => Ok(()),
        }
    }

    /// Takes an applied change out of the layer: its upper entry (a file, link or whiteout), if it has one.
    fn drop_from_layer(&self, change: &Change) -> Result<(), CommitError> {
        let Some(upper) = self.upper_parent(change)? else { return Ok(()) };
        let name = validated_components(&change.raw_path)?.pop().unwrap_or_default();
        let path = self.paths.upper.join(&change.raw_path);
        match stat_at(upper.as_fd(), &name).map_err(|source| LayerError::Stat { path: path.clone(), source })? {
            Some(meta) if meta.entry_type() != EntryType::Dir => unlink_at(upper.as_fd(), &name, 0)
                .map_err(|source| CommitError::from(LayerError::Remove { path, source })),
            _ => Ok(()),
        }
    }

    /// The owner and group a new or replacing entry gets on the host: those of the entry it replaces, else of the
    /// directory it lands in. `None` unless airlock runs as root (an ordinary user's files are its own).
    fn owner(
        &self,
        dir: BorrowedFd<'_>,
        host: Option<&Meta>,
        dir_path: &Path,
    ) -> Result<Option<(u32, u32)>, CommitError> {
        if !self.is_root {
            return Ok(None);
        }
        if let Some(host) = host {
            return Ok(Some((host.uid, host.gid)));
        }
        let meta = fstat(dir).map_err(|source| LayerError::Stat { path: dir_path.to_path_buf(), source })?;
        Ok(Some((meta.uid, meta.gid)))
    }

    /// What writing one entry starts from: its host path (for messages), its path in the layer, and the layer
    /// directory holding it (reached one descriptor at a time; gone since the walk: ENOENT).
    fn host_and_upper(&self, change: &Change) -> Result<(PathBuf, PathBuf, OwnedFd), CommitError> {
        let rel = &change.raw_path;
        let upper_path = self.paths.upper.join(rel);
        let Some(upper) = self.upper_parent(change)? else {
            let source = io::Error::from_raw_os_error(libc::ENOENT);
            return Err(CommitError::ReadUpper { path: upper_path, source });
        };
        Ok((self.host_path(rel), upper_path, upper))
    }

    fn write_file(
        &mut self,
        change: &Change,
        dir: BorrowedFd<'_>,
        name: &CStr,
        host: Option<&Meta>,
    ) -> Result<(), CommitError> {
        let (path, upper_path, upper) = self.host_and_upper(change)?;
        let read_err = |source: io::Error| CommitError::ReadUpper { path: upper_path.clone(), source };
        let src = open_at(upper.as_fd(), name, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY).map_err(read_err)?;
        let src_meta = fstat(src.as_fd()).map_err(read_err)?;
        if src_meta.entry_type() != EntryType::File {
            return Err(LayerError::Raced { path: upper_path }.into());
        }
        if overlay_marks(src.as_fd()).map_err(|source| LayerError::Xattr { path: upper_path.clone(), source })?.metacopy
        {
            return Err(CommitError::Metacopy { path: upper_path });
        }
        let owner = self.owner(dir, host, path.parent().unwrap_or(&path))?;
        let (tmp_name, tmp) = create_temp(dir).map_err(|source| CommitError::Write { path: path.clone(), source })?;
        let tmp_path = path.with_file_name(OsStr::from_bytes(tmp_name.as_bytes()));
        let result = (|| {
            let mut out = File::from(tmp);
            io::copy(&mut File::from(src), &mut out)
                .map_err(|source| CommitError::Write { path: tmp_path.clone(), source })?;
            if let Some((uid, gid)) = owner {
                fchown(out.as_fd(), uid, gid)
                    .map_err(|source| CommitError::Chown { path: tmp_path.clone(), source })?;
            }
            // After the owner: fchown clears set-id bits, and the mode is the last word.
            let mode = committed_mode(EntryType::File, src_meta.perm());
            fchmod(out.as_fd(), mode).map_err(|source| CommitError::Chmod { path: tmp_path.clone(), source })?;
            out.sync_all().map_err(|source| CommitError::Sync { path: tmp_path.clone(), source })?;
            self.replace(dir, &tmp_name, name, host, &tmp_path, &path)
        })();
        if result.is_err() {
            let _ = unlink_at(dir, &tmp_name, 0);
        }
        result
    }

    fn write_symlink(
        &mut self,
        change: &Change,
        dir: BorrowedFd<'_>,
        name: &CStr,
        host: Option<&Meta>,
    ) -> Result<(), CommitError> {
        let (path, upper_path, upper) = self.host_and_upper(change)?;
        let read_err = |source: io::Error| CommitError::ReadUpper { path: upper_path.clone(), source };
        let target = readlink_at(upper.as_fd(), name).map_err(read_err)?;
        let target = CString::new(target).map_err(|_| read_err(io::Error::from_raw_os_error(libc::EINVAL)))?;
        let owner = self.owner(dir, host, path.parent().unwrap_or(&path))?;
        let tmp_name = temp_name();
        let tmp_path = path.with_file_name(OsStr::from_bytes(tmp_name.as_bytes()));
        symlink_at(&target, dir, &tmp_name)
            .map_err(|source| CommitError::Symlink { path: tmp_path.clone(), source })?;
        let result = (|| {
            if let Some((uid, gid)) = owner {
                lchown_at(dir, &tmp_name, uid, gid)
                    .map_err(|source| CommitError::Chown { path: tmp_path.clone(), source })?;
            }
            self.replace(dir, &tmp_name, name, host, &tmp_path, &path)
        })();
        if result.is_err() {
            let _ = unlink_at(dir, &tmp_name, 0);
        }
        result
    }

    /// Renames the finished temporary entry over `name`. A host directory there (a type change: its contents are
    /// gone already) is removed first; anything else is replaced in one step.
    fn replace(
        &self,
        dir: BorrowedFd<'_>,
        tmp_name: &CStr,
        name: &CStr,
        host: Option<&Meta>,
        tmp_path: &Path,
        path: &Path,
    ) -> Result<(), CommitError> {
        if host.is_some_and(|m| m.entry_type() == EntryType::Dir) {
            remove_tree_at(dir, name, path)?;
        }
        rename_at(dir, tmp_name, name).map_err(|source| CommitError::Rename {
            from: tmp_path.to_path_buf(),
            path: path.to_path_buf(),
            source,
        })
    }

    fn make_dir(
        &mut self,
        change: &Change,
        dir: BorrowedFd<'_>,
        name: &CStr,
        host: Option<&Meta>,
    ) -> Result<(), CommitError> {
        let rel = &change.raw_path;
        let path = self.host_path(rel);
        if let Some(host) = host {
            if host.entry_type() == EntryType::Dir {
                return Ok(()); // its mode is set once its contents are in
            }
            // The host has something else here. Replace it only when the sandbox made a new directory (overlayfs
            // marks a directory made over a deleted entry opaque); a merged directory means the host changed this
            // path under the layer (a directory swapped for a symlink, say), and the changes inside were made to a
            // directory that is no longer there.
            let upper = self.upper_parent(change)?;
            let opaque = match upper.as_ref().map(|u| open_dir_at(u.as_fd(), name)) {
                Some(Ok(d)) => {
                    overlay_marks(d.as_fd())
                        .map_err(|source| LayerError::Xattr { path: self.paths.upper.join(rel), source })?
                        .opaque
                }
                _ => false,
            };
            if !opaque {
                return Err(CommitError::HostNotADirectory { path, host: host.entry_type().as_str() });
            }
            unlink_at(dir, name, 0).map_err(|source| LayerError::Remove { path: path.clone(), source })?;
        }
        let owner = self.owner(dir, None, path.parent().unwrap_or(&path))?;
        mkdir_at(dir, name, 0o700).map_err(|source| CommitError::Mkdir { path: path.clone(), source })?;
        if let Some((uid, gid)) = owner {
            let new = open_beneath(dir, name).map_err(|source| CommitError::Mkdir { path: path.clone(), source })?;
            fchown(new.as_fd(), uid, gid).map_err(|source| CommitError::Chown { path: path.clone(), source })?;
        }
        fsync(dir).map_err(|source| CommitError::Sync { path, source })
    }

    /// Removes the temporary files a killed commit left in a host directory (once per directory and run).
    fn sweep(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> Result<(), CommitError> {
        if !self.swept.insert(rel.to_path_buf()) {
            return Ok(());
        }
        let path = self.host_path(rel);
        let names = list_dir(dir).map_err(|source| LayerError::ReadDir { path: path.clone(), source })?;
        for name in names.iter().filter(|n| n.as_bytes().starts_with(TEMP_PREFIX.as_bytes())) {
            let cname = CString::new(name.as_bytes()).unwrap_or_default();
            let meta = stat_at(dir, &cname).map_err(|source| LayerError::Stat { path: path.join(name), source })?;
            if meta.is_some_and(|m| matches!(m.entry_type(), EntryType::File | EntryType::Symlink)) {
                unlink_at(dir, &cname, 0).map_err(|source| LayerError::Remove { path: path.join(name), source })?;
            }
        }
        Ok(())
    }
}

/// A fresh temporary name: the prefix, the process id and a counter.
fn temp_name() -> CString {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{TEMP_PREFIX}{:x}-{n:x}", std::process::id());
    CString::new(name).unwrap_or_default()
}

/// Creates a new temporary file in `dir` (`O_CREAT | O_EXCL`: never an existing entry, never through a symlink),
/// mode 0600 until it is finished.
fn create_temp(dir: BorrowedFd<'_>) -> io::Result<(CString, OwnedFd)> {
    loop {
        let name = temp_name();
        // O_EXCL: an existing entry (a symlink included) fails with EEXIST instead of being opened.
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match sys::fd::openat(dir.as_raw_fd(), &name, flags, 0o600) {
            Ok(fd) => return Ok((name, fd)),
            Err(libc::EEXIST) => {}
            Err(e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Opens the directory `name` of `dir` with `openat2`: no symlink (ELOOP), no magic link, no mount point crossed
/// (EXDEV), nothing outside `dir`. `name` is one validated component.
fn open_beneath(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let resolve =
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_XDEV;
    loop {
        match sys::fd::openat2(dir.as_raw_fd(), name, flags, resolve) {
            Ok(fd) => return Ok(fd),
            // EAGAIN: a rename raced the lookup (RESOLVE_BENEATH); look again.
            Err(libc::EAGAIN) => continue,
            Err(errno) => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::fs::fsync(fd).map_err(io::Error::from_raw_os_error)
}

/// The entry itself, no path resolved.
fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    sys::fs::fchmod(fd, mode).map_err(io::Error::from_raw_os_error)
}

/// The entry itself, no path resolved.
fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    sys::fd::fchown(fd.as_raw_fd(), uid, gid).map_err(io::Error::from_raw_os_error)
}

/// AT_SYMLINK_NOFOLLOW: changes the link itself, never what it points to.
fn lchown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    sys::fs::fchownat(dir.as_raw_fd(), name, uid, gid, libc::AT_SYMLINK_NOFOLLOW).map_err(io::Error::from_raw_os_error)
}

/// Fails with EEXIST on an existing entry and never follows one.
fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    sys::fd::symlinkat(target, dir.as_raw_fd(), name).map_err(io::Error::from_raw_os_error)
}

/// Fails with EEXIST on an existing entry (a symlink included) and never follows one.
fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    sys::fs::mkdirat(dir.as_raw_fd(), name, mode).map_err(io::Error::from_raw_os_error)
}

/// Replaces the entry `to` itself (a symlink there is replaced, not followed).
fn rename_at(dir: BorrowedFd<'_>, from: &CStr, to: &CStr) -> io::Result<()> {
    sys::fs::renameat(dir.as_raw_fd(), from, dir.as_raw_fd(), to).map_err(io::Error::from_raw_os_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn names_from_the_layer_are_single_components() {
        assert!(valid_name(b"a.txt") && valid_name(b"\xff\n") && valid_name(b"..."));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert_eq!(validated_components(Path::new("src/lib.rs")).unwrap().len(), 2);
        for bad in ["", "../x", "a/../b", "a/./b", "/abs", "a//b", "a/"] {
            assert!(validated_components(Path::new(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_host_entry_conflicts_when_changed_after_the_sandbox_started() {
        assert!(changed_since((1000, 500_000_000), 1000.25));
        assert!(!changed_since((1000, 0), 1000.25));
        assert!(!changed_since((999, 999_999_999), 1000.0));
    }

    #[test]
    fn set_id_bits_are_not_committed() {
        assert_eq!(committed_mode(EntryType::File, 0o4755), 0o755);
        assert_eq!(committed_mode(EntryType::File, 0o2755), 0o755);
        assert_eq!(committed_mode(EntryType::File, 0o1777), 0o1777);
        assert_eq!(committed_mode(EntryType::Dir, 0o6775), 0o2775);
    }

    fn change(path: &str, kind: ChangeKind, old: Option<EntryType>, new: Option<EntryType>) -> Change {
        Change {
            path: path.into(),
            raw_path: path.into(),
            kind,
            old_type: old,
            new_type: new,
            mode: None,
            old_mode: None,
            size: None,
            old_hash: None,
            new_hash: None,
        }
    }

    #[test]
    fn directories_come_before_their_additions_and_after_their_deletions() {
        use ChangeKind::*;
        use EntryType::*;
        let changes = [
            change("d", Deleted, Some(Dir), None),
            change("d/x", Deleted, Some(File), None),
            change("n", Added, None, Some(Dir)),
            change("n/f", Added, None, Some(File)),
            change("t", TypeChanged, Some(Dir), Some(File)),
            change("t/y", Deleted, Some(File), None),
            change("z", Added, None, Some(File)),
        ];
        let steps = order(&changes);
        use Step::*;
        assert_eq!(steps, vec![Apply(1), Apply(0), Apply(2), Apply(3), FinishDir(2), Apply(5), Apply(4), Apply(6)]);
    }

    /// The temporary directory of one test, removed after it.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let path = std::env::temp_dir().join(format!("airlock-commit-unit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_host_directory_swapped_for_a_symlink_is_not_written_through() {
        let scratch = Scratch::new("swap");
        let (upper, lower, outside) = (scratch.0.join("upper"), scratch.0.join("lower"), scratch.0.join("outside"));
        for dir in [&upper, &lower, &outside] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::create_dir(upper.join("sub")).unwrap();
        std::fs::write(upper.join("sub/new.txt"), "x").unwrap();
        symlink(&outside, lower.join("sub")).unwrap();
        let paths = LayerPaths { upper: upper.clone(), lower: lower.clone() };
        let commit = Commit::new(&paths).unwrap();
        let err = commit.host_parent(&change("sub/new.txt", ChangeKind::Added, None, Some(EntryType::File)));
        let err = err.err().unwrap();
        assert!(matches!(err, CommitError::UnsafeHostPath { .. }), "{err}");
        assert!(err.to_string().contains(&lower.join("sub").display().to_string()), "{err}");
        // The whole commit, forced: the directory the sandbox changed is gone from the host; nothing written.
        let err = commit_changes(&paths, &[], 0.0, true).err().unwrap();
        assert!(err.to_string().contains("sub"), "{err}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(std::fs::symlink_metadata(lower.join("sub")).unwrap().file_type().is_symlink());
    }

    #[test]
    fn files_and_links_are_committed_and_leave_the_layer() {
        let scratch = Scratch::new("apply");
        let (upper, lower) = (scratch.0.join("upper"), scratch.0.join("lower"));
        std::fs::create_dir(&upper).unwrap();
        std::fs::create_dir(&lower).unwrap();
        std::fs::write(lower.join("old.txt"), "old").unwrap();
        std::fs::write(upper.join("old.txt"), "new").unwrap();
        std::fs::create_dir(upper.join("d")).unwrap();
        std::fs::write(upper.join("d/f"), "f").unwrap();
        symlink("../../etc/passwd", upper.join("d/up")).unwrap();
        std::fs::write(lower.join(format!("{TEMP_PREFIX}left")), "half").unwrap();
        let paths = LayerPaths { upper: upper.clone(), lower: lower.clone() };
        let CommitOutcome::Committed(done) = commit_changes(&paths, &[], f64::MAX, false).unwrap() else {
            panic!("refused")
        };
        assert_eq!(done.len(), 4);
        assert_eq!(std::fs::read_to_string(lower.join("old.txt")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(lower.join("d/f")).unwrap(), "f");
        assert_eq!(std::fs::read_link(lower.join("d/up")).unwrap(), Path::new("../../etc/passwd"));
        assert!(!lower.join(format!("{TEMP_PREFIX}left")).exists(), "a leftover temporary file stays");
        assert!(diff_layer(&paths, &[]).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&upper).unwrap().count(), 0, "the layer keeps applied entries");
        // A host file changed after the sandbox started conflicts; nothing is applied.
        std::fs::write(upper.join("old.txt"), "newer").unwrap();
        std::fs::write(upper.join("other"), "o").unwrap();
        let CommitOutcome::Refused(conflicts) = commit_changes(&paths, &[], 0.0, false).unwrap() else {
            panic!("not refused")
        };
        assert_eq!(conflicts.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["old.txt"]);
        assert!(!lower.join("other").exists());
    }
}
