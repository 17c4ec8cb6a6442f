//! `--net allow` for a VM: the guest's one NIC leads to the same network gateway as a namespace sandbox's TUN.
//!
//! The host side ([`VmNetwork`]): the gateway (`airlock-netgw`) is started as for a namespace sandbox
//! (`runtime::gateway`: as `nobody` for root, dying with airlock, stopped when the run ends), with `--link
//! ethernet`; instead of a TUN it is handed one end of a `socketpair(AF_UNIX, SOCK_DGRAM)` whose other end is
//! QEMU's `-netdev dgram` behind a virtio-net NIC: one Ethernet frame a datagram, no TAP, no bridge, nothing on
//! the host's network configuration. The gateway answers ARP for its address and takes only IPv4 from the
//! guest's fixed MAC (`netgw::ether`); the allow-list, DNS, the proxy and the audit records are the gateway's as
//! for namespaces.
//!
//! The guest side ([`configure_guest`], [`etc_files`]): the agent gives `eth0` the sandbox's address, MTU and
//! default route (IPv6 off: the gateway routes IPv4 only), and shows the gateway's `/etc/resolv.conf` and
//! `/etc/hosts` through an overlay of `/etc`. The guest's engine then keeps the VM's network namespace (the
//! request's policy says `host`): the VM's only interface is the gateway's, which enforces the allow-list.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use policy::sandbox::Network;
use runtime::gateway::{GatewayProcess, GatewaySetup};

use super::protocol::GuestRequest;

/// The guest's NIC, as virtio-net names it (the guest has no udev to rename it).
const GUEST_INTERFACE: &CStr = c"eth0";
/// How long the NIC may take to appear once its driver is loaded.
const NIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot create the socket pair of the guest's NIC")]
    CreateNicSocket(#[source] std::io::Error),
    #[error("cannot start the network gateway")]
    StartGateway(#[source] runtime::gateway::GatewayError),
    #[error("cannot hand the guest's NIC to the network gateway: {}", std::io::Error::from_raw_os_error(*.0))]
    HandNic(i32),
}

/// What the guest agent configures for `--net allow` (sent in the request).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestNetwork {
    pub address: [u8; 4],
    pub netmask: [u8; 4],
    pub gateway: [u8; 4],
    pub mtu: u16,
    /// Files shown in the guest's `/etc` (name in `/etc`, contents): `resolv.conf` and `hosts`, the gateway's.
    pub etc_files: Vec<(String, String)>,
}

/// The running gateway of a VM and QEMU's end of the NIC's socket pair.
#[derive(Debug)]
pub struct VmNetwork {
    gateway: GatewayProcess,
    qemu_end: UnixDatagram,
}

impl VmNetwork {
    /// Starts the gateway of `setup` on an Ethernet link and hands it its end of the NIC's socket pair; returns
    /// once the gateway has it (its acknowledgement), so the guest never sends a frame nobody reads.
    pub fn start(setup: &GatewaySetup) -> Result<VmNetwork, NetError> {
        let mut setup = setup.clone();
        setup.args.extend(["--link".into(), "ethernet".into()]);
        let (qemu_end, gateway_end) = UnixDatagram::pair().map_err(NetError::CreateNicSocket)?;
        let mut gateway = GatewayProcess::start(&setup).map_err(NetError::StartGateway)?;
        runtime::net::hand_tun_to_gateway(gateway.sandbox_end(), gateway_end.as_raw_fd())
            .map_err(|failure| NetError::HandNic(failure.errno))?;
        gateway.close_sandbox_end();
        drop(gateway_end);
        Ok(VmNetwork { gateway, qemu_end })
    }

    /// QEMU's end of the socket pair (kept open by this until [`VmNetwork::stop`]).
    pub fn qemu_fd(&self) -> RawFd {
        self.qemu_end.as_raw_fd()
    }

    /// Once QEMU is gone: the gateway records the connections still open and exits.
    pub fn stop(self) {
        self.gateway.stop();
    }
}

/// `--net allow` (the launch described the gateway in `host.gateway`): prepares `request` for the guest's NIC and
/// starts the gateway, which serves before the guest boots; `None` for any other network.
pub fn start_for(
    policy: &policy::sandbox::SandboxPolicy,
    host: &runtime::prepare::HostContext,
    request: &mut GuestRequest,
) -> Result<Option<VmNetwork>, NetError> {
    match &host.gateway {
        Some(setup) if matches!(policy.network, Network::Allow(_)) => {
            prepare_request(request, setup);
            VmNetwork::start(setup).map(Some)
        }
        _ => Ok(None),
    }
}

