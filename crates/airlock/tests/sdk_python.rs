//! The Python SDK (`sdk/python`) against real daemons: `scripts/sdk-test` runs mypy --strict on the package, then
//! its pytest suite, which starts `airlock serve` (this build) on a socket and on a loopback TCP port with a token.
//! Root, and /opt/airlock/venv with httpx, pytest and mypy (scripts/setup-debian installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

const VENV: &str = "/opt/airlock/venv";

#[test]
fn the_python_sdk_type_checks_and_passes_its_tests_against_a_real_daemon() {
    if !common::is_root() {
        skip_or_fail!("scripts/sdk-test runs as root");
    }
    let python = format!("{VENV}/bin/python");
    if !Path::new(&python).exists() || !Path::new(&format!("{VENV}/bin/mypy")).exists() {
        skip_or_fail!("python or mypy is not installed in {VENV} (run scripts/setup-debian)");
    }
    let modules = Command::new(&python).args(["-c", "import httpx, pytest, anyio"]).output().unwrap();
    if !modules.status.success() {
        skip_or_fail!("httpx, pytest or anyio is missing in {VENV} (run scripts/setup-debian)");
    }
    require_sandbox!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/sdk-test");
    let out = Command::new("bash")
        .arg(script)
        .env("AIRLOCK", common::airlock_path())
        .env_remove("AIRLOCK_HOST")
        .env_remove("AIRLOCK_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sdk-test failed ({}):\n{stdout}\n{stderr}", out.status);
    let summary = stdout.lines().last().unwrap_or("");
    assert!(summary.contains(" passed"), "no test ran:\n{stdout}");
    assert!(!summary.contains("skipped"), "tests were skipped:\n{stdout}");
}
