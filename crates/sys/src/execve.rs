//! Starting a program: `execve` over argument and environment arrays built without allocating (so a forked
//! child may build them), the working directory, the session, and waiting for children.

use std::ffi::CStr;
use std::marker::PhantomData;

use crate::{check, Errno};

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

    /// Whether the array holds no string.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `execve(path, argv, envp)`: returns only when it failed, with the errno.
pub fn execve(path: &CStr, argv: &CStrArray<'_>, envp: &CStrArray<'_>) -> Errno {
    // SAFETY: `path` is NUL-terminated; both arrays are NULL-terminated and point at C strings borrowed for at
    // least as long as the arrays (their lifetime parameter), so every pointer is valid during the call.
    unsafe { libc::execve(path.as_ptr(), argv.pointers.as_ptr(), envp.pointers.as_ptr()) };
    crate::errno()
}

/// `chdir(path)`.
pub fn change_directory(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::chdir(path.as_ptr()) } as libc::c_long).map(drop)
}

/// `setsid()`: a new session and process group led by the caller.
pub fn new_session() -> Result<(), Errno> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() } as libc::c_long).map(drop)
}

/// `waitpid(-1, &status, WNOHANG)`: a child that has ended, as (pid, wait status), or `None` when none has yet
/// (`ECHILD` when there are no children at all).
pub fn reap_any_child() -> Result<Option<(libc::pid_t, i32)>, Errno> {
    let mut status = 0;
    // SAFETY: waitpid writes one int into a live local.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } as libc::c_long)?;
    Ok((pid != 0).then_some((pid as libc::pid_t, status)))
}

/// `poll(fds, timeout_ms)`: the number of entries with events (0 at the timeout), retried when interrupted.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Result<usize, Errno> {
    crate::retry_eintr(|| {
        // SAFETY: the pointer and count describe a live, initialised slice of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) as libc::c_long }
    })
    .map(|n| n as usize)
}

/// `sigprocmask(how, {signals}, NULL)` with `how` one of `SIG_BLOCK`, `SIG_UNBLOCK`, `SIG_SETMASK`.
pub fn set_signal_mask(how: i32, signals: &[i32]) -> Result<(), Errno> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set, sigaddset changes the initialised set, sigprocmask reads it; the
    // old-set pointer is null.
    check(unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &s in signals {
            libc::sigaddset(set.as_mut_ptr(), s);
        }
        libc::sigprocmask(how, set.as_ptr(), std::ptr::null_mut())
    } as libc::c_long)
    .map(drop)
}

/// `access(path, mode)` with the real ids (`F_OK`: whether it exists).
pub fn access(path: &CStr, mode: i32) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string; the mode is an integer.
    check(unsafe { libc::access(path.as_ptr(), mode) } as libc::c_long).map(drop)
}
