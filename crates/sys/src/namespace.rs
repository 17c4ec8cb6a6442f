//! Namespaces: joining one (`setns`) and making new ones for the caller (`unshare`).

use std::os::fd::RawFd;

use crate::{check, Errno};

/// `setns(fd, nstype)`: joins the namespace `fd` refers to (a `/proc/PID/ns/` file), or with a pidfd the
/// namespaces of that process that `nstype`'s `CLONE_NEW*` flags name.
pub fn setns(fd: RawFd, nstype: i32) -> Result<(), Errno> {
    // SAFETY: setns takes only integers.
    check(unsafe { libc::setns(fd, nstype) } as libc::c_long).map(drop)
}

/// `unshare(flags)`: new namespaces (the `CLONE_NEW*` in `flags`) for the calling process.
pub fn unshare(flags: i32) -> Result<(), Errno> {
    // SAFETY: unshare takes only integers.
    check(unsafe { libc::unshare(flags) } as libc::c_long).map(drop)
}
