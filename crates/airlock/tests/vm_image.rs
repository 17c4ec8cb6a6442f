//! `airlock run --isolation vm --image`: an image's layers exported read-only to a real QEMU guest (TCG, as
//! tests/vm.rs says why), stacked by the guest's engine into the root overlay as on the host: the top layer
//! wins, a whiteout hides, the root's writes stay in the guest and never reach the host's layers; `create --image`
//! keeps them between execs. A run's root layer kept on the host for `--resume` is refused, leaving nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod vm_support;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{code, stderr, stdout, TempDir};
use vm_support::{airlock_cmd_in, output_with_input};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A two-layer image umoci builds in `t/layout` (tag `v1`): busybox, `/etc/motd` "one" and `/etc/gone` in the
/// first layer; the second replaces the motd with "two" and removes `gone` (a whiteout). Answers `layout:v1`.
fn build_two_layer_image(t: &Path) -> String {
    let layout = t.join("layout");
    let image = format!("{}:v1", layout.display());
    let bundle = t.join("bundle");
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    let root = bundle.join("rootfs");
    for dir in ["bin", "etc"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "ls", "id", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/motd"), "one\n").unwrap();
    std::fs::write(root.join("etc/gone"), "still here\n").unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    std::fs::remove_dir_all(&bundle).unwrap();
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    let root = bundle.join("rootfs");
    std::fs::write(root.join("etc/motd"), "two\n").unwrap();
    std::fs::remove_file(root.join("etc/gone")).unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    run(Command::new("umoci").args(["config", "--image", &image, "--config.env=PATH=/bin"]));
    image
}

#[test]
fn an_images_layers_make_the_guests_root_and_a_kept_root_layer_is_refused() {
    require_vm!();
    if Command::new("umoci").arg("--version").output().is_err() {
        skip_or_fail!("umoci is not installed (scripts/setup-debian installs it)");
    }
    let t = TempDir::new("vm-image");
    let state = t.path().join("state");
    let airlock = |args: &[&str]| output_with_input(airlock_cmd_in(&state, args), b"");
    let image = build_two_layer_image(t.path());
    let o = airlock(&["image", "import", image.split_once(':').unwrap().0, "--tag", "vmtest:1"]);
    assert_eq!(code(&o), 0, "import: {}", stderr(&o));
    let inspect = airlock(&["image", "inspect", "vmtest:1"]);
    let record: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let layers: Vec<String> =
        record["layer_dirs"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect();
    assert_eq!(layers.len(), 2, "{record}");

    // A directory of host root's, shared writable: root inside is no owner of it, as on a host (before, root
    // inside was guest root, which host root's QEMU let write it).
    let root_share = t.path().join("root-share");
    std::fs::create_dir(&root_share).unwrap();
    std::fs::write(root_share.join("kept"), "host\n").unwrap();
    let bind = format!("{}:/mnt/share", root_share.display());
    let script = "cat /etc/motd; ls /etc; cat /proc/version; ls -ln /etc/motd; \
                  (echo x > /mnt/share/new || echo x > /mnt/share/kept) 2>/dev/null && echo share-written; \
                  id -u; echo written > /etc/motd && echo new > /etc/new && cat /etc/motd /etc/new";
    let o = airlock(&["run", "--isolation", "vm", "--image", "vmtest:1", "--bind", &bind, "--", "sh", "-c", script]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(!out.contains("share-written"), "root inside wrote a share of host root's: {out}");
    assert_eq!(std::fs::read_to_string(root_share.join("kept")).unwrap(), "host\n");
    assert!(!root_share.join("new").exists());
    // The image's files are root's inside (its ids, not the host's: the layers come idmapped into the range).
    let motd = out.lines().find(|l| l.ends_with("/etc/motd")).unwrap_or_default();
    let owner: Vec<&str> = motd.split_whitespace().skip(2).take(2).collect();
    assert_eq!(owner, ["0", "0"], "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // The top layer's motd; the whiteout hides `gone`; the guest's kernel, not the host's.
    assert_eq!(lines[0], "two", "{out}");
    assert!(lines.contains(&"motd") && lines.contains(&"passwd") && !lines.contains(&"gone"), "{out}");
    let host_version = std::fs::read_to_string("/proc/version").unwrap();
    let guest_version = lines.iter().find(|l| l.starts_with("Linux version")).unwrap();
    assert_ne!(guest_version.trim(), host_version.trim(), "the command ran on the host's kernel");
    // Root inside owns the image's files, so it can change its root; the writes stay in the guest.
    assert!(out.ends_with("0\nwritten\nnew\n"), "{out}");
    for layer in &layers {
        assert!(!Path::new(layer).join("etc/new").exists(), "the root's write reached the host's layer {layer}");
    }
    let top = Path::new(&layers[1]).join("etc/motd");
    assert_eq!(std::fs::read_to_string(top).unwrap(), "two\n", "the host's layer changed");

    // `create --image`: the held guest's root keeps its writes between execs (in the guest, for the VM's life:
    // `create` has no `--resume`), and a cow workspace's changes land in the host's layer as ever.
    let name = format!("vm-image-{}", std::process::id());
    let ws = t.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("a"), "a\n").unwrap();
    // A user's workspace: root inside is its owner, and what it writes is the owner's.
    vm_support::user_owned(&ws);
    let ws_path = ws.to_string_lossy().into_owned();
    let o = airlock(&["create", "--isolation", "vm", "--image", "vmtest:1", "--workspace", &ws_path, &name]);
    assert_eq!(code(&o), 0, "create: {}", stderr(&o));
    let o = airlock(&["exec", &name, "--", "sh", "-c", "echo kept > /etc/kept; echo b > b; cat /etc/motd"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "two\n"), "{}", stderr(&o));
    let o = airlock(&["exec", &name, "--", "cat", "/etc/kept", "a", "b"]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "kept\na\nb\n"), "{}", stderr(&o));
    let o = airlock(&["diff", &name]);
    assert!(stdout(&o).contains("A  b"), "diff: {}", stdout(&o));
    assert!(!ws.join("b").exists(), "the cow workspace's change reached the workspace before commit");
    let upper_b = state.join("sandboxes").join(&name).join("upper/b");
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&upper_b).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4242), "{}", upper_b.display());
    }
    for layer in &layers {
        assert!(!Path::new(layer).join("etc/kept").exists(), "the root's write reached the host's layer {layer}");
    }
    let o = airlock(&["stop", &name]);
    assert_eq!(code(&o), 0, "stop: {}", stderr(&o));
    let o = airlock(&["rm", &name]);
    assert_eq!(code(&o), 0, "rm: {}", stderr(&o));

    // A run's root layer is kept on the host for `run --resume`, and 9p cannot be the guest's overlay's upper
    // layer: refused before anything starts (a named run, and a cow workspace's run, which keeps its state).
    let sandboxes = || std::fs::read_dir(state.join("sandboxes")).map(|d| d.count()).unwrap_or(0);
    let before = sandboxes();
    for args in [
        vec!["run", "--isolation", "vm", "--name", name.as_str(), "--image", "vmtest:1", "--", "true"],
        vec!["run", "--isolation", "vm", "--image", "vmtest:1", "--workspace", ws_path.as_str(), "--", "true"],
    ] {
        let o = airlock_cmd_in(&state, &args).stdin(Stdio::null()).output().unwrap();
        assert_eq!(code(&o), 125, "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--isolation vm does not support a writable root kept for --resume"),
            "{}",
            stderr(&o)
        );
        assert_eq!(sandboxes(), before, "{args:?} left a sandbox");
    }
}
