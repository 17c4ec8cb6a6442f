//! The copy-on-write workspace: writes land in a layer airlock keeps under the sandbox's name, the host
//! directory is untouched, and `airlock diff`, `discard`, `ls`, `rm` see and manage that layer. Real overlayfs,
//! as root and rootless.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::process::Output;

use common::{code, stderr, stdout, StopOnDrop, TempDir};

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

// ---- airlock commit ----

/// Every entry under `dir`: type, permission bits, and a file's contents or a symlink's target.
fn full_snapshot(dir: &std::path::Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    for entry in walk(dir) {
        let rel = entry.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(&entry).unwrap();
        let value = if meta.file_type().is_symlink() {
            format!("link -> {}", fs::read_link(&entry).unwrap().display())
        } else if meta.is_dir() {
            format!("dir {:o}", meta.permissions().mode() & 0o7777)
        } else {
            format!("file {:o} {:?}", meta.permissions().mode() & 0o7777, fs::read(&entry).unwrap())
        };
        out.insert(rel, value);
    }
    out
}

const COMMIT_EDITS: &str = "printf 'line one\\nline 2\\n' > a.txt; echo new > c.txt; rm sub/b.txt; chmod 755 mode.sh; \
                            mkdir newdir; echo deep > newdir/d.txt; ln -s /etc/passwd planted; mv keep.txt kept.txt; \
                            chmod 700 sub; mkdir -p newdir/deeper/est; ln -s ../a.txt newdir/rel; ln -s ../../.. up";

/// The workspace as the sandbox saw it after `script`: the same script run on a plain copy.
fn expected_after(ws: &TempDir, script: &str) -> (TempDir, BTreeMap<String, String>) {
    let copy = TempDir::new("commit-expected");
    let status = std::process::Command::new("cp").arg("-a").arg(format!("{}/.", ws.str())).arg(copy.path()).status();
    assert!(status.unwrap().success());
    let status = std::process::Command::new("/bin/sh").arg("-c").arg(script).current_dir(copy.path()).status();
    assert!(status.unwrap().success());
    let snap = full_snapshot(copy.path());
    (copy, snap)
}

fn assert_owned_by_test_user(dir: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let uid = common::test_user_uid();
    for entry in walk(dir) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        assert!(meta.uid() < 0x7000_0000 && meta.gid() < 0x7000_0000, "{} has a sandbox id", entry.display());
        assert_eq!((meta.uid(), meta.gid()), (uid, uid), "owner of {}", entry.display());
    }
}

fn check_commit_applies_what_the_sandbox_saw(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("commit");
    let (_copy, expected) = expected_after(&ws, COMMIT_EDITS);
    let name = unique_name("commit");
    let o = airlock(&["run", "--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", COMMIT_EDITS]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_ne!(full_snapshot(ws.path()), expected, "the run changed the host");

    let o = airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(stdout(&o).starts_with("committed ") && stdout(&o).trim_end().ends_with(ws.str()), "{}", stdout(&o));
    assert_eq!(full_snapshot(ws.path()), expected);
    assert_owned_by_test_user(ws.path());
    assert_eq!(stdout(&airlock(&["diff", &name])).trim(), "no changes");
    let o = airlock(&["commit", &name]);
    assert_eq!(stdout(&o).split_whitespace().nth(1), Some("0"), "{}", stdout(&o));
    assert!(fs::metadata("/etc/passwd").is_ok());
    assert_eq!(code(&airlock(&["rm", &name])), 0);
}

#[test]
fn commit_applies_what_the_sandbox_saw_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_commit_applies_what_the_sandbox_saw(false);
}

#[test]
fn commit_applies_what_the_sandbox_saw_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_commit_applies_what_the_sandbox_saw(true);
}

