//! `airlock mcp` against the official MCP Python client (`scripts/mcp-test`, pytest): initialize, list the tools,
//! call each for real, a refusal as an error result; over stdio (daemonless), over streamable HTTP on 127.0.0.1,
//! and over stdio with AIRLOCK_HOST naming a real `airlock serve` on a temporary socket; and another stdio MCP
//! server wrapped in `airlock run`. Root, and the `mcp` client and pytest in /opt/airlock/venv (scripts/setup-debian
//! installs them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

const VENV_PYTHON: &str = "/opt/airlock/venv/bin/python";

/// Runs the pytest file's tests selected by `-k` (a transport: `stdio`, `http`, `daemon`; or `wrapped`).
fn mcp_tests(transport: &str) {
    if !common::is_root() {
        skip_or_fail!("scripts/mcp-test creates sandboxes as root");
    }
    let has_client =
        Command::new(VENV_PYTHON).args(["-c", "import mcp, pytest"]).output().is_ok_and(|o| o.status.success());
    if !has_client {
        skip_or_fail!("the mcp client and pytest are not installed in /opt/airlock/venv (run scripts/setup-debian)");
    }
    require_sandbox!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mcp-test");
    let out = Command::new("bash")
        .args([script, "-k", transport])
        .env("AIRLOCK", common::airlock_path())
        .env_remove("AIRLOCK_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mcp-test -k {transport} failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains(" passed"), "no tests ran:\n{stdout}");
}

#[test]
fn mcp_over_stdio_without_a_daemon() {
    mcp_tests("stdio");
}

#[test]
fn mcp_over_streamable_http() {
    mcp_tests("http");
}

#[test]
fn mcp_over_stdio_with_airlock_host_naming_a_daemon() {
    mcp_tests("daemon");
}

/// The README's recipe: another stdio MCP server (a Python one here) under `airlock run`, its session passing
/// through airlock's standard input and output, its file system the sandbox's.
#[test]
fn another_stdio_mcp_server_runs_sandboxed_under_airlock_run() {
    mcp_tests("wrapped");
}
