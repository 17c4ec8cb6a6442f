//! The sandbox's first process: pid 1 of the new pid namespace. It builds the sandbox (mounts, root, hostname,
//! loopback, Landlock ruleset), then stays an init: forks the command, forwards signals to it, reaps every
//! zombie, and when the command exits kills everything left in the namespace and exits with the command's
//! status. Everything here runs after `clone`: syscalls on the prepared plan only, no allocation.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use crate::exec::{self, CommandFds, EXIT_SETUP_FAILED};
use crate::failure::{fail, report_and_exit, ChildFailure, Step};
use crate::mounts::RootFds;
use crate::namespaces::Kind;
use crate::plan::SandboxPlan;
use crate::{landlock, mounts, net, tty};

/// The supervisor's word on the start pipe, after the start byte, when init is to join a cgroup v1 cgroup
/// (`plan.cgroup_tasks`): the cgroup is made, join it.
pub const CGROUP_JOIN: u8 = b'c';
/// ... or: no cgroup after all (best-effort limits that could not be had); go on without.
pub const CGROUP_NONE: u8 = b'n';
/// After `CGROUP_JOIN`: the cgroup's limits are written; the command may start.
pub const CGROUP_LIMITED: u8 = b'l';

/// Descriptors init inherits from the supervisor.
pub struct InitFds {
    /// Read end of the start pipe: one byte once the supervisor has written the id maps.
    pub start: RawFd,
    /// Write end of the failure pipe.
    pub failure: RawFd,
    /// Our end of the socket that carries the pseudo-terminal's master to the supervisor (`-t`).
    pub tty_socket: Option<RawFd>,
    /// Our end of the socket that carries the command's seccomp listener to the supervisor (audited runs).
    pub audit_socket: Option<RawFd>,
    /// `--net allow`: our end of the socket to the network gateway's process, which takes the TUN interface.
    pub gateway_socket: Option<RawFd>,
}

