//! Namespaces: entering one (`setns`), leaving the caller's for a new one (`unshare`), and asking a namespace
//! file what it is (`NS_GET_NSTYPE`).

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Errno};

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`, Linux 4.11).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// `setns(fd, nstype)`: enters the namespaces `fd` refers to (a namespace file, or a pidfd with several
/// `CLONE_NEW*` flags). Entering a user namespace requires a single-threaded caller; the kernel refuses otherwise.
pub fn setns(fd: BorrowedFd<'_>, nstype: libc::c_int) -> Result<(), Errno> {
    // SAFETY: setns takes only integers; `fd` is borrowed, so open.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) } as libc::c_long).map(drop)
}

/// `unshare(flags)`: the caller gets new namespaces (or unshared attributes) of the kinds `flags` names.
pub fn unshare(flags: libc::c_int) -> Result<(), Errno> {
    // SAFETY: unshare takes only integers.
    check(unsafe { libc::unshare(flags) } as libc::c_long).map(drop)
}

/// `ioctl(fd, NS_GET_NSTYPE)`: the `CLONE_NEW*` flag of the namespace the file `fd` refers to (`ENOTTY` before
/// Linux 4.11).
pub fn namespace_type(fd: BorrowedFd<'_>) -> Result<libc::c_int, Errno> {
    // SAFETY: NS_GET_NSTYPE takes no argument and reads or writes none of our memory; `fd` is borrowed, so open.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    check(ret as libc::c_long).map(|flag| flag as libc::c_int)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_namespace_file_reports_its_kind() {
        let file = std::fs::File::open("/proc/self/ns/mnt").unwrap();
        match namespace_type(file.as_fd()) {
            Ok(flag) => assert_eq!(flag, libc::CLONE_NEWNS),
            Err(e) => assert_eq!(e, libc::ENOTTY, "only a kernel before 4.11 may lack NS_GET_NSTYPE"),
        }
        let not_a_namespace = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(namespace_type(not_a_namespace.as_fd()).is_err());
    }
}
