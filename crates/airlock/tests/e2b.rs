//! `airlock serve --e2b` against the unmodified E2B Python SDK (`scripts/e2b-test`, pytest, `e2b==2.63.0`):
//! sandboxes created, listed, paged, timed and killed; commands with their output, exit codes, environment,
//! working directory, background runs past their stream's deadline, kill, timeout, stdin and streamed input; a
//! pty (interactive shell, resize); files written and read back (binary too), listed, moved, removed and watched
//! (polled and streamed); the async SDK; templates that name a warm pool, an image or a profile, or none; a VM sandbox (metadata `dev.airlock.isolation`: `vm`) running `uname -r` in its guest; one sandbox
//! kept from another's files and token; unknown ids not found. Root, and the `e2b` SDK and pytest in /opt/airlock/venv (scripts/setup-debian installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

const VENV_PYTHON: &str = "/opt/airlock/venv/bin/python";

#[test]
fn the_unmodified_e2b_sdk_drives_airlock_sandboxes() {
    if !common::is_root() {
        skip_or_fail!("scripts/e2b-test creates sandboxes as root");
    }
    let has_sdk =
        Command::new(VENV_PYTHON).args(["-c", "import e2b, pytest"]).output().is_ok_and(|o| o.status.success());
    if !has_sdk {
        skip_or_fail!("the e2b SDK and pytest are not installed in /opt/airlock/venv (run scripts/setup-debian)");
    }
    require_sandbox!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/e2b-test");
    let out = Command::new("bash")
        .arg(script)
        .env("AIRLOCK", common::airlock_path())
        .env_remove("AIRLOCK_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "e2b-test failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(" passed"), "no tests ran:\n{stdout}");
}
