//! Processes: forking with `clone`/`clone3`, `prctl`, leaving with `_exit`.

use std::ffi::CStr;
use std::marker::PhantomData;
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
    // SAFETY: `pidfd` points at a live int for the kernel to fill; stack 0 gives fork semantics.
    // Single-threadedness is the caller's obligation, passed on.
    unsafe { clone3(&mut args) }
}

/// The `clone3` system call with `args` (the one place it is made); 0 in the child, the child's pid in the caller.
///
/// # Safety
/// Every pointer in `args` (`pidfd`, `set_tid`, ...) points at live memory of the kind the kernel expects; with a
/// stack of 0 (fork semantics) the caller must be single-threaded and the child do async-signal-safe work only,
/// as for [`clone_process`].
unsafe fn clone3(args: &mut CloneArgs) -> Result<libc::pid_t, Errno> {
    // SAFETY: `args` is a live, fully initialised clone_args of the size passed; what its pointers refer to is the
    // caller's obligation (see # Safety).
    let ret = unsafe { libc::syscall(libc::SYS_clone3, args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) };
    check(ret).map(|pid| pid as libc::pid_t)
}

/// `_exit(code)`: leave the process without running atexit handlers or flushing Rust's buffers (both belong to
/// the parent's copy of the memory).
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no user-space state.
    unsafe { libc::_exit(code) }
}

/// The caller's process id (`getpid`), as its own pid namespace numbers it.
pub fn pid() -> libc::pid_t {
    // SAFETY: getpid cannot fail and takes no arguments.
    unsafe { libc::getpid() }
}

/// Which side of a [`fork`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    Child,
    Parent(libc::pid_t),
}

/// A fork (`clone(SIGCHLD)`, as [`clone_process`] with no flags) that is safe to call: it first makes sure of
/// what makes a fork unsafe. `unshare(CLONE_VM)` has nothing to unshare, so it changes nothing, but the kernel
/// refuses it (`EINVAL`, returned here, nothing forked) unless the calling thread is the only user of its
/// address space: no other thread, no `CLONE_VM` child. Only this thread could start another before the clone,
/// and it is busy here. So the child inherits no lock another thread held, and may do any work (it is a copy: the
/// descriptors and buffers it shares with the parent are the caller's business).
pub fn fork() -> Result<Forked, Errno> {
    only_thread()?;
    // SAFETY: clone_process asks for a single-threaded caller, checked just above (only this thread could have
    // started another since), and for a child doing async-signal-safe work only, which matters only when another
    // thread may hold a lock the child inherits: with one thread, none can.
    let pid = unsafe { clone_process(0, None) }?;
    Ok(if pid == 0 { Forked::Child } else { Forked::Parent(pid) })
}

/// A fork whose child gets the pid `pid` in the caller's pid namespace (`clone3` with `set_tid`, Linux 5.5): the
/// caller needs `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE` over that namespace, and the pid must be free
/// (`EEXIST` otherwise). Nothing is forked when it fails. Safe as [`fork`] is: refused (`EINVAL`) unless the
/// caller is single-threaded.
pub fn fork_with_pid(pid: libc::pid_t) -> Result<Forked, Errno> {
    only_thread()?;
    let set_tid = [pid];
    let mut args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: set_tid.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: `set_tid` is a live array of the one pid `args` names; stack 0 gives fork semantics. The caller was
    // checked to be single-threaded just above, so the child inherits no lock another thread held and may do any
    // work.
    let child = unsafe { clone3(&mut args) }?;
    Ok(if child == 0 { Forked::Child } else { Forked::Parent(child) })
}

/// `Ok` when the calling thread is the only user of its address space (no other thread): `unshare(CLONE_VM)`
/// has nothing to unshare, so it changes nothing, but the kernel refuses it (`EINVAL`) otherwise.
fn only_thread() -> Result<(), Errno> {
    // SAFETY: unshare takes only integers; with CLONE_VM alone it unshares nothing (the check is its only effect).
    check(unsafe { libc::unshare(libc::CLONE_VM) } as libc::c_long).map(drop)
}

/// Leaves the forked child with status 127 if `child` unwinds, so a panic never unwinds into the caller's frames
/// (which belong to the parent's copy of the program).
struct ExitOnUnwind;

impl Drop for ExitOnUnwind {
    fn drop(&mut self) {
        exit_immediately(127)
    }
}

/// `fork()`: runs `child` in a copy of this process, which then leaves with `child`'s return value as its exit
/// status (`_exit`: no atexit handler, no flush of Rust's buffers, no return into the caller). Returns the child's
/// pid, to be reaped with [`waitpid`].
///
/// The child is a copy of the calling thread only: when the caller has other threads, whatever lock one of them
/// held at the fork stays held in the child, so `child` keeps to async-signal-safe work (this crate's functions,
/// memory prepared before the fork) or it may wait forever. It cannot reach the parent's memory.
pub fn fork_and_run(child: impl FnOnce() -> i32) -> Result<libc::pid_t, Errno> {
    // SAFETY: glibc's fork runs its fork handlers (its own locks are reset in the child) and gives the child a
    // copy-on-write copy of this address space. The child never returns from here: it runs `child`, then
    // `_exit`s (also when `child` unwinds, through the guard), so no frame of the caller runs twice and nothing
    // the parent owns is dropped by the child. What the child may safely do is `child`'s obligation, documented
    // above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(crate::errno());
    }
    if pid == 0 {
        let _unwinding = ExitOnUnwind;
        exit_immediately(child())
    }
    Ok(pid)
}

