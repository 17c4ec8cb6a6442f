//! Calls only the init of a machine makes (airlock's guest agent, PID 1 of an `--isolation vm` guest): loading a
//! kernel module from a file, changing the root directory, and powering the machine off.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Errno};

/// `finit_module(fd, params, 0)`: loads the kernel module in the open file `fd` with the parameter string `params`
/// (`""` for none).
pub fn finit_module(fd: BorrowedFd<'_>, params: &CStr) -> Result<(), Errno> {
    // SAFETY: `fd` is borrowed, so open; `params` is a NUL-terminated string alive for the call, which only reads
    // it; the flags are an integer.
    check(unsafe { libc::syscall(libc::SYS_finit_module, fd.as_raw_fd(), params.as_ptr(), 0) }).map(drop)
}

/// `chroot(path)`.
pub fn change_root(path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string; chroot only reads it.
    check(unsafe { libc::chroot(path.as_ptr()) } as libc::c_long).map(drop)
}

/// `sync()` then `reboot(RB_POWER_OFF)`: the machine stops (as PID 1 with `CAP_SYS_BOOT`). Returns only on
/// failure.
pub fn power_off() -> Errno {
    // SAFETY: sync takes no arguments and cannot fail; reboot takes an integer command.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    crate::errno()
}
