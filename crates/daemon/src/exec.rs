//! `POST /v1/sandboxes/{name}/exec`: a command in a running sandbox, by `airlock exec` (same namespaces, limits,
//! Landlock, seccomp and audit records as the CLI's).
//!
//! Two answers: wait for the end and answer one JSON object, or (`Accept: application/x-ndjson`) one JSON line
//! per event as it happens. Either way the command's end is its own process's exit: a background process it
//! left holding the output pipes does not keep the answer open (the output already written is read for a short
//! grace, then the pipes are let go), and a streaming client that disconnects does not kill anything: the
//! command runs on, its output drained and dropped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use crate::api::{owned, parse_body, running_init, wants_ndjson, Shared};
use crate::error::{ApiError, ApiResult, Code};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// `root` or `UID[:GID]`: `airlock exec --user`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stdin: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Each stream's bytes kept for a wait-for-result answer; beyond, the rest is read and dropped (`truncated`).
const MAX_CAPTURE: usize = 16 << 20;
/// How long output is still read, after the command's process exited and what it had written was read, when a
/// pipe has not reached its end (a background process still holds it; see the module doc).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long past its `--timeout` an `airlock exec` gets to kill its command and exit before the daemon kills it.
const TIMEOUT_SLACK: Duration = Duration::from_secs(10);

impl ExecRequest {
    fn check(&self) -> ApiResult<Option<Duration>> {
        let Some(program) = self.cmd.first() else {
            return Err(ApiError::bad_request("cmd: needs at least the program"));
        };
        if program.is_empty() {
            return Err(ApiError::bad_request("cmd: the program is empty"));
        }
        let total: usize = self.cmd.iter().map(String::len).sum();
        if self.cmd.iter().any(|a| a.contains('\0')) || total > 1 << 20 {
            return Err(ApiError::bad_request("cmd: an argument holds a NUL byte, or the command is over 1 MiB"));
        }
        for (key, value) in &self.env {
            policy::names::validate_env_key(key).map_err(|e| ApiError::bad_request(format!("env: {e}")))?;
            policy::names::validate_env_value(value).map_err(|e| ApiError::bad_request(format!("env: {e}")))?;
        }
        if let Some(cwd) = &self.cwd {
            policy::names::validate_absolute_path(cwd).map_err(|e| ApiError::bad_request(format!("cwd: {e}")))?;
        }
        if let Some(user) = &self.user {
            if policy::profile::parse_user(user).is_none() {
                return Err(ApiError::bad_request(format!("user {user:?}: expected root or UID[:GID]")));
            }
        }
        self.timeout
            .as_deref()
            .map(policy::units::parse_duration)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("timeout: {e}")))
    }
}

/// The environment file handed to `airlock exec --env-file` (values never on a command line, where other host
/// users could read them); removed when the exec ends.
pub struct EnvFile(pub std::path::PathBuf);

impl EnvFile {
    /// The file for `env` in `dir` (none when `env` is empty); the values must have been validated.
    pub fn write(dir: &std::path::Path, env: &BTreeMap<String, String>) -> ApiResult<Option<EnvFile>> {
        if env.is_empty() {
            return Ok(None);
        }
        let mut bytes = [0u8; 8];
        let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
        let path = dir.join(format!("env-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()));
        let mut text = String::new();
        for (k, v) in env {
            // NUL-terminated entries (`airlock exec --env-file` reads them so when the file holds a NUL): a value
            // may hold newlines, never a NUL (validate_env_value refused those), so no value can start another
            // variable.
            text.push_str(&format!("{k}={v}\0"));
        }
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))?;
        file.write_all(text.as_bytes())
            .map_err(|e| ApiError::internal(format!("cannot write {}: {e}", path.display())))?;
        Ok(Some(EnvFile(path)))
    }
}

