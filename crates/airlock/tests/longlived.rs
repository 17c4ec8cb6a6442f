//! Long-lived sandboxes: `airlock create`, `exec`, `stop`, and what `ls`, `diff` and `rm` say about them, as
//! root and rootless. Real namespaces, real overlayfs, real processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{code, ok, stderr, stdout, StopOnDrop, TempDir};

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
    let _cleanup = StopOnDrop::new(&name, airlock);
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

/// `--env` values reach the sandbox but never a command line: the supervisor gets the profile on its stdin, and
/// `/proc/PID/cmdline` is readable by every user of the host.
#[test]
fn create_keeps_env_values_off_command_lines() {
    require_sandbox!();
    let name = unique_name("envsecret");
    let secret = format!("s3cret-{}", std::process::id());
    let _cleanup = StopOnDrop::new(&name, common::airlock);
    let o = common::airlock(&["create", "--env", &format!("TOKEN={secret}"), &name]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(processes_with(&secret).is_empty(), "a command line holds the --env value");
    assert!(!processes_with(&name).is_empty(), "the supervisor names its sandbox");
    assert_eq!(exec_ok(common::airlock, &name, "printf %s \"$TOKEN\""), secret);
    ok(&common::airlock(&["stop", &name]));
    ok(&common::airlock(&["rm", &name]));
}

fn check_supervisor_killed(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("llkill");
    let name = unique_name("llkill");
    let _cleanup = StopOnDrop::new(&name, airlock);
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
        // (Refused; should it start all the same, the failed assertion leaves it stopped and removed.)
        let _cleanup = StopOnDrop::new(&name, airlock);
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
    let _cleanup = StopOnDrop::new(&name, airlock);
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
    let _cleanup = StopOnDrop::new(&name, common::airlock);
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
    let _cleanup = StopOnDrop::new(&name, airlock);
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
    let _cleanup = StopOnDrop::new(&name, airlock);
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
    let _cleanup = StopOnDrop::new(&name, common::airlock);
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

// ---- commit and discard of a running long-lived sandbox ----

/// `airlock ARGS` on a running sandbox that must succeed; retried while a process of the sandbox happens to be
/// between its open and close of a workspace file (`open for writing`: refused with nothing changed).
fn live_ok(airlock: fn(&[&str]) -> Output, args: &[&str]) -> String {
    for _ in 0..20 {
        let o = airlock(args);
        if code(&o) == 0 {
            return stdout(&o);
        }
        assert!(stderr(&o).contains("open for writing"), "{args:?}: stdout: {} stderr: {}", stdout(&o), stderr(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{args:?} kept finding a writer");
}

/// The `airlock diff` lines (without the summary).
fn diff_lines(airlock: fn(&[&str]) -> Output, name: &str) -> Vec<String> {
    let out = ok(&airlock(&["diff", name]));
    out.lines().filter(|l| l.len() > 3 && l.as_bytes()[1..3] == *b"  ").map(str::to_string).collect()
}

/// Commit and discard while the sandbox runs: a partial commit, then a full one, land on the host and leave the
/// diff; a process that kept running (and writing a workspace file by path) across them goes on, its later
/// writes in the new layer; a discard makes the sandbox see the host's files again; a conflict refuses with
/// nothing changed, on the host or in the sandbox.
fn check_running_commit_and_discard(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("livecommit");
    fs::write(ws.path().join("h.txt"), "host file\n").unwrap();
    ws.chown_to_test_user();
    let name = unique_name("livecommit");
    let _cleanup = StopOnDrop::new(&name, airlock);
    // As root the layer is disk-bounded: the copies are made on the loop-mounted image.
    let mut create = vec!["create", "--workspace", ws.str()];
    if !as_user {
        create.extend(["--disk", "32M"]);
    }
    create.push(&name);
    ok(&airlock(&create));
    exec_ok(airlock, &name, "echo mod > a.txt; echo new > b.txt; mkdir d; echo x > d/x");
    // Outside the workspace (its working directory would stay in the old tree), appending to a workspace file
    // by path every 0.1 s for 6 s.
    let writer = exec_in_background(
        as_user,
        &name,
        &format!(
            "cd /; i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo t$i >> {}/log; sleep 0.1; done; echo done",
            ws.str()
        ),
    );
    std::thread::sleep(Duration::from_millis(500));

    // Only d/: the rest stays in the layer.
    let out = live_ok(airlock, &["commit", &name, "d"]);
    assert!(out.starts_with("committed 2 changes to ") && out.contains("running"), "{out}");
    assert_eq!(fs::read_to_string(ws.path().join("d/x")).unwrap(), "x\n");
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "original\n");
    let diff = diff_lines(airlock, &name);
    assert!(diff.iter().all(|l| !l.contains(" d")), "{diff:?}");
    assert!(diff.contains(&"M  a.txt".to_string()) && diff.contains(&"A  b.txt".to_string()), "{diff:?}");

    // Everything.
    let out = live_ok(airlock, &["commit", &name]);
    assert!(out.starts_with("committed ") && out.contains("running"), "{out}");
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "mod\n");
    assert_eq!(fs::read_to_string(ws.path().join("b.txt")).unwrap(), "new\n");
    assert!(ws.path().join("log").exists());
    // Empty but for what the writer appended since.
    let diff = diff_lines(airlock, &name);
    assert!(diff.iter().all(|l| l == "M  log"), "{diff:?}");
    assert_eq!(exec_ok(airlock, &name, "cat a.txt b.txt d/x"), "mod\nnew\nx\n");
    exec_ok(airlock, &name, "echo after > c.txt");
    assert!(diff_lines(airlock, &name).contains(&"A  c.txt".to_string()));
    assert!(!ws.path().join("c.txt").exists());

    // Discard: the sandbox sees the host's files again.
    let out = live_ok(airlock, &["discard", &name]);
    assert!(out.starts_with("discarded ") && out.contains("running"), "{out}");
    assert_eq!(exec_ok(airlock, &name, "cat a.txt; test -e c.txt || echo no-c"), "mod\nno-c\n");

    // The writer went on through all three, each write landing in the layer of the moment.
    let w = writer.wait_with_output().unwrap();
    assert!(w.status.success() && stdout(&w) == "done\n", "stdout: {} stderr: {}", stdout(&w), stderr(&w));
    assert_eq!(stderr(&w), "", "the writer's writes failed");
    assert_eq!(exec_ok(airlock, &name, "tail -n 1 log"), "t60\n");
    assert_eq!(diff_lines(airlock, &name), vec!["M  log".to_string()]);
    // The host's log changed after the sandbox was created (the first commit wrote it): a conflict, as for a
    // stopped sandbox, so forced.
    live_ok(airlock, &["commit", "--force", &name]);
    assert_eq!(fs::read_to_string(ws.path().join("log")).unwrap().lines().last(), Some("t60"));
    assert_eq!(diff_lines(airlock, &name), Vec::<String>::new());

    // A conflict: refused, nothing applied, the sandbox still sees its version.
    exec_ok(airlock, &name, "echo sandbox > h.txt; echo y > y.txt");
    fs::write(ws.path().join("h.txt"), "host\n").unwrap();
    let o = airlock(&["commit", &name]);
    assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    one_airlock_line(&o, "commit refused: 1 conflict");
    assert_eq!(stdout(&o), "h.txt\n");
    assert_eq!(fs::read_to_string(ws.path().join("h.txt")).unwrap(), "host\n");
    assert!(!ws.path().join("y.txt").exists());
    assert_eq!(exec_ok(airlock, &name, "cat h.txt y.txt"), "sandbox\ny\n");
    assert_eq!(diff_lines(airlock, &name), vec!["M  h.txt".to_string(), "A  y.txt".to_string()]);
    // Forced: applied.
    live_ok(airlock, &["commit", "--force", &name]);
    assert_eq!(fs::read_to_string(ws.path().join("h.txt")).unwrap(), "sandbox\n");
    ok(&airlock(&["stop", &name]));
    ok(&airlock(&["rm", &name]));
}

#[test]
fn running_commit_and_discard_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_running_commit_and_discard(false);
}

#[test]
fn running_commit_and_discard_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_running_commit_and_discard(true);
}

/// With checkpoints: a running commit of one path takes it out of the frozen layer too, so a rollback does not
/// bring it back; the sandbox's view stays what it was.
#[test]
fn running_commit_rewrites_checkpoints() {
    require_sandbox!();
    let _user = require_test_user!();
    let airlock = common::airlock;
    let ws = workspace("livecommit-cp");
    let name = unique_name("livecommit-cp");
    let _cleanup = StopOnDrop::new(&name, airlock);
    ok(&airlock(&["create", "--workspace", ws.str(), &name]));
    exec_ok(airlock, &name, "echo mod > a.txt; mkdir -p o/p; echo q > o/p/q");
    ok(&airlock(&["checkpoint", &name, "c1"]));
    exec_ok(airlock, &name, "echo e > e.txt");
    let before = exec_ok(airlock, &name, TREE_HASH);
    live_ok(airlock, &["commit", &name, "a.txt"]);
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "mod\n");
    assert_eq!(exec_ok(airlock, &name, TREE_HASH), before, "a commit changed what the sandbox sees");
    assert_eq!(diff_lines(airlock, &name), vec!["A  e.txt", "A  o/", "A  o/p/", "A  o/p/q"]);
    ok(&airlock(&["rollback", &name, "c1"]));
    assert_eq!(diff_lines(airlock, &name), vec!["A  o/", "A  o/p/", "A  o/p/q"]);
    live_ok(airlock, &["discard", &name, "o"]);
    assert_eq!(diff_lines(airlock, &name), Vec::<String>::new());
    assert_eq!(exec_ok(airlock, &name, "cat a.txt; ls"), "mod\na.txt\n");
}

