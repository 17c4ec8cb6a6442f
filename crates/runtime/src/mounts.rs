//! The new root: a tmpfs built from nothing, holding read-only binds of what the policy shares, entered with
//! `pivot_root`. Runs in the sandbox's init, after `clone`: syscalls on prepared data only.
//!
//! Mount sources are opened with `openat2(RESOLVE_NO_SYMLINKS)` and cloned with `open_tree(OPEN_TREE_CLONE)`
//! while the host's tree is still visible (our private copy of it); from then on only those file descriptors are
//! used, so swapping a path for a symlink after validation (CVE-2021-30465) finds nothing to swap. Mount targets
//! are resolved one component at a time with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH` relative to the new root, so
//! a symlink planted in a `--rootfs DIR` tree cannot redirect a mount (or a `mkdir`) onto the host.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use crate::failure::{fail, ChildFailure, Step};
use crate::plan::{
    InsidePath, MountSource, RootEntry, RootOverlayPlan, SandboxPlan, SourceKind, MAX_FROZEN_LAYERS, MAX_ROOT_LAYERS,
};
use crate::{dev, proc};
use sys::mount::{self, attach, new_tmpfs, EMPTY, RESOLVE_INSIDE};
use sys::Errno;

/// Makes every mount in the sandbox's (copied) mount namespace private, so nothing done here propagates back to
/// the host and nothing the host mounts later appears here. First step in the new mount namespace.
pub fn make_mounts_private() -> Result<(), ChildFailure> {
    mount::make_all_private().map_err(fail(Step::MakeMountsPrivate, 0))
}

/// The three directories of the copy-on-write layer, opened by init before it drops the invoker's credentials
/// (`-1` when there is no layer): lower (the workspace), upper, work, and the checkpoints' frozen layers (newest
/// first, the first `frozen_count` slots: a fixed-size array, because init may not allocate).
#[derive(Debug, Clone, Copy)]
pub struct OverlayFds {
    pub source: usize,
    pub lower: RawFd,
    pub upper: RawFd,
    pub work: RawFd,
    pub frozen: [RawFd; MAX_FROZEN_LAYERS],
    pub frozen_count: usize,
}

impl OverlayFds {
    pub const NONE: OverlayFds = OverlayFds {
        source: usize::MAX,
        lower: -1,
        upper: -1,
        work: -1,
        frozen: [-1; MAX_FROZEN_LAYERS],
        frozen_count: 0,
    };

    pub fn close_all(&self) {
        for fd in [self.lower, self.upper, self.work].into_iter().chain(self.frozen) {
            if fd >= 0 {
                sys::fd::close(fd);
            }
        }
    }
}

/// `lowerdir=`: the frozen layers, newest first, then the workspace, as `/proc/self/fd/N` joined with `:`.
/// 33 paths of at most 25 bytes each, a separator each, and the NUL fit in 1024 bytes.
const LOWERDIR_BUF: usize = 1024;

