//! Network interfaces, by `ioctl`: a TUN device made an interface (`TUNSETIFF`), an interface's flags, address,
//! netmask and MTU (`SIOCSIF*` on any `AF_INET` socket), a default route (`SIOCADDRT`), the network namespace
//! a socket is in (`SIOCGSKNS`), and, by one `RTM_SETLINK` message of rtnetlink, an interface's IPv6 address
//! generation switched off.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{check, Errno};

/// An `ifreq` naming interface `name` (at most `IFNAMSIZ - 1` bytes, else `EINVAL`), the rest zero.
fn named_ifreq(name: &CStr) -> Result<libc::ifreq, Errno> {
    let bytes = name.to_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(libc::EINVAL);
    }
    // SAFETY: an all-zero ifreq is valid (empty name, zero union).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(ifr)
}

/// An IPv4 `sockaddr` (as `sockaddr_in`, which has the same size).
fn inet_sockaddr(address: [u8; 4]) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(address) },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16-byte plain-data structs; the kernel reads an AF_INET
    // sockaddr as a sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// One of the `SIOCSIF*` requests, which read an `ifreq` and write nothing back.
fn set_interface(sock: RawFd, request: libc::Ioctl, ifr: &libc::ifreq) -> Result<(), Errno> {
    // SAFETY: the SIOCSIF* requests passed here (this module's, fixed) only read a live ifreq that outlives the
    // call.
    check(unsafe { libc::ioctl(sock, request, ifr as *const libc::ifreq) } as libc::c_long).map(drop)
}

/// `SIOCSIFFLAGS`: interface `name`'s flags (`IFF_UP`...), through the socket `sock`.
pub fn set_interface_flags(sock: RawFd, name: &CStr, flags: libc::c_short) -> Result<(), Errno> {
    let mut ifr = named_ifreq(name)?;
    ifr.ifr_ifru.ifru_flags = flags;
    set_interface(sock, libc::SIOCSIFFLAGS, &ifr)
}

/// `SIOCSIFADDR`: interface `name`'s IPv4 address.
pub fn set_interface_address(sock: RawFd, name: &CStr, address: [u8; 4]) -> Result<(), Errno> {
    let mut ifr = named_ifreq(name)?;
    ifr.ifr_ifru.ifru_addr = inet_sockaddr(address);
    set_interface(sock, libc::SIOCSIFADDR, &ifr)
}

/// `SIOCSIFNETMASK`: interface `name`'s IPv4 netmask.
pub fn set_interface_netmask(sock: RawFd, name: &CStr, netmask: [u8; 4]) -> Result<(), Errno> {
    let mut ifr = named_ifreq(name)?;
    ifr.ifr_ifru.ifru_netmask = inet_sockaddr(netmask);
    set_interface(sock, libc::SIOCSIFNETMASK, &ifr)
}

/// `SIOCSIFMTU`: interface `name`'s MTU.
pub fn set_interface_mtu(sock: RawFd, name: &CStr, mtu: i32) -> Result<(), Errno> {
    let mut ifr = named_ifreq(name)?;
    ifr.ifr_ifru.ifru_mtu = mtu;
    set_interface(sock, libc::SIOCSIFMTU, &ifr)
}

/// `SIOCGSKNS` (`<linux/sockios.h>`, Linux 4.9): a descriptor of the network namespace a socket belongs to.
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// `ioctl(sock, SIOCGSKNS)`: opens the network namespace `sock` was created in (close-on-exec), as
/// `/proc/PID/ns/net` would, without needing `/proc`. The caller must hold `CAP_NET_ADMIN` over that namespace.
pub fn socket_network_namespace(sock: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    // SAFETY: SIOCGSKNS takes no argument and reads or writes none of our memory; `sock` is borrowed, so open.
    let fd = crate::check_fd(unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNS) } as libc::c_long)?;
    // SAFETY: the ioctl succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `TUNSETIFF`: the open `/dev/net/tun` descriptor `tun` becomes interface `name`, of kind `flags` (`IFF_TUN`,
/// `IFF_NO_PI`...).
pub fn set_tun_interface(tun: RawFd, name: &CStr, flags: libc::c_short) -> Result<(), Errno> {
    let mut ifr = named_ifreq(name)?;
    ifr.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads (and writes back the name into) a live ifreq.
    check(unsafe { libc::ioctl(tun, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) } as libc::c_long).map(drop)
}

