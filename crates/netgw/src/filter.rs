//! First look at every packet from the sandbox, before the TCP/IP stack sees it.
//!
//! Everything that is not IPv4 TCP or UDP ends here (dropped and recorded), and a TCP SYN is decided here, at
//! the first packet, so that a refused connection gets a RST straight away: the sandbox's `connect()` fails with
//! "connection refused", no handshake is ever completed, and nothing is opened on the host. Only well-formed
//! IPv4 packets from the sandbox's address reach the stack.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::addr::{is_synthetic, DNS_PORT, GATEWAY_ADDR, PROXY_PORT, SANDBOX_ADDR};
use crate::dns::{join_addrs, NameTable};
use crate::event::{Decision, Recorder};
use crate::rules::{AllowList, Denial};

const PROTO_ICMP: u8 = 1;
pub(crate) const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// What to do with a packet from the sandbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the TCP/IP stack.
    Pass,
    /// Drop it (already recorded where that matters).
    Drop,
    /// Drop it and send this packet back into the sandbox (a TCP RST).
    Reply(Vec<u8>),
    /// A DNS query over UDP to the gateway: answered by the gateway's DNS server directly, without the stack.
    Dns { client: SocketAddrV4, query: Vec<u8> },
}

/// The fields of an IPv4 packet the filter needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ipv4 {
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) protocol: u8,
    pub(crate) header_len: usize,
    pub(crate) total_len: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*b.get(at)?, *b.get(at + 1)?, *b.get(at + 2)?, *b.get(at + 3)?]))
}

/// The ones'-complement sum of `data` as 16-bit words (RFC 1071), folded; `initial` carries a pseudo-header.
fn checksum_sum(data: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether a TCP segment's checksum is right (a SYN creates state in the stack, so it must be genuine).
pub(crate) fn tcp_checksum_ok(ip: &Ipv4, tcp: &[u8]) -> bool {
    let Ok(len) = u16::try_from(tcp.len()) else { return false };
    let src = ip.src.octets();
    let dst = ip.dst.octets();
    let pseudo = u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]))
        + u32::from(PROTO_TCP)
        + u32::from(len);
    checksum_sum(tcp, pseudo) == 0xffff
}

pub(crate) fn parse_ipv4(p: &[u8]) -> Result<Ipv4, &'static str> {
    if p.len() < 20 {
        return Err("truncated IPv4 header");
    }
    let header_len = usize::from(p[0] & 0x0f) * 4;
    let total_len = usize::from(be16(p, 2).ok_or("truncated IPv4 header")?);
    if header_len < 20 || header_len > p.len() || total_len < header_len || total_len > p.len() {
        return Err("inconsistent IPv4 lengths");
    }
    if checksum_sum(&p[..header_len], 0) != 0xffff {
        return Err("bad IPv4 header checksum");
    }
    let fragment = be16(p, 6).ok_or("truncated IPv4 header")?;
    // More-fragments flag or a fragment offset: the stack does not reassemble, and the sandbox's own stack never
    // needs to fragment on a link whose MTU it knows (TCP segments follow the MSS, DNS queries are small).
    if fragment & 0x3fff != 0 {
        return Err("fragmented IPv4 packet");
    }
    Ok(Ipv4 {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        protocol: p[9],
        header_len,
        total_len,
    })
}

/// Decides packets; shared state with the rest of the gateway.
pub struct Filter {
    pub allow: Arc<AllowList>,
    pub names: Arc<Mutex<NameTable>>,
    pub recorder: Recorder,
    /// Relayed TCP connections alive now (maintained by the relays).
    pub active: Arc<AtomicUsize>,
    pub max_connections: usize,
}

