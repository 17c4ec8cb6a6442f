//! The TUN file descriptor as the TCP/IP stack's device ([`TunDevice`]): one `read` is one packet from the
//! sandbox, one `write` one packet to it. Every packet read passes through the [`Filter`] first.
//!
//! The TUN is created with `IFF_VNET_HDR` (runtime's `create_gateway_interface`): every packet either way is
//! preceded by a 10-byte `struct virtio_net_hdr`. No offloads are enabled (no `TUNSETOFFLOAD`), so the kernel
//! hands the gateway whole packets with complete checksums, which the filter (every SYN) and smoltcp (every
//! segment) verify; the header read is ignored. It is there for the other way: the stack's TCP segments are
//! written with `VIRTIO_NET_HDR_F_NEEDS_CSUM`, which the kernel treats like a segment from a NIC with checksum
//! offload (`CHECKSUM_PARTIAL`, delivered locally without verifying), so neither the stack nor the sandbox's
//! kernel sums every 64 KB segment in software: the segment carries only its pseudo-header sum.
//!
//! A VM's link ([`Link::Ethernet`], see `ether`) is a datagram socket instead, one Ethernet frame a datagram and
//! no virtio header: the device strips and adds the Ethernet header where the TUN has the virtio one, answers the
//! guest's ARP itself, and smoltcp sums every checksum it sends.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use std::net::{Ipv4Addr, SocketAddrV4};

use tokio::io::unix::AsyncFd;
use tokio::sync::Semaphore;

use crate::addr::{DNS_PORT, GATEWAY_ADDR, MTU};
use crate::dns::{Answer, DnsServer};
use crate::ether::{self, Frame, Link, ETHERNET_HEADER_LEN, ETHERNET_MTU};
use crate::event::Decision;
use crate::filter::{Filter, Verdict, PROTO_TCP, TCP_ACK, TCP_SYN};

/// Largest packet read from the TUN: the largest IPv4 packet after the longer of the two links' headers, so that
/// whatever MTU the sandbox sets on its side, packets are seen whole (and handled) rather than truncated.
const READ_BUFFER: usize = ETHERNET_HEADER_LEN + 65_536;
/// `sizeof(struct virtio_net_hdr)`, the TUN's default `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;
/// A header that says nothing: the packet's checksums are complete and the kernel verifies them as usual.
const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Offset of the checksum field in a TCP header.
const TCP_CHECKSUM_OFFSET: u16 = 16;
/// Host lookups for DNS queries over UDP that run at once; more wait their turn.
const DNS_LOOKUPS_RUNNING: usize = 64;
/// DNS queries over UDP waiting for a host lookup, running ones included; more are dropped (and recorded) until
/// some finish. Queries the name table answers never wait (see [`TunDevice::answer_dns`]).
const DNS_LOOKUPS_QUEUED: usize = 1024;
/// Packets read in one round of the stack's task (which yields to other tasks every few rounds), so a flood
/// cannot starve the relays.
const READ_BUDGET: usize = 16;

/// Why the stack stopped.
#[derive(Debug)]
pub enum Closed {
    /// The TUN has no more packets: the interface or the sandbox's network namespace is gone.
    Eof,
    Error(io::Error),
}

/// The TUN as smoltcp's `Device`, filter included.
///
/// Receiving reads the TUN straight into one buffer, runs the [`Filter`] on the packet, and hands a passed one
/// to smoltcp in place; what the filter answers itself (DNS, refusals) is answered here and the next packet read.
/// A SYN is held back once, so that the stack's task can open the listening socket it is for before smoltcp
/// sees it. Transmitting builds each packet in one reused buffer after the virtio header and writes it with one
/// `write`: no allocation, no copy, and no TCP checksum summed in user space (see [`stack_packet_header`]).
pub struct TunDevice {
    tun: Arc<AsyncFd<OwnedFd>>,
    link: Link,
    filter: Filter,
    dns: DnsServer,
    dns_lookups_running: Arc<Semaphore>,
    dns_lookups_queued: Arc<Semaphore>,
    rx: Vec<u8>,
    /// Length of the packet (virtio header included) in `rx` that the filter passed and the stack has not had yet.
    held: Option<usize>,
    /// The connection of a held SYN, until the task has opened its socket.
    new_flow: Option<(SocketAddrV4, SocketAddrV4)>,
    tx: Vec<u8>,
    /// Whether the TUN may be read in this round (the task holds its read readiness).
    may_read: bool,
    /// A read in this round found the TUN empty.
    drained: bool,
    reads_left: usize,
    closed: Option<Closed>,
}