/// Opens and clones every mount source. Returns the detached clones in `trees` (same order as `sources`); the
/// `cow` workspace is not cloned but opened, with its layer's directories, into `overlay` (its overlay is
/// mounted later, with the sandbox root's credentials, by [`mount_workspace_overlay`]).
/// Must run before the staging root is mounted: that can hide a source (e.g. one under `/tmp`).
pub fn clone_mount_sources(
    sources: &[MountSource],
    trees: &mut [RawFd],
    overlay: &mut OverlayFds,
) -> Result<(), ChildFailure> {
    for (index, (source, tree)) in sources.iter().zip(trees.iter_mut()).enumerate() {
        let fd = sys::fd::openat2(libc::AT_FDCWD, &source.host_path, libc::O_PATH, libc::RESOLVE_NO_SYMLINKS)
            .map_err(fail(Step::OpenMountSource, index))?;
        check_source_kind(fd.as_raw_fd(), source.kind).map_err(fail(Step::CheckMountSource, index))?;
        if let Some(dirs) = &source.overlay {
            // Every layer directory is opened now, with the invoker's credentials, like the workspace; after the
            // id switch they are reached through these descriptors only.
            // By number: `OverlayFds` is init's plan of raw descriptors (it may not allocate), closed by its
            // `close_all` or by `mount_workspace_overlay`.
            let flags = libc::O_PATH | libc::O_DIRECTORY;
            let mut opened = OverlayFds { source: index, lower: fd.into_raw_fd(), ..OverlayFds::NONE };
            let mut result = sys::fd::openat2(libc::AT_FDCWD, &dirs.upper, flags, libc::RESOLVE_NO_SYMLINKS)
                .map(|upper| opened.upper = upper.into_raw_fd())
                .and_then(|()| sys::fd::openat2(libc::AT_FDCWD, &dirs.work, flags, libc::RESOLVE_NO_SYMLINKS))
                .map(|work| opened.work = work.into_raw_fd());
            for frozen in &dirs.frozen {
                // The plan holds at most MAX_FROZEN_LAYERS (checked when it was made); refuse rather than drop one.
                result = result.and_then(|()| {
                    let slot = opened.frozen.get_mut(opened.frozen_count).ok_or(libc::E2BIG)?;
                    *slot = sys::fd::openat2(libc::AT_FDCWD, frozen, flags, libc::RESOLVE_NO_SYMLINKS)?.into_raw_fd();
                    opened.frozen_count += 1;
                    Ok(())
                });
            }
            if let Err(e) = result {
                opened.close_all();
                return Err(fail(Step::OpenWorkspaceLayer, index)(e));
            }
            *overlay = opened;
            continue;
        }
        let cloned = mount::open_tree(
            fd.as_raw_fd(),
            EMPTY,
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32 | libc::AT_RECURSIVE as u32,
        );
        drop(fd);
        // By number: `trees` is init's plan of raw descriptors (its slots allocated before `clone`), open until
        // init execs the command.
        let clone_fd = cloned.map_err(fail(Step::CloneMountSource, index))?.into_raw_fd();
        *tree = clone_fd;
        mount::mount_setattr(
            clone_fd,
            EMPTY,
            libc::AT_EMPTY_PATH as u32 | libc::AT_RECURSIVE as u32,
            source.attr_set,
            0,
        )
        .map_err(fail(Step::SetMountSourceAttributes, index))?;
    }
    Ok(())
}

/// The source must still be what validation saw: a directory, a regular file or a character device.
fn check_source_kind(fd: RawFd, kind: SourceKind) -> Result<(), Errno> {
    // fstat works on an O_PATH descriptor.
    let st = sys::fd::fstat(fd)?;
    let fmt = st.st_mode & libc::S_IFMT;
    let ok = match kind {
        SourceKind::Directory => fmt == libc::S_IFDIR,
        SourceKind::RegularFile => fmt == libc::S_IFREG,
        SourceKind::CharDevice => fmt == libc::S_IFCHR,
    };
    if ok {
        Ok(())
    } else {
        Err(libc::ENOTDIR)
    }
}

/// Mounts the `cow` workspace's overlay (lower: the workspace; upper and work: the layer's directories, all
/// three by their `/proc/self/fd` links, so no path is resolved again) and puts it in `trees` in the
/// workspace's slot. Runs after init switched to the sandbox's root: the overlay does its copy-ups with the
/// mounter's credentials, which must be the sandbox's, never the invoker's. `userxattr` because the mount is
/// made in a user namespace, where `trusted.*` xattrs are not ours to write.
pub fn mount_workspace_overlay(overlay: &OverlayFds, trees: &mut [RawFd]) -> Result<(), ChildFailure> {
    if overlay.lower < 0 {
        return Ok(());
    }
    let index = overlay.source;
    let mut lower_buf = [0u8; LOWERDIR_BUF];
    let mut upper_buf = [0u8; 32];
    let mut work_buf = [0u8; 32];
    let result = (|| {
        let frozen = overlay.frozen.get(..overlay.frozen_count).ok_or(libc::E2BIG)?;
        let lowerdir = lowerdir_path(frozen, overlay.lower, &mut lower_buf)?;
        let fs = mount::fsopen(c"overlay")?;
        let fs_fd = fs.as_raw_fd();
        let configured = mount::fsconfig_string(fs_fd, c"lowerdir", lowerdir)
            .and_then(|()| mount::fsconfig_string(fs_fd, c"upperdir", proc_fd_path(overlay.upper, &mut upper_buf)))
            .and_then(|()| mount::fsconfig_string(fs_fd, c"workdir", proc_fd_path(overlay.work, &mut work_buf)))
            .and_then(|()| mount::fsconfig_flag(fs_fd, c"userxattr"));
        let mnt = configured.and_then(|()| mount::fsmount(fs_fd, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV));
        drop(fs);
        mnt
    })();
    overlay.close_all();
    // By number, into init's plan of raw descriptors (see `clone_mount_sources`).
    let mnt = result.map_err(fail(Step::MountWorkspaceOverlay, index))?.into_raw_fd();
    if let Some(slot) = trees.get_mut(index) {
        *slot = mnt;
    }
    Ok(())
}