impl Filter {
    pub fn inspect(&self, p: &[u8]) -> Verdict {
        let deny = |protocol: &'static str, address: Option<IpAddr>, port: Option<u16>, reason: String| {
            self.recorder.denied(Decision {
                protocol,
                address: address.map(|a| a.to_string()),
                port,
                reason,
                ..Default::default()
            })
        };
        match p.first().map(|b| b >> 4) {
            Some(4) => {}
            Some(6) => {
                // The kernel's own IPv6 housekeeping on the link (router solicitations, MLD reports, duplicate
                // address detection) goes to multicast or link-local addresses at every interface start: dropped
                // without a record, since nothing asked for it. Anything else is an attempt and is recorded.
                if let Some(dst) = p.get(24..40) {
                    let link_scoped = dst[0] == 0xff || (dst[0] == 0xfe && dst[1] & 0xc0 == 0x80);
                    if !link_scoped {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(dst);
                        let dst = IpAddr::V6(octets.into());
                        deny("ip", Some(dst), None, "IPv6 is not forwarded (the sandbox network is IPv4 only)".into());
                    }
                }
                return Verdict::Drop;
            }
            _ => {
                deny("ip", None, None, "malformed packet (not IPv4)".into());
                return Verdict::Drop;
            }
        }
        let ip = match parse_ipv4(p) {
            Ok(ip) => ip,
            Err(reason) => {
                deny("ip", None, None, format!("malformed packet ({reason})"));
                return Verdict::Drop;
            }
        };
        if ip.src != SANDBOX_ADDR {
            deny("ip", Some(IpAddr::V4(ip.dst)), None, format!("source address {} is not the sandbox's", ip.src));
            return Verdict::Drop;
        }
        let l4 = &p[ip.header_len..ip.total_len];
        match ip.protocol {
            PROTO_TCP => self.inspect_tcp(&ip, l4),
            PROTO_UDP => {
                let Some(port) = be16(l4, 2).filter(|_| l4.len() >= 8) else {
                    deny("udp", Some(IpAddr::V4(ip.dst)), None, "malformed packet (truncated UDP header)".into());
                    return Verdict::Drop;
                };
                // A length field that disagrees with the packet marks a malformed datagram.
                let udp_len = be16(l4, 4).map_or(0, usize::from);
                if udp_len < 8 || udp_len > l4.len() {
                    deny("udp", Some(IpAddr::V4(ip.dst)), Some(port), "malformed packet (bad UDP length)".into());
                    return Verdict::Drop;
                }
                if ip.dst == GATEWAY_ADDR && port == DNS_PORT {
                    let client_port = be16(l4, 0).unwrap_or(0);
                    return Verdict::Dns {
                        client: SocketAddrV4::new(ip.src, client_port),
                        query: l4[8..udp_len].to_vec(),
                    };
                }
                let reason = if port == DNS_PORT {
                    "DNS to another server than the gateway is dropped"
                } else {
                    "UDP other than DNS to the gateway is dropped"
                };
                deny("udp", Some(IpAddr::V4(ip.dst)), Some(port), reason.into());
                Verdict::Drop
            }
            PROTO_ICMP => {
                deny("icmp", Some(IpAddr::V4(ip.dst)), None, "ICMP is not forwarded".into());
                Verdict::Drop
            }
            other => {
                deny("ip", Some(IpAddr::V4(ip.dst)), None, format!("IP protocol {other} is not forwarded"));
                Verdict::Drop
            }
        }
    }

    fn inspect_tcp(&self, ip: &Ipv4, tcp: &[u8]) -> Verdict {
        let dst = IpAddr::V4(ip.dst);
        let (Some(src_port), Some(dst_port), Some(seq)) = (be16(tcp, 0), be16(tcp, 2), be32(tcp, 4)) else {
            self.recorder.denied(Decision {
                protocol: "tcp",
                address: Some(dst.to_string()),
                reason: "malformed packet (truncated TCP header)".into(),
                ..Default::default()
            });
            return Verdict::Drop;
        };
        let data_offset = tcp.get(12).map_or(0, |b| usize::from(b >> 4) * 4);
        if tcp.len() < 20 || data_offset < 20 || data_offset > tcp.len() {
            self.recorder.denied(Decision {
                protocol: "tcp",
                address: Some(dst.to_string()),
                port: Some(dst_port),
                reason: "malformed packet (bad TCP header length)".into(),
                ..Default::default()
            });
            return Verdict::Drop;
        }
        let flags = tcp[13];
        // Only a connection's first packet is decided; the stack answers stray segments of unknown connections
        // with a RST itself.
        if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
            return Verdict::Pass;
        }
        if !tcp_checksum_ok(ip, tcp) {
            self.recorder.denied(Decision {
                protocol: "tcp",
                address: Some(dst.to_string()),
                port: Some(dst_port),
                reason: "malformed packet (bad TCP checksum)".into(),
                ..Default::default()
            });
            return Verdict::Drop;
        }
        let decision = self.decide_syn(ip.dst, dst_port);
        match decision {
            Ok(()) => Verdict::Pass,
            Err((name, address, reason)) => {
                self.recorder.denied(Decision {
                    protocol: "tcp",
                    name,
                    address: Some(address),
                    port: Some(dst_port),
                    reason,
                    ..Default::default()
                });
                let payload_len = tcp.len() - data_offset;
                let fin = u32::from(flags & TCP_FIN != 0);
                let ack = seq.wrapping_add(1).wrapping_add(payload_len as u32).wrapping_add(fin);
                match reset(ip.dst, ip.src, dst_port, src_port, ack) {
                    Some(rst) => Verdict::Reply(rst),
                    None => Verdict::Drop,
                }
            }
        }
    }

    /// Decides a new TCP connection. Err: (name, address as recorded, reason).
    fn decide_syn(&self, dst: Ipv4Addr, port: u16) -> Result<(), (Option<String>, String, String)> {
        if dst == GATEWAY_ADDR {
            return match port {
                // Counted like relays: every TCP connection costs the stack's socket buffers.
                DNS_PORT | PROXY_PORT => self.within_limit().map_err(|reason| (None, dst.to_string(), reason)),
                _ => Err((None, dst.to_string(), format!("the gateway serves only ports {DNS_PORT} and {PROXY_PORT}"))),
            };
        }
        if is_synthetic(dst) {
            let entry = self.names.lock().unwrap_or_else(PoisonError::into_inner).by_synthetic(dst).cloned();
            let Some(entry) = entry else {
                return Err((None, dst.to_string(), "synthetic address not handed out by the gateway's DNS".into()));
            };
            let address = join_addrs(&entry.pinned);
            return match self.allow.decide_name(&entry.name, port, &entry.pinned) {
                Ok(_) => self.within_limit().map_err(|reason| (Some(entry.name.clone()), address, reason)),
                Err(denial) => Err((Some(entry.name), address, denial.to_string())),
            };
        }
        match self.allow.decide_ip(IpAddr::V4(dst), port) {
            Ok(_) => self.within_limit().map_err(|reason| (None, dst.to_string(), reason)),
            Err(Denial::NameNotAllowed) => {
                Err((None, dst.to_string(), format!("IP literal {dst} is not on the allow-list (port {port})")))
            }
            Err(denial) => Err((None, dst.to_string(), denial.to_string())),
        }
    }

    fn within_limit(&self) -> Result<(), String> {
        if self.active.load(Ordering::Relaxed) >= self.max_connections {
            return Err(format!("too many open connections (limit {})", self.max_connections));
        }
        Ok(())
    }
}

