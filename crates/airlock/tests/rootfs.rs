//! `--rootfs DIR --writable-root` and `--rootfs-layers`: `/` as an overlay over read-only lowers, with the real
//! binary, real namespaces and overlayfs; as root and rootless (the test user).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::{airlock, code, ok, stderr, test_state_dir, StopOnDrop, TempDir};

const APPLETS: &[&str] = &["sh", "ls", "cat", "touch", "mkdir", "id", "echo", "rm", "stat"];

/// A small root the test makes: busybox with its applets, `/etc/passwd` with root and a uid 42 user, files owned
/// by 0 and by 42 (as root; rootless everything is the test user's). `None` (the reason) when busybox-static is
/// missing.
fn tiny_root(dir: &Path, hosts: bool) -> Result<(), String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err("/bin/busybox is missing (install busybox-static)".into());
    }
    for sub in ["bin", "etc", "home/app", "var/lib"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:42:42:app:/home/app:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\napp:x:42:\n").unwrap();
    fs::write(dir.join("etc/os-release"), "ID=tiny\n").unwrap();
    if hosts {
        fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(dir.join("etc/resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
    }
    fs::write(dir.join("home/app/owned"), "app's\n").unwrap();
    if common::is_root() {
        for path in ["home/app", "home/app/owned"] {
            std::os::unix::fs::lchown(dir.join(path), Some(42), Some(42)).unwrap();
        }
    }
    Ok(())
}

/// Everything under `dir` as (path, size, uid), to compare before and after.
fn snapshot(dir: &Path) -> Vec<(String, u64, u32)> {
    let out = Command::new("find").arg(dir).arg("-printf").arg("%p %s %U\n").output().unwrap();
    let mut lines: Vec<(String, u64, u32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.rsplitn(3, ' ');
            let uid = parts.next()?.parse().ok()?;
            let size = parts.next()?.parse().ok()?;
            Some((parts.next()?.to_string(), size, uid))
        })
        .collect();
    lines.sort();
    lines
}

macro_rules! require_root_and_sandbox {
    () => {{
        require_sandbox!();
        if !common::is_root() {
            eprintln!("SKIP: this test runs as root (it makes files owned by uid 42)");
            return;
        }
    }};
}

/// As root: writes work in `/` (as root and as uid 42 in its own directory), the ids are the image's, and the
/// host tree does not change; without `--name` the writes are gone afterwards.
#[test]
fn writable_root_as_root_keeps_the_image_ids_and_leaves_the_tree_alone() {
    require_root_and_sandbox!();
    let root = TempDir::new("wroot");
    if let Err(reason) = tiny_root(root.path(), true) {
        skip_or_fail!("{reason}");
    }
    let before = snapshot(root.path());
    let script = "touch /etc/x && mkdir -p /opt/a/b && echo hi > /opt/a/b/f && cat /opt/a/b/f && ls -ln /home/app \
                  && ls -lnd /etc /home/app && id -u";
    let out = ok(&common::run(&["--rootfs", root.str(), "--writable-root", "--", "/bin/sh", "-c", script]));
    assert!(out.contains("hi\n"), "{out}");
    assert!(out.lines().any(|l| l.contains(" 42 ") && l.ends_with("owned")), "uid 42's file as 42 inside: {out}");
    assert!(out.lines().any(|l| l.contains(" 0 ") && l.ends_with("/etc")), "root's /etc as 0 inside: {out}");
    assert!(out.ends_with("0\n"), "{out}");
    // As uid 42, in its own directory (and not in root's).
    let as_app = common::run(&[
        "--rootfs",
        root.str(),
        "--writable-root",
        "--user",
        "42:42",
        "--",
        "/bin/sh",
        "-c",
        "echo mine > /home/app/new && ls -ln /home/app/new && touch /etc/nope",
    ]);
    assert_eq!(code(&as_app), 1, "{}", stderr(&as_app));
    assert!(common::stdout(&as_app).contains(" 42 "), "{}", common::stdout(&as_app));
    assert!(stderr(&as_app).contains("Permission denied"), "{}", stderr(&as_app));
    // The host tree is unchanged, and an anonymous run's writes are gone: they were in a tmpfs of its own.
    assert_eq!(snapshot(root.path()), before);
    let gone = common::run(&["--rootfs", root.str(), "--writable-root", "--", "/bin/cat", "/etc/x"]);
    assert_ne!(code(&gone), 0);
    // That tmpfs is bounded as /tmp is: with --disk, a write past it fails with ENOSPC.
    let bounded = common::run(&[
        "--rootfs",
        root.str(),
        "--writable-root",
        "--disk",
        "4M",
        "--",
        "/bin/sh",
        "-c",
        "cat /dev/zero > /big 2>/dev/null; echo $?",
    ]);
    let text = ok(&bounded);
    assert_eq!(text, "1\n", "the write past 4M fails");
}

/// With `--name` the root's changes are kept in the sandbox's state directory (with the image's ids on disk),
/// survive the run and `stop`, and `rm` removes them.
#[test]
fn writable_root_with_a_name_is_kept_until_rm() {
    require_root_and_sandbox!();
    let root = TempDir::new("wroot-kept");
    if let Err(reason) = tiny_root(root.path(), true) {
        skip_or_fail!("{reason}");
    }
    let name = format!("wroot-{}", std::process::id());
    let sandbox = Path::new(&test_state_dir(0)).join("sandboxes").join(&name);
    let upper = sandbox.join("rootfs/upper");
    ok(&common::run(&[
        "--name",
        &name,
        "--rootfs",
        root.str(),
        "--writable-root",
        "--user",
        "42:42",
        "--",
        "/bin/sh",
        "-c",
        "echo kept > /home/app/kept",
    ]));
    let kept = upper.join("home/app/kept");
    assert_eq!(fs::read_to_string(&kept).unwrap(), "kept\n");
    assert_eq!(fs::metadata(&kept).unwrap().uid(), 42, "stored with the inside id");
    assert!(!root.path().join("home/app/kept").exists());
    ok(&airlock(&["rm", &name]));
    assert!(!sandbox.exists());

    // A long-lived one: `create`, `exec` writes, `stop` keeps, `rm` removes.
    let created = format!("wroot-c-{}", std::process::id());
    let _cleanup = StopOnDrop::new(&created, airlock);
    ok(&airlock(&["create", "--rootfs", root.str(), "--writable-root", &created]));
    ok(&airlock(&["exec", &created, "--", "/bin/sh", "-c", "mkdir -p /opt/tool && echo 1 > /opt/tool/v"]));
    assert_eq!(ok(&airlock(&["exec", &created, "--", "/bin/cat", "/opt/tool/v"])), "1\n");
    ok(&airlock(&["stop", &created]));
    let upper = Path::new(&test_state_dir(0)).join("sandboxes").join(&created).join("rootfs/upper");
    assert_eq!(fs::read_to_string(upper.join("opt/tool/v")).unwrap(), "1\n");
    ok(&airlock(&["rm", &created]));
    assert!(!upper.exists());
}

/// A writable root and a cow workspace owned by host root, kept under one name: both layers are idmapped, the
/// root's (`NAME/rootfs`) inside the workspace's (`NAME`), and both resume.
#[test]
fn writable_root_and_a_root_owned_cow_workspace_share_a_kept_sandbox() {
    require_root_and_sandbox!();
    let root = TempDir::new("wroot-ws");
    if let Err(reason) = tiny_root(root.path(), true) {
        skip_or_fail!("{reason}");
    }
    let ws = TempDir::new("wroot-ws-workspace");
    fs::create_dir(ws.path().join("sub")).unwrap();
    fs::write(ws.path().join("a.txt"), "x\n").unwrap();
    let name = format!("wroot-ws-{}", std::process::id());
    let run = |resume: bool, script: &str| {
        let mut args = vec!["--name", &name, "--rootfs", root.str(), "--writable-root", "--workspace", ws.str()];
        if resume {
            args.push("--resume");
        }
        args.extend(["--", "/bin/sh", "-c", script]);
        ok(&common::run(&args))
    };
    let out = run(false, "echo y >> a.txt; mkdir sub/n; echo r > /rootfile; stat -c %u a.txt /rootfile");
    assert_eq!(out, "0\n0\n");
    assert_eq!(run(true, "cat /rootfile a.txt; ls sub"), "r\nx\ny\nn\n");
    ok(&airlock(&["commit", &name]));
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "x\ny\n");
    assert_eq!(fs::metadata(ws.path().join("sub/n")).unwrap().uid(), 0);
    ok(&airlock(&["rm", &name]));
}