/// QEMU's options for the NIC on the inherited descriptor `fd`: a virtio-net device with the guest's fixed MAC
/// (the only source the gateway takes frames from) on a `dgram` netdev (no virtio header: the gateway sends
/// complete checksums).
pub fn qemu_args(fd: RawFd) -> [String; 4] {
    let mac = netgw::ether::GUEST_MAC.map(|b| format!("{b:02x}")).join(":");
    [
        "-netdev".into(),
        format!("dgram,id=net0,local.type=fd,local.str={fd}"),
        "-device".into(),
        format!("virtio-net-device,netdev=net0,mac={mac}"),
    ]
}

/// `--net allow`: the request tells the guest to configure its NIC as the gateway's link and to show the
/// gateway's `/etc` files, and its engine to keep the VM's network namespace (`host`: the VM's, whose only way
/// out is the gateway).
pub fn prepare_request(request: &mut GuestRequest, setup: &GatewaySetup) {
    if !matches!(request.policy.network, Network::Allow(_)) {
        return;
    }
    let interface = &setup.interface;
    let prefix = u32::from(interface.prefix.min(32));
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    let etc_files = setup
        .files
        .iter()
        .filter_map(|(path, contents)| {
            let name = path.strip_prefix("/etc/")?;
            Some((name.to_string(), String::from_utf8_lossy(contents).into_owned()))
        })
        .collect();
    request.network = Some(GuestNetwork {
        address: interface.address.octets(),
        netmask: mask.to_be_bytes(),
        gateway: interface.gateway.octets(),
        mtu: netgw::ether::ETHERNET_MTU,
        etc_files,
    });
    request.policy.network = Network::Host;
}

/// In the guest, before its root changes: `eth0` gets the address, MTU and default route, loopback comes up,
/// IPv6 goes (the gateway routes IPv4 only: no link-local chatter nobody answers).
pub fn configure_guest(network: &GuestNetwork) -> Result<(), String> {
    let deadline = std::time::Instant::now() + NIC_TIMEOUT;
    let sys_dir = Path::new("/sys/class/net").join(GUEST_INTERFACE.to_string_lossy().as_ref());
    while !sys_dir.exists() {
        if std::time::Instant::now() > deadline {
            return Err("network: the guest's NIC did not appear (virtio_net)".to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for conf in ["all", "default", "eth0"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
    }
    let fail =
        |what: &'static str| move |e: i32| format!("network: cannot {what}: {}", std::io::Error::from_raw_os_error(e));
    runtime::net::bring_up_loopback().map(drop).map_err(fail("bring up lo"))?;
    let sock = sys::socket::socket(libc::AF_INET, libc::SOCK_DGRAM, 0).map_err(fail("open a socket"))?;
    let (sock, name) = (sock.as_raw_fd(), GUEST_INTERFACE);
    sys::net::set_interface_address(sock, name, network.address).map_err(fail("set eth0's address"))?;
    sys::net::set_interface_netmask(sock, name, network.netmask).map_err(fail("set eth0's netmask"))?;
    sys::net::set_interface_mtu(sock, name, i32::from(network.mtu)).map_err(fail("set eth0's MTU"))?;
    sys::net::set_interface_flags(sock, name, (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short)
        .map_err(fail("bring up eth0"))?;
    sys::net::add_default_route(sock, network.gateway, name).map_err(fail("add the default route"))?;
    // The link comes up (carrier) a moment after the interface: a command's first packets would wait for it
    // (a SYN dropped, resent a second later), so the command starts once it is up.
    while std::fs::read_to_string(sys_dir.join("carrier")).map_or(true, |c| c.trim() != "1") {
        if std::time::Instant::now() > deadline {
            return Err("network: the guest's NIC has no link (carrier)".to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

/// In the guest, with the shares mounted: `etc` (the root's `/etc`, a read-only share) becomes an overlay with
/// the gateway's files in its upper layer (regular files: the guest's engine, keeping the VM's network, binds
/// nothing over them), read-only.
pub fn etc_files(etc: &Path, network: &GuestNetwork) -> Result<(), String> {
    if !etc.is_dir() {
        return Ok(());
    }
    super::guest::overlay_etc(etc, Path::new("/newroot/run/airlock-net-etc"), |upper| {
        for (name, contents) in &network.etc_files {
            // A name of the host's making ("resolv.conf", "hosts"): nothing with a slash.
            if name.contains('/') || name.is_empty() {
                return Err(format!("network: bad /etc file name {name:?}"));
            }
            std::fs::write(upper.join(name), contents).map_err(|e| format!("cannot write /etc/{name}: {e}"))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_gets_a_virtio_nic_with_the_guests_mac_on_the_descriptor() {
        let args = qemu_args(7);
        assert_eq!(args[1], "dgram,id=net0,local.type=fd,local.str=7");
        assert_eq!(args[3], "virtio-net-device,netdev=net0,mac=02:a1:00:00:00:02");
    }
}