impl TunDevice {
    pub fn new(tun: Arc<AsyncFd<OwnedFd>>, filter: Filter, dns: DnsServer, link: Link) -> TunDevice {
        TunDevice {
            tun,
            link,
            filter,
            dns,
            dns_lookups_running: Arc::new(Semaphore::new(DNS_LOOKUPS_RUNNING)),
            dns_lookups_queued: Arc::new(Semaphore::new(DNS_LOOKUPS_QUEUED)),
            // Allocated, not zero-filled: a zero-filled 64 KiB buffer (`calloc` clears reused heap memory) is
            // resident from the start, and both buffers made 128 KiB of an idle gateway's ~330 KiB of private
            // memory (/proc/PID/pagemap of the heap); filled only as packets need, they take a page or two until
            // a large packet comes.
            rx: Vec::with_capacity(READ_BUFFER),
            held: None,
            new_flow: None,
            tx: Vec::with_capacity(header_len(link) + usize::from(MTU)),
            may_read: false,
            drained: false,
            reads_left: 0,
            closed: None,
        }
    }

    /// Starts one round of the stack's task: `may_read` when the TUN is (or may be) readable.
    pub fn start_round(&mut self, may_read: bool) {
        self.may_read = may_read;
        self.drained = false;
        self.reads_left = READ_BUDGET;
    }

    pub fn take_new_flow(&mut self) -> Option<(SocketAddrV4, SocketAddrV4)> {
        self.new_flow.take()
    }

    /// Whether a read in this round found the TUN empty (its readiness may be cleared).
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Whether there are packets left to read or to hand to the stack.
    pub fn has_more(&self) -> bool {
        self.held.is_some() || (self.may_read && !self.drained && self.closed.is_none())
    }

    pub fn take_closed(&mut self) -> Option<Closed> {
        self.closed.take()
    }

    /// Reads until a packet for the stack is held, within this round's budget; false when there is none to give
    /// it now.
    fn read_for_stack(&mut self) -> bool {
        while self.may_read && !self.drained && self.closed.is_none() && self.reads_left > 0 {
            self.reads_left -= 1;
            // Into the buffer's capacity, which the read initializes: the pages of the buffer no packet was
            // long enough to reach are never touched (see `new`).
            self.rx.clear();
            let n = match rustix::io::read(self.tun.get_ref(), rustix::buffer::spare_capacity(&mut self.rx)) {
                // The TUN's end. (A datagram socket has none: an empty datagram is only a short frame.)
                Ok(0) if self.link == Link::Tun => {
                    self.closed = Some(Closed::Eof);
                    return false;
                }
                // Shorter than the link's header: nothing the kernel (or QEMU for an honest guest) sends; ignored.
                Ok(n) if n < header_len(self.link) => continue,
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => {
                    self.drained = true;
                    return false;
                }
                Err(e) => {
                    self.closed = Some(Closed::Error(e.into()));
                    return false;
                }
            };
            if self.link == Link::Ethernet {
                match ether::classify(&self.rx[..n]) {
                    Frame::Ipv4 => {}
                    // Best effort, like a reply below: the guest asks again.
                    Frame::ArpReply(reply) => {
                        let _ = rustix::io::write(self.tun.get_ref(), &reply);
                        continue;
                    }
                    Frame::Drop => continue,
                }
            }
            let packet = &self.rx[header_len(self.link)..n];
            match self.filter.inspect(packet) {
                Verdict::Pass => {
                    self.held = Some(n);
                    self.new_flow = opening_syn(packet);
                    return self.new_flow.is_none();
                }
                Verdict::Drop => {}
                Verdict::Dns { client, query } => self.answer_dns(client, query),
                Verdict::Reply(reply) => {
                    // Best effort: if the TUN queue is full the RST is lost, and the sandbox's retransmitted SYN
                    // gets another.
                    let _ = write_with_header(self.tun.get_ref(), plain_header(self.link), &reply);
                }
            }
        }
        false
    }

