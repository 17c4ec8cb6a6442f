//! The copy-on-write workspace: writes land in a layer airlock keeps under the sandbox's name, the host
//! directory is untouched, and `airlock diff`, `discard`, `ls`, `rm` see and manage that layer. Real overlayfs,
//! as root and rootless.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::process::Output;

use common::{code, stderr, stdout, TempDir};

fn airlock_as(run_as_user: bool) -> fn(&[&str]) -> Output {
    if run_as_user {
        common::airlock_as_user
    } else {
        common::airlock
    }
}

/// A workspace owned by the test user (as root, the sandbox's identity then maps to that owner).
fn workspace(tag: &str) -> TempDir {
    let ws = TempDir::new(tag);
    fs::write(ws.path().join("a.txt"), "line one\nline two\n").unwrap();
    fs::write(ws.path().join("keep.txt"), "untouched\n").unwrap();
    fs::create_dir(ws.path().join("sub")).unwrap();
    fs::write(ws.path().join("sub/b.txt"), "bee\n").unwrap();
    fs::write(ws.path().join("mode.sh"), "#!/bin/sh\n").unwrap();
    ws.chown_to_test_user();
    ws
}

fn unique_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

fn snapshot(dir: &std::path::Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walk(dir) {
        let rel = entry.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&entry).unwrap();
        let value = if meta.is_file() { fs::read_to_string(&entry).unwrap_or_default() } else { "<dir>".into() };
        out.insert(rel, value);
    }
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

const EDITS: &str = "printf 'line one\\nline 2\\n' > a.txt; echo new > c.txt; rm sub/b.txt; chmod 755 mode.sh; \
                     mkdir newdir; echo deep > newdir/d.txt; ln -s /etc/passwd planted";

