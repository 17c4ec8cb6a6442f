//! The sandbox's network namespace starts with only a loopback interface, and it is down. Bringing it up gives
//! the command a working `127.0.0.1` of its own; the host's loopback is in another namespace and unreachable.
//!
//! With `--net allow` the namespace also gets `airlock0`, a TUN interface whose other end is the network
//! gateway's process on the host (see `gateway`): the only way out, and every packet on it is the gateway's to
//! judge.

use std::os::fd::RawFd;

use crate::failure::{ChildFailure, Step};
use crate::plan::TunPlan;
use sys::Errno;

/// `ioctl(SIOCSIFFLAGS)` on `lo` with `IFF_UP`.
pub fn bring_up_loopback() -> Result<(), Errno> {
    // SAFETY: socket takes only integers.
    let sock = sys::check_fd(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) } as libc::c_long
    )?;
    // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq that lives across the call.
    let ret = unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr as *const libc::ifreq) };
    sys::fd::close(sock);
    sys::check(ret as libc::c_long).map(drop)
}

/// `sethostname(name)`, in the sandbox's own UTS namespace.
pub fn set_hostname(name: &std::ffi::CStr) -> Result<(), Errno> {
    // SAFETY: `name` is valid for `len` bytes.
    let ret = unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) };
    sys::check(ret as libc::c_long).map(drop)
}

/// Opens `/dev/net/tun` for the network gateway's interface. A TUN device belongs to the network namespace of
/// the process that opened `/dev/net/tun` (not the one that configures it), so this runs in init, inside the
/// sandbox's namespace — and before `pivot_root`, while the host's `/dev` is still in view: the sandbox's own
/// `/dev` never has `net/tun`.
pub fn open_tun_device() -> Result<RawFd, Errno> {
    // SAFETY: a NUL-terminated literal path and integer flags.
    sys::check_fd(unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) } as libc::c_long)
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

fn named_ifreq(name: &[u8; libc::IFNAMSIZ]) -> libc::ifreq {
    // SAFETY: an all-zero ifreq is valid (empty name, zero union).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.iter()) {
        *dst = *src as libc::c_char;
    }
    ifr
}

/// Makes the open `/dev/net/tun` descriptor the TUN interface `plan.name` (IP packets without a header), gives it
/// the sandbox's address, MTU, brings it up and routes everything that is not loopback through it to the
/// gateway's address. Init holds `CAP_NET_ADMIN` in the user namespace that owns the sandbox's network
/// namespace, so this works rootless. Async-signal-safe: ioctls on prepared data.
pub fn create_gateway_interface(tun: RawFd, plan: &TunPlan) -> Result<(), ChildFailure> {
    let fail = |step| move |errno| ChildFailure { step, errno, index: 0 };
    let mut ifr = named_ifreq(&plan.name);
    // IFF_VNET_HDR: each packet carries a virtio_net_hdr, through which the gateway marks its TCP segments as
    // checksummed (netgw's device.rs); the gateway reads and writes with that header, so this flag and netgw go
    // together.
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and writes back the name into) a live ifreq.
    sys::check(unsafe { libc::ioctl(tun, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) } as libc::c_long)
        .map_err(fail(Step::CreateTunInterface))?;
    // Persistent: the interface then goes with the sandbox's network namespace (destroyed by the kernel's
    // cleanup worker, in the background) instead of with the gateway's descriptor, whose close would otherwise
    // unregister it synchronously (~20 ms of RCU waits) in the gateway's exit, which the supervisor waits for.
    // It cannot outlive the namespace, and only a process holding CAP_NET_ADMIN there could reattach to it.
    // SAFETY: TUNSETPERSIST takes an integer argument.
    sys::check(unsafe { libc::ioctl(tun, libc::TUNSETPERSIST, 1 as libc::c_ulong) } as libc::c_long)
        .map_err(fail(Step::CreateTunInterface))?;

    // SAFETY: socket takes only integers.
    let sock =
        sys::check_fd(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) } as libc::c_long)
            .map_err(fail(Step::ConfigureTunInterface))?;
    let result = configure_interface(sock, plan);
    sys::fd::close(sock);
    result
}

fn configure_interface(sock: RawFd, plan: &TunPlan) -> Result<(), ChildFailure> {
    let fail = |step| move |errno| ChildFailure { step, errno, index: 0 };
    let set = |request: libc::Ioctl, ifr: &libc::ifreq| {
        // SAFETY: the SIOCSIF* requests read a live ifreq that outlives the call.
        sys::check(unsafe { libc::ioctl(sock, request, ifr as *const libc::ifreq) } as libc::c_long)
            .map(drop)
            .map_err(fail(Step::ConfigureTunInterface))
    };
    let mut ifr = named_ifreq(&plan.name);
    ifr.ifr_ifru.ifru_addr = inet_sockaddr(plan.address);
    set(libc::SIOCSIFADDR, &ifr)?;
    let mut ifr = named_ifreq(&plan.name);
    ifr.ifr_ifru.ifru_netmask = inet_sockaddr(plan.netmask);
    set(libc::SIOCSIFNETMASK, &ifr)?;
    let mut ifr = named_ifreq(&plan.name);
    ifr.ifr_ifru.ifru_mtu = plan.mtu;
    set(libc::SIOCSIFMTU, &ifr)?;
    let mut ifr = named_ifreq(&plan.name);
    ifr.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    set(libc::SIOCSIFFLAGS, &ifr)?;

    // The default route: every destination that is not on loopback or the /30 goes to the gateway.
    let route = RouteEntry {
        rt_pad1: 0,
        rt_dst: inet_sockaddr([0, 0, 0, 0]),
        rt_gateway: inet_sockaddr(plan.gateway),
        rt_genmask: inet_sockaddr([0, 0, 0, 0]),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        // The kernel only reads the name (copy_from_user); the cast to *mut is what the C struct declares.
        rt_dev: plan.name.as_ptr() as *mut libc::c_char,
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads a live rtentry whose rt_dev points at a NUL-terminated name in `plan`.
    sys::check(unsafe { libc::ioctl(sock, libc::SIOCADDRT, &route as *const RouteEntry) } as libc::c_long)
        .map(drop)
        .map_err(fail(Step::AddDefaultRoute))
}

/// Passes the configured TUN descriptor to the gateway process over `socket` (SCM_RIGHTS), then waits for its
/// one-byte acknowledgement, so that the command never starts before the gateway reads the interface (an end
/// of stream means the gateway died: the sandbox must not run with a network nobody enforces).
pub fn hand_tun_to_gateway(socket: RawFd, tun: RawFd) -> Result<(), ChildFailure> {
    let fail = |errno| ChildFailure { step: Step::HandTunToGateway, errno, index: 0 };
    crate::tty::send_fd(socket, tun).map_err(fail)?;
    let mut ack = [0u8; 1];
    match sys::fd::read(socket, &mut ack) {
        Ok(1) => Ok(()),
        Ok(_) => Err(fail(libc::EPIPE)),
        Err(e) => Err(fail(e)),
    }
}