/// Runs the sandbox's init. Never returns.
///
/// `trees` has one slot per mount source, for the detached clones (sized by the supervisor before `clone`, so
/// filling it allocates nothing).
pub fn sandbox_init_main(plan: &SandboxPlan, fds: &InitFds, trees: &mut [RawFd]) -> ! {
    let abort = |f: ChildFailure| -> ! { report_and_exit(fds.failure, f.step, f.errno, f.index, EXIT_SETUP_FAILED) };

    // If the supervisor dies (even by SIGKILL), the kernel kills init, and with it the whole pid namespace:
    // nothing of the sandbox outlives airlock. A SIGKILL from the parent namespace always reaches a pid-1.
    if let Err(e) = sys::process::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
        abort(ChildFailure { step: Step::WaitForSupervisor, errno: e, index: 0 });
    }
    // Our own network namespace is made by a child of ours meanwhile, on the other CPU (the kernel's largest
    // single cost of a start); we enter it once the mount tree is built, or before the TUN device is opened.
    // Made now, before the supervisor's word: the maker needs no uid map, only our capabilities in the sandbox's
    // user namespace, which `clone` gave us.
    let mut network = None;
    if plan.new_network_namespace {
        match net::start_network_namespace() {
            Ok(maker) => network = Some(maker),
            Err(e) => abort(ChildFailure { step: Step::CreateNetworkNamespace, errno: e, index: 0 }),
        }
    }
    // Wait for the supervisor to write our uid/gid maps. EOF means it died before it could; the pdeath signal
    // may not have been armed in time to tell us.
    let mut byte = [0u8; 1];
    match sys::fd::read(fds.start, &mut byte) {
        Ok(1) => {}
        Ok(_) => sys::process::exit_immediately(EXIT_SETUP_FAILED),
        Err(e) => abort(ChildFailure { step: Step::WaitForSupervisor, errno: e, index: 0 }),
    }

    // Descriptors the caller leaked to airlock go now, before any sandbox code could see them (CVE-2016-9962).
    let mut keep = [
        fds.start,
        fds.failure,
        fds.tty_socket.unwrap_or(-1),
        fds.audit_socket.unwrap_or(-1),
        fds.gateway_socket.unwrap_or(-1),
        network.as_ref().map_or(-1, net::NetworkNamespaceMaker::answer_fd),
    ];
    keep.sort_unstable();
    if let Err(e) = sys::fd::close_fds_except(&keep) {
        abort(ChildFailure { step: Step::CloseInheritedFds, errno: e, index: 0 });
    }

    // Our own session: terminal signals (Ctrl-C) reach the supervisor only, which forwards them once.
    let _ = sys::process::new_session();

    // The mount sources are opened and cloned while we still have the credentials of the user who ran airlock:
    // the policy shares what that user can reach (as host root, a bind of /root/.cargo must work though /root
    // is 0700). Only airlock's own plan runs here, on paths validated by the supervisor, never sandbox code.
    let mut overlay = mounts::OverlayFds::NONE;
    if let Err(f) =
        mounts::make_mounts_private().and_then(|()| mounts::clone_mount_sources(&plan.sources, trees, &mut overlay))
    {
        abort(f);
    }
    // The root overlay's directories, for the same reason (and mounted, like the workspace's, after the switch).
    let mut root_layers = RootFds::NONE;
    if let Some(overlay) = &plan.root_overlay {
        if let Err(f) = mounts::open_root_layers(overlay, &mut root_layers) {
            abort(f);
        }
    }
    // `--net allow`: the TUN device, opened now because a TUN interface belongs to the network namespace of
    // whoever opens /dev/net/tun (ours), and because the sandbox's own /dev will not have it.
    let tun = match (&plan.tun, fds.gateway_socket) {
        (Some(_), Some(socket)) => match enter_network(&mut network).and_then(|()| {
            net::open_tun_device().map_err(|errno| ChildFailure { step: Step::OpenTunDevice, errno, index: 0 })
        }) {
            Ok(fd) => Some((fd, socket)),
            Err(f) => abort(f),
        },
        _ => None,
    };

    // cgroup v1: the supervisor has been making the sandbox's cgroup while we took the steps above (on v2 we were
    // born inside it). Its word says whether to join (`CGROUP_JOIN`) or to go on without (`CGROUP_NONE`:
    // best-effort limits that could not be had); anything else, or the pipe's end, stops here. We join now,
    // while we are still the user who ran airlock and the host's cgroupfs is in view, before anything of the
    // sandbox's runs: one thread moving itself, which the kernel does without the global lock (and its RCU
    // wait) that moving another process takes. (What the steps above allocated stays charged where it was.)
    // The limits are written meanwhile: `CGROUP_LIMITED` comes before the command starts (below).
    let joining = !plan.cgroup_tasks.is_empty()
        && match read_word(fds.start) {
            Ok(CGROUP_JOIN) => true,
            Ok(CGROUP_NONE) => false,
            Ok(_) => sys::process::exit_immediately(EXIT_SETUP_FAILED),
            Err(e) => abort(ChildFailure { step: Step::WaitForSupervisor, errno: e, index: 0 }),
        };
    if joining {
        for (index, tasks) in plan.cgroup_tasks.iter().enumerate() {
            if let Err(e) = join_cgroup(tasks) {
                abort(ChildFailure { step: Step::JoinCgroup, errno: e, index: index as u32 });
            }
        }
    }

    // The cgroup namespace, now that we are in the sandbox's cgroup: its root is that
    // cgroup, so the sandbox sees only its own (and /proc/self/cgroup says "/").
    if let Err(e) = sys::namespace::unshare(Kind::Cgroup.flag()) {
        abort(ChildFailure { step: Step::UnshareCgroupNamespace, errno: e, index: 0 });
    }

    // Then become the namespace's root (as host root, the clone left us with host uid 0, unmapped inside: we
    // must not keep it, since the host kernel would still treat file access as host root's).
    if let Err(e) = exec::switch_ids(plan.ids.init_uid, plan.ids.init_gid) {
        abort(ChildFailure { step: Step::SwitchToSandboxRoot, errno: e, index: 0 });
    }
    // Changing credentials clears the parent-death signal: arm it again, then make sure the supervisor did not
    // die in between (it holds the start pipe's write end until the sandbox is gone, so a hang-up means it died).
    if let Err(e) = sys::process::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) {
        abort(ChildFailure { step: Step::WaitForSupervisor, errno: e, index: 0 });
    }
    if supervisor_gone(fds.start) {
        sys::process::exit_immediately(EXIT_SETUP_FAILED);
    }

    if let Err(f) = mounts::mount_workspace_overlay(&overlay, trees)
        .and_then(|()| build_sandbox(plan, trees, &root_layers, tun, &mut network))
    {
        abort(f);
    }
    // The cgroup's limits are in force before anything of the sandbox's runs (see above). Anything but the
    // supervisor's word, or the pipe's end, stops here.
    if joining {
        match read_word(fds.start) {
            Ok(CGROUP_LIMITED) => {}
            Ok(_) => sys::process::exit_immediately(EXIT_SETUP_FAILED),
            Err(e) => abort(ChildFailure { step: Step::WaitForSupervisor, errno: e, index: 0 }),
        }
    }
    sys::fd::close(fds.start);

    // A long-lived sandbox: no command of our own; the sandbox is ready, and init holds it until told to stop.
    if plan.hold {
        hold_until_stopped(fds.failure);
    }

    let tty_slave = match (plan.tty, fds.tty_socket) {
        (Some(winsize), Some(socket)) => match tty::open_sandbox_terminal(&winsize, socket) {
            Ok(slave) => Some(slave),
            Err(f) => abort(f),
        },
        _ => None,
    };
    if let Some(socket) = fds.tty_socket {
        sys::fd::close(socket);
    }

    let landlock_ruleset = match &plan.landlock {
        Some(lp) => match landlock::create_ruleset(lp) {
            Ok(fd) => Some(fd),
            Err(f) => abort(f),
        },
        None => None,
    };

    // The command must not be able to ptrace init or read its memory: init still holds every capability in
    // the namespace. (The capability check already refuses it; this is the second lock.)
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 0);

    let command_fds = CommandFds {
        failure: fds.failure,
        tty_slave: tty_slave.as_ref().map(AsFd::as_fd),
        landlock_ruleset,
        audit_socket: fds.audit_socket,
        agent_listener: None,
    };
    // Init is single-threaded (the spawn checks it); the child only runs exec_command, which is async-signal-safe
    // and ends in `execve` or `_exit`. It shares init's memory until then (no copy: a fork of init's pages was
    // ~0.1 ms of every start, issue 15), and init waits meanwhile: the command's process runs airlock's code
    // only, and nothing of the sandbox's exists yet.
    let child = match sys::process::vfork_and_run(&mut || exec::exec_command(plan, &command_fds)) {
        Ok(pid) => pid,
        Err(e) => abort(ChildFailure { step: Step::ForkCommand, errno: e, index: 0 }),
    };
    // Dumpability belongs to the memory, which the command's process shared until its `execve`: its switch of
    // ids set it to the host's `suid_dumpable` (0, or 2: root only). Ours is non-dumpable again, as above.
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 0);
    if let Some(fd) = landlock_ruleset {
        sys::fd::close(fd);
    }
    drop(tty_slave);
    if let Some(fd) = fds.audit_socket {
        sys::fd::close(fd);
    }
    sys::fd::close(fds.failure);
    let status = reap_until_command_exits(child);
    sys::process::exit_immediately(status)
}