/// A process holding a workspace file open for writing could change the layer after it was copied: commit and
/// discard are refused, with nothing changed on the host or in the sandbox, which runs on.
#[test]
fn running_commit_and_discard_refuse_an_open_writer() {
    require_sandbox!();
    let _user = require_test_user!();
    let airlock = common::airlock;
    let ws = workspace("livecommit-writer");
    let name = unique_name("livecommit-writer");
    let _cleanup = StopOnDrop::new(&name, airlock);
    ok(&airlock(&["create", "--workspace", ws.str(), &name]));
    exec_ok(airlock, &name, "echo mod > a.txt; echo new > b.txt");
    let writer = exec_in_background(false, &name, "exec 4>>b.txt; sleep 2; echo more >&4; echo done");
    std::thread::sleep(Duration::from_millis(700));
    for args in [["commit", name.as_str()], ["discard", name.as_str()]] {
        let o = airlock(&args);
        assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
        one_airlock_line(&o, "open for writing");
    }
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "original\n");
    assert!(!ws.path().join("b.txt").exists());
    let w = writer.wait_with_output().unwrap();
    assert_eq!(stdout(&w), "done\n", "stderr: {}", stderr(&w));
    assert_eq!(exec_ok(airlock, &name, "cat a.txt b.txt"), "mod\nnew\nmore\n");
    assert_eq!(diff_lines(airlock, &name), vec!["M  a.txt", "A  b.txt"]);
    ok(&airlock(&["commit", &name]));
    assert_eq!(fs::read_to_string(ws.path().join("b.txt")).unwrap(), "new\nmore\n");
}

