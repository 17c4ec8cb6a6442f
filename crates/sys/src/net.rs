//! Network interfaces, by `ioctl`: a TUN device made an interface (`TUNSETIFF`), an interface's flags, address,
//! netmask and MTU (`SIOCSIF*` on any `AF_INET` socket), a default route (`SIOCADDRT`), and the network namespace
//! a socket is in (`SIOCGSKNS`).

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
    fn a_name_too_long_for_an_interface_is_refused() {
        assert!(named_ifreq(c"airlock0").is_ok());
        assert!(named_ifreq(c"fifteen-bytes-x").is_ok());
        assert_eq!(named_ifreq(c"sixteen-bytes-xx").err(), Some(libc::EINVAL));
    }
}
