//! The sandbox's network namespace starts with only a loopback interface, and it is down. Bringing it up gives
//! the command a working `127.0.0.1` of its own; the host's loopback is in another namespace and unreachable.
//! The namespace is made by a child of init while init builds the mount tree ([`start_network_namespace`]).
//!
//! With `--net allow` the namespace also gets `airlock0`, a TUN interface whose other end is the network
//! gateway's process on the host (see `gateway`): the only way out, and every packet on it is the gateway's to
//! judge.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};

use crate::exec::EXIT_SETUP_FAILED;
use crate::failure::{fail, report_and_exit, ChildFailure, Step, RECORD_LEN};
use crate::plan::TunPlan;
use sys::Errno;

/// The process that makes the sandbox's network namespace while init builds the mount tree (see
/// [`start_network_namespace`]); [`enter_network_namespace`] takes its result.
pub struct NetworkNamespaceMaker {
    pid: libc::pid_t,
    /// Init's end of the socket the maker answers on: the namespace's descriptor, or a failure record.
    answer: OwnedFd,
}

impl NetworkNamespaceMaker {
    /// Init's end of the answer socket (kept open through init's close of inherited descriptors).
    pub fn answer_fd(&self) -> RawFd {
        self.answer.as_raw_fd()
    }
}

/// The maker's pid in the sandbox's pid namespace: one the sandbox's processes would reach after 297 others
/// (and below the smallest `pid_max`, 301), free while the maker lives since only init is there before it.
const MAKER_PID: libc::pid_t = 300;

/// Starts making the sandbox's network namespace in a child of init, so that the kernel's work (a new network
/// namespace is the largest single cost of a sandbox's start: its sysctl tables, its loopback device) runs on
/// another CPU while init builds the mount tree. `clone` would do it in the caller, on the critical path:
/// `clone`'s `CLONE_NEWNET` is done by the parent, inside the call, before the child exists. The maker is a
/// child of init, so it is in the sandbox's user namespace (which then owns the network namespace, exactly as
/// with `CLONE_NEWNET`) and in its pid namespace (it dies with init); it runs airlock's code only, brings the
/// loopback interface up, sends init the namespace's descriptor and exits. No sandbox code runs before init has
/// entered the namespace and reaped the maker ([`enter_network_namespace`], before the command is forked).
/// Async-signal-safe: a fork of single-threaded init, system calls on constants.
pub fn start_network_namespace() -> Result<NetworkNamespaceMaker, Errno> {
    let (answer, maker_end) = sys::fd::socketpair_cloexec()?;
    // Its pid is chosen (init holds CAP_SYS_ADMIN over the pid namespace, which that needs) and not the next one:
    // a chosen pid leaves the namespace's next pid where it was, so the command is still pid 2. A refusal of
    // that choice is no reason to fail: then a plain fork, and the command is pid 3.
    let forked = sys::process::fork_with_pid(MAKER_PID).or_else(|_| sys::process::fork())?;
    match forked {
        sys::process::Forked::Child => {
            drop(answer);
            make_network_namespace(maker_end.as_raw_fd())
        }
        sys::process::Forked::Parent(pid) => {
            // Making a network namespace is ~0.3 ms of kernel work, meant to run beside init's mount tree. The
            // kernel often queues the maker on init's CPU and runs it first, and an idle CPU does not take init
            // over at once: in about one start in four, init then waited for the whole namespace (measured with
            // bpftrace: the gap before init's first mount 256-512 us instead of 4-8). So the maker goes to
            // another CPU. Only scheduling: a refusal changes nothing else, and is ignored. (It exits once it has
            // sent the namespace: nothing inherits the narrower set.)
            let _ = sys::sched::move_off_current_cpu(pid);
            Ok(NetworkNamespaceMaker { pid, answer })
        }
    }
}

/// The maker's work: a new network namespace, its loopback up, its descriptor sent to init. Never returns.
fn make_network_namespace(answer: RawFd) -> ! {
    // It keeps nothing of init's but its answer: not what airlock's caller leaked (init has not closed that yet),
    // nor the gateway's socket (whose end tells the gateway that the sandbox is gone).
    let made = sys::fd::close_fds_except(&[answer])
        .map_err(fail(Step::CloseInheritedFds, 0))
        .and_then(|()| sys::namespace::unshare(libc::CLONE_NEWNET).map_err(fail(Step::CreateNetworkNamespace, 0)))
        .and_then(|()| bring_up_loopback().map_err(fail(Step::BringUpLoopback, 0)));
    match made.and_then(|sock| {
        sys::net::socket_network_namespace(sock.as_fd()).map_err(fail(Step::CreateNetworkNamespace, 0))
    }) {
        Ok(namespace) => match sys::socket::send_fd(answer, namespace.as_raw_fd()) {
            Ok(()) => sys::process::exit_immediately(0),
            Err(errno) => report_and_exit(answer, Step::EnterNetworkNamespace, errno, 0, EXIT_SETUP_FAILED),
        },
        Err(f) => report_and_exit(answer, f.step, f.errno, f.index, EXIT_SETUP_FAILED),
    }
}

/// Enters the network namespace `maker` made (`setns`) and reaps the maker, which has exited or is about to (its
/// answer is the last thing it does), so that it never shows in the sandbox, not even as a zombie. A failure of
/// the maker's comes back as its own step and errno; a maker that died without answering is `EPIPE`.
pub fn enter_network_namespace(maker: NetworkNamespaceMaker) -> Result<(), ChildFailure> {
    let NetworkNamespaceMaker { pid, answer } = maker;
    let mut record = [0u8; RECORD_LEN];
    let mut namespace = [None];
    let received = sys::socket::recv_with_fds(answer.as_fd(), &mut record, &mut namespace);
    drop(answer);
    let _ = sys::wait::wait_for_exit(pid);
    let fail_enter = fail(Step::EnterNetworkNamespace, 0);
    match (received, namespace) {
        (Ok(_), [Some(namespace)]) => sys::namespace::setns(namespace.as_fd(), libc::CLONE_NEWNET).map_err(fail_enter),
        (Ok(RECORD_LEN), [None]) => Err(ChildFailure::decode(&record).unwrap_or(fail_enter(libc::EPROTO))),
        (Ok(_), [None]) => Err(fail_enter(libc::EPIPE)),
        (Err(errno), _) => Err(fail_enter(errno)),
    }
}

/// `ioctl(SIOCSIFFLAGS)` on `lo` with `IFF_UP`; returns the socket it used, which is in the same namespace.
pub fn bring_up_loopback() -> Result<OwnedFd, Errno> {
    let sock = sys::socket::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    sys::net::set_interface_flags(sock.as_raw_fd(), c"lo", (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short)?;
    Ok(sock)
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
    // No IPv6 address of the interface's own, before it goes up: the sandbox's network is IPv4 only (the gateway
    // drops IPv6), and with a link-local address the kernel's IPv6 housekeeping on the link (router
    // solicitations, 4 s apart at first, then further, MLD reports) woke the gateway each time, bringing its code
    // back into memory. Best effort: nothing is more or less isolated either way, and a kernel without IPv6 has
    // nothing to switch off.
    if let Ok(index) = sys::net::interface_index(sock, name) {
        let _ = sys::net::disable_ipv6_address_generation(index);
    }
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