/// `--net allow` needs `/etc/hosts` and `/etc/resolv.conf`: a read-only tree without them is refused with the
/// way out; with `--writable-root` they are provided.
#[test]
fn a_tree_without_name_files_works_with_a_writable_root_and_net_allow() {
    require_sandbox!();
    let root = TempDir::new("wroot-net");
    if let Err(reason) = tiny_root(root.path(), false) {
        skip_or_fail!("{reason}");
    }
    let refused = common::run(&["--rootfs", root.str(), "--net", "allow", "--allow", "example.com", "--", "/bin/true"]);
    assert_eq!(code(&refused), 125, "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains("/etc/hosts") && message.contains("--writable-root"), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "{message}");
    let out = common::run(&[
        "--rootfs",
        root.str(),
        "--writable-root",
        "--net",
        "allow",
        "--allow",
        "example.com",
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/hosts /etc/resolv.conf",
    ]);
    if code(&out) != 0 && stderr(&out).contains("TUN") {
        skip_or_fail!("--net allow is not available here: {}", stderr(&out));
    }
    let text = ok(&out);
    assert!(text.contains("localhost") && text.contains("nameserver"), "{text}");
    assert!(!root.path().join("etc/hosts").exists());
}

/// Lowers made by hand, bottom first: a whiteout (character device 0/0) and an opaque directory
/// (`user.overlay.opaque` = `y`) in the upper one hide what is below; read-only without `--writable-root`,
/// writable with it; ids are the image's.
#[test]
fn rootfs_layers_honour_whiteouts_and_opaque_directories() {
    require_root_and_sandbox!();
    let Some(python) = common::python3() else {
        skip_or_fail!("python3 is needed to set the opaque xattr");
        #[allow(unreachable_code)]
        return;
    };
    let base = TempDir::new("layers");
    let (bottom, middle, top) = (base.path().join("0"), base.path().join("1"), base.path().join("2"));
    if let Err(reason) = tiny_root(&bottom, true) {
        skip_or_fail!("{reason}");
    }
    fs::create_dir_all(bottom.join("data/old")).unwrap();
    fs::write(bottom.join("data/old/a"), "a\n").unwrap();
    fs::write(bottom.join("etc/gone"), "gone\n").unwrap();
    fs::create_dir_all(middle.join("etc")).unwrap();
    fs::write(middle.join("etc/middle"), "middle\n").unwrap();
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::create_dir_all(top.join("data/old")).unwrap();
    fs::write(top.join("data/old/b"), "b\n").unwrap();
    let made = Command::new("mknod").arg(top.join("etc/gone")).args(["c", "0", "0"]).status().unwrap();
    assert!(made.success());
    let opaque = format!("import os; os.setxattr({:?}, 'user.overlay.opaque', b'y')", top.join("data/old").display());
    assert!(Command::new(python).args(["-c", &opaque]).status().unwrap().success());
    let layers = format!("{}:{}:{}", bottom.display(), middle.display(), top.display());

    let out = ok(&common::run(&[
        "--rootfs-layers",
        &layers,
        "--",
        "/bin/sh",
        "-c",
        "ls /etc /data/old; cat /etc/middle; ls -ln /home/app; touch /etc/new 2>&1 || echo READONLY",
    ]));
    assert!(out.contains("middle\n") && out.contains("passwd"), "{out}");
    assert!(!out.contains("gone"), "the whiteout hides /etc/gone: {out}");
    assert!(out.contains("b\n") && !out.lines().any(|l| l == "a"), "the opaque directory hides data/old/a: {out}");
    assert!(out.lines().any(|l| l.contains(" 42 ") && l.ends_with("owned")), "{out}");
    assert!(out.contains("READONLY"), "{out}");

    let out = ok(&common::run(&[
        "--rootfs-layers",
        &layers,
        "--writable-root",
        "--",
        "/bin/sh",
        "-c",
        "rm /etc/middle && touch /etc/new && ls /etc",
    ]));
    assert!(out.contains("new") && !out.contains("middle"), "{out}");
    assert!(middle.join("etc/middle").exists(), "the lower is untouched");
}

/// `--writable-root` is refused with `--rootfs host` (which stays read-only) before anything runs.
#[test]
fn writable_root_is_refused_with_the_host_rootfs() {
    let out = common::run(&["--writable-root", "--", "/bin/true"]);
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("writable root"), "{}", stderr(&out));
}