    /// Answers a DNS query over UDP. What the name table answers (denials, other types, names already pinned)
    /// is answered here, before the next packet is read: this loop reads a burst of queries without yielding,
    /// so answers left to tasks would only start after the whole burst. A first A query for a name needs a host
    /// lookup, which runs in a task of its own so that a slow resolver holds up nothing else; queries for the
    /// same name queued behind it are answered from the table once it is pinned.
    fn answer_dns(&self, client: SocketAddrV4, query: Vec<u8>) {
        let pending = match self.dns.answer_at_once(&query) {
            Answer::Ready(None) => return,
            Answer::Ready(Some(reply)) => {
                let Some(packet) = dns_reply_packet(client, &reply) else { return };
                let header = plain_header(self.link);
                if let Err(e) = write_with_header(self.tun.get_ref(), header, &packet) {
                    if e.kind() == io::ErrorKind::WouldBlock {
                        let tun = self.tun.clone();
                        tokio::spawn(async move { write_packet(&tun, header, &packet).await });
                    }
                }
                return;
            }
            Answer::Lookup(pending) => pending,
        };
        let Ok(queued) = self.dns_lookups_queued.clone().try_acquire_owned() else {
            self.dns.recorder.denied(Decision {
                protocol: "dns",
                reason: format!("more than {DNS_LOOKUPS_QUEUED} DNS queries waiting for a host lookup"),
                ..Default::default()
            });
            return;
        };
        let (dns, tun, header, running) =
            (self.dns.clone(), self.tun.clone(), plain_header(self.link), self.dns_lookups_running.clone());
        tokio::spawn(async move {
            let _queued = queued;
            // The semaphore is never closed, so acquiring fails never; if it did, the query would go unanswered.
            let Ok(_running) = running.acquire_owned().await else { return };
            if let Some(reply) = dns.finish_lookup(pending).await {
                if let Some(packet) = dns_reply_packet(client, &reply) {
                    write_packet(&tun, header, &packet).await;
                }
            }
        });
    }
}

/// The length of `link`'s header before each packet.
fn header_len(link: Link) -> usize {
    match link {
        Link::Tun => VNET_HDR_LEN,
        Link::Ethernet => ETHERNET_HEADER_LEN,
    }
}

/// The header before a packet from the gateway whose checksums are complete.
fn plain_header(link: Link) -> &'static [u8] {
    match link {
        Link::Tun => &PLAIN_HDR,
        Link::Ethernet => &ether::IPV4_HEADER,
    }
}

/// The (sandbox, gateway) ends of a TCP SYN without ACK: a connection the stack needs a listening socket for.
/// `packet` is one the filter passed, so a well-formed IPv4 packet.
fn opening_syn(packet: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4)> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    if *packet.get(9)? != PROTO_TCP {
        return None;
    }
    let tcp = packet.get(header_len..)?;
    let flags = *tcp.get(13)?;
    if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
        return None;
    }
    let addr = |at: usize| {
        Some(Ipv4Addr::new(*packet.get(at)?, *packet.get(at + 1)?, *packet.get(at + 2)?, *packet.get(at + 3)?))
    };
    let port = |at: usize| Some(u16::from_be_bytes([*tcp.get(at)?, *tcp.get(at + 1)?]));
    Some((SocketAddrV4::new(addr(12)?, port(0)?), SocketAddrV4::new(addr(16)?, port(2)?)))
}

impl smoltcp::phy::Device for TunDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _timestamp: smoltcp::time::Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // A held SYN waits for its socket.
        if self.new_flow.is_some() || (self.held.is_none() && !self.read_for_stack()) {
            return None;
        }
        let n = self.held.take()?;
        let packet = &self.rx[header_len(self.link)..n];
        Some((RxToken { packet }, TxToken { tun: &self.tun, link: self.link, buffer: &mut self.tx }))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        Some(TxToken { tun: &self.tun, link: self.link, buffer: &mut self.tx })
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        let mut capabilities = smoltcp::phy::DeviceCapabilities::default();
        capabilities.medium = smoltcp::phy::Medium::Ip;
        capabilities.max_transmission_unit = usize::from(MTU);
        // Checksums of what the sandbox sends are verified as always (the default, both ways, for IPv4, UDP and
        // ICMP). A TCP segment toward the sandbox carries only its pseudo-header sum and goes out marked
        // VIRTIO_NET_HDR_F_NEEDS_CSUM: the sandbox's kernel takes it as checksummed by hardware (and completes
        // the sum itself should it ever forward it).
        capabilities.checksum.tcp = smoltcp::phy::Checksum::Rx;
        // The Ethernet link has no virtio header to say so: every checksum is complete, and its frames are
        // standard ones.
        if self.link == Link::Ethernet {
            capabilities.checksum.tcp = smoltcp::phy::Checksum::Both;
            capabilities.max_transmission_unit = usize::from(ETHERNET_MTU);
        }
        capabilities
    }
}

