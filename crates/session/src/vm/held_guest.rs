//! The guest agent of a held guest (`airlock create --isolation vm`, see `held`): the sandbox is set up held by
//! its init in a child of the agent, then each [`HostMessage::Exec`] runs in a child of its own joined to it
//! (`runtime::attach::exec_in_sandbox`: the sandbox's protections, the command's own timeout), several at once.
//! A process per command feeds its input (the frames of its session, which the agent passes on) and sends its
//! messages and outcome (exactly one a command) to the agent through pipes; the agent shares the ports among the
//! sessions: their output in frames tagged by session within the host's window, their messages wrapped with
//! their session, each session's streams ended before its outcome is sent.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use runtime::attach::RunningSandbox;
use runtime::prepare::HostContext;
use runtime::sandbox::RunOutcome;

use super::guest::{console, open_port, send, PortSink};
use super::held::{stream_frame, HostMessage, StreamFrames, FORWARDED_SIGNALS, FRAME_HEADER, MAX_FRAME};
use super::protocol::{GuestMessage, GuestRequest, PORT_STDERR, PORT_STDIN, PORT_STDOUT};

/// How long a cancelled command has to end after its hangup.
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn host_context(request: &GuestRequest, hold: bool) -> HostContext {
    HostContext {
        lock_dir: PathBuf::from("/run/airlock/id-ranges"),
        tty: None,
        name: request.name.clone(),
        layer: None,
        hold,
        gateway: None,
        root_layer: None,
        joining: !hold,
        watch_state: None,
        in_vm_guest: true,
        vm_id_base: request.id_base,
        cgroup_accounting: runtime::cgroups::Accounting::Full,
    }
}

/// One command being served: the process that runs it (`Exec::run` in a child of the agent) and the pipes
/// between that process and the agent, which shares the ports among the sessions.
struct GuestSession {
    id: u32,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// The host's lines for this session (signals, resizes, a cancel), to the serving process.
    lines_to: std::fs::File,
    /// The serving process's messages (warnings, audit records, then the outcome), one a line, until its end.
    messages: Option<std::fs::File>,
    message_bytes: Vec<u8>,
    /// The command's stdout and stderr, read as far as the host's window allows, until their end.
    output: Option<std::fs::File>,
    errors: Option<std::fs::File>,
    output_room: usize,
    errors_room: usize,
    /// The input frames for the serving process, and how much of the first is written.
    input: Option<std::fs::File>,
    input_frames: std::collections::VecDeque<Vec<u8>>,
    input_written: usize,
    /// Input bytes the serving process took, not yet reported to the host.
    input_taken: u32,
    /// The serving process has ended (its outcome is the last of its messages).
    exited: bool,
    outcome: Option<GuestMessage>,
}

/// Most bytes of one session's messages the agent holds while a line is not whole (a record is bounded far
/// below; see `protocol::MAX_MESSAGE_BYTES`).
const MAX_MESSAGE_LINE: usize = super::protocol::MAX_MESSAGE_BYTES;