impl Drop for EnvFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub async fn exec(
    State(app): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ExecRequest = parse_body(&body)?;
    let timeout = req.check()?;
    let entry = owned(&app, &name)?;
    running_init(&app, &name)?;
    let shared = entry.lock.share(&name)?;
    let permit = app.execs.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            Code::Limit,
            format!("{} execs run in this daemon, its limit (--max-execs)", app.limits.max_execs),
        )
    })?;
    let started = Instant::now();
    // The fast way first: the sandbox's exec agent, for what it does exactly as `airlock exec` would (no other
    // user, no deadline of the exec's own: those need `airlock exec`'s own steps).
    let socket = store::StateDir::at(app.engine.state_dir.clone()).sandbox(&name).agent_socket();
    let mut recorded = None;
    let by_agent = match (&req.user, &req.timeout) {
        (None, None) => match crate::agent::connect(&socket).await {
            Some(connected) => {
                // Recorded as `airlock exec` records it: `attached` before the command starts (its `exec`
                // records come from the agent's seccomp listener), `exited` at its end.
                recorded = Some(Recorded::attach(&app, &name, &req.cmd).await);
                let command = crate::agent::Command {
                    argv: &req.cmd,
                    env: &req.env,
                    cwd: req.cwd.as_deref(),
                    stdin: req.stdin.is_some(),
                };
                connected.start(&command).await
            }
            None => None,
        },
        _ => None,
    };
    let (mut runner, pid, out, err, stdin_pipe, env_file) = match by_agent {
        Some((exec, streams)) => {
            let pid = u32::try_from(exec.pid).ok();
            let stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> =
                streams.stdin.map(|s| Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>);
            let recorded = recorded.unwrap_or_default();
            (Runner::Agent(recorded, exec), pid, streams.stdout, streams.stderr, stdin, None)
        }
        None => {
            let (child, env_file) = spawn_airlock_exec(&app, &name, &req)?;
            let mut child = child;
            let pid = child.id();
            let stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> =
                child.stdin.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>);
            let out = child.stdout.take().and_then(|p| p.into_owned_fd().ok());
            let err = child.stderr.take().and_then(|p| p.into_owned_fd().ok());
            let (Some(out), Some(err)) = (out, err) else {
                return Err(ApiError::internal("cannot read the output of airlock exec"));
            };
            let out =
                pipe::Receiver::from_owned_fd(out).map_err(|e| ApiError::internal(format!("exec output: {e}")))?;
            let err =
                pipe::Receiver::from_owned_fd(err).map_err(|e| ApiError::internal(format!("exec output: {e}")))?;
            (Runner::Process(child), pid, out, err, stdin, env_file)
        }
    };
    if let (Some(text), Some(mut pipe)) = (req.stdin, stdin_pipe) {
        // Fed beside the output readers: a command that fills its output before reading all its input must not
        // deadlock against us.
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
        });
    }
    let (mut out, mut err) = (Some(out), Some(err));
    // The exec runs in its own task, whatever happens to the client: it owns the command, the sandbox's shared
    // lock, the exec permit and the environment file until the command's process has exited.
    let (events_tx, events_rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _held = (shared, permit, env_file);
        let deadline = timeout.map(|t| t + TIMEOUT_SLACK);
        let exited = {
            let status = runner.wait(deadline);
            tokio::pin!(status);
            let mut exited = None;
            let mut drain_until: Option<tokio::time::Instant> = None;
            let (mut out_buf, mut err_buf) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
            loop {
                if out.is_none() && err.is_none() {
                    // Both pipes at their end: the answer ends with the exit (waited for if not seen yet).
                    if exited.is_none() {
                        exited = Some((&mut status).await);
                    }
                    break;
                }
                tokio::select! {
                    biased;
                    n = read_some(&mut out, &mut out_buf) => {
                        if !forward(n, &out_buf, Stream::Stdout, &events_tx).await {
                            out = None;
                        }
                    }
                    n = read_some(&mut err, &mut err_buf) => {
                        if !forward(n, &err_buf, Stream::Stderr, &events_tx).await {
                            err = None;
                        }
                    }
                    s = &mut status, if exited.is_none() => {
                        exited = Some(s);
                        // What the command wrote before it exited is in the pipes now: read it without waiting on
                        // the runtime's readiness (on a loaded machine a grace timer could otherwise fire first and
                        // lose it). A pipe still open after that is held by a process the command left behind.
                        drain_now(&mut out, &mut out_buf, Stream::Stdout, &events_tx).await;
                        drain_now(&mut err, &mut err_buf, Stream::Stderr, &events_tx).await;
                        drain_until = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                    }
                    _ = sleep_until(drain_until) => {
                        drain_now(&mut out, &mut out_buf, Stream::Stdout, &events_tx).await;
                        drain_now(&mut err, &mut err_buf, Stream::Stderr, &events_tx).await;
                        break;
                    }
                }
            }
            exited
        };
        let status = exited.flatten();
        let code = status.and_then(|s| s.code()).unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status.unwrap_or_default()).unwrap_or(9)
        });
        runner.finish(code).await;
        let _ = events_tx.send(Event::Exit { code, duration: started.elapsed() }).await;
    });
    if wants_ndjson(&headers) {
        Ok(stream_answer(pid, events_rx))
    } else {
        Ok(wait_answer(events_rx).await.into_response())
    }
}

