//! `airlock exec` into an `--isolation vm` sandbox as into a namespace sandbox: signals to the client reach the
//! command (its status 128+N when they kill it), `-t`'s terminal follows the client's size, a client that stops
//! reading its output holds only its own command (the supervisor serves the next exec), and `run -t` gives a
//! terminal in a one-shot guest (resized with the caller's). Real QEMU guests under TCG (`AIRLOCK_VM_ACCEL=tcg`);
//! one create serves several checks (a boot costs seconds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod vm_support;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::{airlock_path, code, stderr, stdout};

/// These tests' state directory (the initramfs cache in it is built once); sandbox names carry the pid.
fn state_dir() -> PathBuf {
    std::env::temp_dir().join("airlock-vm-exec-test-state")
}

fn airlock_cmd(args: &[&str]) -> Command {
    vm_support::airlock_cmd_in(&state_dir(), args)
}

/// `airlock ARGS` with `input` on its standard input, to its end.
fn vm(args: &[&str], input: &[u8]) -> Output {
    vm_support::output_with_input(airlock_cmd(args), input)
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{signal}");
}

/// The child's status within `secs`, or `None` (then it is killed).
fn wait_for(child: &mut Child, secs: u64) -> Option<ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `airlock exec NAME -- sh -c SCRIPT` (input a pipe it keeps open), once the command has printed its first line.
fn exec_started(name: &str, script: &str) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = airlock_cmd(&["exec", name, "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the command did not start");
    (child, out)
}

/// `common::PTY_DRIVER` with a deadline a TCG guest can meet (its own 20 s is for namespace sandboxes).
fn pty_driver() -> Option<String> {
    common::python3()?;
    Some(common::PTY_DRIVER.replace("time.time() + 20", "time.time() + 120"))
}

