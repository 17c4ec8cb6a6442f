//! `airlock doctor`: the real probes on this host, as root and as an ordinary user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{airlock, airlock_as_user, code, stdout};

const CHECK_IDS: &[&str] = &[
    "userns",
    "idmap",
    "namespaces",
    "mounts",
    "proc",
    "overlay",
    "disk_layer",
    "landlock",
    "seccomp",
    "no_new_privs",
    "cgroups",
    "ptrace_scope",
    "tiocsti",
    "unprivileged_bpf",
    "tun",
    "kernel",
    "container",
    "vm",
    "exec_records",
];

fn check_document(text: &str, expect_root: bool) -> serde_json::Value {
    let doc: serde_json::Value = serde_json::from_str(text).expect("doctor --json prints one JSON document");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["user"]["root"], expect_root);
    assert!(doc["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    let checks = doc["checks"].as_array().expect("checks is an array");
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, CHECK_IDS, "the check ids are a stable interface");
    for check in checks {
        let status = check["status"].as_str().unwrap();
        assert!(["ok", "warn", "missing"].contains(&status), "{check}");
        assert!(check["detail"].as_str().is_some_and(|d| !d.is_empty()), "{check}");
        assert!(check["fix"].is_null() || check["fix"].is_string(), "{check}");
        if status == "missing" {
            assert!(check["fix"].is_string(), "a missing layer must come with a fix: {check}");
        }
    }
    assert!(doc["can_run"].is_boolean());
    assert!(doc["summary"].as_str().is_some_and(|s| !s.is_empty()));
    doc
}

#[test]
fn doctor_json_reports_every_layer_and_agrees_with_run() {
    let o = airlock(&["doctor", "--json"]);
    let doc = check_document(&stdout(&o), common::is_root());
    let can_run = doc["can_run"].as_bool().unwrap();
    // The verdict must match reality: if doctor says a default sandbox can run, it does, and the other way.
    let ran = code(&common::run(&["--", "/bin/true"])) == 0;
    assert_eq!(can_run, ran, "doctor says can_run={can_run} but a run {}", if ran { "worked" } else { "failed" });
    assert_eq!(code(&o), if can_run { 0 } else { 1 });
    // As root here, audited runs record execs from the kernel's exec tracepoints (tests/audit.rs), and doctor
    // says so.
    if common::is_root() && can_run {
        let execs = doc["checks"].as_array().unwrap().iter().find(|c| c["id"] == "exec_records").unwrap();
        assert_eq!(execs["status"], "ok", "{execs}");
    }
    if can_run {
        for id in ["userns", "namespaces", "mounts", "proc", "seccomp", "no_new_privs", "landlock"] {
            let check = doc["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap();
            assert_ne!(check["status"], "missing", "{check}");
        }
    }
}

#[test]
fn doctor_text_has_a_line_per_check_and_a_summary() {
    let o = airlock(&["doctor"]);
    let text = stdout(&o);
    let status_lines =
        text.lines().filter(|l| l.starts_with("ok ") || l.starts_with("warn ") || l.starts_with("missing ")).count();
    assert_eq!(status_lines, CHECK_IDS.len(), "{text}");
    assert!(text.contains("airlock run can"), "{text}");
}

#[test]
fn doctor_as_an_ordinary_user_reports_the_rootless_view() {
    let _user = require_test_user!();
    let o = airlock_as_user(&["doctor", "--json"]);
    let doc = check_document(&stdout(&o), false);
    let idmap = doc["checks"].as_array().unwrap().iter().find(|c| c["id"] == "idmap").unwrap();
    assert_eq!(idmap["status"], "warn", "rootless maps only the user's own ids: {idmap}");
    // Rootless, exec records come from seccomp notification, and doctor says why.
    let execs = doc["checks"].as_array().unwrap().iter().find(|c| c["id"] == "exec_records").unwrap();
    assert_eq!(execs["status"], "warn", "{execs}");
    assert!(execs["detail"].as_str().unwrap().contains("seccomp"), "{execs}");
    let ran = code(&common::run_as_user(&["--", "/bin/true"])) == 0;
    assert_eq!(doc["can_run"].as_bool().unwrap(), ran);
}
