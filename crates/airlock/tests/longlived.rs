//! Long-lived sandboxes: `airlock create`, `exec`, `stop`, and what `ls`, `diff` and `rm` say about them, as
//! root and rootless. Real namespaces, real overlayfs, real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{code, ok, stderr, stdout, TempDir};

fn airlock_as(run_as_user: bool) -> fn(&[&str]) -> Output {
    if run_as_user {
        common::airlock_as_user
    } else {
        common::airlock
    }
}

fn state_uid(run_as_user: bool) -> u32 {
    if run_as_user {
        common::test_user_uid()
    } else {
        0
    }
}

fn sandbox_dir(run_as_user: bool, name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(common::test_state_dir(state_uid(run_as_user))).join("sandboxes").join(name)
}

/// A workspace owned by the test user (as root, the sandbox's identity then maps to that owner).
fn workspace(tag: &str) -> TempDir {
    let ws = TempDir::new(tag);
    fs::write(ws.path().join("a.txt"), "original\n").unwrap();
    ws.chown_to_test_user();
    ws
}

fn unique_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// A numeric field of `sandbox.json`.
fn record_number(run_as_user: bool, name: &str, field: &str) -> i64 {
    let text = fs::read_to_string(sandbox_dir(run_as_user, name).join("sandbox.json")).unwrap();
    let key = format!("\"{field}\":");
    let at = text.find(&key).unwrap_or_else(|| panic!("{field} missing from {text}")) + key.len();
    text[at..].trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing"))
        .trim()
        .to_string()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                found.push(name);
            }
        }
    }
    found
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(15), "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops and removes a created sandbox when the test ends, passed or failed (a failed assertion must not leave
/// a sandbox running). Both are no-ops if the test already did it.
struct Cleanup {
    name: String,
    airlock: fn(&[&str]) -> Output,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = (self.airlock)(&["stop", &self.name]);
        let _ = (self.airlock)(&["rm", &self.name]);
    }
}

/// One `airlock:` line on stderr.
#[track_caller]
fn one_airlock_line(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    assert!(err.starts_with("airlock: ") && err.contains(needle), "unexpected message: {err}");
}