fn check_cow_changes_are_listed_exactly(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("cow-diff");
    let before = snapshot(ws.path());
    let name = unique_name("diff");
    let o = airlock(&["run", "--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", EDITS]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(snapshot(ws.path()), before, "the host workspace changed");

    let o = airlock(&["diff", &name, "--json"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let kinds: Vec<(String, String)> = doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_string(), c["kind"].as_str().unwrap().to_string()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("a.txt", "modified"),
        ("c.txt", "added"),
        ("mode.sh", "modified"),
        ("newdir", "added"),
        ("newdir/d.txt", "added"),
        ("planted", "added"),
        ("sub/b.txt", "deleted"),
    ]
    .iter()
    .map(|(p, k)| (p.to_string(), k.to_string()))
    .collect();
    assert_eq!(kinds, expected, "{}", stdout(&o));
    let by_path = |p: &str| doc["changes"].as_array().unwrap().iter().find(|c| c["path"] == p).unwrap().clone();
    assert_eq!(by_path("mode.sh")["mode"].as_u64(), Some(0o100755 & 0o7777), "{}", by_path("mode.sh"));
    assert_eq!(by_path("planted")["new_type"], "symlink");
    assert!(by_path("a.txt")["old_hash"] != by_path("a.txt")["new_hash"]);

    // The human form and the patch.
    let human = stdout(&airlock(&["diff", &name]));
    assert!(human.lines().any(|l| l.starts_with('M') && l.ends_with("a.txt")), "{human}");
    assert!(human.lines().any(|l| l.starts_with('D') && l.ends_with("sub/b.txt")), "{human}");
    let patch = stdout(&airlock(&["diff", &name, "--patch", "a.txt"]));
    assert!(patch.contains("-line two") && patch.contains("+line 2"), "{patch}");

    // ls shows it with its pending changes; discard one path; rm removes everything.
    let ls: serde_json::Value = serde_json::from_str(&stdout(&airlock(&["ls", "--json"]))).unwrap();
    let row = ls["sandboxes"].as_array().unwrap().iter().find(|r| r["name"] == name.as_str()).unwrap().clone();
    assert_eq!(row["state"], "exited");
    assert_eq!(row["workspace_mode"], "cow");
    assert_eq!(row["pending_changes"].as_u64(), Some(7), "{row}");
    let o = airlock(&["discard", &name, "c.txt"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let after: serde_json::Value = serde_json::from_str(&stdout(&airlock(&["diff", &name, "--json"]))).unwrap();
    assert!(after["changes"].as_array().unwrap().iter().all(|c| c["path"] != "c.txt"), "{after}");
    assert_eq!(after["changes"].as_array().unwrap().len(), 6);
    assert_eq!(code(&airlock(&["rm", &name])), 0);
    assert_eq!(code(&airlock(&["diff", &name])), 1, "diff of a removed sandbox fails");
    assert_eq!(snapshot(ws.path()), before, "the host workspace changed");
    assert!(fs::metadata("/etc/passwd").is_ok());
}

#[test]
fn cow_changes_are_listed_exactly_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_cow_changes_are_listed_exactly(false);
}

#[test]
fn cow_changes_are_listed_exactly_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_cow_changes_are_listed_exactly(true);
}

#[test]
fn generated_names_are_printed_and_rm_flag_keeps_nothing() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("cow-gen");
    let o = common::run(&["--workspace", ws.str(), "--", "/bin/sh", "-c", "echo x > x"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let line = stderr(&o);
    let name = line.split_whitespace().find(|w| w.starts_with("sbx-")).unwrap().trim_end_matches(':').to_string();
    assert!(line.contains(&format!("airlock diff {name}")), "{line}");
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);

    let named = unique_name("gone");
    let o = common::run(&["--rm", "--name", &named, "--workspace", ws.str(), "--", "/bin/sh", "-c", "echo y > y"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "--rm keeps nothing and says nothing");
    assert_eq!(code(&common::airlock(&["diff", &named])), 1);
}

#[test]
fn sandbox_names_and_workspaces_are_validated() {
    require_sandbox!();
    let ws = workspace("cow-bad");
    for bad in ["a/b", "..", "", &"x".repeat(65)] {
        let o = common::run(&["--name", bad, "--workspace", ws.str(), "--", "/bin/true"]);
        assert_eq!(code(&o), 125, "--name {bad:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1);
    }
    let name = unique_name("twice");
    assert_eq!(code(&common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/true"])), 0);
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
    let o = common::airlock(&["rm", &name]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).starts_with("airlock: no sandbox named"), "{}", stderr(&o));
    // A workspace inside the state directory would show the sandbox other sandboxes' layers.
    let state = common::test_state_dir(0);
    fs::create_dir_all(&state).unwrap();
    let o = common::run(&["--workspace", &state, "--", "/bin/true"]);
    if common::is_root() {
        assert_eq!(code(&o), 125);
        assert!(stderr(&o).contains("inside airlock's state directory"), "{}", stderr(&o));
    }
}

#[test]
fn planted_symlinks_are_reported_not_followed() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("cow-link");
    let name = unique_name("link");
    let script = "ln -s ../../../../etc/shadow up; ln -s /root evil; ln -sf /etc/hostname a.txt";
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", script]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&common::airlock(&["diff", &name, "--json"]))).unwrap();
    let changes = doc["changes"].as_array().unwrap();
    let kind = |p: &str| changes.iter().find(|c| c["path"] == p).map(|c| c["kind"].as_str().unwrap().to_string());
    assert_eq!(kind("up").as_deref(), Some("added"));
    assert_eq!(kind("evil").as_deref(), Some("added"));
    assert_eq!(kind("a.txt").as_deref(), Some("type_changed"), "{doc}");
    let patch = stdout(&common::airlock(&["diff", &name, "--patch"]));
    assert!(!patch.contains("root:"), "a symlink target's contents leaked into the patch: {patch}");
    assert_eq!(code(&common::airlock(&["discard", &name, "evil"])), 0);
    assert!(fs::metadata("/root").is_ok(), "discard removed the symlink's target");
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}
