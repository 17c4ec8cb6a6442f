//! The supervisor's wait loop, on the host: forwards signals to the sandbox's init, relays `-t`'s
//! pseudo-terminal, and enforces `--timeout` by killing init (which takes the whole pid namespace with it,
//! `setsid` daemons included).

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::tty;
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

/// Supervises init (or an exec's command) until it exits: forwards signals, relays the terminal (`tty_socket`),
/// kills at the deadline (`timeout`) and, with `audit`, answers the audited command's seccomp notifications in
/// the same loop. All signals are blocked in the calling thread.
pub fn supervise(
    pid: libc::pid_t,
    pidfd: RawFd,
    timeout: Option<Duration>,
    tty_socket: Option<RawFd>,
    mut audit: Option<&mut crate::notify::SeccompAudit<'_>>,
) -> Result<Ended, Errno> {
    let started = Instant::now();
    let deadline = timeout.map(|t| started + t);
    let sigfd = sys::signal::signalfd(FORWARDED)?;
    let mut relay = tty_socket.map(TerminalRelay::new);
    let mut timed_out = None;
    loop {
        let mut pfds = vec![
            libc::pollfd { fd: pidfd, events: libc::POLLIN, revents: 0 },
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
        // SAFETY: pfds is a live Vec of pollfd of the length given.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = sys::errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if let Some(a) = &mut audit {
            a.flush_if_due();
        }
        if n == 0 {
            if let Some(d) = deadline {
                if timed_out.is_none() && Instant::now() >= d {
                    // Killing init kills the pid namespace: every process in it, however it detached.
                    let _ = pidfd_send_signal(pidfd, libc::SIGKILL);
                    // An exec's command is not init: it leads its own session and process group (exec_command
                    // calls setsid), and what it started in the background stays in that group. Only a group
                    // our child leads can have its pid as id (a leader's pid is not reused while its group
                    // lives), so this kills nothing else; ESRCH when there is no such group is fine.
                    // SAFETY: kill takes only integers.
                    let _ = unsafe { libc::kill(-pid, libc::SIGKILL) };
                    timed_out = Some(started.elapsed());
                }
            }
            continue;
        }
        if pfds[1].revents & libc::POLLIN != 0 {
            if let Some(sig) = read_signal(sigfd.as_raw_fd()) {
                match (&relay, sig) {
                    (Some(r), libc::SIGWINCH) => r.copy_window_size(),
                    _ => {
                        let _ = pidfd_send_signal(pidfd, sig);
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
    let mut status = 0;
    // SAFETY: waitpid writes into a live local.
    sys::retry_eintr(|| unsafe { libc::waitpid(pid, &mut status, 0) } as libc::c_long)?;
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

fn read_signal(sigfd: RawFd) -> Option<i32> {
    // SAFETY: an all-zero signalfd_siginfo is valid; read fills at most its size.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a live, writable struct of `size` bytes.
    let n = unsafe { libc::read(sigfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    (n as usize == size).then_some(info.ssi_signo as i32)
}

fn pidfd_send_signal(pidfd: RawFd, sig: i32) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal with a null siginfo and no flags reads no memory.
    let ret =
        unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, sig, std::ptr::null::<libc::siginfo_t>(), 0u32) };
    sys::check(ret).map(drop)
}

/// Relays between the caller's terminal (or pipes) and the sandbox's pseudo-terminal master.
struct TerminalRelay {
    socket: Option<RawFd>,
    master: Option<RawFd>,
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
        let master = if self.master_quiet { None } else { self.master };
        pfds.push(libc::pollfd { fd: fd_or_skip(master), events: libc::POLLIN, revents: 0 });
        let stdin = if self.master.is_some() && self.stdin_open { 0 } else { -1 };
        pfds.push(libc::pollfd { fd: stdin, events: libc::POLLIN, revents: 0 });
    }

    fn handle(&mut self, pfds: &[libc::pollfd]) {
        let ready =
            |i: usize| pfds.get(i).is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0);
        if ready(0) {
            if let Some(socket) = self.socket.take() {
                if let Ok(Some(master)) = tty::recv_fd(socket) {
                    self.master = Some(master);
                    self.enter_raw_mode();
                    self.copy_window_size();
                }
            }
        }
        if ready(1) {
            if let Some(master) = self.master {
                if !copy_once(master, 1) {
                    // No slave is open (EIO): stop watching, but keep the master open until the sandbox is
                    // gone — closing it would hang up the terminal and SIGHUP a command that merely closed
                    // its terminal streams.
                    self.master_quiet = true;
                }
            }
        }
        if ready(2) {
            if let Some(master) = self.master {
                if !copy_once(0, master) {
                    self.stdin_open = false;
                    // End of input: the terminal's end-of-file character, as a person would type it.
                    let _ = sys::fd::write_all(master, &[4]);
                }
            }
        }
    }

    fn enter_raw_mode(&mut self) {
        // SAFETY: isatty takes an integer.
        if unsafe { libc::isatty(0) } != 1 {
            return;
        }
        // SAFETY: termios is plain data filled by tcgetattr before use; cfmakeraw edits a live local.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return;
            }
            self.saved_termios = Some(t);
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
    }

    fn copy_window_size(&self) {
        let Some(master) = self.master else { return };
        // SAFETY: an all-zero winsize is valid; TIOCGWINSZ/TIOCSWINSZ read and write a live local.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(master, libc::TIOCSWINSZ, &ws);
            }
        }
    }

    fn drain_and_restore(&mut self) {
        if let Some(master) = self.master.take() {
            // SAFETY: fcntl with integer arguments.
            unsafe { libc::fcntl(master, libc::F_SETFL, libc::O_NONBLOCK) };
            while copy_once(master, 1) {}
            sys::fd::close(master);
        }
        if let Some(socket) = self.socket.take() {
            sys::fd::close(socket);
        }
        if let Some(t) = self.saved_termios.take() {
            // SAFETY: restores the termios saved from the same terminal.
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
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
