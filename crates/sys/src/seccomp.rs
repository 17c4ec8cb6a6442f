//! Seccomp: installing a classic BPF filter (`seccomp(SECCOMP_SET_MODE_FILTER)`), and the user-notification
//! listener's ioctls (`seccomp_unotify(2)`), with `process_vm_readv`, through which a notified call's arguments
//! are read from the calling process's memory.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::{check, check_fd, Errno};

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, {filter})`: the raw return value (a listener's descriptor with
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, else 0). `EINVAL` for a program longer than a `sock_fprog` can say.
fn set_mode_filter(filter: &[libc::sock_filter], flags: libc::c_ulong) -> Result<libc::c_long, Errno> {
    let Ok(len) = u16::try_from(filter.len()) else {
        return Err(libc::EINVAL);
    };
    let fprog = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
    // SAFETY: `fprog` points to `filter`, a live, initialised array of exactly `len` instructions that is
    // borrowed, so neither moved nor freed, for the whole call; the kernel only reads it (the `*mut` is the C
    // declaration's) and copies the program before returning, keeping no pointer to our memory. The other
    // arguments are plain integers. The call writes nothing in this process's memory except `errno`.
    let ret = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags as libc::c_uint, &fprog as *const _)
    };
    check(ret)
}

/// Installs `filter` on the calling thread (the caller set `PR_SET_NO_NEW_PRIVS`, else `EACCES`), with `flags`
/// (`SECCOMP_FILTER_FLAG_*`; not `NEW_LISTENER`: see [`install_filter_with_listener`]).
pub fn install_filter(filter: &[libc::sock_filter], flags: libc::c_ulong) -> Result<(), Errno> {
    set_mode_filter(filter, flags & !libc::SECCOMP_FILTER_FLAG_NEW_LISTENER).map(drop)
}

/// As [`install_filter`], with `SECCOMP_FILTER_FLAG_NEW_LISTENER`: the filter's notification listener
/// (close-on-exec).
pub fn install_filter_with_listener(filter: &[libc::sock_filter], flags: libc::c_ulong) -> Result<OwnedFd, Errno> {
    let fd = check_fd(set_mode_filter(filter, flags | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)?)?;
    // SAFETY: with NEW_LISTENER, a successful seccomp returns the listener, a descriptor it just created, owned
    // by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: the next notification on `listener` (`ENOENT`: its process was killed first).
pub fn receive_notification(listener: RawFd) -> Result<libc::seccomp_notif, Errno> {
    // SAFETY: an all-zero seccomp_notif is valid (the kernel requires it zeroed) and RECV fills it.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into `req`, which is live and of the size the request encodes.
    let ret = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req as *mut libc::seccomp_notif) };
    check(ret as libc::c_long)?;
    Ok(req)
}

/// `SECCOMP_IOCTL_NOTIF_SEND`: answers notification `id` with `error` (a negative errno) or `flags`
/// (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`). An error means the process is gone.
pub fn send_response(listener: RawFd, id: u64, error: i32, flags: u32) -> Result<(), Errno> {
    let mut resp = libc::seccomp_notif_resp { id, val: 0, error, flags };
    // SAFETY: SEND reads one seccomp_notif_resp from `resp`, a live local of the size the request encodes.
    let ret =
        unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp as *mut libc::seccomp_notif_resp) };
    check(ret as libc::c_long).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS`: the listener's flags (`SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`, 6.6+).
pub fn set_listener_flags(listener: RawFd, flags: u64) -> Result<(), Errno> {
    // SAFETY: SET_FLAGS takes the flags as its integer argument.
    check(unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags) } as libc::c_long).map(drop)
}

/// `process_vm_readv`: reads up to `buf.len()` bytes at `addr` in process `pid` into `buf`, stopping at the first
/// page it cannot read. Returns how many were read.
pub fn read_process_memory(pid: libc::pid_t, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as usize as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: `local` describes `buf`, live and writable for its length; the remote address is only read by the
    // kernel in the other process (never dereferenced here).
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    check(n as libc::c_long).map(|n| n as usize)
}
