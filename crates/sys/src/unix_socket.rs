//! Unix-domain sockets: accepting a connection, receiving descriptors with the data (`SCM_RIGHTS`), sending
//! without `SIGPIPE`.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{check, check_fd, Errno};

/// `accept4(listener, NULL, NULL, SOCK_CLOEXEC)`: the next pending connection, blocking on a blocking listener
/// (`EAGAIN` on a non-blocking one with nothing pending).
pub fn accept(listener: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: null address pointers ask for no peer address; the flags are integers; `listener` is open.
    let fd = check_fd(unsafe {
        libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
    } as libc::c_long)?;
    // SAFETY: accept4 succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The most descriptors [`recv_with_fds`] takes from one message.
pub const MAX_RECEIVED_FDS: usize = 4;

/// Room for one `SCM_RIGHTS` control message of [`MAX_RECEIVED_FDS`] descriptors, aligned as `cmsghdr` wants.
#[repr(C, align(8))]
struct ControlBuffer([u8; 64]);

/// `recvmsg(socket, buf, MSG_CMSG_CLOEXEC)`: data into `buf`, and the descriptors that came with it (close-on-exec)
/// into `fds` in order. Returns the number of bytes read (0 at end of file). Descriptors beyond `fds`' room are
/// closed; a message whose descriptors did not fit in the control buffer is `EMSGSIZE` (the kernel closed them).
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8], fds: &mut [Option<OwnedFd>]) -> Result<usize, Errno> {
    let mut control = ControlBuffer([0; 64]);
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: an all-zero msghdr is a valid empty one; the fields set below point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    // SAFETY: msg points at a live iovec over `buf` and a live, aligned control buffer of the length given.
    let n = check(unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) } as libc::c_long)?;
    let mut next = 0;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within msg_controllen; each SCM_RIGHTS
    // payload holds (cmsg_len - CMSG_LEN(0)) / 4 ints, read unaligned; every descriptor received is ours to own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                let count =
                    ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    if next < fds.len() {
                        fds[next] = Some(fd);
                        next += 1;
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(libc::EMSGSIZE);
    }
    Ok(n as usize)
}

/// `send(socket, bytes, MSG_NOSIGNAL)`: a peer that went away is `EPIPE`, never a `SIGPIPE` that would kill us.
pub fn send_nosignal(socket: BorrowedFd<'_>, bytes: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the pointer and length describe a live slice; the flags are integers.
    let n = check(unsafe { libc::send(socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) }
        as libc::c_long)?;
    Ok(n as usize)
}