/// Sets the held sandbox up, says `started`, and runs the host's commands until the host goes, several at once:
/// each in a process of its own, their input, output and messages sharing the ports tagged by session.
pub(super) fn serve(request: &GuestRequest, control: &mut std::fs::File) -> Result<GuestMessage, String> {
    let mut input_port = open_port(PORT_STDIN, false)?;
    let mut output_port = open_port(PORT_STDOUT, true)?;
    let mut error_port = open_port(PORT_STDERR, true)?;
    let target = hold(request, control)?;
    send(control, &GuestMessage::Started).map_err(|e| format!("control port: {e}"))?;
    let mut lines = Lines { pending: Vec::new() };
    let mut frames = StreamFrames::default();
    let mut sessions: Vec<GuestSession> = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; MAX_FRAME + FRAME_HEADER];
    loop {
        let poll = |fd: libc::c_int, events: libc::c_short| libc::pollfd { fd, events, revents: 0 };
        fds.clear();
        fds.push(poll(control.as_raw_fd(), libc::POLLIN));
        fds.push(poll(input_port.as_raw_fd(), libc::POLLIN));
        let raw = |f: &Option<std::fs::File>| f.as_ref().map_or(-1, |f| f.as_raw_fd());
        for s in &sessions {
            fds.push(poll(s.pidfd.as_raw_fd(), libc::POLLIN));
            fds.push(poll(raw(&s.messages), libc::POLLIN));
            fds.push(poll(if s.output_room > 0 { raw(&s.output) } else { -1 }, libc::POLLIN));
            fds.push(poll(if s.errors_room > 0 { raw(&s.errors) } else { -1 }, libc::POLLIN));
            fds.push(poll(if s.input_frames.is_empty() { -1 } else { raw(&s.input) }, libc::POLLOUT));
        }
        // Woken once a second to reap the processes of an exec left to this init (PID 1) by a parent that was
        // killed, so that they are not kept as zombies for the machine's life.
        match sys::fd::poll(&mut fds, 1000) {
            Ok(_) | Err(libc::EINTR) => {}
            Err(e) => return Err(format!("poll: errno {e}")),
        }
        while matches!(sys::wait::waitpid(-1, libc::WNOHANG), Ok((reaped, _)) if reaped > 0) {}
        if fds[0].revents != 0 {
            if !lines.fill(control)? {
                // The host closed the port: it is gone.
                return Ok(GuestMessage::Exited(0));
            }
            while let Some(line) = lines.take_line() {
                let message: HostMessage = match serde_json::from_slice(&line) {
                    Ok(m) => m,
                    Err(e) => return Err(format!("bad message from the host: {e}")),
                };
                host_message(request, &target, &mut sessions, message, &line)?;
            }
        }
        if fds[1].revents != 0 {
            match input_port.read(&mut buf) {
                Ok(n) if n > 0 => frames.push(&buf[..n]),
                _ => {}
            }
            // Whole frames, each to its session's process (which writes them to its command); a session that
            // has ended has none.
            while let Some((id, bytes)) = frames.next_frame().map_err(|e| format!("stdin port: {e}"))? {
                if let Some(s) = sessions.iter_mut().find(|s| s.id == id && s.input.is_some()) {
                    s.input_frames.push_back(stream_frame(id, &bytes));
                }
            }
        }
        let ready: Vec<[bool; 5]> = fds[2..]
            .chunks(5)
            .map(|f| [f[0].revents != 0, f[1].revents != 0, f[2].revents != 0, f[3].revents != 0, f[4].revents != 0])
            .collect();
        for (s, [ended, messages, output, errors, input]) in sessions.iter_mut().zip(ready) {
            if ended {
                // (Not blocking: the loop above may have reaped it already.)
                let _ = sys::wait::waitpid(s.pid, libc::WNOHANG);
                s.exited = true;
            }
            if messages || (s.exited && s.messages.is_some()) {
                s.read_messages(control)?;
            }
            if output {
                s.pump(true, &mut output_port, &mut buf)?;
            }
            if errors {
                s.pump(false, &mut error_port, &mut buf)?;
            }
            if input || !s.input_frames.is_empty() {
                s.write_input();
            }
            if s.input_taken > 0 {
                let bytes = std::mem::take(&mut s.input_taken);
                send(control, &GuestMessage::InputTaken { session: s.id, bytes })
                    .map_err(|e| format!("control port: {e}"))?;
            }
        }
        // Sessions whose process has ended and whose output is all sent: the end of each stream, then the
        // outcome (the host passes it on once the streams' ends are in), and forgotten.
        let mut i = 0;
        while i < sessions.len() {
            let s = &mut sessions[i];
            if s.exited && s.messages.is_none() {
                // What the command wrote before it ended is in the pipes: sent as the window allows; a
                // process it left behind that writes on is cut off at the first empty read.
                s.pump(true, &mut output_port, &mut buf)?;
                s.pump(false, &mut error_port, &mut buf)?;
            }
            if s.exited && s.messages.is_none() && s.output.is_none() && s.errors.is_none() {
                let s = sessions.remove(i);
                output_port.write_all(&stream_frame(s.id, &[])).map_err(|e| format!("stdout port: {e}"))?;
                error_port.write_all(&stream_frame(s.id, &[])).map_err(|e| format!("stderr port: {e}"))?;
                let outcome = s.outcome.unwrap_or_else(|| {
                    GuestMessage::Failed("the command's process ended without its outcome (cancelled?)".to_string())
                });
                send(control, &GuestMessage::Of { session: s.id, message: Box::new(outcome) })
                    .map_err(|e| format!("control port: {e}"))?;
            } else {
                i += 1;
            }
        }
    }
}

