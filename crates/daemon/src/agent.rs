//! The fast exec: a command started by the sandbox's exec agent (`runtime::agent`) instead of by a new
//! `airlock exec` process.
//!
//! Each sandbox `airlock create` makes gets an agent, served by a fork of its supervisor once the sandbox is
//! up (pooled sandboxes count as ready only once its socket is there). A plain exec (no `user`, no `timeout`) goes to it
//! over `agent.sock` in the sandbox's directory: the daemon makes the command's pipes, sends them with the
//! command, and hears its pid, then its wait status. The command is confined exactly as an `airlock exec`
//! command (the agent is one), so the only difference is time: one fork and one execve inside the sandbox.
//!
//! Anything that stops the agent from taking a command before it started — no socket yet, the agent gone or
//! refusing — makes the caller run it the long way; nothing was started, so nothing runs twice.

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use runtime::agent::wire;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::pipe;
use tokio::net::UnixStream;

/// A command the agent started.
pub struct AgentExec {
    stream: UnixStream,
    /// The command's pid inside the sandbox.
    pub pid: i32,
}

/// The daemon's ends of the command's streams.
pub struct Streams {
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
}

impl AgentExec {
    /// The command's wait status, once it has exited; `None` when the agent went away first (the sandbox was
    /// stopped: the command died with it).
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        let mut answer = [0u8; wire::ANSWER_LEN];
        self.stream.read_exact(&mut answer).await.ok()?;
        match wire::decode_answer(&answer) {
            (wire::EXITED, status) => Some(ExitStatus::from_raw(status)),
            _ => None,
        }
    }
}

/// What to run: the exec request's command, variables and directory.
pub struct Command<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
    pub stdin: bool,
}

/// A connection to a sandbox's agent, before it was asked anything.
pub struct Connected {
    stream: UnixStream,
    owner: std::fs::Metadata,
}

/// Connects to the agent listening on `socket`; `None` when there is none (not started yet, or the sandbox is
/// not running).
pub async fn connect(socket: &Path) -> Option<Connected> {
    let owner = std::fs::symlink_metadata(socket).ok()?;
    let stream = UnixStream::connect(socket).await.ok()?;
    Some(Connected { stream, owner })
}

impl Connected {
    /// Starts `command`; `None` when the agent did not start it (the caller then runs it the long way).
    pub async fn start(self, command: &Command<'_>) -> Option<(AgentExec, Streams)> {
        start(self, command).await
    }
}

async fn start(connected: Connected, command: &Command<'_>) -> Option<(AgentExec, Streams)> {
    let Connected { stream, owner } = connected;
    let env: Vec<(String, String)> = command.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let request = wire::encode_request(command.cwd, command.argv, &env).ok()?;

    let (stdout_read, stdout_write) = pipe_pair()?;
    let (stderr_read, stderr_write) = pipe_pair()?;
    let (stdin_read, stdin_write) = match command.stdin {
        true => {
            let (r, w) = pipe_pair()?;
            (r, Some(w))
        }
        false => (std::fs::File::open("/dev/null").ok()?.into(), None),
    };
    // The socket belongs to the sandbox's user: the command's ends of the pipes go to the same ids, so the
    // command may reopen its streams (/dev/stdout, /proc/self/fd/N) as an `airlock exec` command may.
    if rustix::process::geteuid().is_root() {
        let (uid, gid) = (rustix::fs::Uid::from_raw(owner.uid()), rustix::fs::Gid::from_raw(owner.gid()));
        for fd in [&stdin_read, &stdout_write, &stderr_write] {
            rustix::fs::fchown(fd, Some(uid), Some(gid)).ok()?;
        }
    }
    send_with_fds(&stream, &request, [stdin_read.as_fd(), stdout_write.as_fd(), stderr_write.as_fd()]).await?;
    // Ours close: the command's copies are the only writers, so the pipes end with it (and what it started).
    drop((stdin_read, stdout_write, stderr_write));

    let mut exec = AgentExec { stream, pid: 0 };
    let mut answer = [0u8; wire::ANSWER_LEN];
    exec.stream.read_exact(&mut answer).await.ok()?;
    match wire::decode_answer(&answer) {
        (wire::STARTED, pid) => exec.pid = pid,
        _ => return None,
    }
    let streams = Streams {
        stdin: stdin_write.and_then(|w| pipe::Sender::from_owned_fd(w).ok()),
        stdout: pipe::Receiver::from_owned_fd(stdout_read).ok()?,
        stderr: pipe::Receiver::from_owned_fd(stderr_read).ok()?,
    };
    Some((exec, streams))
}

fn pipe_pair() -> Option<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ok()
}

/// Sends `bytes` with the three descriptors riding on the first byte.
async fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: [std::os::fd::BorrowedFd<'_>; 3]) -> Option<()> {
    let mut sent = 0;
    while sent == 0 {
        stream.writable().await.ok()?;
        let result = stream.try_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            rustix::net::sendmsg(stream, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL)
                .map_err(std::io::Error::from)
        });
        match result {
            Ok(n) => sent = n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
    let mut rest = &bytes[sent..];
    while !rest.is_empty() {
        stream.writable().await.ok()?;
        match stream.try_write(rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
    Some(())
}

/// How long a pooled sandbox's way in may take to be ready once `airlock create` is done.
const POOL_READY_LIMIT: Duration = Duration::from_secs(5);

/// Waits (at most [`POOL_READY_LIMIT`]) until a pooled sandbox runs a command the fast way: a VM sandbox
/// (`--isolation vm`, whose supervisor listens on `vm_socket` before `airlock create` returns, and which has no
/// exec agent) once that socket accepts; any other once its exec agent (`agent_socket`, which its supervisor
/// starts) is published.
pub async fn wait_ready_for_pool(agent_socket: &Path, vm_socket: &Path) {
    let deadline = tokio::time::Instant::now() + POOL_READY_LIMIT;
    if !vm_socket.exists() {
        wait_published(agent_socket, POOL_READY_LIMIT).await;
        return;
    }
    // A connection without a request is one the supervisor drops at once (it reads the three descriptors first).
    while tokio::net::UnixStream::connect(vm_socket).await.is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most `limit`) for an agent's socket to be published.
pub async fn wait_published(socket: &Path, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !socket.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