#[test]
fn commit_refuses_conflicts_unless_forced_and_filters_paths() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("commit-conflict");
    let name = unique_name("conflict");
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", EDITS]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(ws.path().join("a.txt"), "edited on the host\n").unwrap();
    let before = full_snapshot(ws.path());

    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    assert_eq!(
        stderr(&o).trim(),
        "airlock: commit refused: 1 conflict (host files changed since the sandbox started); use --force to overwrite"
    );
    assert_eq!(stdout(&o), "a.txt\n");
    assert_eq!(full_snapshot(ws.path()), before, "a refused commit applied something");

    // A PATH filter commits only that path.
    let o = common::airlock(&["commit", &name, "c.txt"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(stdout(&o).starts_with("committed 1 change to "), "{}", stdout(&o));
    assert_eq!(fs::read_to_string(ws.path().join("c.txt")).unwrap(), "new\n");
    assert!(!ws.path().join("newdir").exists() && ws.path().join("sub/b.txt").exists());

    let o = common::airlock(&["commit", "--force", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "line one\nline 2\n");
    assert!(!ws.path().join("sub/b.txt").exists());
    assert_eq!(fs::read_to_string(ws.path().join("newdir/d.txt")).unwrap(), "deep\n");
    assert_eq!(stdout(&common::airlock(&["diff", &name])).trim(), "no changes");
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}

#[test]
fn commit_never_writes_outside_the_workspace() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("commit-escape");
    let outside = TempDir::new("outside");
    let name = unique_name("escape");
    let script = "ln -s /etc evil; ln -s ../.. up; echo x > sub/new.txt; echo y > sub/b.txt";
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", script]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    // Someone swaps the host's sub/ for a symlink to a directory outside (CVE-2018-15664's move).
    fs::remove_dir_all(ws.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("sub")).unwrap();

    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 1, "stderr: {}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l == "sub"), "{}", stdout(&o));
    let o = common::airlock(&["commit", "--force", &name]);
    assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("{}/sub", ws.str())) && err.contains("symlink"), "{err}");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0, "something was written through the symlink");
    assert!(fs::symlink_metadata(ws.path().join("sub")).unwrap().file_type().is_symlink());
    // The change before it was committed (a link, its target untouched); those after it wait in the layer.
    assert_eq!(fs::read_link(ws.path().join("evil")).unwrap(), std::path::Path::new("/etc"));
    assert!(fs::symlink_metadata(ws.path().join("up")).is_err());
    assert_eq!(code(&common::airlock(&["discard", &name, "sub"])), 0);
    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(fs::read_link(ws.path().join("up")).unwrap(), std::path::Path::new("../.."));
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    assert!(fs::metadata("/etc/passwd").is_ok());
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}

#[test]
fn commit_killed_half_way_finishes_when_run_again() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("commit-kill");
    let name = unique_name("kill");
    let script = "mkdir many; i=0; while [ $i -lt 2000 ]; do printf 'content of file %s\\n' $i > many/f$i; \
                  i=$((i+1)); done";
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", script]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));

    let mut child = std::process::Command::new(common::airlock_path())
        .args(["commit", &name])
        .env("AIRLOCK_STATE_DIR", common::test_state_dir(0))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let many = ws.path().join("many");
    // Kill it once it has started writing (or after 20 ms of doing so).
    while start.elapsed() < std::time::Duration::from_secs(10)
        && fs::read_dir(&many).map(|d| d.count()).unwrap_or(0) == 0
        && child.try_wait().unwrap().is_none()
    {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let _ = child.kill();
    let status = child.wait().unwrap();
    let written = fs::read_dir(&many).map(|d| d.count()).unwrap_or(0);
    eprintln!("killed: {status:?}, {written} entries written");

    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let names: Vec<String> =
        fs::read_dir(&many).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2000, "{:?}", names.iter().filter(|n| n.starts_with(".airlock")).collect::<Vec<_>>());
    for i in 0..2000 {
        assert_eq!(fs::read_to_string(many.join(format!("f{i}"))).unwrap(), format!("content of file {i}\n"));
    }
    assert!(walk(ws.path()).iter().all(|p| !p.to_string_lossy().contains(".airlock-commit-")));
    assert_eq!(stdout(&common::airlock(&["diff", &name])).trim(), "no changes");
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}

#[test]
fn commit_is_refused_while_the_sandbox_runs() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("commit-running");
    let name = unique_name("running");
    let mut child = std::process::Command::new(common::airlock_path())
        .args(["run", "--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", "echo x > x; sleep 3"])
        .env("AIRLOCK_STATE_DIR", common::test_state_dir(0))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("is running"), "{}", stderr(&o));
    assert!(!ws.path().join("x").exists());
    assert!(child.wait().unwrap().success());
    assert_eq!(code(&common::airlock(&["commit", &name])), 0);
    assert_eq!(fs::read_to_string(ws.path().join("x")).unwrap(), "x\n");
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}

// ---- checkpoints: airlock checkpoint / checkpoints / rollback, and run --resume ----

/// Prints a hash of the workspace as the sandbox sees it: every name, and every file's contents.
const TREE_HASH: &str = "(find . | sort; find . -type f | sort | xargs sha256sum) | sha256sum";