/// `airlock exec --cwd`, `--timeout` and `--env-file`.
fn check_exec_flags(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("xf");
    let name = unique_name("xf");
    let _cleanup = StopOnDrop::new(&name, airlock);
    ok(&airlock(&["create", "--workspace", ws.str(), &name]));

    // --cwd: the command's working directory; a missing one is one setup error, nothing runs.
    assert_eq!(ok(&airlock(&["exec", "--cwd", "/tmp", &name, "--", "pwd"])), "/tmp\n");
    assert_eq!(ok(&airlock(&["exec", &name, "--", "pwd"])), format!("{}\n", ws.str()), "the default changed");
    let o = airlock(&["exec", "--cwd", "/no/such/dir", &name, "--", "touch", "/tmp/ran"]);
    assert_eq!(code(&o), 125);
    one_airlock_line(&o, "/no/such/dir");
    assert_eq!(ok(&airlock(&["exec", &name, "--", "sh", "-c", "test -e /tmp/ran && echo ran || echo no"])), "no\n");
    let o = airlock(&["exec", "--cwd", "relative", &name, "--", "true"]);
    assert_ne!(code(&o), 0);
    one_airlock_line(&o, "--cwd");

    // --user: another id the sandbox maps (as root: 0-65535); rootless only the owner's id is mapped, so any
    // other is one clear error and nothing runs.
    let o = airlock(&["exec", "--user", "1000:1001", &name, "--", "sh", "-c", "id -u; id -g; touch /tmp/as-user"]);
    if as_user {
        assert_ne!(code(&o), 0);
        one_airlock_line(&o, "maps no such id");
        assert_eq!(
            ok(&airlock(&["exec", &name, "--", "sh", "-c", "test -e /tmp/as-user && echo ran || echo no"])),
            "no\n"
        );
    } else {
        assert_eq!(ok(&o), "1000\n1001\n");
        assert_eq!(ok(&airlock(&["exec", &name, "--", "stat", "-c", "%u:%g", "/tmp/as-user"])), "1000:1001\n");
        let o = airlock(&["exec", "--user", "70000", &name, "--", "true"]);
        assert_ne!(code(&o), 0);
        one_airlock_line(&o, "maps no such id");
    }
    let o = airlock(&["exec", "--user", "nobody", &name, "--", "true"]);
    assert_ne!(code(&o), 0);
    one_airlock_line(&o, "--user");

    // --timeout: the command and what it started in the background are killed; exit 124; other execs' processes
    // and the sandbox live on.
    let n = name.clone();
    let other = std::thread::spawn(move || airlock(&["exec", &n, "--", "sh", "-c", "sleep 8; echo survived"]));
    let started = Instant::now();
    // The second background process leaves the process group (setpgid), not the session: found all the same.
    let script = "sleep 300 & echo $! > /tmp/bg; perl -e 'setpgrp(0,0); sleep 300' & echo $! > /tmp/bg2; sleep 300";
    let o = airlock(&["exec", "--timeout", "1s", &name, "--", "sh", "-c", script]);
    let took = started.elapsed();
    assert_eq!(code(&o), 124, "stderr: {}", stderr(&o));
    one_airlock_line(&o, "timed out after 1s");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "took {took:?}");
    let alive = "p=$(cat /tmp/bg); if [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status; then echo alive; else echo gone; fi";
    assert_eq!(ok(&airlock(&["exec", &name, "--", "sh", "-c", alive])), "gone\n", "the background process lives");
    let alive2 = alive.replace("/tmp/bg)", "/tmp/bg2)");
    assert_eq!(ok(&airlock(&["exec", &name, "--", "sh", "-c", &alive2])), "gone\n", "the other process group lives");
    assert_eq!(ok(&other.join().unwrap()), "survived\n", "another exec's command was killed");
    let o = airlock(&["exec", "--timeout", "soon", &name, "--", "true"]);
    assert_ne!(code(&o), 0);
    one_airlock_line(&o, "--timeout");
    // A command that ends in time is not touched.
    assert_eq!(ok(&airlock(&["exec", "--timeout", "30s", &name, "--", "echo", "quick"])), "quick\n");

    // --env-file: lines (comments and blank lines skipped) or NUL-terminated entries; --env wins over it.
    let files = TempDir::new("xf-env");
    fs::write(files.path().join("lines"), "# a comment\nA=1\n\nB=two words\n").unwrap();
    fs::write(files.path().join("nul"), "M=line1\nline2\0N=x\0").unwrap();
    fs::write(files.path().join("bad"), "A=1\nno equals sign\n").unwrap();
    files.chown_to_test_user();
    let lines = files.path().join("lines");
    let lines = lines.to_str().unwrap();
    assert_eq!(
        ok(&airlock(&["exec", "--env-file", lines, &name, "--", "sh", "-c", "echo \"$A|$B\""])),
        "1|two words\n"
    );
    let o = airlock(&["exec", "--env-file", lines, "--env", "B=flag", &name, "--", "sh", "-c", "echo \"$A|$B\""]);
    assert_eq!(ok(&o), "1|flag\n");
    let nul = files.path().join("nul");
    let o = airlock(&["exec", "--env-file", nul.to_str().unwrap(), &name, "--", "sh", "-c", "echo \"$M|$N\""]);
    assert_eq!(ok(&o), "line1\nline2|x\n");
    let bad = files.path().join("bad");
    let o = airlock(&["exec", "--env-file", bad.to_str().unwrap(), &name, "--", "true"]);
    assert_ne!(code(&o), 0);
    one_airlock_line(&o, "bad:2: expected KEY=VALUE");
    let o = airlock(&["exec", "--env-file", "/no/such/file", &name, "--", "true"]);
    assert_ne!(code(&o), 0);
    one_airlock_line(&o, "/no/such/file");
}

