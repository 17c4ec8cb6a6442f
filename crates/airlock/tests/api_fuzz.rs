//! The daemon's API fuzzed from its own OpenAPI document by schemathesis (`scripts/api-fuzz`): no 5xx, status
//! codes, content types and response bodies as documented, invalid input refused. Root, and schemathesis in
//! /opt/airlock/venv (scripts/setup-debian installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

#[test]
fn the_api_holds_to_its_openapi_document_under_fuzzing() {
    if !common::is_root() {
        skip_or_fail!("scripts/api-fuzz runs as root");
    }
    if !std::path::Path::new("/opt/airlock/venv/bin/schemathesis").exists() {
        skip_or_fail!("schemathesis is not installed in /opt/airlock/venv (run scripts/setup-debian)");
    }
    require_sandbox!();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/api-fuzz");
    let out = Command::new("bash")
        .arg(script)
        .env("AIRLOCK", common::airlock_path())
        .env("SEED", "1")
        .env("MAX_TIME", "120")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "api-fuzz failed ({}):\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("passed"), "no test cases ran:\n{stdout}");
}
