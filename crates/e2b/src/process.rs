//! envd's `process.Process` service: commands in a sandbox, each an `airlock exec` child of the daemon (the
//! sandbox's namespaces, limits, Landlock, seccomp and audit records, as the CLI's exec gets them).
//!
//! A process lives in this table from `Start` until it exits, whatever happens to the stream that started it:
//! a client that goes away, or a stream whose deadline (`Connect-Timeout-Ms`, the SDK's `timeout`) passes, ends
//! only its own view of the process. That is what `commands.run(…, background=True)` needs (the SDK gives every
//! command a 60 s stream deadline by default; E2B's envd killed background commands at it, E2B issue #1074 and
//! PR #1229), and a command left running is `commands.list`-ed and `commands.kill`-ed by its pid.
//!
//! The pid is that of the `airlock exec` process on the host: unique while the process lives, and the handle
//! that signals reach the command through (see [`signal`]).
//!
//! A process started with `pty` (the SDK's `pty.create`) runs under `airlock exec --tty`, which opens a terminal
//! inside the sandbox and relays it to its own standard input and output: here, the slave of a pseudo-terminal
//! the daemon opens on the host, whose master is then the process's input and output (`data.pty` events), and
//! whose size `Update` sets.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use daemon::exec::EnvFile;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::sync::mpsc;

use crate::connect::{self, RpcCode, RpcError};
use crate::E2bState;

/// Events buffered for one stream; a client that falls this far behind loses its stream (not the process).
const STREAM_BACKLOG: usize = 1024;
/// How long output is still read after the command's process exited, when a pipe has not reached its end (a
/// background process it started still holds it).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// What happened to a process, as each of its streams is told.
#[derive(Debug, Clone)]
enum ProcEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// What a process on a pseudo-terminal wrote to it (its output and error, and the terminal's echo).
    Pty(Vec<u8>),
    End {
        code: i32,
    },
}

/// Where a process's input goes: its stdin pipe, or its pseudo-terminal's master.
type InputSink = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// A running process.
pub struct Proc {
    sandbox: String,
    pid: u32,
    tag: Option<String>,
    /// `ProcessConfig` as it was started, for `List`.
    config: Value,
    stdin: tokio::sync::Mutex<Option<InputSink>>,
    /// The host side of the process's pseudo-terminal, for resizing it; none for a process on pipes.
    pty_master: Option<std::os::fd::OwnedFd>,
    subscribers: Mutex<Vec<mpsc::Sender<ProcEvent>>>,
}

impl Proc {
    fn subscribers(&self) -> MutexGuard<'_, Vec<mpsc::Sender<ProcEvent>>> {
        // Every change is one push or retain: a panic elsewhere cannot leave the list half-changed.
        self.subscribers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn subscribe(&self) -> mpsc::Receiver<ProcEvent> {
        let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
        self.subscribers().push(tx);
        rx
    }

    /// To every stream that keeps up; one that does not (or is gone) is dropped, never waited for: the
    /// command's output must keep flowing whoever reads it.
    fn publish(&self, event: ProcEvent) {
        self.subscribers().retain(|tx| tx.try_send(event.clone()).is_ok());
    }
}

/// The processes of every sandbox, by pid.
#[derive(Default)]
pub struct Procs {
    map: Mutex<HashMap<u32, Arc<Proc>>>,
}

