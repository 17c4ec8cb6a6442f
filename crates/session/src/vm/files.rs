//! `airlock __files` (cp, the daemon's files API) for a VM sandbox: the file operation goes through the
//! supervisor's socket (`vm.sock`) to the guest, whose agent does it in a child that enters the held sandbox as
//! its user (`runtime::attach::enter_sandbox_as_its_user`, as `__files` does on the host) with the same code
//! (`crate::files`), so the same rules hold: the path resolves in the sandbox's root, with its user's rights and
//! its Landlock ruleset.
//!
//! The operation travels as an exec does (`super::held`): the client hands the supervisor three descriptors and
//! an [`ExecRequest`] whose `files` names the operation; the supervisor sends the guest a
//! [`super::held::HostMessage::Files`]; the input goes in frames, the output comes on the stdout port, the exit
//! status as the outcome (`exited`).
//!
//! The guest is not trusted, and here the client is the one that checks what it sends before passing it on: the
//! output of `get` must be one header line (bounded, [`MAX_HEADER_BYTES`]; names one component each, known
//! kinds and modes) then exactly the `size` the header says (the guest sends exactly that: `exact_size`); the
//! exit status must be one `__files` has; its messages are cut to [`MAX_GUEST_MESSAGES`] bytes. A guest that
//! breaks any of that, or says nothing for [`IDLE_TIMEOUT`] once the supervisor has sent it the operation (it
//! says `started` then: before, the operation waits its turn behind other execs), ends the operation with a
//! `vm:` error (exit 1): the client drops its connection, and the supervisor cancels the guest's child.

use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy::sandbox::SandboxPolicy;
use runtime::attach::{AttachError, RunningSandbox};
use runtime::prepare::HostContext;

use super::held::{guest_policy, ExecRequest, HeldError, HeldVm};
use super::protocol::{ControlError, ControlReader, GuestMessage};
use crate::files::{FileOp, FileRequest, EXIT_DENIED, EXIT_NOT_FOUND, EXIT_WRONG_KIND};