/// `TUNSETPERSIST`: whether the TUN interface of `tun` outlives the descriptor.
pub fn set_tun_persist(tun: RawFd, persist: bool) -> Result<(), Errno> {
    // SAFETY: TUNSETPERSIST takes an integer argument.
    check(unsafe { libc::ioctl(tun, libc::TUNSETPERSIST, libc::c_ulong::from(persist)) } as libc::c_long).map(drop)
}

/// `SIOCGIFINDEX`: interface `name`'s index, through the socket `sock`.
pub fn interface_index(sock: RawFd, name: &CStr) -> Result<libc::c_int, Errno> {
    let mut ifr = named_ifreq(name)?;
    // SAFETY: SIOCGIFINDEX reads the name from, and writes the index into, a live ifreq.
    check(unsafe { libc::ioctl(sock, libc::SIOCGIFINDEX, &mut ifr as *mut libc::ifreq) } as libc::c_long)?;
    // SAFETY: SIOCGIFINDEX succeeded, so the union holds the index it wrote.
    Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
}

/// `IFLA_INET6_ADDR_GEN_MODE` (`<linux/if_link.h>`), an attribute of `IFLA_AF_SPEC`'s `AF_INET6` part.
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
/// `IN6_ADDR_GEN_MODE_NONE`: the interface makes no IPv6 address of its own, link-local included.
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
/// The length of [`addr_gen_mode_none_request`]'s message: header, `ifinfomsg`, three nested attributes.
const ADDR_GEN_MODE_REQUEST_LEN: usize = 48;

