//! `--net allow`: the network gateway's process, from the supervisor's side and from its own.
//!
//! The gateway is a separate process per sandbox (airlock re-executes itself with a hidden subcommand): its
//! user-space TCP/IP stack runs on tokio threads, and the supervisor must stay single-threaded to clone into a
//! new user namespace; a crash or a memory blow-up in the gateway is its own, and its memory is measurable per
//! sandbox. The order, as `sandbox::run_sandbox` does it:
//!
//! 1. step 2 (supervisor, on the host): [`GatewayProcess::start`] opens the events file (host side: the sandbox
//!    can never reach it), makes a socket pair and starts the gateway with one end; the gateway dies with the
//!    supervisor (`PR_SET_PDEATHSIG`).
//! 2. step 3: init inherits the other end, opens `/dev/net/tun` in the sandbox's network namespace, configures
//!    `airlock0` (`net::create_gateway_interface`) and passes the descriptor over the socket (SCM_RIGHTS); the
//!    gateway acknowledges ([`receive_tun`]) before init goes on, so no command runs before the gateway serves.
//! 3. step 8: [`GatewayProcess::stop`] ends the gateway once the sandbox is gone (its open TUN descriptor keeps
//!    the sandbox's network namespace alive, so it would not see the end by itself); dropping a
//!    `GatewayProcess` on an error path does the same.

use std::ffi::OsString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::failure::{os_error, os_error_text};
use crate::plan::TunPlan;
use sys::Errno;

/// The host ids the gateway runs as when airlock runs as host root: `nobody`/`nogroup`.
const GATEWAY_ID: libc::uid_t = 65534;

/// How long the gateway has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot open the audit log {path} for the network gateway")]
    OpenEventsFile { path: String, source: std::io::Error },
    #[error("cannot open the network gateway's log {path}")]
    OpenLog { path: String, source: std::io::Error },
    #[error("cannot create the socket to the network gateway: {}", os_error_text(.0))]
    CreateSocket(std::io::Error),
    #[error("cannot start the network gateway process {program}")]
    Spawn { program: String, source: std::io::Error },
    #[error("descriptor {0} given to the network gateway is not open")]
    InheritedFd(RawFd),
    #[error("cannot receive the sandbox's TUN interface: {}", os_error_text(.0))]
    ReceiveTun(std::io::Error),
    #[error("the sandbox closed its socket before passing its TUN interface")]
    NoTun,
    #[error("cannot take SIGTERM as the network gateway's stop signal: {}", os_error_text(.0))]
    StopSignal(std::io::Error),
}

/// The sandbox side of the gateway: the TUN interface's name and addresses.
#[derive(Debug, Clone)]
pub struct GatewayInterface {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

impl GatewayInterface {
    /// The plan init configures the interface from, or `None` when a value cannot be used (name too long).
    pub fn plan(&self) -> Option<TunPlan> {
        let mut name = [0u8; libc::IFNAMSIZ];
        let bytes = self.name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) || self.prefix > 32 {
            return None;
        }
        name[..bytes.len()].copy_from_slice(bytes);
        let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
        Some(TunPlan {
            name,
            address: self.address.octets(),
            netmask: mask.to_be_bytes(),
            gateway: self.gateway.octets(),
            mtu: i32::try_from(self.mtu).ok()?,
        })
    }
}

/// How to start the network gateway for a `--net allow` sandbox, and what the sandbox sees of it.
#[derive(Debug, Clone)]
pub struct GatewaySetup {
    /// The gateway's program (`airlock-netgw`, by a descriptor of the supervisor's: `/proc/self/fd/N`), the name
    /// its process goes by (`argv[0]`), and its arguments. The runtime appends
    /// `--tun-socket FD` and `--events-fd FD` for each events file.
    pub program: PathBuf,
    pub arg0: OsString,
    pub args: Vec<OsString>,
    /// Where the gateway appends its decisions: the sandbox's audit log (hash-chained), then its `--audit`
    /// copies; opened by the supervisor, on the host (the gateway cannot reach the state directory).
    pub events: Vec<PathBuf>,
    /// Where the gateway's standard error goes (`airlock create`'s supervisor log); `None`: the supervisor's.
    pub log: Option<PathBuf>,
    pub interface: GatewayInterface,
    /// Files of airlock's own shown read-only inside instead of the root's (path inside, contents): the
    /// sandbox's `/etc/hosts` and `/etc/resolv.conf`.
    pub files: Vec<(String, Vec<u8>)>,
}