/// `fchdir(dir)`: the working directory becomes the directory `dir` refers to.
pub fn fchdir(dir: RawFd) -> Result<(), Errno> {
    // SAFETY: fchdir takes an integer only; a number that is not open only yields EBADF.
    check(unsafe { libc::fchdir(dir) } as libc::c_long).map(drop)
}

/// The parent's pid (`getppid`).
pub fn parent_pid() -> libc::pid_t {
    // SAFETY: getppid cannot fail and takes no arguments.
    unsafe { libc::getppid() }
}

/// `struct pidfd_info` (`linux/pidfd.h`), its first version (64 bytes).
#[repr(C)]
#[derive(Default)]
pub struct PidfdInfo {
    pub mask: u64,
    pub cgroupid: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub ids: [u32; 8],
    pub spare: u32,
}

/// `PIDFD_INFO_PID`: ask for the pids (`pid`, `tgid`, `ppid`).
pub const PIDFD_INFO_PID: u64 = 1;

/// `PIDFD_GET_INFO` = `_IOWR(0xFF, 11, struct pidfd_info)` (6.13+).
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;

/// `ioctl(pidfd, PIDFD_GET_INFO)`: what `mask` asks (e.g. [`PIDFD_INFO_PID`]) of the process `pidfd` refers to.
pub fn pidfd_info(pidfd: BorrowedFd<'_>, mask: u64) -> Result<PidfdInfo, Errno> {
    let mut info = PidfdInfo { mask, ..PidfdInfo::default() };
    // SAFETY: PIDFD_GET_INFO writes at most size_of::<PidfdInfo>() bytes (the size the request encodes) into
    // `info`, a live local; `pidfd` is borrowed, so open.
    check(unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_INFO as _, &mut info as *mut PidfdInfo) } as libc::c_long)?;
    Ok(info)
}

