//! The exec agent: a process inside a running sandbox that starts commands on request, so that a command costs
//! one `fork` and one `execve` instead of a whole `airlock exec` (a new airlock process that reads the stored
//! profile, builds the plan, compiles the seccomp program, joins the cgroup and the namespaces, and forks).
//!
//! The agent is made exactly as an `airlock exec` command is (`attach::serve_agent_in_sandbox`): the sandbox's
//! cgroup and namespaces, its user, no capabilities, `no_new_privs`, its Landlock ruleset and its seccomp filter
//! (whose listener the `airlock` process that made it holds, so every command it starts is audited as an exec's
//! are). Only then, where an exec's command would `execve`, it serves instead. Its children inherit all of that;
//! each gets a new session, the standard streams the client sent, the requested working directory, and the
//! sandbox's environment with the client's variables over it.
//!
//! The listening socket is bound on the host, in the sandbox's state directory (mode 0600, owned by the
//! sandbox's user), before the agent exists; nothing inside the sandbox can reach that path, and the agent is
//! not dumpable, so no process of the sandbox can take its descriptors. It holds the only copy inside.
//!
//! Everything here runs after `fork`, so the loop only makes system calls on memory prepared before it
//! ([`AgentSpace`]): no allocation.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use sys::process::CStrArray;
use sys::Errno;

use crate::plan::SandboxPlan;

/// The wire format between a client (the daemon) and the agent, over a Unix stream socket.
///
/// A request is a [`wire::HEADER_LEN`]-byte header — the magic, then `argc`, `envc` and the payload's length as
/// little-endian u32 — with exactly three descriptors attached to its first byte (`SCM_RIGHTS`: the command's
/// stdin, stdout and stderr), then the payload: the working directory (empty: the sandbox's), the `argc`
/// arguments and the `envc` `KEY=VALUE` variables, each NUL-terminated.
///
/// Answers are [`wire::ANSWER_LEN`]-byte records, a tag and a value as little-endian u32/i32: [`wire::STARTED`]
/// with the command's pid inside the sandbox, then [`wire::EXITED`] with its wait status; or one
/// [`wire::REFUSED`] with an errno when the command was not started (a malformed request, too many running,
/// fork failed). The connection closes after the last answer.
pub mod wire {
    pub const MAGIC: [u8; 4] = *b"ALA1";
    pub const HEADER_LEN: usize = 16;
    pub const ANSWER_LEN: usize = 8;
    /// The largest payload the agent takes; a larger command goes the long way (`airlock exec`).
    pub const MAX_PAYLOAD: usize = 2 << 20;
    /// The most arguments, and the most variables, in one request.
    pub const MAX_STRINGS: usize = 16 << 10;
    pub const STARTED: u32 = 1;
    pub const EXITED: u32 = 2;
    pub const REFUSED: u32 = 3;

    /// Why a request cannot be encoded; the caller then runs the command the long way.
    #[derive(Debug, thiserror::Error)]
    pub enum EncodeError {
        #[error("a string holds a NUL byte")]
        Nul,
        #[error("the request is over the agent's limits")]
        TooLarge,
    }