/// Rootless (the test user): the lowers are the user's files, root inside; writes work and the tree does not
/// change.
#[test]
fn writable_root_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    let root = TempDir::new("wroot-user");
    if let Err(reason) = tiny_root(root.path(), true) {
        skip_or_fail!("{reason}");
    }
    root.chown_to_test_user();
    let before = snapshot(root.path());
    let out = common::run_as_user(&[
        "--rootfs",
        root.str(),
        "--writable-root",
        "--user",
        "root",
        "--",
        "/bin/sh",
        "-c",
        "touch /etc/x && mkdir -p /opt/a/b && ls -lnd /etc && id -u",
    ]);
    let text = ok(&out);
    assert!(text.ends_with("0\n"), "{text}");
    assert!(text.lines().any(|l| l.contains(" 0 ") && l.ends_with("/etc")), "{text}");
    // The helper runs as the user with a group that is not its login group (or without subordinate ids):
    // newgidmap would refuse, so one id is mapped, and airlock says why programs that switch users will fail.
    assert!(stderr(&out).contains("only your own id is mapped into the sandbox"), "{}", stderr(&out));
    assert_eq!(snapshot(root.path()), before);
    let gone = common::run_as_user(&["--rootfs", root.str(), "--writable-root", "--", "/bin/cat", "/etc/x"]);
    assert_ne!(code(&gone), 0);
}

