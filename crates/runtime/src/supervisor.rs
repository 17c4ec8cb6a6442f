//! The supervisor's wait loop, on the host: forwards signals to the sandbox's init, relays `-t`'s
//! pseudo-terminal, and enforces `--timeout` by killing init (which takes the whole pid namespace with it,
//! `setsid` daemons included).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use sys::Errno;

/// How init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Init's exit code (the command's, or 128+N), or 128+N if init itself was killed by signal N.
    Exited(i32),
    /// Killed by airlock at the deadline.
    TimedOut(Duration),
}

/// Signals a user sends to airlock that are meant for the command.
const FORWARDED: &[i32] =
    &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

/// How often a held sandbox's supervisor looks at its state directory. A removed directory is rare and nothing
/// is lost by noticing it a second late; a stat per second costs nothing.
const STATE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A long-lived sandbox's state on the host (`$STATE/sandboxes/NAME`), as its supervisor found it when the
/// sandbox was ready. `airlock stop`, `exec` and `rm` find the sandbox only through it: if it is removed behind
/// airlock's back (`rm -rf`), the sandbox would run on with no way to reach it, so the supervisor stops it (and
/// then removes its cgroup as after any end). Checked by path every [`STATE_CHECK_EVERY`]: robust to every way
/// of removing (a directory removed, renamed away, replaced by another; the record file gone), and it needs no
/// inotify watch that a rename of a parent would escape.
pub struct StateWatch {
    state: crate::prepare::WatchedState,
    identity: (u64, u64),
    next_check: Instant,
    fired: bool,
}

impl StateWatch {
    /// `None` when the directory cannot be read now (nothing to compare against later).
    pub fn new(state: &crate::prepare::WatchedState) -> Option<StateWatch> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&state.dir).ok()?;
        Some(StateWatch {
            state: state.clone(),
            identity: (meta.dev(), meta.ino()),
            next_check: Instant::now() + STATE_CHECK_EVERY,
            fired: false,
        })
    }

    /// Whether the supervisor stopped the sandbox because its state was removed.
    pub fn fired(&self) -> bool {
        self.fired
    }

    /// The state is gone: the directory is missing or another one, or the record is missing. Errors other than
    /// "not found" (a transient EACCES, EIO) are not taken as removal: stopping a sandbox is not undone.
    fn gone(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let missing = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        match std::fs::metadata(&self.state.dir) {
            Ok(meta) if (meta.dev(), meta.ino()) != self.identity => true,
            Ok(_) => std::fs::symlink_metadata(&self.state.record).is_err_and(|e| missing(&e)),
            Err(e) => missing(&e),
        }
    }

    fn wait_ms(&self) -> i32 {
        let left = self.next_check.saturating_duration_since(Instant::now());
        left.as_millis().min(i32::MAX as u128) as i32
    }
}