const RUN1_EDITS: &str = "printf 'one\\n' > r1.txt; echo mod1 > a.txt; mkdir d1; echo x > d1/x; rm keep.txt; \
                          echo gone > tmp1.txt";
/// Deletes a file run 1 created (tmp1.txt, d1/x), changes one run 1 changed (a.txt), brings back one run 1
/// deleted (keep.txt), deletes a host directory.
const RUN2_EDITS: &str = "rm tmp1.txt; echo mod2 >> a.txt; echo two > r2.txt; rm -r sub; echo again > keep.txt; \
                          rm d1/x; chmod 700 d1";

fn diff_kinds(airlock: fn(&[&str]) -> Output, name: &str) -> Vec<(String, String)> {
    let o = airlock(&["diff", name, "--json"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    doc["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap().to_string(), c["kind"].as_str().unwrap().to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, k)| (p.to_string(), k.to_string())).collect()
}

/// Runs `script` then prints the tree hash, in the sandbox `name` (resumed unless `first`); returns the hash.
fn run_and_hash(airlock: fn(&[&str]) -> Output, name: &str, ws: &TempDir, script: &str, first: bool) -> String {
    let script = format!("{script}; {TREE_HASH}");
    let mut args = vec!["run", "--name", name];
    if !first {
        args.push("--resume");
    }
    args.extend(["--workspace", ws.str(), "--", "/bin/sh", "-c", &script]);
    let o = airlock(&args);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

fn checkpoint_labels(airlock: fn(&[&str]) -> Output, name: &str) -> Vec<String> {
    let o = airlock(&["checkpoints", name, "--json"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let list = doc["checkpoints"].as_array().unwrap();
    for c in list {
        assert!(c["created"].as_f64().is_some_and(|t| t > 1.0e9), "{c}");
        assert!(c["changes"].as_u64().is_some(), "{c}");
    }
    list.iter().map(|c| c["label"].as_str().unwrap().to_string()).collect()
}

fn check_checkpoints_stack_and_roll_back(as_user: bool) {
    let airlock = airlock_as(as_user);
    let ws = workspace("ckpt");
    let before = full_snapshot(ws.path());
    let (_copy, expected) = expected_after(&ws, &format!("{RUN1_EDITS}; {RUN2_EDITS}"));
    let name = unique_name("ckpt");

    let hash1 = run_and_hash(airlock, &name, &ws, RUN1_EDITS, true);
    let run1_changes = diff_kinds(airlock, &name);
    let o = airlock(&["checkpoint", &name, "c1"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    // A label is validated and unique.
    assert_eq!(code(&airlock(&["checkpoint", &name, "c1"])), 1);
    assert_eq!(code(&airlock(&["checkpoint", &name, "../x"])), 1);
    assert_eq!(diff_kinds(airlock, &name), run1_changes, "a checkpoint changes nothing the diff shows");

    let hash2 = run_and_hash(airlock, &name, &ws, RUN2_EDITS, false);
    assert_ne!(hash1, hash2);
    let combined = pairs(&[
        ("a.txt", "modified"),
        ("d1", "added"),
        ("keep.txt", "modified"),
        ("r1.txt", "added"),
        ("r2.txt", "added"),
        ("sub", "deleted"),
        ("sub/b.txt", "deleted"),
    ]);
    assert_eq!(diff_kinds(airlock, &name), combined);
    let patch = stdout(&airlock(&["diff", &name, "--patch", "a.txt"]));
    assert!(patch.contains("-line one") && patch.contains("+mod1") && patch.contains("+mod2"), "{patch}");

    let o = airlock(&["checkpoint", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(checkpoint_labels(airlock, &name), ["c1", "c2"]);
    assert!(stdout(&airlock(&["checkpoints", &name])).contains("c1"));

    // Back to c1: the view is exactly what run 1 left.
    let o = airlock(&["rollback", &name, "c1"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(checkpoint_labels(airlock, &name), ["c1"]);
    assert_eq!(code(&airlock(&["rollback", &name, "c2"])), 1, "c2 is gone");
    assert_eq!(diff_kinds(airlock, &name), run1_changes);
    assert_eq!(run_and_hash(airlock, &name, &ws, "true", false), hash1);

    // Again run 2's edits, over c1; commit applies exactly the combined changes.
    assert_eq!(run_and_hash(airlock, &name, &ws, RUN2_EDITS, false), hash2);
    assert_eq!(diff_kinds(airlock, &name), combined);
    assert_eq!(full_snapshot(ws.path()), before, "the host workspace changed before the commit");
    let o = airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(full_snapshot(ws.path()), expected);
    assert_owned_by_test_user(ws.path());
    assert_eq!(stdout(&airlock(&["diff", &name])).trim(), "no changes");
    assert_eq!(run_and_hash(airlock, &name, &ws, "true", false), hash2);
    assert_eq!(code(&airlock(&["rm", &name])), 0);
}

#[test]
fn checkpoints_stack_and_roll_back_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_checkpoints_stack_and_roll_back(false);
}

#[test]
fn checkpoints_stack_and_roll_back_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_checkpoints_stack_and_roll_back(true);
}

fn check_checkpoint_time_is_independent_of_size(as_user: bool) {
    let airlock = airlock_as(as_user);
    let mut times = Vec::new();
    for files in [1, 5000] {
        let ws = workspace("ckpt-time");
        let name = unique_name("ckpt-time");
        let script = format!("mkdir many; cd many; i=0; while [ $i -lt {files} ]; do echo $i > f$i; i=$((i+1)); done");
        let o = airlock(&["run", "--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", &script]);
        assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
        let start = std::time::Instant::now();
        let o = airlock(&["checkpoint", &name]);
        let took = start.elapsed();
        assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
        eprintln!("checkpoint of a layer with {files} files: {} ms", took.as_millis());
        times.push(took);
        assert_eq!(diff_kinds(airlock, &name).len(), files + 1);
        assert_eq!(code(&airlock(&["rm", &name])), 0);
    }
    // Both are a rename and a few small steps; the bound leaves room for a loaded test machine.
    assert!(times.iter().all(|t| t.as_millis() < 250), "{times:?}");
}

#[test]
fn checkpoint_time_is_independent_of_size_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    check_checkpoint_time_is_independent_of_size(false);
}

#[test]
fn checkpoint_time_is_independent_of_size_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    check_checkpoint_time_is_independent_of_size(true);
}

#[test]
fn checkpoint_and_rollback_are_refused_while_the_sandbox_runs() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("ckpt-running");
    let name = unique_name("ckpt-running");
    let o = common::airlock(&["run", "--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", "echo 1 > x"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(code(&common::airlock(&["checkpoint", &name, "one"])), 0);
    let mut child = std::process::Command::new(common::airlock_path())
        .args([
            "run",
            "--name",
            &name,
            "--resume",
            "--workspace",
            ws.str(),
            "--",
            "/bin/sh",
            "-c",
            "echo 2 > x; sleep 3",
        ])
        .env("AIRLOCK_STATE_DIR", common::test_state_dir(0))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    for args in [["checkpoint", &name, "two"], ["rollback", &name, "one"]] {
        let o = common::airlock(&args);
        assert_eq!(code(&o), 1, "stdout: {} stderr: {}", stdout(&o), stderr(&o));
        assert!(stderr(&o).contains("is running") && stderr(&o).contains("not supported yet"), "{}", stderr(&o));
    }
    let o = common::airlock(&["run", "--name", &name, "--resume", "--workspace", ws.str(), "--", "true"]);
    assert!(code(&o) != 0 && stderr(&o).contains("is running"), "{}", stderr(&o));
    assert!(child.wait().unwrap().success());
    // Resuming needs the same workspace.
    let other = workspace("ckpt-other");
    let o = common::airlock(&["run", "--name", &name, "--resume", "--workspace", other.str(), "--", "true"]);
    assert!(code(&o) != 0 && stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert_eq!(code(&common::airlock(&["rollback", &name, "one"])), 0);
    let o = common::airlock(&["run", "--name", &name, "--resume", "--workspace", ws.str(), "--", "cat", "x"]);
    assert_eq!(stdout(&o), "1\n", "stderr: {}", stderr(&o));
    assert!(!ws.path().join("x").exists());
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}

/// Bytes available on the filesystem holding `path` (`df`).
fn available_bytes(path: &str) -> u64 {
    let o = std::process::Command::new("df").args(["--output=avail", "-B1", path]).output().unwrap();
    stdout(&o).lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Whether a loop device is attached to `image` (`losetup -a`), or anything is mounted at `mountpoint`.
fn loop_or_mount_left(image: &str, mountpoint: &str) -> Option<String> {
    let losetup = std::process::Command::new("losetup").arg("-a").output().unwrap();
    if let Some(line) = stdout(&losetup).lines().find(|l| l.contains(image)) {
        return Some(format!("loop device left: {line}"));
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts.lines().find(|l| l.split(' ').nth(4) == Some(mountpoint)).map(|l| format!("mount left: {l}"))
}

/// `--disk 16M` bounds the cow layer (an ext4 image on a loop device): writing 64M into the workspace fails
/// with ENOSPC inside, the host loses at most the image's 16M, and the layer still diffs, checkpoints, rolls
/// back, resumes and commits, also after it was unmounted (as a reboot would). `rm` leaves no loop device and
/// no mount.
#[test]
fn disk_bounds_the_cow_layer_as_root() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("disk");
    let name = unique_name("disk");
    let state = format!("{}/sandboxes/{name}", common::test_state_dir(0));
    let (image, mountpoint) = (format!("{state}/layer.img"), format!("{state}/layer"));
    // Too small for an ext4 image: refused before anything runs, nothing kept.
    let o = common::run(&["--name", &name, "--disk", "1M", "--workspace", ws.str(), "--", "true"]);
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("too small"), "{}", stderr(&o));
    assert!(!std::path::Path::new(&state).exists());

    fs::create_dir_all(common::test_state_dir(0)).unwrap();
    let free_before = available_bytes(&common::test_state_dir(0));
    let script = "echo small > small.txt; head -c 64M /dev/zero > big; echo head=$?";
    let o = common::run(&["--name", &name, "--disk", "16M", "--workspace", ws.str(), "--", "/bin/sh", "-c", script]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "head=1\n", "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("No space left on device"), "{}", stderr(&o));
    let lost = free_before.saturating_sub(available_bytes(&common::test_state_dir(0)));
    assert!(lost < 40 << 20, "the host lost {lost} bytes for a 16M layer");
    let size = fs::metadata(ws.path().join("big")).map(|m| m.len());
    assert!(size.is_err(), "the host workspace changed: {size:?}");
    assert!(fs::metadata(&image).unwrap().len() == 16 << 20);

    // As after a reboot: the layer is not mounted; every command mounts it again.
    let unmount = || {
        let status = std::process::Command::new("umount").arg(&mountpoint).status().unwrap();
        assert!(status.success());
        assert!(loop_or_mount_left(&image, &mountpoint).is_none());
    };
    unmount();
    assert_eq!(diff_kinds(common::airlock, &name), pairs(&[("big", "added"), ("small.txt", "added")]));
    unmount();
    assert_eq!(code(&common::airlock(&["checkpoint", &name, "c1"])), 0);
    assert_eq!(code(&common::airlock(&["discard", &name, "big"])), 0);
    unmount();
    let o =
        common::run(&["--name", &name, "--resume", "--workspace", ws.str(), "--", "/bin/sh", "-c", "rm small.txt; ls"]);
    assert_eq!((code(&o), stdout(&o).contains("big")), (0, false), "stderr: {}", stderr(&o));
    // A bound is fixed when the sandbox is created.
    let o = common::run(&["--name", &name, "--resume", "--disk", "32M", "--workspace", ws.str(), "--", "true"]);
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("created with --disk 16M"), "{}", stderr(&o));
    unmount();
    assert_eq!(code(&common::airlock(&["rollback", &name, "c1"])), 0);
    assert_eq!(diff_kinds(common::airlock, &name), pairs(&[("small.txt", "added")]));
    unmount();
    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(fs::read_to_string(ws.path().join("small.txt")).unwrap(), "small\n");
    assert!(stdout(&common::airlock(&["ls"])).contains(&name));

    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
    assert_eq!(loop_or_mount_left(&image, &mountpoint), None);
    assert!(!std::path::Path::new(&state).exists());
}

/// Rootless, a user namespace cannot mount an ext4 image: `--disk` with a cow workspace fails closed (125, one
/// line saying why), for `run` and `create`, and keeps nothing.
#[test]
fn disk_bounded_layer_is_refused_rootless() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("disk-rootless");
    let name = unique_name("disk-rootless");
    let o = common::run_as_user(&["--name", &name, "--disk", "16M", "--workspace", ws.str(), "--", "true"]);
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).contains("--disk for a cow workspace needs root (a loop-mounted image); rootless"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // (Refused; should it start all the same, the failed assertion leaves it stopped and removed.)
    let _cleanup = StopOnDrop::new(&name, common::airlock_as_user);
    let o = common::airlock_as_user(&["create", "--disk", "16M", "--workspace", ws.str(), &name]);
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    assert!(stderr(&o).contains("needs root"), "{}", stderr(&o));
    assert!(!stdout(&common::airlock_as_user(&["ls"])).contains(&name));
    // Without a cow workspace --disk bounds /tmp only, rootless too.
    let o = common::run_as_user(&["--disk", "16M", "--", "true"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
}

/// A root-owned tree with nested directories, and one file of another host user that anyone may write.
fn root_owned_workspace(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let ws = TempDir::new(tag);
    fs::write(ws.path().join("a.txt"), "one\n").unwrap();
    fs::create_dir_all(ws.path().join("sub/deep")).unwrap();
    fs::write(ws.path().join("sub/deep/s.txt"), "s\n").unwrap();
    let other = ws.path().join("other.txt");
    fs::write(&other, "o\n").unwrap();
    std::os::unix::fs::chown(&other, Some(4321), Some(4321)).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o666)).unwrap();
    ws
}

/// Host owner and content of every entry under `dir` (`<dir>` for directories).
fn owners(dir: &std::path::Path) -> BTreeMap<String, (u32, u32, String)> {
    use std::os::unix::fs::MetadataExt;
    walk(dir)
        .into_iter()
        .map(|entry| {
            let meta = fs::symlink_metadata(&entry).unwrap();
            let rel = entry.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let content = if meta.is_dir() { "<dir>".into() } else { fs::read_to_string(&entry).unwrap() };
            (rel, (meta.uid(), meta.gid(), content))
        })
        .collect()
}

fn owned(list: &[(&str, u32, &str)]) -> BTreeMap<String, (u32, u32, String)> {
    list.iter().map(|(p, id, c)| (p.to_string(), (*id, *id, c.to_string()))).collect()
}

const ROOT_TREE_EDITS: &str = "stat -c %u:%g a.txt other.txt; echo two >> a.txt; echo more >> sub/deep/s.txt; \
                               mkdir sub/new; echo n > sub/new/n.txt; mkdir -p sub/deep/x/y; echo c > c.txt; \
                               echo p >> other.txt";

/// What the host tree must hold once ROOT_TREE_EDITS are committed: what root inside made belongs to host
/// root, and the other user's file keeps its owner.
fn root_tree_after_edits() -> BTreeMap<String, (u32, u32, String)> {
    owned(&[
        ("a.txt", 0, "one\ntwo\n"),
        ("c.txt", 0, "c\n"),
        ("other.txt", 4321, "o\np\n"),
        ("sub", 0, "<dir>"),
        ("sub/deep", 0, "<dir>"),
        ("sub/deep/s.txt", 0, "s\nmore\n"),
        ("sub/deep/x", 0, "<dir>"),
        ("sub/deep/x/y", 0, "<dir>"),
        ("sub/new", 0, "<dir>"),
        ("sub/new/n.txt", 0, "n\n"),
    ])
}

#[test]
fn root_owned_workspace_is_writable_in_cow_and_commit_keeps_host_owners() {
    require_sandbox!();
    if !common::is_root() {
        eprintln!("SKIP: a workspace owned by host root is mounted idmapped only by host root's sandboxes");
        return;
    }
    let ws = root_owned_workspace("cow-rootowned");
    let before = owners(ws.path());
    let name = unique_name("rootowned");
    let o = common::airlock(&["run", "--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", ROOT_TREE_EDITS]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    // Inside, the host's owners are the owners: host root's files are root's.
    assert_eq!(stdout(&o), "0:0\n4321:4321\n");
    assert!(!stderr(&o).contains("owned by host root"), "no warning applies any more: {}", stderr(&o));
    assert_eq!(owners(ws.path()), before, "cow changed the host workspace");

    let kinds = diff_kinds(common::airlock, &name);
    let expected = pairs(&[
        ("a.txt", "modified"),
        ("c.txt", "added"),
        ("other.txt", "modified"),
        ("sub/deep/s.txt", "modified"),
        ("sub/deep/x", "added"),
        ("sub/deep/x/y", "added"),
        ("sub/new", "added"),
        ("sub/new/n.txt", "added"),
    ]);
    assert_eq!(kinds, expected);
    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(owners(ws.path()), root_tree_after_edits());
    assert_eq!(stdout(&common::airlock(&["diff", &name])).trim(), "no changes");

    // The kept layer resumes in a later run (another host id range): its files are stored with the host's ids.
    for script in ["echo 3 > r.txt", "echo 4 >> r.txt"] {
        let o = common::airlock(&[
            "run",
            "--resume",
            "--name",
            &name,
            "--workspace",
            ws.str(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ]);
        assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    }
    // (A new file: the host's a.txt changed since the sandbox was made, which commit would call a conflict.)
    let o = common::airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let mut expected = root_tree_after_edits();
    expected.insert("r.txt".into(), (0, 0, "3\n4\n".into()));
    assert_eq!(owners(ws.path()), expected);
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}

#[test]
fn root_owned_workspace_works_in_a_long_lived_sandbox() {
    require_sandbox!();
    if !common::is_root() {
        eprintln!("SKIP: a workspace owned by host root is mounted idmapped only by host root's sandboxes");
        return;
    }
    let ws = root_owned_workspace("ll-rootowned");
    let name = unique_name("ll-rootowned");
    let airlock = common::airlock;
    // Stopped and removed whatever the assertions below say.
    let _cleanup = StopOnDrop::new(&name, airlock);
    let o = airlock(&["create", "--workspace", ws.str(), &name]);
    assert_eq!(code(&o), 0, "create failed: {}", stderr(&o));
    let o = airlock(&["exec", &name, "--", "/bin/sh", "-c", ROOT_TREE_EDITS]);
    assert_eq!(code(&o), 0, "exec failed: {}", stderr(&o));
    assert_eq!(stdout(&o), "0:0\n4321:4321\n");
    // A checkpoint of the running sandbox mounts the new stack idmapped too.
    let o = airlock(&["checkpoint", &name, "one"]);
    assert_eq!(code(&o), 0, "checkpoint failed: {}", stderr(&o));
    let o = airlock(&["exec", &name, "--", "/bin/sh", "-c", "echo three >> a.txt; echo z > sub/new/z.txt"]);
    assert_eq!(code(&o), 0, "exec after the checkpoint failed: {}", stderr(&o));
    let o = airlock(&["rollback", &name, "one"]);
    assert_eq!(code(&o), 0, "rollback failed: {}", stderr(&o));
    let o = airlock(&["exec", &name, "--", "cat", "a.txt"]);
    assert_eq!(stdout(&o), "one\ntwo\n", "stderr: {}", stderr(&o));
    assert_eq!(code(&airlock(&["stop", &name])), 0);
    let o = airlock(&["commit", &name]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(owners(ws.path()), root_tree_after_edits());
}

/// What an agent leaves in a workspace beside its real change: a venv, node_modules, bytecode, a log under a
/// `.gitignore` it wrote, a scratch file that `.git/info/exclude` names, and a hostile name.
const FLOOD: &str = "printf 'line one\\nline 2\\n' > a.txt; \
                     mkdir -p venv/lib && echo x > venv/lib/site.py; \
                     mkdir -p node_modules/left-pad && echo y > node_modules/left-pad/index.js; \
                     mkdir pkg/__pycache__ && echo c > pkg/__pycache__/m.pyc; echo c > pkg/mod.pyc; \
                     echo keep > pkg/keep.pyc; echo '*.log' > sub/.gitignore; echo l > sub/x.log; \
                     echo t > scratch.tmp; echo h > \"$(printf 'evil\\nD  a.pyc')\"";

/// A workspace whose host has a committed `.gitignore` (with a negation) and a `.git/info/exclude`.
fn ignoring_workspace(tag: &str) -> TempDir {
    let ws = workspace(tag);
    fs::write(ws.path().join(".gitignore"), "venv/\n__pycache__/\n*.pyc\n!keep.pyc\n").unwrap();
    fs::create_dir_all(ws.path().join(".git/info")).unwrap();
    fs::write(ws.path().join(".git/info/exclude"), "*.tmp\n").unwrap();
    fs::create_dir(ws.path().join("pkg")).unwrap();
    fs::write(ws.path().join("pkg/mod.py"), "pass\n").unwrap();
    ws.chown_to_test_user();
    ws
}

#[test]
fn diff_and_commit_leave_out_excluded_and_gitignored_paths() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = ignoring_workspace("diff-exclude");
    let name = unique_name("exclude");
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", FLOOD]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let everything = stdout(&common::airlock(&["diff", &name]));
    assert!(everything.contains("A  node_modules/\n") && everything.contains("A  venv/lib/site.py\n"), "{everything}");

    let o = common::airlock(&["diff", &name, "--exclude", "node_modules/", "--gitignore"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "M  a.txt\nA  pkg/keep.pyc\nA  sub/.gitignore\n3 changes: 2 added, 1 modified\n\
         12 paths excluded (.gitignore, node_modules/, .git/info/exclude, sub/.gitignore)\n"
    );
    // --json says so too; the patterns alone (no --gitignore), with a negation of their own.
    let o = common::airlock(&["diff", &name, "--json", "--exclude", "*.pyc", "--exclude=!keep.pyc"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let paths: Vec<&str> = doc["changes"].as_array().unwrap().iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"pkg/keep.pyc") && paths.contains(&"venv/lib/site.py"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.ends_with("mod.pyc") || p.ends_with("m.pyc") || p.contains('\n')), "{paths:?}");
    assert_eq!(doc["excluded"], serde_json::json!({"count": 3, "sources": ["*.pyc"]}));
    assert!(serde_json::from_str::<serde_json::Value>(&everything).is_err()); // (text, not JSON, without --json)
    let plain: serde_json::Value = serde_json::from_str(&stdout(&common::airlock(&["diff", &name, "--json"]))).unwrap();
    assert!(plain.get("excluded").is_none());

    // A patch stays a patch: the summary goes to stderr.
    let o = common::airlock(&["diff", &name, "--patch", "--gitignore", "--exclude", "node_modules/"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(
        stdout(&o).starts_with("diff --git a/a.txt b/a.txt\n") && !stdout(&o).contains("excluded"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("node_modules") && !stdout(&o).contains("venv"), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "airlock: 12 paths excluded (.gitignore, node_modules/, .git/info/exclude, sub/.gitignore)\n"
    );
    // A bad pattern is a one-line usage error.
    let o = common::airlock(&["diff", &name, "--exclude", "a\nb"]);
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).starts_with("airlock: ") && stderr(&o).trim_end().lines().count() == 1, "{}", stderr(&o));

    // commit --gitignore: only the real changes reach the host; the excluded ones stay in the layer.
    let o = common::airlock(&["commit", &name, "--gitignore", "--exclude", "node_modules/"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert!(stdout(&o).starts_with("committed 3 changes to "), "{}", stdout(&o));
    assert!(stdout(&o).contains("\n12 paths excluded ("), "{}", stdout(&o));
    assert_eq!(fs::read_to_string(ws.path().join("a.txt")).unwrap(), "line one\nline 2\n");
    assert_eq!(fs::read_to_string(ws.path().join("pkg/keep.pyc")).unwrap(), "keep\n");
    assert_eq!(fs::read_to_string(ws.path().join("sub/.gitignore")).unwrap(), "*.log\n");
    for left in ["venv", "node_modules", "pkg/__pycache__", "pkg/mod.pyc", "sub/x.log", "scratch.tmp", "evil\nD  a.pyc"]
    {
        assert!(!ws.path().join(left).exists(), "{left} was committed");
    }
    let left = stdout(&common::airlock(&["diff", &name]));
    assert!(left.ends_with("12 changes: 12 added\n"), "{left}");
    assert!(
        left.contains("A  node_modules/left-pad/index.js\n") && left.contains("A  \"evil\\nD  a.pyc\"\n"),
        "{left}"
    );
    let o = common::airlock(&["discard", &name]);
    assert_eq!(stdout(&o), "discarded 12 changes\n", "stderr: {}", stderr(&o));
    assert_eq!(stdout(&common::airlock(&["diff", &name])), "no changes\n");
    assert!(!ws.path().join("venv").exists());
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}

#[test]
fn commit_with_excludes_keeps_a_removed_directory_that_holds_excluded_paths() {
    require_sandbox!();
    let _user = require_test_user!();
    let ws = workspace("exclude-rmdir");
    fs::create_dir(ws.path().join("build")).unwrap();
    fs::write(ws.path().join("build/a.pyc"), "bytecode\n").unwrap();
    fs::write(ws.path().join("build/b.o"), "object\n").unwrap();
    ws.chown_to_test_user();
    let name = unique_name("exclude-rmdir");
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--", "/bin/sh", "-c", "rm -rf build"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let o = common::airlock(&["commit", &name, "--exclude", "*.pyc"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o).lines().nth(1), Some("2 paths excluded (*.pyc), left in the layer"), "{}", stdout(&o));
    // b.o went; build/ stays, with the excluded a.pyc in it; the removal of both is still pending.
    assert!(!ws.path().join("build/b.o").exists());
    assert_eq!(fs::read_to_string(ws.path().join("build/a.pyc")).unwrap(), "bytecode\n");
    assert_eq!(stdout(&common::airlock(&["diff", &name])), "D  build/\nD  build/a.pyc\n2 changes: 2 deleted\n");
    assert_eq!(code(&common::airlock(&["rm", &name])), 0);
}