fn check_lifecycle(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("ll");
    let name = unique_name("ll");
    let _cleanup = Cleanup { name: name.clone(), airlock };
    let o = airlock(&["create", "--workspace", ws.str(), "--hostname", "llhost", &name]);
    assert_eq!(code(&o), 0, "create failed: {}", stderr(&o));
    assert!(ok(&airlock(&["ls"])).lines().any(|l| l.starts_with(&name) && l.contains("running")));

    // Same hostname, same /tmp, same workspace layer from one exec to the next.
    let out = ok(&airlock(&["exec", &name, "--", "sh", "-c", "hostname; echo one > /tmp/m; echo edited > a.txt"]));
    assert_eq!(out, "llhost\n");
    assert_eq!(ok(&airlock(&["exec", &name, "--", "sh", "-c", "cat /tmp/m; cat a.txt"])), "one\nedited\n");
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "original\n", "the host workspace changed");
    // diff works while it runs.
    assert!(ok(&airlock(&["diff", &name])).contains("a.txt"));
    // --env adds a variable.
    assert_eq!(ok(&airlock(&["exec", "--env", "FOO=bar", &name, "--", "sh", "-c", "echo $FOO"])), "bar\n");

    // The same protections as run's command, in the sandbox's user namespace.
    let status = ok(&airlock(&["exec", &name, "--", "cat", "/proc/self/status"]));
    assert_eq!(status_field(&status, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    let init_pid = record_number(as_user, &name, "init_pid");
    let init_map = fs::read_to_string(format!("/proc/{init_pid}/uid_map")).unwrap();
    let exec_map = ok(&airlock(&["exec", &name, "--", "cat", "/proc/self/uid_map"]));
    assert_eq!(exec_map, init_map, "exec is not in the sandbox's user namespace");

    // Init still holds the namespace's capabilities: an exec'd command cannot reach into it.
    let probe = "cat /proc/1/environ >/dev/null 2>&1 || echo environ-denied; ls /proc/1/root/ >/dev/null 2>&1 || echo root-denied";
    assert_eq!(ok(&airlock(&["exec", &name, "--", "sh", "-c", probe])), "environ-denied\nroot-denied\n");

    // Two execs at once: each waits until it sees the other's file.
    let script = "touch /tmp/p$1; i=0; while [ $i -lt 100 ]; do [ -e /tmp/p$2 ] && echo met && exit 0; \
                  sleep 0.1; i=$((i+1)); done; exit 9";
    let (n1, n2) = (name.clone(), name.clone());
    let a = std::thread::spawn(move || airlock(&["exec", &n1, "--", "sh", "-c", script, "sh", "a", "b"]));
    let b = std::thread::spawn(move || airlock(&["exec", &n2, "--", "sh", "-c", script, "sh", "b", "a"]));
    assert_eq!(ok(&a.join().unwrap()), "met\n");
    assert_eq!(ok(&b.join().unwrap()), "met\n");

    // Exit statuses as run's.
    assert_eq!(code(&airlock(&["exec", &name, "--", "sh", "-c", "exit 3"])), 3);
    let o = airlock(&["exec", &name, "--", "no-such-command-here"]);
    assert_eq!(code(&o), 127);
    one_airlock_line(&o, "not found");

    // A long command ends with the sandbox.
    let n = name.clone();
    let sleeper = std::thread::spawn(move || airlock(&["exec", &n, "--", "sleep", "1000"]));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    ok(&airlock(&["stop", &name]));
    let o = sleeper.join().unwrap();
    assert_ne!(code(&o), 0);
    assert!(started.elapsed() < Duration::from_secs(10));

    // After stop.
    assert!(ok(&airlock(&["ls"])).lines().any(|l| l.starts_with(&name) && l.contains("exited")));
    let o = airlock(&["exec", &name, "--", "true"]);
    assert_eq!(code(&o), 1);
    one_airlock_line(&o, "not running");
    let o = airlock(&["stop", &name]);
    assert_eq!(code(&o), 1);
    one_airlock_line(&o, "not running");
    assert!(ok(&airlock(&["diff", &name])).contains("a.txt"));
    ok(&airlock(&["rm", &name]));
    assert!(!sandbox_dir(as_user, &name).exists());
}

#[test]
fn create_exec_stop_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_lifecycle(false);
}

#[test]
fn create_exec_stop_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_lifecycle(true);
}

fn check_supervisor_killed(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("llkill");
    let name = unique_name("llkill");
    let _cleanup = Cleanup { name: name.clone(), airlock };
    ok(&airlock(&["create", "--workspace", ws.str(), &name]));
    ok(&airlock(&["exec", &name, "--", "sh", "-c", "echo x > a.txt"]));
    let marker = format!("marker-{name}");
    let script = format!("nohup sh -c 'sleep 1000; : {marker}' >/dev/null 2>&1 & sleep 1000; : {marker}");
    let n = name.clone();
    let exec = std::thread::spawn(move || airlock(&["exec", &n, "--", "sh", "-c", &script]));
    wait_until("the marked processes run", || processes_with(&marker).len() >= 2);

    let supervisor = record_number(as_user, &name, "supervisor_pid");
    assert!(std::process::Command::new("kill").args(["-KILL", &supervisor.to_string()]).status().unwrap().success());
    let o = exec.join().unwrap();
    assert_ne!(code(&o), 0);
    wait_until("nothing of the sandbox survives", || processes_with(&marker).is_empty());

    let o = airlock(&["exec", &name, "--", "true"]);
    assert_eq!(code(&o), 1);
    one_airlock_line(&o, "not running");
    assert!(ok(&airlock(&["ls"])).lines().any(|l| l.starts_with(&name) && l.contains("exited")));
    assert!(ok(&airlock(&["diff", &name])).contains("a.txt"));
    ok(&airlock(&["rm", &name]));
}

#[test]
fn supervisor_killed_takes_everything_down_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_supervisor_killed(false);
}

#[test]
fn supervisor_killed_takes_everything_down_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_supervisor_killed(true);
}

