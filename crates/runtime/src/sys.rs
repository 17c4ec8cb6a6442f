//! Thin wrappers over the raw system calls the sandbox needs.
//!
//! Every function here is async-signal-safe and allocates nothing: they are called after `clone`, in the
//! sandbox's init and in the command's process, where only such work is allowed. Errors are the raw errno, which
//! the caller turns into a [`crate::failure::ChildFailure`] record or a typed error.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// A raw errno value.
pub type Errno = i32;

/// The calling thread's errno.
pub fn errno() -> Errno {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno; reading an int is always safe.
    unsafe { *libc::__errno_location() }
}

/// Turns a `-1 means errno` return value into a Result.
pub fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// Like [`check`], for calls returning a file descriptor.
pub fn check_fd(ret: libc::c_long) -> Result<RawFd, Errno> {
    check(ret).map(|fd| fd as RawFd)
}

/// Retries a call interrupted by a signal.
pub fn retry_eintr(mut call: impl FnMut() -> libc::c_long) -> Result<libc::c_long, Errno> {
    loop {
        match check(call()) {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// `struct open_how` (libc's is non-exhaustive, so it cannot be built with a literal).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dirfd, path, how)`.
pub fn openat2(dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> Result<RawFd, Errno> {
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    // SAFETY: `path` is a valid NUL-terminated string and `how` a fully initialised open_how that outlives the
    // call; the size passed is the size of that struct.
    let ret = unsafe {
        libc::syscall(libc::SYS_openat2, dirfd, path.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
    };
    check_fd(ret)
}

/// `pivot_root(new_root, put_old)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
    // SAFETY: both are valid NUL-terminated strings.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(ret).map(drop)
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
pub fn pipe_cloexec() -> Result<(RawFd, RawFd), Errno> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    Ok((fds[0], fds[1]))
}

/// `prctl(option, arg2, 0, 0, 0)`.
pub fn prctl(option: i32, arg2: libc::c_ulong) -> Result<libc::c_long, Errno> {
    // SAFETY: the options used by airlock take integer arguments only.
    check(unsafe { libc::prctl(option, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) }
        as libc::c_long)
}

/// `kill(pid, sig)`.
pub fn kill(pid: libc::pid_t, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill takes only integers.
    check(unsafe { libc::kill(pid, sig) } as libc::c_long).map(drop)
}

/// A fork: `clone(SIGCHLD | extra_flags)` without a new stack. Returns 0 in the child, the child's pid in the
/// parent. With `CLONE_PIDFD` in `extra_flags`, `pidfd` receives a pidfd for the child.
///
/// # Safety
/// The caller's process must be single-threaded (so the child inherits no lock held by another thread), and the
/// child must only do async-signal-safe work before it execs or exits.
pub unsafe fn clone_process(extra_flags: libc::c_ulong, pidfd: Option<&mut RawFd>) -> Result<libc::pid_t, Errno> {
    let pidfd_ptr = match pidfd {
        Some(p) => p as *mut RawFd,
        None => std::ptr::null_mut(),
    };
    // SAFETY: a stack pointer of 0 makes clone behave like fork (the child runs on a copy of our stack); the
    // parent_tid pointer, when CLONE_PIDFD is set, points at a live int owned by the caller. Single-threadedness
    // is the caller's obligation (see # Safety).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            extra_flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            pidfd_ptr,
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    check(ret).map(|pid| pid as libc::pid_t)
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup `clone_args.cgroup` refers to.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args`, version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A fork with `clone3`: like [`clone_process`] with `CLONE_PIDFD`, and, given a cgroup directory fd, the child
/// is born in that cgroup (`CLONE_INTO_CGROUP`), which costs nothing, where moving it afterwards would wait for
/// an RCU grace period.
///
/// # Safety
/// As for [`clone_process`]: a single-threaded caller, and a child that only does async-signal-safe work.
pub unsafe fn clone3_process(flags: u64, pidfd: &mut RawFd, cgroup: Option<RawFd>) -> Result<libc::pid_t, Errno> {
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: `args` is a live, fully initialised clone_args of the size passed; `pidfd` points at a live int for
    // the kernel to fill; stack 0 gives fork semantics. Single-threadedness is the caller's obligation.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    check(ret).map(|pid| pid as libc::pid_t)
}

/// `_exit(code)`: leave the process without running atexit handlers or flushing Rust's buffers (both belong to
/// the parent's copy of the memory).
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}
