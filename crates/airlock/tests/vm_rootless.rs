//! `--isolation vm` as an ordinary user (rootless): `create`'s held guest, `exec` into it, its files in a `rw`
//! workspace are the user's, its socket is the user's alone, and `stop`/`rm` leave no QEMU and no directory; a
//! `cow` workspace's overlay in QEMU's own user and mount namespaces, its changes kept in the layer until
//! `commit`. Real QEMU under TCG (as tests/vm.rs says why).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod vm_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{code, stderr, stdout, TempDir};
use vm_support::{is_qemu, qemu_gone};

#[test]
fn a_user_creates_a_vm_sandbox_execs_in_it_and_stop_and_rm_leave_nothing() {
    require_vm!();
    let Some(_) = common::test_user() else {
        skip_or_fail!("cannot create the test user");
    };
    let uid = common::test_user_uid();
    let dir = TempDir::new("vm-rootless");
    let state = dir.path().join("state");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    for path in [dir.path(), ws.as_path()] {
        std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    }
    let env = ["AIRLOCK_VM_ACCEL=tcg".to_string()];
    let user = |args: &[&str]| common::airlock_as_user_in(&state, &env, args);
    let name = format!("vm-rootless-{}", std::process::id());
    let ws_path = ws.to_string_lossy().into_owned();
    let o = user(&["create", "--isolation", "vm", "--workspace", &ws_path, "--workspace-mode", "rw", &name]);
    assert_eq!(code(&o), 0, "create: {}", stderr(&o));
    let sandbox = state.join("sandboxes").join(&name);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox.join("sandbox.json")).unwrap()).unwrap();
    let qemu = record["init_pid"].as_i64().unwrap() as i32;
    assert!(is_qemu(qemu), "the sandbox's init is its QEMU: {record}");
    // QEMU is the user's, not root's.
    assert_eq!(std::fs::metadata(format!("/proc/{qemu}")).unwrap().uid(), uid);
    let socket = std::fs::metadata(sandbox.join("vm.sock")).unwrap();
    assert_eq!((socket.uid(), socket.permissions().mode() & 0o777), (uid, 0o600), "vm.sock: the user's alone");

    let o =
        user(&["exec", &name, "--", "/bin/sh", "-c", "id -u; echo from-the-guest > f; cat /proc/sys/kernel/osrelease"]);
    assert_eq!(code(&o), 0, "exec: {}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(uid.to_string().as_str()), "{out}");
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(lines.next(), Some(host_kernel.trim()), "exec ran on the host's kernel: {out}");
    // QEMU runs as the user (9p security_model=none): what the guest writes is the user's on the host.
    let written = ws.join("f");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "from-the-guest\n");
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), uid);
    // A second exec finds the first one's file: the guest holds its sandbox between commands.
    let o = user(&["exec", &name, "--", "/bin/cat", "f"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "from-the-guest\n"), "{}", stderr(&o));

    let o = user(&["stop", &name]);
    assert_eq!(code(&o), 0, "stop: {}", stderr(&o));
    assert!(qemu_gone(qemu), "QEMU outlived stop");
    assert!(!sandbox.join("vm.sock").exists(), "stop left the socket");
    let o = user(&["rm", &name]);
    assert_eq!(code(&o), 0, "rm: {}", stderr(&o));
    assert!(!sandbox.exists(), "rm left the sandbox's directory");
}

#[test]
fn a_users_cow_workspace_keeps_the_guests_writes_in_its_layer_until_commit() {
    require_vm!();
    let Some(_) = common::test_user() else {
        skip_or_fail!("cannot create the test user");
    };
    let uid = common::test_user_uid();
    let o = std::process::Command::new("id").args(["-g", common::test_user().unwrap()]).output().unwrap();
    let gid: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let dir = TempDir::new("vm-rootless-cow");
    let state = dir.path().join("state");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("a"), "before\n").unwrap();
    for path in [dir.path(), ws.as_path(), ws.join("a").as_path()] {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
    let env = ["AIRLOCK_VM_ACCEL=tcg".to_string()];
    let user = |args: &[&str]| common::airlock_as_user_in(&state, &env, args);
    let name = format!("vm-rootless-cow-{}", std::process::id());
    let ws_path = ws.to_string_lossy().into_owned();
    // The overlay is mounted in QEMU's own user and mount namespaces (the user's ids mapped to themselves).
    let o = user(&[
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
        "echo after > a; echo new > b; cat a",
    ]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "after\n"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(ws.join("a")).unwrap(), "before\n", "the write reached the workspace");
    assert!(!ws.join("b").exists(), "the new file reached the workspace");
    let o = user(&["diff", &name]);
    let diff = stdout(&o);
    assert!(diff.contains("M  a") && diff.contains("A  b"), "diff: {diff} {}", stderr(&o));
    let o = user(&["commit", &name]);
    assert_eq!(code(&o), 0, "commit: {}", stderr(&o));
    assert_eq!(std::fs::read_to_string(ws.join("a")).unwrap(), "after\n");
    let b = std::fs::metadata(ws.join("b")).unwrap();
    assert_eq!((b.uid(), b.gid()), (uid, gid), "the committed file is the user's");
    let o = user(&["rm", &name]);
    assert_eq!(code(&o), 0, "rm: {}", stderr(&o));
}