/// Step 5 of the design, after the sources were cloned (while the host tree is visible): the new root on a tmpfs; `pivot_root`; then the namespace-local settings.
/// `tun`: with `--net allow`, the open TUN device and the socket to the gateway.
/// `root`: the root overlay's descriptors, when `/` is one.
fn build_sandbox(
    plan: &SandboxPlan,
    trees: &mut [RawFd],
    root: &RootFds,
    tun: Option<(RawFd, RawFd)>,
    network: &mut Option<net::NetworkNamespaceMaker>,
) -> Result<(), ChildFailure> {
    // Under the root: covered by it once it is attached (see `mount_files_tmpfs`).
    let files = mounts::mount_files_tmpfs(plan)?;
    let root = match &plan.root_overlay {
        Some(overlay) => mounts::mount_root_overlay(overlay, root, &plan.staging_dir)?,
        None => mounts::mount_staging_root(&plan.staging_dir)?,
    };
    mounts::build_new_root(plan, root, trees, files.as_ref().map(AsFd::as_fd))?;
    // Attached: closing it unmounts nothing (the old root's detach below takes the tmpfs along).
    drop(files);
    for &tree in trees.iter() {
        sys::fd::close(tree);
    }
    mounts::enter_new_root(root)?;
    sys::fd::close(root);
    net::set_hostname(&plan.hostname).map_err(fail(Step::SetHostname, 0))?;
    // As late as this: the namespace's maker has had the whole mount tree's time (its loopback is up).
    enter_network(network)?;
    // The network gateway's interface and default route, then the interface goes to the gateway's process: init
    // keeps no descriptor of it (nor does the command), and waits until the gateway has it, so the command never
    // runs before its network is enforced.
    if let (Some(tun_plan), Some((tun, socket))) = (&plan.tun, tun) {
        let handed = net::create_gateway_interface(tun, tun_plan).and_then(|()| net::hand_tun_to_gateway(socket, tun));
        sys::fd::close(tun);
        sys::fd::close(socket);
        handed?;
    }
    Ok(())
}

/// Enters the network namespace being made beside init, if it has not been entered yet (see
/// `net::start_network_namespace`).
fn enter_network(network: &mut Option<net::NetworkNamespaceMaker>) -> Result<(), ChildFailure> {
    network.take().map_or(Ok(()), net::enter_network_namespace)
}

/// Waits for signals (all are blocked; the supervisor blocked them before `clone`). SIGCHLD reaps; anything
/// else is forwarded to the command. When the command has exited, everything left is killed and reaped, and
/// the command's status becomes init's exit code (128+N for a signal, as shells report it).
fn reap_until_command_exits(command: libc::pid_t) -> i32 {
    loop {
        let Ok(sig) = sys::signal::wait_any() else { continue };
        if sig == libc::SIGCHLD {
            if let Some(status) = reap_children(command) {
                return kill_everything_and_reap(status);
            }
        } else {
            let _ = sys::signal::kill(command, sig);
        }
    }
}

