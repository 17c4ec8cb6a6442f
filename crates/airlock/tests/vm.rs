//! `airlock run --isolation vm`: real QEMU guests. They run with TCG (QEMU's emulator, `AIRLOCK_VM_ACCEL=tcg`):
//! on a host whose KVM is PVM (a cloud VM without nested virtualization) Debian's kernel does not boot under KVM,
//! and TCG runs anywhere; a boot costs seconds, so each test boots as few guests as it can.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod vm_support;

use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{code, stderr, stdout, TempDir};

/// The VM tests' state directory: one for every run, so the initramfs cache in it (50 MB for a debug build,
/// replaced when the binary changes) is built once, not left behind by each run. Sandbox names carry the pid.
fn state_dir() -> PathBuf {
    std::env::temp_dir().join("airlock-vm-test-state")
}

fn airlock_cmd(args: &[&str]) -> Command {
    vm_support::airlock_cmd_in(&state_dir(), args)
}

/// `airlock ARGS` with `input` on its standard input.
fn vm(args: &[&str], input: &[u8]) -> Output {
    vm_support::output_with_input(airlock_cmd(args), input)
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap().trim().to_string()
}

/// The QEMU processes whose parent is `parent`.
fn qemus_of(parent: u32) -> Vec<i32> {
    our_qemus()
        .into_iter()
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.lines().any(|l| l.strip_prefix("PPid:").is_some_and(|p| p.trim() == parent.to_string()))
        })
        .collect()
}

/// Whether `pid` is still a QEMU of the tests.
fn still_qemu(pid: i32) -> bool {
    our_qemus().contains(&pid)
}

/// QEMU processes started for the tests' state directory (QEMU inherits airlock's environment; its initramfs
/// may be a descriptor, not a path of the state directory).
fn our_qemus() -> Vec<i32> {
    let needle = format!("AIRLOCK_STATE_DIR={}", state_dir().display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("qemu-system")
                && environ.split(|b| *b == 0).any(|v| v == needle.as_bytes())
        })
        .collect()
}

#[test]
fn a_command_runs_in_a_guest_kernel_with_its_streams_and_status() {
    require_vm!();
    let secret = TempDir::new("secret");
    std::fs::write(secret.path().join("key"), "s3cret").unwrap();
    let script = format!(
        "cat; uname -r; echo to-stderr >&2; if cat {0}/key 2>/dev/null; then echo SECRET-VISIBLE; fi; \
         ls {0} 2>/dev/null && echo DIR-VISIBLE; exit 3",
        secret.path().display()
    );
    let o = vm(&["run", "--isolation", "vm", "--", "/bin/sh", "-c", &script], b"through stdin\n");
    assert_eq!(code(&o), 3, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("through stdin"), "{out}");
    let guest_kernel = lines.next().unwrap_or_default().to_string();
    assert!(!guest_kernel.is_empty() && guest_kernel != host_kernel(), "guest {guest_kernel}, host {}", host_kernel());
    assert!(Path::new("/lib/modules").join(&guest_kernel).is_dir(), "{guest_kernel} is not an installed kernel");
    assert!(!out.contains("SECRET-VISIBLE") && !out.contains("DIR-VISIBLE"), "{out}");
    assert!(stderr(&o).contains("to-stderr"), "{}", stderr(&o));
}

#[test]
fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    require_vm!();
    let o = vm(&["run", "--isolation", "vm", "--", "/bin/sh", "-c", "kill -9 $$"], b"");
    assert_eq!(code(&o), 137, "stderr: {}", stderr(&o));
}