/// A line from the host: a command to start, or one for a running command's process.
fn host_message(
    request: &GuestRequest,
    target: &RunningSandbox,
    sessions: &mut Vec<GuestSession>,
    message: HostMessage,
    line: &[u8],
) -> Result<(), String> {
    let (session, policy, audit, tty, files) = match message {
        HostMessage::Exec { session, policy, audit, tty } => (session, policy, audit, tty, None),
        // A file operation: run as a command is (its input, output and outcome the same way), by a child that
        // enters the sandbox as its user instead of starting a command (`super::files::in_guest`).
        HostMessage::Files { session, policy, request: files } => (session, policy, None, None, Some(files)),
        HostMessage::Credit { session, stdout, stderr } => {
            if let Some(s) = sessions.iter_mut().find(|s| s.id == session) {
                s.output_room += stdout as usize;
                s.errors_room += stderr as usize;
            }
            return Ok(());
        }
        HostMessage::Signal { session, .. } | HostMessage::Resize { session, .. } | HostMessage::Cancel { session } => {
            // To the session's process (a command that has ended has none): a few bytes into an empty pipe.
            if let Some(s) = sessions.iter_mut().find(|s| s.id == session) {
                let mut line = line.to_vec();
                line.push(b'\n');
                let _ = s.lines_to.write_all(&line);
            }
            return Ok(());
        }
    };
    let session = start_session(request, target, sessions, session, &policy, audit, tty, files)?;
    sessions.push(session);
    Ok(())
}

/// Forks the process that runs one command, with the pipes it and the agent share.
#[allow(clippy::too_many_arguments)]
fn start_session(
    request: &GuestRequest,
    target: &RunningSandbox,
    sessions: &mut Vec<GuestSession>,
    id: u32,
    policy: &policy::sandbox::SandboxPolicy,
    audit: Option<super::protocol::AuditNotify>,
    tty: Option<(u16, u16)>,
    files: Option<crate::files::FileRequest>,
) -> Result<GuestSession, String> {
    let pipe = || sys::fd::pipe_cloexec().map_err(|e| format!("cannot create a command's pipes: errno {e}"));
    let (lines_read, lines_write) = pipe()?;
    let (messages_read, messages_write) = pipe()?;
    let (output_read, output_write) = pipe()?;
    let (errors_read, errors_write) = pipe()?;
    let (input_read, input_write) = pipe()?;
    match sys::process::fork().map_err(|e| format!("cannot fork a command's process: errno {e}"))? {
        sys::process::Forked::Child => {
            // This process is single-threaded (the agent is): it may allocate after the fork. The other
            // sessions' pipes are theirs: closed here.
            sessions.clear();
            drop((lines_write, messages_read, output_read, errors_read, input_write));
            let (output, errors) = (std::fs::File::from(output_write), std::fs::File::from(errors_write));
            let exec = Exec { request, target, session: id, tty, output: &output, errors: &errors, files };
            let mut control_in = std::fs::File::from(lines_read);
            let mut control_out = std::fs::File::from(messages_write);
            let mut input = std::fs::File::from(input_read);
            let mut lines = Lines { pending: Vec::new() };
            let outcome = exec.run(policy, audit, &mut control_in, &control_out, &mut input, &mut lines);
            drop((output, errors));
            let code = i32::from(send(&mut control_out, &outcome).is_err());
            sys::process::exit_immediately(code)
        }
        sys::process::Forked::Parent(pid) => {
            drop((lines_read, messages_write, output_write, errors_write, input_read));
            let pidfd = sys::process::pidfd_open(pid).map_err(|e| format!("pidfd: errno {e}"))?;
            let nonblocking = |fd: OwnedFd| {
                let _ = sys::fd::set_status_flags(fd.as_raw_fd(), libc::O_NONBLOCK);
                std::fs::File::from(fd)
            };
            Ok(GuestSession {
                id,
                pid,
                pidfd,
                lines_to: nonblocking(lines_write),
                messages: Some(nonblocking(messages_read)),
                message_bytes: Vec::new(),
                output: Some(nonblocking(output_read)),
                errors: Some(nonblocking(errors_read)),
                output_room: super::protocol::OUTPUT_WINDOW,
                errors_room: super::protocol::OUTPUT_WINDOW,
                input: Some(nonblocking(input_write)),
                input_frames: std::collections::VecDeque::new(),
                input_written: 0,
                input_taken: 0,
                exited: false,
                outcome: None,
            })
        }
    }
}

