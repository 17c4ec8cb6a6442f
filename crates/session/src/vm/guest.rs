//! The guest agent: airlock as PID 1 of an `--isolation vm` guest (the initramfs's `/init`, see `initramfs`).
//! In order: the kernel's filesystems, the modules (the virtio devices appear), the control port, the request;
//! then a root of its own (a tmpfs: `pivot_root`, which the engine uses, refuses the initramfs's rootfs) holding
//! only the shares the host exported; then the command, run by the same namespace engine as on the host (so a
//! process that escapes it as guest root still meets the VM's wall), with its standard streams on their ports;
//! then the outcome to the host, and power off.

use std::ffi::CString;
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use runtime::prepare::HostContext;
use runtime::sandbox::RunOutcome;

use super::initramfs::{MODULES_DIR, MODULES_ORDER};
use super::protocol::{AuditRecord, GuestMessage, GuestRequest, PORT_CONTROL, PORT_STDERR, PORT_STDIN, PORT_STDOUT};

/// The kernel command line's mark of an airlock guest (`qemu`'s `-append`). The kernel passes a parameter it does
/// not know, without a dot, to init as an environment variable: `airlock_guest=1`.
pub const GUEST_MARKER: &str = "airlock_guest=1";

/// Whether this process is the guest's init: PID 1, started as `/init`, with the kernel command line's mark in its
/// environment. Not a protection (whoever starts airlock chooses all three): it keeps airlock run as a
/// container's `/init` entrypoint from taking the guest agent's path.
pub fn is_guest_init() -> bool {
    let (key, value) = GUEST_MARKER.split_once('=').unwrap_or((GUEST_MARKER, ""));
    std::process::id() == 1
        && std::env::args_os().next().is_some_and(|a| a == "/init")
        && std::env::var_os(key).is_some_and(|v| v == value)
}

/// Runs the guest; never returns (the machine powers off).
pub fn main() -> ! {
    let mut control = None;
    let result = run(&mut control);
    let message = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            console(&format!("airlock guest: {e}"));
            GuestMessage::Failed(e)
        }
    };
    if let Some(port) = control.as_mut() {
        let _ = send(port, &message);
    }
    let errno = sys::kernel::power_off();
    console(&format!("airlock guest: cannot power off (errno {errno})"));
    // PID 1 exiting panics the kernel, which (panic=-1, QEMU's -no-reboot) also stops the machine.
    std::process::exit(1)
}

/// A line on the kernel's console (the host keeps it in the run's console log).
pub(super) fn console(line: &str) {
    let _ = std::fs::OpenOptions::new().write(true).open("/dev/console").and_then(|mut c| writeln!(c, "{line}"));
}

pub(super) fn send(port: &mut std::fs::File, message: &GuestMessage) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    port.write_all(&line)
}