/// `command`'s child runs `before_exec` between its fork and its `execve` (std's `CommandExt::pre_exec`); an
/// error fails the spawn with it.
///
/// As for [`fork_and_run`]: the child is a copy of the calling thread only, so `before_exec` keeps to
/// async-signal-safe work (this crate's functions, on values captured before the spawn) or it may wait forever
/// on a lock another thread held. It cannot reach the parent's memory.
pub fn run_before_exec(
    command: &mut std::process::Command,
    before_exec: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
) {
    use std::os::unix::process::CommandExt;
    // SAFETY: std runs the closure in the forked child (glibc's fork, its locks reset there) before exec, on the
    // child's copy-on-write copy of this address space; the closure owns what it captured and returns, so std's
    // exec (or its error report) follows. What the closure may safely do is its obligation, documented above.
    unsafe {
        command.pre_exec(before_exec);
    }
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

/// The stack of a [`vfork_and_run`] child, above one guard page: `execve`'s caller needs far less.
const VFORK_STACK_BYTES: usize = 256 * 1024;

/// `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does: runs `child` in a new process that shares this one's
/// memory, on a stack of its own, while the caller waits until the child has replaced itself (`execve`) or
/// exited. Nothing is copied (a fork copies the page tables and then every page either side writes), so it
/// costs a fraction of a fork of a large process. Returns the child's pid.
///
/// `child` must end in `execve` or [`exit_immediately`] (an unwinding one is ended with status 127), and must
/// keep to async-signal-safe work: the caller's memory is its memory, and what it writes outside its own stack
/// the caller sees. The caller is suspended meanwhile, so nothing else runs in that memory. Refused (`EINVAL`,
/// nothing started) unless the caller is single-threaded.
pub fn vfork_and_run(child: &mut dyn FnMut() -> i32) -> Result<libc::pid_t, Errno> {
    extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` below, alive until this child has exec'd or exited, which the
        // caller waits for (CLONE_VFORK) before that frame can end.
        let child = unsafe { &mut *arg.cast::<&mut dyn FnMut() -> i32>() };
        let _unwinding = ExitOnUnwind;
        exit_immediately(child())
    }
    only_thread()?;
    // SAFETY: a fresh private anonymous mapping: no memory of ours is aliased.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            VFORK_STACK_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(crate::errno());
    }
    // The lowest page is the guard: a child that overflows its stack faults instead of writing into ours.
    // SAFETY: the first page of the mapping just made (the mapping is far larger than any page size), unused.
    let guarded = check(unsafe { libc::mprotect(stack, page_size(), libc::PROT_NONE) } as libc::c_long);
    let mut child = child;
    let spawned = guarded.and_then(|_| {
        // SAFETY: `start` runs on the new stack (its top: the stack grows down, and the mapping is 16-byte aligned)
        // with a pointer to `child`, which lives in this frame until clone returns, and clone returns in the
        // caller only once the child has exec'd or exited (CLONE_VFORK), after which the child touches none of
        // this memory. The caller is single-threaded (checked above), so the child inherits no lock another
        // thread held; errno and every other thread-local it shares belong to the suspended caller alone.
        check(unsafe {
            libc::clone(
                start,
                stack.cast::<u8>().add(VFORK_STACK_BYTES).cast(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                (&mut child as *mut &mut dyn FnMut() -> i32).cast(),
            )
        } as libc::c_long)
    });
    // SAFETY: the mapping made above; the child no longer runs on it (it exec'd or exited, see above).
    unsafe { libc::munmap(stack, VFORK_STACK_BYTES) };
    spawned.map(|pid| pid as libc::pid_t)
}

/// The size of a memory page (`sysconf(_SC_PAGESIZE)`): 4 KiB on x86_64, 4, 16 or 64 KiB on aarch64.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf takes an integer only; _SC_PAGESIZE is always known, the fallback only satisfies the type.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    }
}

/// What [`fork_with_pidfd`] returned, in the process it returned in.
pub enum PidfdFork {
    /// In the new process.
    Child,
    /// In the caller: the child's pid and a pidfd that refers to it.
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
}

/// A fork that gives the caller a pidfd for its child: with `cgroup`, `clone3` with `CLONE_INTO_CGROUP` (the
/// child is born in that cgroup, see [`clone3_process`]), otherwise `clone` with `CLONE_PIDFD`. `flags`: extra
/// `CLONE_*` flags (new namespaces).
///
/// Safe as [`fork`] is: it is refused (`EINVAL`, nothing forked) unless the caller is single-threaded.
pub fn fork_with_pidfd(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<PidfdFork, Errno> {
    only_thread()?;
    let mut pidfd: RawFd = -1;
    // SAFETY: clone_process and clone3_process ask for a single-threaded caller, checked just above (only this
    // thread could have started another since); with one thread no lock can be held by another, so the child may
    // do any work. `pidfd` is a live int for the kernel to fill.
    let pid = unsafe {
        match cgroup {
            Some(dir) => clone3_process(flags, &mut pidfd, Some(dir.as_raw_fd()))?,
            None => clone_process((flags | libc::CLONE_PIDFD as u64) as libc::c_ulong, Some(&mut pidfd))?,
        }
    };
    if pid == 0 {
        return Ok(PidfdFork::Child);
    }
    // SAFETY: the clone succeeded with CLONE_PIDFD, so the kernel stored in `pidfd` a new open descriptor that
    // refers to the child, owned by nothing else.
    Ok(PidfdFork::Parent { pid, pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) } })
}

/// A NULL-terminated array of C strings for `execve`, of a capacity fixed when it is made: [`CStrArray::push`]
/// never allocates, so it may be filled after `fork`. The strings are borrowed for `'a`, so the array can never
/// point at freed memory.
pub struct CStrArray<'a> {
    /// Always holds a terminating NULL after the strings pushed so far.
    pointers: Vec<*const libc::c_char>,
    strings: PhantomData<&'a CStr>,
}

/// The array was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayFull;

impl<'a> CStrArray<'a> {
    /// An empty array with room for `capacity` strings (allocates: call before `fork`).
    pub fn with_capacity(capacity: usize) -> CStrArray<'a> {
        let mut pointers = Vec::with_capacity(capacity + 1);
        pointers.push(std::ptr::null());
        CStrArray { pointers, strings: PhantomData }
    }

    /// Empties the array, keeping its room; gives it a new lifetime for its strings.
    pub fn reuse<'b>(mut self) -> CStrArray<'b> {
        self.pointers.clear();
        self.pointers.push(std::ptr::null());
        CStrArray { pointers: self.pointers, strings: PhantomData }
    }

    /// Appends `s`; `ArrayFull` (and nothing changes) when the room is used up.
    pub fn push(&mut self, s: &'a CStr) -> Result<(), ArrayFull> {
        if self.pointers.len() == self.pointers.capacity() {
            return Err(ArrayFull);
        }
        let last = self.pointers.len() - 1;
        self.pointers[last] = s.as_ptr();
        self.pointers.push(std::ptr::null());
        Ok(())
    }

    /// The number of strings.
    pub fn len(&self) -> usize {
        self.pointers.len() - 1
    }

    /// The NULL-terminated pointers, for [`execute`].
    pub fn as_pointers(&self) -> &[*const libc::c_char] {
        &self.pointers
    }

    /// Whether the array holds no string.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `malloc_trim(0)`: gives the heap's free memory back to the kernel (the top of the heap, and whole free pages
/// inside it). For a long-lived process that is done with a burst of allocations.
pub fn trim_heap() {
    // SAFETY: malloc_trim takes an integer and only walks the allocator's own free lists under its lock.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_is_refused_while_another_thread_runs() {
        // The test harness runs this test on a thread of its own: the process has two at least.
        assert_eq!(fork(), Err(libc::EINVAL));
    }
}