/// `lowerdir`'s value in `buf` without allocating: `/proc/self/fd/F1:...:/proc/self/fd/Fn:/proc/self/fd/L`,
/// the frozen layers newest first, the workspace last (overlayfs lists lower layers top to bottom).
fn lowerdir_path<'a>(frozen: &[RawFd], workspace: RawFd, buf: &'a mut [u8; LOWERDIR_BUF]) -> Result<&'a CStr, Errno> {
    let mut len = 0;
    for &fd in frozen.iter().chain(std::iter::once(&workspace)) {
        let mut one = [0u8; 32];
        let path = proc_fd_path(fd, &mut one).to_bytes();
        let sep = usize::from(len > 0);
        // Room for the separator, the path and the final NUL.
        if len + sep + path.len() + 1 > buf.len() {
            return Err(libc::E2BIG);
        }
        if sep == 1 {
            buf[len] = b':';
        }
        buf[len + sep..len + sep + path.len()].copy_from_slice(path);
        len += sep + path.len();
    }
    buf[len] = 0;
    CStr::from_bytes_until_nul(&buf[..]).map_err(|_| libc::EINVAL)
}

/// `/proc/self/fd/<fd>` in `buf`, without allocating.
fn proc_fd_path(fd: RawFd, buf: &mut [u8; 32]) -> &CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = fd.max(0) as u32;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        buf[PREFIX.len() + i] = digits[count - 1 - i];
    }
    buf[PREFIX.len() + count] = 0;
    CStr::from_bytes_until_nul(&buf[..]).unwrap_or(c"/proc/self/fd/-1")
}

/// Mounts an empty tmpfs and attaches it at `staging_dir` in the sandbox's copy of the host tree. Returns an fd
/// for the tmpfs's root, against which every later step resolves paths.
pub fn mount_staging_root(staging_dir: &CStr) -> Result<RawFd, ChildFailure> {
    // By number: the root is init's for the rest of its life (init never returns; it execs or exits).
    let root = new_tmpfs([(c"mode", c"0755"), (c"size", c"1m")], libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV)
        .map_err(fail(Step::MountStagingRoot, 0))?
        .into_raw_fd();
    mount::move_mount(root, EMPTY, libc::AT_FDCWD, staging_dir, libc::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(fail(Step::MountStagingRoot, 0))?;
    Ok(root)
}

/// The root overlay's directories, opened by init (see [`open_root_layers`]), by number.
#[derive(Debug, Clone, Copy)]
pub struct RootFds {
    /// The lowers, BOTTOM first, the first `count` slots.
    pub lowers: [RawFd; MAX_ROOT_LAYERS],
    pub count: usize,
    /// The writable root's layer directory (holding `upper/` and `work/`), `-1` for a read-only overlay.
    pub layer: RawFd,
}

impl RootFds {
    pub const NONE: RootFds = RootFds { lowers: [-1; MAX_ROOT_LAYERS], count: 0, layer: -1 };

    pub fn close_all(&self) {
        for fd in self.lowers.iter().copied().chain(std::iter::once(self.layer)).filter(|fd| *fd >= 0) {
            sys::fd::close(fd);
        }
    }
}

/// Opens the root overlay's lowers and layer directory, with `RESOLVE_NO_SYMLINKS`, while init still has the
/// invoker's credentials and the host's tree is visible (like the workspace's layer). As host root the
/// supervisor has mounted an idmapped clone over each of these paths in our mount namespace already (see
/// `rootfs`): these descriptors are of those mounts. Opened here, in our own mount namespace, because overlayfs
/// takes no layer from another one.
pub fn open_root_layers(overlay: &RootOverlayPlan, fds: &mut RootFds) -> Result<(), ChildFailure> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let open = |path: &CStr| sys::fd::openat2(libc::AT_FDCWD, path, flags, libc::RESOLVE_NO_SYMLINKS);
    let mut opened = RootFds::NONE;
    let mut result = Ok(());
    for (index, lower) in overlay.lowers.iter().enumerate() {
        // The plan holds at most MAX_ROOT_LAYERS (checked when it was made); refuse rather than drop one.
        result = result.and_then(|()| {
            let slot = opened.lowers.get_mut(index).ok_or(libc::E2BIG)?;
            *slot = open(lower)?.into_raw_fd();
            opened.count += 1;
            Ok(())
        });
    }
    if let Some(layer) = &overlay.layer {
        result = result.and_then(|()| {
            opened.layer = open(layer)?.into_raw_fd();
            Ok(())
        });
    }
    if let Err(e) = result {
        opened.close_all();
        return Err(fail(Step::OpenRootLayer, 0)(e));
    }
    *fds = opened;
    Ok(())
}