fn run(control: &mut Option<std::fs::File>) -> Result<GuestMessage, String> {
    mount_fs("proc", "/proc", "proc", 0, None)?;
    mount_fs("sysfs", "/sys", "sysfs", 0, None)?;
    mount_fs("devtmpfs", "/dev", "devtmpfs", 0, None)?;
    load_modules()?;

    let port = open_port(PORT_CONTROL, true)?;
    let mut reader = std::io::BufReader::new(port.try_clone().map_err(|e| format!("control port: {e}"))?);
    *control = Some(port);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| format!("cannot read the request: {e}"))?;
    let request: GuestRequest = serde_json::from_str(&line).map_err(|e| format!("bad request from the host: {e}"))?;

    if let Some(network) = &request.network {
        super::net::configure_guest(network)?;
    }
    switch_root(&request)?;
    let port = control.as_mut().ok_or("no control port")?;
    if request.held {
        return super::held_guest::serve(&request, port);
    }
    send(port, &GuestMessage::Started).map_err(|e| format!("control port: {e}"))?;

    // The command's standard streams are the ports themselves: nothing copies them in the guest (but `-t`'s input,
    // see `feed_terminal`).
    for (name, stream, write) in [
        (PORT_STDIN, sys::fd::StandardStream::Input, false),
        (PORT_STDOUT, sys::fd::StandardStream::Output, true),
        (PORT_STDERR, sys::fd::StandardStream::Error, true),
    ] {
        if name == PORT_STDIN && request.tty.is_some() {
            continue;
        }
        let file = open_port(name, write)?;
        sys::fd::dup_onto_standard_stream(file.as_fd(), stream).map_err(|e| errno(name, e))?;
    }
    if let Some((rows, cols)) = request.tty {
        let terminal = feed_terminal(rows, cols, port)?;
        sys::fd::dup_onto_standard_stream(terminal.as_fd(), sys::fd::StandardStream::Input)
            .map_err(|e| errno("-t: the agent's terminal", e))?;
    }

    let host = HostContext {
        lock_dir: PathBuf::from("/run/airlock/id-ranges"),
        // `run -t`: the engine's terminal in the sandbox, relayed to the ports (its input the stdin port's).
        tty: request.tty.map(|(rows, cols)| libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 }),
        name: request.name.clone(),
        layer: None,
        hold: false,
        gateway: None,
        root_layer: None,
        joining: false,
        watch_state: None,
        in_vm_guest: true,
        vm_id_base: request.id_base,
        cgroup_accounting: runtime::cgroups::Accounting::Full,
    };
    let mut warnings = Vec::new();
    let mut sink = match request.audit {
        Some(_) => Some(PortSink { port: port.try_clone().map_err(|e| format!("control port: {e}"))?, failed: None }),
        None => None,
    };
    let audit = match (request.audit, sink.as_mut()) {
        (Some(notify), Some(sink)) => Some(runtime::sandbox::AuditRequest {
            notify: notify.into(),
            sink,
            // In the guest as before: the guest kernel's exec tracepoints are not tried.
            exec_source: runtime::exec_tracepoints::ExecSource::Seccomp,
            exec_tracer_pins: None,
        }),
        _ => None,
    };
    let ran = runtime::sandbox::run_sandbox(&request.policy, &host, &mut |w| warnings.push(w.to_string()), audit);
    for w in warnings {
        let _ = send(port, &GuestMessage::Warning(w));
    }
    let (outcome, _) = ran.map_err(|e| crate::error_chain(&e))?;
    // A record that did not reach the host is a hole in its log: the run fails rather than end as if complete.
    if let Some(why) = sink.and_then(|s| s.failed) {
        return Err(format!("audit: cannot send a record to the host: {why}"));
    }
    Ok(match outcome {
        RunOutcome::Exited(code) => GuestMessage::Exited(code),
        RunOutcome::TimedOut(elapsed) => {
            GuestMessage::TimedOut { millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX) }
        }
        RunOutcome::ExecFailed { code, message } => GuestMessage::ExecFailed { code, message },
        RunOutcome::OutOfMemory { summary } => GuestMessage::OutOfMemory { summary },
    })
}

/// The guest's audit sink: each record of the engine's seccomp listener goes to the host on the control port as
/// it is made (the log is the host's; nothing of it is in the guest). A write blocks while the host is behind,
/// which holds the notified process, as a slow disk does on the host.
pub(super) struct PortSink {
    pub(super) port: std::fs::File,
    /// The first write that failed: the run then fails (see `run`).
    pub(super) failed: Option<String>,
}

impl runtime::notify::AuditSink for PortSink {
    fn record(&mut self, event: audit::Event) {
        if self.failed.is_some() {
            return;
        }
        let Some(record) = AuditRecord::from_event(event) else { return };
        if let Err(e) = send(&mut self.port, &GuestMessage::Audit(record)) {
            self.failed = Some(e.to_string());
        }
    }
}

fn errno(what: &str, e: i32) -> String {
    format!("{what}: {}", std::io::Error::from_raw_os_error(e))
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?}: NUL in a path"))
}

