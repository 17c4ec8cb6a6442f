//! The addresses of the sandbox side of the TUN link. They are shared with the plumbing that configures the
//! interface inside the sandbox's network namespace, so both sides agree on them by construction.
//!
//! 198.18.0.0/15 is the RFC 2544 benchmarking range: never routed on the internet and rarely used on LANs, so it
//! cannot shadow a network the host (or the agent's task) cares about.

use std::net::Ipv4Addr;

/// Name of the TUN interface inside the sandbox.
pub const INTERFACE: &str = "airlock0";
/// MTU of the TUN interface (and of the gateway's TCP/IP stack). Every packet costs one `read` or `write` on
/// the TUN, so the per-packet cost bounds throughput: with 1500-byte packets the gateway moves about 1.3 Gbit/s,
/// with 65000-byte packets about 7 Gbit/s (examples/loopback_bench.rs). Nothing on the link needs a smaller MTU:
/// the packets never leave the host, and the gateway re-originates every connection with the host's own stack.
/// A sandbox side configured with a smaller MTU still works (TCP's MSS negotiation follows the smaller one).
pub const MTU: u16 = 65000;
/// The sandbox's own address on the TUN interface.
pub const SANDBOX_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Prefix length of the TUN link.
pub const SANDBOX_PREFIX: u8 = 30;
/// The gateway: default route, DNS server (port 53, UDP and TCP) and HTTP proxy (port [`PROXY_PORT`]).
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// DNS port on [`GATEWAY_ADDR`].
pub const DNS_PORT: u16 = 53;
/// HTTP/CONNECT proxy port on [`GATEWAY_ADDR`].
pub const PROXY_PORT: u16 = 3128;
/// The pool of synthetic ("fake-IP") addresses handed out by the gateway's DNS, one per allowed name.
pub const SYNTHETIC_NET: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);
/// Prefix length of [`SYNTHETIC_NET`].
pub const SYNTHETIC_PREFIX: u8 = 16;

/// Whether `addr` lies in the synthetic pool.
pub fn is_synthetic(addr: Ipv4Addr) -> bool {
    let mask = u32::MAX << (32 - u32::from(SYNTHETIC_PREFIX));
    u32::from(addr) & mask == u32::from(SYNTHETIC_NET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_pool_is_198_19_slash_16() {
        assert!(is_synthetic(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(is_synthetic(Ipv4Addr::new(198, 19, 255, 254)));
        assert!(!is_synthetic(GATEWAY_ADDR));
        assert!(!is_synthetic(Ipv4Addr::new(198, 20, 0, 1)));
    }
}