    /// Encodes a request: header and payload, to be sent with the three descriptors on its first byte.
    pub fn encode_request(
        cwd: Option<&str>,
        argv: &[String],
        env: &[(String, String)],
    ) -> Result<Vec<u8>, EncodeError> {
        if argv.is_empty() || argv.len() > MAX_STRINGS || env.len() > MAX_STRINGS {
            return Err(EncodeError::TooLarge);
        }
        let mut payload = Vec::new();
        let mut put = |s: &[u8]| -> Result<(), EncodeError> {
            if s.contains(&0) {
                return Err(EncodeError::Nul);
            }
            payload.extend_from_slice(s);
            payload.push(0);
            Ok(())
        };
        put(cwd.unwrap_or("").as_bytes())?;
        for a in argv {
            put(a.as_bytes())?;
        }
        for (k, v) in env {
            if k.is_empty() || k.contains('=') {
                return Err(EncodeError::Nul);
            }
            put(format!("{k}={v}").as_bytes())?;
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(EncodeError::TooLarge);
        }
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&(argv.len() as u32).to_le_bytes());
        out.extend_from_slice(&(env.len() as u32).to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Decodes one answer record.
    pub fn decode_answer(bytes: &[u8; ANSWER_LEN]) -> (u32, i32) {
        let tag = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let value = i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        (tag, value)
    }

    pub(crate) fn encode_answer(tag: u32, value: i32) -> [u8; ANSWER_LEN] {
        let mut out = [0u8; ANSWER_LEN];
        out[..4].copy_from_slice(&tag.to_le_bytes());
        out[4..].copy_from_slice(&value.to_le_bytes());
        out
    }
}

/// Where the agent's listening socket is: bound at `bound` (by the caller), then, once it belongs to the sandbox's
/// user, renamed to `published` — so that a client never finds it before it has its final owner (which is whom
/// the client gives the command's pipes to).
#[derive(Debug, Clone)]
pub struct AgentSocket {
    pub bound: std::path::PathBuf,
    pub published: std::path::PathBuf,
}

/// How many commands one agent runs at once; a request beyond is refused (`EAGAIN`).
const MAX_RUNNING: usize = 1024;
/// How long a client may take to send the rest of a request once it has connected.
const REQUEST_TIMEOUT_MS: i32 = 2000;

/// One running command: its pid and the connection its exit goes to.
struct Running {
    pid: libc::pid_t,
    connection: OwnedFd,
}

/// Everything the agent's loop needs, allocated before `fork`.
pub struct AgentSpace {
    request: Vec<u8>,
    argv: Option<CStrArray<'static>>,
    envp: Option<CStrArray<'static>>,
    running: Vec<Option<Running>>,
}

impl AgentSpace {
    /// Allocates the agent's buffers (pages a request never touches cost no memory).
    pub fn new() -> AgentSpace {
        let mut running = Vec::with_capacity(MAX_RUNNING);
        running.resize_with(MAX_RUNNING, || None);
        AgentSpace {
            request: vec![0u8; wire::HEADER_LEN + wire::MAX_PAYLOAD],
            argv: Some(CStrArray::with_capacity(wire::MAX_STRINGS)),
            envp: Some(CStrArray::with_capacity(2 * wire::MAX_STRINGS)),
            running,
        }
    }
}

impl Default for AgentSpace {
    fn default() -> Self {
        AgentSpace::new()
    }
}

/// A parsed request, borrowing the request buffer and the plan.
struct Request<'a> {
    cwd: &'a CStr,
    program: &'a CStr,
    /// The `PATH` value the program is looked up along (the client's, else the sandbox's).
    path: &'a [u8],
    /// Execs are audited: a `PATH` candidate that does not exist is skipped without an `execve`, so the log does
    /// not list every directory tried (as `airlock exec` does).
    audited: bool,
}

/// Serves requests on `listener` until the sandbox ends (its init's death kills the agent with the rest of its
/// pid namespace). The process is already confined (`exec::confine_command_process`). Never returns.
pub fn serve(plan: &SandboxPlan, listener: BorrowedFd<'_>, space: &mut AgentSpace) -> ! {
    // Not dumpable: no process of the sandbox (same user) may ptrace the agent or open its descriptors through
    // /proc, which would give it the listening socket.
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 0);
    // Children are collected through a signalfd: SIGCHLD blocked, read as data in the loop.
    let _ = sys::signal::block(&[libc::SIGCHLD]);
    let Ok(children) = sys::signal::signalfd(&[libc::SIGCHLD]) else {
        sys::process::exit_immediately(crate::exec::EXIT_SETUP_FAILED)
    };
    let mut fds = [
        libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: children.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        if sys::fd::poll(&mut fds, -1).is_err() {
            continue;
        }
        if fds[1].revents != 0 {
            let mut drain = [0u8; 128 * 8];
            while matches!(sys::fd::read(children.as_raw_fd(), &mut drain), Ok(n) if n > 0) {}
            reap(space);
        }
        // The listener is non-blocking: a wakeup may find the connection gone already (EAGAIN).
        if fds[0].revents != 0 {
            if let Ok(connection) = sys::socket::accept(listener) {
                handle(plan, connection, space);
            }
        }
    }
}

/// Collects every child that ended and answers its client.
fn reap(space: &mut AgentSpace) {
    while let Ok((pid, status)) = sys::wait::waitpid(-1, libc::WNOHANG) {
        if pid <= 0 {
            break;
        }
        let slot = space.running.iter_mut().find(|r| matches!(r, Some(r) if r.pid == pid));
        if let Some(done) = slot.and_then(Option::take) {
            let _ = send_all(done.connection.as_fd(), &wire::encode_answer(wire::EXITED, status));
        }
    }
}