/// What runs an exec's command: a new `airlock exec` process, or the sandbox's exec agent.
enum Runner {
    Process(tokio::process::Child),
    Agent(Recorded, crate::agent::AgentExec),
}

impl Runner {
    /// The command's end. An `airlock exec` past `deadline` (its own timeout plus slack) is killed; the agent is
    /// never given a command with a deadline.
    async fn wait(&mut self, deadline: Option<Duration>) -> Option<std::process::ExitStatus> {
        match self {
            Runner::Process(child) => match deadline {
                Some(d) => match tokio::time::timeout(d, child.wait()).await {
                    Ok(status) => status.ok(),
                    Err(_) => {
                        let _ = child.kill().await;
                        child.wait().await.ok()
                    }
                },
                None => child.wait().await.ok(),
            },
            Runner::Agent(_, exec) => exec.wait().await,
        }
    }

    /// After the end: the agent's command gets its `exited` record (`airlock exec` wrote its own).
    async fn finish(self, code: i32) {
        if let Runner::Agent(recorded, _) = self {
            recorded.exited(code).await;
        }
    }
}

/// The audit records the daemon writes for a command the agent runs (the recorder `airlock exec` uses).
#[derive(Default)]
struct Recorded(Option<session::recorder::Recorder>);

impl Recorded {
    async fn attach(app: &Shared, name: &str, command: &[String]) -> Recorded {
        let state = store::StateDir::at(app.engine.state_dir.clone());
        let (name, command) = (name.to_string(), command.to_vec());
        let recorder = tokio::task::spawn_blocking(move || {
            let mut recorder = session::recorder::Recorder::for_exec(&state, &name).ok().flatten()?;
            recorder.attached(&command);
            Some(recorder)
        });
        Recorded(recorder.await.ok().flatten())
    }

    async fn exited(self, code: i32) {
        if let Some(mut recorder) = self.0 {
            let _ = tokio::task::spawn_blocking(move || {
                let outcome = runtime::sandbox::RunOutcome::Exited(code);
                recorder.finish(&outcome, &runtime::sandbox::RunReport::default(), None);
            })
            .await;
        }
    }
}

/// The long way: `airlock exec` with the request's options (the environment in a file, never on its command
/// line), its output piped.
fn spawn_airlock_exec(
    app: &Shared,
    name: &str,
    req: &ExecRequest,
) -> ApiResult<(tokio::process::Child, Option<EnvFile>)> {
    let env_dir = app.engine.state_dir.join("daemon");
    let env_file = EnvFile::write(&env_dir, &req.env)?;
    let mut args: Vec<OsString> = vec!["exec".into()];
    if let Some(file) = &env_file {
        args.push(format!("--env-file={}", file.0.display()).into());
    }
    if let Some(user) = &req.user {
        args.push(format!("--user={user}").into());
    }
    if let Some(cwd) = &req.cwd {
        args.push(format!("--cwd={cwd}").into());
    }
    if let Some(t) = &req.timeout {
        args.push(format!("--timeout={t}").into());
    }
    args.push(name.into());
    args.push("--".into());
    args.extend(req.cmd.iter().map(OsString::from));
    let mut cmd = app.engine.command(&args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if req.stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let child = cmd.spawn().map_err(|e| ApiError::internal(format!("cannot start airlock exec: {e}")))?;
    Ok((child, env_file))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug)]
enum Event {
    Output(Stream, Vec<u8>),
    Exit { code: i32, duration: Duration },
}

/// The next read of a pipe still open (never ready once it is closed).
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Sends what a read gave as an event; false when the pipe is done (end of file, an error, or nobody listens).
async fn forward(n: std::io::Result<usize>, buf: &[u8], stream: Stream, to: &mpsc::Sender<Event>) -> bool {
    match n {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            // A client that went away drops the events; the command's output is then read and dropped.
            let _ = to.send(Event::Output(stream, buf[..n].to_vec())).await;
            true
        }
    }
}