fn check_bad_create(as_user: bool) {
    let airlock = airlock_as(as_user);
    // Rejected before the supervisor starts, and by the supervisor's setup.
    for bad in [vec!["--memory", "lots"], vec!["--rootfs", "/nonexistent-airlock-rootfs"], vec!["-t"]] {
        let name = unique_name("llbad");
        let mut args = vec!["create"];
        args.extend(bad.iter().copied());
        args.push(&name);
        let o = airlock(&args);
        assert_eq!(code(&o), 125, "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("airlock: "), "{bad:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty());
        assert!(!sandbox_dir(as_user, &name).exists(), "{bad:?} left state behind");
    }
    // An existing name.
    let name = unique_name("lldup");
    let _cleanup = Cleanup { name: name.clone(), airlock };
    ok(&airlock(&["create", &name]));
    let o = airlock(&["create", &name]);
    assert_eq!(code(&o), 125);
    one_airlock_line(&o, "exists already");
    ok(&airlock(&["stop", &name]));
    ok(&airlock(&["rm", &name]));
}

#[test]
fn bad_create_leaves_nothing_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_bad_create(false);
}

#[test]
fn bad_create_leaves_nothing_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_bad_create(true);
}

#[test]
fn exec_runs_under_the_sandboxes_limits() {
    require_sandbox!();
    if !common::is_root() {
        skip_or_fail!("cgroup limits need host root on this host (run the tests as root)");
    }
    let name = unique_name("lllim");
    let _cleanup = Cleanup { name: name.clone(), airlock: common::airlock };
    let o = common::airlock(&["create", "--pids", "6", &name]);
    if code(&o) != 0 {
        skip_or_fail!("no cgroup limits here: {}", stderr(&o).trim());
    }
    // Init, the `airlock exec` process and the shell leave room for three of the eight sleeps.
    let o = common::airlock(&["exec", &name, "--", "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait"]);
    assert!(stderr(&o).contains("fork"), "the pids limit did not apply to exec: {}", stderr(&o));
    let stats = ok(&common::airlock(&["stats", &name]));
    assert!(stats.contains("limit 6"), "{stats}");
    ok(&common::airlock(&["stop", &name]));
    ok(&common::airlock(&["rm", &name]));
}

/// `airlock ARGS...` (as root, or as the test user) on a new pseudo-terminal of `rows`x`cols` driven by
/// `common::PTY_DRIVER` with its `driver_opts`; returns what the terminal showed, without carriage returns.
fn airlock_on_pty(as_user: bool, python: &str, rows: u16, cols: u16, driver_opts: &[&str], args: &[&str]) -> String {
    let mut cmd = Command::new(python);
    cmd.args(["-c", common::PTY_DRIVER, &rows.to_string(), &cols.to_string()]).args(driver_opts);
    if as_user {
        let uid = common::test_user_uid().to_string();
        let state = format!("AIRLOCK_STATE_DIR={}", common::test_state_dir(common::test_user_uid()));
        cmd.args(["setpriv", "--reuid", &uid, "--regid", &uid, "--clear-groups", "--reset-env", "--"])
            .args(["/usr/bin/env", &state])
            .arg(common::shared_binary())
            .current_dir("/");
    } else {
        cmd.arg(common::airlock_path()).env("AIRLOCK_STATE_DIR", common::test_state_dir(0));
    }
    let o = cmd.args(args).stdin(Stdio::null()).output().unwrap();
    ok(&o).replace('\r', "")
}

fn check_exec_tty(as_user: bool) {
    let Some(python) = common::python3() else {
        skip_or_fail!("python3 is not installed: it drives the pseudo-terminal");
    };
    let airlock = airlock_as(as_user);
    let name = unique_name("lltty");
    let _cleanup = Cleanup { name: name.clone(), airlock };
    ok(&airlock(&["create", &name]));

    // A terminal of the sandbox's own devpts (its first: `create` made none), the caller's size, the status.
    let script = "tty; stty size; ls /dev/pts; exit 4";
    let out = airlock_on_pty(as_user, python, 40, 100, &[], &["exec", "-t", &name, "--", "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines.first(), Some(&"/dev/pts/0"), "not the sandbox's own terminal: {out}");
    assert_eq!(lines.get(1), Some(&"40 100"), "not the caller's window size: {out}");
    let pts: Vec<&str> =
        lines.iter().skip(2).take(lines.len().saturating_sub(3)).flat_map(|l| l.split_whitespace()).collect();
    assert_eq!(pts, ["0", "ptmx"], "/dev/pts is not the sandbox's own: {out}");
    assert_eq!(lines.last(), Some(&"EXIT 4"), "{out}");

    // Typed input reaches the command through the relay; ^D ends it.
    let opts = ["--type", "hello-tty\n^D"];
    let out = airlock_on_pty(as_user, python, 24, 80, &opts, &["exec", "-t", &name, "--", "cat"]);
    // Once as the terminal echoes it, once as cat writes it back.
    assert_eq!(out.matches("hello-tty\n").count(), 2, "{out}");
    assert_eq!(out.lines().last(), Some("EXIT 0"), "{out}");

    ok(&airlock(&["stop", &name]));
    ok(&airlock(&["rm", &name]));
}

#[test]
fn exec_tty_gives_a_terminal_of_the_sandbox_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_exec_tty(false);
}

#[test]
fn exec_tty_gives_a_terminal_of_the_sandbox_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_exec_tty(true);
}

