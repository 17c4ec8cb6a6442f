//! A minimal `/dev`: a small tmpfs holding binds of the host's harmless character devices (null, zero, full,
//! random, urandom, tty), a new devpts instance (so the sandbox's terminals are not the host's), a private
//! `/dev/shm`, and the usual symlinks. Device nodes cannot be created in a user namespace, hence the binds; the
//! tmpfs itself is made read-only at the end, so nothing else can appear in `/dev`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::failure::{fail, ChildFailure, Step};
use sys::mount::{self, attach, mkdir_and_open, new_fs, new_tmpfs, EMPTY, RESOLVE_INSIDE};
use sys::Errno;

const DEV_SYMLINKS: &[(&CStr, &CStr)] = &[
    (c"ptmx", c"pts/ptmx"),
    (c"fd", c"/proc/self/fd"),
    (c"stdin", c"/proc/self/fd/0"),
    (c"stdout", c"/proc/self/fd/1"),
    (c"stderr", c"/proc/self/fd/2"),
];

/// Builds `/dev` in the new root. `devices` pairs a name in `/dev` with the index of its detached host clone in
/// `trees`.
pub fn mount_dev(root: RawFd, devices: &[(CString, usize)], trees: &[RawFd]) -> Result<(), ChildFailure> {
    let dev = mount_dev_tmpfs(root).map_err(fail(Step::MountDev, 0))?;
    let dev_fd = dev.as_raw_fd();
    populate_dev(dev_fd, devices, trees)?;
    mount::mount_setattr(dev_fd, EMPTY, libc::AT_EMPTY_PATH as u32, libc::MOUNT_ATTR_RDONLY, 0)
        .map_err(fail(Step::MountDev, 0))
}

fn mount_dev_tmpfs(root: RawFd) -> Result<OwnedFd, Errno> {
    let target = mkdir_and_open(root, c"dev", 0o755)?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    let mnt = new_tmpfs([(c"mode", c"0755"), (c"size", c"64k")], attrs)?;
    attach(mnt.as_raw_fd(), target.as_raw_fd())?;
    Ok(mnt)
}

fn populate_dev(dev_fd: RawFd, devices: &[(CString, usize)], trees: &[RawFd]) -> Result<(), ChildFailure> {
    for (index, (name, source)) in devices.iter().enumerate() {
        let tree = trees.get(*source).copied().unwrap_or(-1);
        bind_device(dev_fd, name, tree).map_err(fail(Step::MountDev, index + 1))?;
    }
    mount_devpts(dev_fd).map_err(fail(Step::MountDevpts, 0))?;
    mount_dev_shm(dev_fd).map_err(fail(Step::MountDev, 0))?;
    for (index, (name, target)) in DEV_SYMLINKS.iter().enumerate() {
        sys::fd::symlinkat(target, dev_fd, name).map_err(fail(Step::CreateDevSymlink, index))?;
    }
    Ok(())
}

fn bind_device(dev_fd: RawFd, name: &CStr, tree: RawFd) -> Result<(), Errno> {
    // The mount point: a fresh empty file in our own tmpfs (O_EXCL|O_NOFOLLOW), closed at once.
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    drop(sys::fd::openat(dev_fd, name, flags, 0o666)?);
    let target = sys::fd::openat2(dev_fd, name, libc::O_PATH, RESOLVE_INSIDE)?;
    attach(tree, target.as_raw_fd())
}

/// A new devpts instance: the sandbox's pseudo-terminals are its own, and `/dev/pts` lists none of the host's.
fn mount_devpts(dev_fd: RawFd) -> Result<(), Errno> {
    let target = mkdir_and_open(dev_fd, c"pts", 0o755)?;
    let options = [(c"ptmxmode", c"0666"), (c"mode", c"0620")];
    let mnt = new_fs(c"devpts", options, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC)?;
    attach(mnt.as_raw_fd(), target.as_raw_fd())
}

fn mount_dev_shm(dev_fd: RawFd) -> Result<(), Errno> {
    let target = mkdir_and_open(dev_fd, c"shm", 0o1777)?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    let mnt = new_tmpfs([(c"mode", c"1777")], attrs)?;
    attach(mnt.as_raw_fd(), target.as_raw_fd())
}