/// Mounts the root overlay (`--writable-root`, `Rootfs::Layers`) and attaches it at `staging_dir`, in place of
/// the staging tmpfs. Returns an fd for its root, against which every later step resolves paths.
///
/// Runs after init switched to the sandbox's root, like the workspace's overlay and for the same reasons: the
/// copy-ups run with the sandbox root's credentials, and `userxattr` because the mount is made in a user
/// namespace (whiteouts are character devices 0/0, opaque directories carry `user.overlay.opaque`). The lowers
/// and the layer are [`open_root_layers`]'s descriptors, named by their `/proc/self/fd` links, so no host path
/// is resolved again. Without a kept layer the upper is a private tmpfs: an anonymous run's writable root (sized
/// as `/tmp`), or a read-only overlay's small one, where only the mount points are made and `build_new_root`
/// makes the root read-only once they are.
pub fn mount_root_overlay(overlay: &RootOverlayPlan, fds: &RootFds, staging_dir: &CStr) -> Result<RawFd, ChildFailure> {
    let result = (|| {
        // The scratch upper, in a tmpfs of this mount namespace's own (gone with it). Attached at the staging
        // directory, under the overlay that is attached there next (covered at once), rather than left detached:
        // a detached tree is unmounted when its fd closes, a wait for an RCU grace period of its own, where
        // attached it goes with the old root's detach (as airlock's own files do: `mount_files_tmpfs`).
        let scratch = match overlay.layer {
            Some(_) => None,
            None => {
                let mode = [(c"mode", c"0755")];
                let size = overlay.scratch_size.as_deref().map(|size| (c"size", size));
                let fs = new_tmpfs(mode.into_iter().chain(size), libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV)?;
                sys::fd::mkdirat(fs.as_raw_fd(), c"upper", 0o755)?;
                sys::fd::mkdirat(fs.as_raw_fd(), c"work", 0o755)?;
                mount::move_mount(fs.as_raw_fd(), EMPTY, libc::AT_FDCWD, staging_dir, libc::MOVE_MOUNT_F_EMPTY_PATH)?;
                Some(fs)
            }
        };
        let layer = scratch.as_ref().map_or(fds.layer, AsRawFd::as_raw_fd);
        // overlayfs lists lower layers top first; ours are bottom first.
        let lowers = fds.lowers.get(..fds.count).ok_or(libc::E2BIG)?;
        let (&bottom, above) = lowers.split_first().ok_or(libc::EINVAL)?;
        let mut top_first = [-1; MAX_ROOT_LAYERS];
        for (slot, &fd) in top_first.iter_mut().zip(above.iter().rev()) {
            *slot = fd;
        }
        let mut lower_buf = [0u8; LOWERDIR_BUF];
        let lowerdir = lowerdir_path(top_first.get(..above.len()).ok_or(libc::E2BIG)?, bottom, &mut lower_buf)?;
        let mut upper_buf = [0u8; 48];
        let mut work_buf = [0u8; 48];
        let fs = mount::fsopen(c"overlay")?;
        let fs_fd = fs.as_raw_fd();
        mount::fsconfig_string(fs_fd, c"lowerdir", lowerdir)?;
        mount::fsconfig_string(fs_fd, c"upperdir", proc_fd_child_path(layer, b"upper", &mut upper_buf)?)?;
        mount::fsconfig_string(fs_fd, c"workdir", proc_fd_child_path(layer, b"work", &mut work_buf)?)?;
        mount::fsconfig_flag(fs_fd, c"userxattr")?;
        let mnt = mount::fsmount(fs_fd, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV)?;
        drop(fs);
        // The scratch tmpfs is unreachable from here on (covered by the overlay); the overlay keeps it.
        drop(scratch);
        mount::move_mount(mnt.as_raw_fd(), EMPTY, libc::AT_FDCWD, staging_dir, libc::MOVE_MOUNT_F_EMPTY_PATH)?;
        Ok(mnt)
    })();
    fds.close_all();
    // By number: the root is init's for the rest of its life (as `mount_staging_root`'s).
    Ok(result.map_err(fail(Step::MountRootOverlay, 0))?.into_raw_fd())
}

