//! The tools without a daemon: each is `airlock`'s own subcommand, run as a child process (as the daemon's engine
//! does, for the same reason: this server is a multi-threaded tokio program, and only a fresh single-threaded
//! process may enter a sandbox's namespaces). The children get this server's environment (`AIRLOCK_STATE_DIR`
//! included) without `AIRLOCK_HOST`, and never this server's standard output, which carries the MCP session.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::backend::{FileAnswer, SandboxRequest, MAX_FILE, MAX_OUTPUT};
use crate::error::ToolError;

/// `airlock __files`' exit status for a missing file.
const FILES_NOT_FOUND: i32 = 3;

/// How long output is still read after a command's process exited when a pipe stays open (a background process
/// it left holds it).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The `airlock` executable this server runs.
#[derive(Debug, Clone)]
pub struct Local {
    pub exe: PathBuf,
}

/// What a finished subcommand printed.
#[derive(Debug)]
struct Finished {
    status: i32,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    stderr: Vec<u8>,
    stderr_truncated: bool,
}

impl Finished {
    /// The `airlock:` lines on stderr, without the prefix, joined with `; ` (or the status when there are none).
    fn message(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr)
            .lines()
            .map(|l| l.strip_prefix("airlock: ").unwrap_or(l).trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if text.is_empty() {
            format!("airlock exited with status {}", self.status)
        } else {
            text
        }
    }
}

#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Reads a pipe into `into`, keeping at most `cap` bytes (the rest read and dropped).
async fn capture<R: AsyncRead + Unpin>(mut pipe: R, cap: usize, into: Arc<Mutex<Capture>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut c) = into.lock() else { return };
                let room = cap.saturating_sub(c.bytes.len());
                c.truncated |= n > room;
                let keep = n.min(room);
                c.bytes.extend_from_slice(&buf[..keep]);
            }
        }
    }
}

fn taken(c: &Arc<Mutex<Capture>>) -> (Vec<u8>, bool) {
    match c.lock() {
        Ok(mut c) => (std::mem::take(&mut c.bytes), c.truncated),
        Err(_) => (Vec::new(), true),
    }
}

fn name_args(sub: &str, flags: &[String], name: &str, rest: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![sub.into()];
    args.extend(flags.iter().map(OsString::from));
    args.push("--".into());
    args.push(name.into());
    args.extend(rest.iter().map(OsString::from));
    args
}

fn json_of(stdout: &[u8], what: &str) -> Result<Value, ToolError> {
    serde_json::from_slice(stdout).map_err(|e| ToolError::Malformed(format!("airlock {what} printed no JSON: {e}")))
}