impl GuestSession {
    /// The serving process's lines: its outcome is kept for the end (after the output), the rest go to the host
    /// tagged with the session.
    fn read_messages(&mut self, control: &mut std::fs::File) -> Result<(), String> {
        let Some(pipe) = self.messages.as_mut() else { return Ok(()) };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.messages = None;
                    break;
                }
                Ok(n) => self.message_bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Empty for now (EAGAIN), or broken.
                Err(_) => break,
            }
            if self.message_bytes.len() > MAX_MESSAGE_LINE && !self.message_bytes.contains(&b'\n') {
                return Err("a command's process sent an endless message".to_string());
            }
        }
        while let Some(end) = self.message_bytes.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.message_bytes.drain(..=end).collect();
            let Ok(message) = serde_json::from_slice::<GuestMessage>(&line) else { continue };
            if message.is_outcome() {
                self.outcome = Some(message);
            } else {
                send(control, &GuestMessage::Of { session: self.id, message: Box::new(message) })
                    .map_err(|e| format!("control port: {e}"))?;
            }
        }
        Ok(())
    }

    /// What the command wrote to one stream, within the host's window, to its port in frames; at the pipe's end
    /// (or, once the process has ended, at its first empty read) the pipe is closed.
    fn pump(&mut self, stdout: bool, port: &mut std::fs::File, buf: &mut [u8]) -> Result<(), String> {
        let exited = self.exited;
        let (pipe, room) =
            if stdout { (&mut self.output, &mut self.output_room) } else { (&mut self.errors, &mut self.errors_room) };
        while *room > 0 {
            let Some(file) = pipe.as_mut() else { return Ok(()) };
            let want = (*room).min(MAX_FRAME).min(buf.len());
            match file.read(&mut buf[..want]) {
                Ok(0) => *pipe = None,
                Ok(n) => {
                    port.write_all(&stream_frame(self.id, &buf[..n])).map_err(|e| format!("output port: {e}"))?;
                    *room -= n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if exited {
                        *pipe = None;
                    }
                    return Ok(());
                }
                Err(_) => *pipe = None,
            }
        }
        Ok(())
    }

    /// The input frames into the serving process's pipe, as far as it takes them; a whole frame's bytes count as
    /// taken (the host may send that much more).
    fn write_input(&mut self) {
        while let Some(frame) = self.input_frames.front() {
            let Some(pipe) = self.input.as_mut() else {
                self.input_frames.clear();
                return;
            };
            match pipe.write(&frame[self.input_written..]) {
                Ok(n) => {
                    self.input_written += n;
                    if self.input_written == frame.len() {
                        self.input_taken += (frame.len() - FRAME_HEADER) as u32;
                        self.input_written = 0;
                        self.input_frames.pop_front();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // The process is gone: its input has no reader.
                Err(_) => {
                    self.input = None;
                    self.input_frames.clear();
                }
            }
        }
    }
}

/// The sandbox, held by its init in a child of this process (which stays until the machine stops).
fn hold(request: &GuestRequest, control: &mut std::fs::File) -> Result<RunningSandbox, String> {
    let (ready_read, ready_write) = sys::fd::pipe_cloexec().map_err(|e| format!("pipe: errno {e}"))?;
    match sys::process::fork().map_err(|e| format!("fork: errno {e}"))? {
        sys::process::Forked::Child => {
            drop(ready_read);
            // Lines to the agent: `warning TEXT` as the setup goes, then init's pid, or `error TEXT`.
            let ready = ready_write.as_raw_fd();
            let say = |line: String| {
                let _ = sys::fd::write_all(ready, format!("{}\n", line.replace('\n', " ")).as_bytes());
            };
            let host = host_context(request, true);
            let ran = runtime::sandbox::run_held_sandbox(
                &request.policy,
                &host,
                &mut |w| say(format!("warning {w}")),
                &mut |pid| say(pid.to_string()),
            );
            if let Err(e) = ran {
                say(format!("error {}", crate::error_chain(&e)));
            }
            drop(ready_write);
            sys::process::exit_immediately(0)
        }
        sys::process::Forked::Parent(_) => {
            drop(ready_write);
            let mut lines = std::io::BufReader::new(std::fs::File::from(ready_read));
            let init_pid: libc::pid_t = loop {
                let mut line = String::new();
                lines.read_line(&mut line).map_err(|e| format!("the held sandbox: {e}"))?;
                let line = line.trim();
                if let Some(warning) = line.strip_prefix("warning ") {
                    send(control, &GuestMessage::Warning(warning.to_string()))
                        .map_err(|e| format!("control port: {e}"))?;
                } else if let Some(why) = line.strip_prefix("error ") {
                    return Err(why.to_string());
                } else {
                    break line.parse().map_err(|_| "the held sandbox's setup ended without its init".to_string())?;
                }
            };
            let init_start_time = runtime::host::process_start_time(init_pid)
                .ok_or_else(|| "the held sandbox's init is gone".to_string())?;
            Ok(RunningSandbox { name: request.name.clone().unwrap_or_default(), init_pid, init_start_time })
        }
    }
}

/// The host's lines on the control port (read here byte by byte as they come: poll tells when).
struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    fn take_line(&mut self) -> Option<Vec<u8>> {
        let end = self.pending.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.pending.drain(..=end).collect();
        line.pop();
        Some(line)
    }

    /// Reads what is there; false at the port's end.
    fn fill(&mut self, control: &mut std::fs::File) -> Result<bool, String> {
        let mut buf = [0u8; 4096];
        loop {
            match control.read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.pending.extend_from_slice(&buf[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("control port: {e}")),
            }
        }
    }
}

