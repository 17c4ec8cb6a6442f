//! The TUN file descriptor, pumped to and from the TCP/IP stack: one `read` is one packet from the sandbox, one
//! `write` one packet to it. Every packet read passes through the [`Filter`] first.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::unix::AsyncFd;

use crate::filter::{Filter, Verdict};

/// Largest packet read from the TUN: the largest IPv4 packet, so that whatever MTU the sandbox sets on its side,
/// packets are seen whole (and handled) rather than truncated.
const READ_BUFFER: usize = 65_536;
/// Packets read in one go before yielding to other tasks, so a flood cannot starve the relays.
const READ_BUDGET: usize = 64;

/// Why the pump stopped.
#[derive(Debug)]
pub enum Closed {
    /// The TUN has no more packets: the interface or the sandbox's network namespace is gone.
    Eof,
    /// The stack stopped.
    StackGone,
    Error(io::Error),
}

/// Sandbox → stack: reads packets, filters them, hands the passed ones to the stack. Returns when the TUN or the
/// stack is gone.
pub async fn pump_in<S>(tun: Arc<AsyncFd<OwnedFd>>, filter: Filter, mut stack: S) -> Closed
where
    S: Sink<Vec<u8>, Error = io::Error> + Unpin,
{
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let mut guard = match tun.readable().await {
            Ok(guard) => guard,
            Err(e) => return Closed::Error(e),
        };
        for _ in 0..READ_BUDGET {
            let n = match guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut buf[..]).map_err(io::Error::from)) {
                Ok(Ok(0)) => return Closed::Eof,
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Closed::Error(e),
                Err(_would_block) => break,
            };
            let packet = &buf[..n];
            match filter.inspect(packet) {
                Verdict::Pass => {
                    // Waits while the stack's input queue is full: backpressure instead of unbounded buffering.
                    if stack.send(packet.to_vec()).await.is_err() {
                        return Closed::StackGone;
                    }
                }
                Verdict::Drop => {}
                Verdict::Reply(reply) => {
                    // Best effort: if the TUN queue is full the RST is lost, and the sandbox's retransmitted SYN
                    // gets another.
                    let _ = rustix::io::write(tun.get_ref(), &reply);
                }
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Stack → sandbox: writes the stack's packets to the TUN.
pub async fn pump_out<S>(tun: Arc<AsyncFd<OwnedFd>>, mut stack: S) -> Closed
where
    S: Stream<Item = io::Result<Vec<u8>>> + Unpin,
{
    while let Some(packet) = stack.next().await {
        let Ok(packet) = packet else { continue };
        loop {
            let mut guard = match tun.writable().await {
                Ok(guard) => guard,
                Err(e) => return Closed::Error(e),
            };
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), &packet).map_err(io::Error::from)) {
                // A packet the kernel refuses is lost like on a wire (TCP retransmits); a TUN that is gone shows
                // on the read side, which ends the gateway.
                Ok(_) => break,
                Err(_would_block) => continue,
            }
        }
    }
    Closed::StackGone
}
