//! `airlock create --isolation vm`: a held guest, and `airlock exec` into it.
//!
//! The supervisor boots the guest with `held` set: the guest agent sets the sandbox up held by its init (as the
//! namespace backend's `create` does, inside the guest) and then runs commands on request, each joined to that
//! sandbox (`runtime::attach::exec_in_sandbox` in the guest), up to [`super::protocol::MAX_SESSIONS`] at once.
//! The supervisor keeps the guest's ports and listens on `vm.sock` in the sandbox's directory (mode 0600: the
//! owner only). `airlock exec` connects, hands over its standard streams (three descriptors, `SCM_RIGHTS`) and an
//! [`ExecRequest`]; the supervisor sends the guest a [`HostMessage::Exec`] with a new session id and relays the
//! client's input to the stdin port as frames (`session`, `length`, bytes; length 0 is the end), at most
//! [`INPUT_WINDOW`] bytes ahead of what the guest says its command took ([`GuestMessage::InputTaken`]). The
//! stdout and stderr ports carry the same frames the other way: each session's to its client, within
//! [`OUTPUT_WINDOW`] bytes per stream that the supervisor gives back ([`HostMessage::Credit`]) as its client
//! reads, then a zero-length frame for the stream's end. The guest's messages for a session come wrapped
//! ([`GuestMessage::Of`]); audit records go to the client as they come, the outcome once both streams have
//! ended and reached it. With every session taken, clients wait in the listener's queue.
//!
//! While its command runs, a client sends [`ClientMessage`]s, one a line: the signals it gets (passed on to the
//! command as [`HostMessage::Signal`], as a namespace exec forwards them) and `-t`'s resizes
//! ([`HostMessage::Resize`]). Its output descriptors are written only as fast as they take it, through a bounded
//! buffer ([`ClientStream`]): a client that stops reading holds its own command, never the supervisor.
//!
//! The guest is not trusted: its control lines are bounded and checked ([`super::protocol::ControlReader`]); one
//! that is not a message ends the session with a `vm:` error and takes the guest down (a guest that breaks the
//! protocol cannot be told apart from one that lies), never the supervisor.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use policy::sandbox::{SandboxPolicy, WorkspaceMode};
use runtime::attach::RunningSandbox;
use runtime::prepare::HostContext;
use runtime::sandbox::{AuditRequest, RunOutcome, RunReport};

use super::protocol::{AuditNotify, ControlReader, GuestMessage, INPUT_WINDOW, MAX_SESSIONS, OUTPUT_WINDOW};
use super::qemu::{self, QemuError, Spawned};
use super::{VmBackend, VmError};

/// The supervisor's socket, in the sandbox's directory.
pub const SOCKET_NAME: &str = "vm.sock";
/// Most bytes of a stream in one frame (see [`stream_frame`]).
pub const MAX_FRAME: usize = 32 * 1024;
/// A frame's header: its session and its length.
pub const FRAME_HEADER: usize = 8;
/// Most bytes of a client's request.
const MAX_REQUEST_BYTES: u64 = 4 << 20;
/// How long the guest may take to boot and set the sandbox up (TCG on a busy host is slow).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a client may take to send its request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write to the guest's control port or a client's socket may wait for its reader.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes written to a client's descriptor in one go once poll says it is writable: a pipe that has room
/// takes this much without blocking (its descriptor is the client's, blocking, and stays so: not ours to change).
const CLIENT_WRITE_CHUNK: usize = 4096;
/// Longest line a client sends after its request (a [`ClientMessage`]).
const MAX_CLIENT_LINE: usize = 256;
/// Signals `airlock exec` passes on to its command, as the namespace backend's exec does (`runtime::supervisor`).
pub const FORWARDED_SIGNALS: &[i32] =
    &[libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

/// From the supervisor to the held guest, on the control port, one a line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMessage {
    /// Run `policy.command` in the held sandbox; its input comes in frames of `session`.
    Exec {
        session: u32,
        policy: Box<SandboxPolicy>,
        audit: Option<AuditNotify>,
        /// `-t`: a terminal in the sandbox of this size (rows, columns).
        #[serde(default)]
        tty: Option<(u16, u16)>,
    },
    /// The client of `session` went away: kill its command (the outcome still comes).
    Cancel { session: u32 },
    /// The client of `session` got `signo` (one of [`FORWARDED_SIGNALS`]): the command gets it.
    Signal { session: u32, signo: i32 },
    /// `-t`: the client's terminal is now `rows` × `cols`; the command's terminal takes that size.
    Resize { session: u32, rows: u16, cols: u16 },
    /// `stdout` and `stderr` more bytes of `session`'s output have left the supervisor: the guest may send that
    /// much more (see [`super::protocol::OUTPUT_WINDOW`]).
    Credit { session: u32, stdout: u32, stderr: u32 },
    /// `airlock __files` (cp, the files API): do `request` in the held sandbox, in a process that enters it as its
    /// user (as `__files` does on the host); its input comes in frames of `session`, its output on the stdout
    /// port, its exit status as the outcome (`exited`).
    Files { session: u32, policy: Box<SandboxPolicy>, request: crate::files::FileRequest },
}

/// What `airlock exec` sends the supervisor after its request, one a line, while its command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMessage {
    /// A signal the client got, for the command.
    Signal(i32),
    /// `-t`: the client's terminal's new size.
    Resize { rows: u16, cols: u16 },
}

/// What `airlock exec` sends the supervisor after its three descriptors (stdin, stdout, stderr), one line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExecRequest {
    pub policy: SandboxPolicy,
    pub audit: Option<AuditNotify>,
    /// `-t`: rows and columns of the terminal to open in the sandbox.
    #[serde(default)]
    pub tty: Option<(u16, u16)>,
    /// `airlock __files`: a file operation instead of `policy.command` (see [`HostMessage::Files`]).
    #[serde(default)]
    pub files: Option<crate::files::FileRequest>,
}