/// A RST|ACK from `src`:`src_port` answering a SYN.
fn reset(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16, ack: u32) -> Option<Vec<u8>> {
    let builder =
        etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(src_port, dst_port, 0, 0).rst().ack(ack);
    let mut out = Vec::with_capacity(builder.size(0));
    builder.write(&mut out, &[]).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NetEvent;
    use policy::sandbox::AllowRule;

    fn filter(rules: Vec<AllowRule>) -> (Filter, Arc<Mutex<Vec<NetEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let filter = Filter {
            allow: Arc::new(AllowList::new(rules)),
            names: Arc::new(Mutex::new(NameTable::default())),
            recorder: Recorder::new("t", Box::new(move |e: &NetEvent| sink.lock().unwrap().push(e.clone()))),
            active: Arc::new(AtomicUsize::new(0)),
            max_connections: 2,
        };
        (filter, events)
    }

    fn syn(dst: Ipv4Addr, port: u16) -> Vec<u8> {
        let builder =
            etherparse::PacketBuilder::ipv4(SANDBOX_ADDR.octets(), dst.octets(), 64).tcp(40000, port, 7, 1000).syn();
        let mut out = Vec::new();
        builder.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn syn_to_unlisted_literal_gets_a_reset() {
        let (f, events) = filter(vec![AllowRule { domain: "192.0.2.1".into(), port: Some(22) }]);
        let Verdict::Reply(rst) = f.inspect(&syn(Ipv4Addr::new(192, 0, 2, 2), 22)) else { panic!("no RST") };
        let parsed = etherparse::SlicedPacket::from_ip(&rst).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = parsed.transport else { panic!("not TCP") };
        assert!(tcp.rst() && tcp.ack());
        assert_eq!(tcp.acknowledgment_number(), 8);
        assert_eq!((tcp.source_port(), tcp.destination_port()), (22, 40000));
        assert_eq!(f.inspect(&syn(Ipv4Addr::new(192, 0, 2, 1), 22)), Verdict::Pass);
        assert!(events.lock().unwrap()[0].reason.contains("IP literal 192.0.2.2"));
    }

    #[test]
    fn synthetic_addresses_follow_the_name_table() {
        let (f, _) = filter(vec![AllowRule { domain: "a.test".into(), port: None }]);
        let entry = f.names.lock().unwrap().insert("a.test", vec!["93.184.216.34".parse().unwrap()]).unwrap();
        assert_eq!(f.inspect(&syn(entry.synthetic, 443)), Verdict::Pass);
        assert!(matches!(f.inspect(&syn(entry.synthetic, 22)), Verdict::Reply(_)));
        assert!(matches!(f.inspect(&syn(Ipv4Addr::new(198, 19, 9, 9), 443)), Verdict::Reply(_)));
        f.active.store(2, Ordering::Relaxed);
        assert!(matches!(f.inspect(&syn(entry.synthetic, 443)), Verdict::Reply(_)));
    }

    #[test]
    fn udp_icmp_ipv6_and_garbage_are_dropped() {
        let (f, events) = filter(vec![]);
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ipv4(SANDBOX_ADDR.octets(), [8, 8, 8, 8], 64)
            .udp(5000, 53)
            .write(&mut udp, b"x")
            .unwrap();
        assert_eq!(f.inspect(&udp), Verdict::Drop);
        let mut dns = Vec::new();
        etherparse::PacketBuilder::ipv4(SANDBOX_ADDR.octets(), GATEWAY_ADDR.octets(), 64)
            .udp(5000, 53)
            .write(&mut dns, b"x")
            .unwrap();
        assert_eq!(
            f.inspect(&dns),
            Verdict::Dns { client: SocketAddrV4::new(SANDBOX_ADDR, 5000), query: b"x".to_vec() }
        );
        let mut bad_len = dns.clone();
        bad_len[24..26].copy_from_slice(&200u16.to_be_bytes()); // UDP length beyond the packet
        assert_eq!(f.inspect(&bad_len), Verdict::Drop);
        bad_len[24..26].copy_from_slice(&3u16.to_be_bytes()); // shorter than the header
        assert_eq!(f.inspect(&bad_len), Verdict::Drop);
        let mut icmp = Vec::new();
        etherparse::PacketBuilder::ipv4(SANDBOX_ADDR.octets(), [1, 1, 1, 1], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut icmp, b"ping")
            .unwrap();
        assert_eq!(f.inspect(&icmp), Verdict::Drop);
        assert_eq!(f.inspect(&[0x60; 60]), Verdict::Drop);
        let mut v6 = vec![0x60; 40];
        v6[24] = 0xff; // to multicast: housekeeping, not recorded
        assert_eq!(f.inspect(&v6), Verdict::Drop);
        assert_eq!(events.lock().unwrap().iter().filter(|e| e.reason.contains("IPv6")).count(), 1);
        assert_eq!(f.inspect(&[]), Verdict::Drop);
        let reasons: Vec<String> = events.lock().unwrap().iter().map(|e| e.reason.clone()).collect();
        assert!(reasons.iter().any(|r| r.contains("DNS to another server")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("ICMP")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("IPv6")), "{reasons:?}");
    }

    #[test]
    fn bad_checksums_are_dropped() {
        let (f, _) = filter(vec![AllowRule { domain: "192.0.2.1".into(), port: Some(22) }]);
        let good = syn(Ipv4Addr::new(192, 0, 2, 1), 22);
        assert_eq!(f.inspect(&good), Verdict::Pass);
        let mut bad_ip = good.clone();
        bad_ip[10] ^= 0xff;
        assert_eq!(f.inspect(&bad_ip), Verdict::Drop);
        let mut bad_tcp = good.clone();
        bad_tcp[20 + 16] ^= 0xff;
        assert_eq!(f.inspect(&bad_tcp), Verdict::Drop);
    }

    /// Random and mutated packets never panic the filter.
    #[test]
    fn hostile_packets_never_panic() {
        let (f, _) = filter(vec![AllowRule { domain: "a.test".into(), port: None }]);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seed = syn(GATEWAY_ADDR, 53);
        for _ in 0..200_000 {
            let len = (next() % 80) as usize;
            let mut p: Vec<u8> = if next() % 2 == 0 { seed.clone() } else { (0..len).map(|_| next() as u8).collect() };
            for _ in 0..(next() % 6) {
                if !p.is_empty() {
                    let i = (next() as usize) % p.len();
                    p[i] = next() as u8;
                }
            }
            p.truncate((next() % 80) as usize);
            if p.len() >= 20 && next() % 2 == 0 {
                // Fix the header checksum so the mutation reaches the deeper checks.
                let header_len = (usize::from(p[0] & 0x0f) * 4).clamp(20, p.len());
                p[10] = 0;
                p[11] = 0;
                let sum = !checksum_sum(&p[..header_len], 0);
                p[10..12].copy_from_slice(&sum.to_be_bytes());
            }
            let _ = f.inspect(&p);
        }
    }
}
