//! The new mount API, by descriptor: `fsopen`/`fsconfig`/`fsmount` make a filesystem as a detached mount,
//! `open_tree` clones a mounted tree as a detached mount, `mount_setattr` sets a mount's flags and `move_mount`
//! attaches one; plus the primitives the sandbox's mounts are made of (a detached tmpfs, attaching a detached
//! mount onto a mount point opened `O_PATH`, a mount point's directory opened without following symlinks). The
//! runtime's new root (`mounts`), `/dev` (`dev`) and `/proc` (`proc`) are built from these, and so are the live
//! checkpoint's overlay swap (`store::layer::live`) and doctor's probe.
//!
//! Also `pivot_root`. Like the rest of this crate, every function here is async-signal-safe and allocates nothing:
//! they run in the sandbox's init after `clone`, in the live checkpoint's helper and in the probe child. Errors
//! are the raw errno.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, check_fd, fd, Errno};

/// The empty path, with `AT_EMPTY_PATH` or `MOVE_MOUNT_*_EMPTY_PATH`: the descriptor itself.
pub const EMPTY: &CStr = c"";

/// `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`: how every path inside the new root is resolved while building it.
pub const RESOLVE_INSIDE: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;

/// `open_tree(dirfd, path, flags)`: a detached copy of the mount tree at `path` (with `OPEN_TREE_CLONE`).
pub fn open_tree(dirfd: RawFd, path: &CStr, flags: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string; the call reads nothing else from our memory.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) };
    owned(ret)
}

/// A descriptor a call just returned (or its errno), owned from here.
fn owned(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    let fd = check_fd(ret)?;
    // SAFETY: only called with the return value of a call that creates a descriptor: a success is an open
    // descriptor the kernel just made, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `move_mount(from_dirfd, from_path, to_dirfd, to_path, flags)`.
pub fn move_mount(from: RawFd, from_path: &CStr, to: RawFd, to_path: &CStr, flags: u32) -> Result<(), Errno> {
    // SAFETY: both paths are valid NUL-terminated strings; the call reads nothing else from our memory.
    let ret = unsafe { libc::syscall(libc::SYS_move_mount, from, from_path.as_ptr(), to, to_path.as_ptr(), flags) };
    check(ret).map(drop)
}

/// `mount_setattr(dirfd, path, flags, {attr_set, attr_clr})`.
pub fn mount_setattr(dirfd: RawFd, path: &CStr, flags: u32, attr_set: u64, attr_clr: u64) -> Result<(), Errno> {
    set_mount_attr(dirfd, path, flags, &libc::mount_attr { attr_set, attr_clr, propagation: 0, userns_fd: 0 })
}

/// The `mount_setattr` system call with a whole `struct mount_attr`.
fn set_mount_attr(dirfd: RawFd, path: &CStr, flags: u32, attr: &libc::mount_attr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a fully initialised mount_attr that outlives the
    // call; the size passed is the size of that struct.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    check(ret).map(drop)
}

/// `fsopen(fstype)`: a filesystem context to configure with [`fsconfig_string`] and create with [`fsmount`].
pub fn fsopen(fstype: &CStr) -> Result<OwnedFd, Errno> {
    // SAFETY: `fstype` is a valid NUL-terminated string.
    let ret = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) };
    owned(ret)
}

/// `fsconfig(fd, FSCONFIG_SET_STRING, key, value)`.
pub fn fsconfig_string(fsfd: RawFd, key: &CStr, value: &CStr) -> Result<(), Errno> {
    // SAFETY: key and value are valid NUL-terminated strings; aux is unused for SET_STRING.
    let ret =
        unsafe { libc::syscall(libc::SYS_fsconfig, fsfd, libc::FSCONFIG_SET_STRING, key.as_ptr(), value.as_ptr(), 0) };
    check(ret).map(drop)
}

