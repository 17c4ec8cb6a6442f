//! The life of one `airlock run`, driven through the real binary: exit statuses as the contract fixes them,
//! `--timeout`, signals sent to airlock, airlock itself dying, the scrubbed environment, bad input refused before
//! anything runs, help and profiles, `--user`, `-t`, ordinary tools inside, and sandboxes started side by side.
//!
//! Escapes, the filesystem view, /proc, /dev, capabilities and the network are `isolation.rs`'s; the syscall
//! filter is `seccomp.rs`'s.
//!
//! Processes that must not outlive a sandbox are `sleep 1000.<unique digits>`: the marker is part of the sleeping
//! program's own argv (a `# comment` would vanish when the shell execs its last command), so `pgrep -f` finds
//! exactly the processes a test started and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{code, ok, stderr, stdout, TempDir};

/// The `PATH` airlock sets inside unless told otherwise (`policy::profile::DEFAULT_PATH`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every flag the CLI contract names for `airlock run`.
const CONTRACT_RUN_FLAGS: &[&str] = &[
    "--rootfs",
    "--workspace",
    "--workspace-mode",
    "--name",
    "--rm",
    "--ro-bind",
    "--bind",
    "--tmpfs",
    "--net",
    "--allow",
    "--memory",
    "--pids",
    "--cpus",
    "--disk",
    "--timeout",
    "--env",
    "--pass-env",
    "--user",
    "--hostname",
    "--profile",
    "--audit",
    "--tty",
];

// ---------------------------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------------------------