/// Rootless with subordinate ids, a kept writable root whose sandbox identity is the user's own id (not root):
/// the sandbox's root is then the subordinate range's first id, which owns what it made in the layer (the
/// overlay's `work/work`, mode 000). `rm` removes it all (before: its helper's user namespace mapped the range
/// from its second id, and `rm` failed with "Permission denied", leaving the sandbox).
#[test]
fn a_kept_rootless_writable_root_is_removed_by_rm() {
    require_sandbox!();
    let user = require_test_user!();
    common::ensure_subordinate_ids(user);
    let home = TempDir::new("wroot-rm");
    let root = home.path().join("root");
    if let Err(reason) = tiny_root(&root, true) {
        skip_or_fail!("{reason}");
    }
    home.chown_to_test_user();
    let state = home.path().join("state");
    let as_user = |args: &[&str]| common::airlock_as_user_in(&state, &[], args);
    let _cleanup = StopOnDrop::new("keptroot", as_user);
    ok(&as_user(&["create", "--rootfs", root.to_str().unwrap(), "--writable-root", "keptroot"]));
    let out = as_user(&["exec", "keptroot", "--", "/bin/sh", "-c", "cat /proc/self/uid_map; touch /tmp/t; id -u"]);
    let text = ok(&out);
    // The identity is the user's id, and the map puts the sandbox's root on the range's first id.
    assert!(text.contains(" 300000 "), "no subordinate ids mapped: {text}");
    ok(&as_user(&["stop", "keptroot"]));
    let layer = state.join("sandboxes/keptroot");
    let owners = snapshot(&layer);
    assert!(owners.iter().any(|(_, _, uid)| *uid == 300000), "nothing of the range's first id: {owners:?}");
    ok(&as_user(&["rm", "keptroot"]));
    assert!(!layer.exists(), "{} left: {:?}", layer.display(), snapshot(&layer));
}