/// `fsconfig(fd, FSCONFIG_SET_FLAG, key)`.
pub fn fsconfig_flag(fsfd: RawFd, key: &CStr) -> Result<(), Errno> {
    // SAFETY: key is a valid NUL-terminated string; value and aux are unused for SET_FLAG.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd,
            libc::FSCONFIG_SET_FLAG,
            key.as_ptr(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    check(ret).map(drop)
}

/// `fsconfig(fd, FSCONFIG_CMD_CREATE)` then `fsmount(fd, attrs)`: a detached mount of the configured filesystem.
pub fn fsmount(fsfd: RawFd, attr_flags: u64) -> Result<OwnedFd, Errno> {
    // SAFETY: CMD_CREATE takes no pointers (key and value are null, aux 0).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd,
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    check(ret)?;
    // SAFETY: fsmount takes only integers.
    let ret = unsafe { libc::syscall(libc::SYS_fsmount, fsfd, libc::FSMOUNT_CLOEXEC, attr_flags) };
    owned(ret)
}

/// A detached mount of a new filesystem of `fstype`, configured with `options` (string values), with the mount
/// attributes `attr_flags`.
pub fn new_fs<'a>(
    fstype: &CStr,
    options: impl IntoIterator<Item = (&'a CStr, &'a CStr)>,
    attr_flags: u64,
) -> Result<OwnedFd, Errno> {
    let fs = fsopen(fstype)?;
    // The source mountinfo shows (else "none"): the type, as mount(8) and runc name proc, tmpfs and devpts, so
    // tools that compare a container's mounts with its bundle's (runtime-tools' runtimetest) find them.
    fsconfig_string(fs.as_raw_fd(), c"source", fstype)?;
    for (key, value) in options {
        fsconfig_string(fs.as_raw_fd(), key, value)?;
    }
    // `fs` is closed once the mount is made (or not).
    fsmount(fs.as_raw_fd(), attr_flags)
}

/// A detached tmpfs with the given options.
pub fn new_tmpfs<'a>(
    options: impl IntoIterator<Item = (&'a CStr, &'a CStr)>,
    attr_flags: u64,
) -> Result<OwnedFd, Errno> {
    new_fs(c"tmpfs", options, attr_flags)
}

/// Attaches the detached mount `tree` on the mount point `target` (both fds), consuming neither.
pub fn attach(tree: RawFd, target: RawFd) -> Result<(), Errno> {
    move_mount(tree, EMPTY, target, EMPTY, libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH)
}

/// `mkdirat` (an existing directory is fine) then an `O_PATH` descriptor for it, never following a symlink.
pub fn mkdir_and_open(dir: RawFd, name: &CStr, mode: libc::mode_t) -> Result<OwnedFd, Errno> {
    // SAFETY: `name` is a valid NUL-terminated string; mkdirat reads nothing else from our memory.
    match check(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) } as libc::c_long) {
        Ok(_) | Err(libc::EEXIST) => {}
        Err(e) => return Err(e),
    }
    fd::openat2(dir, name, libc::O_PATH | libc::O_DIRECTORY, RESOLVE_INSIDE)
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
    // SAFETY: both are valid NUL-terminated strings.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(ret).map(drop)
}

/// `mount(source, target, fstype, flags, data)`, the old API: for what the new one is not used for (propagation
/// changes, and overlayfs given its options as one string). `data`, when given, is a string: every filesystem
/// mounted through here takes text options.
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or points to a NUL-terminated string that outlives the call; mount only reads
    // them.
    let ret =
        unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fstype), flags, ptr(data).cast::<libc::c_void>()) };
    check(ret as libc::c_long).map(drop)
}

/// `mount --make-rprivate /`: every mount of the caller's mount namespace private, so nothing done in it
/// propagates back to where it was copied from, nor the other way.
pub fn make_all_private() -> Result<(), Errno> {
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)
}

/// `umount2(target, flags)` (`MNT_DETACH`...).
pub fn umount2(target: &CStr, flags: i32) -> Result<(), Errno> {
    // SAFETY: a NUL-terminated string alive for the call; umount2 only reads it.
    check(unsafe { libc::umount2(target.as_ptr(), flags) } as libc::c_long).map(drop)
}

/// `mount_setattr(dirfd, path, flags, {MOUNT_ATTR_IDMAP, userns_fd})`: makes a detached mount (a fresh
/// `open_tree(OPEN_TREE_CLONE)`) idmapped with the user namespace `userns`'s maps. Needs `CAP_SYS_ADMIN` over
/// the filesystem's and over `userns`'s user namespace (host root, before any `clone`).
pub fn mount_setattr_idmap(dirfd: RawFd, path: &CStr, flags: u32, userns: RawFd) -> Result<(), Errno> {
    let attr =
        libc::mount_attr { attr_set: libc::MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns as u64 };
    set_mount_attr(dirfd, path, flags, &attr)
}