#[derive(Debug, thiserror::Error)]
pub enum HeldError {
    #[error("vm: a held guest needs its sandbox's directory (for its socket)")]
    NoStateDir,
    #[error("vm: cannot listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vm: cannot block the stop signals (for the supervisor's signalfd)")]
    Signals(#[source] std::io::Error),
    #[error("vm: cannot block the signals exec passes on to its command (for its signalfd)")]
    ForwardSignals(#[source] std::io::Error),
    #[error("vm: cannot reach the sandbox's supervisor at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("vm: cannot send the command to the sandbox's supervisor")]
    Send(#[source] std::io::Error),
    #[error("vm: the supervisor ended the session without the command's outcome (the sandbox stopped?)")]
    NoOutcome,
    #[error("vm: {0}")]
    Session(String),
    #[error("vm: cannot record where the workspace's overlay is mounted in {path}")]
    RecordMount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(errno: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

/// A frame of a session's stream on a held guest's stream ports (its input on the stdin port; its output on the
/// stdout and stderr ports): the session, the length (little-endian u32 each, [`FRAME_HEADER`] bytes), the bytes
/// (at most [`MAX_FRAME`]); length 0 is the end of that session's stream.
pub fn stream_frame(session: u32, bytes: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(FRAME_HEADER + bytes.len());
    frame.extend_from_slice(&session.to_le_bytes());
    frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    frame.extend_from_slice(bytes);
    frame
}

/// A reader of a stream port's frames (the guest's of the stdin port, the host's of the stdout and stderr ports),
/// however the bytes arrive.
#[derive(Debug, Default)]
pub struct StreamFrames {
    pending: Vec<u8>,
}

/// A frame longer than [`MAX_FRAME`]: the stream is not what the host writes.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a frame of {0} bytes (at most {MAX_FRAME})")]
pub struct FrameTooLong(pub usize);

impl StreamFrames {
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole frame: its session and bytes (empty: the end of that session's stream).
    pub fn next_frame(&mut self) -> Result<Option<(u32, Vec<u8>)>, FrameTooLong> {
        let Some(header) = self.pending.get(..FRAME_HEADER) else { return Ok(None) };
        let session = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameTooLong(len));
        }
        if self.pending.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        let bytes = self.pending[FRAME_HEADER..FRAME_HEADER + len].to_vec();
        self.pending.drain(..FRAME_HEADER + len);
        Ok(Some((session, bytes)))
    }
}

/// `Backend::run_held` of [`VmBackend`]: boots the held guest, calls `on_ready(QEMU's pid)` once its sandbox is
/// set up and the socket listens, and serves execs until the supervisor is told to stop (SIGTERM, SIGINT,
/// SIGHUP), the sandbox's record is removed, or the guest stops. QEMU is killed and the socket removed however
/// it ends (a killed supervisor takes QEMU with it: `PR_SET_PDEATHSIG`).
pub fn run_held_vm(
    backend: &VmBackend,
    policy: &SandboxPolicy,
    host: &HostContext,
    warn: &mut dyn FnMut(&str),
    on_ready: &mut dyn FnMut(libc::pid_t),
) -> Result<(RunOutcome, RunReport), VmError> {
    let watch = host.watch_state.as_ref().ok_or(HeldError::NoStateDir)?;
    let socket_path = watch.dir.join(SOCKET_NAME);
    let (kernel, initrd, mut request, mounts) = backend.prepare(policy, host)?;
    // Where a live checkpoint or rollback finds the workspace's overlay in QEMU's mount namespace
    // (`store::layer::live_vm`).
    if let Some(overlay) = &mounts.workspace {
        let file = store::layout::SandboxDir::at(watch.dir.clone()).vm_workspace_mount_file();
        let line = format!("{}\n", overlay.mount_point().display());
        std::fs::write(&file, line).map_err(|source| HeldError::RecordMount { path: file, source })?;
    }
    // --net allow: the gateway serves before the guest boots, and until QEMU is gone (below).
    let network = super::net::start_for(policy, host, &mut request)?;
    // Blocked before QEMU starts, read from a signalfd in the loop (QEMU's spawn resets its own mask).
    let stop_signals = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
    sys::signal::block(&stop_signals).map_err(|e| HeldError::Signals(io(e)))?;
    let signals = sys::signal::signalfd(&stop_signals).map_err(|e| HeldError::Signals(io(e)))?;
    // A client whose output is a closed pipe must not kill the supervisor.
    let _ = sys::signal::ignore(libc::SIGPIPE);
    // QEMU's host cgroup when limits are asked (`super::cgroup`), joined by QEMU before exec.
    let vmm_cgroup =
        super::cgroup::VmmCgroup::create(policy, &backend.config, host.name.as_deref().unwrap_or("run"), warn)?;
    let mut quiet = |_: &str| {};
    let Spawned { mut child, channels, console } = qemu::spawn(&qemu::GuestLaunch {
        config: &backend.config,
        kernel: &kernel,
        initrd: &initrd,
        request: &request,
        mounts: &mounts,
        cgroup_join: vmm_cgroup.as_ref().map(|c| c.join_files()),
        nic: network.as_ref().map(super::net::VmNetwork::qemu_fd),
        warn: &mut quiet,
        audit: None,
    })?;
    // A guest that stops reading its control port, or a client its socket, cannot hold the supervisor (and with
    // it `airlock stop`) for longer than this: the write fails, and the guest is stopped or the client dropped.
    channels.ctl.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(QemuError::Channels)?;
    let mut held = Held::new(channels, console, signals);
    let result = sys::process::pidfd_open(child.id() as libc::pid_t)
        .map_err(|e| VmError::from(QemuError::Channels(io(e))))
        .and_then(|pidfd| {
            held.boot(&request, &pidfd, warn)?;
            let _ = std::fs::remove_file(&socket_path);
            let listener = UnixListener::bind(&socket_path)
                .map_err(|source| HeldError::Listen { path: socket_path.clone(), source })?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| HeldError::Listen { path: socket_path.clone(), source })?;
            on_ready(child.id() as libc::pid_t);
            held.serve(&listener, &pidfd, &watch.record, warn)
        });
    held.fail_sessions("vm: the sandbox stopped");
    let _ = std::fs::remove_file(&socket_path);
    let _ = child.kill();
    let _ = child.wait();
    // QEMU is gone: the gateway records the connections still open and ends.
    if let Some(network) = network {
        network.stop();
    }
    // QEMU is reaped: its cgroup is empty.
    let result = match (result, &vmm_cgroup) {
        (Err(VmError::Qemu(e)), Some(c)) => Err(c.explain(e)),
        (result, _) => result,
    };
    if let Some(c) = vmm_cgroup {
        c.remove()?;
    }
    result.map(|outcome| (outcome, RunReport::default()))
}

/// One `airlock exec` being served.
struct Session {
    id: u32,
    conn: UnixStream,
    /// The client's standard input, until its end.
    input: Option<std::fs::File>,
    /// Input bytes sent to the guest that it has not yet said its command took ([`GuestMessage::InputTaken`]):
    /// at most [`INPUT_WINDOW`].
    input_in_flight: usize,
    output: ClientStream,
    errors: ClientStream,
    /// The guest has sent the end of the command's stdout, stderr (after its last bytes, before its outcome).
    output_ended: bool,
    errors_ended: bool,
    /// The client went away: its command was cancelled, its outcome is awaited and dropped.
    gone: bool,
    /// What the client sent after its request, not yet a whole line.
    client_line: Vec<u8>,
    /// The command's outcome, held until its output has reached the client (which reads it at its pace, as from
    /// a pipe: nothing is dropped while it is there), or the client has gone.
    outcome: Option<GuestMessage>,
}

/// One of a client's output descriptors and what the supervisor holds for it. The descriptor is the client's
/// (blocking, and shared with whatever else the client's stream is): written only when poll says it has room,
/// at most [`CLIENT_WRITE_CHUNK`] at a time, so a client that stops reading never blocks the supervisor.
struct ClientStream {
    file: std::fs::File,
    pending: Vec<u8>,
    /// A write failed (the reader is gone): the rest of the output is dropped.
    closed: bool,
    /// Bytes that left `pending` (written, or dropped once closed) since the guest was last given room for them.
    released: usize,
    /// Bytes the guest sent that it has not been given room for again: at most its window.
    outstanding: usize,
}

impl ClientStream {
    fn new(file: std::fs::File) -> ClientStream {
        ClientStream { file, pending: Vec::new(), closed: false, released: 0, outstanding: 0 }
    }

    fn wants_write(&self) -> bool {
        !self.closed && !self.pending.is_empty()
    }

    /// Drops what is held (the client is gone), as released.
    fn discard(&mut self) {
        self.released += self.pending.len();
        self.pending = Vec::new();
    }

    /// Writes what the descriptor takes now, without waiting.
    fn flush(&mut self) {
        while self.wants_write() {
            let mut probe = [libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLOUT, revents: 0 }];
            match sys::fd::poll(&mut probe, 0) {
                Ok(n) if n > 0 && probe[0].revents & libc::POLLOUT != 0 => {}
                Ok(n) if n > 0 => {
                    // POLLERR, POLLHUP: the reader is gone.
                    self.closed = true;
                    self.discard();
                    return;
                }
                _ => return,
            }
            let chunk = self.pending.len().min(CLIENT_WRITE_CHUNK);
            match self.file.write(&self.pending[..chunk]) {
                Ok(n) => {
                    self.pending.drain(..n);
                    self.released += n;
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => {}
                Err(_) => {
                    self.closed = true;
                    self.discard();
                }
            }
        }
    }
}

impl Write for ClientStream {
    /// Takes everything (the guest's window bounds it); dropped, as released, once closed.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.outstanding += bytes.len();
        if self.closed {
            self.released += bytes.len();
        } else {
            self.pending.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        ClientStream::flush(self);
        Ok(())
    }
}

impl Session {
    fn new(id: u32, conn: UnixStream, [input, output, errors]: [OwnedFd; 3]) -> Session {
        Session {
            id,
            conn,
            input: Some(input.into()),
            input_in_flight: 0,
            output: ClientStream::new(output.into()),
            errors: ClientStream::new(errors.into()),
            output_ended: false,
            errors_ended: false,
            gone: false,
            client_line: Vec::new(),
            outcome: None,
        }
    }

    /// The outcome can go: the guest has sent all the output, which has reached the client, or cannot (its
    /// reader or the client is gone).
    fn finished(&self) -> bool {
        self.outcome.is_some()
            && self.output_ended
            && self.errors_ended
            && (self.gone || (!self.output.wants_write() && !self.errors.wants_write()))
    }

    /// Room to read more of the client's input: the guest's window has room for a whole frame.
    fn takes_input(&self) -> bool {
        self.input.is_some() && self.input_in_flight + MAX_FRAME <= INPUT_WINDOW
    }

    fn reply(&mut self, message: &GuestMessage) {
        if self.gone {
            return;
        }
        if let Ok(mut line) = serde_json::to_vec(message) {
            line.push(b'\n');
            if self.conn.write_all(&line).is_err() {
                self.gone = true;
            }
        }
    }

    /// The client is gone: what is held for it is dropped (and the guest given room for it, so that the command
    /// can end), its input ends.
    fn leave(&mut self) {
        self.gone = true;
        self.input = None;
        for stream in [&mut self.output, &mut self.errors] {
            stream.closed = true;
            stream.discard();
        }
    }
}

/// Descriptors [`Held::serve`] polls per session, in this order: the client's socket, its input, its output,
/// its errors.
const SESSION_FDS: usize = 4;
/// Descriptors polled before the sessions': the stop signals, QEMU's pidfd, the listener, the control port, the
/// stdout and stderr ports, the stdin port.
const OWN_FDS: usize = 7;

struct Held {
    channels: qemu::Channels,
    console: std::fs::File,
    signals: OwnedFd,
    reader: ControlReader,
    /// The stdout and stderr ports' frames, as they arrive.
    output_frames: StreamFrames,
    errors_frames: StreamFrames,
    /// Input frames for the stdin port not yet written (whole frames, of any session, in order).
    stdin_pending: Vec<u8>,
    sessions: Vec<Session>,
    /// Clients accepted whose request has not all come (each counts against [`MAX_SESSIONS`]).
    pending: Vec<PendingClient>,
    next_session: u32,
    buf: Vec<u8>,
}

impl Held {
    fn new(channels: qemu::Channels, console: std::fs::File, signals: OwnedFd) -> Held {
        Held {
            channels,
            console,
            signals,
            reader: ControlReader::default(),
            output_frames: StreamFrames::default(),
            errors_frames: StreamFrames::default(),
            stdin_pending: Vec::new(),
            sessions: Vec::new(),
            pending: Vec::new(),
            next_session: 1,
            buf: vec![0u8; 64 * 1024],
        }
    }

    fn session(&mut self, id: u32) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.id == id)
    }

    /// Sends a message on the control port.
    fn tell_guest(&mut self, message: &HostMessage) -> Result<(), VmError> {
        let mut line = serde_json::to_vec(message).map_err(|e| QemuError::Channels(std::io::Error::other(e)))?;
        line.push(b'\n');
        self.channels.ctl.write_all(&line).map_err(QemuError::Channels)?;
        Ok(())
    }

    /// Sends the request and waits for the guest's `started` (its sandbox is set up).
    fn boot(
        &mut self,
        request: &super::protocol::GuestRequest,
        pidfd: &OwnedFd,
        warn: &mut dyn FnMut(&str),
    ) -> Result<(), VmError> {
        let mut line = serde_json::to_vec(request).map_err(|e| QemuError::Channels(std::io::Error::other(e)))?;
        line.push(b'\n');
        self.channels.ctl.write_all(&line).map_err(QemuError::Channels)?;
        let started = Instant::now();
        loop {
            let mut fds = [
                libc::pollfd { fd: self.channels.ctl.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.signals.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.channels.stdout.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.channels.stderr.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            match sys::fd::poll(&mut fds, 200) {
                Ok(_) | Err(libc::EINTR) => {}
                Err(e) => return Err(QemuError::Channels(io(e)).into()),
            }
            for (i, port) in [(3, &mut self.channels.stdout), (4, &mut self.channels.stderr)] {
                if fds[i].revents != 0 {
                    qemu::relay(port, &mut std::io::sink(), &mut self.buf);
                }
            }
            if fds[2].revents != 0 {
                return Err(HeldError::Session("stopped while the guest was starting".to_string()).into());
            }
            if fds[0].revents != 0 {
                let n = self.channels.ctl.read(&mut self.buf).unwrap_or(0);
                self.reader.push(&self.buf[..n]);
                while let Some(message) = self.reader.next_message().map_err(QemuError::from)? {
                    match message {
                        GuestMessage::Started => return Ok(()),
                        GuestMessage::Warning(w) => warn(&w),
                        GuestMessage::Failed(why) => return Err(QemuError::Guest(why).into()),
                        other => return Err(QemuError::BadMessage(format!("{other:?} before started")).into()),
                    }
                }
                if n == 0 {
                    return Err(QemuError::DidNotStart(qemu::console_tail(&self.console)).into());
                }
            }
            if fds[1].revents != 0 {
                return Err(QemuError::DidNotStart(qemu::console_tail(&self.console)).into());
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(QemuError::DidNotStart(format!(
                    "no answer after {}s; the console's last line: {}",
                    START_TIMEOUT.as_secs(),
                    qemu::console_tail(&self.console)
                ))
                .into());
            }
        }
    }

    /// Serves execs until the sandbox is stopped.
    fn serve(
        &mut self,
        listener: &UnixListener,
        pidfd: &OwnedFd,
        record: &Path,
        warn: &mut dyn FnMut(&str),
    ) -> Result<RunOutcome, VmError> {
        self.channels.stdin.set_nonblocking(true).map_err(QemuError::Channels)?;
        let mut fds = Vec::new();
        loop {
            let poll = |fd: RawFd, events: libc::c_short| libc::pollfd { fd, events, revents: 0 };
            fds.clear();
            fds.push(poll(self.signals.as_raw_fd(), libc::POLLIN));
            fds.push(poll(pidfd.as_raw_fd(), libc::POLLIN));
            // A new client while there is room for its session: else it waits in the listen queue.
            let room = self.sessions.len() + self.pending.len() < MAX_SESSIONS;
            fds.push(poll(if room { listener.as_raw_fd() } else { -1 }, libc::POLLIN));
            fds.push(poll(self.channels.ctl.as_raw_fd(), libc::POLLIN));
            // The output ports are always read: each session's share is bounded by its window.
            fds.push(poll(self.channels.stdout.as_raw_fd(), libc::POLLIN));
            fds.push(poll(self.channels.stderr.as_raw_fd(), libc::POLLIN));
            let stdin_port = if self.stdin_pending.is_empty() { -1 } else { self.channels.stdin.as_raw_fd() };
            fds.push(poll(stdin_port, libc::POLLOUT));
            // A session's input is read once the frames before it are out and its window has room.
            let input_room = self.stdin_pending.is_empty();
            for s in &self.sessions {
                let live = !s.gone;
                let client_out = |c: &ClientStream| if live && c.wants_write() { c.file.as_raw_fd() } else { -1 };
                fds.push(poll(if live { s.conn.as_raw_fd() } else { -1 }, libc::POLLIN));
                let input = s.input.as_ref().filter(|_| input_room && s.takes_input());
                fds.push(poll(input.map_or(-1, |f| f.as_raw_fd()), libc::POLLIN));
                fds.push(poll(client_out(&s.output), libc::POLLOUT));
                fds.push(poll(client_out(&s.errors), libc::POLLOUT));
            }
            for p in &self.pending {
                fds.push(poll(p.conn.as_raw_fd(), libc::POLLIN));
            }
            // Woken at the first pending client's deadline at the latest.
            let now = Instant::now();
            let timeout = self
                .pending
                .iter()
                .map(|p| p.deadline.saturating_duration_since(now).as_millis() as i32 + 1)
                .fold(1000, i32::min);
            match sys::fd::poll(&mut fds, timeout) {
                Ok(_) | Err(libc::EINTR) => {}
                Err(e) => return Err(QemuError::Channels(io(e)).into()),
            }
            if fds[0].revents != 0 {
                let signal = sys::signal::read_signal(self.signals.as_raw_fd());
                if signal.is_some() {
                    return Ok(RunOutcome::Exited(0));
                }
            }
            // The sandbox's record removed (`rm -rf` of its directory): nothing could find or stop it any more.
            if !record.exists() {
                warn("the sandbox's record was removed: stopping it");
                return Ok(RunOutcome::Exited(0));
            }
            // Output before messages: a command's last bytes and the end of its streams come before its outcome.
            if fds[4].revents != 0 {
                self.relay_output(true)?;
            }
            if fds[5].revents != 0 {
                self.relay_output(false)?;
            }
            if fds[3].revents != 0 {
                self.control(warn)?;
            }
            if fds[1].revents != 0 {
                let tail = qemu::console_tail(&self.console);
                warn(&format!("vm: the guest stopped: {tail}"));
                return Ok(RunOutcome::Exited(125));
            }
            if fds[6].revents != 0 {
                self.write_input();
            }
            let sessions_end = OWN_FDS + SESSION_FDS * self.sessions.len();
            let requests: Vec<bool> = fds[sessions_end..].iter().map(|f| f.revents != 0).collect();
            let ready: Vec<[bool; SESSION_FDS]> = fds[OWN_FDS..sessions_end]
                .chunks(SESSION_FDS)
                .map(|f| [f[0].revents != 0, f[1].revents != 0, f[2].revents != 0, f[3].revents != 0])
                .collect();
            let ids: Vec<u32> = self.sessions.iter().map(|s| s.id).collect();
            for (id, [client, input, output, errors]) in ids.into_iter().zip(ready) {
                if client {
                    self.client_readable(id)?;
                }
                if input {
                    self.read_input(id);
                }
                if let Some(s) = self.session(id) {
                    if output {
                        s.output.flush();
                    }
                    if errors {
                        s.errors.flush();
                    }
                }
            }
            self.advance_requests(&requests)?;
            if fds[2].revents != 0 {
                self.accept(listener)?;
            }
            self.give_room()?;
            // Sessions whose outcome can go: answered and forgotten.
            let mut i = 0;
            while i < self.sessions.len() {
                if self.sessions[i].finished() {
                    let mut session = self.sessions.remove(i);
                    if let Some(outcome) = session.outcome.take() {
                        session.reply(&outcome);
                    }
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Gives the guest room again for the output that has left the supervisor (to its client, or dropped), once
    /// there is enough of it to be worth a message, or the client has all it was sent.
    fn give_room(&mut self) -> Result<(), VmError> {
        let mut credits = Vec::new();
        for s in &mut self.sessions {
            let released = s.output.released + s.errors.released;
            let drained = s.output.pending.is_empty() && s.errors.pending.is_empty();
            if released >= OUTPUT_WINDOW / 4 || (released > 0 && drained) {
                let (stdout, stderr) = (s.output.released as u32, s.errors.released as u32);
                for stream in [&mut s.output, &mut s.errors] {
                    stream.outstanding = stream.outstanding.saturating_sub(stream.released);
                    stream.released = 0;
                }
                credits.push(HostMessage::Credit { session: s.id, stdout, stderr });
            }
        }
        for message in credits {
            self.tell_guest(&message)?;
        }
        Ok(())
    }

    /// A port's output frames, each to its session's client (a zero-length one ends that stream). The guest is
    /// not trusted: a frame that is not one, or more than a session's window, is an error that stops it.
    fn relay_output(&mut self, stdout: bool) -> Result<(), VmError> {
        let Held { channels, output_frames, errors_frames, buf, .. } = self;
        let (port, frames) =
            if stdout { (&mut channels.stdout, output_frames) } else { (&mut channels.stderr, errors_frames) };
        let n = match port.read(buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => 0,
            Err(e) => return Err(QemuError::Channels(e).into()),
        };
        frames.push(&buf[..n]);
        loop {
            let frames = if stdout { &mut self.output_frames } else { &mut self.errors_frames };
            let Some((id, bytes)) = frames.next_frame().map_err(|e| QemuError::BadMessage(format!("output: {e}")))?
            else {
                return Ok(());
            };
            // A session the supervisor has forgotten (its outcome went): nothing more is due from it.
            let Some(s) = self.session(id) else { continue };
            let (stream, ended) =
                if stdout { (&mut s.output, &mut s.output_ended) } else { (&mut s.errors, &mut s.errors_ended) };
            if bytes.is_empty() {
                *ended = true;
                continue;
            }
            if *ended || stream.outstanding + bytes.len() > OUTPUT_WINDOW {
                return Err(QemuError::BadMessage(format!(
                    "session {id}'s output past its end or its window of {OUTPUT_WINDOW} bytes"
                ))
                .into());
            }
            let _ = stream.write_all(&bytes);
            stream.flush();
        }
    }

    /// The guest's messages: a session's audit records and warnings go to its client, its outcome ends it (once
    /// its output is through); the room its command's input left.
    fn control(&mut self, warn: &mut dyn FnMut(&str)) -> Result<(), VmError> {
        let n = self.channels.ctl.read(&mut self.buf).unwrap_or(0);
        if n == 0 {
            // The guest closed its port: it is going; the pidfd says when it has gone.
            std::thread::sleep(Duration::from_millis(50));
            return Ok(());
        }
        self.reader.push(&self.buf[..n]);
        loop {
            let message = match self.reader.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.fail_sessions(&format!("vm: {e}"));
                    return Err(QemuError::from(e).into());
                }
            };
            match message {
                GuestMessage::Started => {}
                GuestMessage::Warning(w) => warn(&w),
                // The guest agent's own end (it failed): the pidfd says when the machine has gone.
                GuestMessage::Failed(why) => warn(&format!("vm: guest: {why}")),
                GuestMessage::InputTaken { session, bytes } => {
                    if let Some(s) = self.session(session) {
                        s.input_in_flight = s.input_in_flight.saturating_sub(bytes as usize);
                    }
                }
                GuestMessage::Of { session, message } => {
                    let message = *message;
                    // Checked here (a record the log cannot take ends the sessions), written by the client.
                    let bad = match &message {
                        GuestMessage::Audit(record) => record.clone().into_event().is_err(),
                        GuestMessage::Warning(_) => false,
                        outcome => !outcome.is_outcome(),
                    };
                    if bad {
                        self.fail_sessions("vm: the guest sent a message airlock does not take");
                        return Err(QemuError::BadMessage(format!("session {session}: {message:?}")).into());
                    }
                    let Some(s) = self.session(session) else { continue };
                    if message.is_outcome() {
                        s.input = None;
                        s.outcome = Some(message);
                    } else {
                        s.reply(&message);
                    }
                }
                other => {
                    self.fail_sessions("vm: the guest sent a message airlock does not take");
                    return Err(QemuError::BadMessage(format!("{other:?} from a held guest")).into());
                }
            }
        }
    }

    /// Every session ends with `why` (the guest broke the protocol and is stopped).
    fn fail_sessions(&mut self, why: &str) {
        for mut session in self.sessions.drain(..) {
            session.reply(&GuestMessage::Failed(why.to_string()));
        }
    }

    /// A client: accepted now, its request read as it comes ([`Held::advance_requests`]).
    fn accept(&mut self, listener: &UnixListener) -> Result<(), VmError> {
        let Ok(raw) = sys::socket::accept(listener.as_fd()) else { return Ok(()) };
        let conn = UnixStream::from(raw);
        if conn.set_nonblocking(true).is_err() {
            return Ok(());
        }
        self.pending.push(PendingClient::new(conn));
        // What has come with the connection already.
        let last = self.pending.len() - 1;
        let mut requests = vec![false; self.pending.len()];
        requests[last] = true;
        self.advance_requests(&requests)
    }

    /// Reads more of the pending clients' requests that are `readable`: a whole one starts its command in the
    /// guest, a bad one or one not whole by its deadline is refused with a line saying why.
    fn advance_requests(&mut self, readable: &[bool]) -> Result<(), VmError> {
        let now = Instant::now();
        let mut i = 0;
        let mut checked = 0;
        while i < self.pending.len() {
            let was_readable = readable.get(checked).copied().unwrap_or(false);
            checked += 1;
            let progress = if was_readable { self.pending[i].advance() } else { Ok(None) };
            let progress = match progress {
                Ok(None) if now >= self.pending[i].deadline => {
                    Err(format!("no whole request within {} s of connecting", REQUEST_TIMEOUT.as_secs()))
                }
                other => other,
            };
            match progress {
                Ok(None) => i += 1,
                Ok(Some((fds, request))) => {
                    let client = self.pending.remove(i);
                    self.start(client.conn, fds, request)?;
                }
                Err(why) => {
                    let client = self.pending.remove(i);
                    client.refuse(&why);
                }
            }
        }
        Ok(())
    }

    /// A client's whole request: its command starts in the guest, in a new session.
    fn start(&mut self, conn: UnixStream, fds: [OwnedFd; 3], request: ExecRequest) -> Result<(), VmError> {
        // The session's socket is read only when poll says so and written with a deadline.
        if conn.set_nonblocking(false).is_err() || conn.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
            return Ok(());
        }
        let id = self.next_session;
        self.next_session = self.next_session.wrapping_add(1).max(1);
        let files = request.files.is_some();
        let message = match request.files {
            Some(files) => HostMessage::Files { session: id, policy: Box::new(request.policy), request: files },
            None => HostMessage::Exec {
                session: id,
                policy: Box::new(request.policy),
                audit: request.audit,
                tty: request.tty,
            },
        };
        self.tell_guest(&message)?;
        let mut session = Session::new(id, conn, fds);
        if files {
            // A file operation's client times the guest from here (it may have waited its turn before).
            session.reply(&GuestMessage::Started);
        }
        self.sessions.push(session);
        Ok(())
    }

    /// The client's [`ClientMessage`]s (signals, `-t`'s resizes) go on to the guest; its end (it went away), or a
    /// line that is not one, cancels its command.
    fn client_readable(&mut self, id: u32) -> Result<(), VmError> {
        let Some(session) = self.session(id) else { return Ok(()) };
        let mut bytes = [0u8; 64];
        let n = match session.conn.read(&mut bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(_) => 0,
        };
        session.client_line.extend_from_slice(&bytes[..n]);
        let mut to_guest = Vec::new();
        let mut cancel = n == 0;
        while let Some(end) = session.client_line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = session.client_line.drain(..=end).collect();
            match serde_json::from_slice::<ClientMessage>(&line) {
                Ok(ClientMessage::Signal(signo)) if FORWARDED_SIGNALS.contains(&signo) => {
                    to_guest.push(HostMessage::Signal { session: session.id, signo })
                }
                Ok(ClientMessage::Resize { rows, cols }) => {
                    to_guest.push(HostMessage::Resize { session: session.id, rows, cols })
                }
                _ => cancel = true,
            }
        }
        cancel |= session.client_line.len() > MAX_CLIENT_LINE;
        if cancel {
            session.leave();
            to_guest.push(HostMessage::Cancel { session: session.id });
        }
        // Once the outcome is in, the command is gone: nothing more for the guest.
        if session.outcome.is_some() {
            return Ok(());
        }
        for message in to_guest {
            self.tell_guest(&message)?;
        }
        Ok(())
    }

    /// A frame of a session's input, queued for the stdin port (a zero-length one at its end).
    fn read_input(&mut self, id: u32) {
        let Held { sessions, stdin_pending, .. } = self;
        let Some(session) = sessions.iter_mut().find(|s| s.id == id) else { return };
        let Some(input) = session.input.as_mut() else { return };
        let mut chunk = vec![0u8; MAX_FRAME];
        match input.read(&mut chunk) {
            Ok(n) => {
                stdin_pending.extend(stream_frame(session.id, &chunk[..n]));
                session.input_in_flight += n;
                // A zero-length frame is the end of input.
                if n == 0 {
                    session.input = None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                stdin_pending.extend(stream_frame(session.id, &[]));
                session.input = None;
            }
        }
        self.write_input();
    }

    fn write_input(&mut self) {
        while !self.stdin_pending.is_empty() {
            match self.channels.stdin.write(&self.stdin_pending) {
                Ok(n) => {
                    self.stdin_pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// A client that has connected but not yet sent all of its request: its three descriptors, then its request line
/// (bounded), read as they arrive on its non-blocking socket, never waited for, so that a client that connects and
/// sends nothing holds no one but itself, until [`REQUEST_TIMEOUT`] after it connected.
struct PendingClient {
    conn: UnixStream,
    fds: Vec<OwnedFd>,
    line: Vec<u8>,
    deadline: Instant,
}

impl PendingClient {
    fn new(conn: UnixStream) -> PendingClient {
        PendingClient { conn, fds: Vec::new(), line: Vec::new(), deadline: Instant::now() + REQUEST_TIMEOUT }
    }

    /// What has arrived: `None` while the request is not whole.
    fn advance(&mut self) -> Result<Option<([OwnedFd; 3], ExecRequest)>, String> {
        while self.fds.len() < 3 {
            match sys::socket::recv_fd(self.conn.as_raw_fd()) {
                Ok(Some(fd)) => self.fds.push(fd),
                Err(libc::EAGAIN) => return Ok(None),
                _ => return Err("a request without its three standard streams".to_string()),
            }
        }
        // A byte at a time: what follows the line is the client's messages, for its session.
        let mut byte = [0u8; 1];
        loop {
            match (&self.conn).read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) if (self.line.len() as u64) < MAX_REQUEST_BYTES => self.line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => return Err("a request cut short or too long".to_string()),
            }
        }
        let request: ExecRequest = serde_json::from_slice(&self.line).map_err(|e| format!("a bad request: {e}"))?;
        let [a, b, c]: [OwnedFd; 3] =
            std::mem::take(&mut self.fds).try_into().map_err(|_| "three descriptors".to_string())?;
        Ok(Some(([a, b, c], request)))
    }

    /// Tells the client why its request is refused (if its socket takes the line now), and hangs up.
    fn refuse(self, why: &str) {
        let mut line = serde_json::to_vec(&GuestMessage::Failed(format!("vm: {why}"))).unwrap_or_default();
        line.push(b'\n');
        let _ = (&self.conn).write(&line);
    }
}

/// The guest's view of an exec's policy: a `cow` workspace is its merged view, exported read-write.
pub(super) fn guest_policy(policy: &SandboxPolicy) -> SandboxPolicy {
    let mut policy = policy.clone();
    if let Some(w) = policy.workspace.as_mut().filter(|w| w.mode == WorkspaceMode::Cow) {
        w.mode = WorkspaceMode::Rw;
    }
    policy
}

/// `airlock exec` into a held VM: the [`crate::backend::Backend`] whose `exec` talks to the supervisor's socket.
#[derive(Debug, Clone)]
pub struct HeldVm {
    /// `vm.sock` in the sandbox's directory.
    pub socket: PathBuf,
}

impl HeldVm {
    /// Runs `policy.command` in the held guest with this process's standard streams, to its end.
    pub fn exec_in_vm(
        &self,
        policy: &SandboxPolicy,
        tty: Option<libc::winsize>,
        warn: &mut dyn FnMut(&str),
        audit: Option<AuditRequest<'_>>,
    ) -> Result<RunOutcome, VmError> {
        let mut conn = UnixStream::connect(&self.socket)
            .map_err(|source| HeldError::Connect { path: self.socket.clone(), source })?;
        for fd in 0..3 {
            sys::socket::send_fd(conn.as_raw_fd(), fd).map_err(|e| HeldError::Send(io(e)))?;
        }
        let mut audit = audit.filter(|a| a.notify.any());
        let request = ExecRequest {
            policy: guest_policy(policy),
            audit: audit.as_ref().map(|a| a.notify.into()),
            tty: tty.map(|w| (w.ws_row, w.ws_col)),
            files: None,
        };
        // `-t`: the terminal in the guest does the line discipline; ours passes every key as it comes (restored
        // however this ends).
        let _raw = tty.and_then(|_| RawTerminal::enter());
        let mut line = serde_json::to_vec(&request).map_err(|e| HeldError::Send(std::io::Error::other(e)))?;
        line.push(b'\n');
        conn.write_all(&line).map_err(HeldError::Send)?;
        // The signals a user sends `airlock exec` are the command's, as for an exec into a namespace sandbox:
        // blocked here (the mask is put back however this ends), read from a signalfd and sent on.
        let signals = BlockedSignals::new()?;
        let mut reader = ControlReader::default();
        let mut buf = vec![0u8; 64 * 1024];
        let outcome = loop {
            let mut fds = [
                libc::pollfd { fd: conn.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: signals.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            match sys::fd::poll(&mut fds, -1) {
                Ok(_) | Err(libc::EINTR) => {}
                Err(e) => return Err(HeldError::Send(io(e)).into()),
            }
            if fds[1].revents != 0 {
                if let Some(signo) = sys::signal::read_signal(signals.fd.as_raw_fd()) {
                    let message = match (signo, tty) {
                        // `-t`: the terminal's new size for the command's terminal (which signals it).
                        (libc::SIGWINCH, Some(_)) => sys::terminal::window_size(std::io::stdin().as_fd())
                            .ok()
                            .map(|w| ClientMessage::Resize { rows: w.ws_row, cols: w.ws_col }),
                        (signo, _) => Some(ClientMessage::Signal(signo)),
                    };
                    if let Some(message) = message {
                        let mut line =
                            serde_json::to_vec(&message).map_err(|e| HeldError::Send(std::io::Error::other(e)))?;
                        line.push(b'\n');
                        // A supervisor that is gone says so on the read below.
                        let _ = conn.write_all(&line);
                    }
                }
            }
            if fds[0].revents == 0 {
                continue;
            }
            let n = match conn.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                break Err(HeldError::NoOutcome.into());
            }
            reader.push(&buf[..n]);
            let mut done = None;
            while let Some(message) = reader.next_message().map_err(QemuError::from)? {
                match message {
                    GuestMessage::Audit(record) => {
                        let event = record.into_event().map_err(QemuError::BadAuditRecord)?;
                        match audit.as_mut() {
                            Some(a) => a.sink.record(event),
                            None => {
                                return Err(
                                    QemuError::BadMessage("an audit record, but the exec has no audit".into()).into()
                                )
                            }
                        }
                    }
                    GuestMessage::Warning(w) => warn(&w),
                    GuestMessage::Started => {}
                    GuestMessage::Failed(why) => {
                        done = Some(Err(HeldError::Session(why.trim_start_matches("vm: ").to_string()).into()));
                        break;
                    }
                    GuestMessage::Exited(code) => done = Some(Ok(RunOutcome::Exited(code))),
                    GuestMessage::TimedOut { millis } => {
                        done = Some(Ok(RunOutcome::TimedOut(Duration::from_millis(millis))))
                    }
                    GuestMessage::ExecFailed { code, message } => {
                        done = Some(Ok(RunOutcome::ExecFailed { code, message }))
                    }
                    GuestMessage::OutOfMemory { summary } => done = Some(Ok(RunOutcome::OutOfMemory { summary })),
                    // The supervisor passes a session's messages on unwrapped.
                    other @ (GuestMessage::Of { .. } | GuestMessage::InputTaken { .. }) => {
                        return Err(QemuError::BadMessage(format!("{other:?} from the supervisor")).into());
                    }
                }
                if done.is_some() {
                    break;
                }
            }
            if let Some(done) = done {
                break done;
            }
        };
        if let Some(a) = audit {
            a.sink.flush();
        }
        outcome
    }
}

/// Signals blocked in this thread and read from `fd`, until dropped (the mask put back).
pub(super) struct BlockedSignals {
    pub(super) fd: OwnedFd,
    mask: sys::signal::SignalMask,
}

impl BlockedSignals {
    /// [`FORWARDED_SIGNALS`], for `exec`.
    fn new() -> Result<BlockedSignals, HeldError> {
        BlockedSignals::only(FORWARDED_SIGNALS).map_err(HeldError::ForwardSignals)
    }

    /// `signals` only: the others act as they did.
    pub(super) fn only(signals: &[i32]) -> std::io::Result<BlockedSignals> {
        let mask = sys::signal::block_all();
        sys::signal::set_mask(&mask);
        if let Err(e) = sys::signal::block(signals) {
            return Err(io(e));
        }
        match sys::signal::signalfd(signals) {
            Ok(fd) => Ok(BlockedSignals { fd, mask }),
            Err(e) => {
                sys::signal::set_mask(&mask);
                Err(io(e))
            }
        }
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        sys::signal::set_mask(&self.mask);
    }
}

/// This process's standard input, a terminal, in raw mode until dropped.
pub(super) struct RawTerminal(libc::termios);

impl RawTerminal {
    pub(super) fn enter() -> Option<RawTerminal> {
        let stdin = std::io::stdin();
        if !sys::terminal::is_terminal(stdin.as_fd()) {
            return None;
        }
        let saved = sys::terminal::attributes(stdin.as_fd()).ok()?;
        sys::terminal::set_attributes(stdin.as_fd(), &sys::terminal::raw(&saved)).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = sys::terminal::set_attributes(std::io::stdin().as_fd(), &self.0);
    }
}

impl crate::backend::Backend for HeldVm {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn run(
        &self,
        _policy: &SandboxPolicy,
        _host: &HostContext,
        _warn: &mut dyn FnMut(&str),
        _audit: Option<AuditRequest<'_>>,
    ) -> Result<(RunOutcome, RunReport), crate::backend::BackendError> {
        Err(VmError::Unsupported("run on a held VM".to_string()).into())
    }

    fn run_held(
        &self,
        _policy: &SandboxPolicy,
        _host: &HostContext,
        _warn: &mut dyn FnMut(&str),
        _on_ready: &mut dyn FnMut(libc::pid_t),
    ) -> Result<(RunOutcome, RunReport), crate::backend::BackendError> {
        Err(VmError::Unsupported("create on a held VM".to_string()).into())
    }

    fn exec(
        &self,
        policy: &SandboxPolicy,
        host: &HostContext,
        _target: &RunningSandbox,
        warn: &mut dyn FnMut(&str),
        audit: Option<AuditRequest<'_>>,
    ) -> Result<RunOutcome, crate::backend::BackendError> {
        Ok(self.exec_in_vm(policy, host.tty, warn, audit)?)
    }

    fn serve_exec_agent(
        &self,
        _policy: &SandboxPolicy,
        _host: &HostContext,
        _target: &RunningSandbox,
        _audit: Option<AuditRequest<'_>>,
        _listener: OwnedFd,
        _socket: &runtime::agent::AgentSocket,
    ) -> Result<RunOutcome, crate::backend::BackendError> {
        Err(VmError::Unsupported("the exec agent (airlock serve)".to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive_and_a_long_one_is_refused() {
        let mut bytes = stream_frame(7, b"hello");
        bytes.extend(stream_frame(8, b""));
        let mut frames = StreamFrames::default();
        for chunk in bytes.chunks(3) {
            frames.push(chunk);
        }
        assert_eq!(frames.next_frame(), Ok(Some((7, b"hello".to_vec()))));
        assert_eq!(frames.next_frame(), Ok(Some((8, Vec::new()))));
        assert_eq!(frames.next_frame(), Ok(None));
        let mut frames = StreamFrames::default();
        let mut long = 1u32.to_le_bytes().to_vec();
        long.extend(((MAX_FRAME + 1) as u32).to_le_bytes());
        frames.push(&long);
        assert_eq!(frames.next_frame(), Err(FrameTooLong(MAX_FRAME + 1)));
    }

    fn file_pair() -> (std::fs::File, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (std::fs::File::from(OwnedFd::from(a)), b)
    }

    /// A request line for `command`, as `airlock exec` sends it after its three streams.
    fn request_line(command: &str) -> Vec<u8> {
        let invoker = policy::profile::Invoker { uid: 0, gid: 0, is_root: true, env: Vec::new(), user_name: None };
        let policy = policy::profile::resolve(&Default::default(), vec![command.to_string()], &invoker).unwrap();
        let request = ExecRequest { policy, audit: None, tty: None, files: None };
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        line
    }

    /// `client`'s whole request.
    fn send_request(client: &UnixStream, command: &str) {
        for _ in 0..3 {
            sys::socket::send_fd(client.as_raw_fd(), 0).unwrap();
        }
        (&*client).write_all(&request_line(command)).unwrap();
    }

    /// The line a refused client gets.
    fn refusal(client: &mut UnixStream) -> String {
        let mut line = String::new();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::BufReader::new(client).read_line(&mut line).unwrap();
        match serde_json::from_str(&line) {
            Ok(GuestMessage::Failed(why)) => why,
            other => panic!("not a refusal: {line:?} ({other:?})"),
        }
    }

    fn pending(conn: UnixStream) -> PendingClient {
        conn.set_nonblocking(true).unwrap();
        PendingClient::new(conn)
    }

    #[test]
    fn a_request_without_its_streams_or_with_garbage_is_refused_and_one_in_parts_is_waited_for() {
        let (server, client) = UnixStream::pair().unwrap();
        (&client).write_all(b"{}\n").unwrap();
        assert!(pending(server).advance().is_err());

        let (server, client) = UnixStream::pair().unwrap();
        for _ in 0..3 {
            sys::socket::send_fd(client.as_raw_fd(), 0).unwrap();
        }
        (&client).write_all(b"not json\n").unwrap();
        assert!(pending(server).advance().unwrap_err().starts_with("a bad request"));

        // In parts: nothing is waited for, each part is taken as it comes.
        let (server, client) = UnixStream::pair().unwrap();
        let mut server = pending(server);
        assert!(matches!(server.advance(), Ok(None)));
        sys::socket::send_fd(client.as_raw_fd(), 0).unwrap();
        assert!(matches!(server.advance(), Ok(None)));
        sys::socket::send_fd(client.as_raw_fd(), 0).unwrap();
        sys::socket::send_fd(client.as_raw_fd(), 0).unwrap();
        assert!(matches!(server.advance(), Ok(None)));
        let line = request_line("printf");
        (&client).write_all(&line[..line.len() / 2]).unwrap();
        assert!(matches!(server.advance(), Ok(None)));
        (&client).write_all(&line[line.len() / 2..]).unwrap();
        match server.advance() {
            Ok(Some((_, request))) => assert_eq!(request.policy.command, ["printf"]),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // A client that hangs up part-way.
        let (server, client) = UnixStream::pair().unwrap();
        let mut server = pending(server);
        sys::socket::send_fd(client.as_raw_fd(), 0).unwrap();
        drop(client);
        assert!(server.advance().is_err());
    }

    #[test]
    fn a_client_that_sends_nothing_holds_no_one_and_is_refused_at_its_deadline() {
        let (mut held, guest, _client, _keep) = held_with_a_session(1);
        let dir = std::env::temp_dir().join(format!("airlock-held-test-{}-listen", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("vm.sock")).unwrap();
        // One connects and says nothing; the next sends its request: its command starts at once.
        let mut silent = UnixStream::connect(dir.join("vm.sock")).unwrap();
        held.accept(&listener).unwrap();
        let talker = UnixStream::connect(dir.join("vm.sock")).unwrap();
        send_request(&talker, "echo");
        held.accept(&listener).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(held.pending.len(), 1, "the silent client waits, alone");
        assert_eq!(held.sessions.len(), 2);
        let mut told = String::new();
        guest.ctl.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::BufReader::new(&guest.ctl).read_line(&mut told).unwrap();
        match serde_json::from_str(&told).unwrap() {
            HostMessage::Exec { session: 2, policy, .. } => assert_eq!(policy.command, ["echo"]),
            other => panic!("{other:?}"),
        }
        // Past its deadline, the silent one is told why and let go.
        held.pending[0].deadline = Instant::now();
        held.advance_requests(&[false]).unwrap();
        assert!(held.pending.is_empty());
        assert!(refusal(&mut silent).contains("no whole request within 5 s"));
    }

    /// What a [`Held`] with session `id` under way needs kept open besides it: the guest's end of the stdin port
    /// and the client's output and error readers.
    type Kept = (UnixStream, UnixStream, UnixStream);

    /// The guest's ends of a [`Held`]'s control, stdout and stderr ports.
    struct Guest {
        ctl: UnixStream,
        stdout: UnixStream,
        stderr: UnixStream,
    }

    /// A [`Held`] whose session `id` is under way (no QEMU: the guest's ports and the client's socket are the
    /// test's), the guest's ends, the client's end, and what must stay open.
    fn held_with_a_session(id: u32) -> (Held, Guest, UnixStream, Kept) {
        let (ctl, guest_ctl) = UnixStream::pair().unwrap();
        let (stdin, guest_stdin) = UnixStream::pair().unwrap();
        let (stdout, guest_stdout) = UnixStream::pair().unwrap();
        let (stderr, guest_stderr) = UnixStream::pair().unwrap();
        let console_path = std::env::temp_dir().join(format!("airlock-held-test-{}-{id}", std::process::id()));
        let console = std::fs::File::create(&console_path).unwrap();
        let _ = std::fs::remove_file(&console_path);
        let (conn, client) = UnixStream::pair().unwrap();
        let (output, out) = file_pair();
        let (errors, err) = file_pair();
        let (input, _) = file_pair();
        let mut held = Held::new(
            qemu::Channels { ctl, stdin, stdout, stderr },
            console,
            sys::signal::signalfd(&[libc::SIGUSR2]).unwrap(),
        );
        let mut session = Session::new(id, conn, [input.into(), output.into(), errors.into()]);
        session.input = None;
        held.sessions.push(session);
        held.next_session = id + 1;
        let guest = Guest { ctl: guest_ctl, stdout: guest_stdout, stderr: guest_stderr };
        (held, guest, client, (guest_stdin, out, err))
    }

    #[test]
    fn a_guest_that_breaks_the_protocol_ends_the_session_with_a_vm_error() {
        let (mut held, mut guest, mut client, _keep) = held_with_a_session(1);
        guest.ctl.write_all(b"\"started\"\n{\"exited\": \"not a number\"}\n").unwrap();
        let ended = held.control(&mut |_| {});
        assert!(matches!(ended, Err(VmError::Qemu(QemuError::Control(_)))), "{ended:?}");
        assert!(held.sessions.is_empty());
        drop(held);
        let mut said = String::new();
        client.read_to_string(&mut said).unwrap();
        let message: GuestMessage = serde_json::from_str(said.trim()).unwrap();
        assert!(matches!(&message, GuestMessage::Failed(why) if why.starts_with("vm: the guest sent")), "{said}");
    }

    #[test]
    fn each_sessions_output_goes_to_its_client_and_its_outcome_waits_for_the_end_of_its_streams() {
        let (mut held, mut guest, mut client, (_stdin, mut out, mut err)) = held_with_a_session(5);
        // A second session, whose client is gone: its output is dropped, and given back as room.
        let (conn, _) = UnixStream::pair().unwrap();
        let (o, _) = file_pair();
        let (e, _) = file_pair();
        let (i, _) = file_pair();
        let mut other = Session::new(6, conn, [i.into(), o.into(), e.into()]);
        other.leave();
        held.sessions.push(other);

        guest.stdout.write_all(&stream_frame(5, b"out of 5\n")).unwrap();
        guest.stdout.write_all(&stream_frame(6, b"out of 6\n")).unwrap();
        guest.stderr.write_all(&stream_frame(5, b"err of 5\n")).unwrap();
        held.relay_output(true).unwrap();
        held.relay_output(false).unwrap();
        // The outcome first arrives before the streams' ends: held back.
        let outcome = GuestMessage::Of { session: 5, message: Box::new(GuestMessage::Exited(3)) };
        guest.ctl.write_all(format!("{}\n", serde_json::to_string(&outcome).unwrap()).as_bytes()).unwrap();
        held.control(&mut |_| {}).unwrap();
        assert!(!held.sessions[0].finished(), "the outcome went before the end of the output");
        guest.stdout.write_all(&stream_frame(5, b"")).unwrap();
        guest.stderr.write_all(&stream_frame(5, b"")).unwrap();
        held.relay_output(true).unwrap();
        held.relay_output(false).unwrap();
        assert!(held.sessions[0].finished());
        // Room given back: what reached session 5's client, and session 6's dropped bytes.
        held.give_room().unwrap();
        let mut lines = std::io::BufReader::new(guest.ctl.try_clone().unwrap());
        let mut credits = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
            credits.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
        }
        assert_eq!(
            credits,
            [
                serde_json::json!({"credit": {"session": 5, "stdout": 9, "stderr": 9}}),
                serde_json::json!({"credit": {"session": 6, "stdout": 9, "stderr": 0}}),
            ]
        );
        drop(held);
        let (mut o, mut e, mut said) = (String::new(), String::new(), String::new());
        out.read_to_string(&mut o).unwrap();
        err.read_to_string(&mut e).unwrap();
        client.read_to_string(&mut said).unwrap();
        assert_eq!((o.as_str(), e.as_str()), ("out of 5\n", "err of 5\n"));
        let _ = said;
    }

    #[test]
    fn a_guest_that_sends_past_a_sessions_window_is_refused() {
        let (mut held, mut guest, _client, _keep) = held_with_a_session(2);
        // The client does not read: the window fills (pipes hold less than it), then one byte more is refused.
        let chunk = vec![b'x'; MAX_FRAME];
        let writer = std::thread::spawn(move || {
            for _ in 0..OUTPUT_WINDOW / MAX_FRAME {
                guest.stdout.write_all(&stream_frame(2, &chunk)).unwrap();
            }
            guest.stdout.write_all(&stream_frame(2, b"y")).unwrap();
            guest
        });
        let refused = loop {
            if let Err(e) = held.relay_output(true) {
                break e;
            }
        };
        assert!(matches!(&refused, VmError::Qemu(QemuError::BadMessage(m)) if m.contains("window")), "{refused:?}");
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_client_that_does_not_read_never_blocks_a_write() {
        let (reader, writer) = sys::fd::pipe_cloexec().unwrap();
        let mut stream = ClientStream::new(std::fs::File::from(writer));
        // More than the pipe holds: what it takes goes in, the rest waits, nothing blocks.
        stream.write_all(&vec![7u8; 256 * 1024]).unwrap();
        Write::flush(&mut stream).unwrap();
        assert!(stream.wants_write() && stream.pending.len() < 256 * 1024, "{}", stream.pending.len());
        assert_eq!(stream.released + stream.pending.len(), 256 * 1024);
        // The reader gone: the rest is dropped (as released), and more is taken (and dropped) at once.
        drop(reader);
        stream.flush();
        assert!(stream.closed && !stream.wants_write());
        stream.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(stream.released, 256 * 1024 + 3);
    }

    #[test]
    fn a_clients_signals_and_resizes_go_to_the_guest_and_anything_else_cancels() {
        let (mut held, guest, mut client, _keep) = held_with_a_session(4);
        let mut lines = std::io::BufReader::new(guest.ctl);
        let mut said = |held: &mut Held, line: &[u8]| {
            client.write_all(line).unwrap();
            held.client_readable(4).unwrap();
            let mut got = String::new();
            std::io::BufRead::read_line(&mut lines, &mut got).unwrap();
            serde_json::from_str::<serde_json::Value>(&got).unwrap()
        };
        assert_eq!(said(&mut held, b"{\"signal\":2}\n"), serde_json::json!({"signal": {"session": 4, "signo": 2}}));
        assert_eq!(
            said(&mut held, b"{\"resize\":{\"rows\":50,\"cols\":120}}\n"),
            serde_json::json!({"resize": {"session": 4, "rows": 50, "cols": 120}})
        );
        // A signal exec does not forward (SIGKILL) is not a client's: the command is cancelled.
        assert_eq!(said(&mut held, b"{\"signal\":9}\n"), serde_json::json!({"cancel": {"session": 4}}));
        assert!(held.sessions[0].gone);
    }
}
