//! `airlock create --isolation vm`, `airlock exec` into it, `stop`/`rm`: real QEMU guests under TCG
//! (`AIRLOCK_VM_ACCEL=tcg`, as tests/vm.rs says why). One create serves several checks: a boot costs seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/daemon.rs"]
mod daemon_client;
mod vm_support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{code, stderr, stdout};
use vm_support::{is_qemu, qemu_gone};

/// These tests' state directory: one for every run (the initramfs cache in it is built once), apart from
/// tests/vm.rs's, which counts the QEMUs of its own. Sandbox names carry the pid.
fn state_dir() -> PathBuf {
    std::env::temp_dir().join("airlock-vm-create-test-state")
}

fn airlock_cmd(args: &[&str]) -> Command {
    vm_support::airlock_cmd_in(&state_dir(), args)
}

/// `airlock ARGS` with `input` on its standard input.
fn vm(args: &[&str], input: &[u8]) -> Output {
    vm_support::output_with_input(airlock_cmd(args), input)
}

fn sandbox_dir(name: &str) -> PathBuf {
    state_dir().join("sandboxes").join(name)
}

/// The pids the supervisor recorded: (supervisor, init = QEMU).
fn recorded_pids(name: &str) -> (i32, i32) {
    let text = std::fs::read_to_string(sandbox_dir(name).join("sandbox.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    (record["supervisor_pid"].as_i64().unwrap() as i32, record["init_pid"].as_i64().unwrap() as i32)
}

fn create(name: &str, extra: &[&str]) -> vm_support::Cleanup {
    let mut args = vec!["create", "--isolation", "vm"];
    args.extend(extra);
    args.push(name);
    let out = vm(&args, b"");
    assert_eq!(code(&out), 0, "create: {}", stderr(&out));
    vm_support::Cleanup::new(&state_dir(), name)
}

#[test]
fn create_then_exec_keeps_the_guest_and_stop_leaves_nothing() {
    require_vm!();
    let name = format!("vmc-life-{}", std::process::id());
    let workspace = common::TempDir::new("vmc-workspace");
    std::fs::write(workspace.path().join("before"), "host\n").unwrap();
    vm_support::user_owned(workspace.path());
    let _cleanup = create(&name, &["--workspace", workspace.str()]);
    let (_, qemu) = recorded_pids(&name);
    assert!(is_qemu(qemu), "the sandbox's init is its QEMU");
    let socket = sandbox_dir(&name).join("vm.sock");
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the supervisor's socket is the owner's only");

    // Its numbers are its QEMU's, not the host's processes'.
    let stats = vm(&["stats", &name, "--json"], b"");
    assert_eq!(code(&stats), 0, "{}", stderr(&stats));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&stats)).unwrap();
    assert!(doc["note"].as_str().unwrap().contains("--isolation vm"), "{doc}");

    let ls = vm(&["ls"], b"");
    assert!(stdout(&ls).lines().any(|l| l.starts_with(&name) && l.contains("running")), "{}", stdout(&ls));

    // Standard input relayed, output and errors apart, the exit status; a file left in the guest's /tmp.
    let out = vm(
        &["exec", &name, "--", "sh", "-c", "cat > /tmp/kept; echo out; echo err >&2; exit 3"],
        b"hello from the host\n",
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stdout(&out).starts_with("out\n"), "{}", stdout(&out));
    assert!(stderr(&out).contains("err") && !stdout(&out).contains("err"), "{}", stderr(&out));

    // The second exec finds the first one's file: one guest, one sandbox.
    let out = vm(&["exec", &name, "--", "cat", "/tmp/kept"], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello from the host\n");

    // A large input and output, whole.
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let out = vm(&["exec", &name, "--", "wc", "-c"], &input);
    assert_eq!(stdout(&out).trim(), "300000", "{}", stderr(&out));

    // Killed by a signal: 128 + N; the command's own timeout: 124.
    let out = vm(&["exec", &name, "--", "sh", "-c", "kill -TERM $$"], b"");
    assert_eq!(code(&out), 128 + 15, "{}", stderr(&out));
    let started = Instant::now();
    let out = vm(&["exec", &name, "--timeout", "1s", "--", "sleep", "30"], b"");
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));

    // The cow workspace: the guest reads the host's files and writes into the layer on the host, not the
    // workspace (its checkpoints: `checkpoint_and_rollback_of_a_running_vm_sandbox`).
    let ws = workspace.str();
    let out = vm(&["exec", &name, "--", "sh", "-c", &format!("cat {ws}/before && echo guest > {ws}/added")], b"");
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "host\n"), "{}", stderr(&out));
    assert!(!workspace.path().join("added").exists(), "a cow workspace's writes go to the layer");

    // A client killed mid-command: its command is killed in the guest, and the next exec runs at once.
    let mut client = airlock_cmd(&["exec", &name, "--", "sleep", "600"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    sigkill(client.id() as i32);
    let _ = client.wait();
    let started = Instant::now();
    let out = vm(&["exec", &name, "--", "sh", "-c", "ps -e -o comm= | grep -c '^sleep$' || true"], b"");
    assert_eq!(stdout(&out).trim(), "0", "the cancelled command still runs: {}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20));

    // -t: a terminal in the guest's sandbox, fed by exec's input (here a pipe), its status the command's.
    let out = vm(
        &["exec", "-t", &name, "--", "sh", "-c", "test -t 0 && test -t 1 && read line && echo \"got $line\"; exit 6"],
        b"typed\n",
    );
    assert_eq!(code(&out), 6, "{}", stderr(&out));
    assert!(stdout(&out).contains("got typed"), "{}", stdout(&out));

    // The execs are in the sandbox's log: attached, the guest's exec record, exited.
    let log = std::fs::read_to_string(sandbox_dir(&name).join("audit.jsonl")).unwrap();
    assert!(log.contains(r#""kind":"attached""#), "{log}");
    assert!(log.contains(r#""path":"/usr/bin/wc""#), "{log}");

    let out = vm(&["stop", &name], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(qemu_gone(qemu), "QEMU outlived stop");
    assert!(!socket.exists(), "the socket outlived stop");
    let out = vm(&["exec", &name, "--", "true"], b"");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    let out = vm(&["diff", &name], b"");
    assert!(stdout(&out).contains("A  added"), "{}{}", stdout(&out), stderr(&out));
    let out = vm(&["rm", &name], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!sandbox_dir(&name).exists());
}

/// Every entry under `dir` (relative path, and a file's contents or `dir`), sorted: a tree to compare.
fn tree(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
                entries.push((rel, "dir".to_string()));
            } else {
                entries.push((rel, std::fs::read_to_string(&path).unwrap_or_else(|_| "?".into())));
            }
        }
    }
    entries.sort();
    entries
}

#[test]
fn checkpoint_and_rollback_of_a_running_vm_sandbox() {
    require_vm!();
    let name = format!("vmc-ckpt-{}", std::process::id());
    let workspace = common::TempDir::new("vmc-ckpt-workspace");
    std::fs::write(workspace.path().join("before"), "host\n").unwrap();
    vm_support::user_owned(workspace.path());
    let _cleanup = create(&name, &["--workspace", workspace.str()]);
    let (_, qemu) = recorded_pids(&name);
    let ws = workspace.str();
    let sh = |script: &str| {
        let out = vm(&["exec", &name, "--", "sh", "-c", script], b"");
        assert_eq!(code(&out), 0, "{script}: {}", stderr(&out));
        stdout(&out)
    };
    // The guest's view of the workspace: every entry and a file's contents.
    let listing = format!("cd {ws} && find . -mindepth 1 | sort | while read f; do [ -d \"$f\" ] && echo \"$f/\" || echo \"$f=$(cat \"$f\")\"; done");
    sh(&format!("echo one > {ws}/a && mkdir {ws}/d && echo dd > {ws}/d/f"));
    let at_checkpoint = sh(&listing);
    assert_eq!(at_checkpoint, "./a=one\n./before=host\n./d/\n./d/f=dd\n");

    let out = vm(&["checkpoint", &name, "one"], b"");
    assert_eq!(code(&out), 0, "checkpoint: {}", stderr(&out));
    assert!(stdout(&out).contains("running"), "{}", stdout(&out));
    let frozen = sandbox_dir(&name).join("layers").join("1-one");
    let frozen_tree = tree(&frozen);
    assert_eq!(frozen_tree.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["a", "d", "d/f"]);
    // After the checkpoint, the guest goes on from the workspace as it was, and its changes reach a new layer.
    assert_eq!(sh(&listing), at_checkpoint);
    sh(&format!("echo two > {ws}/a && rm {ws}/before && rm -r {ws}/d && echo new > {ws}/b"));
    assert_eq!(sh(&listing), "./a=two\n./b=new\n");
    assert_eq!(tree(&frozen), frozen_tree, "a frozen layer changed");

    // A guest process with a workspace file open for writing: refused (the frozen layer could change under it),
    // nothing changed, and the process writes on once QEMU continues. It is told to go on through its standard
    // input (a file the host put in the upper directory under the mounted overlay would not be seen: overlayfs
    // keeps its negative lookups).
    let upper = sandbox_dir(&name).join("upper");
    let mut writer =
        airlock_cmd(&["exec", &name, "--", "sh", "-c", &format!("exec 3>{ws}/held; echo x >&3; read go; echo y >&3")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(upper.join("held")).unwrap_or_default() != "x\n" {
        assert!(Instant::now() < deadline, "the writer did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = vm(&["checkpoint", &name, "two"], b"");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("open for writing"), "{}", stderr(&out));
    assert!(!sandbox_dir(&name).join("layers").join("2-two").exists());
    assert!(
        !sandbox_dir(&name)
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint.")),
        "the refused checkpoint left its directory aside"
    );
    {
        use std::io::Write;
        let mut input = writer.stdin.take().unwrap();
        input.write_all(b"go\n").unwrap();
    }
    assert!(writer.wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(upper.join("held")).unwrap(), "x\ny\n");
    sh(&format!("rm {ws}/held"));

    // A rollback: exactly the checkpoint's tree, in the guest and in `airlock diff`; the host's workspace as it was.
    let out = vm(&["rollback", &name, "one"], b"");
    assert_eq!(code(&out), 0, "rollback: {}", stderr(&out));
    assert!(stdout(&out).contains("running"), "{}", stdout(&out));
    assert_eq!(sh(&listing), at_checkpoint);
    let diff = stdout(&vm(&["diff", &name], b""));
    assert!(
        diff.contains("A  a") && diff.contains("A  d/f") && !diff.contains(" b") && !diff.contains("D  before"),
        "{diff}"
    );
    assert_eq!(tree(&frozen), frozen_tree, "a frozen layer changed");
    assert_eq!(tree(workspace.path()), [("before".to_string(), "host\n".to_string())], "the host's workspace changed");
    // The guest writes on after it, into the new layer.
    sh(&format!("echo three > {ws}/c"));
    assert_eq!(std::fs::read_to_string(upper.join("c")).unwrap(), "three\n");

    // A commit of the running VM sandbox, live as for namespaces (in QEMU's mount namespace: before, the
    // namespace freezer was pointed at QEMU, whose pid namespace is the host's): the host's workspace gets what
    // the guest sees, the guest goes on with an empty layer over it.
    let out = vm(&["commit", &name], b"");
    assert_eq!(code(&out), 0, "commit: {}", stderr(&out));
    assert_eq!(
        tree(workspace.path()),
        [
            ("a".to_string(), "one\n".to_string()),
            ("before".to_string(), "host\n".to_string()),
            ("c".to_string(), "three\n".to_string()),
            ("d".to_string(), "dir".to_string()),
            ("d/f".to_string(), "dd\n".to_string()),
        ]
    );
    assert_eq!(sh(&format!("cat {ws}/c {ws}/d/f")), "three\ndd\n");
    assert!(is_qemu(qemu), "QEMU is gone after the commit");

    // stop and rm: no QEMU, no staging directory, no mount left, no state.
    let mount_file = sandbox_dir(&name).join("vm-workspace-mount");
    let mount_point = std::fs::read_to_string(&mount_file).unwrap().trim_end().to_string();
    let staging = std::path::Path::new(&mount_point).parent().unwrap().to_path_buf();
    assert!(staging.is_dir(), "{}", staging.display());
    let out = vm(&["stop", &name], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(qemu_gone(qemu), "QEMU outlived stop");
    assert!(!staging.exists(), "stop left the staging directory {}", staging.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&mount_point) && !mounts.contains(ws), "{mounts}");
    let out = vm(&["rm", &name], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!sandbox_dir(&name).exists());
}

#[test]
fn a_killed_supervisor_takes_its_qemu_down() {
    require_vm!();
    let name = format!("vmc-kill-{}", std::process::id());
    let _cleanup = create(&name, &[]);
    let (supervisor, qemu) = recorded_pids(&name);
    // A command running in the guest while it goes: its client hears the end, not a hang.
    let mut running = airlock_cmd(&["exec", &name, "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    sigkill(supervisor);
    assert!(qemu_gone(qemu), "QEMU outlived its supervisor");
    let started = Instant::now();
    let status = running.wait().unwrap();
    assert_ne!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(20));
    let out = vm(&["exec", &name, "--", "true"], b"");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let out = vm(&["rm", &name], b"");
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!sandbox_dir(&name).exists());
}

/// SIGKILL, by the `kill` program.
fn sigkill(pid: i32) {
    let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn exec_into_an_unknown_vm_sandbox_fails_cleanly() {
    require_vm!();
    let out = vm(&["exec", &format!("vmc-none-{}", std::process::id()), "--", "true"], b"");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no sandbox named"), "{}", stderr(&out));
}

#[test]
fn the_daemon_creates_a_vm_sandbox_from_its_profile_and_runs_commands_in_it() {
    require_vm!();
    let daemon = daemon_client::Daemon::start("vmc-daemon", &[]);
    // The daemon's sandboxes take their isolation (and the emulator) from the profile.
    let profile = daemon.dir.path().join("vm.toml");
    std::fs::write(&profile, "[security]\nisolation = \"vm\"\n\n[vm]\naccel = \"tcg\"\n").unwrap();
    let client = daemon.client();
    let name = client.create(&serde_json::json!({ "profile": profile.to_str().unwrap() }));
    let (_, qemu) = {
        let text = std::fs::read_to_string(daemon.state.join("sandboxes").join(&name).join("sandbox.json")).unwrap();
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        (record["supervisor_pid"].as_i64().unwrap() as i32, record["init_pid"].as_i64().unwrap() as i32)
    };
    assert!(is_qemu(qemu), "the daemon's sandbox is a VM");
    let v =
        client.exec(&name, &serde_json::json!({ "cmd": ["sh", "-c", "cat > /tmp/kept; exit 5"], "stdin": "kept\n" }));
    assert_eq!(v["exit_code"], 5, "{v}");
    assert_eq!(client.sh(&name, "cat /tmp/kept"), "kept\n");
    let a = client.delete(&format!("/v1/sandboxes/{name}"));
    assert!(a.status < 300, "{}", a.text());
    assert!(qemu_gone(qemu), "QEMU outlived the sandbox's deletion");
    assert!(!daemon.state.join("sandboxes").join(&name).exists());
}