#[test]
fn a_cow_workspace_written_in_the_guest_is_diffed_committed_and_discarded_on_the_host() {
    require_vm!();
    let ws = TempDir::new("ws");
    std::fs::write(ws.path().join("a"), "orig\n").unwrap();
    vm_support::user_owned(ws.path());
    let name = format!("vm-ws-{}", std::process::id());
    let ws_path = ws.path().to_string_lossy().into_owned();
    let o = vm(
        &[
            "run",
            "--isolation",
            "vm",
            "--name",
            &name,
            "--workspace",
            &ws_path,
            "--",
            "/bin/sh",
            "-c",
            "echo changed > a && echo new > b",
        ],
        b"",
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    // Copy-on-write: the host directory is unchanged, and nothing is left mounted on it.
    assert_eq!(std::fs::read_to_string(ws.path().join("a")).unwrap(), "orig\n");
    assert!(!ws.path().join("b").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&ws_path), "{mounts}");
    let diff = airlock_cmd(&["diff", &name]).output().unwrap();
    let diff_out = stdout(&diff);
    assert!(diff_out.contains("M  a") && diff_out.contains("A  b"), "{diff_out}{}", stderr(&diff));
    let commit = airlock_cmd(&["commit", &name]).output().unwrap();
    assert_eq!(code(&commit), 0, "{}", stderr(&commit));
    assert_eq!(std::fs::read_to_string(ws.path().join("a")).unwrap(), "changed\n");
    assert_eq!(std::fs::read_to_string(ws.path().join("b")).unwrap(), "new\n");
    // What root inside wrote is the workspace's owner's, as with the namespace backend.
    assert_eq!(std::fs::metadata(ws.path().join("b")).unwrap().uid(), 4242);

    // Again, resumed, and the change discarded.
    let o = vm(
        &[
            "run",
            "--isolation",
            "vm",
            "--name",
            &name,
            "--resume",
            "--workspace",
            &ws_path,
            "--",
            "/bin/sh",
            "-c",
            "echo again > c",
        ],
        b"",
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let diff = airlock_cmd(&["diff", &name]).output().unwrap();
    assert!(stdout(&diff).contains("A  c"), "{}{}", stdout(&diff), stderr(&diff));
    let discard = airlock_cmd(&["discard", &name]).output().unwrap();
    assert_eq!(code(&discard), 0, "{}", stderr(&discard));
    let diff = airlock_cmd(&["diff", &name]).output().unwrap();
    assert!(!stdout(&diff).contains("A  c"), "{}", stdout(&diff));
    assert!(!ws.path().join("c").exists());
    let _ = airlock_cmd(&["rm", &name]).output();
}

#[test]
fn kvm_on_a_pvm_host_and_a_missing_kernel_fail_closed() {
    require_vm!();
    // A missing kernel: refused before anything starts.
    let o = vm(&["run", "--isolation", "vm", "--", "/bin/true"], b"");
    assert_eq!(code(&o), 0, "tcg runs: {}", stderr(&o));
    let mut cmd = airlock_cmd(&["run", "--isolation", "vm", "--", "/bin/true"]);
    let o = cmd.env("AIRLOCK_VM_KERNEL", "/nonexistent/vmlinuz-0").output().unwrap();
    assert_eq!(code(&o), 125);
    let err = stderr(&o);
    assert!(err.starts_with("airlock: vm: the guest kernel /nonexistent/vmlinuz-0 does not exist"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let pvm = Path::new("/sys/module/kvm_pvm").exists()
        && !std::fs::read_to_string("/proc/cpuinfo").unwrap().split_whitespace().any(|f| f == "vmx" || f == "svm");
    if !pvm {
        eprintln!("this host's KVM is not PVM: the PVM refusal is not exercised here");
        return;
    }
    let o =
        airlock_cmd(&["run", "--isolation", "vm", "--", "/bin/true"]).env("AIRLOCK_VM_ACCEL", "kvm").output().unwrap();
    assert_eq!(code(&o), 125);
    let err = stderr(&o);
    assert!(err.contains("KVM is PVM") && err.contains("AIRLOCK_VM_ACCEL=tcg"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn what_this_slice_does_not_run_in_a_vm_is_refused() {
    require_vm!();
    let name = format!("vm-create-{}", std::process::id());
    for (args, what) in [
        // `create` runs (tests/vm_create.rs); what it cannot hold yet is refused the same way, leaving nothing.
        (
            vec!["create", "--isolation", "vm", "--ro-bind", "/dev/null:/tmp/n", name.as_str()],
            "binding /dev/null (neither a directory nor a regular file)",
        ),
        (
            vec!["run", "--isolation", "vm", "--bind", "/dev/null:/tmp/n", "--", "/bin/true"],
            "binding /dev/null (neither a directory nor a regular file)",
        ),
        (
            vec![
                "run",
                "--isolation",
                "vm",
                "--name",
                name.as_str(),
                "--rootfs",
                "/tmp",
                "--writable-root",
                "--",
                "true",
            ],
            "a writable root kept for --resume (--writable-root or --image with a kept run)",
        ),
    ] {
        let o = airlock_cmd(&args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(code(&o), 125, "{args:?}: {}", stderr(&o));
        let want = format!("airlock: --isolation vm does not support {what} yet");
        assert!(stderr(&o).lines().any(|l| l == want), "{args:?}: {}", stderr(&o));
    }
    assert!(!state_dir().join("sandboxes").join(&name).exists());
    let o = airlock_cmd(&["run", "--isolation", "vms", "--", "/bin/true"]).output().unwrap();
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    let want = "airlock: security.isolation (--isolation): unknown value \"vms\": expected namespaces or vm";
    assert_eq!(stderr(&o).trim_end(), want);
}

/// Starts `airlock ARGS` (a command that prints a line, then waits), reads that first line, and finds its QEMU:
/// (the running airlock, the line, QEMU's pid).
fn start_in_vm(args: &[&str]) -> (std::process::Child, String, i32) {
    let mut child =
        airlock_cmd(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let qemus = qemus_of(child.id());
    assert_eq!(qemus.len(), 1, "airlock's qemu while the guest runs: {qemus:?}");
    (child, line, qemus[0])
}

#[test]
fn a_killed_airlock_leaves_no_qemu_and_no_mount() {
    require_vm!();
    let ws = TempDir::new("kill-ws");
    let ws_path = ws.path().to_string_lossy().into_owned();
    let name = format!("vm-kill-{}", std::process::id());
    let (mut child, line, qemu) = start_in_vm(&[
        "run",
        "--isolation",
        "vm",
        "--name",
        &name,
        "--workspace",
        &ws_path,
        "--",
        "/bin/sh",
        "-c",
        "echo up; sleep 120",
    ]);
    assert_eq!(line.trim(), "up");
    let qemus = [qemu];
    child.kill().unwrap();
    child.wait().unwrap();
    // QEMU dies with airlock (PR_SET_PDEATHSIG); the overlay was in its own mount namespace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while still_qemu(qemus[0]) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!still_qemu(qemus[0]), "qemu outlived airlock");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&ws_path), "{mounts}");
    // Nothing else of the run on disk: the channels were socket pairs and the console an unlinked file.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".initramfs-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = airlock_cmd(&["rm", &name]).output();
}

#[test]
fn a_user_runs_a_vm_and_its_files_are_its_own() {
    require_vm!();
    let Some(_) = common::test_user() else {
        skip_or_fail!("cannot create the test user");
    };
    let uid = common::test_user_uid();
    let dir = TempDir::new("user");
    let state = dir.path().join("state");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    for path in [dir.path(), ws.as_path()] {
        std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    }
    let ws_path = ws.to_string_lossy().into_owned();
    let o = common::airlock_as_user_in(
        &state,
        &["AIRLOCK_VM_ACCEL=tcg".to_string()],
        &[
            "run",
            "--isolation",
            "vm",
            "--workspace",
            &ws_path,
            "--workspace-mode",
            "rw",
            "--",
            "/bin/sh",
            "-c",
            "id -u; echo x > f",
        ],
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), uid.to_string());
    // QEMU runs as the user (9p security_model=none): what the guest writes is the user's on the host.
    assert_eq!(std::fs::metadata(ws.join("f")).unwrap().uid(), uid);
}

/// A capability set from `/proc/PID/status` (`CapEff:` and so on), as a number.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

#[test]
fn roots_qemu_is_an_ordinary_user_for_the_hosts_root_and_keeps_only_the_share_capabilities_otherwise() {
    require_vm!();
    // With `--rootfs host`, host root's QEMU would read every file of the host's /etc and /usr for the guest: it
    // becomes the workspace's owner (here 4242), with no capability, before it is executed. Otherwise (a root
    // directory of the user's, an image) it serves the shares with 9p passthrough and keeps CHOWN, DAC_OVERRIDE,
    // DAC_READ_SEARCH and FOWNER only. Both: no_new_privs, the set-ID guard, and no set-ID bit reaches the host.
    let ws = TempDir::new("setid-ws");
    vm_support::user_owned(ws.path());
    let ws_path = ws.path().to_string_lossy().into_owned();
    let root = TempDir::new("setid-root");
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.path().join("bin/busybox")).unwrap();
    for tool in ["sh", "touch", "chmod", "echo", "sleep"] {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(tool)).unwrap();
    }
    let root_path = root.path().to_string_lossy().into_owned();
    let script = "touch f; chmod 4755 f; echo chmod=$?; sleep 60";
    let common = ["run", "--isolation", "vm", "--rm", "--workspace", &ws_path, "--workspace-mode", "rw"];
    for (rootfs, uid, caps) in [("host", "4242", "0000000000000000"), (root_path.as_str(), "0", "000000000000000f")] {
        let _ = std::fs::remove_file(ws.path().join("f"));
        let args: Vec<&str> = common
            .iter()
            .copied()
            .chain(["--rootfs", rootfs, "--env", "PATH=/bin:/usr/bin", "--", "/bin/sh", "-c", script])
            .collect();
        let (mut child, line, qemu) = start_in_vm(&args);
        let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let ids = status_field(&status, "Uid:");
        assert!(ids.split_whitespace().all(|id| id == uid), "--rootfs {rootfs}: qemu's uids {ids}\n{status}");
        for field in ["CapEff:", "CapPrm:"] {
            assert_eq!(status_field(&status, field), caps, "{field} of root's qemu (--rootfs {rootfs}):\n{status}");
        }
        assert_eq!(status_field(&status, "CapBnd:"), "000000000000000f", "{status}");
        assert_eq!(status_field(&status, "CapAmb:"), "0000000000000000", "{status}");
        assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{status}");
        assert_eq!(status_field(&status, "Seccomp:"), "2", "{status}");
        // Whichever wall refused it (the engine inside the guest or QEMU), no set-ID bit reached the host.
        assert!(line.starts_with("chmod="), "{line}");
        let mode = std::fs::metadata(ws.path().join("f")).unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "the host file is set-ID: {mode:o} ({line})");
    }
}

/// `--audit FILE` in a VM: the guest's engine audits as on the host and sends each record to the host, which
/// writes the log (the guest never holds it). One boot: an exec with its argv, a denied call, learn mode's
/// refused write, the chain intact.
#[test]
fn the_audit_log_records_the_guests_execs_and_denials_on_the_host() {
    require_vm!();
    let dir = TempDir::new("audit");
    let file = dir.path().join("audit.jsonl");
    // unshare(2) is on the default deny-list: EPERM inside, recorded as a denial. /etc is read-only: learn mode
    // records the write and suggests nothing for it.
    let script =
        "/bin/true one two; unshare -U true 2>/dev/null; echo status=$?; touch /etc/airlock-vm-learn 2>/dev/null";
    let args = ["run", "--isolation", "vm", "--learn", "--audit", file.to_str().unwrap(), "--", "sh", "-c", script];
    let o = vm(&args, b"");
    assert_eq!(code(&o), 1, "stdout: {}\nstderr: {}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).trim(), "status=1", "{}", stderr(&o));
    assert!(stderr(&o).contains("/etc/airlock-vm-learn") && stderr(&o).contains("unshare"), "{}", stderr(&o));
    let text = std::fs::read_to_string(&file).unwrap();
    let all: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"exited"), "{kinds:?}");
    let argvs: Vec<Vec<&str>> = all
        .iter()
        .filter(|r| r["kind"] == "exec")
        .map(|r| r["process"]["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect())
        .collect();
    assert!(argvs.iter().any(|a| a == &["/bin/true", "one", "two"]), "{argvs:?}");
    assert!(argvs.iter().any(|a| a == &["sh", "-c", script]), "{argvs:?}");
    let true_exec = all.iter().find(|r| r["kind"] == "exec" && r["process"]["argv"][0] == "/bin/true").unwrap();
    assert_eq!(true_exec["process"]["file"]["path"], "/bin/true", "{true_exec}");
    let denial = all.iter().find(|r| r["kind"] == "denied").unwrap_or_else(|| panic!("no denial in {kinds:?}"));
    assert_eq!(denial["syscall"], "unshare", "{denial}");
    assert_eq!(denial["errno_name"], "EPERM", "{denial}");
    assert!(
        all.iter().any(|r| r["kind"] == "file_write" && r["file"]["path"] == "/etc/airlock-vm-learn"),
        "no file_write record in {text}"
    );
    // The guest's records are in the host's chain, in order, as a namespace run writes them.
    assert!(audit::verify(&file).unwrap().ok(), "{text}");
}