/// Reads what a pipe holds right now with plain non-blocking reads (the pipes are non-blocking), until it is
/// empty (`EAGAIN`: a writer still holds it) or at its end (then it is closed).
async fn drain_now<R: std::os::fd::AsFd>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
    stream: Stream,
    to: &mpsc::Sender<Event>,
) {
    loop {
        let Some(p) = pipe.as_ref() else { return };
        match rustix::io::read(p.as_fd(), &mut *buf) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => {
                let _ = to.send(Event::Output(stream, buf[..n].to_vec())).await;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return,
            Err(_) => {
                *pipe = None;
                return;
            }
        }
    }
}

/// `airlock exec --timeout` exits 124 when the command ran out of time.
const EXIT_TIMED_OUT: i32 = 124;

async fn wait_answer(mut events: mpsc::Receiver<Event>) -> axum::Json<Value> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut truncated = false;
    let mut end = None;
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Output(stream, data) => {
                let buf = if stream == Stream::Stdout { &mut out } else { &mut err };
                let room = MAX_CAPTURE.saturating_sub(buf.len());
                truncated |= data.len() > room;
                buf.extend_from_slice(&data[..data.len().min(room)]);
            }
            Event::Exit { code, duration } => end = Some((code, duration)),
        }
    }
    let (code, duration) = end.unwrap_or((-1, Duration::ZERO));
    let mut answer = json!({
        "exit_code": code,
        "duration_ms": duration.as_millis() as u64,
        "timed_out": code == EXIT_TIMED_OUT,
        "truncated": truncated,
    });
    put_text(&mut answer, "stdout", out);
    put_text(&mut answer, "stderr", err);
    axum::Json(answer)
}

/// `key` as text when the bytes are UTF-8, else `key_b64` (and `key` empty).
fn put_text(answer: &mut Value, key: &str, bytes: Vec<u8>) {
    match String::from_utf8(bytes) {
        Ok(text) => answer[key] = Value::String(text),
        Err(e) => {
            answer[key] = Value::String(String::new());
            answer[format!("{key}_b64")] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(e.into_bytes()));
        }
    }
}

fn stream_answer(pid: Option<u32>, mut events: mpsc::Receiver<Event>) -> Response {
    let first = json!({ "type": "started", "pid": pid });
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let line = |v: Value| {
            let mut text = v.to_string();
            text.push('\n');
            Bytes::from(text)
        };
        // A client gone: sends fail and are ignored; the events are still drained so the exec task never blocks.
        let _ = tx.send(line(first)).await;
        let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        while let Some(ev) = events.recv().await {
            let value = match ev {
                Event::Output(stream, data) => {
                    let slot = &mut pending[stream as usize];
                    slot.extend_from_slice(&data);
                    let Some(v) = output_line(stream, slot) else { continue };
                    v
                }
                Event::Exit { code, duration } => {
                    for stream in [Stream::Stdout, Stream::Stderr] {
                        let rest = std::mem::take(&mut pending[stream as usize]);
                        if !rest.is_empty() {
                            let _ = tx.send(line(raw_line(stream, rest))).await;
                        }
                    }
                    json!({ "type": "exit", "exit_code": code, "timed_out": code == EXIT_TIMED_OUT,
                            "duration_ms": duration.as_millis() as u64 })
                }
            };
            let _ = tx.send(line(value)).await;
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response()
}

fn kind(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

/// The UTF-8 text in `pending` as one event, keeping a character cut at the chunk's end for the next one. Bytes
/// that are not UTF-8 go as `data_b64`.
fn output_line(stream: Stream, pending: &mut Vec<u8>) -> Option<Value> {
    match std::str::from_utf8(pending) {
        Ok(_) => Some(raw_line(stream, std::mem::take(pending))),
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            let rest = pending.split_off(e.valid_up_to());
            let text = std::mem::replace(pending, rest);
            Some(raw_line(stream, text))
        }
        Err(e) if e.error_len().is_none() => None,
        Err(_) => Some(raw_line(stream, std::mem::take(pending))),
    }
}

fn raw_line(stream: Stream, bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(text) => json!({ "type": kind(stream), "data": text }),
        Err(e) => json!({ "type": kind(stream), "data": "",
                          "data_b64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_between_chunks_waits_for_its_rest() {
        let mut pending = "é".as_bytes()[..1].to_vec();
        assert!(output_line(Stream::Stdout, &mut pending).is_none());
        pending.extend_from_slice(&"é".as_bytes()[1..]);
        assert_eq!(output_line(Stream::Stdout, &mut pending).unwrap()["data"], "é");
        let mut bad = vec![0xff, b'a'];
        assert!(output_line(Stream::Stderr, &mut bad).unwrap().get("data_b64").is_some());
    }
}