fn mount_fs(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: Option<&str>) -> Result<(), String> {
    let (source_c, target_c, fstype_c) = (cstring(source)?, cstring(target)?, cstring(fstype)?);
    let data_c = data.map(cstring).transpose()?;
    sys::mount::mount(Some(&source_c), &target_c, Some(&fstype_c), flags, data_c.as_deref())
        .map_err(|e| errno(&format!("cannot mount {fstype} on {target}"), e))
}

/// The initramfs's modules, in the order the host listed (dependencies first).
fn load_modules() -> Result<(), String> {
    let order = std::fs::read_to_string(Path::new("/").join(MODULES_ORDER)).map_err(|e| format!("modules: {e}"))?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for name in order.lines().filter(|l| !l.is_empty()) {
        let path = Path::new("/").join(MODULES_DIR).join(name);
        let file = std::fs::File::open(&path).map_err(|e| format!("module {name}: {e}"))?;
        // The kernel command line's `MODULE.PARAM=VALUE` words are the module's parameters, as modprobe passes
        // them (QEMU's microvm describes its virtio-mmio devices as `virtio_mmio.device=...`).
        let module = name.trim_end_matches(".ko");
        let params = module_params(&cmdline, module);
        let params = cstring(&params)?;
        match sys::kernel::finit_module(file.as_fd(), &params) {
            Ok(()) | Err(libc::EEXIST) => {}
            Err(e) => return Err(errno(&format!("cannot load module {name}"), e)),
        }
    }
    Ok(())
}

/// `--net none`'s `/etc/resolv.conf` (no nameserver, and a comment saying why), as the namespace backend shows
/// it. The engine binds a file of its own over a regular file there, through a clone of a detached mount, which
/// kernels before 6.15 refuse; so here the guest's `/etc` is an overlay (the host's, read-only, under a tmpfs
/// layer) where `resolv.conf` is a link to that file, which the engine leaves as it is.
fn net_none_resolv_conf(etc: &Path) -> Result<(), String> {
    let resolv = etc.join("resolv.conf");
    if !std::fs::symlink_metadata(&resolv).is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let note = "resolv.conf.airlock";
    overlay_etc(etc, Path::new("/newroot/run/airlock-etc"), |upper| {
        std::fs::write(upper.join(note), runtime::prepare::NET_NONE_RESOLV_CONF)
            .and_then(|()| std::os::unix::fs::symlink(note, upper.join("resolv.conf")))
            .map_err(|e| format!("cannot write /etc/resolv.conf: {e}"))
    })
}

/// `etc` (a read-only share) as an overlay whose upper layer, in `layer`, `fill_upper` writes first (an entry there
/// hides the share's, a symbolic link included), then read-only: what the guest's `/etc` shows of airlock's own
/// (`--net none`'s note, `--net allow`'s gateway files).
pub(super) fn overlay_etc(
    etc: &Path,
    layer: &Path,
    fill_upper: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    for dir in ["upper", "work"] {
        std::fs::create_dir_all(layer.join(dir)).map_err(|e| format!("cannot create the /etc layer: {e}"))?;
    }
    fill_upper(&layer.join("upper"))?;
    let etc_text = etc.to_string_lossy();
    let options = format!("lowerdir={etc_text},upperdir={0}/upper,workdir={0}/work", layer.display());
    mount_fs("overlay", &etc_text, "overlay", libc::MS_NODEV | libc::MS_NOSUID, Some(&options))?;
    // Read-only from here: the engine binds it read-only anyway; nothing in the guest writes it.
    sys::mount::mount(None, &cstring(&etc_text)?, None, libc::MS_REMOUNT | libc::MS_RDONLY, None)
        .map_err(|e| errno("remount /etc read-only", e))
}

/// `MODULE.KEY=VALUE` words of `cmdline` as `KEY=VALUE KEY=VALUE`.
fn module_params(cmdline: &str, module: &str) -> String {
    let prefix = format!("{module}.");
    cmdline.split_whitespace().filter_map(|w| w.strip_prefix(&prefix)).collect::<Vec<_>>().join(" ")
}

