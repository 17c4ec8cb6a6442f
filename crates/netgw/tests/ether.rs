//! The Ethernet link (`Link::Ethernet`, a VM's NIC): the test is the guest, writing raw frames on one end of a
//! datagram socket pair the gateway serves. Needs no root and no namespace. What a real guest kernel checks is
//! checked here: the ARP answer, the Ethernet header of every frame and complete checksums (no virtio header on
//! this link to say "partial").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netgw::addr::{GATEWAY_ADDR, SANDBOX_ADDR};
use netgw::ether::{GATEWAY_MAC, GUEST_MAC};
use netgw::{GatewayConfig, GatewayOptions, Link, NetEvent};
use policy::sandbox::AllowRule;

struct Guest {
    socket: UnixDatagram,
    events: Arc<Mutex<Vec<NetEvent>>>,
    _stop: std::os::fd::OwnedFd,
}

impl Guest {
    fn start(allow: Vec<AllowRule>, hosts: &[(&str, IpAddr)]) -> Guest {
        let (socket, gateway_end) = UnixDatagram::pair().unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut table: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, addr) in hosts {
            table.entry((*name).to_owned()).or_default().push(*addr);
        }
        let (stop, stop_writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let options =
            GatewayOptions { hosts: Some(table), stop: Some(stop), link: Link::Ethernet, ..Default::default() };
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let config = GatewayConfig {
            sandbox: "vm".into(),
            allow,
            events: Box::new(move |e: &NetEvent| sink.lock().unwrap().push(e.clone())),
        };
        let fd = std::os::fd::OwnedFd::from(gateway_end);
        std::thread::spawn(move || netgw::serve_tun_blocking_with(fd, config, options));
        Guest { socket, events, _stop: stop_writer }
    }

    fn send(&self, destination: [u8; 6], ethertype: u16, body: &[u8]) {
        let mut frame = Vec::new();
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(&GUEST_MAC);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(body);
        self.socket.send(&frame).unwrap();
    }

    /// The next frame from the gateway: its header checked, its ethertype and body returned.
    fn receive(&self) -> (u16, Vec<u8>) {
        let mut buf = vec![0u8; 70_000];
        let n = self.socket.recv(&mut buf).expect("a frame from the gateway");
        assert!(n >= 14, "a frame shorter than its header");
        assert_eq!(buf[0..6], GUEST_MAC, "to the guest");
        assert_eq!(buf[6..12], GATEWAY_MAC, "from the gateway");
        (u16::from_be_bytes([buf[12], buf[13]]), buf[14..n].to_vec())
    }

    fn send_ipv4(&self, packet: &[u8]) {
        self.send(GATEWAY_MAC, 0x0800, packet);
    }

    /// The next IPv4 packet from the gateway, its IPv4 and transport checksums verified as a kernel would.
    fn receive_ipv4(&self) -> etherparse::SlicedPacket<'static> {
        let (ethertype, body) = self.receive();
        assert_eq!(ethertype, 0x0800);
        let body: &'static [u8] = Box::leak(body.into_boxed_slice());
        let packet = etherparse::SlicedPacket::from_ip(body).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else { panic!("not IPv4") };
        let header = ip.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum(), "IPv4 header checksum");
        match &packet.transport {
            Some(etherparse::TransportSlice::Tcp(tcp)) => {
                let full = tcp.to_header().calc_checksum_ipv4(&header, tcp.payload()).unwrap();
                assert_eq!(tcp.checksum(), full, "a complete TCP checksum (no NEEDS_CSUM on this link)");
            }
            Some(etherparse::TransportSlice::Udp(udp)) => {
                let full = udp.to_header().calc_checksum_ipv4(&header, udp.payload()).unwrap();
                assert!(udp.checksum() == 0 || udp.checksum() == full, "UDP checksum");
            }
            _ => {}
        }
        packet
    }
}

fn arp(sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    arp.extend_from_slice(&GUEST_MAC);
    arp.extend_from_slice(&sender_ip.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target_ip.octets());
    arp
}

/// An A query for `name` with id 0x1234.
fn dns_query(name: &str) -> Vec<u8> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

fn udp(src_port: u16, dst: Ipv4Addr, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4(SANDBOX_ADDR.octets(), dst.octets(), 64).udp(src_port, dst_port);
    let mut packet = Vec::new();
    builder.write(&mut packet, payload).unwrap();
    packet
}

fn syn(dst: Ipv4Addr, dst_port: u16) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4(SANDBOX_ADDR.octets(), dst.octets(), 64)
        .tcp(40000, dst_port, 1000, 64240)
        .syn();
    let mut packet = Vec::new();
    builder.write(&mut packet, &[]).unwrap();
    packet
}

#[test]
fn the_gateway_answers_arp_resolves_allowed_names_and_accepts_allowed_connections_on_ethernet() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let guest = Guest::start(
        vec![AllowRule { domain: "allowed.test".into(), port: Some(port) }],
        &[("allowed.test", IpAddr::V4(Ipv4Addr::LOCALHOST))],
    );

    // Frames the gateway drops unseen (IPv6, another source, ARP for another address) come first: the first
    // frame back must still be the answer to the ARP request after them.
    guest.send(GATEWAY_MAC, 0x86dd, &[0x60; 40]);
    guest.socket.send(&[0u8; 0]).unwrap();
    guest.send([0xff; 6], 0x0806, &arp(SANDBOX_ADDR, Ipv4Addr::new(198, 18, 0, 3)));
    guest.send([0xff; 6], 0x0806, &arp(SANDBOX_ADDR, GATEWAY_ADDR));
    let (ethertype, reply) = guest.receive();
    assert_eq!(ethertype, 0x0806);
    assert_eq!(reply[6..8], [0, 2], "an ARP reply");
    assert_eq!(reply[8..14], GATEWAY_MAC);
    assert_eq!(reply[14..18], GATEWAY_ADDR.octets());

    guest.send_ipv4(&udp(5353, GATEWAY_ADDR, 53, &dns_query("allowed.test")));
    let answer = guest.receive_ipv4();
    let Some(etherparse::TransportSlice::Udp(udp)) = &answer.transport else { panic!("not UDP") };
    let dns = udp.payload();
    assert_eq!(dns[0..2], [0x12, 0x34]);
    let address = Ipv4Addr::new(dns[dns.len() - 4], dns[dns.len() - 3], dns[dns.len() - 2], dns[dns.len() - 1]);
    assert!(netgw::addr::is_synthetic(address), "{address}");

    guest.send_ipv4(&syn(address, port));
    let syn_ack = guest.receive_ipv4();
    let Some(etherparse::TransportSlice::Tcp(tcp)) = &syn_ack.transport else { panic!("not TCP") };
    assert!(tcp.syn() && tcp.ack(), "a SYN-ACK: {tcp:?}");
    assert_eq!(tcp.acknowledgment_number(), 1001);
    // smoltcp's MSS follows the link's MTU (1500), not the TUN's.
    let mss = tcp.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::MaximumSegmentSize(mss)) => Some(mss),
        _ => None,
    });
    assert_eq!(mss, Some(1460));
    let events = guest.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| e.protocol == "dns" && e.decision == "allowed"), "{events:#?}");
}