/// `airlock ARGS` on a new pseudo-terminal of `rows`x`cols` with the driver's `opts`; what the terminal showed
/// (carriage returns dropped), its last line `EXIT N`.
fn on_pty(driver: &str, rows: u16, cols: u16, opts: &[&str], args: &[&str]) -> String {
    let out = Command::new(common::python3().unwrap())
        .args(["-c", driver, &rows.to_string(), &cols.to_string()])
        .args(opts)
        .arg(airlock_path())
        .args(args)
        .env("AIRLOCK_STATE_DIR", state_dir())
        .env("AIRLOCK_VM_ACCEL", "tcg")
        .env_remove("AIRLOCK_VM_KERNEL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "the pty driver: {}", stderr(&out));
    stdout(&out).replace('\r', "")
}

#[test]
fn exec_into_a_vm_forwards_signals_resizes_and_survives_a_stuck_client() {
    require_vm!();
    let Some(driver) = pty_driver() else {
        skip_or_fail!("python3 is not installed: it drives the pseudo-terminal");
    };
    let name = format!("vmx-exec-{}", std::process::id());
    let out = vm(&["create", "--isolation", "vm", &name], b"");
    assert_eq!(code(&out), 0, "create: {}", stderr(&out));
    let _cleanup = vm_support::Cleanup::new(&state_dir(), &name);

    // SIGINT to the client: the command gets it and dies of it; the client's status is 128+2, as for a namespace
    // exec (before: the client died of it, and its command ran on).
    let (mut client, _out) = exec_started(&name, "echo ready; exec sleep 600");
    signal(&client, "INT");
    let status = wait_for(&mut client, 60).expect("the exec did not end after SIGINT");
    assert_eq!(status.code(), Some(130), "{status:?}");

    // SIGTERM to a command that handles it: the handler runs, its status is the command's.
    let (mut client, mut out) =
        exec_started(&name, "trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done");
    signal(&client, "TERM");
    let status = wait_for(&mut client, 60).expect("the exec did not end after SIGTERM");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!((status.code(), rest.trim()), (Some(7), "got TERM"), "{status:?}");

    // -t: a resize of the client's terminal reaches the command's (before: it kept its first size).
    let script = "stty size; echo READY; while [ \"$(stty size)\" = '24 80' ]; do sleep 0.2; done; stty size; exit 3";
    let shown = on_pty(&driver, 24, 80, &["--resize", "50", "120"], &["exec", "-t", &name, "--", "sh", "-c", script]);
    let lines: Vec<&str> = shown.lines().map(str::trim).collect();
    assert_eq!(lines, ["24 80", "READY", "50 120", "EXIT 3"], "{shown}");

    // A large output to a client that reads it all arrives whole.
    let out = vm(&["exec", &name, "--", "head", "-c", "5000000", "/dev/zero"], b"");
    assert_eq!((code(&out), out.stdout.len()), (0, 5_000_000), "{}", stderr(&out));

    // A client that reads late: the command has ended by then, its output waits for the client, whole.
    let mut late = airlock_cmd(&["exec", &name, "--", "sh", "-c", "head -c 500000 /dev/zero; echo done >&2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(late.stderr.take().unwrap()).read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "done");
    std::thread::sleep(Duration::from_secs(2));
    let mut got = Vec::new();
    late.stdout.take().unwrap().read_to_end(&mut got).unwrap();
    let status = wait_for(&mut late, 60).expect("the late reader's exec did not end");
    assert_eq!((status.code(), got.len()), (Some(0), 500_000));

    // A client that never reads its large output, then killed (its output pipe still open, unread): the
    // supervisor is not stuck writing to it; its command ends and the next exec runs (before: the supervisor
    // blocked in that write for good).
    let mut stuck = airlock_cmd(&["exec", &name, "--", "head", "-c", "50000000", "/dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let unread = stuck.stdout.take().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert!(stuck.try_wait().unwrap().is_none(), "the exec ended though its output was not read");
    stuck.kill().unwrap();
    stuck.wait().unwrap();
    let mut next = airlock_cmd(&["exec", &name, "--", "echo", "next"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(&mut next, 60).expect("the next exec did not run: the supervisor is stuck");
    let mut said = String::new();
    next.stdout.take().unwrap().read_to_string(&mut said).unwrap();
    assert_eq!((status.code(), said.trim()), (Some(0), "next"));
    drop(unread);

    // Clients that connect and send nothing hold no one: an exec beside three of them runs at once (before: each
    // held the supervisor for its 5 s to send a request, so this exec waited 15 s), and each is told why it is
    // let go at its own deadline.
    let socket = state_dir().join("sandboxes").join(&name).join("vm.sock");
    let silent: Vec<_> = (0..3).map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap()).collect();
    let started = Instant::now();
    let out = vm(&["exec", &name, "--", "echo", "beside"], b"");
    let took = started.elapsed();
    assert_eq!((code(&out), stdout(&out).trim()), (0, "beside"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(4), "an exec beside silent clients took {took:?}");
    for mut client in silent {
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut said = String::new();
        client.read_to_string(&mut said).unwrap();
        assert!(said.contains("no whole request within 5 s"), "{said}");
    }

    let out = vm(&["stop", &name], b"");
    assert_eq!(code(&out), 0, "stop: {}", stderr(&out));
}

#[test]
fn run_t_in_a_vm_gives_the_command_a_terminal_of_the_callers_size() {
    require_vm!();
    let Some(driver) = pty_driver() else {
        skip_or_fail!("python3 is not installed: it drives the pseudo-terminal");
    };
    // A terminal of the guest sandbox's own devpts, the caller's size, typed input through it, the status.
    let script = "tty; stty size; read line; echo \"got $line\"; exit 4";
    let shown =
        on_pty(&driver, 40, 100, &["--type", "typed\n"], &["run", "-t", "--isolation", "vm", "--", "sh", "-c", script]);
    // The typed line may show (echoed by the command's terminal) before the command's first.
    let lines: Vec<&str> = shown.lines().map(str::trim).filter(|l| *l != "typed").collect();
    assert_eq!(lines.first(), Some(&"/dev/pts/0"), "not a terminal of the sandbox's: {shown}");
    assert_eq!(lines.get(1), Some(&"40 100"), "not the caller's size: {shown}");
    assert!(lines.contains(&"got typed"), "{shown}");
    assert_eq!(lines.last(), Some(&"EXIT 4"), "{shown}");

    // A resize of the caller's terminal reaches the command's, as for `exec -t`.
    let script = "stty size; echo READY; while [ \"$(stty size)\" = '24 80' ]; do sleep 0.2; done; stty size; exit 3";
    let args = ["run", "-t", "--isolation", "vm", "--", "sh", "-c", script];
    let shown = on_pty(&driver, 24, 80, &["--resize", "50", "120"], &args);
    let lines: Vec<&str> = shown.lines().map(str::trim).collect();
    assert_eq!(lines, ["24 80", "READY", "50 120", "EXIT 3"], "{shown}");
}

/// The first line `child` prints, within `secs` (read by a thread: a client that never starts must fail the test,
/// not hang it), and the rest of its output.
fn first_line_within(child: &mut Child, secs: u64) -> (Option<String>, std::sync::mpsc::Receiver<String>) {
    let out = child.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    (received.recv_timeout(Duration::from_secs(secs)).ok(), received)
}

#[test]
fn execs_into_a_vm_run_at_once_each_with_only_its_own_streams() {
    require_vm!();
    let name = format!("vmx-conc-{}", std::process::id());
    let out = vm(&["create", "--isolation", "vm", &name], b"");
    assert_eq!(code(&out), 0, "create: {}", stderr(&out));
    let _cleanup = vm_support::Cleanup::new(&state_dir(), &name);

    // As many commands as a held guest runs at once (16), each waiting for a line of its input: all of them run
    // at once (before: the second waited for the first to end, as an E2B background command held every later
    // command).
    let mut running = Vec::new();
    for i in 0..16 {
        let script = format!("echo ready {i}; read line; echo \"{i} got $line\"; echo \"{i} err\" >&2");
        let mut child = airlock_cmd(&["exec", &name, "--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (first, rest) = first_line_within(&mut child, 120);
        assert_eq!(first.as_deref(), Some(format!("ready {i}").as_str()), "exec {i} did not start while others run");
        running.push((i, child, rest));
    }
    // One more waits for a free place (the supervisor's listen queue), and runs once one is free.
    let mut queued = airlock_cmd(&["exec", &name, "--", "echo", "queued"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(queued.try_wait().unwrap().is_none(), "a 17th command ran with 16 running");

    // Each ends when told, in an order of its own, with its own output on its own streams and nothing else.
    for &at in &[3usize, 0, 15, 7, 1, 6, 12, 2, 5, 4, 8, 14, 9, 13, 10, 11] {
        let (i, child, rest) = &mut running[at];
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        writeln!(input, "hello {i}").unwrap();
        drop(input);
        let status = wait_for(child, 120).unwrap_or_else(|| panic!("exec {i} did not end"));
        let mut errors = String::new();
        child.stderr.take().unwrap().read_to_string(&mut errors).unwrap();
        let lines: Vec<String> = rest.try_iter().collect();
        assert_eq!(status.code(), Some(0), "exec {i}: {errors}");
        assert_eq!(lines, [format!("{i} got hello {i}")], "exec {i}'s output");
        assert_eq!(errors, format!("{i} err\n"), "exec {i}'s errors");
        if at == 3 {
            let status = wait_for(&mut queued, 120).expect("the queued exec did not run once a slot was free");
            let mut said = String::new();
            queued.stdout.take().unwrap().read_to_string(&mut said).unwrap();
            assert_eq!((status.code(), said.as_str()), (Some(0), "queued\n"));
        }
    }

    let out = vm(&["stop", &name], b"");
    assert_eq!(code(&out), 0, "stop: {}", stderr(&out));
}