impl Local {
    /// Runs `airlock ARGS` to the end with `stdin` (or nothing) on its input; stdout kept up to `cap` bytes.
    async fn run(&self, args: Vec<OsString>, stdin: Option<Vec<u8>>, cap: usize) -> Result<Finished, ToolError> {
        let what = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
        let spawn_error = |source: std::io::Error| ToolError::Spawn {
            exe: self.exe.display().to_string(),
            what: what.clone(),
            source,
        };
        let mut cmd = Command::new(&self.exe);
        cmd.args(&args)
            .env_remove("AIRLOCK_HOST")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(spawn_error)?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Beside the readers: a child that fills its output before reading its input must not deadlock us. A
            // child that does not read its input closes the pipe: not an error of ours.
            tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
            });
        }
        let (out, err) = (Arc::new(Mutex::new(Capture::default())), Arc::new(Mutex::new(Capture::default())));
        let mut readers = Vec::new();
        if let Some(pipe) = child.stdout.take() {
            readers.push(tokio::spawn(capture(pipe, cap, out.clone())));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.push(tokio::spawn(capture(pipe, MAX_OUTPUT, err.clone())));
        }
        let status = child.wait().await.map_err(spawn_error)?;
        let grace = tokio::time::Instant::now() + DRAIN_GRACE;
        for reader in readers {
            let abort = reader.abort_handle();
            if tokio::time::timeout_at(grace, reader).await.is_err() {
                abort.abort();
            }
        }
        let (stdout, stdout_truncated) = taken(&out);
        let (stderr, stderr_truncated) = taken(&err);
        Ok(Finished {
            status: status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout,
            stdout_truncated,
            stderr,
            stderr_truncated,
        })
    }

    /// Runs `airlock ARGS`; a non-zero status is a refusal with airlock's own sentence.
    async fn run_ok(&self, args: Vec<OsString>) -> Result<Finished, ToolError> {
        let done = self.run(args, None, MAX_OUTPUT).await?;
        if done.status != 0 {
            return Err(ToolError::Refused(done.message()));
        }
        Ok(done)
    }

    /// `airlock ls --json`'s entry for `name`, or the refusal that it does not exist.
    async fn entry(&self, name: &str) -> Result<Value, ToolError> {
        let list = self.list().await?;
        list["sandboxes"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name).cloned())
            .ok_or_else(|| ToolError::Refused(format!("no sandbox named {name} (see list_sandboxes)")))
    }

    pub async fn create(&self, name: &str, req: &SandboxRequest) -> Result<Value, ToolError> {
        let mut flags = Vec::new();
        if let Some(image) = &req.image {
            flags.push(format!("--image={image}"));
        }
        if let Some(w) = &req.workspace {
            flags.push(format!("--workspace={w}"));
        }
        flags.extend(req.allow.iter().map(|a| format!("--allow={a}")));
        if let Some(t) = &req.timeout {
            flags.push(format!("--timeout={t}"));
        }
        self.run_ok(name_args("create", &flags, name, &[])).await?;
        Ok(json!({ "name": name }))
    }

    pub async fn exec(&self, name: &str, argv: &[String], timeout: Option<&str>) -> Result<Value, ToolError> {
        // `airlock exec`'s own refusals and the command's failures share its exit status: which sandbox exists
        // is asked first, so a status is the command's.
        let entry = self.entry(name).await?;
        if entry["state"] != "running" {
            return Err(ToolError::Refused(format!("sandbox {name} is not running (it has exited)")));
        }
        let flags: Vec<String> = timeout.map(|t| format!("--timeout={t}")).into_iter().collect();
        let done = self.run(name_args("exec", &flags, name, argv), None, MAX_OUTPUT).await?;
        Ok(json!({
            "exit_code": done.status,
            "stdout": String::from_utf8_lossy(&done.stdout),
            "stderr": String::from_utf8_lossy(&done.stderr),
            "timed_out": timeout.is_some() && done.status == crate::backend::EXIT_TIMED_OUT,
            "truncated": done.stdout_truncated || done.stderr_truncated,
        }))
    }

    /// A failed `airlock __files`: its sentence (it says no such file, permission denied, a directory to write…).
    fn files_error(done: &Finished) -> ToolError {
        let message = done.message();
        if done.status == FILES_NOT_FOUND && !message.contains("o such file") {
            return ToolError::Refused(format!("no such file: {message}"));
        }
        ToolError::Refused(message)
    }

    pub async fn write(&self, name: &str, path: &str, content: Vec<u8>) -> Result<(), ToolError> {
        let args: Vec<OsString> = vec!["__files".into(), "put".into(), "--".into(), name.into(), path.into()];
        let done = self.run(args, Some(content), MAX_OUTPUT).await?;
        if done.status != 0 {
            return Err(Self::files_error(&done));
        }
        Ok(())
    }

    pub async fn read(&self, name: &str, path: &str) -> Result<FileAnswer, ToolError> {
        let args: Vec<OsString> = vec!["__files".into(), "get".into(), "--".into(), name.into(), path.into()];
        let done = self.run(args, None, MAX_FILE + 4096).await?;
        if done.status != 0 {
            return Err(Self::files_error(&done));
        }
        let Some(end) = done.stdout.iter().position(|&b| b == b'\n') else {
            return Err(ToolError::Malformed("airlock __files printed no header".into()));
        };
        let header = json_of(&done.stdout[..end], "__files")?;
        if header["type"] == "dir" {
            return Ok(FileAnswer::Dir(header["entries"].clone()));
        }
        if done.stdout_truncated {
            return Err(ToolError::Refused(format!(
                "{path} is larger than {} MiB, the most read_file returns",
                MAX_FILE >> 20
            )));
        }
        Ok(FileAnswer::File(done.stdout[end + 1..].to_vec()))
    }

    pub async fn diff(&self, name: &str) -> Result<Value, ToolError> {
        let done = self.run_ok(name_args("diff", &["--json".into()], name, &[])).await?;
        json_of(&done.stdout, "diff --json")
    }

    pub async fn commit(&self, name: &str, paths: &[String]) -> Result<Value, ToolError> {
        let done = self.run(name_args("commit", &[], name, paths), None, MAX_OUTPUT).await?;
        if done.status != 0 {
            let mut message = done.message();
            let conflicts: Vec<String> = String::from_utf8_lossy(&done.stdout).lines().map(str::to_string).collect();
            if message.starts_with("commit refused") && !conflicts.is_empty() {
                message.push_str(&format!(": {}", conflicts.join(", ")));
            }
            return Err(ToolError::Refused(message));
        }
        // "committed 3 changes to /ws"
        let count: u64 =
            String::from_utf8_lossy(&done.stdout).split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        Ok(json!({ "committed": count }))
    }

    pub async fn checkpoint(&self, name: &str, label: &str) -> Result<(), ToolError> {
        self.run_ok(name_args("checkpoint", &[], name, &[label.to_string()])).await?;
        Ok(())
    }

    pub async fn rollback(&self, name: &str, label: &str) -> Result<(), ToolError> {
        self.run_ok(name_args("rollback", &[], name, &[label.to_string()])).await?;
        Ok(())
    }

    pub async fn logs(&self, name: &str) -> Result<Vec<u8>, ToolError> {
        Ok(self.run_ok(name_args("logs", &["--json".into()], name, &[])).await?.stdout)
    }

    pub async fn list(&self) -> Result<Value, ToolError> {
        let done = self.run_ok(vec!["ls".into(), "--json".into()]).await?;
        json_of(&done.stdout, "ls --json")
    }

    /// Stops the sandbox (when it runs) and removes it and everything it kept.
    pub async fn destroy(&self, name: &str) -> Result<(), ToolError> {
        let entry = self.entry(name).await?;
        if entry["state"] == "running" {
            let stopped = self.run(name_args("stop", &[], name, &[]), None, MAX_OUTPUT).await?;
            // "not running": it ended between the look and the stop, which is what was wanted.
            if stopped.status != 0 && !stopped.message().contains("not running") {
                return Err(ToolError::Refused(stopped.message()));
            }
        }
        // The supervisor writes its last records after init is gone; a removal racing them can find the
        // directory refilled under it. Retried briefly, then its sentence.
        let mut last = None;
        for attempt in 0..20u64 {
            let done = self.run(name_args("rm", &[], name, &[]), None, MAX_OUTPUT).await?;
            if done.status == 0 || done.message().starts_with("no sandbox named") {
                return Ok(());
            }
            last = Some(done.message());
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
        Err(ToolError::Refused(last.unwrap_or_default()))
    }
}
