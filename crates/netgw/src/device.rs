//! The TUN file descriptor, pumped to and from the TCP/IP stack: one `read` is one packet from the sandbox, one
//! `write` one packet to it. Every packet read passes through the [`Filter`] first.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::unix::AsyncFd;

use std::net::SocketAddrV4;

use tokio::sync::Semaphore;

use crate::addr::{DNS_PORT, GATEWAY_ADDR};
use crate::dns::DnsServer;
use crate::event::Decision;
use crate::filter::{Filter, Verdict};

/// Largest packet read from the TUN: the largest IPv4 packet, so that whatever MTU the sandbox sets on its side,
/// packets are seen whole (and handled) rather than truncated.
const READ_BUFFER: usize = 65_536;
/// DNS queries over UDP answered at once; more are dropped (and recorded) until some finish.
const DNS_IN_FLIGHT: usize = 64;
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
pub async fn pump_in<S>(tun: Arc<AsyncFd<OwnedFd>>, filter: Filter, mut stack: S, dns: DnsServer) -> Closed
where
    S: Sink<Vec<u8>, Error = io::Error> + Unpin,
{
    let in_flight = Arc::new(Semaphore::new(DNS_IN_FLIGHT));
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
                    // An error drops this packet only: a packet the stack refuses to parse (the filter should
                    // not let one through), or one for a part of the stack that has stopped. If the whole stack
                    // is gone, the gateway's main loop sees its TCP listener end.
                    let _ = stack.send(packet.to_vec()).await;
                }
                Verdict::Drop => {}
                Verdict::Dns { client, query } => {
                    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                        dns.recorder.denied(Decision {
                            protocol: "dns",
                            reason: format!("more than {DNS_IN_FLIGHT} DNS queries in flight"),
                            ..Default::default()
                        });
                        continue;
                    };
                    // Each query in its own task: a slow host lookup does not hold up the others.
                    let (dns, tun) = (dns.clone(), tun.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Some(reply) = dns.answer(&query).await {
                            if let Some(packet) = dns_reply_packet(client, &reply) {
                                write_packet(&tun, &packet).await;
                            }
                        }
                    });
                }
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

/// The UDP packet carrying a DNS reply from the gateway to `client`.
fn dns_reply_packet(client: SocketAddrV4, reply: &[u8]) -> Option<Vec<u8>> {
    let builder =
        etherparse::PacketBuilder::ipv4(GATEWAY_ADDR.octets(), client.ip().octets(), 64).udp(DNS_PORT, client.port());
    let mut packet = Vec::with_capacity(builder.size(reply.len()));
    builder.write(&mut packet, reply).ok()?;
    Some(packet)
}

/// Writes one packet to the TUN, waiting while its queue is full.
async fn write_packet(tun: &AsyncFd<OwnedFd>, packet: &[u8]) -> Option<()> {
    loop {
        let mut guard = tun.writable().await.ok()?;
        match guard.try_io(|fd| rustix::io::write(fd.get_ref(), packet).map_err(io::Error::from)) {
            // A packet the kernel refuses is lost like on a wire (TCP retransmits, DNS clients retry); a TUN that
            // is gone shows on the read side, which ends the gateway.
            Ok(_) => return Some(()),
            Err(_would_block) => continue,
        }
    }
}

/// Stack → sandbox: writes the stack's packets to the TUN.
pub async fn pump_out<S>(tun: Arc<AsyncFd<OwnedFd>>, mut stack: S) -> Closed
where
    S: Stream<Item = io::Result<Vec<u8>>> + Unpin,
{
    while let Some(packet) = stack.next().await {
        let Ok(packet) = packet else { continue };
        if write_packet(&tun, &packet).await.is_none() {
            return Closed::Error(io::Error::other("the TUN cannot be polled for writing"));
        }
    }
    Closed::StackGone
}

/// A TCP connection from the sandbox as the stack hands it over, with a `shutdown` that does not wait.
///
/// The stack's `poll_shutdown` stays pending until its socket is fully closed, which, when the gateway closes
/// first, includes TCP's TIME-WAIT (10 s in smoltcp). A relay would then hold its connection slot, and record
/// its close, only that much later. Here `shutdown` queues the FIN (sent once the data before it is out, as with
/// `shutdown(2)`) and returns; the stack finishes the close on its own.
pub struct SandboxStream(pub netstack_smoltcp::TcpStream);

impl tokio::io::AsyncRead for SandboxStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SandboxStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_shutdown(cx) {
            std::task::Poll::Ready(result) => std::task::Poll::Ready(result),
            // The FIN is queued; not waiting for the socket's final close.
            std::task::Poll::Pending => std::task::Poll::Ready(Ok(())),
        }
    }
}
