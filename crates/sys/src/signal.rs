//! Signals.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

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

/// A signal mask as [`block_all`] found it, to be put back with [`set_mask`]. Opaque: it can only come from the
/// kernel.
#[derive(Clone, Copy)]
pub struct SignalMask(libc::sigset_t);

/// `sigprocmask(SIG_SETMASK, all)`: blocks every signal (SIGKILL and SIGSTOP cannot be); returns the mask it
/// replaced. sigprocmask cannot fail with a valid `how` and valid pointers, so there is no error to return.
pub fn block_all() -> SignalMask {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; sigemptyset initialises `old` (so it is a valid set even if
    // sigprocmask did not write it), which sigprocmask then overwrites with the previous mask. Both are live
    // locals.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::sigemptyset(old.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
        SignalMask(old.assume_init())
    }
}

/// `sigprocmask(SIG_SETMASK, mask)`: puts back a mask [`block_all`] returned.
pub fn set_mask(mask: &SignalMask) {
    // SAFETY: `mask` holds an initialised sigset the kernel returned; the old mask is not asked for.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &mask.0, std::ptr::null_mut()) };
}

/// Every signal's action back to the default (`signal(sig, SIG_DFL)` for 1 to `SIGRTMAX`, bar SIGKILL and
/// SIGSTOP, whose actions cannot change) and an empty mask: how a freshly started program expects to find them.
pub fn reset_all() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // Errors (numbers glibc reserves for itself) are harmless: those keep their action.
            set_default_action(sig);
        }
    }
    let mut none = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the live local before sigprocmask reads it; the old mask is not asked for.
    unsafe {
        libc::sigemptyset(none.as_mut_ptr());
        libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
    }
}

/// `sigwaitinfo(all signals)`: waits for any pending signal (the caller keeps them blocked) and takes it;
/// returns its number.
pub fn wait_any() -> Result<i32, Errno> {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the live local `all`.
    unsafe { libc::sigfillset(all.as_mut_ptr()) };
    // SAFETY: an all-zero siginfo is a valid buffer for sigwaitinfo to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is initialised (above) and `info` a live local sigwaitinfo writes one siginfo into.
    check(unsafe { libc::sigwaitinfo(all.as_ptr(), &mut info) } as libc::c_long).map(|sig| sig as i32)
}

/// Reads one signal from a [`signalfd`]: its number, `None` when none is pending (the descriptor is
/// non-blocking) or the read failed.
pub fn read_signal(signalfd: RawFd) -> Option<i32> {
    // SAFETY: an all-zero signalfd_siginfo is valid; read fills at most its size.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a live, writable struct of `size` bytes.
    let n = unsafe { libc::read(signalfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    (n as usize == size).then_some(info.ssi_signo as i32)
}