fn send_all(socket: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        match sys::socket::send_nosignal(socket, bytes) {
            Ok(0) => return Err(libc::EPIPE),
            Ok(n) => bytes = &bytes[n..],
            Err(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one request, starts its command, answers `STARTED` (or `REFUSED`). The connection is kept until the
/// command exits, whether or not the client still listens.
fn handle(plan: &SandboxPlan, connection: OwnedFd, space: &mut AgentSpace) {
    let refuse = |errno: Errno| {
        let _ = send_all(connection.as_fd(), &wire::encode_answer(wire::REFUSED, errno));
    };
    let Some(slot) = space.running.iter().position(Option::is_none) else {
        return refuse(libc::EAGAIN);
    };
    let mut stdio: [Option<OwnedFd>; 3] = [None, None, None];
    let length = match read_request(connection.as_fd(), &mut space.request, &mut stdio) {
        Ok(n) => n,
        Err(e) => return refuse(e),
    };
    let [Some(stdin), Some(stdout), Some(stderr)] = &stdio else {
        return refuse(libc::EBADMSG);
    };
    let (Some(argv), Some(envp)) = (space.argv.take(), space.envp.take()) else {
        return refuse(libc::EBADMSG);
    };
    let (mut argv, mut envp) = (argv.reuse(), envp.reuse());
    let started = match parse(&space.request[..length], plan, &mut argv, &mut envp) {
        Ok(request) => start(&request, &argv, &envp, [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()]),
        Err(e) => Err(e),
    };
    space.argv = Some(argv.reuse());
    space.envp = Some(envp.reuse());
    // Ours close: the command holds its copies, so the client's pipes end when the command's (and whatever it
    // started) do.
    drop(stdio);
    match started {
        Ok(pid) => {
            // A client gone already does not stop the command: it runs on and is reaped without an answer.
            let _ = send_all(connection.as_fd(), &wire::encode_answer(wire::STARTED, pid));
            space.running[slot] = Some(Running { pid, connection });
        }
        Err(e) => refuse(e),
    }
}

/// Reads the header (with the descriptors) and the payload into `buf`; returns the request's whole length.
fn read_request(connection: BorrowedFd<'_>, buf: &mut [u8], stdio: &mut [Option<OwnedFd>; 3]) -> Result<usize, Errno> {
    let mut filled = 0;
    let mut total = wire::HEADER_LEN;
    while filled < total {
        let mut pfd = [libc::pollfd { fd: connection.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        if sys::fd::poll(&mut pfd, REQUEST_TIMEOUT_MS)? == 0 {
            return Err(libc::ETIMEDOUT);
        }
        // The descriptors ride on the first byte, so the first read takes them.
        let n = if filled == 0 {
            sys::socket::recv_with_fds(connection, &mut buf[..total], stdio)?
        } else {
            sys::fd::read(connection.as_raw_fd(), &mut buf[filled..total])?
        };
        if n == 0 {
            return Err(libc::EPIPE);
        }
        filled += n;
        if filled >= wire::HEADER_LEN && total == wire::HEADER_LEN {
            if buf[..4] != wire::MAGIC {
                return Err(libc::EBADMSG);
            }
            let payload = u32_at(buf, 12) as usize;
            if payload > wire::MAX_PAYLOAD {
                return Err(libc::E2BIG);
            }
            total = wire::HEADER_LEN + payload;
        }
    }
    Ok(total)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Fills `argv` and `envp` (the client's variables, then the sandbox's the client did not set) from a request.
fn parse<'a>(
    request: &'a [u8],
    plan: &'a SandboxPlan,
    argv: &mut CStrArray<'a>,
    envp: &mut CStrArray<'a>,
) -> Result<Request<'a>, Errno> {
    let argc = u32_at(request, 4) as usize;
    let envc = u32_at(request, 8) as usize;
    if argc == 0 || argc > wire::MAX_STRINGS || envc > wire::MAX_STRINGS {
        return Err(libc::EBADMSG);
    }
    let mut rest = &request[wire::HEADER_LEN..];
    let cwd = next_string(&mut rest)?;
    let program = next_string(&mut rest)?;
    argv.push(program).map_err(|_| libc::E2BIG)?;
    for _ in 1..argc {
        argv.push(next_string(&mut rest)?).map_err(|_| libc::E2BIG)?;
    }
    let client_env = rest;
    let mut path = None;
    for _ in 0..envc {
        let var = next_string(&mut rest)?;
        if !var.to_bytes().contains(&b'=') {
            return Err(libc::EBADMSG);
        }
        if key_of(var.to_bytes()) == b"PATH" {
            path = Some(&var.to_bytes()[5..]);
        }
        envp.push(var).map_err(|_| libc::E2BIG)?;
    }
    for base in &plan.command.envp {
        let key = key_of(base.to_bytes());
        let overridden = client_env.split(|&b| b == 0).take(envc).any(|var| key_of(var) == key);
        if !overridden {
            if key == b"PATH" && path.is_none() {
                path = Some(&base.to_bytes()[5..]);
            }
            envp.push(base.as_c_str()).map_err(|_| libc::E2BIG)?;
        }
    }
    let cwd = if cwd.is_empty() { plan.command.cwd.as_c_str() } else { cwd };
    // No PATH at all: execvp's default.
    let path = path.unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    Ok(Request { cwd, program, path, audited: plan.seccomp.notify().exec })
}

/// The NUL-terminated string at the start of `rest`, which moves past it.
fn next_string<'a>(rest: &mut &'a [u8]) -> Result<&'a CStr, Errno> {
    let s = CStr::from_bytes_until_nul(rest).map_err(|_| libc::EBADMSG)?;
    *rest = &rest[s.to_bytes_with_nul().len()..];
    Ok(s)
}

/// The `KEY` of `KEY=VALUE` (all of it when there is no `=`).
fn key_of(var: &[u8]) -> &[u8] {
    var.iter().position(|&b| b == b'=').map_or(var, |i| &var[..i])
}

/// Forks the command's process; returns its pid.
fn start(
    request: &Request<'_>,
    argv: &CStrArray<'_>,
    envp: &CStrArray<'_>,
    stdio: [BorrowedFd<'_>; 3],
) -> Result<libc::pid_t, Errno> {
    // The agent is single-threaded (a fork of the single-threaded airlock process; the fork checks it), and the
    // child only runs `run_command`, which makes system calls on memory that exists already (the request buffer,
    // the arrays, a stack buffer) and allocates nothing.
    match sys::process::fork()? {
        sys::process::Forked::Child => run_command(request, argv, envp, stdio),
        sys::process::Forked::Parent(pid) => Ok(pid),
    }
}

/// The command's process: a new session, the client's streams, the directory, then `execve` along `PATH`.
fn run_command(request: &Request<'_>, argv: &CStrArray<'_>, envp: &CStrArray<'_>, stdio: [BorrowedFd<'_>; 3]) -> ! {
    // The agent blocks SIGCHLD for its signalfd; a command starts with the default actions and an empty mask, as
    // `airlock exec`'s do.
    sys::signal::reset_all();
    // Its own session, as an exec's command: no controlling terminal, and its process group is its pid.
    let _ = sys::process::new_session();
    let streams = [sys::fd::StandardStream::Input, sys::fd::StandardStream::Output, sys::fd::StandardStream::Error];
    for (fd, stream) in stdio.into_iter().zip(streams) {
        if sys::fd::dup_onto_standard_stream(fd, stream).is_err() {
            sys::process::exit_immediately(crate::exec::EXIT_SETUP_FAILED);
        }
    }
    // Nothing of the agent's reaches the command: the listener, other clients' connections, the signalfd.
    let _ = sys::fd::close_range(3, u32::MAX);
    // Dumpable again, as the command will be after its execve anyway: it holds nothing of the agent's now, and
    // the audit listener must read the execve's path and arguments from its memory (a non-dumpable process's
    // memory is closed to it).
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 1);
    if let Err(e) = sys::process::change_directory(request.cwd) {
        say(&[b"cannot change directory to ", request.cwd.to_bytes(), b": ", errno_text(e)]);
        sys::process::exit_immediately(crate::exec::EXIT_SETUP_FAILED);
    }
    let program = request.program.to_bytes();
    let errno = if program.contains(&b'/') {
        sys::process::execute(request.program, argv.as_pointers(), envp.as_pointers())
    } else {
        along_path(request, argv, envp)
    };
    match errno {
        libc::ENOENT | libc::ENOTDIR if !program.contains(&b'/') => {
            say(&[b"command not found: ", program, b" (looked in the sandbox's PATH)"]);
            sys::process::exit_immediately(crate::exec::EXIT_NOT_FOUND)
        }
        libc::ENOENT | libc::ENOTDIR => {
            say(&[b"cannot execute ", program, b": ", errno_text(errno)]);
            sys::process::exit_immediately(crate::exec::EXIT_NOT_FOUND)
        }
        _ => {
            say(&[b"cannot execute ", program, b": ", errno_text(errno)]);
            sys::process::exit_immediately(crate::exec::EXIT_NOT_EXECUTABLE)
        }
    }
}

/// `execvp`'s search: each `PATH` entry in turn (an empty one is the working directory); a missing file moves on,
/// a permission error is remembered, anything else stops. Returns only on failure.
fn along_path(request: &Request<'_>, argv: &CStrArray<'_>, envp: &CStrArray<'_>) -> Errno {
    let program = request.program.to_bytes();
    let mut result = libc::ENOENT;
    let mut buf = [0u8; 4096];
    for dir in request.path.split(|&b| b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + program.len();
        if len + 1 > buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..len].copy_from_slice(program);
        buf[len] = 0;
        let Ok(candidate) = CStr::from_bytes_with_nul(&buf[..=len]) else { continue };
        if request.audited {
            if let Err(libc::ENOENT | libc::ENOTDIR) = sys::fd::access(candidate, libc::F_OK) {
                continue;
            }
        }
        match sys::process::execute(candidate, argv.as_pointers(), envp.as_pointers()) {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => result = libc::EACCES,
            other => return other,
        }
    }
    result
}