/// A sleep duration no other process on the machine has in its argv: `1000.<our pid><counter>`.
fn unique_sleep() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("1000.{}{:03}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// `pgrep -f PATTERN` (an extended regex over the whole command line): the pids, possibly none.
fn pgrep(pattern: &str) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-f", pattern]).output().expect("spawn pgrep");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Whether `pgrep` is usable here (it is part of procps).
fn have_pgrep() -> bool {
    Command::new("pgrep").arg("--version").output().is_ok_and(|o| o.status.success())
}

macro_rules! require_pgrep {
    () => {
        if !have_pgrep() {
            skip_or_fail!("pgrep (procps) is not installed: it finds the processes that must not survive");
        }
    };
}

/// Processes whose command line contains `marker` (dots taken literally), with their command lines.
fn survivors(marker: &str) -> Vec<String> {
    let pattern = marker.replace('.', "\\.");
    pgrep(&pattern)
        .into_iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!("{pid}: {}", String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .collect()
}

/// Polls until no process with `marker` is left, for at most `limit`; returns what is still there.
fn wait_until_gone(marker: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = survivors(marker);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `sleep MARKER` runs (the sandbox is up and the script got that far); panics after 10 s.
fn wait_for_sleep(marker: &str, child: &mut Child) {
    let pattern = format!("^sleep {}", marker.replace('.', "\\."));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pgrep(&pattern).is_empty() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("airlock exited ({status}) before `sleep {marker}` started: {}", drain(child));
        }
        assert!(Instant::now() < deadline, "`sleep {marker}` did not start within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` at most `limit`; kills it and panics when it takes longer.
fn wait_at_most(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}: {}", drain(child));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whatever the child wrote on its piped stdout and stderr (after it exited).
fn drain(child: &mut Child) -> String {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    format!("\n--- stdout\n{out}--- stderr\n{err}")
}

fn read_pipe(child: &mut Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (out, err)
}

/// Sends `signal` (a name such as `TERM`) to `pid` with kill(1).
fn send_signal(signal: &str, pid: u32) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// The airlock binary as any user can execute it, for the rootless runs that need more than
/// `common::airlock_as_user` offers (their own environment, pipes, or a spawned process).
fn user_binary() -> PathBuf {
    common::shared_binary()
}

/// The argv prefix that runs a program as the test user, with an empty environment: `setpriv ... --`.
fn as_user_prefix() -> Vec<String> {
    let uid = common::test_user_uid().to_string();
    ["setpriv", "--reuid", &uid, "--regid", &uid, "--clear-groups", "--reset-env", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Who runs airlock in a test that covers both modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The invoking user (host root under CI).
    Invoker,
    /// The ordinary test user, when the invoker is root.
    TestUser,
}

impl Mode {
    fn label(self) -> &'static str {
        match (self, common::is_root()) {
            (Mode::Invoker, true) => "as root",
            _ => "rootless",
        }
    }

    fn rootless(self) -> bool {
        self == Mode::TestUser || !common::is_root()
    }

    /// `airlock ARGS...` in this mode, as a `Command` to spawn.
    fn command(self, args: &[&str]) -> Command {
        match self {
            Mode::Invoker => {
                let mut c = Command::new(common::airlock_path());
                c.args(args);
                c
            }
            Mode::TestUser => {
                let prefix = as_user_prefix();
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg(user_binary()).args(args).current_dir("/");
                c
            }
        }
    }

    /// `airlock run ARGS...` in this mode, waited for.
    fn run(self, args: &[&str]) -> Output {
        match self {
            Mode::Invoker => common::run(args),
            Mode::TestUser => common::run_as_user(args),
        }
    }
}

/// The modes a test should cover: the invoker, and as root also the test user. Under CI, a missing test user
/// fails the test; elsewhere the rootless half is skipped with a note.
fn modes() -> Vec<Mode> {
    let mut modes = vec![Mode::Invoker];
    if common::is_root() {
        if common::test_user().is_some() {
            modes.push(Mode::TestUser);
        } else if common::in_ci() {
            panic!("this CI machine should be able to create the test user {}", common::TEST_USER);
        } else {
            eprintln!("SKIP (rootless half): cannot create the test user {}", common::TEST_USER);
        }
    }
    modes
}

fn describe(o: &Output) -> String {
    format!("status {}\n--- stdout\n{}--- stderr\n{}", o.status, stdout(o), stderr(o))
}

/// The non-empty lines of stderr.
fn stderr_lines(o: &Output) -> Vec<String> {
    stderr(o).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

/// Asserts a setup refusal: exit 125, exactly one stderr line, starting with `airlock:` and containing each of
/// `wanted`, and no output from a command.
#[track_caller]
fn assert_setup_refused(o: &Output, wanted: &[&str]) {
    assert_eq!(code(o), 125, "expected exit 125 (setup refused)\n{}", describe(o));
    let lines = stderr_lines(o);
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr\n{}", describe(o));
    assert!(lines[0].starts_with("airlock: "), "the line must start with `airlock: `\n{}", describe(o));
    for w in wanted {
        assert!(lines[0].contains(w), "the message should mention {w:?}\n{}", describe(o));
    }
    assert!(o.stdout.is_empty(), "nothing should have run\n{}", describe(o));
}

/// A host directory anyone may write, shared into the sandbox with `--bind`: a command that runs creates
/// `ran` in it, so its absence proves nothing ran.
struct Marker(TempDir);

impl Marker {
    fn new() -> Marker {
        let dir = TempDir::new("marker");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Marker(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.path().join("ran")
    }

    fn ran(&self) -> bool {
        self.file().exists()
    }

    /// `flags` then `--bind DIR -- /bin/sh -c 'touch DIR/ran'`.
    fn args(&self, flags: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        args.extend(["--bind".to_owned(), self.0.str().to_owned(), "--".to_owned()]);
        args.extend(["/bin/sh".to_owned(), "-c".to_owned(), format!("touch {}", self.file().display())]);
        args
    }
}

/// `airlock run FLAGS --bind MARKER -- touch MARKER/ran` must be refused (125, one `airlock:` line naming each of
/// `wanted`) and must not have run the command.
#[track_caller]
fn assert_rejected(flags: &[&str], wanted: &[&str]) {
    let marker = Marker::new();
    let args = marker.args(flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::run(&args);
    assert_setup_refused(&o, wanted);
    assert!(!marker.ran(), "the command ran although setup was refused: airlock run {args:?}");
}

/// A file in a fresh temporary directory.
fn temp_file(tag: &str, name: &str, contents: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// Whether `tool` is in one of the directories of the sandbox's default `PATH` on the host (which
/// `--rootfs host` shows read-only inside).
fn host_has(tool: &str) -> bool {
    DEFAULT_PATH.split(':').any(|dir| Path::new(dir).join(tool).is_file())
}

macro_rules! require_tool {
    ($tool:expr) => {
        if !host_has($tool) {
            skip_or_fail!("{} is not installed on this host (CI installs it)", $tool);
        }
    };
}

/// A workspace directory with `files` in it, that the sandbox may write: as root it belongs to the test user
/// (the sandbox's identity then maps to that owner); rootless it is the invoker's own.
fn tool_workspace(tag: &str, files: &[(&str, &str)]) -> TempDir {
    let ws = TempDir::new(tag);
    for (name, contents) in files {
        std::fs::write(ws.path().join(name), contents).unwrap();
    }
    if common::is_root() {
        ws.chown_to_test_user();
    }
    ws
}

/// `airlock run --workspace WS --workspace-mode rw -- /bin/sh -c SCRIPT`, as the invoker.
fn run_in_workspace(ws: &TempDir, script: &str) -> Output {
    common::run(&["--workspace", ws.str(), "--workspace-mode", "rw", "--", "/bin/sh", "-c", script])
}

/// Parses `env` output into a map.
fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Exit statuses
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn exit_status_is_the_commands_own() {
    require_sandbox!();
    for mode in modes() {
        let o = mode.run(&["--", "/bin/sh", "-c", "echo before-exit; exit 3"]);
        assert_eq!(code(&o), 3, "{}: {}", mode.label(), describe(&o));
        assert_eq!(stdout(&o), "before-exit\n", "{}", mode.label());
        assert!(
            stderr(&o).is_empty(),
            "{}: airlock printed something for a plain exit: {}",
            mode.label(),
            describe(&o)
        );
        let o = mode.run(&["--", "/bin/true"]);
        assert_eq!(code(&o), 0, "{}: {}", mode.label(), describe(&o));
        let o = mode.run(&["--", "/bin/false"]);
        assert_eq!(code(&o), 1, "{}: {}", mode.label(), describe(&o));
    }
}

#[test]
fn missing_command_exits_127_with_command_not_found() {
    require_sandbox!();
    for mode in modes() {
        let o = mode.run(&["--", "no-such-command-airlock-test"]);
        assert_eq!(code(&o), 127, "{}: {}", mode.label(), describe(&o));
        let lines = stderr_lines(&o);
        assert_eq!(lines.len(), 1, "{}: {}", mode.label(), describe(&o));
        assert!(
            lines[0].starts_with("airlock: command not found: no-such-command-airlock-test"),
            "{}: {}",
            mode.label(),
            describe(&o)
        );

        let o = mode.run(&["--", "/no/such/dir/prog"]);
        assert_eq!(code(&o), 127, "{}: {}", mode.label(), describe(&o));
        assert!(stderr(&o).starts_with("airlock: command not found: /no/such/dir/prog"), "{}", describe(&o));
    }
}

#[test]
fn non_executable_file_exits_126() {
    require_sandbox!();
    // /etc/hostname is a data file: EACCES where it has no x bit, ENOEXEC where it has one; both are 126.
    for mode in modes() {
        let o = mode.run(&["--", "/etc/hostname"]);
        assert_eq!(code(&o), 126, "{}: {}", mode.label(), describe(&o));
        let lines = stderr_lines(&o);
        assert_eq!(lines.len(), 1, "{}: {}", mode.label(), describe(&o));
        assert!(lines[0].starts_with("airlock: cannot execute /etc/hostname"), "{}: {}", mode.label(), describe(&o));
    }
    // A file without any execute bit, shared read-only: permission denied.
    let (_dir, file) = temp_file("noexec", "script.sh", "#!/bin/sh\necho ran\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = file.to_str().unwrap();
    for mode in modes() {
        let o = mode.run(&["--ro-bind", path, "--", path]);
        assert_eq!(code(&o), 126, "{}: {}", mode.label(), describe(&o));
        assert!(
            stderr(&o).starts_with(&format!("airlock: cannot execute {path}: Permission denied")),
            "{}: {}",
            mode.label(),
            describe(&o)
        );
        assert!(!stdout(&o).contains("ran"), "{}", describe(&o));
    }
}

#[test]
fn killed_by_signal_exits_128_plus_n() {
    require_sandbox!();
    for mode in modes() {
        let o = mode.run(&["--", "/bin/sh", "-c", "kill -TERM $$"]);
        assert_eq!(code(&o), 143, "{}: SIGTERM: {}", mode.label(), describe(&o));
        let o = mode.run(&["--", "/bin/sh", "-c", "kill -9 $$"]);
        assert_eq!(code(&o), 137, "{}: SIGKILL: {}", mode.label(), describe(&o));
        let o = mode.run(&["--", "/bin/sh", "-c", "kill -USR1 $$"]);
        assert_eq!(code(&o), 138, "{}: SIGUSR1: {}", mode.label(), describe(&o));
    }
}

#[test]
fn timeout_exits_124_with_timed_out_line_after_about_the_deadline() {
    require_sandbox!();
    for mode in modes() {
        let started = Instant::now();
        let o = mode.run(&["--timeout", "1s", "--", "sleep", "30"]);
        let elapsed = started.elapsed();
        assert_eq!(code(&o), 124, "{}: {}", mode.label(), describe(&o));
        let lines = stderr_lines(&o);
        assert_eq!(lines.len(), 1, "{}: {}", mode.label(), describe(&o));
        assert!(lines[0].starts_with("airlock: timed out"), "{}: {}", mode.label(), describe(&o));
        assert!(elapsed < Duration::from_secs(5), "{}: --timeout 1s took {elapsed:?}", mode.label());
        assert!(elapsed >= Duration::from_millis(900), "{}: --timeout 1s fired after only {elapsed:?}", mode.label());
    }
}

#[test]
fn timeout_does_not_fire_when_the_command_finishes_first() {
    require_sandbox!();
    let o = common::run(&["--timeout", "30s", "--", "/bin/sh", "-c", "echo quick; exit 5"]);
    assert_eq!(code(&o), 5, "{}", describe(&o));
    assert_eq!(stdout(&o), "quick\n");
    assert!(!stderr(&o).contains("timed out"), "{}", describe(&o));
}

// ---------------------------------------------------------------------------------------------------------------
// Nothing outlives the sandbox
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn timeout_kills_setsid_daemons_too() {
    require_sandbox!();
    require_pgrep!();
    for mode in modes() {
        let marker = unique_sleep();
        // The daemon leaves the command's session and process group; only the pid namespace still holds it.
        let script = format!("setsid /bin/sh -c 'echo daemon-up; sleep {marker}; :' & sleep 30");
        let started = Instant::now();
        let o = mode.run(&["--timeout", "1s", "--", "/bin/sh", "-c", &script]);
        assert_eq!(code(&o), 124, "{}: {}", mode.label(), describe(&o));
        assert!(stderr(&o).contains("airlock: timed out"), "{}: {}", mode.label(), describe(&o));
        assert!(started.elapsed() < Duration::from_secs(5), "{}: took {:?}", mode.label(), started.elapsed());
        assert_eq!(stdout(&o), "daemon-up\n", "{}: the daemon did not start: {}", mode.label(), describe(&o));
        let left = wait_until_gone(&marker, Duration::from_secs(2));
        assert!(left.is_empty(), "{}: the setsid daemon survived --timeout: {left:?}", mode.label());
    }
}

#[test]
fn normal_exit_returns_promptly_and_kills_background_setsid_daemons() {
    require_sandbox!();
    require_pgrep!();
    for mode in modes() {
        let marker = unique_sleep();
        let script = format!("setsid /bin/sh -c 'echo daemon-up; sleep {marker}; :' & sleep 0.3; echo done");
        let started = Instant::now();
        let o = mode.run(&["--", "/bin/sh", "-c", &script]);
        let elapsed = started.elapsed();
        assert_eq!(code(&o), 0, "{}: {}", mode.label(), describe(&o));
        assert_eq!(stdout(&o), "daemon-up\ndone\n", "{}: {}", mode.label(), describe(&o));
        assert!(elapsed < Duration::from_secs(5), "{}: airlock waited {elapsed:?} for a daemon", mode.label());
        let left = wait_until_gone(&marker, Duration::from_secs(2));
        assert!(left.is_empty(), "{}: a background daemon survived the sandbox: {left:?}", mode.label());
    }
}

#[test]
fn kill_9_of_airlock_kills_the_sandbox_and_leaks_no_mount() {
    require_sandbox!();
    require_pgrep!();
    for mode in modes() {
        let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
        let marker = unique_sleep();
        let script = format!("sleep {marker}");
        let mut child = mode
            .command(&["run", "--", "/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_sleep(&marker, &mut child);
        send_signal("KILL", child.id());
        let status = wait_at_most(&mut child, Duration::from_secs(5), "airlock after kill -9");
        assert_eq!(status.code(), None, "{}: airlock should have died of SIGKILL", mode.label());
        let left = wait_until_gone(&marker, Duration::from_secs(3));
        assert!(left.is_empty(), "{}: the sandbox outlived its airlock: {left:?}", mode.label());
        let mounts_after = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
        assert_eq!(mounts_before, mounts_after, "{}: the host's mount table changed", mode.label());
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Signals sent to airlock
// ---------------------------------------------------------------------------------------------------------------

/// Starts a command that traps `signal`, sends it to the airlock process, and checks the trap ran and set the
/// exit status.
fn check_signal_forwarded(signal: &str, trap_exit: i32) {
    require_sandbox!();
    require_pgrep!();
    for mode in modes() {
        let marker = unique_sleep();
        let script = format!("trap 'echo got-{signal}; exit {trap_exit}' {signal}; sleep {marker} & wait");
        let mut child = mode
            .command(&["run", "--", "/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_sleep(&marker, &mut child);
        send_signal(signal, child.id());
        let status = wait_at_most(&mut child, Duration::from_secs(10), "airlock after a forwarded signal");
        let (out, err) = read_pipe(&mut child);
        assert_eq!(
            status.code(),
            Some(trap_exit),
            "{}: SIGTERM was not forwarded to the command\n--- stdout\n{out}--- stderr\n{err}",
            mode.label()
        );
        assert!(out.contains(&format!("got-{signal}")), "{}: stdout {out:?}, stderr {err:?}", mode.label());
        let left = wait_until_gone(&marker, Duration::from_secs(2));
        assert!(left.is_empty(), "{}: {left:?}", mode.label());
    }
}

#[test]
fn sigterm_to_airlock_is_forwarded_to_the_command() {
    check_signal_forwarded("TERM", 7);
}

#[test]
fn sigint_to_airlock_is_forwarded_to_the_command() {
    check_signal_forwarded("INT", 8);
}

// ---------------------------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------------------------

/// Variables in airlock's own environment that must not reach the command.
const CALLER_SECRETS: &[(&str, &str)] = &[
    ("FOO", "secret"),
    ("AWS_SECRET_ACCESS_KEY", "hunter2"),
    ("SSH_AUTH_SOCK", "/tmp/agent.sock"),
    ("PYTHONPATH", "/home/someone/lib"),
    ("XDG_RUNTIME_DIR", "/run/user/0"),
];

#[test]
fn environment_is_scrubbed_to_path_home_term_lang_user() {
    require_sandbox!();
    for mode in modes() {
        let mut env: Vec<(&str, &str)> = CALLER_SECRETS.to_vec();
        env.extend([("TERM", "xterm-256color"), ("LANG", "C.UTF-8"), ("HOME", "/root"), ("PATH", "/usr/bin:/bin")]);
        let o = match mode {
            Mode::Invoker => Command::new(common::airlock_path())
                .args(["run", "--", "env"])
                .env_clear()
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .output()
                .unwrap(),
            Mode::TestUser => {
                // setpriv clears the environment; env(1) then gives airlock exactly ours.
                let prefix = as_user_prefix();
                Command::new(&prefix[0])
                    .args(&prefix[1..])
                    .args(["/usr/bin/env", "-i"])
                    .args(env.iter().map(|(k, v)| format!("{k}={v}")))
                    .arg(user_binary())
                    .args(["run", "--", "env"])
                    .current_dir("/")
                    .stdin(Stdio::null())
                    .output()
                    .unwrap()
            }
        };
        let out = ok(&o);
        let got = env_map(&out);
        let user = if mode.rootless() { common::TEST_USER.to_owned() } else { "root".to_owned() };
        let user =
            if mode == Mode::Invoker && !common::is_root() { std::env::var("USER").unwrap_or(user) } else { user };
        let expected: BTreeMap<String, String> = [
            ("HOME", "/tmp"),
            ("LANG", "C.UTF-8"),
            ("PATH", DEFAULT_PATH),
            ("TERM", "xterm-256color"),
            ("USER", user.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, expected, "{}: the environment inside is not exactly the default set\n{out}", mode.label());
    }
}

#[test]
fn environment_of_the_test_process_does_not_leak() {
    require_sandbox!();
    // Whatever cargo and the shell put in our environment, plus FOO: only the default names come through.
    let o = Command::new(common::airlock_path())
        .args(["run", "--", "env"])
        .env("FOO", "secret")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let got = env_map(&ok(&o));
    let allowed: HashSet<&str> = ["PATH", "HOME", "TERM", "LANG", "USER"].into_iter().collect();
    for key in got.keys() {
        assert!(allowed.contains(key.as_str()), "{key} leaked into the sandbox: {got:?}");
    }
    for key in ["PATH", "HOME", "USER"] {
        assert!(got.contains_key(key), "{key} is missing inside: {got:?}");
    }
    assert!(!got.contains_key("FOO"));
}

#[test]
fn env_flag_sets_and_pass_env_passes_named_variables_only() {
    require_sandbox!();
    let o = Command::new(common::airlock_path())
        .args(["run", "--env", "A=1", "--env", "B=x=y", "--pass-env", "FOO", "--pass-env", "UNSET_AIRLOCK_TEST_VAR"])
        .args(["--", "env"])
        .env("FOO", "secret")
        .env("BAR", "not-passed")
        .env_remove("UNSET_AIRLOCK_TEST_VAR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let got = env_map(&ok(&o));
    assert_eq!(got.get("A").map(String::as_str), Some("1"), "{got:?}");
    assert_eq!(got.get("B").map(String::as_str), Some("x=y"), "the value is everything after the first '='");
    assert_eq!(got.get("FOO").map(String::as_str), Some("secret"), "{got:?}");
    assert!(!got.contains_key("BAR"), "BAR was not named: {got:?}");
    assert!(!got.contains_key("UNSET_AIRLOCK_TEST_VAR"), "a variable the caller lacks is skipped: {got:?}");
}

#[test]
fn env_flag_overrides_the_defaults() {
    require_sandbox!();
    let o = common::run(&["--env", "HOME=/elsewhere", "--env", "PATH=/bin", "--", "/usr/bin/env"]);
    let got = env_map(&ok(&o));
    assert_eq!(got.get("HOME").map(String::as_str), Some("/elsewhere"));
    assert_eq!(got.get("PATH").map(String::as_str), Some("/bin"));
}

#[test]
fn env_flag_without_equals_is_refused() {
    require_sandbox!();
    assert_rejected(&["--env", "FOO"], &["--env", "KEY=VALUE"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Bad input: refused with 125 and one line before anything runs
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn marker_control_a_valid_run_does_create_the_marker() {
    // Proves the marker used below would show a command that ran.
    require_sandbox!();
    let marker = Marker::new();
    let args = marker.args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::run(&args);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    assert!(marker.ran(), "the control run did not create {}", marker.file().display());
}

#[test]
fn unknown_flag_is_refused_not_run_as_the_command() {
    require_sandbox!();
    assert_rejected(&["--bogus"], &["--bogus"]);
}

#[test]
fn bad_timeout_values_are_refused() {
    require_sandbox!();
    assert_rejected(&["--timeout", "soon"], &["--timeout", "soon"]);
    assert_rejected(&["--timeout", "0"], &["--timeout"]);
}

#[test]
fn hostile_file_names_give_one_escaped_line() {
    require_sandbox!();
    // A newline and a terminal escape sequence in a path: the message stays one line (assert_rejected checks
    // that), shows them escaped, and never passes the raw escape to the terminal.
    let hostile = "/tmp/airlock-missing\nsecond-line\u{1b}[31m";
    let marker = Marker::new();
    let args = marker.args(&["--workspace", hostile, "--workspace-mode", "rw"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::run(&args);
    assert_setup_refused(&o, &["airlock-missing\\nsecond-line"]);
    assert!(!common::stderr(&o).contains('\u{1b}'), "raw escape sequence on stderr: {:?}", common::stderr(&o));
    assert!(!marker.ran());
}

#[test]
fn bad_memory_value_is_refused() {
    require_sandbox!();
    assert_rejected(&["--memory", "lots"], &["--memory", "lots"]);
}

#[test]
fn zero_pids_is_refused() {
    require_sandbox!();
    assert_rejected(&["--pids", "0"], &["--pids"]);
}

#[test]
fn negative_cpus_is_refused() {
    require_sandbox!();
    assert_rejected(&["--cpus", "-1"], &["--cpus"]);
}

#[test]
fn missing_workspace_is_refused() {
    require_sandbox!();
    assert_rejected(
        &["--workspace", "/does/not/exist", "--workspace-mode", "rw"],
        &["/does/not/exist", "does not exist"],
    );
}

#[test]
fn workspace_that_is_a_file_is_refused() {
    require_sandbox!();
    let (_dir, file) = temp_file("wsfile", "file", "x");
    let path = file.to_str().unwrap();
    assert_rejected(&["--workspace", path, "--workspace-mode", "rw"], &[path, "not a directory"]);
}

#[test]
fn workspace_that_is_a_symlink_is_refused() {
    require_sandbox!();
    let real = TempDir::new("wsreal");
    let links = TempDir::new("wslink");
    let link = links.path().join("link");
    symlink(real.path(), &link).unwrap();
    let path = link.to_str().unwrap();
    assert_rejected(&["--workspace", path, "--workspace-mode", "rw"], &[path, "symlink"]);
}

#[test]
fn missing_ro_bind_source_is_refused() {
    require_sandbox!();
    assert_rejected(&["--ro-bind", "/nonexistent"], &["--ro-bind", "/nonexistent"]);
}

#[test]
fn relative_tmpfs_destination_is_refused() {
    require_sandbox!();
    assert_rejected(&["--tmpfs", "relative/path"], &["--tmpfs", "relative/path"]);
}

#[test]
fn invalid_hostname_is_refused() {
    require_sandbox!();
    assert_rejected(&["--hostname", "bad name!"], &["--hostname"]);
}

#[test]
fn unknown_network_mode_is_refused() {
    require_sandbox!();
    assert_rejected(&["--net", "bogus"], &["--net", "bogus"]);
}

#[test]
fn malformed_allow_entries_are_refused() {
    require_sandbox!();
    assert_rejected(&["--allow", "*."], &["--allow", "*."]);
    assert_rejected(&["--allow", "http://x.com/"], &["--allow", "http://x.com/"]);
}

#[test]
fn invalid_user_is_refused() {
    require_sandbox!();
    assert_rejected(&["--user", "abc"], &["--user", "abc"]);
}

#[test]
fn unknown_builtin_profile_is_refused() {
    require_sandbox!();
    assert_rejected(&["--profile", "does-not-exist"], &["does-not-exist", "default, strict, dev"]);
}

#[test]
fn malformed_profile_file_is_refused_naming_line_and_field() {
    require_sandbox!();
    let (_dir, file) =
        temp_file("badprofile", "bad.toml", "description = \"malformed\"\n[process]\ntimeout = \"soon\"\n");
    let path = file.to_str().unwrap();
    assert_rejected(&["--profile", path], &[path, "line 3", "process.timeout", "soon"]);
}

#[test]
fn profile_with_unknown_key_is_refused_naming_it() {
    require_sandbox!();
    let (_dir, file) = temp_file("unkprofile", "unknown.toml", "[process]\nbogus_key = 1\n");
    let path = file.to_str().unwrap();
    assert_rejected(&["--profile", path], &["line 2", "bogus_key"]);
}

#[test]
fn missing_profile_file_is_refused() {
    require_sandbox!();
    assert_rejected(&["--profile", "/nonexistent/profile.toml"], &["/nonexistent/profile.toml"]);
}

#[test]
fn invalid_sandbox_names_are_refused() {
    require_sandbox!();
    assert_rejected(&["--name", "a/b"], &["--name"]);
    let long = "a".repeat(65);
    assert_rejected(&["--name", &long], &["--name", "64"]);
    // 64 bytes is fine.
    let o = common::run(&["--rm", "--name", &"a".repeat(64), "--", "/bin/true"]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
}

#[test]
fn missing_rootfs_directory_is_refused() {
    require_sandbox!();
    assert_rejected(&["--rootfs", "/nonexistent"], &["/nonexistent", "does not exist"]);
}

/// A limit is never silently dropped: where airlock can enforce `--memory` (as root, or rootless with a delegated
/// cgroup) a command that allocates far more is killed with 137; where it cannot, the run is refused with 125
/// and one line saying why, before anything ran.
#[test]
fn memory_limit_is_enforced_with_137_or_refused_with_125_never_ignored() {
    require_sandbox!();
    require_tool!("python3");
    let hog = "b = bytearray(512 << 20); print('allocated', len(b))";
    for mode in modes() {
        let o = mode.run(&["--memory", "64M", "--", "python3", "-c", hog]);
        match code(&o) {
            137 => {
                assert!(stderr(&o).contains("airlock: killed: out of memory"), "{}: {}", mode.label(), describe(&o));
            }
            125 => {
                assert_setup_refused(&o, &["memory"]);
                eprintln!("{}: --memory is refused here: {}", mode.label(), stderr(&o).trim());
            }
            _ => {
                panic!("{}: --memory 64M was neither enforced (137) nor refused (125): {}", mode.label(), describe(&o))
            }
        }
        assert!(
            !stdout(&o).contains("allocated"),
            "{}: 512 MiB fit under --memory 64M: {}",
            mode.label(),
            describe(&o)
        );
    }
    // Invalid limits are refused whatever the host supports.
    assert_rejected(&["--memory", "64"], &["--memory"]);
}

#[test]
fn run_without_a_command_is_refused_naming_what_is_missing() {
    require_sandbox!();
    for args in [&["run"][..], &["run", "--"][..], &["run", "--timeout", "5s"][..]] {
        let o = common::airlock(args);
        assert_eq!(code(&o), 125, "airlock {args:?}: {}", describe(&o));
        let lines = stderr_lines(&o);
        assert_eq!(lines.len(), 1, "airlock {args:?}: {}", describe(&o));
        assert!(lines[0].starts_with("airlock: "), "{}", describe(&o));
        assert!(
            lines[0].to_lowercase().contains("command"),
            "airlock {args:?}: the one line should say the COMMAND is missing: {}",
            describe(&o)
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Help, version, profiles
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn top_level_help_lists_the_subcommands() {
    let o = common::airlock(&["--help"]);
    let out = ok(&o);
    for word in ["run", "doctor", "profile", "Usage"] {
        assert!(out.contains(word), "airlock --help does not mention {word}:\n{out}");
    }
}

#[test]
fn run_help_mentions_every_contract_flag() {
    let o = common::airlock(&["run", "--help"]);
    let out = ok(&o);
    for flag in CONTRACT_RUN_FLAGS {
        let found = out.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).any(|word| word == *flag);
        assert!(found, "airlock run --help does not mention {flag}:\n{out}");
    }
    assert!(out.contains("-t"), "airlock run --help does not mention -t");
}

#[test]
fn version_prints_name_and_version() {
    let o = common::airlock(&["--version"]);
    let out = ok(&o);
    assert_eq!(out.trim(), format!("airlock {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn profile_list_names_the_builtins() {
    let o = common::airlock(&["profile", "list"]);
    let out = ok(&o);
    let names: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(
        names,
        ["default", "strict", "dev", "net-debian", "net-pypi", "net-npm", "net-crates", "net-github"],
        "{out}"
    );
}

#[test]
fn profile_show_prints_toml_that_validate_accepts() {
    let dir = TempDir::new("profiles");
    for name in ["default", "strict", "dev"] {
        let o = common::airlock(&["profile", "show", name]);
        let text = ok(&o);
        assert!(text.contains("[filesystem]"), "{name}: {text}");
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, &text).unwrap();
        let o = common::airlock(&["profile", "validate", file.to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{name}: {}", describe(&o));
        assert!(stdout(&o).contains("ok"), "{name}: {}", describe(&o));
    }
}

#[test]
fn profile_validate_rejects_malformed_file_naming_line_and_field() {
    let (_dir, file) =
        temp_file("validate", "bad.toml", "description = \"malformed\"\n[process]\ntimeout = \"soon\"\n");
    let path = file.to_str().unwrap();
    let o = common::airlock(&["profile", "validate", path]);
    assert_ne!(code(&o), 0, "{}", describe(&o));
    let lines = stderr_lines(&o);
    assert_eq!(lines.len(), 1, "{}", describe(&o));
    assert!(lines[0].starts_with("airlock: "), "{}", describe(&o));
    assert!(lines[0].contains("line 3") && lines[0].contains("process.timeout"), "{}", describe(&o));

    let (_dir2, syntax) = temp_file("validate", "syntax.toml", "[process\nhostname = 1\n");
    let o = common::airlock(&["profile", "validate", syntax.to_str().unwrap()]);
    assert_ne!(code(&o), 0, "{}", describe(&o));
    assert!(stderr(&o).contains("line 1"), "{}", describe(&o));
}

#[test]
fn profile_show_of_unknown_name_fails() {
    let o = common::airlock(&["profile", "show", "no-such-profile"]);
    assert_ne!(code(&o), 0, "{}", describe(&o));
    assert!(stderr(&o).starts_with("airlock: "), "{}", describe(&o));
    assert!(stderr(&o).contains("no-such-profile"), "{}", describe(&o));
}

#[test]
fn user_profile_is_applied_and_flags_override_it() {
    require_sandbox!();
    let (_dir, file) = temp_file(
        "userprofile",
        "mine.toml",
        "description = \"test\"\n[process]\nhostname = \"fromprofile\"\n[env]\nset = { X = \"1\" }\n",
    );
    let path = file.to_str().unwrap();
    let script = "echo host=$(hostname) X=$X";
    let o = common::run(&["--profile", path, "--", "/bin/sh", "-c", script]);
    assert_eq!(ok(&o), "host=fromprofile X=1\n");
    let o = common::run(&["--profile", path, "--hostname", "fromflag", "--env", "X=2", "--", "/bin/sh", "-c", script]);
    assert_eq!(ok(&o), "host=fromflag X=2\n");
    // And without the profile, the default hostname.
    let o = common::run(&["--", "/bin/sh", "-c", script]);
    assert_eq!(ok(&o), "host=airlock X=\n");
}

// ---------------------------------------------------------------------------------------------------------------
// --user
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn default_identity_is_root_as_root_and_the_invoker_rootless() {
    require_sandbox!();
    for mode in modes() {
        let o = mode.run(&["--", "/bin/sh", "-c", "id -u; id -g"]);
        let out = ok(&o);
        let expected_uid = match (mode, common::is_root()) {
            (Mode::Invoker, true) => "0".to_owned(),
            (Mode::TestUser, _) => common::test_user_uid().to_string(),
            (Mode::Invoker, false) => {
                String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim().to_owned()
            }
        };
        assert_eq!(out.lines().next(), Some(expected_uid.as_str()), "{}: {out}", mode.label());
    }
}

#[test]
fn user_flag_sets_uid_and_gid_inside() {
    require_sandbox!();
    if !common::is_root() {
        eprintln!("SKIP: --user 1000:1000 needs host root (rootless can map only the invoker's id)");
        return;
    }
    let o = common::run(&["--user", "1000:1000", "--", "/bin/sh", "-c", "id -u; id -g; echo $USER"]);
    assert_eq!(ok(&o), "1000\n1000\n1000\n");
    let o = common::run(&["--user", "1234", "--", "/bin/sh", "-c", "id -u; id -g"]);
    assert_eq!(ok(&o), "1234\n1234\n", "a UID alone sets the gid to the same number");
}

#[test]
fn user_root_rootless_is_uid_0_inside() {
    require_sandbox!();
    let _user = require_test_user!();
    let o = common::run_as_user(&["--user", "root", "--", "/bin/sh", "-c", "id -u; id -g; echo $USER"]);
    assert_eq!(ok(&o), "0\n0\nroot\n");
}

// ---------------------------------------------------------------------------------------------------------------
// -t
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn tty_window_resizes_reach_the_command() {
    require_sandbox!();
    let Some(python) = common::python3() else {
        skip_or_fail!("python3 is not installed: it drives the pseudo-terminal");
    };
    let script = "trap 'stty size; exit 5' WINCH; stty size; echo READY; sleep 10 & wait";
    let o = Command::new(python)
        .args(["-c", common::PTY_DRIVER, "40", "100", "--resize", "30", "120"])
        .arg(common::airlock_path())
        .args(["run", "-t", "--", "/bin/sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = ok(&o).replace('\r', "");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines.first(), Some(&"40 100"), "initial size: {out}");
    assert!(lines.contains(&"30 120"), "the command saw the new size (SIGWINCH in the sandbox): {out}");
    assert_eq!(lines.last(), Some(&"EXIT 5"), "the WINCH trap ended the command: {out}");
}

#[test]
fn tty_flag_gives_the_sandbox_its_own_terminal_with_the_callers_size() {
    require_sandbox!();
    let Some(python) = common::python3() else {
        skip_or_fail!("python3 is not installed: it drives the pseudo-terminal");
    };
    for mode in modes() {
        let mut argv: Vec<String> = Vec::new();
        let binary = match mode {
            Mode::Invoker => common::airlock_path(),
            Mode::TestUser => {
                argv.extend(as_user_prefix());
                user_binary()
            }
        };
        argv.push(binary.to_str().unwrap().to_owned());
        argv.extend(["run", "-t", "--", "/bin/sh", "-c", "tty; stty size; ls /dev/pts; echo done"].map(String::from));
        let o = Command::new(python)
            .args(["-c", common::PTY_DRIVER, "40", "100"])
            .args(&argv)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let out = ok(&o).replace('\r', "");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(
            lines.first(),
            Some(&"/dev/pts/0"),
            "{}: the sandbox's own devpts, first terminal: {out}",
            mode.label()
        );
        assert!(lines.contains(&"40 100"), "{}: the caller's window size: {out}", mode.label());
        // A fresh devpts instance: only our terminal and ptmx, none of the host's.
        let pts: Vec<&str> = lines.iter().copied().skip(2).take_while(|l| *l != "done").collect();
        let pts: Vec<&str> = pts.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(pts, ["0", "ptmx"], "{}: /dev/pts is not the sandbox's own: {out}", mode.label());
        assert!(lines.contains(&"done"), "{}: {out}", mode.label());
        assert_eq!(lines.last(), Some(&"EXIT 0"), "{}: {out}", mode.label());
    }
}

#[test]
fn tty_flag_passes_the_commands_exit_status() {
    require_sandbox!();
    let Some(python) = common::python3() else {
        skip_or_fail!("python3 is not installed: it drives the pseudo-terminal");
    };
    let airlock = common::airlock_path();
    let o = Command::new(python)
        .args(["-c", common::PTY_DRIVER, "24", "80"])
        .arg(&airlock)
        .args(["run", "-t", "--", "/bin/sh", "-c", "exit 9"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = ok(&o).replace('\r', "");
    assert_eq!(out.lines().last(), Some("EXIT 9"), "{out}");
}

/// A command that points its standard streams elsewhere (`exec >log 2>&1`, as daemons and some build tools do)
/// must keep running: on a real terminal nothing happens until the session ends. The terminal is hung up
/// (SIGHUP to the command) only if airlock closes its end of the pseudo-terminal early.
#[test]
fn tty_command_that_closes_its_terminal_fds_is_not_hung_up() {
    require_sandbox!();
    for mode in modes() {
        let script = "exec </dev/null >/dev/null 2>&1; sleep 1; exit 3";
        let mut child = mode
            .command(&["run", "-t", "--", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_at_most(&mut child, Duration::from_secs(10), "airlock run -t, command closed its fds");
        let (out, err) = read_pipe(&mut child);
        assert_eq!(
            status.code(),
            Some(3),
            "{}: the command was killed (129 = SIGHUP) after closing its terminal fds: stdout {out:?}, stderr {err:?}",
            mode.label()
        );
    }
}

/// `echo hi | airlock run -t -- cat`: cat reads hi, then end of input (airlock types ^D), and exits 0. An
/// intermittent 129 here is the hang-up of `tty_command_that_closes_its_terminal_fds_is_not_hung_up` (cat closes
/// its streams just before it exits).
#[test]
fn tty_flag_with_piped_stdin_runs_and_ends() {
    require_sandbox!();
    let mut child = Command::new(common::airlock_path())
        .args(["run", "-t", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let status = wait_at_most(&mut child, Duration::from_secs(10), "airlock run -t -- cat with piped stdin");
    let (out, err) = read_pipe(&mut child);
    assert_eq!(status.code(), Some(0), "stdout {out:?}, stderr {err:?}");
    assert!(out.contains("hi"), "cat's output did not come back: stdout {out:?}, stderr {err:?}");
}

#[test]
fn tty_flag_with_null_stdin_still_gets_a_terminal() {
    require_sandbox!();
    let mut child = Command::new(common::airlock_path())
        .args(["run", "-t", "--", "/bin/sh", "-c", "tty; echo done"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_at_most(&mut child, Duration::from_secs(10), "airlock run -t with stdin /dev/null");
    let (out, err) = read_pipe(&mut child);
    assert_eq!(status.code(), Some(0), "stdout {out:?}, stderr {err:?}");
    let out = out.replace('\r', "");
    assert_eq!(out, "/dev/pts/0\ndone\n", "stderr {err:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Ordinary tools inside
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn gcc_compiles_and_runs_hello_world() {
    require_sandbox!();
    require_tool!("gcc");
    if common::is_root() {
        let _user = require_test_user!();
    }
    let ws = tool_workspace(
        "gcc",
        &[("hello.c", "#include <stdio.h>\nint main(void) { puts(\"hello, world\"); return 0; }\n")],
    );
    let o = run_in_workspace(&ws, "gcc -O1 -o hello hello.c && ./hello");
    assert_eq!(ok(&o), "hello, world\n");
    assert!(ws.path().join("hello").is_file(), "the binary was not written to the rw workspace");
}

#[test]
fn npm_and_node_work() {
    require_sandbox!();
    require_tool!("npm");
    if common::is_root() {
        let _user = require_test_user!();
    }
    let ws = tool_workspace("npm", &[]);
    let o =
        run_in_workspace(&ws, "npm init -y >/dev/null && node -e 'console.log(require(\"./package.json\").version)'");
    assert_eq!(ok(&o), "1.0.0\n");
    assert!(ws.path().join("package.json").is_file(), "npm init did not write package.json to the workspace");
}

#[test]
fn pip_runs_and_installs_into_a_target_dir() {
    require_sandbox!();
    require_tool!("python3");
    if !std::path::Path::new("/usr/lib/python3/dist-packages/pip").is_dir() {
        skip_or_fail!("python3-pip is not installed on this host (CI installs it)");
    }
    // A wheel of our own (no index, no network): pip unpacks it into a target directory.
    let script = r#"
set -e
mkdir -p /tmp/w/airlockdemo-1.0.dist-info /tmp/w/airlockdemo
echo 'VALUE = 42' > /tmp/w/airlockdemo/__init__.py
printf 'Metadata-Version: 2.1
Name: airlockdemo
Version: 1.0
' > /tmp/w/airlockdemo-1.0.dist-info/METADATA
printf 'Wheel-Version: 1.0
Generator: test
Root-Is-Purelib: true
Tag: py3-none-any
' > /tmp/w/airlockdemo-1.0.dist-info/WHEEL
printf 'airlockdemo/__init__.py,,
airlockdemo-1.0.dist-info/METADATA,,
airlockdemo-1.0.dist-info/WHEEL,,
airlockdemo-1.0.dist-info/RECORD,,
' > /tmp/w/airlockdemo-1.0.dist-info/RECORD
cd /tmp/w && python3 -m zipfile -c /tmp/airlockdemo-1.0-py3-none-any.whl airlockdemo airlockdemo-1.0.dist-info
python3 -m pip install --quiet --no-index --no-cache-dir --target /tmp/site /tmp/airlockdemo-1.0-py3-none-any.whl
PYTHONPATH=/tmp/site python3 -c 'import airlockdemo; print(airlockdemo.VALUE)'
"#;
    let o = common::sh(script);
    assert_eq!(ok(&o).trim_end().lines().last(), Some("42"), "stderr: {}", common::stderr(&o));
}

#[test]
fn cargo_builds_a_crate_offline() {
    require_sandbox!();
    let Some(home) = std::env::var_os("HOME").map(std::path::PathBuf::from) else {
        skip_or_fail!("HOME is not set, so the Rust toolchain cannot be found");
    };
    let cargo_home = std::env::var_os("CARGO_HOME").map(std::path::PathBuf::from).unwrap_or(home.join(".cargo"));
    let rustup_home = std::env::var_os("RUSTUP_HOME").map(std::path::PathBuf::from).unwrap_or(home.join(".rustup"));
    if !cargo_home.join("bin/cargo").exists() || !rustup_home.is_dir() {
        skip_or_fail!("no rustup toolchain under {} and {}", cargo_home.display(), rustup_home.display());
    }
    let (ch, rh) = (cargo_home.to_str().unwrap(), rustup_home.to_str().unwrap());
    let path = format!("PATH={ch}/bin:/usr/bin:/bin");
    let (ch_env, rh_env) = (format!("CARGO_HOME={ch}"), format!("RUSTUP_HOME={rh}"));
    // The toolchain is shared read-only; the crate is built in the sandbox's /tmp, without network.
    let o = common::run(&[
        "--ro-bind",
        ch,
        "--ro-bind",
        rh,
        "--env",
        &ch_env,
        "--env",
        &rh_env,
        "--env",
        &path,
        "--",
        "/bin/sh",
        "-c",
        "cd /tmp && cargo new -q --vcs none hello && cd hello && cargo build -q --offline && ./target/debug/hello",
    ]);
    assert_eq!(ok(&o), "Hello, world!\n");
}

#[test]
fn make_builds_a_small_makefile() {
    require_sandbox!();
    require_tool!("make");
    if common::is_root() {
        let _user = require_test_user!();
    }
    let makefile = "all: out.txt\n\t@cat out.txt\n\nout.txt: in.txt\n\ttr a-z A-Z < in.txt > out.txt\n";
    let ws = tool_workspace("make", &[("Makefile", makefile), ("in.txt", "built by make\n")]);
    let o = run_in_workspace(&ws, "make -s && make -q out.txt && echo up-to-date");
    assert_eq!(ok(&o), "BUILT BY MAKE\nup-to-date\n");
    assert_eq!(std::fs::read_to_string(ws.path().join("out.txt")).unwrap(), "BUILT BY MAKE\n");
}

#[test]
fn git_init_and_commit_work() {
    require_sandbox!();
    require_tool!("git");
    if common::is_root() {
        let _user = require_test_user!();
    }
    let ws = tool_workspace("git", &[]);
    let script = "git init -q repo && cd repo && echo content > file && git add file && \
                  git -c user.name=Tester -c user.email=tester@example.com commit -q -m first-commit && \
                  git log --format=%s && git status --porcelain";
    let o = run_in_workspace(&ws, script);
    assert_eq!(ok(&o), "first-commit\n");
    assert!(ws.path().join("repo/.git/HEAD").is_file());
}

#[test]
fn python_threads_and_multiprocessing_work() {
    require_sandbox!();
    require_tool!("python3");
    let script = r#"
import multiprocessing, threading
def square(x):
    return x * x
if __name__ == "__main__":
    seen = []
    threads = [threading.Thread(target=seen.append, args=(i,)) for i in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    with multiprocessing.Pool(3) as pool:
        squares = pool.map(square, range(6))
    queue = multiprocessing.Queue()
    proc = multiprocessing.Process(target=queue.put, args=("from-child",))
    proc.start(); got = queue.get(timeout=10); proc.join()
    print(sum(seen), squares, got, proc.exitcode)
"#;
    for mode in modes() {
        let o = mode.run(&["--", "python3", "-c", script]);
        assert_eq!(ok(&o), "28 [0, 1, 4, 9, 16, 25] from-child 0\n", "{}", mode.label());
    }
}

#[test]
fn strace_can_trace_its_own_children() {
    require_sandbox!();
    require_tool!("strace");
    for mode in modes() {
        let o = mode.run(&["--", "strace", "-f", "-e", "trace=execve", "/bin/sh", "-c", "/bin/true; echo traced"]);
        assert_eq!(code(&o), 0, "{}: {}", mode.label(), describe(&o));
        assert_eq!(stdout(&o), "traced\n", "{}", mode.label());
        assert!(
            stderr(&o).contains("execve(\"/bin/true\""),
            "{}: strace saw no child exec: {}",
            mode.label(),
            describe(&o)
        );
        assert!(stderr(&o).contains("+++ exited with 0 +++"), "{}: {}", mode.label(), describe(&o));
    }
}

#[test]
fn gdb_can_run_a_program_under_ptrace() {
    require_sandbox!();
    require_tool!("gdb");
    for mode in modes() {
        let o = mode.run(&["--", "gdb", "-nx", "-batch", "-ex", "run", "--args", "/bin/true"]);
        assert_eq!(code(&o), 0, "{}: {}", mode.label(), describe(&o));
        assert!(stdout(&o).contains("exited normally"), "{}: {}", mode.label(), describe(&o));
    }
}

#[test]
fn sigpipe_has_its_default_action() {
    require_sandbox!();
    for mode in modes() {
        let o = mode.run(&["--", "/bin/sh", "-c", "yes | head -1"]);
        assert_eq!(code(&o), 0, "{}: {}", mode.label(), describe(&o));
        assert_eq!(stdout(&o), "y\n", "{}", mode.label());
        assert!(!stderr(&o).contains("Broken pipe"), "{}: SIGPIPE is ignored inside: {}", mode.label(), describe(&o));
        if host_has("bash") {
            // yes dies of SIGPIPE (141) rather than exiting with an EPIPE error.
            let o = mode.run(&["--", "bash", "-c", "yes | head -1 >/dev/null; echo ${PIPESTATUS[0]}"]);
            assert_eq!(ok(&o), "141\n", "{}", mode.label());
        }
    }
}

#[test]
fn pipes_and_redirects_work_inside() {
    require_sandbox!();
    let o = common::run(&["--", "/bin/sh", "-c", "echo abc | tr a-c x-z | cat; echo err 1>&2; seq 3 | wc -l"]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    assert_eq!(stdout(&o), "xyz\n3\n");
    assert_eq!(stderr(&o), "err\n");
}

/// `echo > /dev/stdout` reopens the caller's stdout through /proc/self/fd/1; for a pipe that checks the pipe
/// inode's owner and mode (0600, the creator's). Here the caller is the test process.
#[test]
fn redirects_to_dev_stdout_and_dev_stderr_reach_the_callers_pipes_as_root() {
    require_sandbox!();
    let o = common::run(&["--", "/bin/sh", "-c", "echo out > /dev/stdout; echo err > /dev/stderr; echo end"]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    assert_eq!(stdout(&o), "out\nend\n", "{}", describe(&o));
    assert_eq!(stderr(&o), "err\n", "{}", describe(&o));
}

/// Rootless, the pipes must be the test user's own (a user cannot reopen root's pipe on the host either): a
/// shell running as the test user makes them.
#[test]
fn redirects_to_dev_stdout_and_dev_stderr_work_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    let inner = "echo out > /dev/stdout; echo err > /dev/stderr";
    let wrapper = "{ \"$0\" run -- /bin/sh -c \"$1\" 2>&1 1>&3 | sed 's/^/E:/'; } 3>&1 | cat";
    let prefix = as_user_prefix();
    let o = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(["/bin/sh", "-c", wrapper])
        .arg(user_binary())
        .arg(inner)
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = ok(&o);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["E:err", "out"], "{}", describe(&o));
}

// ---------------------------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------------------------

fn run_concurrently(n: usize, mode: Mode) -> Vec<Output> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let script = format!("cat /proc/self/uid_map; echo sandbox-{i}; sleep 1");
                mode.run(&["--", "/bin/sh", "-c", &script])
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn ten_concurrent_sandboxes_as_root_succeed_with_distinct_id_ranges() {
    require_sandbox!();
    if !common::is_root() {
        eprintln!("SKIP: host id ranges are allocated only as host root");
        return;
    }
    let outputs = run_concurrently(10, Mode::Invoker);
    let mut bases = HashSet::new();
    for (i, o) in outputs.iter().enumerate() {
        let out = ok(o);
        assert!(out.contains(&format!("sandbox-{i}\n")), "{out}");
        let fields: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(fields.len(), 3, "uid_map: {out}");
        assert_eq!(fields[0], "0", "uid_map: {out}");
        assert_eq!(fields[2], "65536", "uid_map: {out}");
        let base: u64 = fields[1].parse().unwrap();
        assert_ne!(base, 0, "root inside maps to host root: {out}");
        bases.insert(base);
    }
    assert_eq!(bases.len(), 10, "overlapping sandboxes shared a host id range: {bases:?}");
}

#[test]
fn ten_concurrent_rootless_sandboxes_succeed() {
    require_sandbox!();
    let _user = require_test_user!();
    let outputs = run_concurrently(10, Mode::TestUser);
    let uid = common::test_user_uid().to_string();
    for (i, o) in outputs.iter().enumerate() {
        let out = ok(o);
        assert!(out.contains(&format!("sandbox-{i}\n")), "{out}");
        let fields: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(fields, [uid.as_str(), uid.as_str(), "1"], "rootless maps only the invoker's id: {out}");
    }
}