/// The rtnetlink message `ip link set DEV addrgenmode none` sends for interface `index`: `RTM_SETLINK`
/// (request, acknowledged) of an `ifinfomsg` for `index` with `IFLA_AF_SPEC { AF_INET6 {
/// IFLA_INET6_ADDR_GEN_MODE = IN6_ADDR_GEN_MODE_NONE } }`. Every field in the machine's byte order, each
/// attribute padded to 4 bytes.
fn addr_gen_mode_none_request(index: libc::c_int) -> [u8; ADDR_GEN_MODE_REQUEST_LEN] {
    let mut m = [0u8; ADDR_GEN_MODE_REQUEST_LEN];
    // struct nlmsghdr: length, type, flags, sequence number, port id (0: the kernel fills ours in).
    m[0..4].copy_from_slice(&(ADDR_GEN_MODE_REQUEST_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&libc::RTM_SETLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // struct ifinfomsg: family AF_UNSPEC and padding (bytes 16-17), device type 0 (18-19), the index (20-23),
    // flags and change mask 0 (24-31): nothing else about the interface changes.
    m[20..24].copy_from_slice(&index.to_ne_bytes());
    // struct rtattr { length, type }, nested: IFLA_AF_SPEC (16 bytes) > AF_INET6 (12) > the mode (5, padded to 8).
    m[32..34].copy_from_slice(&16u16.to_ne_bytes());
    m[34..36].copy_from_slice(&libc::IFLA_AF_SPEC.to_ne_bytes());
    m[36..38].copy_from_slice(&12u16.to_ne_bytes());
    m[38..40].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
    m[40..42].copy_from_slice(&5u16.to_ne_bytes());
    m[42..44].copy_from_slice(&IFLA_INET6_ADDR_GEN_MODE.to_ne_bytes());
    m[44] = IN6_ADDR_GEN_MODE_NONE;
    m
}

/// The errno of the kernel's answer to a request (an `NLMSG_ERROR` message: 0 is the acknowledgement), `EPROTO`
/// when `answer` is not one.
fn netlink_answer_errno(answer: &[u8]) -> Errno {
    let field = |range: std::ops::Range<usize>| answer.get(range).and_then(|b| <[u8; 4]>::try_from(b).ok());
    let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    match (kind, field(16..20)) {
        (Some(kind), Some(error)) if kind == libc::NLMSG_ERROR as u16 => -i32::from_ne_bytes(error),
        _ => libc::EPROTO,
    }
}

/// Interface `index` of the caller's network namespace makes no IPv6 address of its own, as `ip link set DEV
/// addrgenmode none` (by rtnetlink, over a socket opened and closed here): with no link-local address, none of
/// the kernel's IPv6 housekeeping on the link happens (duplicate address detection, router solicitations, MLD
/// reports). Takes effect when the interface next goes up. Needs `CAP_NET_ADMIN` over the namespace; a kernel
/// without IPv6 refuses it (`EAFNOSUPPORT`). Async-signal-safe: system calls on buffers of the stack.
pub fn disable_ipv6_address_generation(index: libc::c_int) -> Result<(), Errno> {
    let sock = crate::socket::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    let request = addr_gen_mode_none_request(index);
    // SAFETY: send reads `request.len()` bytes of a live array; an unconnected netlink socket sends to the kernel.
    check(unsafe { libc::send(sock.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) } as libc::c_long)?;
    // The answer: NLMSG_ERROR with our request's header after the error (36 bytes; the kernel leaves out the
    // rest of an acknowledged request).
    let mut answer = [0u8; 128];
    // SAFETY: recv writes at most `answer.len()` bytes into a live array.
    let n =
        check(unsafe { libc::recv(sock.as_raw_fd(), answer.as_mut_ptr().cast(), answer.len(), 0) } as libc::c_long)?;
    match netlink_answer_errno(&answer[..n as usize]) {
        0 => Ok(()),
        errno => Err(errno),
    }
}

/// The kernel's `struct rtentry` (`<net/route.h>`), which the `libc` crate has for musl only.
#[repr(C)]
struct RouteEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// `SIOCADDRT`: the default route, every IPv4 destination, through `gateway` on interface `dev`.
pub fn add_default_route(sock: RawFd, gateway: [u8; 4], dev: &CStr) -> Result<(), Errno> {
    let route = RouteEntry {
        rt_pad1: 0,
        rt_dst: inet_sockaddr([0, 0, 0, 0]),
        rt_gateway: inet_sockaddr(gateway),
        rt_genmask: inet_sockaddr([0, 0, 0, 0]),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        // The kernel only reads the name (copy_from_user); the cast to *mut is what the C struct declares.
        rt_dev: dev.as_ptr().cast_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads a live rtentry whose rt_dev points at `dev`, a NUL-terminated name alive for the
    // call.
    check(unsafe { libc::ioctl(sock, libc::SIOCADDRT, &route as *const RouteEntry) } as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addr_gen_mode_request_is_the_message_ip_link_sends() {
        // The attributes `ip link set DEV addrgenmode none` sends (as strace decodes them: IFLA_AF_SPEC of 16
        // bytes > AF_INET6 of 12 > IFLA_INET6_ADDR_GEN_MODE of 5 = 1), as RTM_SETLINK (19; `ip` uses
        // RTM_NEWLINK, which changes an existing link the same way) with flags REQUEST | ACK, sequence 1, for
        // index 7, in little-endian byte order.
        #[rustfmt::skip]
        let expected: [u8; 48] = [
            48, 0, 0, 0, 19, 0, 5, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            16, 0, 26, 0, 12, 0, 10, 0, 5, 0, 8, 0, 1, 0, 0, 0,
        ];
        if cfg!(target_endian = "little") {
            assert_eq!(addr_gen_mode_none_request(7), expected);
        }
    }

    #[test]
    fn a_netlink_answer_gives_its_errno() {
        let answer = |kind: u16, error: i32| {
            let mut a = [0u8; 36];
            a[4..6].copy_from_slice(&kind.to_ne_bytes());
            a[16..20].copy_from_slice(&error.to_ne_bytes());
            a
        };
        assert_eq!(netlink_answer_errno(&answer(libc::NLMSG_ERROR as u16, 0)), 0);
        assert_eq!(netlink_answer_errno(&answer(libc::NLMSG_ERROR as u16, -libc::EPERM)), libc::EPERM);
        assert_eq!(netlink_answer_errno(&answer(libc::RTM_NEWLINK, 0)), libc::EPROTO);
        assert_eq!(netlink_answer_errno(&[2, 0]), libc::EPROTO);
    }

    #[test]
    fn a_name_too_long_for_an_interface_is_refused() {
        assert!(named_ifreq(c"airlock0").is_ok());
        assert!(named_ifreq(c"fifteen-bytes-x").is_ok());
        assert_eq!(named_ifreq(c"sixteen-bytes-xx").err(), Some(libc::EINVAL));
    }
}
