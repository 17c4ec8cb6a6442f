//! `airlock cp` and the daemon's files API into and out of a VM sandbox (`airlock create --isolation vm`): the
//! operation goes through the supervisor's socket to the guest, whose agent does it in the held sandbox as its
//! user. Real QEMU guests under TCG (`AIRLOCK_VM_ACCEL=tcg`); one guest a test, several checks in it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/daemon.rs"]
mod daemon_client;
mod vm_support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{code, stderr, stdout};

/// These tests' state directory (the initramfs cache in it is built once); sandbox names carry the pid.
fn state_dir() -> PathBuf {
    std::env::temp_dir().join("airlock-vm-files-test-state")
}

fn airlock_cmd(args: &[&str]) -> Command {
    vm_support::airlock_cmd_in(&state_dir(), args)
}

/// `airlock ARGS` with `input` on its standard input, to its end.
fn vm(args: &[&str], input: &[u8]) -> Output {
    vm_support::output_with_input(airlock_cmd(args), input)
}

/// `sh -c SCRIPT` in the sandbox: its output (the exec must succeed).
fn sh(name: &str, script: &str) -> String {
    let out = vm(&["exec", name, "--", "sh", "-c", script], b"");
    assert_eq!(code(&out), 0, "{script}: {}", stderr(&out));
    stdout(&out)
}

fn bytes() -> Vec<u8> {
    (0..=255u8).chain(b"\r\n\0end".iter().copied()).cycle().take(200_000).collect()
}