#[test]
fn exec_cwd_timeout_env_file_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_exec_flags(false);
}

#[test]
fn exec_cwd_timeout_env_file_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_exec_flags(true);
}

/// The sandbox cgroups (every hierarchy) of the sandbox called `name`: `.../airlock/<...>-NAME`.
fn cgroups_named(name: &str) -> Vec<std::path::PathBuf> {
    let suffix = format!("-{name}");
    let mut parents = vec![std::path::PathBuf::from("/sys/fs/cgroup/airlock")];
    if let Ok(entries) = fs::read_dir("/sys/fs/cgroup") {
        parents.extend(entries.flatten().map(|e| e.path().join("airlock")));
    }
    let mut found = Vec::new();
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let is_ours = entry.file_name().to_str().is_some_and(|n| n.ends_with(&suffix));
            if is_ours && entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(entry.path());
            }
        }
    }
    found
}

/// `rm -rf $STATE/sandboxes/NAME` under a running sandbox: `stop`, `exec` and `rm` could no longer find it, so its
/// supervisor notices (within about a second) and stops it: its processes, its supervisor and its cgroups are
/// gone, and nothing brings the directory back.
fn check_state_removed(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("llgone");
    let name = unique_name("llgone");
    let _cleanup = StopOnDrop::new(&name, airlock);
    // As root, --pids gives it a cgroup to check; rootless, a cgroup needs a delegation this host may not have.
    let limits: &[&str] = if as_user { &[] } else { &["--pids", "64"] };
    let mut args = vec!["create", "--workspace", ws.str()];
    args.extend_from_slice(limits);
    args.push(&name);
    ok(&airlock(&args));
    let marker = format!("marker-{name}");
    let script = format!("nohup sh -c 'sleep 1000; : {marker}' >/dev/null 2>&1 & sleep 1000; : {marker}");
    let n = name.clone();
    let exec = std::thread::spawn(move || airlock(&["exec", &n, "--", "sh", "-c", &script]));
    wait_until("the marked processes run", || processes_with(&marker).len() >= 2);
    let supervisor = record_number(as_user, &name, "supervisor_pid");
    let cgroups = cgroups_named(&name);
    assert!(as_user || !cgroups.is_empty(), "a sandbox with --pids has a cgroup");

    let dir = sandbox_dir(as_user, &name);
    fs::remove_dir_all(&dir).unwrap();
    let o = exec.join().unwrap();
    assert_ne!(code(&o), 0, "the exec ended with the sandbox");
    wait_until("nothing of the sandbox survives", || processes_with(&marker).is_empty());
    wait_until("its supervisor is gone", || !std::path::Path::new(&format!("/proc/{supervisor}")).exists());
    wait_until("its cgroups are gone", || cgroups.iter().all(|c| !c.exists()));
    assert!(!dir.exists(), "the removed state came back: {}", dir.display());
    assert!(!ok(&airlock(&["ls"])).lines().any(|l| l.starts_with(&name)), "it is not listed");
}