/// `/proc/self/fd/<fd>/<name>` in `buf`, without allocating.
fn proc_fd_child_path<'a>(fd: RawFd, name: &[u8], buf: &'a mut [u8; 48]) -> Result<&'a CStr, Errno> {
    let mut one = [0u8; 32];
    let dir = proc_fd_path(fd, &mut one).to_bytes();
    let len = dir.len() + 1 + name.len();
    if len + 1 > buf.len() {
        return Err(libc::E2BIG);
    }
    buf[..dir.len()].copy_from_slice(dir);
    buf[dir.len()] = b'/';
    buf[dir.len() + 1..len].copy_from_slice(name);
    buf[len] = 0;
    CStr::from_bytes_until_nul(&buf[..]).map_err(|_| libc::EINVAL)
}

/// The tmpfs that holds airlock's own files (`/etc/hosts`, `/etc/resolv.conf`: [`RootEntry::File`]), attached at
/// `staging_dir` in the sandbox's copy of the host tree *before* the root is attached on top of it, so that it is
/// covered at once and reachable only through the returned fd. Attached rather than left detached because of what
/// unmounting costs: a detached tree is unmounted when its last fd closes, and every unmount waits for an RCU grace
/// period (`synchronize_rcu_expedited`, 0.1 ms on an idle machine, several on a busy one: measured, issue 15).
/// Attached here, it stays in the old root's tree (`pivot_root` moves only the root off it) and goes with the
/// old root's detach in [`enter_new_root`], in the grace period that one waits for anyway. `None` when the plan
/// has no such file; a failure names the first such file.
pub fn mount_files_tmpfs(plan: &SandboxPlan) -> Result<Option<OwnedFd>, ChildFailure> {
    let Some(first_file) = plan.root_entries.iter().position(|e| matches!(e, RootEntry::File { .. })) else {
        return Ok(None);
    };
    let fs = new_tmpfs([(c"mode", c"0755"), (c"size", c"64k")], libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV)
        .map_err(fail(Step::WriteSandboxFile, first_file))?;
    mount::move_mount(fs.as_raw_fd(), EMPTY, libc::AT_FDCWD, &plan.staging_dir, libc::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(fail(Step::WriteSandboxFile, first_file))?;
    Ok(Some(fs))
}

/// The names of airlock's own files in the files tmpfs, by their entry's index (no allocation after `clone`).
fn file_name(index: usize) -> Result<&'static CStr, Errno> {
    const NAMES: [&CStr; 8] = [c"0", c"1", c"2", c"3", c"4", c"5", c"6", c"7"];
    NAMES.get(index).copied().ok_or(libc::E2BIG)
}