/// Writes `airlock: ` and the parts as one line to the command's stderr (the client's), as `airlock exec` would
/// have said it on its own.
fn say(parts: &[&[u8]]) {
    let mut line = [0u8; 1024];
    let mut len = 0;
    for part in std::iter::once(&b"airlock: "[..]).chain(parts.iter().copied()).chain(std::iter::once(&b"\n"[..])) {
        let room = line.len() - len;
        let n = part.len().min(room);
        line[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    if len == line.len() {
        line[len - 1] = b'\n';
    }
    let _ = sys::fd::write_all(2, &line[..len]);
}

/// The text of the errors a start can meet (strerror is not async-signal-safe).
fn errno_text(errno: Errno) -> &'static [u8] {
    match errno {
        libc::ENOENT => b"No such file or directory",
        libc::ENOTDIR => b"Not a directory",
        libc::EACCES => b"Permission denied",
        libc::EPERM => b"Operation not permitted",
        libc::ENOEXEC => b"Exec format error",
        libc::ELOOP => b"Too many levels of symbolic links",
        libc::ENAMETOOLONG => b"File name too long",
        libc::E2BIG => b"Argument list too long",
        libc::ETXTBSY => b"Text file busy",
        libc::ENOMEM => b"Cannot allocate memory",
        libc::EISDIR => b"Is a directory",
        _ => b"error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_encodes_its_strings_in_order() {
        let req = wire::encode_request(Some("/w"), &["ls".into(), "-l".into()], &[("A".into(), "1".into())]).unwrap();
        assert_eq!(&req[..4], b"ALA1");
        assert_eq!(u32_at(&req, 4), 2);
        assert_eq!(u32_at(&req, 8), 1);
        assert_eq!(u32_at(&req, 12) as usize, req.len() - wire::HEADER_LEN);
        assert_eq!(&req[wire::HEADER_LEN..], b"/w\0ls\0-l\0A=1\0");
    }

    #[test]
    fn nul_bytes_and_bad_keys_are_refused() {
        assert!(wire::encode_request(None, &["a\0b".into()], &[]).is_err());
        assert!(wire::encode_request(None, &["a".into()], &[("K=".into(), "v".into())]).is_err());
        assert!(wire::encode_request(None, &[], &[]).is_err());
    }

    #[test]
    fn answers_round_trip() {
        assert_eq!(wire::decode_answer(&wire::encode_answer(wire::EXITED, -5)), (wire::EXITED, -5));
    }

    #[test]
    fn keys_stop_at_the_first_equals_sign() {
        assert_eq!(key_of(b"A=b=c"), b"A");
        assert_eq!(key_of(b"A"), b"A");
    }
}