#[test]
fn cp_and_files_reach_into_a_vm_sandbox_as_its_user() {
    require_vm!();
    let name = format!("vmf-cp-{}", std::process::id());
    let out = vm(&["create", "--isolation", "vm", "--user", "1000", &name], b"");
    assert_eq!(code(&out), 0, "create: {}", stderr(&out));
    let _cleanup = vm_support::Cleanup::new(&state_dir(), &name);
    let host = common::TempDir::new("vmf-cp-host");

    // A file in: its bytes (not UTF-8, larger than a frame) and mode, written as the sandbox's user.
    let file = host.path().join("in.bin");
    std::fs::write(&file, bytes()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o750)).unwrap();
    let out = vm(&["cp", file.to_str().unwrap(), &format!("{name}:/tmp/in.bin")], b"");
    assert_eq!(code(&out), 0, "cp in: {}", stderr(&out));
    assert_eq!(sh(&name, "stat -c '%a %u %s' /tmp/in.bin"), format!("750 1000 {}\n", bytes().len()));

    // A directory in (a symlink in it is not copied), then the whole tree out again.
    let tree = host.path().join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    std::fs::write(tree.join("top.txt"), "top\n").unwrap();
    std::fs::write(tree.join("sub/deeper/leaf.bin"), bytes()).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("link")).unwrap();
    let out = vm(&["cp", tree.to_str().unwrap(), &format!("{name}:/tmp/tree")], b"");
    assert_eq!(code(&out), 0, "cp dir in: {}", stderr(&out));
    assert!(stderr(&out).contains("link"), "the skipped symlink is named: {}", stderr(&out));
    assert_eq!(
        sh(&name, "cd /tmp/tree && find . | sort"),
        ".\n./sub\n./sub/deeper\n./sub/deeper/leaf.bin\n./top.txt\n"
    );
    sh(&name, "echo made-inside > /tmp/tree/inside.txt");
    let back = host.path().join("back");
    let out = vm(&["cp", &format!("{name}:/tmp/tree"), back.to_str().unwrap()], b"");
    assert_eq!(code(&out), 0, "cp dir out: {}", stderr(&out));
    assert_eq!(std::fs::read(back.join("sub/deeper/leaf.bin")).unwrap(), bytes());
    assert_eq!(std::fs::read_to_string(back.join("top.txt")).unwrap(), "top\n");
    assert_eq!(std::fs::read_to_string(back.join("inside.txt")).unwrap(), "made-inside\n");
    // A single file out.
    let one = host.path().join("one.bin");
    let out = vm(&["cp", &format!("{name}:/tmp/in.bin"), one.to_str().unwrap()], b"");
    assert_eq!(code(&out), 0, "cp out: {}", stderr(&out));
    assert_eq!(std::fs::read(&one).unwrap(), bytes());
    // A kernel pseudo-file, whose size says 0: its content, as from a namespace sandbox (before: empty).
    let version = host.path().join("version");
    let out = vm(&["cp", &format!("{name}:/proc/version"), version.to_str().unwrap()], b"");
    assert_eq!(code(&out), 0, "cp /proc/version: {}", stderr(&out));
    let copied = std::fs::read_to_string(&version).unwrap();
    assert!(copied.starts_with("Linux version "), "{copied}");
    assert_eq!(copied, sh(&name, "cat /proc/version"));
    let got = vm(&["__files", "get", &name, "/proc/version"], b"");
    assert_eq!(code(&got), 0, "{}", stderr(&got));
    assert!(stdout(&got).starts_with(&format!("{{\"type\":\"file\",\"size\":{},", copied.len())), "{}", stdout(&got));

    // `__files` itself: the header and the exact bytes; a listing; put with a mode; rm of a tree.
    let got = vm(&["__files", "get", &name, "/tmp/tree/top.txt"], b"");
    assert_eq!(code(&got), 0, "{}", stderr(&got));
    assert_eq!(stdout(&got), "{\"type\":\"file\",\"size\":4,\"mode\":420}\ntop\n");
    let listing = vm(&["__files", "get", &name, "/tmp/tree"], b"");
    let header: serde_json::Value = serde_json::from_str(stdout(&listing).trim()).unwrap();
    let names: Vec<&str> = header["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["inside.txt", "sub", "top.txt"]);
    let put = vm(&["__files", "--mode", "0600", "put", &name, "/tmp/made/by/put"], b"put\n");
    assert_eq!(code(&put), 0, "{}", stderr(&put));
    assert_eq!(sh(&name, "stat -c '%a %u' /tmp/made/by/put; cat /tmp/made/by/put"), "600 1000\nput\n");
    let rm = vm(&["__files", "rm", &name, "/tmp/tree"], b"");
    assert_eq!(code(&rm), 0, "{}", stderr(&rm));
    assert_eq!(sh(&name, "test -e /tmp/tree || echo gone"), "gone\n");

    // Missing: status 3 and its message; cp says so too and creates nothing.
    let missing = vm(&["__files", "get", &name, "/no/such/file"], b"");
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    assert!(stderr(&missing).contains("/no/such/file: no such file or directory"), "{}", stderr(&missing));
    assert!(stdout(&missing).is_empty());
    let nowhere = host.path().join("nowhere");
    let out = vm(&["cp", &format!("{name}:/no/such/file"), nowhere.to_str().unwrap()], b"");
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains("no such file or directory"), "{}", stderr(&out));
    assert!(!nowhere.exists());

    // What the sandbox's user may not read, it does not get: /etc/shadow (root's, 0640), a file it made
    // unreadable, and the same through symlinks planted in the sandbox; a host file the sandbox does not show
    // is not found through a link to `/` either.
    let secret_dir = common::TempDir::new("vmf-cp-secret");
    let secret = secret_dir.path().join("secret.txt");
    std::fs::write(&secret, "host secret\n").unwrap();
    sh(
        &name,
        "ln -s /etc/shadow /tmp/shadow-link; ln -s / /tmp/root-link; echo mine > /tmp/locked; chmod 000 /tmp/locked",
    );
    for path in ["/etc/shadow", "/tmp/shadow-link", "/tmp/locked"] {
        let denied = vm(&["__files", "get", &name, path], b"");
        assert_eq!(code(&denied), 4, "{path}: {}", stderr(&denied));
        assert!(stderr(&denied).contains("permission denied"), "{path}: {}", stderr(&denied));
        assert!(stdout(&denied).is_empty(), "{path}: {}", stdout(&denied));
    }
    let leaked = host.path().join("leaked");
    let out = vm(&["cp", &format!("{name}:/tmp/shadow-link"), leaked.to_str().unwrap()], b"");
    assert_ne!(code(&out), 0);
    assert!(std::fs::read(&leaked).map_or(true, |b| b.is_empty()), "cp out of a link to /etc/shadow wrote it");
    let through = vm(&["__files", "get", &name, &format!("/tmp/root-link{}", secret.display())], b"");
    assert_eq!(code(&through), 3, "{}", stderr(&through));
    assert!(!stdout(&through).contains("host secret"));
    // Writing where the sandbox's user may not: refused (4), nothing written.
    let ro = vm(&["__files", "put", &name, "/usr/airlock-vm-should-not-exist"], b"x");
    assert_eq!(code(&ro), 4, "{}", stderr(&ro));
    assert!(!std::path::Path::new("/usr/airlock-vm-should-not-exist").exists());
    // A FIFO never makes it wait; a relative path is refused before the guest is asked.
    sh(&name, "mkfifo /tmp/fifo");
    let fifo = vm(&["__files", "get", &name, "/tmp/fifo"], b"");
    assert_eq!(code(&fifo), 5, "{}", stderr(&fifo));
    assert_eq!(code(&vm(&["__files", "get", &name, "relative"], b"")), 5);

    // An operation is done while an exec runs (each in a slot of its own; before: it waited for the exec to end).
    let mut busy = airlock_cmd(&["exec", &name, "--", "sleep", "30"]).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let beside = vm(&["__files", "get", &name, "/tmp/made/by/put"], b"");
    assert_eq!(code(&beside), 0, "{}", stderr(&beside));
    assert!(stdout(&beside).ends_with("\nput\n"), "{}", stdout(&beside));
    assert!(busy.try_wait().unwrap().is_none(), "the exec ended before the operation was done");
    busy.kill().unwrap();
    busy.wait().unwrap();

    // The guest is still serving: an exec after all that.
    assert_eq!(sh(&name, "echo still"), "still\n");
}