/// A detached, read-only bind of a file holding `contents`, created as the `number`th file in the files tmpfs
/// `files` ([`mount_files_tmpfs`]; covered by the root, so the file's bind is the only way to it).
fn airlock_file(files: RawFd, number: usize, contents: &[u8]) -> Result<OwnedFd, Errno> {
    let name = file_name(number)?;
    let fd = sys::fd::openat(files, name, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC, 0o644)?;
    let written = sys::fd::write_all(fd.as_raw_fd(), contents);
    drop(fd);
    written?;
    let tree = mount::open_tree(files, name, libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC)?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    mount::mount_setattr(tree.as_raw_fd(), EMPTY, libc::AT_EMPTY_PATH as u32, attrs, 0)?;
    Ok(tree)
}

/// Resolves `path` inside the new root, creating missing directories on the way (and, when `file` is set, an
/// empty regular file as the last component). Returns an `O_PATH` fd for it. Every component is opened with
/// [`RESOLVE_INSIDE`], so a symlink anywhere on the way fails with `ELOOP` instead of being followed.
pub fn create_mount_point(root: RawFd, path: &InsidePath, file: bool) -> Result<OwnedFd, Errno> {
    create_mount_point_at(root, &path.components, file)
}

fn create_mount_point_at(root: RawFd, components: &[std::ffi::CString], file: bool) -> Result<OwnedFd, Errno> {
    // The directory reached so far, `None` while it is `root` itself (which is not ours to close).
    let mut reached: Option<OwnedFd> = None;
    let last = components.len().saturating_sub(1);
    for (i, component) in components.iter().enumerate() {
        let dir = reached.as_ref().map_or(root, AsRawFd::as_raw_fd);
        let want_file = file && i == last;
        let flags = if want_file { libc::O_PATH } else { libc::O_PATH | libc::O_DIRECTORY };
        let opened = match sys::fd::openat2(dir, component, flags, RESOLVE_INSIDE) {
            Err(libc::ENOENT) => {
                create_entry(dir, component, want_file)?;
                sys::fd::openat2(dir, component, flags, RESOLVE_INSIDE)
            }
            other => other,
        };
        reached = Some(opened?);
    }
    match reached {
        Some(dir) => Ok(dir),
        // The path was `/` itself: hand out a separate descriptor so the caller may close it.
        None => sys::fd::duplicate_cloexec(root),
    }
}

