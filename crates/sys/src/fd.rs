//! File descriptors: opening beneath a directory (`openat2`), pipes, reading, writing and closing.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, check_fd, retry_eintr, Errno};

/// `struct open_how` (libc's is non-exhaustive, so it cannot be built with a literal).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, how)`.
pub fn openat2(dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> Result<OwnedFd, Errno> {
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    // SAFETY: `path` is a valid NUL-terminated string and `how` a fully initialised open_how that outlives the
    // call; the size passed is the size of that struct.
    let ret = unsafe {
        libc::syscall(libc::SYS_openat2, dirfd, path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    let fd = check_fd(ret)?;
    // SAFETY: openat2 succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `close(fd)`, ignoring errors (there is nothing useful to do about them here).
pub fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closing an fd we own; a stale number only yields EBADF.
        unsafe { libc::close(fd) };
    }
}

/// Closes every file descriptor from `first` to `last` inclusive.
pub fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range takes only integers; the fds in the range are not used afterwards by this process.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    check(ret).map(drop)
}

/// Closes every file descriptor above 2 except those in `keep`, which must be sorted ascending.
pub fn close_fds_except(keep: &[RawFd]) -> Result<(), Errno> {
    let mut next: u32 = 3;
    for &fd in keep {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd < next {
            continue;
        }
        close_range(next, fd - 1)?;
        next = fd + 1;
    }
    close_range(next, u32::MAX)
}

/// `write(fd, buf)` of the whole buffer, retrying on EINTR and short writes.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice of the given length.
        let n = retry_eintr(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) as libc::c_long })?;
        buf = buf.get(n as usize..).unwrap_or(&[]);
    }
    Ok(())
}

/// `read(fd, buf)`, retrying on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a valid writable slice of the given length.
    retry_eintr(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) as libc::c_long }).map(|n| n as usize)
}

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub fn pipe_cloexec() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: pipe2 succeeded, so both are open descriptors it just created, owned by nothing else; each
    // OwnedFd closes its own exactly once.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of close-on-exec `AF_UNIX` stream sockets.
pub fn socketpair_cloexec() -> Result<(OwnedFd, OwnedFd), Errno> {
    let mut pair = [-1 as RawFd; 2];
    // SAFETY: socketpair fills a live two-int array.
    let ret = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr()) };
    check(ret as libc::c_long)?;
    // SAFETY: socketpair succeeded, so both are open descriptors it just created, owned by nothing else; each
    // OwnedFd closes its own exactly once.
    Ok(unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) })
}

/// `open(path, flags)` (the caller passes `O_CLOEXEC` when it wants it).
pub fn open(path: &CStr, flags: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string; open takes integer flags.
    let fd = check_fd(unsafe { libc::open(path.as_ptr(), flags) } as libc::c_long)?;
    // SAFETY: open succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `flock(fd, operation)` (`LOCK_EX`, `LOCK_NB`...).
pub fn flock(fd: BorrowedFd<'_>, operation: i32) -> Result<(), Errno> {
    // SAFETY: flock takes only integers; `fd` is borrowed, so open.
    check(unsafe { libc::flock(fd.as_raw_fd(), operation) } as libc::c_long).map(drop)
}

/// A standard stream of this process, by its descriptor number.
#[derive(Clone, Copy)]
#[repr(i32)]
pub enum StandardStream {
    Input = 0,
    Output = 1,
    Error = 2,
}

/// `dup2(from, stream)`: the standard stream `stream` refers to what `from` does (its old descriptor is closed
/// by the kernel; the standard streams belong to the whole process, so no owner of ours loses its descriptor).
pub fn dup_onto_standard_stream(from: BorrowedFd<'_>, stream: StandardStream) -> Result<(), Errno> {
    // SAFETY: dup2 takes only integers; `from` is borrowed, so open, and the target is a standard stream.
    check(unsafe { libc::dup2(from.as_raw_fd(), stream as i32) } as libc::c_long).map(drop)
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, 3)`: a close-on-exec copy of `fd`, numbered 3 or above.
pub fn duplicate_cloexec(fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: fcntl with F_DUPFD_CLOEXEC takes only integers; a number that is not open only yields EBADF.
    let copy = check_fd(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) } as libc::c_long)?;
    // SAFETY: fcntl succeeded, so `copy` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// `fstat(fd)`.
pub fn fstat(fd: RawFd) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero `struct stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `struct stat` into a live local; a closed fd only yields EBADF.
    check(unsafe { libc::fstat(fd, &mut st) } as libc::c_long)?;
    Ok(st)
}

/// `fstatfs(fd)`: the filesystem the descriptor is on.
pub fn fstatfs(fd: RawFd) -> Result<libc::statfs, Errno> {
    // SAFETY: an all-zero `struct statfs` is a valid value for fstatfs to overwrite.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one `struct statfs` into a live local; a closed fd only yields EBADF.
    check(unsafe { libc::fstatfs(fd, &mut sfs) } as libc::c_long)?;
    Ok(sfs)
}

/// `fchown(fd, uid, gid)`.
pub fn fchown(fd: RawFd, uid: u32, gid: u32) -> Result<(), Errno> {
    // SAFETY: fchown takes integers only.
    check(unsafe { libc::fchown(fd, uid, gid) } as libc::c_long).map(drop)
}

