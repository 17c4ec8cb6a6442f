//! `-t`: a pseudo-terminal from the sandbox's own devpts instance. Init opens it, keeps the slave for the
//! command, and passes the master to the supervisor over a Unix socket (SCM_RIGHTS); the supervisor relays it to
//! the caller's terminal. `airlock exec -t` does the same from the `airlock exec` process once it has entered the
//! sandbox's namespaces (`attach`). The command's terminal is thus never the caller's: no TIOCSTI into the
//! caller's shell.

use std::os::fd::RawFd;

use crate::failure::{ChildFailure, Step};
use sys::Errno;

/// Opens a new pseudo-terminal in the sandbox, sets its size, sends the master to the supervisor and returns
/// the slave. Runs in init after `pivot_root`, or in `airlock exec` after `setns` into the sandbox.
pub fn open_sandbox_terminal(winsize: &libc::winsize, socket: RawFd) -> Result<RawFd, ChildFailure> {
    let fail = |step| move |errno| ChildFailure { step, errno, index: 0 };
    // SAFETY: valid NUL-terminated path.
    let master =
        sys::check_fd(
            unsafe { libc::open(c"/dev/pts/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) }
                as libc::c_long,
        )
        .map_err(fail(Step::OpenPseudoTerminal))?;
    let result = (|| {
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads a live int.
        sys::check(unsafe { libc::ioctl(master, libc::TIOCSPTLCK, &unlock) } as libc::c_long)
            .map_err(fail(Step::OpenPseudoTerminal))?;
        // SAFETY: TIOCSWINSZ reads a live winsize.
        sys::check(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, winsize as *const libc::winsize) } as libc::c_long)
            .map_err(fail(Step::OpenPseudoTerminal))?;
        // TIOCGPTPEER opens the slave through the master, without a path lookup that could be raced.
        // SAFETY: TIOCGPTPEER takes integer flags.
        let slave = sys::check_fd(unsafe {
            libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        } as libc::c_long)
        .map_err(fail(Step::OpenPseudoTerminal))?;
        if let Err(e) = send_fd(socket, master) {
            sys::fd::close(slave);
            return Err(fail(Step::SendPseudoTerminal)(e));
        }
        Ok(slave)
    })();
    sys::fd::close(master);
    result
}

/// Control-message buffer for one fd, aligned for `cmsghdr`.
#[repr(C)]
union FdControl {
    buf: [u8; 24],
    _align: libc::cmsghdr,
}

/// Sends one file descriptor over a Unix socket. Async-signal-safe.
pub fn send_fd(socket: RawFd, fd: RawFd) -> Result<(), Errno> {
    let mut payload = [b'T'];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = FdControl { buf: [0; 24] };
    // SAFETY: an all-zero msghdr is valid; the fields set below point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: taking the address of the union's byte view.
    msg.msg_control = unsafe { control.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `space` (<= 24) writable bytes, so CMSG_FIRSTHDR is non-null and in bounds;
    // CMSG_DATA of it has room for one int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg and everything it points to are live for the call.
    sys::retry_eintr(|| unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) } as libc::c_long).map(drop)
}

/// Receives one file descriptor sent with [`send_fd`]; `Ok(None)` at end of stream.
pub fn recv_fd(socket: RawFd) -> Result<Option<RawFd>, Errno> {
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = FdControl { buf: [0; 24] };
    // SAFETY: an all-zero msghdr is valid; the fields set below point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: taking the address of the union's byte view.
    msg.msg_control = unsafe { control.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = 24;
    // SAFETY: msg and everything it points to are live for the call.
    let n = sys::retry_eintr(|| unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) } as libc::c_long)?;
    if n == 0 {
        return Ok(None);
    }
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR checks the length before returning a
    // header, and SCM_RIGHTS data holds at least one int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(libc::EPROTO);
        }
        Ok(Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>())))
    }
}
