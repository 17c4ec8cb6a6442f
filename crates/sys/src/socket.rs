//! Sockets: creating one, accepting a connection, passing file descriptors over a Unix socket (`SCM_RIGHTS`),
//! sending without `SIGPIPE`.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, check_fd, retry_eintr, Errno};

/// `socket(domain, type | SOCK_CLOEXEC, protocol)`.
pub fn socket(domain: i32, kind: i32, protocol: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: socket takes only integers.
    let fd = check_fd(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) } as libc::c_long)?;
    // SAFETY: socket succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Control-message buffer for one fd, aligned for `cmsghdr`.
#[repr(C)]
union FdControl {
    buf: [u8; 24],
    _align: libc::cmsghdr,
}

/// Sends one file descriptor (and one payload byte) over the Unix socket `socket`; `MSG_NOSIGNAL`, so a closed
/// peer is `EPIPE`, not a signal.
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
    retry_eintr(|| unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) } as libc::c_long).map(drop)
}

/// Receives one file descriptor sent with [`send_fd`] (close-on-exec); `Ok(None)` at end of stream, `EPROTO`
/// when the message carries no descriptor.
pub fn recv_fd(socket: RawFd) -> Result<Option<OwnedFd>, Errno> {
    // SAFETY: the caller's descriptor is open for this call (a number that is not only makes recvmsg say EBADF);
    // the borrow does not outlive it.
    let socket = unsafe { BorrowedFd::borrow_raw(socket) };
    let mut payload = [0u8; 1];
    let mut fds = [None];
    if recv_with_fds(socket, &mut payload, &mut fds)? == 0 {
        return Ok(None);
    }
    fds[0].take().map(Some).ok_or(libc::EPROTO)
}

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
    let n =
        retry_eintr(|| unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) } as libc::c_long)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_descriptor_crosses_a_socket_pair_and_end_of_stream_is_none() {
        let (a, b) = crate::fd::socketpair_cloexec().unwrap();
        let (read, write) = crate::fd::pipe_cloexec().unwrap();
        send_fd(a.as_raw_fd(), write.as_raw_fd()).unwrap();
        drop(write);
        let received = recv_fd(b.as_raw_fd()).unwrap().unwrap();
        // The received descriptor is the pipe's write end: what goes in comes out of `read`.
        crate::fd::write_all(received.as_raw_fd(), b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(crate::fd::read(read.as_raw_fd(), &mut buf), Ok(1));
        assert_eq!(&buf, b"x");
        let flags = crate::check(descriptor_flags(received.as_raw_fd())).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC as libc::c_long, 0, "received close-on-exec");
        drop(a);
        assert!(recv_fd(b.as_raw_fd()).unwrap().is_none());
    }

    fn descriptor_flags(fd: RawFd) -> libc::c_long {
        // SAFETY: fcntl with F_GETFD takes only integers.
        unsafe { libc::fcntl(fd, libc::F_GETFD) as libc::c_long }
    }
}