/// The serial port `name`'s device (`/dev/vportNpM`), once the driver has found it: no udev here, so by
/// `/sys/class/virtio-ports/*/name`.
pub(super) fn open_port(name: &str, write: bool) -> Result<std::fs::File, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for entry in entries.flatten() {
                let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
                if port_name.trim() == name {
                    let device = Path::new("/dev").join(entry.file_name());
                    let port = std::fs::OpenOptions::new()
                        .read(!write || name == PORT_CONTROL)
                        .write(write)
                        .open(&device)
                        .map_err(|e| format!("cannot open port {name} ({}): {e}", device.display()))?;
                    // The control port only: the host may have closed a stream port already (a run's input
                    // at its end), and a stream's first read saying end-of-file is no error.
                    if name == PORT_CONTROL {
                        wait_for_host_end(&port, name, deadline)?;
                    }
                    return Ok(port);
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the serial port {name} did not appear (virtio_console)"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits until QEMU has said the host's end of `port` is open (its port-open message comes a moment after the
/// port appears): until then a read says end-of-file at once and poll says `POLLHUP`, so the first read of the
/// request would take the host for gone.
fn wait_for_host_end(port: &std::fs::File, name: &str, deadline: std::time::Instant) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    loop {
        let mut fds = [libc::pollfd { fd: port.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        let _ = sys::fd::poll(&mut fds, 0);
        if fds[0].revents & libc::POLLHUP == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the host's end of the serial port {name} never opened"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A tmpfs becomes `/`, holding the shares at their paths, the host root's symbolic links, and the kernel's
/// filesystems moved over.
fn switch_root(request: &GuestRequest) -> Result<(), String> {
    let new_root = "/newroot";
    mount_fs("tmpfs", new_root, "tmpfs", libc::MS_NOSUID, Some("mode=0755"))?;
    let inside = |path: &str| PathBuf::from(format!("{new_root}{path}"));
    for dir in ["/proc", "/sys", "/dev", "/tmp", "/run"] {
        std::fs::create_dir_all(inside(dir)).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    for link in &request.symlinks {
        std::os::unix::fs::symlink(&link.target, inside(&link.path))
            .map_err(|e| format!("cannot link {} to {}: {e}", link.path, link.target))?;
    }
    for share in &request.shares {
        let at = inside(&share.path);
        std::fs::create_dir_all(&at).map_err(|e| format!("cannot create {}: {e}", share.path))?;
        let flags = libc::MS_NODEV | if share.readonly { libc::MS_RDONLY } else { 0 };
        // cache=none: the host's files as they are now (the workspace changes on the host while the guest runs:
        // `airlock diff` reads the layer).
        let options = Some("trans=virtio,version=9p2000.L,msize=262144");
        let Some(export) = &share.export else {
            mount_fs(&share.tag, &at.to_string_lossy(), "9p", flags, options)
                .map_err(|e| format!("share {}: {e}", share.path))?;
            continue;
        };
        // A staging directory (a `cow` workspace's: see `super::WorkspaceOverlay`): mounted aside, its
        // subdirectory bound at the path, the rest detached, so that only the subdirectory is in the guest.
        let aside = format!("/share-{}", share.tag);
        std::fs::create_dir_all(&aside).map_err(|e| format!("cannot create {aside}: {e}"))?;
        mount_fs(&share.tag, &aside, "9p", flags, options).map_err(|e| format!("share {}: {e}", share.path))?;
        let (from, to) = (cstring(&format!("{aside}/{}", export.subdir))?, cstring(&at.to_string_lossy())?);
        sys::mount::mount(Some(&from), &to, None, libc::MS_BIND, None)
            .map_err(|e| errno(&format!("bind the share {}", share.path), e))?;
        sys::mount::umount2(&cstring(&aside)?, libc::MNT_DETACH).map_err(|e| errno(&format!("detach {aside}"), e))?;
    }
    if request.shares.iter().any(|s| s.path == "/etc") && request.policy.network == policy::sandbox::Network::None {
        net_none_resolv_conf(&inside("/etc"))?;
    }
    if let Some(network) = &request.network {
        let root = match &request.policy.rootfs {
            policy::sandbox::Rootfs::Dir(dir) => dir.clone(),
            _ => String::new(),
        };
        super::net::etc_files(&inside(&format!("{root}/etc")), network)?;
    }
    for dir in ["/proc", "/sys", "/dev"] {
        let (from, to) = (cstring(dir)?, cstring(&inside(dir).to_string_lossy())?);
        sys::mount::mount(Some(&from), &to, None, libc::MS_MOVE, None).map_err(|e| errno(&format!("move {dir}"), e))?;
    }
    sys::process::change_directory(&cstring(new_root)?).map_err(|e| errno("chdir", e))?;
    sys::mount::mount(Some(c"."), c"/", None, libc::MS_MOVE, None).map_err(|e| errno("move the new root", e))?;
    sys::kernel::change_root(c".").map_err(|e| errno("chroot", e))?;
    sys::process::change_directory(c"/").map_err(|e| errno("chdir /", e))?;
    // The engine's cgroup limits (--memory, --pids) are the guest's cgroups.
    let _ = mount_fs("cgroup2", "/sys/fs/cgroup", "cgroup2", libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, None);
    Ok(())
}

/// `run -t`: the command's input comes through a terminal of the agent's (`held_guest::agent_terminal`, raw),
/// fed from the stdin port by a child of this process, which also takes the host's resizes from the control
/// port: the new size on that terminal, and a SIGWINCH to this process (PID 1), whose wait loop
/// (`runtime::supervisor`, its input that terminal) copies the size to the command's terminal, as for
/// `exec -t`. Returns the terminal's slave, for standard input.
fn feed_terminal(rows: u16, cols: u16, control: &std::fs::File) -> Result<std::os::fd::OwnedFd, String> {
    let (master, slave) = super::held_guest::agent_terminal(rows, cols)?;
    let input = open_port(PORT_STDIN, false)?;
    let control = control.try_clone().map_err(|e| format!("control port: {e}"))?;
    match sys::process::fork().map_err(|e| format!("fork: errno {e}"))? {
        sys::process::Forked::Child => {
            drop(slave);
            feed(input, control, std::fs::File::from(master));
            sys::process::exit_immediately(0)
        }
        // The port and the master are the child's: closed here.
        sys::process::Forked::Parent(_) => Ok(slave),
    }
}

/// The feeder of [`feed_terminal`], until the control port ends (the machine stops).
fn feed(mut input: std::fs::File, mut control: std::fs::File, mut master: std::fs::File) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut input_open = true;
    let mut lines: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut fds = [
            libc::pollfd { fd: if input_open { input.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: control.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        match sys::fd::poll(&mut fds, -1) {
            Ok(_) | Err(libc::EINTR) => {}
            Err(_) => return,
        }
        if fds[0].revents != 0 {
            match input.read(&mut buf) {
                Ok(n) if n > 0 => {
                    if master.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => {
                    // The end of input: the terminal's end-of-file character, as the host's relay sends it.
                    input_open = false;
                    let _ = master.write_all(&[4]);
                }
            }
        }
        if fds[1].revents != 0 {
            match control.read(&mut buf) {
                Ok(n) if n > 0 => lines.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => return,
            }
            while let Some(end) = lines.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = lines.drain(..=end).collect();
                if let Ok(super::held::HostMessage::Resize { rows, cols, .. }) = serde_json::from_slice(&line) {
                    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                    if sys::terminal::set_window_size(master.as_fd(), &size).is_ok() {
                        let _ = sys::signal::kill(1, libc::SIGWINCH);
                    }
                }
            }
            // The host sends nothing else: what is not a line by now is dropped, not held.
            if lines.len() > 4096 {
                lines.clear();
            }
        }
    }
}
