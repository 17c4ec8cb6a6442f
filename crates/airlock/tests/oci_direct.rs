//! `airlock oci` called directly, as runtime-tools calls a runtime (no containerd, no shim): `create`, `start`,
//! `state`, and a caller that does not `delete` right away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `airlock oci --root ROOT ARGS…`. Its standard streams are files, not pipes: `create` hands them to the
/// container's process, which keeps them open after `create` returns (a pipe would not see its end until then).
fn oci(root: &Path, state: &Path, args: &[&str]) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let out = root.with_file_name(format!("call-{n}.out"));
    let err = root.with_file_name(format!("call-{n}.err"));
    let status = Command::new(airlock_path())
        .arg("oci")
        .arg("--root")
        .arg(root)
        .args(args)
        .env("AIRLOCK_STATE_DIR", state)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .status()
        .unwrap();
    Output { status, stdout: std::fs::read(&out).unwrap(), stderr: std::fs::read(&err).unwrap() }
}

/// `delete --force` of the container on drop.
struct ForceDelete {
    root: std::path::PathBuf,
    state: std::path::PathBuf,
    id: String,
}

impl Drop for ForceDelete {
    fn drop(&mut self) {
        let _ = oci(&self.root, &self.state, &["delete", "--force", &self.id]);
    }
}

/// Pids of processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && entry.file_name() != std::process::id().to_string().as_str() {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Once the container's process has exited, nothing of the container runs any more, `delete` or not: not a
/// process it left in the background, not the sandbox's supervisor (runc's container is gone with its pid 1).
/// `delete` then removes its state.
#[test]
fn a_stopped_container_runs_nothing_before_delete() {
    require_sandbox!();
    if !is_root() || !Path::new("/bin/busybox").exists() {
        skip_or_fail!("needs root and /bin/busybox (busybox-static)");
    }
    let dir = TempDir::new("oci-direct");
    let d = dir.path();
    let rootfs = d.join("bundle/rootfs");
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(sub)).unwrap();
    }
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    // A number no other test sleeps for: how the background process is found on the host.
    let marker = format!("sleep {}", 40000 + std::process::id() % 20000);
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {
            "args": ["sh", "-c", format!("{marker} & echo started")],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin"]
        },
        "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}]}
    });
    std::fs::write(d.join("bundle/config.json"), config.to_string()).unwrap();
    let root = d.join("runtime-root");
    let state = d.join("airlock-state");
    let id = format!("direct-{}", std::process::id());
    let bundle = d.join("bundle");
    let pid_file = d.join("init.pid");

    // Whatever happens below, the container goes at the end (a failed assertion included).
    let _cleanup = ForceDelete { root: root.clone(), state: state.clone(), id: id.clone() };
    let o = oci(
        &root,
        &state,
        &["create", "--bundle", bundle.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &id],
    );
    assert!(o.status.success(), "create: {}", stderr(&o));
    let o = oci(&root, &state, &["start", &id]);
    assert!(o.status.success(), "start: {}", stderr(&o));

    let started = Instant::now();
    loop {
        let o = oci(&root, &state, &["state", &id]);
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if doc["status"] == "stopped" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the container did not stop: {}", stdout(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
    let sandbox_name = format!("-{id}");
    let started = Instant::now();
    loop {
        let left: Vec<String> = processes_with(&marker)
            .into_iter()
            .chain(processes_with("__supervise").into_iter().filter(|p| p.contains(&sandbox_name)))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the container's process exited, but these still run (no delete yet):\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let o = oci(&root, &state, &["delete", &id]);
    assert!(o.status.success(), "delete: {}", stderr(&o));
    assert!(!root.join(&id).exists(), "the runtime's state of {id} is left");
    let sandboxes: Vec<_> =
        std::fs::read_dir(state.join("sandboxes")).map(|r| r.flatten().collect()).unwrap_or_default();
    assert!(sandboxes.is_empty(), "sandbox state left: {:?}", sandboxes.iter().map(|e| e.path()).collect::<Vec<_>>());
}
