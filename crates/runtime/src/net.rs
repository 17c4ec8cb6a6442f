//! The sandbox's network namespace starts with only a loopback interface, and it is down. Bringing it up gives
//! the command a working `127.0.0.1` of its own; the host's loopback is in another namespace and unreachable.
//!
//! With `--net allow` the namespace also gets `airlock0`, a TUN interface whose other end is the network
//! gateway's process on the host (see `gateway`): the only way out, and every packet on it is the gateway's to
//! judge.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use crate::failure::{ChildFailure, Step};
use crate::plan::TunPlan;
use sys::Errno;

/// `ioctl(SIOCSIFFLAGS)` on `lo` with `IFF_UP`.
pub fn bring_up_loopback() -> Result<(), Errno> {
    let sock = sys::socket::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    // The socket is closed (dropped) once the flags are set, or not.
    sys::net::set_interface_flags(sock.as_raw_fd(), c"lo", (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short)
}

/// `sethostname(name)`, in the sandbox's own UTS namespace.
pub fn set_hostname(name: &CStr) -> Result<(), Errno> {
    sys::uts::set_hostname(name)
}

/// Opens `/dev/net/tun` for the network gateway's interface. A TUN device belongs to the network namespace of
/// the process that opened `/dev/net/tun` (not the one that configures it), so this runs in init, inside the
/// sandbox's namespace — and before `pivot_root`, while the host's `/dev` is still in view: the sandbox's own
/// `/dev` never has `net/tun`.
pub fn open_tun_device() -> Result<RawFd, Errno> {
    // By number: init's plan holds it until it is handed to the gateway.
    sys::fd::open(c"/dev/net/tun", libc::O_RDWR | libc::O_CLOEXEC).map(IntoRawFd::into_raw_fd)
}

/// Makes the open `/dev/net/tun` descriptor the TUN interface `plan.name` (IP packets without a header), gives it
/// the sandbox's address, MTU, brings it up and routes everything that is not loopback through it to the
/// gateway's address. Init holds `CAP_NET_ADMIN` in the user namespace that owns the sandbox's network
/// namespace, so this works rootless. Async-signal-safe: ioctls on prepared data.
pub fn create_gateway_interface(tun: RawFd, plan: &TunPlan) -> Result<(), ChildFailure> {
    let fail = |step| move |errno| ChildFailure { step, errno, index: 0 };
    // The plan's name is NUL-terminated (`GatewayInterface::plan` keeps it shorter than IFNAMSIZ).
    let name = CStr::from_bytes_until_nul(&plan.name).map_err(|_| fail(Step::CreateTunInterface)(libc::EINVAL))?;
    // IFF_VNET_HDR: each packet carries a virtio_net_hdr, through which the gateway marks its TCP segments as
    // checksummed (netgw's device.rs); the gateway reads and writes with that header, so this flag and netgw go
    // together.
    let flags = (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    sys::net::set_tun_interface(tun, name, flags).map_err(fail(Step::CreateTunInterface))?;
    // Persistent: the interface then goes with the sandbox's network namespace (destroyed by the kernel's
    // cleanup worker, in the background) instead of with the gateway's descriptor, whose close would otherwise
    // unregister it synchronously (~20 ms of RCU waits) in the gateway's exit, which the supervisor waits for.
    // It cannot outlive the namespace, and only a process holding CAP_NET_ADMIN there could reattach to it.
    sys::net::set_tun_persist(tun, true).map_err(fail(Step::CreateTunInterface))?;

    let sock = sys::socket::socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(fail(Step::ConfigureTunInterface))?;
    // The socket is closed (dropped) once the interface is configured, or not.
    configure_interface(sock.as_raw_fd(), name, plan)
}

fn configure_interface(sock: RawFd, name: &CStr, plan: &TunPlan) -> Result<(), ChildFailure> {
    let fail = |step| move |errno| ChildFailure { step, errno, index: 0 };
    let configured = sys::net::set_interface_address(sock, name, plan.address)
        .and_then(|()| sys::net::set_interface_netmask(sock, name, plan.netmask))
        .and_then(|()| sys::net::set_interface_mtu(sock, name, plan.mtu))
        .and_then(|()| sys::net::set_interface_flags(sock, name, (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short));
    configured.map_err(fail(Step::ConfigureTunInterface))?;

    // The default route: every destination that is not on loopback or the /30 goes to the gateway.
    sys::net::add_default_route(sock, plan.gateway, name).map_err(fail(Step::AddDefaultRoute))
}

/// Passes the configured TUN descriptor to the gateway process over `socket` (SCM_RIGHTS), then waits for its
/// one-byte acknowledgement, so that the command never starts before the gateway reads the interface (an end
/// of stream means the gateway died: the sandbox must not run with a network nobody enforces).
pub fn hand_tun_to_gateway(socket: RawFd, tun: RawFd) -> Result<(), ChildFailure> {
    let fail = |errno| ChildFailure { step: Step::HandTunToGateway, errno, index: 0 };
    sys::socket::send_fd(socket, tun).map_err(fail)?;
    let mut ack = [0u8; 1];
    match sys::fd::read(socket, &mut ack) {
        Ok(1) => Ok(()),
        Ok(_) => Err(fail(libc::EPIPE)),
        Err(e) => Err(fail(e)),
    }
}