fn create_entry(dir: RawFd, name: &CStr, file: bool) -> Result<(), Errno> {
    if file {
        // O_NOFOLLOW|O_EXCL never follow a planted link. The new file's descriptor is closed at once (dropped).
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        match sys::fd::openat(dir, name, flags, 0o644) {
            Ok(_) | Err(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        match sys::fd::mkdirat(dir, name, 0o755) {
            Ok(_) | Err(libc::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Builds the whole new root on the staging tmpfs: the policy's binds, symlinks and tmpfs mounts in order, then
/// `/dev` and `/proc`, then makes the root tmpfs itself read-only.
pub fn build_new_root(
    plan: &SandboxPlan,
    root: RawFd,
    trees: &[RawFd],
    files: Option<BorrowedFd<'_>>,
) -> Result<(), ChildFailure> {
    let mut files_written = 0;
    for (index, entry) in plan.root_entries.iter().enumerate() {
        match entry {
            RootEntry::Bind { source, dest } => {
                let is_file = plan.sources.get(*source).is_some_and(|s| s.kind != SourceKind::Directory);
                let target = create_mount_point(root, dest, is_file).map_err(fail(Step::CreateMountPoint, index))?;
                let tree = trees.get(*source).copied().unwrap_or(-1);
                let attached = attach(tree, target.as_raw_fd());
                drop(target);
                attached.map_err(fail(Step::AttachMount, index))?;
            }
            RootEntry::Symlink { name, target, .. } => {
                // The link is created in the root tmpfs.
                sys::fd::symlinkat(target, root, name).map_err(fail(Step::CreateRootSymlink, index))?;
            }
            RootEntry::Tmpfs { dest, options, attr_flags } => {
                let target = create_mount_point(root, dest, false).map_err(fail(Step::CreateMountPoint, index))?;
                let options = options.iter().map(|(k, v)| (k.as_c_str(), v.as_c_str()));
                let mounted =
                    new_tmpfs(options, *attr_flags).and_then(|mnt| attach(mnt.as_raw_fd(), target.as_raw_fd()));
                drop(target);
                mounted.map_err(fail(Step::MountTmpfs, index))?;
            }
            RootEntry::File { dest, contents } => {
                let files = files.map_or(-1, |files| files.as_raw_fd());
                let file = airlock_file(files, files_written, contents).map_err(fail(Step::WriteSandboxFile, index))?;
                files_written += 1;
                let target = match create_mount_point(root, dest, true) {
                    // An overlay root is ours to change: a symlink in the file's place (an image's
                    // `/etc/resolv.conf -> ../run/...`) gives way to the mount point (in the upper layer only).
                    Err(libc::ELOOP) if plan.root_overlay.is_some() => replace_with_file(root, dest),
                    other => other,
                };
                let attached = target.and_then(|target| attach(file.as_raw_fd(), target.as_raw_fd()));
                drop(file);
                attached.map_err(fail(Step::AttachMount, index))?;
            }
        }
    }
    // /dev before /proc: the /proc masks are clones of the sandbox's own /dev/null bind.
    dev::mount_dev(root, &plan.devices, trees)?;
    proc::mount_proc(root)?;
    // Last: nothing may be created in the root itself (only in the writable mounts on it) — unless it is a
    // writable root, whose writes go to the sandbox's own layer.
    if plan.root_overlay.as_ref().is_some_and(|o| o.writable) {
        return Ok(());
    }
    mount::mount_setattr(root, EMPTY, libc::AT_EMPTY_PATH as u32, libc::MOUNT_ATTR_RDONLY, 0)
        .map_err(fail(Step::MakeRootReadOnly, 0))?;
    Ok(())
}

/// Removes the symlink at `dest`'s last component (the directories before it never follow one) and makes an
/// empty file there.
fn replace_with_file(root: RawFd, dest: &InsidePath) -> Result<OwnedFd, Errno> {
    let (name, parents) = dest.components.split_last().ok_or(libc::EINVAL)?;
    let parent = create_mount_point_at(root, parents, false)?;
    sys::fs::unlinkat(parent.as_raw_fd(), name, 0)?;
    drop(parent);
    create_mount_point(root, dest, true)
}

/// Enters the new root: `pivot_root(".", ".")` stacks the old root on top of the new one at `/`, and the
/// detach unmounts it, so nothing of the host's tree is reachable any more — unlike chroot, which root could
/// leave with a second chroot and a `..` walk.
pub fn enter_new_root(root: RawFd) -> Result<(), ChildFailure> {
    sys::process::fchdir(root).map_err(fail(Step::PivotRoot, 0))?;
    sys::mount::pivot_root(c".", c".").map_err(fail(Step::PivotRoot, 0))?;
    sys::mount::umount2(c".", libc::MNT_DETACH).map_err(fail(Step::DetachOldRoot, 0))?;
    sys::process::change_directory(c"/").map_err(fail(Step::DetachOldRoot, 0))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_lists_the_frozen_layers_newest_first_then_the_workspace() {
        let mut buf = [0u8; LOWERDIR_BUF];
        assert_eq!(lowerdir_path(&[], 7, &mut buf).unwrap().to_bytes(), b"/proc/self/fd/7");
        let mut buf = [0u8; LOWERDIR_BUF];
        let joined = lowerdir_path(&[12, 11], 7, &mut buf).unwrap().to_bytes().to_vec();
        assert_eq!(joined, b"/proc/self/fd/12:/proc/self/fd/11:/proc/self/fd/7".to_vec());
    }

    #[test]
    fn the_most_layers_with_the_largest_descriptors_fit() {
        let mut buf = [0u8; LOWERDIR_BUF];
        let frozen = [i32::MAX; MAX_FROZEN_LAYERS];
        let joined = lowerdir_path(&frozen, i32::MAX, &mut buf).unwrap();
        assert_eq!(joined.to_bytes().split(|&b| b == b':').count(), MAX_FROZEN_LAYERS + 1);
    }
}