/// The running gateway, seen from the supervisor.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// The socket end init inherits (closed here once the sandbox is cloned).
    sandbox_end: Option<OwnedFd>,
    /// The process that started the gateway: only it stops it (a clone of it never returns to drop it, but
    /// the check keeps that true by construction).
    owner: u32,
}

impl GatewayProcess {
    /// Step 2: opens the events file, makes the socket pair, starts the gateway.
    pub fn start(setup: &GatewaySetup) -> Result<GatewayProcess, GatewayError> {
        // Read and append: the first file is the hash-chained audit log, whose writers read its tail. Opened
        // anew rather than handed a duplicate of the supervisor's descriptor: writers exclude each other with
        // `flock`, which belongs to the open file description, so a shared one would not exclude at all (tried:
        // interleaved appends broke lines).
        let events = setup
            .events
            .iter()
            .map(|path| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|source| GatewayError::OpenEventsFile { path: path.display().to_string(), source })
            })
            .collect::<Result<Vec<File>, GatewayError>>()?;
        let stderr = match &setup.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .map_err(|source| GatewayError::OpenLog { path: path.display().to_string(), source })?,
            ),
            None => Stdio::inherit(),
        };
        let (gateway_end, sandbox_end) =
            sys::fd::socketpair_cloexec().map_err(|e| GatewayError::CreateSocket(os_error(e)))?;
        // The gateway's end goes by number (told on its command line, kept across its exec below).
        let gateway_end_fd = gateway_end.as_raw_fd();
        let events_fds: Vec<RawFd> = events.iter().map(File::as_raw_fd).collect();
        let mut command = Command::new(&setup.program);
        command.arg0(&setup.arg0).args(&setup.args).arg("--tun-socket").arg(gateway_end_fd.to_string());
        for fd in &events_fds {
            command.arg("--events-fd").arg(fd.to_string());
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
        // Its own process group: a Ctrl-C at airlock's terminal is for the command (the supervisor forwards it),
        // not for the gateway, which must serve until the sandbox is gone.
        command.process_group(0);
        let host_root = sys::process::effective_uid() == 0;
        let supervisor = std::process::id() as libc::pid_t;
        // In the child, before exec: only async-signal-safe sys calls on integers, touching no memory shared with
        // the parent.
        sys::process::run_before_exec(&mut command, move || {
            // As host root, the gateway (which parses what the sandbox sends) must not be root: it needs no
            // privilege at all (its descriptors are open; it reads only world-readable /etc/hosts and
            // /etc/resolv.conf and connects out), so it runs as `nobody`, with no way back.
            if host_root {
                sys::credentials::clear_supplementary_groups()
                    .and_then(|()| sys::credentials::setresgid(GATEWAY_ID, GATEWAY_ID, GATEWAY_ID))
                    .and_then(|()| sys::credentials::setresuid(GATEWAY_ID, GATEWAY_ID, GATEWAY_ID))
                    .and_then(|()| sys::process::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(drop))
                    .map_err(std::io::Error::from_raw_os_error)?;
            }
            // The gateway dies with the supervisor, even when the supervisor is SIGKILLed (armed after the id
            // change, which clears it; then the parent is checked, in case it died in between).
            if sys::process::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).is_err()
                || sys::process::parent_pid() != supervisor
            {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            // Keep exactly the descriptors the gateway is told about across exec.
            for &fd in std::iter::once(&gateway_end_fd).chain(events_fds.iter()) {
                sys::fd::set_descriptor_flags(fd, 0).map_err(std::io::Error::from_raw_os_error)?;
            }
            Ok(())
        });
        let spawned = command.spawn();
        drop(gateway_end);
        drop(events);
        match spawned {
            Ok(child) => Ok(GatewayProcess { child, sandbox_end: Some(sandbox_end), owner: std::process::id() }),
            Err(source) => {
                drop(sandbox_end);
                Err(GatewayError::Spawn { program: setup.program.display().to_string(), source })
            }
        }
    }

    /// The socket end the sandbox's init inherits.
    pub fn sandbox_end(&self) -> RawFd {
        self.sandbox_end.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// After `clone`: only init holds the sandbox's end now.
    pub fn close_sandbox_end(&mut self) {
        self.sandbox_end = None;
    }

    /// The gateway's pid (for `airlock stats`, the benchmark's memory figure).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Step 8: SIGTERM, then SIGKILL after [`STOP_GRACE`]; reaps the process. The gateway takes SIGTERM as its
    /// orderly stop ([`stop_on_sigterm`]): it records the connections still open, then exits, in milliseconds.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.owner != std::process::id() {
            return;
        }
        self.close_sandbox_end();
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // The child is ours and not yet reaped, so the pid is still its.
        let pidfd = sys::process::pidfd_open(pid).ok();
        let _ = sys::signal::kill(pid, libc::SIGTERM);
        if let Some(pidfd) = pidfd {
            wait_readable(pidfd.as_raw_fd(), Instant::now() + STOP_GRACE);
            drop(pidfd);
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `fd` is readable (a pidfd: the process exited) or `deadline` passes.
fn wait_readable(fd: RawFd, deadline: Instant) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut pfd = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
        match sys::fd::poll(&mut pfd, left.as_millis().min(i32::MAX as u128) as i32) {
            Ok(0) | Err(libc::EINTR) => {}
            _ => return,
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// In the gateway process: takes ownership of a descriptor the supervisor passed by number. Call once per
/// descriptor, at start-up, before anything else could have opened (and so own) that number.
pub fn take_inherited_fd(fd: RawFd) -> Result<OwnedFd, GatewayError> {
    if fd < 3 {
        return Err(GatewayError::InheritedFd(fd));
    }
    // Close-on-exec again, so nothing the gateway might start inherits it. Per this function's contract no other
    // owner exists in this process.
    sys::fd::take_inherited(fd).map_err(|_| GatewayError::InheritedFd(fd))
}

/// In the gateway process: receives the sandbox's TUN descriptor from init and acknowledges it (init waits for
/// that byte before the sandbox's command may start).
pub fn receive_tun(socket: &OwnedFd) -> Result<OwnedFd, GatewayError> {
    let tun = sys::socket::recv_fd(socket.as_raw_fd())
        .map_err(|e: Errno| GatewayError::ReceiveTun(os_error(e)))?
        .ok_or(GatewayError::NoTun)?;
    sys::fd::write_all(socket.as_raw_fd(), b"1").map_err(|e| GatewayError::ReceiveTun(os_error(e)))?;
    Ok(tun)
}

/// In the gateway process: blocks SIGTERM and returns a signalfd that becomes readable once SIGTERM is pending,
/// to pass as `netgw::GatewayOptions::stop`. The supervisor's SIGTERM ([`GatewayProcess::stop`]) then ends the
/// gateway in order, recording the connections still open, instead of killing it mid-connection.
///
/// Call while the process is still single-threaded (before the gateway's async runtime starts): threads
/// inherit the blocked mask, and a thread without it would take SIGTERM's default action, death, instead.
/// Call after [`receive_tun`]: a SIGTERM while waiting for the TUN still ends the process at once.
pub fn stop_on_sigterm() -> Result<OwnedFd, GatewayError> {
    sys::signal::block(&[libc::SIGTERM]).map_err(|e| GatewayError::StopSignal(os_error(e)))?;
    sys::signal::signalfd(&[libc::SIGTERM]).map_err(|e| GatewayError::StopSignal(os_error(e)))
}
