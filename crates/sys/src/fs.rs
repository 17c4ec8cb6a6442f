//! Files and directories by name relative to a directory descriptor (the `*at` calls: each resolves one name
//! from the directory given, and acts on the entry itself where the flags say so), a file's mode, its data on
//! disk (`fsync`, `syncfs`), and a filesystem's free space (`statvfs`).

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::{check, Errno};

/// `fstatat(dirfd, name, flags)` (`AT_SYMLINK_NOFOLLOW`: a symlink is described, not followed).
pub fn fstatat(dirfd: RawFd, name: &CStr, flags: i32) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero `struct stat` is a valid value for fstatat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a NUL-terminated string alive for the call and `st` a live local `struct stat`, the one
    // thing fstatat writes; a closed descriptor only yields EBADF.
    check(unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, flags) } as libc::c_long)?;
    Ok(st)
}

/// `readlinkat(dirfd, name, buf)`: the symlink's target in `buf` (not NUL-terminated), and its length. A length
/// of `buf.len()` means the target may have been cut short.
pub fn readlinkat(dirfd: RawFd, name: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call and `buf` writable for `buf.len()` bytes, the
    // most readlinkat writes.
    let n = unsafe { libc::readlinkat(dirfd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `unlinkat(dirfd, name, flags)` (`AT_REMOVEDIR` for a directory); a symlink at `name` is removed, never
/// followed.
pub fn unlinkat(dirfd: RawFd, name: &CStr, flags: i32) -> Result<(), Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call; unlinkat reads nothing else of ours.
    check(unsafe { libc::unlinkat(dirfd, name.as_ptr(), flags) } as libc::c_long).map(drop)
}

/// `mkdirat(dirfd, name, mode)`: fails with `EEXIST` on any existing entry (a symlink included, never followed).
pub fn mkdirat(dirfd: RawFd, name: &CStr, mode: libc::mode_t) -> Result<(), Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call; mkdirat reads nothing else of ours.
    check(unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode) } as libc::c_long).map(drop)
}

/// `renameat(from_dir, from, to_dir, to)`: an entry at `to` is replaced itself (a symlink there is not
/// followed).
pub fn renameat(from_dir: RawFd, from: &CStr, to_dir: RawFd, to: &CStr) -> Result<(), Errno> {
    // SAFETY: both names are NUL-terminated strings alive for the call; renameat reads nothing else of ours.
    check(unsafe { libc::renameat(from_dir, from.as_ptr(), to_dir, to.as_ptr()) } as libc::c_long).map(drop)
}

/// `linkat(from_dir, from, to_dir, to, flags)`: a hard link; without `AT_SYMLINK_FOLLOW` a symlink at `from` is
/// linked itself.
pub fn linkat(from_dir: RawFd, from: &CStr, to_dir: RawFd, to: &CStr, flags: i32) -> Result<(), Errno> {
    // SAFETY: both names are NUL-terminated strings alive for the call; linkat reads nothing else of ours.
    check(unsafe { libc::linkat(from_dir, from.as_ptr(), to_dir, to.as_ptr(), flags) } as libc::c_long).map(drop)
}

/// `fchownat(dirfd, name, uid, gid, flags)` (`AT_SYMLINK_NOFOLLOW`: a symlink's own owner).
pub fn fchownat(dirfd: RawFd, name: &CStr, uid: u32, gid: u32, flags: i32) -> Result<(), Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call; fchownat reads nothing else of ours.
    check(unsafe { libc::fchownat(dirfd, name.as_ptr(), uid, gid, flags) } as libc::c_long).map(drop)
}

/// `fchmod(fd, mode)`: the mode of the entry the descriptor is (no path is resolved).
pub fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> Result<(), Errno> {
    // SAFETY: fchmod takes integers only; `fd` is borrowed, so open.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) } as libc::c_long).map(drop)
}

/// `fsync(fd)`: the file's data and metadata on disk.
pub fn fsync(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: fsync takes an integer only; `fd` is borrowed, so open.
    check(unsafe { libc::fsync(fd.as_raw_fd()) } as libc::c_long).map(drop)
}

/// `syncfs(fd)`: everything of the filesystem the descriptor is on, on disk.
pub fn syncfs(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: syncfs takes an integer only; `fd` is borrowed, so open.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) } as libc::c_long).map(drop)
}

/// `statvfs(path)`: the filesystem `path` is on.
pub fn statvfs(path: &CStr) -> Result<libc::statvfs, Errno> {
    // SAFETY: an all-zero `struct statvfs` is a valid value for statvfs to overwrite.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string alive for the call and `st` a live local `struct statvfs`, the one
    // thing statvfs writes.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) } as libc::c_long)?;
    Ok(st)
}

/// `mknodat(dirfd, name, mode, dev)`: a device node, FIFO or (`S_IFCHR` with device 0/0, allowed unprivileged
/// since Linux 5.8) an overlayfs whiteout `name` in `dirfd`; an existing entry is `EEXIST`, never followed.
pub fn mknodat(dirfd: RawFd, name: &CStr, mode: libc::mode_t, major: u32, minor: u32) -> Result<(), Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call; mknodat reads nothing else of ours.
    check(unsafe { libc::mknodat(dirfd, name.as_ptr(), mode, libc::makedev(major, minor)) } as libc::c_long).map(drop)
}

/// `utimensat(dirfd, name, [atime, mtime], AT_SYMLINK_NOFOLLOW)`: the entry's access and modification times,
/// in seconds and nanoseconds since the epoch; a symlink's own times, never its target's.
pub fn set_times_nofollow(dirfd: RawFd, name: &CStr, atime: (i64, i64), mtime: (i64, i64)) -> Result<(), Errno> {
    let times = [
        libc::timespec { tv_sec: atime.0 as libc::time_t, tv_nsec: atime.1 as libc::c_long },
        libc::timespec { tv_sec: mtime.0 as libc::time_t, tv_nsec: mtime.1 as libc::c_long },
    ];
    // SAFETY: `name` is a NUL-terminated string and `times` a live array of the two timespecs utimensat reads,
    // both alive for the call.
    let ret = unsafe { libc::utimensat(dirfd, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    check(ret as libc::c_long).map(drop)
}