#[test]
fn a_sandbox_whose_state_is_removed_stops_as_root() {
    require_sandbox!();
    if !common::is_root() {
        eprintln!("SKIP: the test reads the sandbox's cgroups, which airlock makes as root");
        return;
    }
    check_state_removed(false);
}

#[test]
fn a_sandbox_whose_state_is_removed_stops_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_state_removed(true);
}

/// As root every sandbox claims a host id range with a lock file; `exec` joins the sandbox's ids and claims
/// none that would outlive it, so after create, execs, stop and rm nothing is left in `id-ranges/`.
#[test]
fn execs_leave_no_id_range_lock_behind() {
    require_sandbox!();
    if !common::is_root() {
        skip_or_fail!("id ranges are claimed only as root");
    }
    let state = common::TempDir::new("id-ranges");
    let airlock = |args: &[&str]| {
        Command::new(common::airlock_path())
            .args(args)
            .env("AIRLOCK_STATE_DIR", state.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let _cleanup = StopOnDrop::new("locks", airlock);
    ok(&airlock(&["create", "locks"]));
    let locks = || fs::read_dir(state.path().join("id-ranges")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(locks(), 1, "the sandbox's own range");
    ok(&airlock(&["exec", "locks", "--", "true"]));
    ok(&airlock(&["exec", "--user", "1000", "locks", "--", "true"]));
    assert_eq!(locks(), 1, "execs claim no range");
    ok(&airlock(&["stop", "locks"]));
    ok(&airlock(&["rm", "locks"]));
    assert_eq!(locks(), 0);
}

/// `airlock cp` in and out of a running sandbox: a directory tree both ways with modes, a single file, symlinks
/// and FIFOs neither followed nor copied (either side), an unknown path one error, and bad usage 125.
#[test]
fn cp_copies_files_and_directories_in_and_out_without_following_links() {
    use std::os::unix::fs::PermissionsExt;
    require_sandbox!();
    if !common::is_root() {
        skip_or_fail!("the cp test runs as root (its rootless half is the same code path)");
    }
    let t = common::TempDir::new("cp");
    let state = t.path().join("state");
    let airlock = |args: &[&str]| {
        Command::new(common::airlock_path())
            .args(args)
            .env("AIRLOCK_STATE_DIR", &state)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let src = t.path().join("in");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(src.join("sub/b.txt"), "two\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", src.join("link")).unwrap();
    let _cleanup = StopOnDrop::new("cpbox", airlock);
    ok(&airlock(&["create", "cpbox"]));
    let copied_in = airlock(&["cp", src.to_str().unwrap(), "cpbox:/tmp/in"]);
    assert!(copied_in.status.success(), "{}", stderr(&copied_in));
    assert!(stderr(&copied_in).contains("link is a symlink or a special file: not copied"), "{}", stderr(&copied_in));
    let inside =
        ok(&airlock(&["exec", "cpbox", "--", "sh", "-c", "/tmp/in/run.sh; cat /tmp/in/sub/b.txt; ls -A /tmp/in"]));
    assert_eq!(inside, "ran\ntwo\nrun.sh\nsub\n");
    // The sandbox plants a symlink to a host secret's path and a FIFO: cp out copies neither.
    ok(&airlock(&["exec", "cpbox", "--", "sh", "-c", "ln -s /etc/shadow /tmp/in/evil; mkfifo /tmp/in/fifo"]));
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let copied_out = airlock(&["cp", "cpbox:/tmp/in", out.to_str().unwrap()]);
    assert!(copied_out.status.success(), "{}", stderr(&copied_out));
    assert!(stderr(&copied_out).contains("/tmp/in/evil is not a file or a directory"), "{}", stderr(&copied_out));
    assert_eq!(fs::read_to_string(out.join("in/sub/b.txt")).unwrap(), "two\n");
    assert_eq!(fs::metadata(out.join("in/run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
    assert!(fs::symlink_metadata(out.join("in/evil")).is_err() && fs::symlink_metadata(out.join("in/fifo")).is_err());
    // One file, to a new name.
    ok(&airlock(&["cp", "cpbox:/tmp/in/sub/b.txt", out.join("single").to_str().unwrap()]));
    assert_eq!(fs::read_to_string(out.join("single")).unwrap(), "two\n");
    // A path that does not exist: one line, status 1; neither side a sandbox: usage, 125.
    let missing = airlock(&["cp", "cpbox:/nope", out.join("x").to_str().unwrap()]);
    assert_eq!(code(&missing), 1);
    one_airlock_line(&missing, "no such file or directory");
    let usage = airlock(&["cp", src.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code(&usage), 125);
    one_airlock_line(&usage, "exactly one of SOURCE and DESTINATION");
    ok(&airlock(&["stop", "cpbox"]));
    ok(&airlock(&["rm", "cpbox"]));
}