pub struct RxToken<'a> {
    packet: &'a [u8],
}

impl smoltcp::phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.packet)
    }
}

pub struct TxToken<'a> {
    tun: &'a AsyncFd<OwnedFd>,
    link: Link,
    buffer: &'a mut Vec<u8>,
}

impl smoltcp::phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let total = header_len(self.link) + len;
        if self.buffer.len() < total {
            self.buffer.resize(total, 0);
        }
        let frame = &mut self.buffer[..total];
        let (header, packet) = frame.split_at_mut(header_len(self.link));
        let result = f(packet);
        match self.link {
            Link::Tun => {
                let virtio = stack_packet_header(packet);
                if virtio[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                    put_pseudo_header_sum(packet);
                }
                header.copy_from_slice(&virtio);
            }
            // smoltcp summed the checksums (see `capabilities`).
            Link::Ethernet => header.copy_from_slice(&ether::IPV4_HEADER),
        }
        // A packet the kernel refuses is lost like on a wire: TCP retransmits it.
        let _ = rustix::io::write(self.tun.get_ref(), frame);
        result
    }
}

/// Writes the TCP pseudo-header's folded sum (not complemented) into the checksum field of the IPv4 TCP segment
/// `packet`, as a `CHECKSUM_PARTIAL` segment carries it: whoever completes the checksum sums from the TCP
/// header on, this field included, and stores the complement. [`stack_packet_header`] checked the lengths.
fn put_pseudo_header_sum(packet: &mut [u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    let word = |at: usize| u32::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
    let tcp_len = (packet.len() - header_len) as u32;
    let mut sum = word(12) + word(14) + word(16) + word(18) + u32::from(PROTO_TCP) + tcp_len;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let at = header_len + usize::from(TCP_CHECKSUM_OFFSET);
    packet[at..at + 2].copy_from_slice(&(sum as u16).to_be_bytes());
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
/// hardware; the field holds the pseudo-header sum ([`put_pseudo_header_sum`]), from which whatever does need the
/// full checksum (forwarding) completes it. Anything else: [`PLAIN_HDR`], its checksums complete.
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
fn write_with_header(tun: &OwnedFd, header: &[u8], packet: &[u8]) -> io::Result<usize> {
    rustix::io::writev(tun, &[io::IoSlice::new(header), io::IoSlice::new(packet)]).map_err(io::Error::from)
}

/// Writes one packet to the TUN, waiting while its queue is full.
async fn write_packet(tun: &AsyncFd<OwnedFd>, header: &[u8], packet: &[u8]) -> Option<()> {
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

    #[test]
    fn a_partial_checksum_completed_by_the_kernel_is_the_full_one() {
        let builder = etherparse::PacketBuilder::ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64).tcp(80, 4000, 1, 65535);
        // An odd length, so that the last byte is summed as a padded word.
        let mut segment = Vec::new();
        builder.write(&mut segment, b"seventeen bytes!!").unwrap();
        let full = u16::from_be_bytes([segment[36], segment[37]]);
        segment[36..38].copy_from_slice(&[0, 0]);
        put_pseudo_header_sum(&mut segment);
        // What the kernel does for CHECKSUM_PARTIAL: the ones'-complement sum from csum_start to the end,
        // complemented, stored at csum_start + csum_offset.
        let mut sum = 0u32;
        for word in segment[20..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(!(sum as u16), full);
    }

    #[test]
    fn only_a_syn_without_ack_opens_a_flow() {
        let syn = |ack: bool| {
            let mut builder =
                etherparse::PacketBuilder::ipv4([198, 18, 0, 2], [198, 19, 0, 5], 64).tcp(40000, 443, 1, 65535).syn();
            if ack {
                builder = builder.ack(7);
            }
            let mut packet = Vec::new();
            builder.write(&mut packet, &[]).unwrap();
            packet
        };
        assert_eq!(
            opening_syn(&syn(false)),
            Some(("198.18.0.2:40000".parse().unwrap(), "198.19.0.5:443".parse().unwrap()))
        );
        assert_eq!(opening_syn(&syn(true)), None);
        assert_eq!(opening_syn(&dns_reply_packet("198.18.0.2:5353".parse().unwrap(), b"x").unwrap()), None);
        assert_eq!(opening_syn(&syn(false)[..30]), None, "truncated");
    }
}