impl Procs {
    fn map(&self) -> MutexGuard<'_, HashMap<u32, Arc<Proc>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The process `selector` names in `sandbox` (never one of another sandbox).
    fn find(&self, sandbox: &str, selector: &Selector) -> Result<Arc<Proc>, RpcError> {
        let map = self.map();
        let found = match (selector.pid, &selector.tag) {
            (Some(pid), _) => map.get(&pid).filter(|p| p.sandbox == sandbox).cloned(),
            (None, Some(tag)) => {
                map.values().find(|p| p.sandbox == sandbox && p.tag.as_deref() == Some(tag.as_str())).cloned()
            }
            (None, None) => return Err(RpcError::invalid("process: a pid or a tag")),
        };
        found.ok_or_else(|| {
            let what = match (selector.pid, &selector.tag) {
                (Some(pid), _) => format!("pid {pid}"),
                (None, tag) => format!("tag {}", tag.as_deref().unwrap_or("")),
            };
            RpcError::new(RpcCode::NotFound, format!("process with {what} not found"))
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct ProcessConfig {
    #[serde(default)]
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StartRequest {
    #[serde(default)]
    process: Option<ProcessConfig>,
    #[serde(default)]
    pty: Option<Pty>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    stdin: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Selector {
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SelectorRequest {
    #[serde(default)]
    process: Selector,
}

#[derive(Debug, Default, Deserialize)]
struct Input {
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    pty: Option<String>,
}

/// One message of a `StreamInput` stream: `start` first, then `data` and `keepalive` in any order.
#[derive(Debug, Default, Deserialize)]
struct StreamInputRequest {
    #[serde(default)]
    start: Option<SelectorRequest>,
    #[serde(default)]
    data: Option<InputEvent>,
}

#[derive(Debug, Default, Deserialize)]
struct InputEvent {
    #[serde(default)]
    input: Input,
}

#[derive(Debug, Deserialize)]
struct SendInputRequest {
    #[serde(default)]
    process: Selector,
    #[serde(default)]
    input: Input,
}

#[derive(Debug, Default, Deserialize)]
struct PtySize {
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

#[derive(Debug, Default, Deserialize)]
struct Pty {
    #[serde(default)]
    size: Option<PtySize>,
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    #[serde(default)]
    process: Selector,
    #[serde(default)]
    pty: Option<Pty>,
}

#[derive(Debug, Deserialize)]
struct SendSignalRequest {
    #[serde(default)]
    process: Selector,
    #[serde(default)]
    signal: Value,
}

/// `POST /process.Process/{method}`.
pub async fn dispatch(
    State(e2b): State<E2bState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match method.as_str() {
        "Start" => match start(&e2b, &headers, &body).await {
            Ok(r) => r,
            Err(e) => connect::stream_error(e),
        },
        "Connect" => match attach(&e2b, &headers, &body) {
            Ok(r) => r,
            Err(e) => connect::stream_error(e),
        },
        "List" => unary(list(&e2b, &headers)),
        "SendSignal" => unary(send_signal(&e2b, &headers, &body)),
        "SendInput" => unary(send_input(&e2b, &headers, &body).await),
        "CloseStdin" => unary(close_stdin(&e2b, &headers, &body).await),
        "Update" => unary(update(&e2b, &headers, &body)),
        _ => RpcError::new(RpcCode::Unimplemented, format!("no method process.Process/{method}")).into_response(),
    }
}

fn unary(answer: Result<Value, RpcError>) -> Response {
    match answer {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn check_config(config: &ProcessConfig) -> Result<(), RpcError> {
    if config.cmd.is_empty() {
        return Err(RpcError::invalid("process.cmd: empty"));
    }
    let total: usize = config.args.iter().map(String::len).sum::<usize>() + config.cmd.len();
    if config.cmd.contains('\0') || config.args.iter().any(|a| a.contains('\0')) || total > 1 << 20 {
        return Err(RpcError::invalid("process: an argument holds a NUL byte, or the command is over 1 MiB"));
    }
    for (key, value) in &config.envs {
        policy::names::validate_env_key(key).map_err(|e| RpcError::invalid(format!("process.envs: {e}")))?;
        policy::names::validate_env_value(value).map_err(|e| RpcError::invalid(format!("process.envs: {e}")))?;
    }
    if let Some(cwd) = &config.cwd {
        policy::names::validate_absolute_path(cwd).map_err(|e| RpcError::invalid(format!("process.cwd: {e}")))?;
    }
    Ok(())
}

async fn start(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Response, RpcError> {
    let req: StartRequest = connect::stream_request(body)?;
    let config = req.process.unwrap_or_default();
    check_config(&config)?;
    let (name, entry) = e2b.envd_sandbox(headers)?;
    let user = crate::E2b::envd_user(headers)?;
    let app = &e2b.app;
    // Held until the process exits, as the daemon's own exec holds them: a commit or rollback (exclusive) never
    // runs under a command, and the daemon's limit on running commands counts this one.
    let shared = entry.lock.share(&name)?;
    let permit = app.execs.clone().try_acquire_owned().map_err(|_| {
        RpcError::new(
            RpcCode::ResourceExhausted,
            format!("{} commands run in this daemon, its limit (--max-execs)", app.limits.max_execs),
        )
    })?;
    let env_file = EnvFile::write(&app.engine.state_dir.join("daemon"), &config.envs)?;
    let mut args: Vec<OsString> = vec!["exec".into()];
    if req.pty.is_some() {
        // `airlock exec -t`: a new pseudo-terminal inside the sandbox, relayed to the host one made below.
        args.push("--tty".into());
    }
    if let Some(file) = &env_file {
        args.push(format!("--env-file={}", file.0.display()).into());
    }
    if let Some(user) = &user {
        args.push(format!("--user={user}").into());
    }
    if let Some(cwd) = &config.cwd {
        args.push(format!("--cwd={cwd}").into());
    }
    args.push(name.clone().into());
    args.push("--".into());
    args.push(config.cmd.clone().into());
    args.extend(config.args.iter().map(OsString::from));
    let mut cmd = app.engine.command(&args);
    let host_pty = match &req.pty {
        Some(pty) => {
            let size = pty.size.as_ref().map_or((80, 24), |s| (s.cols.max(1), s.rows.max(1)));
            let (master, slave) = open_pty(size)?;
            let io = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone().map_err(|e| RpcError::internal(format!("cannot share the pseudo-terminal: {e}")))
            };
            cmd.stdin(Stdio::from(io(&slave)?)).stdout(Stdio::from(io(&slave)?)).stderr(Stdio::from(slave));
            Some(master)
        }
        None => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            if req.stdin == Some(true) {
                cmd.stdin(Stdio::piped());
            }
            None
        }
    };
    let mut child = cmd.spawn().map_err(|e| RpcError::internal(format!("cannot start airlock exec: {e}")))?;
    // The command holds the terminal's slave side now; ours must close, or the master never sees its end.
    drop(cmd);
    let Some(pid) = child.id() else {
        return Err(RpcError::internal("airlock exec ended before it could be tracked"));
    };
    let (input, output): (Option<InputSink>, Option<tokio::fs::File>) = match &host_pty {
        Some(master) => {
            let clone = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone()
                    .map(|fd| tokio::fs::File::from_std(std::fs::File::from(fd)))
                    .map_err(|e| RpcError::internal(format!("cannot share the pseudo-terminal: {e}")))
            };
            (Some(Box::new(clone(master)?)), Some(clone(master)?))
        }
        None => (child.stdin.take().map(|s| Box::new(s) as InputSink), None),
    };
    let mut config_json = json!({ "cmd": config.cmd, "args": config.args, "envs": config.envs });
    if let Some(cwd) = &config.cwd {
        config_json["cwd"] = Value::String(cwd.clone());
    }
    let proc = Arc::new(Proc {
        sandbox: name,
        pid,
        tag: req.tag,
        config: config_json,
        stdin: tokio::sync::Mutex::new(input),
        pty_master: host_pty,
        subscribers: Mutex::new(Vec::new()),
    });
    // Subscribed before the first byte is read: the starting stream sees all of the output.
    let events = proc.subscribe();
    e2b.procs.map().insert(pid, proc.clone());
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let e2b_for_pump = e2b.clone();
    tokio::spawn(async move {
        let _held = (shared, permit, env_file);
        match output {
            Some(terminal) => pump(&proc, child, Some(terminal), None::<tokio::process::ChildStderr>, true).await,
            None => pump(&proc, child, out, err, false).await,
        }
        e2b_for_pump.procs.map().remove(&proc.pid);
    });
    Ok(event_stream(pid, events, headers))
}

/// Reads the process's output until it has exited (and its pipes are drained, or the grace after its exit is
/// over), publishing each chunk, then its end. `terminal`: `out` is a pseudo-terminal's master.
async fn pump<O, E>(proc: &Proc, mut child: Child, mut out: Option<O>, mut err: Option<E>, terminal: bool)
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let (mut out_buf, mut err_buf) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    let mut status = None;
    let mut grace_until: Option<tokio::time::Instant> = None;
    loop {
        if out.is_none() && err.is_none() {
            if status.is_none() {
                status = Some(child.wait().await);
            }
            break;
        }
        tokio::select! {
            n = read_some(&mut out, &mut out_buf) => match n {
                Ok(n) if n > 0 && terminal => proc.publish(ProcEvent::Pty(out_buf[..n].to_vec())),
                Ok(n) if n > 0 => proc.publish(ProcEvent::Stdout(out_buf[..n].to_vec())),
                _ => out = None,
            },
            n = read_some(&mut err, &mut err_buf) => match n {
                Ok(n) if n > 0 => proc.publish(ProcEvent::Stderr(err_buf[..n].to_vec())),
                _ => err = None,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                grace_until = Some(tokio::time::Instant::now() + DRAIN_GRACE);
            }
            _ = sleep_until(grace_until) => break,
        }
    }
    let code = match status {
        Some(Ok(s)) => s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(9)),
        _ => -1,
    };
    proc.publish(ProcEvent::End { code });
}

async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The stream of a `Start` or `Connect`: the start event, the output, the end; keepalives while nothing
/// happens; at the client's deadline a `deadline_exceeded` end (the process runs on).
fn event_stream(pid: u32, mut events: mpsc::Receiver<ProcEvent>, headers: &HeaderMap) -> Response {
    let deadline = connect::timeout(headers).map(|t| tokio::time::Instant::now() + t);
    let keepalive = connect::keepalive(headers);
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if tx.send(connect::envelope(0, &json!({ "event": { "start": { "pid": pid } } }))).await.is_err() {
            return;
        }
        let mut ping = keepalive.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = sleep_until(deadline) => {
                    let e = RpcError::new(RpcCode::DeadlineExceeded, "the stream's deadline passed (the process runs on)");
                    let _ = tx.send(connect::end_of_stream(Some(&e))).await;
                    return;
                }
                _ = tick(&mut ping) => {
                    if tx.send(connect::envelope(0, &json!({ "event": { "keepalive": {} } }))).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let message = match event {
                Some(ProcEvent::Stdout(data)) => json!({ "event": { "data": { "stdout": b64(&data) } } }),
                Some(ProcEvent::Stderr(data)) => json!({ "event": { "data": { "stderr": b64(&data) } } }),
                Some(ProcEvent::Pty(data)) => json!({ "event": { "data": { "pty": b64(&data) } } }),
                Some(ProcEvent::End { code }) => {
                    let end = json!({ "event": { "end": {
                        "exitCode": code, "exited": true, "status": format!("exit status {code}") } } });
                    let _ = tx.send(connect::envelope(0, &end)).await;
                    let _ = tx.send(connect::end_of_stream(None)).await;
                    return;
                }
                None => {
                    let e = RpcError::new(RpcCode::ResourceExhausted, "the client fell behind the process's output");
                    let _ = tx.send(connect::end_of_stream(Some(&e))).await;
                    return;
                }
            };
            if tx.send(connect::envelope(0, &message)).await.is_err() {
                return;
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    connect::stream_response(stream)
}

async fn tick(ping: &mut Option<tokio::time::Interval>) {
    match ping {
        Some(p) => {
            p.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn attach(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Response, RpcError> {
    let req: SelectorRequest = connect::stream_request(body)?;
    let (name, _) = e2b.envd_sandbox(headers)?;
    let proc = e2b.procs.find(&name, &req.process)?;
    let events = proc.subscribe();
    Ok(event_stream(proc.pid, events, headers))
}

fn list(e2b: &E2bState, headers: &HeaderMap) -> Result<Value, RpcError> {
    let (name, _) = e2b.envd_sandbox(headers)?;
    let mut procs: Vec<Value> = e2b
        .procs
        .map()
        .values()
        .filter(|p| p.sandbox == name)
        .map(|p| {
            let mut v = json!({ "config": p.config, "pid": p.pid });
            if let Some(tag) = &p.tag {
                v["tag"] = Value::String(tag.clone());
            }
            v
        })
        .collect();
    procs.sort_by_key(|p| p["pid"].as_u64());
    Ok(json!({ "processes": procs }))
}

/// The signal a request names (proto enum by name or number): SIGKILL and SIGTERM, the two E2B has.
fn signal_of(value: &Value) -> Result<rustix::process::Signal, RpcError> {
    match value {
        Value::String(s) if s == "SIGNAL_SIGKILL" => Ok(rustix::process::Signal::KILL),
        Value::String(s) if s == "SIGNAL_SIGTERM" => Ok(rustix::process::Signal::TERM),
        Value::Number(n) if n.as_u64() == Some(9) => Ok(rustix::process::Signal::KILL),
        Value::Number(n) if n.as_u64() == Some(15) => Ok(rustix::process::Signal::TERM),
        other => Err(RpcError::invalid(format!("signal {other}: SIGNAL_SIGKILL or SIGNAL_SIGTERM"))),
    }
}

fn send_signal(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: SendSignalRequest = connect::request(body)?;
    let sig = signal_of(&req.signal)?;
    let (name, _) = e2b.envd_sandbox(headers)?;
    let proc = e2b.procs.find(&name, &req.process)?;
    signal(proc.pid, sig);
    Ok(json!({}))
}

/// Signals the command behind `airlock exec` pid `exec_pid`, and what it started: the command leads its own
/// session and process group (airlock's exec calls setsid), so the group's id is the command's host pid, the one
/// child of the exec process. (A SIGKILL sent to the exec process itself could not be forwarded; it would leave
/// the command running in the sandbox.) Before the command exists, the exec process itself is signalled.
fn signal(exec_pid: u32, sig: rustix::process::Signal) {
    let children = std::fs::read_to_string(format!("/proc/{exec_pid}/task/{exec_pid}/children")).unwrap_or_default();
    let commands: Vec<i32> = children.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    if commands.is_empty() {
        if let Some(pid) = i32::try_from(exec_pid).ok().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, sig);
        }
        return;
    }
    for command in commands {
        if let Some(pid) = rustix::process::Pid::from_raw(command) {
            let _ = rustix::process::kill_process_group(pid, sig);
            let _ = rustix::process::kill_process(pid, sig);
        }
    }
}

async fn send_input(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: SendInputRequest = connect::request(body)?;
    let data = input_bytes(req.input)?;
    let (name, _) = e2b.envd_sandbox(headers)?;
    let proc = e2b.procs.find(&name, &req.process)?;
    write_input(&proc, &data).await?;
    Ok(json!({}))
}

/// Decodes an input event: `stdin` for a process on pipes, `pty` for one on a terminal; either goes to what
/// the process reads.
fn input_bytes(input: Input) -> Result<Vec<u8>, RpcError> {
    base64::engine::general_purpose::STANDARD
        .decode(input.stdin.or(input.pty).unwrap_or_default())
        .map_err(|e| RpcError::invalid(format!("input: not base64: {e}")))
}

async fn write_input(proc: &Proc, data: &[u8]) -> Result<(), RpcError> {
    let mut stdin = proc.stdin.lock().await;
    let Some(pipe) = stdin.as_mut() else {
        return Err(RpcError::new(
            RpcCode::FailedPrecondition,
            "the process has no open standard input (start it with stdin=True; it may have been closed)",
        ));
    };
    pipe.write_all(data).await.map_err(|e| RpcError::internal(format!("cannot write to the process: {e}")))?;
    pipe.flush().await.map_err(|e| RpcError::internal(format!("cannot write to the process: {e}")))
}

/// `POST /process.Process/StreamInput`, Connect client streaming: the body is a sequence of envelopes (the
/// process first, then input chunks and keepalives), each written to the process as it arrives, in order; the
/// answer (an empty message, or the error) comes when the client ends its body. The stream ends the input
/// stream only: the process's stdin stays open, as envd's does (`close_stdin` closes it).
pub async fn stream_input(State(e2b): State<E2bState>, headers: HeaderMap, body: axum::body::Body) -> Response {
    let deadline = connect::timeout(&headers);
    let work = stream_input_inner(&e2b, &headers, body);
    let answer = match deadline {
        Some(d) => tokio::time::timeout(d, work)
            .await
            .unwrap_or_else(|_| Err(RpcError::new(RpcCode::DeadlineExceeded, "the input stream's deadline passed"))),
        None => work.await,
    };
    match answer {
        Ok(()) => {
            let done = [connect::envelope(0, &json!({})), connect::end_of_stream(None)];
            connect::stream_response(futures::stream::iter(done.map(Ok::<_, std::io::Error>)))
        }
        Err(e) => connect::stream_error(e),
    }
}

/// How long the rest of a refused input stream is read before the answer.
const DRAIN_UNREAD_INPUT: std::time::Duration = std::time::Duration::from_secs(1);

async fn stream_input_inner(e2b: &E2bState, headers: &HeaderMap, body: axum::body::Body) -> Result<(), RpcError> {
    let (name, _) = e2b.envd_sandbox(headers)?;
    let mut messages = connect::Envelopes::new(body);
    let first: Option<StreamInputRequest> = messages.next().await?;
    let Some(start) = first.and_then(|m| m.start) else {
        return Err(RpcError::invalid("an input stream starts with the process (a start event)"));
    };
    let proc = match e2b.procs.find(&name, &start.process) {
        Ok(proc) => proc,
        Err(e) => {
            // The rest of the request is read (briefly) before the answer: an HTTP/1.1 connection whose request
            // body was left unread is closed after the answer, and a client that reuses it at that moment sees
            // "connection closed before message completed".
            let drain = async { while let Ok(Some(_)) = messages.next::<serde_json::Value>().await {} };
            let _ = tokio::time::timeout(DRAIN_UNREAD_INPUT, drain).await;
            return Err(e);
        }
    };
    while let Some(message) = messages.next::<StreamInputRequest>().await? {
        if message.start.is_some() {
            return Err(RpcError::invalid("an input stream names its process once, first"));
        }
        // A keepalive (or anything else) only keeps the stream open.
        if let Some(data) = message.data {
            write_input(&proc, &input_bytes(data.input)?).await?;
        }
    }
    Ok(())
}

/// A new size for a process's pseudo-terminal: set on the host terminal, then `airlock exec` is told (SIGWINCH)
/// to copy it to the sandbox's own terminal, as it does for a user's terminal.
fn update(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: UpdateRequest = connect::request(body)?;
    let (name, _) = e2b.envd_sandbox(headers)?;
    let proc = e2b.procs.find(&name, &req.process)?;
    let Some(size) = req.pty.and_then(|p| p.size) else {
        return Ok(json!({}));
    };
    let Some(master) = &proc.pty_master else {
        return Err(RpcError::new(RpcCode::FailedPrecondition, "the process has no pseudo-terminal"));
    };
    set_size(master, (size.cols.max(1), size.rows.max(1)))?;
    if let Some(pid) = i32::try_from(proc.pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
    }
    Ok(json!({}))
}

/// A host pseudo-terminal (master, slave) of `size` (columns, rows), neither the daemon's controlling terminal.
fn open_pty(size: (u16, u16)) -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), RpcError> {
    use rustix::fs::{Mode, OFlags};
    use rustix::pty::OpenptFlags;
    let fail = |e: rustix::io::Errno| RpcError::internal(format!("cannot open a pseudo-terminal: {e}"));
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(fail)?;
    rustix::pty::grantpt(&master).map_err(fail)?;
    rustix::pty::unlockpt(&master).map_err(fail)?;
    let name = rustix::pty::ptsname(&master, Vec::new()).map_err(fail)?;
    let slave = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())
        .map_err(fail)?;
    set_size(&master, size)?;
    Ok((master, slave))
}

fn set_size(master: &std::os::fd::OwnedFd, (cols, rows): (u16, u16)) -> Result<(), RpcError> {
    let size = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(master, size)
        .map_err(|e| RpcError::internal(format!("cannot size the pseudo-terminal: {e}")))
}

async fn close_stdin(e2b: &E2bState, headers: &HeaderMap, body: &Bytes) -> Result<Value, RpcError> {
    let req: SelectorRequest = connect::request(body)?;
    let (name, _) = e2b.envd_sandbox(headers)?;
    let proc = e2b.procs.find(&name, &req.process)?;
    // Dropping the pipe's write end is the end of file the command reads.
    proc.stdin.lock().await.take();
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_of(&json!("SIGNAL_SIGKILL")).unwrap(), rustix::process::Signal::KILL);
        assert_eq!(signal_of(&json!(15)).unwrap(), rustix::process::Signal::TERM);
        assert!(signal_of(&json!("SIGNAL_UNSPECIFIED")).is_err());
    }
}
