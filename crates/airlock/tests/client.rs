//! The CLI against a daemon (`--host`, `AIRLOCK_HOST`): the same commands, answered by a real `airlock serve`
//! over its Unix socket or TCP with a token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/daemon.rs"]
mod daemon_client;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{code, stderr, stdout, TempDir};
use daemon_client::{wait_for, Daemon};

/// `airlock ARGS` with `AIRLOCK_HOST=host` (and the token, if any), `input` on its standard input.
fn remote(host: &str, token: Option<&str>, args: &[&str], input: Option<&str>) -> Output {
    let mut cmd = Command::new(common::airlock_path());
    cmd.args(args)
        .env("AIRLOCK_HOST", host)
        // A state directory of its own: a command that wrongly ran locally finds nothing there.
        .env("AIRLOCK_STATE_DIR", "/nonexistent/airlock-client-test")
        .env_remove("AIRLOCK_TOKEN")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("AIRLOCK_TOKEN", t);
    }
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = input {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn one_airlock_line(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "expected one line: {err}");
    assert!(err.starts_with("airlock: ") && err.contains(needle), "unexpected: {err}");
}

#[test]
fn the_cli_drives_a_daemon_over_its_socket() {
    require_sandbox!();
    let _user = require_test_user!();
    let d = Daemon::start("client-unix", &[]);
    let host = format!("unix://{}", d.socket.display());
    let ws = TempDir::new("client-ws");
    std::fs::write(ws.path().join("a.txt"), "host\n").unwrap();
    ws.chown_to_test_user();
    let name = format!("cli-{}", std::process::id());
    let r = |args: &[&str]| remote(&host, None, args, None);

    let o = r(&["create", "--workspace", ws.str(), "--env", "FROM=create", &name]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // It is the daemon's: its state directory has it.
    assert!(d.state.join("sandboxes").join(&name).exists());

    // exec: output on the right streams, the command's exit status, stdin, env, cwd.
    let o = r(&["exec", &name, "--", "sh", "-c", "echo out; echo err >&2; echo $FROM; exit 4"]);
    assert_eq!((code(&o), stdout(&o), stderr(&o)), (4, "out\ncreate\n".to_string(), "err\n".to_string()));
    let o = remote(
        &host,
        None,
        &["exec", "--env", "X=1", "--cwd", "/tmp", &name, "--", "sh", "-c", "cat; echo $X; pwd"],
        Some("piped\n"),
    );
    assert_eq!(stdout(&o), "piped\n1\n/tmp\n", "{}", stderr(&o));
    // Bytes that are not UTF-8 come through as bytes; an env file as the local exec reads it.
    let o = r(&["exec", &name, "--", "printf", "\\377\\376"]);
    assert_eq!(o.stdout, vec![0xff, 0xfe]);
    let env_file = ws.path().join("vars.env");
    std::fs::write(&env_file, "# vars\nA=1\nB=two words\n").unwrap();
    let o = r(&["exec", "--env-file", env_file.to_str().unwrap(), &name, "--", "sh", "-c", "echo \"$A|$B\""]);
    assert_eq!(stdout(&o), "1|two words\n", "{}", stderr(&o));
    let o = r(&["exec", "--timeout", "1s", &name, "--", "sleep", "30"]);
    assert_eq!(code(&o), 124);
    one_airlock_line(&o, "timed out");

    // The workspace commands.
    assert_eq!(code(&r(&["exec", &name, "--", "sh", "-c", "echo new > b.txt"])), 0);
    let o = r(&["diff", &name]);
    assert_eq!(stdout(&o), "A  b.txt\n", "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&r(&["diff", "--json", &name]))).unwrap();
    assert_eq!(v["changes"][0]["path"], "b.txt");
    // Excludes go to the daemon as query parameters (diff) and body fields (commit).
    assert_eq!(code(&r(&["exec", &name, "--", "sh", "-c", "echo j > j.pyc; mkdir venv; echo v > venv/v"])), 0);
    let o = r(&["diff", &name, "--exclude", "*.pyc", "--exclude", "venv/"]);
    assert_eq!(
        stdout(&o),
        "A  b.txt
3 paths excluded (*.pyc, venv/)
",
        "{}",
        stderr(&o)
    );
    assert_eq!(code(&r(&["checkpoint", &name, "c1"])), 0);
    assert!(stdout(&r(&["checkpoints", &name])).contains("c1"));
    assert_eq!(code(&r(&["exec", &name, "--", "sh", "-c", "echo more > c.txt"])), 0);
    assert_eq!(code(&r(&["rollback", &name, "c1"])), 0);
    let o = r(&["commit", &name, "--exclude=*.pyc", "--exclude", "venv/"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).ends_with("\n3 paths excluded, left in the layer\n"), "{}", stdout(&o));
    assert!(!ws.path().join("j.pyc").exists() && !ws.path().join("venv").exists());
    assert_eq!(std::fs::read_to_string(ws.path().join("b.txt")).unwrap(), "new\n");
    assert!(!ws.path().join("c.txt").exists());
    assert!(stdout(&r(&["logs", &name])).lines().count() >= 3);

    // ls, text and JSON.
    assert!(stdout(&r(&["ls"])).lines().any(|l| l.starts_with(&name) && l.contains("running")));
    let v: serde_json::Value = serde_json::from_str(&stdout(&r(&["ls", "--json"]))).unwrap();
    assert!(v["sandboxes"].as_array().unwrap().iter().any(|s| s["name"] == name.as_str()));

    // Errors: one line, the local CLI's exit statuses.
    let o = r(&["exec", "no-such-sandbox", "--", "true"]);
    assert_eq!(code(&o), 1);
    one_airlock_line(&o, "no sandbox named no-such-sandbox");
    let o = r(&["run", "--", "true"]);
    assert_eq!(code(&o), 125);
    one_airlock_line(&o, "daemonless");
    let o = r(&["create", "--bind", "/tmp", "other"]);
    assert_eq!(code(&o), 125);
    one_airlock_line(&o, "--bind");
    let o = remote("unix:///nonexistent/airlock.sock", None, &["exec", &name, "--", "true"], None);
    assert_eq!(code(&o), 125);
    one_airlock_line(&o, "/nonexistent/airlock.sock");
    let o = remote("unix:///nonexistent/airlock.sock", None, &["ls"], None);
    assert_eq!(code(&o), 1);
    let o = remote("tcp://nowhere", None, &["ls"], None);
    assert_ne!(code(&o), 0);
    one_airlock_line(&o, "expected unix:///path/to/socket or http://host:port");
    // --host wins over AIRLOCK_HOST.
    let o = remote("unix:///nonexistent/airlock.sock", None, &["--host", &host, "ls"], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // stop (kept), then rm.
    assert_eq!(code(&r(&["stop", &name])), 0);
    assert!(stdout(&r(&["ls"])).lines().any(|l| l.starts_with(&name) && l.contains("exited")));
    assert_eq!(code(&r(&["rm", &name])), 0);
    assert!(!d.state.join("sandboxes").join(&name).exists());
    // Without AIRLOCK_HOST the CLI is daemonless again: its own state directory does not know the daemon's.
    let o = common::airlock(&["exec", &name, "--", "true"]);
    assert_eq!(code(&o), 1);
}

#[test]
fn the_cli_over_tcp_sends_the_token() {
    require_sandbox!();
    let dir = TempDir::new("client-tcp");
    let token = "client-test-token-0123456789abcdef";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start("client-tcp-d", &["--listen", &addr, "--token-file", token_file.to_str().unwrap()]);
    wait_for("the TCP listener", 20, || std::net::TcpStream::connect(&addr).is_ok());
    let host = format!("http://{addr}");
    let o = remote(&host, None, &["ls"], None);
    assert_eq!(code(&o), 1);
    one_airlock_line(&o, "token");
    let o = remote(&host, Some("wrong-token-wrong-token"), &["create", "x"], None);
    assert_ne!(code(&o), 0);
    assert!(d.sandbox_dirs().is_empty(), "a refused request created something");
    let name = format!("tcp-{}", std::process::id());
    let o = remote(&host, Some(token), &["create", &name], None);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = remote(&host, Some(token), &["exec", &name, "--", "echo", "over tcp"], None);
    assert_eq!(stdout(&o), "over tcp\n", "{}", stderr(&o));
    // Through a daemon, rm is its DELETE: a running sandbox is stopped, then removed.
    assert_eq!(code(&remote(&host, Some(token), &["rm", &name], None)), 0);
    assert!(d.sandbox_dirs().is_empty());
    // The token never goes in the clear to a host that is not loopback unless asked.
    let o = remote("http://192.0.2.1:9", Some(token), &["ls"], None);
    assert_ne!(code(&o), 0);
    one_airlock_line(&o, "AIRLOCK_TOKEN_INSECURE");
}