/// `symlinkat(target, dirfd, name)`: a symlink `name` in `dirfd` pointing at `target`.
pub fn symlinkat(target: &CStr, dirfd: RawFd, name: &CStr) -> Result<(), Errno> {
    // SAFETY: both are NUL-terminated strings alive for the call; symlinkat only reads them.
    check(unsafe { libc::symlinkat(target.as_ptr(), dirfd, name.as_ptr()) } as libc::c_long).map(drop)
}

/// `openat(dirfd, name, flags, mode)`: a new descriptor, owned.
pub fn openat(dirfd: RawFd, name: &CStr, flags: i32, mode: libc::mode_t) -> Result<OwnedFd, Errno> {
    // SAFETY: a NUL-terminated string alive for the call; openat only reads it.
    let fd = check_fd(unsafe { libc::openat(dirfd, name.as_ptr(), flags, mode as libc::c_uint) } as libc::c_long)?;
    // SAFETY: openat succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the caller's effective ids may access `path` with `mode` (`faccessat(AT_FDCWD, path, mode,
/// AT_EACCESS)`; `W_OK`, `R_OK`...).
pub fn effective_access(path: &CStr, mode: i32) -> bool {
    // SAFETY: a NUL-terminated string alive for the call; faccessat only reads it.
    unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// `mkdirat(dirfd, name, mode)`.
pub fn mkdirat(dirfd: RawFd, name: &CStr, mode: libc::mode_t) -> Result<(), Errno> {
    // SAFETY: a NUL-terminated string alive for the call; mkdirat only reads it.
    check(unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode) } as libc::c_long).map(drop)
}

/// One `write(fd, buf)`, retrying on EINTR: how many bytes went (for files that must be written in one call,
/// like `/proc/PID/uid_map`; [`write_all`] for everything else).
pub fn write(fd: RawFd, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a valid readable slice of the given length.
    retry_eintr(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) as libc::c_long }).map(|n| n as usize)
}

/// `readlinkat(dirfd, path)` into `buf`: how many bytes of the link's target it holds (cut to `buf`'s length;
/// no NUL is added).
pub fn readlinkat(dirfd: RawFd, path: &CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `path` is a NUL-terminated string alive for the call; readlinkat writes at most `buf.len()` bytes
    // into the live, writable `buf`.
    let n = unsafe { libc::readlinkat(dirfd, path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// `faccessat(dirfd, path, mode, flags)` (`F_OK`, `R_OK`...; `AT_EACCESS`...): `Ok` when the access is allowed,
/// else why not.
pub fn faccessat(dirfd: RawFd, path: &CStr, mode: i32, flags: i32) -> Result<(), Errno> {
    // SAFETY: a NUL-terminated string alive for the call; faccessat only reads it.
    check(unsafe { libc::faccessat(dirfd, path.as_ptr(), mode, flags) } as libc::c_long).map(drop)
}

/// `poll(fds, timeout_ms)`, once (an interruption is the caller's `EINTR`): how many descriptors have events.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize, Errno> {
    // SAFETY: `fds` is a live, writable array of exactly the length passed; poll writes only their `revents`.
    check(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) } as libc::c_long)
        .map(|n| n as usize)
}

/// `fcntl(fd, F_SETFD, flags)`: the descriptor's flags (`FD_CLOEXEC` or 0).
pub fn set_descriptor_flags(fd: RawFd, flags: i32) -> Result<(), Errno> {
    // SAFETY: F_SETFD takes integers only; a number that is not open only yields EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } as libc::c_long).map(drop)
}

/// Takes ownership of descriptor `fd`, inherited across `exec` from the process that started this one (which
/// told its number, on the command line say), and makes it close-on-exec again. `EBADF` when it is not open.
///
/// The caller must own that number: call once per number, at start-up, before anything of this process could
/// have opened (and so own) it.
pub fn take_inherited(fd: RawFd) -> Result<OwnedFd, Errno> {
    if fd < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: F_GETFD takes integers only; a number that is not open yields EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) } as libc::c_long)?;
    // Close-on-exec again, so nothing this process starts inherits it. Best effort: the descriptor is usable
    // either way.
    let _ = set_descriptor_flags(fd, libc::FD_CLOEXEC);
    // SAFETY: `fd` is open (F_GETFD succeeded) and, per this function's contract, the caller's alone: no other
    // owner exists in this process, so the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fcntl(fd, F_SETFL, flags)`: the open file description's status flags (`O_NONBLOCK`, `O_APPEND`...).
pub fn set_status_flags(fd: RawFd, flags: i32) -> Result<(), Errno> {
    // SAFETY: fcntl with F_SETFL takes only integers; a number that is not open only yields EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } as libc::c_long).map(drop)
}

/// `access(path, mode)` (`F_OK`, `X_OK`...), with the caller's real ids.
pub fn access(path: &CStr, mode: i32) -> Result<(), Errno> {
    // SAFETY: a NUL-terminated string alive for the call; access only reads it.
    check(unsafe { libc::access(path.as_ptr(), mode) } as libc::c_long).map(drop)
}
