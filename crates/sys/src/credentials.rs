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

/// Real, effective and saved gid then uid to `gid` and `uid` by raw `setresgid`/`setresuid` system calls, for
/// this thread only: for a child forked from a multi-threaded process, where glibc's wrappers (which signal every
/// thread it knows of and take its locks) are not async-signal-safe.
pub fn set_thread_ids_raw(uid: u32, gid: u32) -> Result<(), Errno> {
    // SAFETY: both calls take only integers.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) }).map(drop)
}

/// `setgroups(0, NULL)`: no supplementary groups.
pub fn clear_supplementary_groups() -> Result<(), Errno> {
    // SAFETY: with a zero-length list, setgroups reads no memory (the null pointer is never dereferenced).
    check(unsafe { libc::setgroups(0, std::ptr::null()) } as libc::c_long).map(drop)
}

/// `setgroups(groups)` by the raw system call, for this thread only (as [`set_thread_ids_raw`], for a forked
/// child): exactly these supplementary groups.
pub fn set_thread_groups_raw(groups: &[u32]) -> Result<(), Errno> {
    // SAFETY: `groups` is a live slice of `groups.len()` gid_t values (u32), which setgroups only reads.
    check(unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) }).map(drop)
}
