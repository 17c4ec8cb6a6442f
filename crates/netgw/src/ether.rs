//! The gateway's link to the sandbox: a TUN (IP packets after a virtio header, the namespace backend's) or an
//! Ethernet link (`--isolation vm`: one Ethernet frame per datagram of a socket whose other end is QEMU's
//! virtio-net device, `-netdev dgram`).
//!
//! On the Ethernet link the gateway stays an IP router, smoltcp still sees bare IP packets: the device strips
//! the 14-byte Ethernet header from what the guest sends and puts one on what it sends back. The link has two
//! stations with fixed addresses ([`GUEST_MAC`], given to QEMU's NIC, and [`GATEWAY_MAC`]), so the gateway
//! needs no neighbour table: it answers the guest's ARP requests for [`GATEWAY_ADDR`] and sends every frame to
//! [`GUEST_MAC`]. Only IPv4 and ARP from the guest's address are taken; anything else (IPv6, which the guest is
//! not given, other ethertypes, other source addresses) is dropped unseen, as a switch port with port security
//! would. There is no virtio header on this link: frames carry complete checksums both ways.

use crate::addr::{GATEWAY_ADDR, SANDBOX_ADDR};

/// The guest NIC's address (locally administered, unicast), as QEMU's `-device virtio-net-device,mac=` sets it.
pub const GUEST_MAC: [u8; 6] = [0x02, 0xa1, 0x00, 0x00, 0x00, 0x02];
/// The gateway's address on the link.
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0xa1, 0x00, 0x00, 0x00, 0x01];
/// The Ethernet link's MTU (the guest's interface): virtio-net without offloads takes standard frames.
pub const ETHERNET_MTU: u16 = 1500;
/// Destination, source, ethertype.
pub const ETHERNET_HEADER_LEN: usize = 14;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];
/// An ARP packet for IPv4 over Ethernet: htype, ptype, hlen, plen, op, sha, spa, tha, tpa.
const ARP_LEN: usize = 28;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// How packets travel between the gateway and the sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Link {
    /// The namespace backend's TUN (`IFF_VNET_HDR`): IP packets after a virtio header.
    #[default]
    Tun,
    /// A VM's virtio-net NIC on a datagram socket: Ethernet frames (see the module's documentation).
    Ethernet,
}

/// What the guest sent on the Ethernet link.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// An IPv4 packet, after the header: for the filter and the stack.
    Ipv4,
    /// An ARP request for the gateway's address: this frame answers it.
    ArpReply([u8; ETHERNET_HEADER_LEN + ARP_LEN]),
    /// Anything else: dropped.
    Drop,
}

/// Sorts one frame the guest sent (the whole datagram).
pub fn classify(frame: &[u8]) -> Frame {
    if frame.len() < ETHERNET_HEADER_LEN || frame[6..12] != GUEST_MAC {
        return Frame::Drop;
    }
    let (destination, ethertype) = (&frame[0..6], u16::from_be_bytes([frame[12], frame[13]]));
    match ethertype {
        ETHERTYPE_IPV4 if destination == GATEWAY_MAC => Frame::Ipv4,
        ETHERTYPE_ARP if destination == GATEWAY_MAC || destination == BROADCAST => {
            arp_reply(&frame[ETHERNET_HEADER_LEN..]).map_or(Frame::Drop, Frame::ArpReply)
        }
        _ => Frame::Drop,
    }
}

/// The reply to an ARP request from the guest (its addresses) for [`GATEWAY_ADDR`]; `None` for anything else.
fn arp_reply(arp: &[u8]) -> Option<[u8; ETHERNET_HEADER_LEN + ARP_LEN]> {
    let arp = arp.get(..ARP_LEN)?;
    // Ethernet (1), IPv4, 6-byte and 4-byte addresses, a request.
    if arp[0..8] != [0, 1, 0x08, 0x00, 6, 4, 0, ARP_REQUEST as u8] {
        return None;
    }
    let (sender_mac, sender_ip, target_ip) = (&arp[8..14], &arp[14..18], &arp[24..28]);
    if sender_mac != GUEST_MAC || sender_ip != SANDBOX_ADDR.octets() || target_ip != GATEWAY_ADDR.octets() {
        return None;
    }
    let mut reply = [0u8; ETHERNET_HEADER_LEN + ARP_LEN];
    reply[..ETHERNET_HEADER_LEN].copy_from_slice(&header(ETHERTYPE_ARP));
    let body = &mut reply[ETHERNET_HEADER_LEN..];
    body[0..6].copy_from_slice(&arp[0..6]);
    body[6..8].copy_from_slice(&ARP_REPLY.to_be_bytes());
    body[8..14].copy_from_slice(&GATEWAY_MAC);
    body[14..18].copy_from_slice(&GATEWAY_ADDR.octets());
    body[18..24].copy_from_slice(&GUEST_MAC);
    body[24..28].copy_from_slice(&SANDBOX_ADDR.octets());
    Some(reply)
}

