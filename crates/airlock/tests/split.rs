//! airlock's three executables (issue 15): `airlock` runs the sandboxes and execs `airlock-server` for the heavy
//! subsystems (`serve`, `mcp`, `oci`, `image pull`) with the same command line; `airlock-netgw` is each
//! `--net allow` sandbox's gateway. Each is found next to the running executable's real path; a missing one is
//! named in one line. These tests run copies of the built executables from directories of their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{code, is_root, stderr, stdout, StopOnDrop, TempDir};

const EXECUTABLES: [&str; 3] = ["airlock", "airlock-server", "airlock-netgw"];

/// Copies of the built executables `names` in `dir` (mode 0755).
fn install(dir: &Path, names: &[&str]) -> PathBuf {
    for name in names {
        let path = dir.join(name);
        std::fs::copy(common::airlock_path().with_file_name(name), &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.join("airlock")
}

/// `PROGRAM ARGS...` with the tests' state directory, stdin closed.
fn run_program(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("AIRLOCK_STATE_DIR", common::test_state_dir(std::fs::metadata("/proc/self").unwrap().uid()))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The one `airlock:` line naming the missing sibling, and status 125.
fn assert_missing(o: &Output, sibling: &str, airlock: &Path) {
    let err = stderr(o);
    let expected = format!(
        "airlock: {sibling} not found next to {}: reinstall airlock (scripts/install)\n",
        airlock.canonicalize().unwrap().display()
    );
    assert_eq!(err, expected, "{err}");
    assert_eq!(code(o), 125, "{err}");
}

#[test]
fn heavy_commands_name_a_missing_airlock_server() {
    let dir = TempDir::new("split-noserver");
    let airlock = install(dir.path(), &["airlock", "airlock-netgw"]);
    let socket = dir.path().join("never.sock");
    for args in [
        &["serve", "--socket", socket.to_str().unwrap()][..],
        &["mcp"],
        &["oci", "--version"],
        &["--host", "unix:///nonexistent.sock", "oci", "state", "x"],
        &["image", "pull", "alpine:3.20"],
    ] {
        let o = run_program(&airlock, args);
        assert_missing(&o, "airlock-server", &airlock);
    }
    assert!(!socket.exists());
    // What airlock checks itself still comes first: usage errors, help, and `serve --host`.
    let o = run_program(&airlock, &["image", "pull"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("(see `airlock image --help`)"), "{}", stderr(&o));
    let o = run_program(&airlock, &["serve", "--help"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("Usage: airlock serve"), "{}", stdout(&o));
    // The rest of the CLI does not need it.
    let o = run_program(&airlock, &["profile", "list"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn airlock_execs_airlock_server_with_the_same_command_line() {
    let dir = TempDir::new("split-server");
    let airlock = install(dir.path(), &EXECUTABLES);
    // runc's `--version` (the OCI runtime's own command line), through airlock and straight.
    let through = run_program(&airlock, &["oci", "--version"]);
    assert_eq!(code(&through), 0, "{}", stderr(&through));
    let straight = run_program(&dir.path().join("airlock-server"), &["oci", "--version"]);
    assert_eq!(stdout(&through), stdout(&straight));
    assert!(stdout(&through).starts_with("airlock version "), "{}", stdout(&through));
    // The daemon's own refusal of bad input, with its exit status (a failed command's, 1, as before the split).
    let o = run_program(&airlock, &["serve", "--socket", "/tmp/airlock-never.sock", "--default-timeout", "soon"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("airlock: ") && stderr(&o).lines().count() == 1, "{}", stderr(&o));
    // airlock-server runs only its own commands.
    let o = run_program(&dir.path().join("airlock-server"), &["ls"]);
    assert_eq!(code(&o), 125);
    assert_eq!(
        stderr(&o),
        "airlock: airlock-server runs serve, mcp, oci and image pull: the other commands are airlock's\n"
    );
}

#[test]
fn siblings_are_found_next_to_the_real_path_through_a_symlink() {
    let dir = TempDir::new("split-symlink");
    let bin = dir.path().join("bin");
    let elsewhere = dir.path().join("path");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let airlock = install(&bin, &EXECUTABLES);
    let link = elsewhere.join("airlock");
    std::os::unix::fs::symlink(&airlock, &link).unwrap();
    let o = run_program(&link, &["oci", "--version"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

#[test]
fn net_allow_names_a_missing_airlock_netgw_and_leaves_nothing() {
    require_sandbox!();
    let dir = TempDir::new("split-nonetgw");
    let airlock = install(dir.path(), &["airlock", "airlock-server"]);
    let name = format!("split-nonetgw-{}", std::process::id());
    let o = run_program(&airlock, &["run", "--name", &name, "--allow", "allowed.test", "--", "/bin/true"]);
    assert_missing(&o, "airlock-netgw", &airlock);
    // Refused before anything was made: no sandbox of that name.
    let o = run_program(&airlock, &["ls", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!stdout(&o).contains(&name), "{}", stdout(&o));
    // Without --net allow the gateway is not needed.
    let o = run_program(&airlock, &["run", "--rm", "--", "/bin/true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

/// As host root the gateway runs as `nobody`, who cannot reach executables in a 0700 directory: airlock opens
/// airlock-netgw as root and executes it through that descriptor.
#[test]
fn the_gateway_starts_as_nobody_from_a_directory_nobody_cannot_enter() {
    require_sandbox!();
    if !is_root() {
        eprintln!("SKIP: the gateway runs as nobody only when airlock runs as host root");
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        skip_or_fail!("/dev/net/tun is missing (the gateway's TUN interface)");
    }
    let dir = TempDir::new("split-private");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let airlock = install(dir.path(), &EXECUTABLES);
    let name = format!("split-private-{}", std::process::id());
    let _cleanup = StopOnDrop::new(&name, |args: &[&str]| run_program(&airlock, args));
    let o = run_program(&airlock, &["create", "--allow", "allowed.test", &name]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let found = Command::new("pgrep").args(["-f", &format!("^airlock-netgw --sandbox {name} ")]).output().unwrap();
    let pid = stdout(&found).trim().to_string();
    // Named for ps (its command line and its process name), running as nobody.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let stop = run_program(&airlock, &["rm", "--force", &name]);
    assert!(!pid.is_empty() && !pid.contains('\n'), "one gateway for the sandbox: {pid:?}");
    assert_eq!(comm, "airlock-netgw\n");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default();
    assert_eq!(uid_line.split_whitespace().skip(1).collect::<Vec<_>>(), ["65534"; 4], "{uid_line}");
    assert_eq!(code(&stop), 0, "{}", stderr(&stop));
}