struct Exec<'a> {
    request: &'a GuestRequest,
    target: &'a RunningSandbox,
    session: u32,
    tty: Option<(u16, u16)>,
    output: &'a std::fs::File,
    errors: &'a std::fs::File,
    /// A file operation, not `policy.command` (`HostMessage::Files`).
    files: Option<crate::files::FileRequest>,
}

impl Exec<'_> {
    /// The command, in a child joined to the sandbox; its outcome (never an error: a failure is `failed`).
    fn run(
        &self,
        policy: &policy::sandbox::SandboxPolicy,
        audit: Option<super::protocol::AuditNotify>,
        control_in: &mut std::fs::File,
        control_out: &std::fs::File,
        input_port: &mut std::fs::File,
        lines: &mut Lines,
    ) -> GuestMessage {
        let pipes = sys::fd::pipe_cloexec().and_then(|a| sys::fd::pipe_cloexec().map(|b| (a, b)));
        let Ok(((mut input_read, mut input_write), (result_read, result_write))) = pipes else {
            return GuestMessage::Failed("cannot create the command's pipes".to_string());
        };
        // `-t`: the exec's input is a terminal of the agent's (see `agent_terminal`), not a pipe.
        let mut terminal = None;
        if let Some((rows, cols)) = self.tty {
            match agent_terminal(rows, cols) {
                Ok((master, slave)) => match master.try_clone() {
                    Ok(writer) => {
                        (input_read, input_write) = (slave, writer);
                        terminal = Some(master);
                    }
                    Err(e) => return GuestMessage::Failed(format!("-t: the agent's terminal: {e}")),
                },
                Err(why) => return GuestMessage::Failed(format!("-t: {why}")),
            }
        }
        let forked = match sys::process::fork() {
            Ok(f) => f,
            Err(e) => return GuestMessage::Failed(format!("cannot fork the command's process: errno {e}")),
        };
        let pid = match forked {
            sys::process::Forked::Child => {
                // The signals the host passes on (`HostMessage::Signal`, a cancel's SIGHUP) wait, blocked, for
                // this process's wait loop (`runtime::supervisor::supervise`, whose signalfd takes the pending
                // ones) to hand them to the command: one that comes while the exec is being set up neither kills
                // this process nor is lost.
                let _ = sys::signal::block(FORWARDED_SIGNALS);
                // The agent's end of the terminal is the agent's: closed here.
                drop((input_write, result_read, terminal.take()));
                let code = self.child(policy, audit, control_out, input_read, result_write);
                sys::process::exit_immediately(code)
            }
            sys::process::Forked::Parent(pid) => pid,
        };
        drop((input_read, result_write));
        let fed = self.feed(pid, control_in, input_port, lines, input_write, terminal.as_ref());
        // (Processes of the exec left behind by a parent that was killed go to the agent, PID 1, which reaps them.)
        let _ = sys::wait::wait_for_exit(pid);
        if let Err(why) = fed {
            return GuestMessage::Failed(why);
        }
        let mut text = String::new();
        let _ = std::fs::File::from(result_read).take(2 << 20).read_to_string(&mut text);
        serde_json::from_str(text.trim()).unwrap_or_else(|_| {
            GuestMessage::Failed("the command's process ended without its outcome (cancelled?)".to_string())
        })
    }

    fn child(
        &self,
        policy: &policy::sandbox::SandboxPolicy,
        audit: Option<super::protocol::AuditNotify>,
        control: &std::fs::File,
        input: OwnedFd,
        result: OwnedFd,
    ) -> i32 {
        let mut result = std::fs::File::from(result);
        for (file, stream) in [
            (input.as_fd(), sys::fd::StandardStream::Input),
            (self.output.as_fd(), sys::fd::StandardStream::Output),
            (self.errors.as_fd(), sys::fd::StandardStream::Error),
        ] {
            if sys::fd::dup_onto_standard_stream(file, stream).is_err() {
                return 125;
            }
        }
        drop(input);
        if let Some(files) = &self.files {
            let message = super::files::in_guest(policy, &host_context(self.request, false), self.target, files);
            let _ = serde_json::to_vec(&message).map(|text| result.write_all(&text));
            return 0;
        }
        let mut host = host_context(self.request, false);
        host.tty =
            self.tty.map(|(rows, cols)| libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 });
        let mut sink = match (audit, control.try_clone()) {
            (Some(_), Ok(port)) => Some(PortSink { port, failed: None }),
            _ => None,
        };
        let audit_request = match (audit, sink.as_mut()) {
            (Some(notify), Some(sink)) => Some(runtime::sandbox::AuditRequest {
                notify: notify.into(),
                sink,
                // In the guest as before: the guest kernel's exec tracepoints are not tried.
                exec_source: runtime::exec_tracepoints::ExecSource::Seccomp,
                exec_tracer_pins: None,
            }),
            _ => None,
        };
        let ran = runtime::attach::exec_in_sandbox(policy, &host, self.target, &mut |w| console(w), audit_request);
        let message = match ran {
            Err(e) => GuestMessage::Failed(crate::error_chain(&e)),
            Ok(_) if sink.as_ref().is_some_and(|s| s.failed.is_some()) => {
                GuestMessage::Failed("audit: cannot send a record to the host".to_string())
            }
            Ok(RunOutcome::Exited(code)) => GuestMessage::Exited(code),
            Ok(RunOutcome::TimedOut(elapsed)) => {
                GuestMessage::TimedOut { millis: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX) }
            }
            Ok(RunOutcome::ExecFailed { code, message }) => GuestMessage::ExecFailed { code, message },
            Ok(RunOutcome::OutOfMemory { summary }) => GuestMessage::OutOfMemory { summary },
        };
        let _ = serde_json::to_vec(&message).map(|text| result.write_all(&text));
        0
    }

    /// Until the child `pid` ends: the session's input frames into its pipe, a cancel kills it.
    fn feed(
        &self,
        pid: libc::pid_t,
        control: &mut std::fs::File,
        input_port: &mut std::fs::File,
        lines: &mut Lines,
        input_write: OwnedFd,
        terminal: Option<&OwnedFd>,
    ) -> Result<(), String> {
        let pidfd = sys::process::pidfd_open(pid).map_err(|e| format!("pidfd: errno {e}"))?;
        let mut input_write = Some(std::fs::File::from(input_write));
        if let Some(w) = &input_write {
            let _ = sys::fd::set_status_flags(w.as_raw_fd(), libc::O_NONBLOCK);
        }
        let mut frames = StreamFrames::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut control_open = true;
        let mut input_ended = false;
        let mut cancelled: Option<std::time::Instant> = None;
        loop {
            let mut fds = [
                libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd {
                    fd: if control_open { control.as_raw_fd() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if pending.is_empty() { input_port.as_raw_fd() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: match (&input_write, pending.is_empty()) {
                        (Some(w), false) => w.as_raw_fd(),
                        _ => -1,
                    },
                    events: libc::POLLOUT,
                    revents: 0,
                },
            ];
            match sys::fd::poll(&mut fds, if cancelled.is_some() { 200 } else { -1 }) {
                Ok(_) | Err(libc::EINTR) => {}
                Err(e) => return Err(format!("poll: errno {e}")),
            }
            if cancelled.is_some_and(|at| at.elapsed() > CANCEL_GRACE) {
                let _ = sys::signal::kill(pid, libc::SIGKILL);
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
            if fds[1].revents != 0 {
                control_open = lines.fill(control)?;
                while let Some(line) = lines.take_line() {
                    match serde_json::from_slice(&line) {
                        Ok(HostMessage::Cancel { session }) if session == self.session && cancelled.is_none() => {
                            // A hangup, as a terminal's: the exec's process forwards it to the command (and
                            // reaps it); one that does not end by then is killed.
                            let _ = sys::signal::kill(pid, libc::SIGHUP);
                            cancelled = Some(std::time::Instant::now());
                        }
                        // The exec's process (`runtime::supervisor::supervise`) passes a signal on to the
                        // command, as `airlock exec` does on the host for a namespace sandbox.
                        Ok(HostMessage::Signal { session, signo })
                            if session == self.session && FORWARDED_SIGNALS.contains(&signo) =>
                        {
                            let _ = sys::signal::kill(pid, signo);
                        }
                        // `-t`: the agent's terminal takes the new size; SIGWINCH makes the exec's process copy
                        // it to the command's terminal (its input is the agent's terminal), which tells the
                        // command.
                        Ok(HostMessage::Resize { session, rows, cols }) if session == self.session => {
                            if let Some(terminal) = terminal {
                                let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                                if sys::terminal::set_window_size(terminal.as_fd(), &size).is_ok() {
                                    let _ = sys::signal::kill(pid, libc::SIGWINCH);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            if fds[2].revents != 0 {
                let mut buf = vec![0u8; MAX_FRAME + FRAME_HEADER];
                match input_port.read(&mut buf) {
                    Ok(n) if n > 0 => frames.push(&buf[..n]),
                    _ => {}
                }
                // Whole frames: this session's bytes to the pipe, a zero-length one ends its input; another
                // session's (one that ended before its input did) are dropped.
                while let Some((session, bytes)) = frames.next_frame().map_err(|e| format!("stdin port: {e}"))? {
                    if session == self.session {
                        // The end: the pipe is closed once what came before it is in (below).
                        input_ended |= bytes.is_empty();
                        pending.extend_from_slice(&bytes);
                    }
                }
            }
            if let Some(w) = input_write.as_mut() {
                while !pending.is_empty() {
                    match w.write(&pending) {
                        Ok(n) => {
                            pending.drain(..n);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            // The command closed its input: what is left has no reader.
                            pending.clear();
                            input_write = None;
                            break;
                        }
                    }
                }
            } else {
                pending.clear();
            }
            if input_ended && pending.is_empty() && input_write.is_some() {
                // `-t`: the terminal's end-of-file character, as the host's relay sends at the end of input (the
                // terminal stays open: closing it would hang it up).
                if let Some(w) = input_write.as_mut().filter(|_| terminal.is_some()) {
                    let _ = w.write_all(&[4]);
                }
                input_write = None;
            }
        }
    }
}

/// `-t`: a pseudo-terminal of the agent's own (a devpts instance on the guest's `/dev/pts`, mounted once), in raw
/// mode and of the client's size: the exec's process takes the slave as its input and relays it to the command's
/// terminal in the sandbox as it relays a caller's terminal on the host; so a resize is the agent's `TIOCSWINSZ`
/// on the master and a SIGWINCH to that process, which copies the size over (`runtime::supervisor`). Returns
/// (master, slave).
pub(super) fn agent_terminal(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd), String> {
    let ptmx = std::path::Path::new("/dev/pts/ptmx");
    if !ptmx.exists() {
        std::fs::create_dir_all("/dev/pts").map_err(|e| format!("cannot create /dev/pts: {e}"))?;
        sys::mount::mount(
            Some(c"devpts"),
            c"/dev/pts",
            Some(c"devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"newinstance,ptmxmode=0600,mode=0600"),
        )
        .map_err(|e| format!("cannot mount devpts on /dev/pts: errno {e}"))?;
    }
    let errno = |what: &'static str| move |e: i32| format!("{what}: errno {e}");
    let master = sys::fd::open(c"/dev/pts/ptmx", libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        .map_err(errno("cannot open /dev/pts/ptmx"))?;
    sys::terminal::unlock_pseudo_terminal(master.as_fd()).map_err(errno("cannot unlock the terminal"))?;
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    sys::terminal::set_window_size(master.as_fd(), &size).map_err(errno("cannot size the terminal"))?;
    let slave = sys::terminal::open_peer(master.as_fd(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        .map_err(errno("cannot open the terminal's slave"))?;
    // Raw before anything is written to it: the command's terminal does the line discipline, this one passes
    // every byte as it comes.
    let cooked = sys::terminal::attributes(slave.as_fd()).map_err(errno("the terminal's attributes"))?;
    sys::terminal::set_attributes(slave.as_fd(), &sys::terminal::raw(&cooked))
        .map_err(errno("the terminal's attributes"))?;
    Ok((master, slave))
}