/// The header of a frame from the gateway to the guest.
fn header(ethertype: u16) -> [u8; ETHERNET_HEADER_LEN] {
    let mut header = [0u8; ETHERNET_HEADER_LEN];
    header[0..6].copy_from_slice(&GUEST_MAC);
    header[6..12].copy_from_slice(&GATEWAY_MAC);
    header[12..14].copy_from_slice(&ethertype.to_be_bytes());
    header
}

/// The header of an IPv4 packet from the gateway to the guest.
pub const IPV4_HEADER: [u8; ETHERNET_HEADER_LEN] = [
    GUEST_MAC[0],
    GUEST_MAC[1],
    GUEST_MAC[2],
    GUEST_MAC[3],
    GUEST_MAC[4],
    GUEST_MAC[5],
    GATEWAY_MAC[0],
    GATEWAY_MAC[1],
    GATEWAY_MAC[2],
    GATEWAY_MAC[3],
    GATEWAY_MAC[4],
    GATEWAY_MAC[5],
    (ETHERTYPE_IPV4 >> 8) as u8,
    ETHERTYPE_IPV4 as u8,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(destination: [u8; 6], source: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(&source);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }

    fn arp_request(sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
        let mut arp = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
        arp.extend_from_slice(&GUEST_MAC);
        arp.extend_from_slice(&sender_ip);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&target_ip);
        arp
    }

    #[test]
    fn the_gateway_answers_the_guests_arp_request_for_its_address_only() {
        let request =
            frame(BROADCAST, GUEST_MAC, ETHERTYPE_ARP, &arp_request(SANDBOX_ADDR.octets(), GATEWAY_ADDR.octets()));
        let Frame::ArpReply(reply) = classify(&request) else { panic!("no reply") };
        assert_eq!(reply[0..6], GUEST_MAC);
        assert_eq!(reply[6..12], GATEWAY_MAC);
        assert_eq!(reply[12..14], [0x08, 0x06]);
        assert_eq!(reply[20..22], [0, 2], "a reply");
        assert_eq!(reply[22..28], GATEWAY_MAC, "the gateway's address is the answer");
        assert_eq!(reply[28..32], GATEWAY_ADDR.octets());
        assert_eq!(reply[32..38], GUEST_MAC);
        assert_eq!(reply[38..42], SANDBOX_ADDR.octets());

        let other = frame(BROADCAST, GUEST_MAC, ETHERTYPE_ARP, &arp_request(SANDBOX_ADDR.octets(), [198, 18, 0, 3]));
        assert_eq!(classify(&other), Frame::Drop, "another address");
        let spoofed = frame(BROADCAST, GUEST_MAC, ETHERTYPE_ARP, &arp_request([10, 0, 0, 1], GATEWAY_ADDR.octets()));
        assert_eq!(classify(&spoofed), Frame::Drop, "another sender address");
        assert_eq!(classify(&request[..30]), Frame::Drop, "truncated");
    }

    #[test]
    fn only_ipv4_from_the_guest_to_the_gateway_is_taken() {
        assert_eq!(classify(&frame(GATEWAY_MAC, GUEST_MAC, ETHERTYPE_IPV4, &[0x45; 20])), Frame::Ipv4);
        assert_eq!(classify(&frame(GATEWAY_MAC, [2, 0, 0, 0, 0, 9], ETHERTYPE_IPV4, &[0x45; 20])), Frame::Drop);
        assert_eq!(classify(&frame(BROADCAST, GUEST_MAC, ETHERTYPE_IPV4, &[0x45; 20])), Frame::Drop);
        assert_eq!(classify(&frame(GATEWAY_MAC, GUEST_MAC, 0x86dd, &[0x60; 40])), Frame::Drop, "IPv6");
        assert_eq!(classify(&[]), Frame::Drop);
        assert_eq!(classify(&GUEST_MAC), Frame::Drop);
        assert_eq!(IPV4_HEADER, header(ETHERTYPE_IPV4));
    }
}
