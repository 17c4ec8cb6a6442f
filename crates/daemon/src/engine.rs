//! The sandbox engine, as the daemon drives it: the `airlock` binary's own subcommands, run as child processes.
//!
//! Why processes and not calls into the runtime crate: the daemon is a multi-threaded tokio program, and a
//! process can enter a new user namespace only while it has one thread; the setup after `clone` must also stay
//! async-signal-safe. So every sandbox operation is a fresh single-threaded `airlock` process (as containerd
//! drives runc), with the same code paths, checks and audit records as the CLI. It also gives crash safety for
//! free: a sandbox's supervisor is its own process group, so `kill -9` of the daemon leaves every sandbox
//! running, and what a sandbox keeps is the CLI's state directory, which a restarted daemon reads again.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{ApiError, Code};

/// How the daemon runs `airlock`.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The `airlock` executable (the daemon's own).
    pub exe: PathBuf,
    /// `AIRLOCK_STATE_DIR` for every child: the daemon's state directory.
    pub state_dir: PathBuf,
}

/// What a finished `airlock` subcommand printed.
#[derive(Debug)]
pub struct Finished {
    pub status: i32,
    pub stdout: Vec<u8>,
    /// The `airlock:` lines, without the prefix, joined.
    pub message: String,
}

impl Finished {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

impl Engine {
    /// A command for `airlock ARGS`, with the daemon's state directory.
    pub fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.exe);
        // A daemon started with AIRLOCK_HOST set must not have its engine children talk to a daemon (itself).
        cmd.args(args)
            .env("AIRLOCK_STATE_DIR", &self.state_dir)
            .env_remove("AIRLOCK_HOST")
            .stdin(Stdio::null())
            .kill_on_drop(false);
        cmd
    }

    /// Runs `airlock ARGS` to the end, with `stdin` (or nothing) on its standard input.
    pub async fn run(&self, args: &[OsString], stdin: Option<&[u8]>) -> Result<Finished, ApiError> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ApiError::internal(format!("cannot start {} {}: {e}", self.exe.display(), first_arg(args))))?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A command that does not read its input closes the pipe: not an error of ours.
            let _ = pipe.write_all(data).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| ApiError::internal(format!("cannot wait for airlock {}: {e}", first_arg(args))))?;
        Ok(Finished {
            status: out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0)),
            stdout: out.stdout,
            message: airlock_lines(&out.stderr),
        })
    }

    /// Runs `airlock ARGS` and turns a failure into the API's error (see [`classify`]).
    pub async fn run_ok(&self, args: &[OsString]) -> Result<Finished, ApiError> {
        let done = self.run(args, None).await?;
        if done.ok() {
            Ok(done)
        } else {
            Err(classify(&done))
        }
    }
}

fn first_arg(args: &[OsString]) -> String {
    args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The `airlock:` lines a subcommand printed on stderr, without the prefix, joined with `; `.
pub fn airlock_lines(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| l.strip_prefix("airlock: ").unwrap_or(l).trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A failed subcommand as an API error. The CLI's exit status 125 says setup failure or, with its usage line
/// (`... (see `airlock CMD --help`)`), bad arguments; its one line says the rest, in wording the CLI's tests hold
/// stable.
pub fn classify(done: &Finished) -> ApiError {
    let msg = if done.message.is_empty() {
        format!("airlock exited with status {}", done.status)
    } else {
        done.message.clone()
    };
    let usage = msg.ends_with("--help`)");
    let code = if done.status == 125 && !usage {
        Code::SetupFailed
    } else if msg.starts_with("no sandbox named") || msg.contains("no checkpoint") || msg.contains("has no checkpoint")
    {
        Code::NotFound
    } else if msg.contains("is running")
        || msg.contains("not running")
        || msg.contains("exists already")
        || msg.contains("another airlock")
        || msg.contains("conflict")
    {
        Code::Conflict
    } else {
        Code::BadRequest
    };
    ApiError::new(code, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(status: i32, message: &str) -> Finished {
        Finished { status, stdout: Vec::new(), message: message.to_string() }
    }

    #[test]
    fn failures_map_to_the_contract_codes() {
        assert_eq!(classify(&done(125, "cannot mount")).code, Code::SetupFailed);
        assert_eq!(classify(&done(1, "no sandbox named x (see `airlock ls`)")).code, Code::NotFound);
        assert_eq!(
            classify(&done(1, "sandbox x is running; its layer can change only once it has ended")).code,
            Code::Conflict
        );
        assert_eq!(
            classify(&done(125, "unexpected argument '--x' found (see `airlock diff --help`)")).code,
            Code::BadRequest
        );
    }

    #[test]
    fn stderr_lines_lose_their_prefix() {
        assert_eq!(airlock_lines(b"airlock: one\n\nairlock: two\n"), "one; two");
    }
}