/// The workspace's tree: every path with its type, mode and link target, then every file's contents (and so its
/// size; a directory's size depends on the filesystem holding the layer, so it is left out).
const TREE_HASH: &str =
    "(find . -printf '%p %y %m %l\\n' | sort; find . -type f | sort | xargs -r sha256sum) | sha256sum";

/// `airlock exec NAME -- sh -c SCRIPT` that must succeed; its stdout.
fn exec_ok(airlock: fn(&[&str]) -> Output, name: &str, script: &str) -> String {
    ok(&airlock(&["exec", name, "--", "/bin/sh", "-c", script]))
}

/// Starts `airlock exec NAME -- sh -c SCRIPT` in the background (as root or the test user).
fn exec_in_background(as_user: bool, name: &str, script: &str) -> std::process::Child {
    let mut cmd = if as_user {
        let uid = common::test_user_uid().to_string();
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--reset-env", "--", "/usr/bin/env"])
            .arg(format!("AIRLOCK_STATE_DIR={}", common::test_state_dir(common::test_user_uid())))
            .arg(common::shared_binary())
            .current_dir("/");
        c
    } else {
        let mut c = Command::new(common::airlock_path());
        c.env("AIRLOCK_STATE_DIR", common::test_state_dir(0));
        c
    };
    cmd.args(["exec", name, "--", "/bin/sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Checkpoint and rollback of a running sandbox: checkpoint → change → rollback gives back exactly the tree
/// hash taken at the checkpoint, as the next `exec` sees it; a process that kept its working directory in the
/// old tree reads it as it was and cannot write to it; a file held open for writing refuses the checkpoint
/// (nothing changed, the sandbox runs on); after `stop`, `run --resume` and `commit` see the same tree. As root
/// the layer is disk-bounded (`--disk`): the running swap works on the loop-mounted image too.
fn check_running_checkpoint_and_rollback(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("live");
    fs::create_dir(ws.path().join("sub")).unwrap();
    fs::write(ws.path().join("sub/b.txt"), "bee\n").unwrap();
    ws.chown_to_test_user();
    let name = unique_name("live");
    let _cleanup = Cleanup { name: name.clone(), airlock };
    let mut create = vec!["create", "--workspace", ws.str()];
    if !as_user {
        create.extend(["--disk", "32M"]);
    }
    create.push(&name);
    let o = airlock(&create);
    assert_eq!(code(&o), 0, "create failed: {}", stderr(&o));

    exec_ok(airlock, &name, "echo one > f1; mkdir d; echo x > d/x; rm a.txt; chmod 700 sub; ln -s f1 link");
    let at_c1 = exec_ok(airlock, &name, TREE_HASH);
    // A process whose working directory is the workspace, with a file open for reading, across both swaps.
    let old_view =
        exec_in_background(as_user, &name, "exec 3<f1; sleep 3; echo late > late.txt; echo write=$?; cat <&3; cat d/x");
    std::thread::sleep(Duration::from_millis(500));

    let o = airlock(&["checkpoint", &name, "c1"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("running"), "{}", stdout(&o));
    assert_eq!(exec_ok(airlock, &name, TREE_HASH), at_c1, "a checkpoint changes nothing exec sees");
    exec_ok(airlock, &name, "echo two > f2; rm f1; echo y >> d/x; rm -r sub; mkdir sub; echo new > sub/n");
    let changed = exec_ok(airlock, &name, TREE_HASH);
    assert_ne!(changed, at_c1);
    assert!(ok(&airlock(&["diff", &name])).contains("f2"));

    let o = airlock(&["rollback", &name, "c1"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(exec_ok(airlock, &name, TREE_HASH), at_c1, "the rollback did not restore the tree of c1");
    assert_eq!(exec_ok(airlock, &name, "cat f1 d/x; ls"), "one\nx\nd\nf1\nlink\nsub\n");

    let old = old_view.wait_with_output().unwrap();
    assert_eq!(stdout(&old), "write=2\none\nx\n", "stderr: {}", stderr(&old));
    assert!(stderr(&old).contains("Read-only file system"), "{}", stderr(&old));

    // A writer holding a workspace file open: refused, nothing changed, the sandbox runs on.
    let writer = exec_in_background(as_user, &name, "exec 4>>d/x; echo open; sleep 3");
    std::thread::sleep(Duration::from_millis(700));
    let o = airlock(&["checkpoint", &name, "c2"]);
    assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    one_airlock_line(&o, "open for writing");
    assert_eq!(ok(&airlock(&["checkpoints", &name, "--json"])).matches("\"label\"").count(), 1);
    exec_ok(airlock, &name, "echo after > f3");
    assert!(writer.wait_with_output().unwrap().status.success());
    let o = airlock(&["checkpoint", &name, "c2"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let at_end = exec_ok(airlock, &name, TREE_HASH);

    // After stop: a resumed run and the commit see that tree.
    ok(&airlock(&["stop", &name]));
    let o = airlock(&["run", "--name", &name, "--resume", "--workspace", ws.str(), "--", "/bin/sh", "-c", TREE_HASH]);
    assert_eq!(stdout(&o), at_end, "stderr: {}", stderr(&o));
    ok(&airlock(&["commit", &name]));
    let host = Command::new("/bin/sh").args(["-c", TREE_HASH]).current_dir(ws.path()).output().unwrap();
    assert_eq!(stdout(&host), at_end, "the commit did not apply the tree exec saw");
    ok(&airlock(&["rm", &name]));
    if !as_user {
        let losetup = ok(&Command::new("losetup").arg("-a").output().unwrap());
        assert!(!losetup.contains(&name), "{losetup}");
    }
}

#[test]
fn running_checkpoint_and_rollback_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_running_checkpoint_and_rollback(false);
}

#[test]
fn running_checkpoint_and_rollback_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_running_checkpoint_and_rollback(true);
}

/// A mount inside the workspace (`--tmpfs`) would be dropped with the old overlay: a running checkpoint is
/// refused, with nothing changed; once the sandbox has stopped it works.
#[test]
fn running_checkpoint_is_refused_with_a_mount_inside_the_workspace() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("live-nested");
    let name = unique_name("live-nested");
    let _cleanup = Cleanup { name: name.clone(), airlock: common::airlock };
    let cache = format!("{}/cache", ws.str());
    ok(&common::airlock(&["create", "--workspace", ws.str(), "--tmpfs", &cache, &name]));
    exec_ok(common::airlock, &name, "echo x > f; echo y > cache/y");
    let o = common::airlock(&["checkpoint", &name, "c1"]);
    assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    one_airlock_line(&o, "mount inside its workspace");
    assert_eq!(exec_ok(common::airlock, &name, "cat f cache/y"), "x\ny\n");
    ok(&common::airlock(&["stop", &name]));
    ok(&common::airlock(&["checkpoint", &name, "c1"]));
}

/// `exec --cwd`, `--env-file` and `--timeout` (the flags `airlock serve` passes): the working directory, a
/// missing one refused in one line; the file's variables, `--env` winning over them, a bad line refused with
/// its number; at the deadline the command and what it started in the background are killed (exit 124, one
/// line), a command of another exec is not, and the audit log records the timeout.
fn check_exec_flags(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("llflags");
    let name = unique_name("llflags");
    let _cleanup = Cleanup { name: name.clone(), airlock };
    ok(&airlock(&["create", "--workspace", ws.str(), &name]));

    // --cwd.
    assert_eq!(ok(&airlock(&["exec", "--cwd", "/tmp", &name, "--", "pwd"])), "/tmp\n");
    assert_eq!(ok(&airlock(&["exec", &name, "--", "pwd"])), format!("{}\n", ws.str()), "the default changed");
    let o = airlock(&["exec", "--cwd", "/nonexistent-airlock-cwd", &name, "--", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    one_airlock_line(&o, "/nonexistent-airlock-cwd");
    let o = airlock(&["exec", "--cwd", "relative/dir", &name, "--", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    one_airlock_line(&o, "--cwd");

    // --env-file, read by the caller (the test user, rootless).
    let files = TempDir::new("llflags-env");
    let env_file = files.path().join("vars");
    fs::write(&env_file, "# set by the test\nFROM_FILE=one two\n\nBOTH=file\nWITH_EQ=a=b\n").unwrap();
    let bad_file = files.path().join("bad");
    fs::write(&bad_file, "GOOD=1\nthis is not a variable\n").unwrap();
    let bad_key = files.path().join("badkey");
    fs::write(&bad_key, "GOOD=1\n\n1BAD=x\n").unwrap();
    files.chown_to_test_user();
    let env_file = env_file.to_str().unwrap();
    let script = "echo \"$FROM_FILE|$BOTH|$WITH_EQ\"";
    assert_eq!(ok(&airlock(&["exec", "--env-file", env_file, &name, "--", "sh", "-c", script])), "one two|file|a=b\n");
    let o = airlock(&["exec", "--env-file", env_file, "--env", "BOTH=cli", &name, "--", "sh", "-c", script]);
    assert_eq!(ok(&o), "one two|cli|a=b\n", "--env must win over the file");
    for (file, line) in [(&bad_file, "line 2"), (&bad_key, "line 3")] {
        let o = airlock(&["exec", "--env-file", file.to_str().unwrap(), &name, "--", "echo", "ran"]);
        assert_eq!(code(&o), 125, "{}", stderr(&o));
        one_airlock_line(&o, line);
        assert!(stdout(&o).is_empty(), "the command ran: {}", stdout(&o));
    }

    // --timeout: another exec's command, which must survive.
    let other_marker = format!("other-{name}");
    let mut other = exec_in_background(as_user, &name, &format!("sleep 100; : {other_marker}"));
    wait_until("the other exec's command runs", || !processes_with(&other_marker).is_empty());
    let started = Instant::now();
    let o = airlock(&[
        "exec",
        "--timeout",
        "500ms",
        &name,
        "--",
        "sh",
        "-c",
        // A background child in the command's process group, and one in a group of its own (same session).
        "sleep 100 & echo $! > /tmp/background.pid; perl -e 'setpgrp(0, 0); sleep 100' & echo $! > /tmp/own-group.pid; \
         sleep 30",
    ]);
    let took = started.elapsed();
    assert_eq!(code(&o), 124, "{}", stderr(&o));
    assert_eq!(stderr(&o), "airlock: command timed out after 500ms\n");
    assert!(took < Duration::from_secs(3), "the timeout took {took:?}");
    // The background processes, by their pids inside: gone (or zombies not yet reaped by init).
    for pid_file in ["/tmp/background.pid", "/tmp/own-group.pid"] {
        let probe = format!(
            "pid=$(cat {pid_file}); state=$(sed 's/.*) //' /proc/$pid/stat 2>/dev/null | cut -c1); echo \"${{state:-gone}}\""
        );
        wait_until(&format!("the process of {pid_file} is killed"), || {
            let state = exec_ok(airlock, &name, &probe);
            state == "gone\n" || state == "Z\n"
        });
    }
    assert!(!processes_with(&other_marker).is_empty(), "the other exec's command was killed");
    assert_eq!(other.try_wait().unwrap(), None, "the other exec ended");
    let _ = other.kill();
    let _ = other.wait();
    let log = ok(&airlock(&["logs", &name]));
    assert!(log.contains("timeout"), "no timeout in the audit log: {log}");

    // A normal exit's code is untouched by a timeout that did not run out, and a bad duration is refused.
    let o = airlock(&["exec", "--timeout", "30s", &name, "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    let o = airlock(&["exec", "--timeout", "soon", &name, "--", "true"]);
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    one_airlock_line(&o, "--timeout");
}

#[test]
fn exec_cwd_env_file_timeout_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_exec_flags(false);
}

#[test]
fn exec_cwd_env_file_timeout_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_exec_flags(true);
}