/// `airlock create`'s init: standard streams to the sandbox's `/dev/null` (they were `airlock create`'s, which
/// must be able to return), then the failure pipe closes unwritten, which tells the supervisor that the sandbox
/// is ready. From then on init reaps orphans (commands started by `airlock exec` that left children) and, on
/// SIGTERM, SIGINT or SIGHUP (`airlock stop`, forwarded by the supervisor), kills everything in the namespace
/// and exits 0. Other signals are ignored: there is no command to forward them to.
fn hold_until_stopped(failure: RawFd) -> ! {
    // Unlike `run`'s init, a held init is not made non-dumpable: `airlock exec` enters its namespaces by pidfd,
    // which requires ptrace access to init, and rootless the invoker has it only while init is dumpable. Commands
    // exec'd into the sandbox still cannot ptrace init or open its /proc entries: they hold no capability and
    // init holds all of the namespace's (the kernel's ptrace check requires the tracer's permitted set to cover
    // the target's). As host root, the switch to the sandbox's root above made init non-dumpable: made dumpable
    // again, because root in a container lacks CAP_SYS_PTRACE (Docker's and runc's default capabilities) and
    // would otherwise be refused (EPERM); it still passes the ptrace check as the owner of the sandbox's user
    // namespace, and the sandbox's own processes still do not (same capability rule as above).
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 1);
    if let Err(e) = stdio_to_dev_null() {
        report_and_exit(failure, Step::OpenDevNull, e, 0, EXIT_SETUP_FAILED);
    }
    sys::fd::close(failure);
    loop {
        match sys::signal::wait_any() {
            Ok(libc::SIGCHLD) => {
                let _ = reap_children(0);
            }
            Ok(libc::SIGTERM | libc::SIGINT | libc::SIGHUP) => {
                sys::process::exit_immediately(kill_everything_and_reap(0))
            }
            _ => {}
        }
    }
}

/// Points fds 0-2 at the sandbox's `/dev/null` (after `pivot_root`, so it is the sandbox's own device node).
fn stdio_to_dev_null() -> Result<(), sys::Errno> {
    use sys::fd::StandardStream;
    // Closes on return, the standard streams pointed at it or not.
    let null = sys::fd::open(c"/dev/null", libc::O_RDWR | libc::O_CLOEXEC)?;
    for stream in [StandardStream::Input, StandardStream::Output, StandardStream::Error] {
        sys::fd::dup_onto_standard_stream(null.as_fd(), stream)?;
    }
    Ok(())
}

/// Reaps every exited child; returns the command's exit code if it was among them.
fn reap_children(command: libc::pid_t) -> Option<i32> {
    let mut result = None;
    loop {
        let Ok((pid, status)) = sys::wait::waitpid(-1, libc::WNOHANG) else { return result };
        if pid == 0 {
            return result;
        }
        if pid == command {
            result = Some(exit_code(status));
        }
    }
}

/// Converts a wait status into a shell-style exit code.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        EXIT_SETUP_FAILED
    }
}

fn kill_everything_and_reap(status: i32) -> i32 {
    // kill(-1) from a pid namespace's init reaches every other process in the namespace: daemons that
    // called setsid, orphans, everything.
    let _ = sys::signal::kill(-1, libc::SIGKILL);
    loop {
        match sys::wait::waitpid(-1, 0) {
            Ok(_) | Err(libc::EINTR) => {}
            Err(_) => return status,
        }
    }
}

/// Writes `0` (this thread) to a cgroup v1 `tasks` file.
fn join_cgroup(tasks: &std::ffi::CStr) -> Result<(), sys::Errno> {
    let fd = sys::fd::open(tasks, libc::O_WRONLY | libc::O_CLOEXEC)?;
    sys::fd::write_all(fd.as_raw_fd(), b"0")
}

/// One byte from the start pipe; 0 (no word) at its end.
fn read_word(start: RawFd) -> Result<u8, sys::Errno> {
    let mut word = [0u8; 1];
    match sys::fd::read(start, &mut word)? {
        1 => Ok(word[0]),
        _ => Ok(0),
    }
}

/// Whether the supervisor has closed its end of the start pipe (it only does so by exiting).
fn supervisor_gone(start: RawFd) -> bool {
    let mut pfd = [libc::pollfd { fd: start, events: libc::POLLIN, revents: 0 }];
    // Without waiting.
    let n = sys::fd::poll(&mut pfd, 0).unwrap_or(0);
    n > 0 && pfd[0].revents & (libc::POLLHUP | libc::POLLERR) != 0
}
