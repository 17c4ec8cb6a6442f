//! Processes: forking with `clone`/`clone3`, `prctl`, leaving with `_exit`.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, check_fd, Errno};

/// `prctl(option, arg2, 0, 0, 0)`.
pub fn prctl(option: i32, arg2: libc::c_ulong) -> Result<libc::c_long, Errno> {
    // SAFETY: the options used by airlock take integer arguments only.
    check(unsafe { libc::prctl(option, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) }
        as libc::c_long)
}

/// The real uid and gid of the caller (`getuid`, `getgid`).
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail and take no arguments.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// The caller's effective uid (`geteuid`).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid cannot fail and takes no arguments.
    unsafe { libc::geteuid() }
}

/// The caller's effective uid and gid (`geteuid`, `getegid`).
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail and take no arguments.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// The hard limit of resource `resource` (`RLIMIT_*`), or `None` when `getrlimit` fails.
pub fn hard_limit(resource: u32) -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `struct rlimit` into a live local.
    (unsafe { libc::getrlimit(resource as _, &mut limit) } == 0).then_some(limit.rlim_max)
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`: signals the process the pidfd refers to (never a process that reused
/// its pid).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> Result<(), Errno> {
    // SAFETY: a borrowed (so open) descriptor, a signal number, a null siginfo pointer (documented: the kernel then
    // fills in the info of a kill(2)) and zero flags; no memory of ours is read.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<u8>(), 0) };
    check(ret).map(drop)
}

/// `pidfd_open(pid, 0)`: a descriptor that refers to process `pid` for as long as it is open.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes only integers and reads no memory of ours.
    let fd = check_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) })?;
    // SAFETY: pidfd_open succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// `setsid()`: the caller leads a new session (and process group) without a controlling terminal; returns the
/// session's id.
pub fn new_session() -> Result<libc::pid_t, Errno> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() } as libc::c_long).map(|sid| sid as libc::pid_t)
}

/// `chdir(path)`.
pub fn change_directory(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string; chdir only reads it.
    check(unsafe { libc::chdir(path.as_ptr()) } as libc::c_long).map(drop)
}

/// `setrlimit(resource, {soft, hard})` (`RLIMIT_*`).
pub fn set_limit(resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads one `struct rlimit` from a live local.
    check(unsafe { libc::setrlimit(resource as _, &limit) } as libc::c_long).map(drop)
}

/// `execve(path, argv, envp)`: replaces the process, so it returns only on failure, with the errno. `argv` and
/// `envp` are the NULL-terminated pointer arrays execve takes (each pointer a NUL-terminated string); an array
/// whose last element is not NULL is refused with `EINVAL` before the call.
pub fn execute(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> Errno {
    if argv.last().is_none_or(|p| !p.is_null()) || envp.last().is_none_or(|p| !p.is_null()) {
        return libc::EINVAL;
    }
    // SAFETY: `path` is a valid NUL-terminated string and both arrays are live and end in NULL (checked above).
    // execve only reads through the pointers, in the kernel: one that is not a readable string is reported as
    // EFAULT, never read by this process. On success nothing of this process remains.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    crate::errno()
}

/// What a fork returned, in the process it returned in.
pub enum Forked {
    /// In the new process.
    Child,
    /// In the caller: the child's pid and a pidfd that refers to it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// A fork without a pidfd ([`clone_process`] with no extra flags): 0 in the child, the child's pid in the caller.
///
/// The contract of [`clone_process`] holds for every caller, and is airlock's design rather than something this
/// function can check: the processes that fork (the supervisor before it starts any thread, the sandbox's init,
/// the `airlock exec` process, the probe's child) are single-threaded, and their children do only
/// async-signal-safe work (no allocation) until they exec or leave with [`exit_immediately`].
pub fn fork() -> Result<libc::pid_t, Errno> {
    // SAFETY: the caller's obligations of clone_process are this function's documented contract (see above).
    unsafe { clone_process(0, None) }
}

/// A fork that gives the caller a pidfd for its child: with `cgroup`, `clone3` with `CLONE_INTO_CGROUP` (the
/// child is born in that cgroup, see [`clone3_process`]), otherwise `clone` with `CLONE_PIDFD`. `flags`: extra
/// `CLONE_*` flags (new namespaces).
///
/// The contract is [`fork`]'s: a single-threaded caller, a child that does only async-signal-safe work.
pub fn fork_with_pidfd(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<Forked, Errno> {
    let mut pidfd: RawFd = -1;
    // SAFETY: the caller's obligations of clone_process and clone3_process are this function's documented
    // contract (see [`fork`]); `pidfd` is a live int for the kernel to fill.
    let pid = unsafe {
        match cgroup {
            Some(dir) => clone3_process(flags, &mut pidfd, Some(dir.as_raw_fd()))?,
            None => clone_process((flags | libc::CLONE_PIDFD as u64) as libc::c_ulong, Some(&mut pidfd))?,
        }
    };
    if pid == 0 {
        return Ok(Forked::Child);
    }
    // SAFETY: the clone succeeded with CLONE_PIDFD, so the kernel stored in `pidfd` a new open descriptor that
    // refers to the child, owned by nothing else.
    Ok(Forked::Parent { pid, pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) } })
}