fn encode(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_daemons_files_api_reaches_into_a_vm_sandbox() {
    require_vm!();
    let daemon = daemon_client::Daemon::start("vmfiles-daemon", &[]);
    // The profile picks the emulator (TCG) and a sandbox user that is not root.
    let profile = daemon.dir.path().join("tcg.toml");
    std::fs::write(&profile, "[vm]\naccel = \"tcg\"\n[process]\nuser = \"1000\"\n").unwrap();
    let c = daemon.client();
    let name = c.create(&serde_json::json!({ "profile": profile.to_str().unwrap(), "isolation": "vm" }));
    let url = |path: &str| format!("/v1/sandboxes/{name}/files?path={}", encode(path));

    // A round trip of bytes that are not UTF-8; parents made; the mode asked for; what a command sees.
    let data = bytes();
    assert_eq!(c.request("PUT", &format!("{}&mode=0755", url("/tmp/new/deep/bin.dat")), &data, &[]).status, 204);
    let a = c.get(&url("/tmp/new/deep/bin.dat"));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.body, data);
    assert_eq!(c.sh(&name, "stat -c '%a %u %s' /tmp/new/deep/bin.dat"), format!("755 1000 {}\n", data.len()));
    c.sh(&name, "echo from-inside > /tmp/inside.txt");
    assert_eq!(c.get(&url("/tmp/inside.txt")).text(), "from-inside\n");
    let listing = c.get(&url("/tmp/new/deep"));
    assert_eq!(listing.status, 200, "{}", listing.text());
    let entries = listing.json()["entries"].as_array().unwrap().clone();
    assert_eq!((entries[0]["name"].as_str(), entries[0]["size"].as_u64()), (Some("bin.dat"), Some(data.len() as u64)));

    // Missing: 404; the sandbox user's rights: 409 (as with namespaces); delete: 204, then gone.
    let missing = c.get(&url("/no/such/file"));
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.error_code(), "not_found");
    let shadow = c.get(&url("/etc/shadow"));
    assert_eq!(shadow.status, 409, "{}", shadow.text());
    assert_eq!(c.request("PUT", &url("/usr/nope"), b"x", &[]).status, 409);
    assert_eq!(c.delete(&url("/tmp/new")).status, 204);
    assert_eq!(c.get(&url("/tmp/new")).status, 404);
    assert_eq!(c.delete(&url("/tmp/new")).status, 404);

    let a = c.delete(&format!("/v1/sandboxes/{name}"));
    assert!(a.status < 300, "{}", a.text());
}
