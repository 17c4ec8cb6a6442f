//! Signals.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::{check, check_fd, Errno};

/// `kill(pid, sig)`.
pub fn kill(pid: libc::pid_t, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill takes only integers.
    check(unsafe { libc::kill(pid, sig) } as libc::c_long).map(drop)
}

/// A signal's action as it was before [`ignore`] changed it, to be put back with [`restore`]. Opaque: it can
/// only come from the kernel, so restoring it never installs a handler that was not installed before.
#[derive(Clone, Copy)]
pub struct PreviousAction(libc::sighandler_t);

/// `signal(sig, SIG_DFL)`: the signal's default action.
pub fn set_default_action(sig: i32) {
    // SAFETY: setting a signal's disposition to SIG_DFL is always valid and has no memory effects.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// `signal(sig, SIG_IGN)`: the signal is ignored; returns the action it had, `None` when signal() failed.
pub fn ignore(sig: i32) -> Option<PreviousAction> {
    // SAFETY: signal() with an integer and SIG_IGN; no handler function is installed.
    let old = unsafe { libc::signal(sig, libc::SIG_IGN) };
    (old != libc::SIG_ERR).then_some(PreviousAction(old))
}

/// Puts back the action [`ignore`] returned for `sig`.
pub fn restore(sig: i32, previous: PreviousAction) {
    // SAFETY: puts back an action signal() returned earlier (SIG_DFL, SIG_IGN or the handler that was set then,
    // which `PreviousAction` being opaque guarantees).
    unsafe { libc::signal(sig, previous.0) };
}

/// `signalfd(-1, {signals}, SFD_CLOEXEC | SFD_NONBLOCK)`: a new descriptor that reads the given signals (which
/// the caller keeps blocked).
pub fn signalfd(signals: &[i32]) -> Result<OwnedFd, Errno> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the sigset it is given; sigaddset then changes the initialised set, and
    // signalfd reads it. No other pointer.
    let fd = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &s in signals {
            libc::sigaddset(set.as_mut_ptr(), s);
        }
        check_fd(libc::signalfd(-1, set.as_ptr(), libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) as libc::c_long)?
    };
    // SAFETY: signalfd succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `pthread_sigmask(SIG_BLOCK, {signals})`: the calling thread blocks the given signals (threads it starts
/// later inherit the mask).
pub fn block(signals: &[i32]) -> Result<(), Errno> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the sigset it is given; sigaddset then changes the initialised set, and
    // pthread_sigmask reads it; the old-mask pointer may be null.
    let ret = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for &s in signals {
            libc::sigaddset(set.as_mut_ptr(), s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut())
    };
    // pthread_sigmask returns the error number itself, not -1.
    if ret == 0 {
        Ok(())
    } else {
        Err(ret)
    }
}
