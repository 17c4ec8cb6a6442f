//! Credentials: the caller's user and group ids and its supplementary groups.

use crate::{check, Errno};

/// `setresuid(real, effective, saved)`.
pub fn setresuid(real: u32, effective: u32, saved: u32) -> Result<(), Errno> {
    // SAFETY: setresuid takes only integers.
    check(unsafe { libc::setresuid(real, effective, saved) } as libc::c_long).map(drop)
}

/// `setresgid(real, effective, saved)`.
pub fn setresgid(real: u32, effective: u32, saved: u32) -> Result<(), Errno> {
    // SAFETY: setresgid takes only integers.
    check(unsafe { libc::setresgid(real, effective, saved) } as libc::c_long).map(drop)
}

/// `setgroups(0, NULL)`: no supplementary groups.
pub fn clear_supplementary_groups() -> Result<(), Errno> {
    // SAFETY: with a zero-length list, setgroups reads no memory (the null pointer is never dereferenced).
    check(unsafe { libc::setgroups(0, std::ptr::null()) } as libc::c_long).map(drop)
}
