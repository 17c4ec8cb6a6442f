//! The sandbox's network namespace starts with only a loopback interface, and it is down. Bringing it up gives
//! the command a working `127.0.0.1` of its own; the host's loopback is in another namespace and unreachable.

use crate::sys::{self, Errno};

/// `ioctl(SIOCSIFFLAGS)` on `lo` with `IFF_UP`.
pub fn bring_up_loopback() -> Result<(), Errno> {
    // SAFETY: socket takes only integers.
    let sock = sys::check_fd(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) } as libc::c_long
    )?;
    // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq that lives across the call.
    let ret = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr as *const libc::ifreq) };
    sys::close(sock);
    sys::check(ret as libc::c_long).map(drop)
}

/// `sethostname(name)`, in the sandbox's own UTS namespace.
pub fn set_hostname(name: &std::ffi::CStr) -> Result<(), Errno> {
    // SAFETY: `name` is valid for `len` bytes.
    let ret = unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) };
    sys::check(ret as libc::c_long).map(drop)
}
