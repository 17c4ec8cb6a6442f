//! The TUN file descriptor as an async packet device for the TCP/IP stack: one `read` is one packet, one
//! `write` is one packet. Every packet read passes through the [`Filter`] first.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::filter::{Filter, Verdict};

/// Packets dropped in one `poll_read` before yielding to other tasks, so a flood of refused packets cannot
/// starve the relays.
const DROP_BUDGET: usize = 64;

/// Why the device stopped.
#[derive(Debug)]
pub enum Closed {
    /// The TUN has no more packets: the interface or the sandbox's network namespace is gone.
    Eof,
    Error(io::Error),
}

pub struct TunDevice {
    fd: AsyncFd<OwnedFd>,
    filter: Filter,
    closed: Option<oneshot::Sender<Closed>>,
}

impl TunDevice {
    /// `fd` must already be non-blocking.
    pub fn new(fd: AsyncFd<OwnedFd>, filter: Filter, closed: oneshot::Sender<Closed>) -> TunDevice {
        TunDevice { fd, filter, closed: Some(closed) }
    }

    fn close(&mut self, why: Closed) {
        if let Some(tx) = self.closed.take() {
            let _ = tx.send(why);
        }
    }
}

impl AsyncRead for TunDevice {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.closed.is_none() {
            // The gateway is shutting down; the stack's reader waits forever instead of spinning on errors.
            return Poll::Pending;
        }
        let mut dropped = 0;
        loop {
            let mut guard = match this.fd.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => {
                    this.close(Closed::Error(e));
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut *unfilled).map_err(io::Error::from));
            let n = match read {
                Ok(Ok(0)) => {
                    this.close(Closed::Eof);
                    return Poll::Pending;
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    this.close(Closed::Error(e));
                    return Poll::Pending;
                }
                Err(_would_block) => continue,
            };
            let packet = &buf.initialize_unfilled()[..n];
            match this.filter.inspect(packet) {
                Verdict::Pass => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Verdict::Drop => {}
                Verdict::Reply(reply) => {
                    // Best effort: if the TUN queue is full the RST is lost, and the sandbox's retransmitted SYN
                    // gets another.
                    let _ = rustix::io::write(this.fd.get_ref(), &reply);
                }
            }
            dropped += 1;
            if dropped >= DROP_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

impl AsyncWrite for TunDevice {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, packet: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let mut guard = match this.fd.poll_write_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), packet).map_err(io::Error::from)) {
                // A packet the kernel refuses is lost like on a wire (TCP retransmits); a TUN that is gone shows
                // on the read side, which ends the gateway.
                Ok(Ok(n)) => return Poll::Ready(Ok(n)),
                Ok(Err(_)) => return Poll::Ready(Ok(packet.len())),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
