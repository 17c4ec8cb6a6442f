//! The TUN file descriptor, pumped to and from the TCP/IP stack: one `read` is one packet from the sandbox, one
//! `write` one packet to it. Every packet read passes through the [`Filter`] first.
//!
//! The TUN is created with `IFF_VNET_HDR` (runtime's `create_gateway_interface`): every packet either way is
//! preceded by a 10-byte `struct virtio_net_hdr`. No offloads are enabled (no `TUNSETOFFLOAD`), so the kernel
//! hands the gateway whole packets with complete checksums, which the filter checks on SYNs as before; the header
//! read is ignored. It is there for the other way: the stack's TCP segments are written with
//! `VIRTIO_NET_HDR_F_NEEDS_CSUM`, which the kernel treats like a segment from a NIC with checksum offload
//! (`CHECKSUM_PARTIAL`, delivered locally without verifying): the sandbox's kernel no longer sums every 64 KB
//! segment in software a second time after the stack computed it.

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
const READ_BUFFER: usize = VNET_HDR_LEN + 65_536;
/// `sizeof(struct virtio_net_hdr)`, the TUN's default `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;
/// A header that says nothing: the packet's checksums are complete and the kernel verifies them as usual.
const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Offset of the checksum field in a TCP header.
const TCP_CHECKSUM_OFFSET: u16 = 16;
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
                // Shorter than the virtio header: nothing the kernel sends; ignored.
                Ok(Ok(n)) if n < VNET_HDR_LEN => continue,
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Closed::Error(e),
                Err(_would_block) => break,
            };
            let packet = &buf[VNET_HDR_LEN..n];
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
                                write_packet(&tun, &PLAIN_HDR, &packet).await;
                            }
                        }
                    });
                }
                Verdict::Reply(reply) => {
                    // Best effort: if the TUN queue is full the RST is lost, and the sandbox's retransmitted SYN
                    // gets another.
                    let _ = write_with_header(tun.get_ref(), &PLAIN_HDR, &reply);
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

/// The virtio header for a packet from the stack: for an IPv4 TCP segment, "the checksum is the TCP one at this
/// offset" (`VIRTIO_NET_HDR_F_NEEDS_CSUM`), so that the sandbox's kernel takes the segment as checksummed by
/// hardware and does not sum it again; the stack has already written the full checksum there, so the segment is
/// also right for anything that does sum it. Anything else: [`PLAIN_HDR`].
fn stack_packet_header(packet: &[u8]) -> [u8; VNET_HDR_LEN] {
    let (Some(&version_ihl), Some(&protocol)) = (packet.first(), packet.get(9)) else { return PLAIN_HDR };
    let header_len = u16::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || protocol != 6 || packet.len() < usize::from(header_len + TCP_CHECKSUM_OFFSET + 2) {
        return PLAIN_HDR;
    }
    // struct virtio_net_hdr { u8 flags; u8 gso_type; u16 hdr_len; u16 gso_size; u16 csum_start; u16 csum_offset },
    // the u16s in the host's byte order (a TUN without TUNSETVNETLE/BE uses the legacy, native, order).
    let mut header = PLAIN_HDR;
    header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    header[6..8].copy_from_slice(&header_len.to_ne_bytes());
    header[8..10].copy_from_slice(&TCP_CHECKSUM_OFFSET.to_ne_bytes());
    header
}

/// One `writev` of the virtio header and the packet: no copy to put them together.
fn write_with_header(tun: &OwnedFd, header: &[u8; VNET_HDR_LEN], packet: &[u8]) -> io::Result<usize> {
    rustix::io::writev(tun, &[io::IoSlice::new(header), io::IoSlice::new(packet)]).map_err(io::Error::from)
}

/// Writes one packet to the TUN, waiting while its queue is full.
async fn write_packet(tun: &AsyncFd<OwnedFd>, header: &[u8; VNET_HDR_LEN], packet: &[u8]) -> Option<()> {
    loop {
        let mut guard = tun.writable().await.ok()?;
        match guard.try_io(|fd| write_with_header(fd.get_ref(), header, packet)) {
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
        if write_packet(&tun, &stack_packet_header(&packet), &packet).await.is_none() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_tcp_segments_are_marked_checksummed_and_the_rest_is_plain() {
        let builder = etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).tcp(80, 4000, 1, 65535);
        let mut segment = Vec::new();
        builder.write(&mut segment, b"data").unwrap();
        let header = stack_packet_header(&segment);
        assert_eq!(header[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(header[1], 0, "no GSO");
        assert_eq!(u16::from_ne_bytes([header[6], header[7]]), 20, "csum_start: after the IPv4 header");
        assert_eq!(u16::from_ne_bytes([header[8], header[9]]), 16, "csum_offset: TCP's checksum field");

        let reply = dns_reply_packet(SocketAddrV4::new([198, 18, 0, 2].into(), 5353), b"dns").unwrap();
        assert_eq!(stack_packet_header(&reply), PLAIN_HDR, "UDP");
        assert_eq!(stack_packet_header(&segment[..30]), PLAIN_HDR, "too short for a TCP header");
        assert_eq!(stack_packet_header(&[]), PLAIN_HDR);
    }
}