/// Supervises init (or an exec's command) until it exits: forwards signals, relays the terminal (`tty_socket`),
/// kills at the deadline (`timeout`), with `audit` answers the audited command's seccomp notifications in the
/// same loop, and with `watch` kills init once the sandbox's state is removed. All signals are blocked in the
/// calling thread.
pub fn supervise(
    pid: libc::pid_t,
    pidfd: BorrowedFd<'_>,
    timeout: Option<Duration>,
    tty_socket: Option<RawFd>,
    mut audit: Option<&mut crate::notify::SeccompAudit<'_>>,
    mut watch: Option<&mut StateWatch>,
) -> Result<Ended, Errno> {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let sigfd = sys::signal::signalfd(FORWARDED)?;
    let mut relay = tty_socket.map(TerminalRelay::new);
    let mut timed_out = None;
    loop {
        if let Some(w) = watch.as_deref_mut().filter(|w| !w.fired && Instant::now() >= w.next_check) {
            w.next_check = Instant::now() + STATE_CHECK_EVERY;
            if w.gone() {
                w.fired = true;
                // Init's death takes the pid namespace, and with it every process of the sandbox.
                let _ = sys::process::pidfd_send_signal(pidfd, libc::SIGKILL);
            }
        }
        let mut pfds = vec![
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sigfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        if let Some(r) = &relay {
            r.add_poll_fds(&mut pfds);
        }
        let audit_at = pfds.len();
        if let Some(a) = &audit {
            pfds.extend(a.poll_fds());
        }
        let mut wait_ms = match (deadline, timed_out) {
            (Some(d), None) => d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32,
            _ => -1,
        };
        // Audited: the sink's buffered records are written once due (see `AuditSink::flush_due`).
        if let Some(flush_ms) = audit.as_ref().and_then(|a| a.flush_wait_ms()) {
            wait_ms = if wait_ms < 0 { flush_ms } else { wait_ms.min(flush_ms) };
        }
        if let Some(check_ms) = watch.as_deref().filter(|w| !w.fired).map(StateWatch::wait_ms) {
            wait_ms = if wait_ms < 0 { check_ms } else { wait_ms.min(check_ms) };
        }
        let n = match sys::fd::poll(&mut pfds, wait_ms) {
            Ok(n) => n,
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        };
        if let Some(a) = &mut audit {
            a.flush_if_due();
        }
        if n == 0 {
            if let Some(d) = deadline {
                if timed_out.is_none() && Instant::now() >= d {
                    // Killing init kills the pid namespace: every process in it, however it detached.
                    let _ = sys::process::pidfd_send_signal(pidfd, libc::SIGKILL);
                    // An exec's command is not init: it leads its own session and process group (exec_command
                    // calls setsid), and what it started in the background stays in that group. Only a group
                    // our child leads can have its pid as id (a leader's pid is not reused while its group
                    // lives), so this kills nothing else; ESRCH when there is no such group is fine.
                    let _ = sys::signal::kill(-pid, libc::SIGKILL);
                    timed_out = Some(started.elapsed());
                }
            }
            continue;
        }
        if pfds[1].revents & libc::POLLIN != 0 {
            if let Some(sig) = sys::signal::read_signal(sigfd.as_raw_fd()) {
                match (&relay, sig) {
                    (Some(r), libc::SIGWINCH) => r.copy_window_size(),
                    _ => {
                        let _ = sys::process::pidfd_send_signal(pidfd, sig);
                    }
                }
            }
        }
        if let Some(r) = &mut relay {
            r.handle(&pfds[2..audit_at]);
        }
        if let Some(a) = &mut audit {
            a.handle(&pfds[audit_at..]);
        }
        if pfds[0].revents & libc::POLLIN != 0 {
            break;
        }
    }
    drop(sigfd);
    if let Some(mut r) = relay {
        r.drain_and_restore();
    }
    let status = sys::wait::wait_for_exit(pid)?;
    if let Some(elapsed) = timed_out {
        return Ok(Ended::TimedOut(elapsed));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        125
    };
    Ok(Ended::Exited(code))
}

/// Relays between the caller's terminal (or pipes) and the sandbox's pseudo-terminal master.
struct TerminalRelay {
    socket: Option<RawFd>,
    master: Option<OwnedFd>,
    /// The master reported end of output; it is no longer polled (but stays open).
    master_quiet: bool,
    stdin_open: bool,
    saved_termios: Option<libc::termios>,
}

impl TerminalRelay {
    fn new(socket: RawFd) -> Self {
        TerminalRelay { socket: Some(socket), master: None, master_quiet: false, stdin_open: true, saved_termios: None }
    }

    fn add_poll_fds(&self, pfds: &mut Vec<libc::pollfd>) {
        let fd_or_skip = |fd: Option<RawFd>| fd.unwrap_or(-1);
        pfds.push(libc::pollfd { fd: fd_or_skip(self.socket), events: libc::POLLIN, revents: 0 });
        let master = if self.master_quiet { None } else { self.master.as_ref().map(AsRawFd::as_raw_fd) };
        pfds.push(libc::pollfd { fd: fd_or_skip(master), events: libc::POLLIN, revents: 0 });
        let stdin = if self.master.is_some() && self.stdin_open { 0 } else { -1 };
        pfds.push(libc::pollfd { fd: stdin, events: libc::POLLIN, revents: 0 });
    }

    fn handle(&mut self, pfds: &[libc::pollfd]) {
        let ready =
            |i: usize| pfds.get(i).is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0);
        if ready(0) {
            if let Some(socket) = self.socket.take() {
                if let Ok(Some(master)) = sys::socket::recv_fd(socket) {
                    self.master = Some(master);
                    self.enter_raw_mode();
                    self.copy_window_size();
                }
            }
        }
        if ready(1) {
            if let Some(master) = self.master.as_ref().map(AsRawFd::as_raw_fd) {
                if !copy_once(master, 1) {
                    // No slave is open (EIO): stop watching, but keep the master open until the sandbox is
                    // gone — closing it would hang up the terminal and SIGHUP a command that merely closed
                    // its terminal streams.
                    self.master_quiet = true;
                }
            }
        }
        if ready(2) {
            if let Some(master) = self.master.as_ref().map(AsRawFd::as_raw_fd) {
                if !copy_once(0, master) {
                    self.stdin_open = false;
                    // End of input: the terminal's end-of-file character, as a person would type it.
                    let _ = sys::fd::write_all(master, &[4]);
                }
            }
        }
    }

    fn enter_raw_mode(&mut self) {
        let stdin = std::io::stdin();
        if !sys::terminal::is_terminal(stdin.as_fd()) {
            return;
        }
        let Ok(t) = sys::terminal::attributes(stdin.as_fd()) else { return };
        self.saved_termios = Some(t);
        let _ = sys::terminal::set_attributes(stdin.as_fd(), &sys::terminal::raw(&t));
    }

    fn copy_window_size(&self) {
        let Some(master) = &self.master else { return };
        if let Ok(ws) = sys::terminal::window_size(std::io::stdin().as_fd()) {
            let _ = sys::terminal::set_window_size(master.as_fd(), &ws);
        }
    }

    fn drain_and_restore(&mut self) {
        if let Some(master) = self.master.take() {
            let _ = sys::fd::set_status_flags(master.as_raw_fd(), libc::O_NONBLOCK);
            while copy_once(master.as_raw_fd(), 1) {}
            drop(master);
        }
        if let Some(socket) = self.socket.take() {
            sys::fd::close(socket);
        }
        if let Some(t) = self.saved_termios.take() {
            // Restores the attributes saved from the same terminal.
            let _ = sys::terminal::set_attributes(std::io::stdin().as_fd(), &t);
        }
    }
}

/// Copies one chunk from `from` to `to`; false at end of stream or on error.
fn copy_once(from: RawFd, to: RawFd) -> bool {
    let mut buf = [0u8; 16384];
    match sys::fd::read(from, &mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => sys::fd::write_all(to, &buf[..n]).is_ok(),
    }
}