/// Longest header line of `get` taken from the guest (a directory's listing: about 100 bytes an entry).
pub const MAX_HEADER_BYTES: usize = 16 << 20;
/// Most bytes of the guest's messages (stderr) kept; the rest is read and dropped.
pub const MAX_GUEST_MESSAGES: usize = 8 << 10;
/// How long the guest may go without a sign of life (output, its taking input, a message) during an operation.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the relays may take to end once a session has failed.
const FAILED_SESSION_GRACE: Duration = Duration::from_secs(2);
/// The longest name of a directory entry (NAME_MAX).
const MAX_NAME: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum VmFilesError {
    #[error(transparent)]
    Held(#[from] HeldError),
    #[error("vm: cannot make the operation's pipes: errno {0}")]
    Pipes(i32),
    #[error("vm: cannot start the operation's relay thread")]
    Thread(#[source] std::io::Error),
    #[error("vm: {0}")]
    Guest(#[from] ControlError),
    /// The guest broke the file protocol (what it sent, described).
    #[error("vm: the guest {0} (the guest is not trusted: the operation is refused)")]
    Broken(String),
    #[error("vm: the guest did not answer for {}s: the operation is abandoned", IDLE_TIMEOUT.as_secs())]
    Idle,
    #[error("cannot write the file's bytes")]
    Output(#[source] std::io::Error),
    #[error("vm: the relay of the guest's output ended without a result")]
    RelayLost,
}

/// Milliseconds since the operation started, of the guest's last sign of life.
#[derive(Clone)]
struct Alive {
    started: Instant,
    last: Arc<AtomicU64>,
}

impl Alive {
    fn now(&self) {
        self.last.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// What [`check_output`] found wrong.
enum OutputFault {
    Guest(String),
    Ours(std::io::Error),
}

/// What the guest's `get` header may say.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Header {
    File { size: u64, mode: u32 },
    Dir { entries: Vec<DirEntry> },
}

#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct DirEntry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    mode: u32,
}

impl Header {
    fn check(&self) -> Result<(), String> {
        match self {
            Header::File { mode, .. } if *mode > 0o7777 => Err(format!("sent a file mode {mode:o}")),
            Header::File { .. } => Ok(()),
            Header::Dir { entries } => {
                for e in entries {
                    let name_ok = !e.name.is_empty()
                        && e.name.len() <= MAX_NAME
                        && e.name != "."
                        && e.name != ".."
                        && !e.name.contains(['/', '\0']);
                    if !name_ok {
                        return Err(format!("listed an entry named {:?}", crate::files::short(&e.name)));
                    }
                    if !["file", "dir", "symlink", "other"].contains(&e.kind.as_str()) || e.mode > 0o7777 {
                        return Err(format!("listed an entry of kind {:?}, mode {:o}", e.kind, e.mode));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Copies the guest's output of `op` to `out`, checked: for `get`, the header then exactly its size; for the
/// others nothing is expected (anything is dropped). `Ok(true)`: a whole answer (for `get`) was passed on.
fn check_output(op: FileOp, from: impl Read, out: &mut dyn Write, alive: &Alive) -> Result<bool, OutputFault> {
    let mut from = std::io::BufReader::with_capacity(64 << 10, from);
    if op != FileOp::Get {
        let mut buf = [0u8; 4096];
        while from.read(&mut buf).map_err(|e| OutputFault::Guest(format!("output: {e}")))? > 0 {
            alive.now();
        }
        return Ok(true);
    }
    let mut line = Vec::new();
    let read = (&mut from)
        .take(MAX_HEADER_BYTES as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| OutputFault::Guest(format!("output: {e}")))?;
    alive.now();
    if read == 0 {
        // No answer: the outcome says why.
        return Ok(false);
    }
    if line.last() != Some(&b'\n') {
        return Err(OutputFault::Guest(match line.len() > MAX_HEADER_BYTES {
            true => format!("sent a header longer than {MAX_HEADER_BYTES} bytes"),
            false => "sent a header cut short".to_string(),
        }));
    }
    let header: Header =
        serde_json::from_slice(&line).map_err(|e| OutputFault::Guest(format!("sent a header that is not one: {e}")))?;
    header.check().map_err(OutputFault::Guest)?;
    // Passed on as this process writes it, not as the guest did.
    let mut text = serde_json::to_vec(&header).map_err(|e| OutputFault::Guest(e.to_string()))?;
    text.push(b'\n');
    out.write_all(&text).map_err(OutputFault::Ours)?;
    let Header::File { size, .. } = header else {
        out.flush().map_err(OutputFault::Ours)?;
        let mut extra = [0u8; 1];
        return match from.read(&mut extra) {
            Ok(0) => Ok(true),
            _ => Err(OutputFault::Guest("sent bytes after a directory's listing".to_string())),
        };
    };
    let mut left = size;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = from.read(&mut buf).map_err(|e| OutputFault::Guest(format!("output: {e}")))?;
        if n == 0 {
            break;
        }
        alive.now();
        if n as u64 > left {
            return Err(OutputFault::Guest(format!("sent more than the {size} bytes its header said")));
        }
        out.write_all(&buf[..n]).map_err(OutputFault::Ours)?;
        left -= n as u64;
    }
    out.flush().map_err(OutputFault::Ours)?;
    // Fewer bytes than said: an honest guest says why in its outcome (not 0).
    Ok(left == 0)
}

/// The guest's messages (its stderr), bounded; the rest read and dropped.
fn collect_messages(from: impl Read) -> Vec<u8> {
    let mut from = from;
    let mut kept = Vec::new();
    let _ = (&mut from).take(MAX_GUEST_MESSAGES as u64).read_to_end(&mut kept);
    let _ = std::io::copy(&mut from, &mut std::io::sink());
    kept
}

fn pipe() -> Result<(std::fs::File, OwnedFd), VmFilesError> {
    let (read, write) = sys::fd::pipe_cloexec().map_err(VmFilesError::Pipes)?;
    Ok((std::fs::File::from(read), write))
}

impl HeldVm {
    /// `airlock __files` into the held guest: `request` done in its sandbox as its user, this process's standard
    /// input (`put`) and output (`get`) the operation's, the guest's messages printed as `airlock:` lines. The
    /// exit status is `__files`' (see `crate::files`).
    pub fn files_in_vm(&self, policy: &SandboxPolicy, request: &FileRequest) -> Result<i32, VmFilesError> {
        // This process's output may be a reader that went away: an error to report, not a signal that kills.
        let _ = sys::signal::ignore(libc::SIGPIPE);
        self.files_with(policy, request, Box::new(std::io::stdin()), Box::new(std::io::stdout()))
    }

    /// [`Self::files_in_vm`] with `input` and `output` for this process's standard streams.
    fn files_with(
        &self,
        policy: &SandboxPolicy,
        request: &FileRequest,
        mut stdin: Box<dyn Read + Send>,
        mut stdout: Box<dyn Write + Send>,
    ) -> Result<i32, VmFilesError> {
        let mut conn = UnixStream::connect(&self.socket)
            .map_err(|source| HeldError::Connect { path: self.socket.clone(), source })?;
        let alive = Alive { started: Instant::now(), last: Arc::new(AtomicU64::new(0)) };
        let (input_read, input_write) = pipe()?;
        let (output_read, output_write) = pipe()?;
        let (messages_read, messages_write) = pipe()?;
        for fd in [input_read.as_raw_fd(), output_write.as_raw_fd(), messages_write.as_raw_fd()] {
            sys::socket::send_fd(conn.as_raw_fd(), fd)
                .map_err(|e| HeldError::Send(std::io::Error::from_raw_os_error(e)))?;
        }
        // The supervisor holds its copies: the pipes end when it ends the session.
        drop((input_read, output_write, messages_write));
        let exec = ExecRequest { policy: guest_policy(policy), audit: None, tty: None, files: Some(request.clone()) };
        let mut line = serde_json::to_vec(&exec).map_err(|e| HeldError::Send(std::io::Error::other(e)))?;
        line.push(b'\n');
        conn.write_all(&line).map_err(HeldError::Send)?;

        // The input (`put`: this process's; else none) through a thread that marks the guest alive as it takes it.
        let input_alive = alive.clone();
        let put = request.op == FileOp::Put;
        // Not joined: a reader of an input that never ends must not keep this process once the outcome is in.
        let _input = std::thread::Builder::new()
            .spawn(move || {
                let mut to = std::fs::File::from(input_write);
                if !put {
                    return;
                }
                let mut buf = vec![0u8; 32 << 10];
                while let Ok(n) = stdin.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    input_alive.now();
                }
            })
            .map_err(VmFilesError::Thread)?;
        let output_alive = alive.clone();
        let op = request.op;
        let hangup = conn.try_clone().map_err(HeldError::Send)?;
        // The relay threads' results come by channel: after a failed session they are waited for only briefly
        // (a guest that ignores the cancel keeps the session, and with it the pipes' other ends, open).
        let (output_done, output_result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .spawn(move || {
                let checked = check_output(op, output_read, &mut stdout, &output_alive);
                if checked.is_err() {
                    // Ends the session: the supervisor cancels the guest's child; the main loop stops reading.
                    let _ = hangup.shutdown(std::net::Shutdown::Both);
                }
                let _ = output_done.send(checked);
            })
            .map_err(VmFilesError::Thread)?;
        let (messages_done, messages_result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .spawn(move || {
                let _ = messages_done.send(collect_messages(messages_read));
            })
            .map_err(VmFilesError::Thread)?;

        let outcome = wait_for_outcome(&mut conn, &alive);
        if outcome.is_err() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        drop(conn);
        // After an outcome the supervisor has ended the session and closed its ends of the pipes: what is left
        // is this side's (the output may go to a slow reader). Otherwise the guest's side may never end them.
        let (checked, said) = match outcome.is_ok() {
            true => (output_result.recv().ok(), messages_result.recv().unwrap_or_default()),
            false => (
                output_result.recv_timeout(FAILED_SESSION_GRACE).ok(),
                messages_result.recv_timeout(FAILED_SESSION_GRACE).unwrap_or_default(),
            ),
        };
        for line in String::from_utf8_lossy(&said).lines().filter(|l| !l.trim().is_empty()) {
            crate::say(line.trim_start_matches("airlock: "));
        }
        let whole = match checked {
            Some(Ok(whole)) => whole,
            Some(Err(OutputFault::Guest(what))) => return Err(VmFilesError::Broken(what)),
            Some(Err(OutputFault::Ours(e))) => return Err(VmFilesError::Output(e)),
            // No word from the output's relay: the session failed (its error says how), or the relay is gone.
            None => {
                outcome?;
                return Err(VmFilesError::RelayLost);
            }
        };
        let code = outcome?;
        if ![0, 1, EXIT_NOT_FOUND, EXIT_DENIED, EXIT_WRONG_KIND, 125].contains(&code) {
            return Err(VmFilesError::Broken(format!("answered with exit status {code}")));
        }
        if code == 0 && !whole {
            return Err(VmFilesError::Broken("sent fewer bytes than its header said".to_string()));
        }
        Ok(code)
    }
}

/// The guest's messages until its outcome: the operation's exit status.
fn wait_for_outcome(conn: &mut UnixStream, alive: &Alive) -> Result<i32, VmFilesError> {
    conn.set_read_timeout(Some(Duration::from_secs(1))).map_err(HeldError::Send)?;
    let mut reader = ControlReader::default();
    let mut buf = vec![0u8; 64 << 10];
    // The supervisor says `started` when the operation is sent to the guest: until then it waits its turn
    // behind other execs (the supervisor is the host's, trusted), from then on the guest is timed.
    let mut started = false;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if started && alive.idle() > IDLE_TIMEOUT {
                    return Err(VmFilesError::Idle);
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            return Err(HeldError::NoOutcome.into());
        }
        alive.now();
        reader.push(&buf[..n]);
        while let Some(message) = reader.next_message()? {
            match message {
                GuestMessage::Started => started = true,
                GuestMessage::Warning(_) => {}
                GuestMessage::Exited(code) => return Ok(code),
                GuestMessage::Failed(why) => {
                    return Err(HeldError::Session(why.trim_start_matches("vm: ").to_string()).into())
                }
                other => {
                    let kind = format!("{other:?}");
                    let kind = kind.split(['(', ' ', '{']).next().unwrap_or("?").to_string();
                    return Err(VmFilesError::Broken(format!("answered a file operation with {kind}")));
                }
            }
        }
    }
}

/// The guest's side, in the child of an exec slot (`held_guest`): enters the held sandbox `target` as its user
/// and does `request` there with this process's standard streams; the outcome for the host.
pub(super) fn in_guest(
    policy: &SandboxPolicy,
    host: &HostContext,
    target: &RunningSandbox,
    request: &FileRequest,
) -> GuestMessage {
    // The host's request is checked here too: the guest's rules do not depend on the host's.
    let Some(request) = request.clone().checked() else {
        crate::say("the file operation's path must be absolute and at most 4096 bytes, its mode at most 7777");
        return GuestMessage::Exited(EXIT_WRONG_KIND);
    };
    match runtime::attach::enter_sandbox_as_its_user(policy, host, target) {
        Ok(()) => {}
        Err(AttachError::NotRunning(_)) => {
            crate::say("the sandbox is not running (in the guest)");
            return GuestMessage::Exited(1);
        }
        Err(e) => {
            crate::say(&crate::error_chain(&e));
            return GuestMessage::Exited(125);
        }
    }
    // Inside the sandbox as its user; the host checks the size the header says, so it is kept to exactly.
    let code = crate::files::perform(&request, true);
    // This process ends with `_exit`: what is buffered goes out now.
    let _ = std::io::stdout().flush();
    GuestMessage::Exited(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive() -> Alive {
        Alive { started: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    fn get(sent: &[u8]) -> (Result<bool, String>, Vec<u8>) {
        let mut out = Vec::new();
        let checked = check_output(FileOp::Get, sent, &mut out, &alive()).map_err(|e| match e {
            OutputFault::Guest(what) => what,
            OutputFault::Ours(e) => format!("ours: {e}"),
        });
        (checked, out)
    }

    #[test]
    fn an_honest_answer_is_passed_on_whole() {
        let (checked, out) = get(b"{\"type\":\"file\",\"size\":5,\"mode\":420}\nhello");
        assert_eq!(checked, Ok(true));
        assert_eq!(out, b"{\"type\":\"file\",\"size\":5,\"mode\":420}\nhello");
        let listing = br#"{"type":"dir","entries":[{"name":"a","type":"file","size":1,"mode":420}]}"#;
        let (checked, out) = get(&[&listing[..], b"\n"].concat());
        assert_eq!(checked, Ok(true));
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap()["entries"][0]["name"], "a");
        // Nothing at all: the outcome says why.
        assert_eq!(get(b"").0, Ok(false));
    }

    #[test]
    fn a_lying_or_garbled_guest_is_refused() {
        // More bytes than said: refused at once, never passed on beyond the size.
        let (checked, out) = get(b"{\"type\":\"file\",\"size\":2,\"mode\":420}\nhello");
        assert!(checked.unwrap_err().contains("more than the 2 bytes"));
        assert!(out.len() < 40);
        // Fewer: not whole.
        assert_eq!(get(b"{\"type\":\"file\",\"size\":9,\"mode\":420}\nhi").0, Ok(false));
        for bad in [
            &b"not json\n"[..],
            b"{\"type\":\"file\",\"size\":-1,\"mode\":420}\n",
            b"{\"type\":\"file\",\"size\":1,\"mode\":99999}\n",
            b"{\"type\":\"fifo\"}\n",
            b"{\"type\":\"file\",\"size\":1,\"mode\":420,\"extra\":1}\n",
            br#"{"type":"dir","entries":[{"name":"../x","type":"file","size":1,"mode":420}]}
"#,
            br#"{"type":"dir","entries":[{"name":"..","type":"dir","size":1,"mode":420}]}
"#,
            br#"{"type":"dir","entries":[{"name":"a","type":"device","size":1,"mode":420}]}
"#,
            br#"{"type":"dir","entries":[]}
trailing"#,
            b"{\"type\":\"file\"",
        ] {
            assert!(get(bad).0.is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // An endless header: refused past the bound, not held whole.
        let endless = std::io::repeat(b'x');
        let mut out = Vec::new();
        let checked = check_output(FileOp::Get, endless, &mut out, &alive());
        assert!(matches!(checked, Err(OutputFault::Guest(what)) if what.contains("longer than")));
        // Messages are bounded.
        assert_eq!(collect_messages(std::io::repeat(b'm').take(1 << 20)).len(), MAX_GUEST_MESSAGES);
    }

    /// A writer whose bytes the test reads afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `files_with` against a supervisor played by this test: it takes the three descriptors and the request,
    /// writes `output` as the guest's stdout, then says `control` (lines) and goes.
    fn against(output: &[u8], control: &[u8]) -> (Result<i32, VmFilesError>, Vec<u8>, ExecRequest) {
        let (result, bytes, sent, _) = against_holding(output, control, Duration::ZERO);
        (result, bytes, sent)
    }

    /// [`against`], the supervisor keeping the session (and the pipes' ends) for `hold` after it has spoken.
    fn against_holding(
        output: &[u8],
        control: &[u8],
        hold: Duration,
    ) -> (Result<i32, VmFilesError>, Vec<u8>, ExecRequest, Duration) {
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("airlock-vmfiles-{}-{}", std::process::id(), rand_tag()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vm.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (output, control) = (output.to_vec(), control.to_vec());
        let supervisor = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let fds: Vec<OwnedFd> = (0..3).map(|_| sys::socket::recv_fd(conn.as_raw_fd()).unwrap().unwrap()).collect();
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while conn.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            let request: ExecRequest = serde_json::from_slice(&line).unwrap();
            let mut fds = fds.into_iter();
            let (_input, out, _err) = (fds.next().unwrap(), fds.next().unwrap(), fds.next().unwrap());
            let mut out = std::fs::File::from(out);
            let _ = out.write_all(&output);
            let _ = conn.write_all(&control);
            std::thread::sleep(hold);
            drop(out);
            request
        });
        let policy = policy::profile::resolve(
            &policy::profile::builtin_profile("default").unwrap(),
            vec!["/bin/true".to_string()],
            &crate::invoker(),
        )
        .unwrap();
        let request = FileRequest { op: FileOp::Get, path: "/tmp/f".to_string(), mode: None };
        let out = Shared::default();
        let vm = HeldVm { socket };
        let started = Instant::now();
        let result = vm.files_with(&policy, &request, Box::new(std::io::empty()), Box::new(out.clone()));
        let took = started.elapsed();
        let sent = supervisor.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = out.0.lock().unwrap().clone();
        (result, bytes, sent, took)
    }

    fn rand_tag() -> u64 {
        use std::sync::atomic::AtomicU64;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn the_client_passes_an_honest_guest_on_and_refuses_a_lying_one() {
        let header = b"{\"type\":\"file\",\"size\":5,\"mode\":420}\n";
        let (result, out, sent) = against(&[&header[..], b"hello"].concat(), b"\"started\"\n{\"exited\":0}\n");
        assert_eq!(result.unwrap(), 0);
        assert_eq!(out, [&header[..], b"hello"].concat());
        assert_eq!(sent.files.unwrap().op, FileOp::Get);
        // An honest failure: its status.
        assert_eq!(against(b"", b"{\"exited\":3}\n").0.unwrap(), 3);
        // More bytes than the header says: refused, and no more than the size passed on.
        let (result, out, _) = against(&[&header[..], b"hello and more"].concat(), b"{\"exited\":0}\n");
        assert!(matches!(result, Err(VmFilesError::Broken(ref w)) if w.contains("more than")), "{result:?}");
        assert!(out.len() <= header.len() + 5);
        // Fewer bytes, yet done: refused.
        let (result, _, _) = against(&[&header[..], b"he"].concat(), b"{\"exited\":0}\n");
        assert!(matches!(result, Err(VmFilesError::Broken(ref w)) if w.contains("fewer")), "{result:?}");
        // A header that is not one, an exit status `__files` never has, an outcome of another kind, a control
        // line that is not a message, no outcome at all: each a `vm:` error, never a hang or a panic.
        let (result, _, _) = against(b"garbage\n", b"{\"exited\":0}\n");
        assert!(matches!(result, Err(VmFilesError::Broken(_))), "{result:?}");
        let (result, _, _) = against(b"", b"{\"exited\":77}\n");
        assert!(matches!(result, Err(VmFilesError::Broken(ref w)) if w.contains("77")), "{result:?}");
        let (result, _, _) = against(b"", b"{\"timed_out\":{\"millis\":1}}\n");
        assert!(matches!(result, Err(VmFilesError::Broken(_))), "{result:?}");
        let (result, _, _) = against(b"", b"{\"exited\": \"zero\"}\n");
        assert!(matches!(result, Err(VmFilesError::Guest(_))), "{result:?}");
        let (result, _, _) = against(b"", b"");
        assert!(matches!(result, Err(VmFilesError::Held(HeldError::NoOutcome))), "{result:?}");
        // A guest that breaks the protocol and then keeps its session open: the client still ends, promptly.
        let (result, _, _, took) = against_holding(b"{\"type\":\"fi", b"garbage\n", Duration::from_secs(6));
        assert!(matches!(result, Err(VmFilesError::Guest(_))), "{result:?}");
        assert!(took < Duration::from_secs(5), "the client waited for the guest's side: {took:?}");
        for e in [VmFilesError::Broken("x".into()), VmFilesError::Idle] {
            assert!(e.to_string().starts_with("vm: "), "{e}");
        }
    }
}
