//! Extended attributes, by descriptor (where overlayfs keeps its marks: whiteouts, opaque directories).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Errno};

/// `flistxattr(fd, buf)`: the names of the entry's xattrs in `buf`, each NUL-terminated, and their length
/// (`ERANGE`: `buf` is too small).
pub fn flistxattr(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is writable for `buf.len()` bytes, the most flistxattr writes; `fd` is borrowed, so open.
    let n = unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `fgetxattr(fd, name, buf)`: the value of the xattr `name` in `buf`, and its length (`ENODATA`: no such xattr;
/// `ERANGE`: `buf` is too small).
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call and `buf` writable for `buf.len()` bytes, the
    // most fgetxattr writes; `fd` is borrowed, so open.
    let n = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `fsetxattr(fd, name, value, flags)`.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> Result<(), Errno> {
    // SAFETY: `name` is a NUL-terminated string and `value` readable for `value.len()` bytes, the size given, both
    // alive for the call; `fd` is borrowed, so open.
    let ret = unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), flags) };
    check(ret as libc::c_long).map(drop)
}
