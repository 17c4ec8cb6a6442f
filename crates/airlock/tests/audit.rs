//! The audit log, end to end with the real binary: exec records from seccomp user notification, denial records,
//! the hash chain and `logs --verify`, the log's invisibility from inside, learn mode, hostile input (bursts of
//! execs, megabytes of argv, binary garbage, processes dying mid-exec), `airlock exec` appending to a long-lived
//! sandbox's log, as root and rootless.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{code, ok, stderr, stdout, StopOnDrop, TempDir};
use serde_json::Value;

fn airlock_as(rootless: bool) -> fn(&[&str]) -> Output {
    if rootless {
        common::airlock_as_user
    } else {
        common::airlock
    }
}

fn unique_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

fn state_log(rootless: bool, name: &str) -> PathBuf {
    let uid = if rootless { common::test_user_uid() } else { 0 };
    PathBuf::from(common::test_state_dir(uid)).join("sandboxes").join(name).join("audit.jsonl")
}

/// Every line of a log, parsed; panics on a line that is not a JSON object.
fn records(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON line ({e}): {l}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

fn execs(records: &[Value]) -> Vec<Vec<String>> {
    records
        .iter()
        .filter(|r| r["kind"] == "exec")
        .map(|r| r["process"]["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect())
        .collect()
}

/// A directory the (possibly rootless) airlock can write its `--audit` copy into.
fn audit_dir(rootless: bool) -> TempDir {
    let dir = TempDir::new("audit");
    if rootless {
        dir.chown_to_test_user();
    }
    dir
}

/// The kernel's exec tracepoints need root (`CAP_BPF`, `CAP_PERFMON`): tests of that source skip rootless.
macro_rules! require_sandbox_and_the_kernel_source {
    () => {
        require_sandbox!();
        if !common::is_root() {
            skip_or_fail!("the kernel's exec tracepoints need root (CAP_BPF, CAP_PERFMON)");
        }
    };
}

/// The tests of the pinned (shared) program need a bpffs at /sys/fs/bpf for their pin directories.
macro_rules! require_bpffs {
    () => {
        if !bpffs_mounted() {
            skip_or_fail!("no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)");
        }
    };
}

/// `airlock ARGS...` as root with `AIRLOCK_EXEC_RECORDS=source` (where the run's exec records come from),
/// stdin closed.
fn exec_source_command(source: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(common::airlock_path());
    command
        .args(args)
        .env("AIRLOCK_STATE_DIR", common::test_state_dir(0))
        .env("AIRLOCK_EXEC_RECORDS", source)
        .stdin(std::process::Stdio::null());
    command
}

/// [`exec_source_command`] with the kernel source, its program pinned in `pin_dir` (`AIRLOCK_BPF_PIN_DIR`; empty:
/// the run loads its own).
fn kernel_source_command(pin_dir: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> std::process::Command {
    let mut command = exec_source_command("kernel", args);
    command.env("AIRLOCK_BPF_PIN_DIR", pin_dir);
    command
}

fn airlock_with_exec_source(source: &str, args: &[&str]) -> Output {
    exec_source_command(source, args).output().unwrap()
}

fn exec_records_for_each_command(rootless: bool) {
    exec_records_for_each_command_by(rootless, &airlock_as(rootless));
}

fn exec_records_for_each_command_by(rootless: bool, airlock: &dyn Fn(&[&str]) -> Output) {
    let dir = audit_dir(rootless);
    let file = dir.path().join("audit.jsonl");
    let python = common::python3().is_some();
    let script = if python {
        "ls / >/dev/null; cat /etc/hostname; python3 -c 'import os'"
    } else {
        "ls / >/dev/null; cat /etc/hostname"
    };
    let o = airlock(&["run", "--rm", "--audit", file.to_str().unwrap(), "--", "sh", "-c", script]);
    ok(&o);
    let all = records(&file);
    let argvs = execs(&all);
    assert!(argvs.iter().any(|a| a == &["sh", "-c", script]), "{argvs:?}");
    assert!(argvs.iter().any(|a| a == &["ls", "/"]), "{argvs:?}");
    assert!(argvs.iter().any(|a| a == &["cat", "/etc/hostname"]), "{argvs:?}");
    if python {
        assert!(argvs.iter().any(|a| a == &["python3", "-c", "import os"]), "{argvs:?}");
    }
    // pid, parent, path and cwd are there; the ls is the shell's child.
    let ls = all.iter().find(|r| r["kind"] == "exec" && r["process"]["argv"][0] == "ls").unwrap();
    assert!(ls["process"]["pid"].as_i64().unwrap() > 1, "{ls}");
    assert!(ls["process"]["parent_process"]["pid"].as_i64().unwrap() >= 1, "{ls}");
    assert!(ls["process"]["file"]["path"].as_str().unwrap().ends_with("/ls"), "{ls}");
    assert_eq!(ls["process"]["working_directory"], "/");
    let kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"exited"), "{kinds:?}");
    assert!(audit::verify(&file).unwrap().ok());
}

#[test]
fn exec_records_name_each_command_with_its_argv() {
    require_sandbox!();
    exec_records_for_each_command(false);
}

#[test]
fn exec_records_name_each_command_with_its_argv_rootless() {
    require_sandbox!();
    require_test_user!();
    exec_records_for_each_command(true);
}

fn denied_syscall_is_recorded(rootless: bool) {
    denied_syscall_is_recorded_by(rootless, &airlock_as(rootless));
}

fn denied_syscall_is_recorded_by(rootless: bool, airlock: &dyn Fn(&[&str]) -> Output) {
    let dir = audit_dir(rootless);
    let file = dir.path().join("audit.jsonl");
    // unshare(2) and mount(2) are on the deny-list: the command sees EPERM exactly as without auditing. A thread
    // start calls clone3, which the filter answers ENOSYS so that glibc falls back to clone: an expected
    // fallback, which must not be recorded as a denial (it was most of a build's log).
    let threads = match common::python3() {
        Some(python) => {
            format!("{python} -c 'import threading; t = threading.Thread(target=int); t.start(); t.join()'")
        }
        None => "true".to_string(),
    };
    let script =
        format!("unshare -U true 2>/dev/null; echo status=$?; mount -t tmpfs none /mnt 2>/dev/null; {threads}");
    let script = script.as_str();
    let plain = airlock(&["run", "--rm", "--", "sh", "-c", script]);
    let audited = airlock(&["run", "--rm", "--audit", file.to_str().unwrap(), "--", "sh", "-c", script]);
    assert_eq!(stdout(&plain), stdout(&audited), "behaviour must not change when audited");
    assert_eq!(ok(&audited).trim(), "status=1");
    let all = records(&file);
    let denial = all.iter().find(|r| r["kind"] == "denied").unwrap_or_else(|| panic!("no denial in {all:?}"));
    assert_eq!(denial["syscall"], "unshare");
    assert_eq!(denial["errno"], 1);
    assert_eq!(denial["errno_name"], "EPERM");
    assert!(denial["process"]["pid"].as_i64().unwrap() > 1);
    let denied: Vec<&str> =
        all.iter().filter(|r| r["kind"] == "denied").map(|r| r["syscall"].as_str().unwrap()).collect();
    assert!(denied.contains(&"mount"), "a real denial must be recorded: {denied:?}");
    assert!(!denied.contains(&"clone3"), "clone3's expected ENOSYS is not a denial: {denied:?}");
}

#[test]
fn a_denied_syscall_yields_a_denial_record_with_its_errno() {
    require_sandbox!();
    denied_syscall_is_recorded(false);
}

#[test]
fn a_denied_syscall_yields_a_denial_record_with_its_errno_rootless() {
    require_sandbox!();
    require_test_user!();
    denied_syscall_is_recorded(true);
}

#[test]
fn logs_verify_catches_an_edited_a_deleted_and_a_reordered_line() {
    require_sandbox!();
    let name = unique_name("verify");
    let dir = TempDir::new("verify");
    let copy = dir.path().join("copy.jsonl");
    ok(&common::run(&["--name", &name, "--audit", copy.to_str().unwrap(), "--", "sh", "-c", "/bin/true; /bin/true"]));
    // The --audit copy holds the same lines.
    assert_eq!(fs::read_to_string(&copy).unwrap(), fs::read_to_string(state_log(false, &name)).unwrap());
    let path = state_log(false, &name);
    let o = common::airlock(&["logs", &name, "--verify"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let original = fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 4, "{original}");
    let check = |changed: Vec<String>, line: usize| {
        fs::write(&path, changed.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        let o = common::airlock(&["logs", &name, "--verify"]);
        assert_eq!(code(&o), 1, "tampering not caught: {}", stderr(&o));
        assert!(stderr(&o).contains(&format!("line {line}:")), "wrong line reported: {}", stderr(&o));
    };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let mut edited = owned.clone();
    edited[2] = edited[2].replacen("\"pid\":", "\"pid\":1", 1);
    assert_ne!(edited[2], owned[2]);
    check(edited, 3);
    let mut deleted = owned.clone();
    deleted.remove(1);
    check(deleted, 2);
    let mut reordered = owned.clone();
    reordered.swap(1, 2);
    check(reordered, 2);
    fs::write(&path, &original).unwrap();
    assert_eq!(code(&common::airlock(&["logs", &name, "--verify"])), 0);
    // The human timeline and the raw lines.
    let human = ok(&common::airlock(&["logs", &name]));
    assert!(human.contains(" created: sh -c"), "{human}");
    assert!(human.contains(" exited: exited status 0"), "{human}");
    let raw = ok(&common::airlock(&["logs", &name, "--json"]));
    assert_eq!(raw, original);
    ok(&common::airlock(&["rm", &name]));
}

#[test]
fn the_log_is_neither_visible_nor_writable_inside() {
    require_sandbox!();
    let name = unique_name("hidden");
    let path = state_log(false, &name);
    let target = path.to_str().unwrap().to_string();
    let dir = path.parent().unwrap().to_str().unwrap().to_string();
    // The log exists while the command runs (its `created` record is written first); the command tries to reach
    // it every way a path can be reached from inside.
    let script = format!(
        "test -e '{target}' && echo visible; ls '{dir}' 2>/dev/null && echo listable; \
         echo forged >> '{target}' 2>/dev/null && echo writable; \
         find / -xdev -name audit.jsonl 2>/dev/null | grep -q . && echo found; echo done"
    );
    let o = common::run(&["--name", &name, "--", "sh", "-c", &script]);
    assert_eq!(ok(&o).trim(), "done", "the log was reachable: {}", stdout(&o));
    assert!(!fs::read_to_string(&path).unwrap().lines().any(|l| l.starts_with("forged")));
    assert_eq!(code(&common::airlock(&["logs", &name, "--verify"])), 0);
    ok(&common::airlock(&["rm", &name]));
}

/// The snippet learn mode printed (without its `airlock:` header line), written to `file` and checked with
/// `airlock profile validate`; returns it.
fn validated_snippet(o: &std::process::Output, file: &std::path::Path) -> String {
    let err = stderr(o);
    let snippet: String =
        err.lines().skip_while(|l| !l.starts_with("airlock: learn mode")).skip(1).map(|l| format!("{l}\n")).collect();
    fs::write(file, &snippet).unwrap();
    let v = common::airlock(&["profile", "validate", file.to_str().unwrap()]);
    assert_eq!(code(&v), 0, "snippet rejected: {} {}\n{snippet}", stdout(&v), stderr(&v));
    snippet
}

#[test]
fn learn_mode_suggests_the_narrowest_safe_change_and_the_profile_validator_accepts_it() {
    require_sandbox!();
    let dir = TempDir::new("learn");
    let out = dir.path().join("suggested.toml");
    // Several refused writes: host system directories (/etc, /usr, /root), credentials (~/.ssh), a file at the
    // top of the read-only root, and directories that need not persist (/opt/x/y, refused at /opt; /srv/app).
    let script = "echo x > /etc/airlock-learn-test; touch /usr/local/airlock-learn; mkdir -p /opt/x/y; \
                  touch /root/.ssh/k; touch /topfile; touch /srv/app/f; unshare -U true; true";
    let o = common::run(&["--rm", "--learn", "--", "sh", "-c", script]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("learn mode"), "{err}");
    assert!(err.contains("\"/etc/airlock-learn-test\""), "{err}");
    assert!(err.contains("unshare"), "{err}");
    let snippet = validated_snippet(&o, &out);
    let profile = policy::profile::Profile::parse(&snippet, "snippet").unwrap();
    assert!(profile.filesystem.bind.is_empty(), "no host directory is made writable:\n{snippet}");
    assert_eq!(profile.filesystem.tmpfs, ["/opt", "/srv/app"], "{snippet}");
    for refused in ["/etc/airlock-learn-test is under /etc", "/usr/local/airlock-learn is under /usr", "/root/.ssh/k"] {
        assert!(snippet.contains(&format!("# not suggested: {refused}")), "{refused}:\n{snippet}");
    }
    // Applied, the suggestion lets the command do what needed no host directory.
    let o = common::run(&[
        "--rm",
        "--profile",
        out.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "mkdir -p /opt/x/y; touch /srv/app/f",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    // A read-only share and a read-only workspace: the share made writable from the directory that exists, the
    // workspace as cow (its changes reviewed by `airlock commit`).
    let data = TempDir::new("learn-data");
    fs::create_dir(data.path().join("sub")).unwrap();
    let ws = TempDir::new("learn-ws");
    let ro = format!("{}:/data", data.str());
    let script = "touch /data/sub/new; touch out.txt; true";
    let o = common::run(&[
        "--rm",
        "--learn",
        "--ro-bind",
        &ro,
        "--workspace",
        ws.str(),
        "--workspace-mode",
        "ro",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let snippet = validated_snippet(&o, &out);
    let profile = policy::profile::Profile::parse(&snippet, "snippet").unwrap();
    assert_eq!(profile.filesystem.bind, [format!("{}/sub:/data/sub", data.str())], "{snippet}");
    assert_eq!(profile.filesystem.workspace_mode.as_deref(), Some("cow"), "{snippet}");

    // Writes to writable places (/tmp) are not suggested.
    let o = common::run(&["--rm", "--learn", "--", "sh", "-c", "echo x > /tmp/fine"]);
    assert!(stderr(&o).contains("nothing was refused"), "{}", stderr(&o));
}

#[test]
fn bursts_of_execs_huge_and_garbage_argv_stay_valid_bounded_json() {
    require_sandbox!();
    let python = match common::python3() {
        Some(p) => p,
        None => skip_or_fail!("python3 is needed for the garbage argv"),
    };
    let dir = TempDir::new("hostile");
    let file = dir.path().join("audit.jsonl");
    // 2,000 execs as fast as a shell can, then 10 arguments of 100 KB, then bytes that are not UTF-8 and
    // terminal escapes.
    let script = format!(
        "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done; \
         {python} -c 'import os; os.execv(\"/bin/true\", [\"true\"] + [\"x\" * 100000] * 10)' ; \
         {python} -c 'import os; os.execv(b\"/bin/true\", [b\"true\", b\"\\xff\\xfe\\x1b[31mred\\x07\", b\"\\x80\" * 70000])'"
    );
    let started = Instant::now();
    let o = common::run(&["--rm", "--audit", file.to_str().unwrap(), "--", "sh", "-c", &script]);
    ok(&o);
    eprintln!("2,000 audited execs in {:?}", started.elapsed());
    let text = fs::read_to_string(&file).unwrap();
    for line in text.lines() {
        assert!(line.len() <= audit::event::MAX_RECORD_BYTES, "record of {} bytes", line.len());
    }
    let all = records(&file);
    let argvs = execs(&all);
    assert!(argvs.iter().filter(|a| a.first().is_some_and(|x| x == "/bin/true")).count() >= 2000);
    let huge = all
        .iter()
        .find(|r| r["process"]["argv"][1].as_str().is_some_and(|a| a.starts_with("xxxxxxxx")))
        .unwrap_or_else(|| panic!("no record of the huge argv"));
    assert!(huge["process"]["argv_omitted"].as_u64().unwrap() > 0, "{huge}");
    assert!(huge["markers"].as_array().unwrap().contains(&Value::from("truncated")), "{huge}");
    let garbage = all
        .iter()
        .find(|r| {
            r["process"]["argv"]
                .as_array()
                .is_some_and(|a| a.get(1).and_then(Value::as_str).is_some_and(|s| s.contains("red")))
        })
        .unwrap();
    assert!(garbage["markers"].as_array().unwrap().contains(&Value::from("not_utf8")), "{garbage}");
    assert!(audit::verify(&file).unwrap().ok());
    // The human timeline escapes the terminal escape.
    let name = unique_name("garbage");
    let copy = dir.path().join("escape.jsonl");
    let escape = "import os; os.execv('/bin/true', ['true', '\\x1b[2J'])";
    ok(&common::run(&["--name", &name, "--audit", copy.to_str().unwrap(), "--", python, "-c", escape]));
    let human = ok(&common::airlock(&["logs", &name]));
    assert!(!human.contains('\x1b'), "raw escape in {human:?}");
    assert!(human.contains("\\u{1b}[2J"), "{human}");
    ok(&common::airlock(&["rm", &name]));
}

#[test]
fn a_process_that_dies_before_its_exec_is_recorded_hangs_nothing() {
    require_sandbox!();
    let python = match common::python3() {
        Some(p) => p,
        None => skip_or_fail!("python3 is needed"),
    };
    let dir = TempDir::new("dying");
    let file = dir.path().join("audit.jsonl");
    // A thread calls execve while the main thread exits the whole process: the exec notification's process is
    // gone before (or while) the supervisor reads it. 200 times.
    let racer = "import os, threading\n\
                 threading.Thread(target=lambda: os.execv('/bin/true', ['true', 'racing'])).start()\n\
                 os._exit(0)\n";
    let script = format!("i=0; while [ $i -lt 200 ]; do {python} -c \"{racer}\"; i=$((i+1)); done; echo finished");
    let started = Instant::now();
    let o = common::run(&["--rm", "--timeout", "120s", "--audit", file.to_str().unwrap(), "--", "sh", "-c", &script]);
    assert_eq!(ok(&o).trim(), "finished");
    assert!(started.elapsed() < Duration::from_secs(120));
    let all = records(&file);
    assert_eq!(all.last().unwrap()["kind"], "exited");
    assert!(audit::verify(&file).unwrap().ok());
    // Every exec record, the racing ones included, has its pid, parent and cwd, or says the process was gone.
    for r in all.iter().filter(|r| r["kind"] == "exec") {
        let gone = r["markers"].as_array().is_some_and(|m| m.contains(&Value::from("process_gone")));
        let p = &r["process"];
        let complete = p["pid"].as_i64().is_some_and(|pid| pid > 1)
            && p["parent_process"]["pid"].as_i64().is_some_and(|pid| pid >= 1)
            && p["working_directory"].as_str().is_some_and(|cwd| !cwd.is_empty());
        assert!(gone || complete, "{r}");
    }
}

fn exec_into_a_created_sandbox_is_recorded(rootless: bool) {
    let airlock = airlock_as(rootless);
    let name = unique_name("created");
    let dir = audit_dir(rootless);
    let copy = dir.path().join("copy.jsonl");
    let _cleanup = StopOnDrop::new(&name, airlock);
    ok(&airlock(&["create", "--audit", copy.to_str().unwrap(), &name]));
    // Several `airlock exec` at once, each appending to the same log with its own listener.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let name = name.clone();
            std::thread::spawn(move || {
                airlock(&["exec", &name, "--", "sh", "-c", &format!("ls / >/dev/null; echo {i}")])
            })
        })
        .collect();
    for h in handles {
        ok(&h.join().unwrap());
    }
    ok(&airlock(&["stop", &name]));
    let o = airlock(&["logs", &name, "--verify"]);
    assert_eq!(code(&o), 0, "{} {}", stdout(&o), stderr(&o));
    let all = records(&state_log(rootless, &name));
    let argvs = execs(&all);
    assert_eq!(argvs.iter().filter(|a| a == &&["ls", "/"]).count(), 4, "{argvs:?}");
    assert_eq!(all.iter().filter(|r| r["kind"] == "attached").count(), 4);
    assert_eq!(all.last().unwrap()["kind"], "exited");
    // The --audit copy got every line too, from the supervisor and from each exec.
    assert_eq!(fs::read_to_string(&copy).unwrap(), fs::read_to_string(state_log(rootless, &name)).unwrap());
    ok(&airlock(&["rm", &name]));
}

#[test]
fn execs_into_a_created_sandbox_append_to_its_log() {
    require_sandbox!();
    exec_into_a_created_sandbox_is_recorded(false);
}

#[test]
fn execs_into_a_created_sandbox_append_to_its_log_rootless() {
    require_sandbox!();
    require_test_user!();
    exec_into_a_created_sandbox_is_recorded(true);
}

#[test]
fn timeouts_and_workspace_changes_are_recorded_at_exit() {
    require_sandbox!();
    let name = unique_name("timeout");
    let ws = TempDir::new("audit-ws");
    fs::write(ws.path().join("kept.txt"), "host\n").unwrap();
    ws.chown_to_test_user();
    let script = "echo new > created.txt; echo changed > kept.txt; exec sleep 30";
    let o = common::run(&["--name", &name, "--workspace", ws.str(), "--timeout", "1s", "--", "sh", "-c", script]);
    assert_eq!(code(&o), 124, "{}", stderr(&o));
    let all = records(&state_log(false, &name));
    let timeout = all.iter().find(|r| r["kind"] == "resource").unwrap_or_else(|| panic!("{all:?}"));
    assert_eq!(timeout["resource"], "timeout");
    let files = all.iter().find(|r| r["kind"] == "files").unwrap_or_else(|| panic!("{all:?}"));
    assert_eq!(files["trigger"], "exit");
    let changed: Vec<(String, String)> = files["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap().to_string(), f["kind"].as_str().unwrap().to_string()))
        .collect();
    assert!(changed.contains(&("created.txt".into(), "added".into())), "{changed:?}");
    assert!(changed.contains(&("kept.txt".into(), "modified".into())), "{changed:?}");
    let exited = all.last().unwrap();
    assert_eq!(exited["kind"], "exited");
    assert_eq!(exited["reason"], "timeout");
    assert_eq!(exited["status"], 124);
    // A checkpoint adds the layer's summary under its label.
    ok(&common::airlock(&["checkpoint", &name, "before"]));
    let all = records(&state_log(false, &name));
    let at_checkpoint = all.last().unwrap();
    assert_eq!(at_checkpoint["trigger"], "checkpoint");
    assert_eq!(at_checkpoint["label"], "before");
    assert_eq!(at_checkpoint["total"], 2, "{at_checkpoint}");
    let frozen: Vec<&str> =
        at_checkpoint["files"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert!(frozen.contains(&"added") && frozen.contains(&"modified"), "{at_checkpoint}");
    // Rollbacks, commits and discards change the layer from outside: each is a `workspace` record.
    ok(&common::airlock(&["rollback", &name, "before"]));
    ok(&common::airlock(&["commit", &name, "--force"]));
    ok(&common::airlock(&["discard", &name]));
    let all = records(&state_log(false, &name));
    let workspace: Vec<&Value> = all.iter().filter(|r| r["kind"] == "workspace").collect();
    let actions: Vec<&str> = workspace.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["rollback", "commit", "discard"], "{workspace:#?}");
    assert_eq!(workspace[0]["label"], "before");
    assert_eq!(workspace[0]["running"], false);
    assert_eq!(workspace[1]["total"], 2, "{}", workspace[1]);
    let committed: Vec<&str> = workspace[1]["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(committed.contains(&"created.txt") && committed.contains(&"kept.txt"), "{committed:?}");
    assert_eq!(workspace[2]["total"], 0);
    let timeline = ok(&common::airlock(&["logs", &name]));
    assert!(timeline.contains("workspace rolled back to checkpoint before"), "{timeline}");
    assert!(timeline.contains("workspace commit: 2 change(s)"), "{timeline}");
    assert_eq!(code(&common::airlock(&["logs", &name, "--verify"])), 0);
    ok(&common::airlock(&["rm", &name]));
}

/// `created` says what was made (rootfs, workspace, network as JSON), and for a long-lived sandbox no command
/// (its placeholder never runs); `started`'s policy summary is JSON all through, the network mode included.
#[test]
fn lifecycle_records_describe_the_sandbox_in_json() {
    require_sandbox!();
    let name = unique_name("created");
    let ws = TempDir::new("audit-created");
    let _cleanup = StopOnDrop::new(&name, common::airlock);
    ok(&common::airlock(&["create", "--workspace", ws.str(), "--memory", "256M", &name]));
    ok(&common::airlock(&["stop", &name]));
    let all = records(&state_log(false, &name));
    let _ = common::airlock(&["rm", &name]);
    let created = all.iter().find(|r| r["kind"] == "created").unwrap_or_else(|| panic!("{all:?}"));
    assert!(created.get("command").is_none(), "no placeholder command: {created}");
    assert_eq!(created["long_lived"], true);
    assert_eq!(created["rootfs"]["type"], "host", "{created}");
    assert_eq!(created["network"], serde_json::json!({ "mode": "none" }), "{created}");
    assert_eq!(created["workspace"].as_str(), Some(ws.str()), "{created}");
    let started = all.iter().find(|r| r["kind"] == "started").unwrap_or_else(|| panic!("{all:?}"));
    let policy = &started["policy"];
    assert_eq!(policy["network"], serde_json::json!({ "mode": "none" }), "{started}");
    assert_eq!(policy["limits"]["memory_bytes"], 256 * 1024 * 1024, "{started}");
    assert_eq!(policy["workspace"]["mode"], "cow", "{started}");
    // The refusals left out of the log are named once.
    let unrecorded = serde_json::json!([{ "syscall": "clone3", "errno": "ENOSYS" }]);
    assert_eq!(policy["seccomp_unrecorded"], unrecorded, "{started}");
    fn no_debug_text(v: &Value) -> bool {
        match v {
            Value::String(s) => !s.contains('(') && !s.contains('{'),
            Value::Array(items) => items.iter().all(no_debug_text),
            Value::Object(map) => map.values().all(no_debug_text),
            _ => true,
        }
    }
    assert!(no_debug_text(policy), "Rust debug text in the policy summary: {policy}");

    // A run's `created` keeps its command, and --net allow is a list of rules.
    let dir = audit_dir(false);
    let file = dir.path().join("audit.jsonl");
    let o = common::run(&["--rm", "--audit", file.to_str().unwrap(), "--allow", "example.test:8443", "--", "true"]);
    // As root the gateway always runs (the network tests need it); rootless it may lack /dev/net/tun.
    if code(&o) == 0 || common::is_root() {
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let all = records(&file);
        let created = all.iter().find(|r| r["kind"] == "created").unwrap_or_else(|| panic!("{all:?}"));
        assert_eq!(created["command"], serde_json::json!(["true"]));
        let allow = serde_json::json!({ "mode": "allow", "allow": [{ "domain": "example.test", "port": 8443 }] });
        assert_eq!(created["network"], allow, "{created}");
    } else {
        println!("note: --net allow does not run here ({}); its record is not checked", stderr(&o).trim());
    }
}

#[test]
fn logs_follow_prints_new_records_and_ends_with_the_sandbox() {
    require_sandbox!();
    let name = unique_name("follow");
    let _cleanup = StopOnDrop::new(&name, common::airlock);
    ok(&common::airlock(&["create", &name]));
    let mut follower = std::process::Command::new(common::airlock_path())
        .args(["logs", &name, "-f"])
        .env("AIRLOCK_STATE_DIR", common::test_state_dir(0))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ok(&common::airlock(&["exec", &name, "--", "sh", "-c", "cat /etc/hostname >/dev/null"]));
    std::thread::sleep(Duration::from_millis(300));
    ok(&common::airlock(&["stop", &name]));
    let started = Instant::now();
    loop {
        if follower.try_wait().unwrap().is_some() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "logs -f did not end with the sandbox");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = follower.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("exec /usr/bin/cat /etc/hostname"), "{text}");
    assert!(text.contains(" exited: "), "{text}");
    ok(&common::airlock(&["rm", &name]));
}

#[test]
fn a_profile_can_turn_exec_capture_on_for_named_sandboxes() {
    require_sandbox!();
    let dir = TempDir::new("audit-profile");
    let profile = dir.path().join("audited.toml");
    fs::write(&profile, "[audit]\nexec = true\n").unwrap();
    let name = unique_name("profile");
    ok(&common::run(&["--name", &name, "--profile", profile.to_str().unwrap(), "--", "sh", "-c", "ls / >/dev/null"]));
    let argvs = execs(&records(&state_log(false, &name)));
    assert!(argvs.iter().any(|a| a == &["ls", "/"]), "{argvs:?}");
    // Without it a named run records its lifecycle but no execs.
    let plain = unique_name("plain");
    ok(&common::run(&["--name", &plain, "--", "sh", "-c", "ls / >/dev/null"]));
    assert!(execs(&records(&state_log(false, &plain))).is_empty());
    ok(&common::airlock(&["rm", &name, &plain]));
}

/// Short-lived programs (gone a moment after their exec) still get their whole record: pid, parent, cwd read
/// before the exec is answered, argv[0] the same string as the path when the caller passes it at the path's own
/// address (a shell's `/bin/true`), and another string when it is elsewhere (`execv` with a renamed argv[0]).
#[test]
fn execs_of_programs_that_exit_at_once_keep_pid_parent_cwd_and_argv() {
    require_sandbox!();
    let python = match common::python3() {
        Some(p) => p,
        None => skip_or_fail!("python3 is needed for a renamed argv[0]"),
    };
    let dir = TempDir::new("quick-execs");
    let file = dir.path().join("audit.jsonl");
    let renamed = "import os; os.execv('/bin/true', ['renamed-true', 'arg'])";
    let script =
        format!("cd /tmp; i=0; while [ $i -lt 50 ]; do /bin/true; i=$((i+1)); done; {python} -c \"{renamed}\"");
    ok(&common::run(&["--rm", "--audit", file.to_str().unwrap(), "--", "sh", "-c", &script]));
    let all = records(&file);
    let execs: Vec<&Value> = all.iter().filter(|r| r["kind"] == "exec").collect();
    let shell_pid = execs.iter().find(|r| r["process"]["argv"][0] == "sh").unwrap()["process"]["pid"].as_i64().unwrap();
    let trues: Vec<&&Value> = execs.iter().filter(|r| r["process"]["argv"][0] == "/bin/true").collect();
    assert_eq!(trues.len(), 50, "{execs:?}");
    for r in &trues {
        let p = &r["process"];
        assert_eq!(p["argv"], serde_json::json!(["/bin/true"]), "{r}");
        assert_eq!(p["file"]["path"], "/bin/true", "{r}");
        assert_eq!(p["working_directory"], "/tmp", "{r}");
        assert!(p["pid"].as_i64().unwrap() > shell_pid, "{r}");
        assert_eq!(p["parent_process"]["pid"].as_i64().unwrap(), shell_pid, "{r}");
        assert!(r.get("markers").is_none_or(|m| m.as_array().unwrap().is_empty()), "{r}");
    }
    let renamed = execs.iter().find(|r| r["process"]["argv"][0] == "renamed-true").unwrap();
    assert_eq!(renamed["process"]["argv"], serde_json::json!(["renamed-true", "arg"]), "{renamed}");
    assert_eq!(renamed["process"]["file"]["path"], "/bin/true", "{renamed}");
    assert_eq!(renamed["process"]["working_directory"], "/tmp", "{renamed}");
    assert!(audit::verify(&file).unwrap().ok());
}

/// As root the exec records come from the kernel's exec tracepoints (`AIRLOCK_EXEC_RECORDS` unset: `auto`);
/// `seccomp` still gives the same records, by notification.
#[test]
fn seccomp_notification_still_records_execs_and_denials_as_root() {
    require_sandbox!();
    if !common::is_root() {
        skip_or_fail!("the choice of source is root's (rootless runs always use seccomp notification)");
    }
    let seccomp = |args: &[&str]| airlock_with_exec_source("seccomp", args);
    exec_records_for_each_command_by(false, &seccomp);
    denied_syscall_is_recorded_by(false, &seccomp);
}

/// What only the kernel's tracepoints know: how an exec failed (the errno), the argv the program was started
/// with, the cwd walked in the kernel.
#[test]
fn the_kernel_source_records_what_ran_and_how_execs_failed() {
    require_sandbox_and_the_kernel_source!();
    require_bpffs!();
    // Both ways of having the program: a program of the run's own (AIRLOCK_BPF_PIN_DIR empty), and the shared one
    // pinned in a bpffs directory of this test's.
    let pins = PinDir::new("what-ran");
    for pin_dir in ["", pins.path()] {
        kernel_source_records_what_ran_and_how_execs_failed(pin_dir);
    }
    assert!(pins.pinned().is_some(), "the shared program was not pinned");
}

fn kernel_source_records_what_ran_and_how_execs_failed(pin_dir: &str) {
    let dir = audit_dir(false);
    let file = dir.path().join("audit.jsonl");
    let script = "cd /usr/share && /bin/true a 'b c' ''; ./nope x; \
                  printf '#!/bin/sh\\n' > /tmp/script; /tmp/script y; exit 3";
    let o =
        kernel_source_command(pin_dir, &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "sh", "-c", script])
            .output()
            .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let all = records(&file);
    let exec = |argv0: &str| {
        all.iter()
            .find(|r| r["kind"] == "exec" && r["process"]["argv"][0] == argv0)
            .unwrap_or_else(|| panic!("no exec of {argv0} in {all:?}"))
    };
    let shell = exec("sh");
    assert_eq!(shell["process"]["file"]["path"], "/usr/bin/sh", "{shell}");
    assert!(shell.get("errno").is_none(), "{shell}");
    let shell_pid = shell["process"]["pid"].as_i64().unwrap();
    let truth = exec("/bin/true");
    assert_eq!(truth["process"]["argv"], serde_json::json!(["/bin/true", "a", "b c", ""]), "{truth}");
    assert_eq!(truth["process"]["working_directory"], "/usr/share", "{truth}");
    assert_eq!(truth["process"]["parent_process"]["pid"].as_i64().unwrap(), shell_pid, "{truth}");
    assert!(truth["process"]["pid"].as_i64().unwrap() > shell_pid, "{truth}");
    assert!(truth.get("errno").is_none(), "{truth}");
    let missing = exec("./nope");
    assert_eq!((missing["errno"].as_i64(), missing["errno_name"].as_str()), (Some(2), Some("ENOENT")), "{missing}");
    assert!(missing["markers"].as_array().unwrap().contains(&Value::from("not_found")), "{missing}");
    assert_eq!(missing["process"]["working_directory"], "/usr/share", "{missing}");
    let refused = exec("/tmp/script");
    assert_eq!(refused["errno_name"], "EACCES", "{refused}");
    assert_eq!(refused["process"]["argv"], serde_json::json!(["/tmp/script", "y"]), "{refused}");
    assert!(audit::verify(&file).unwrap().ok());
}

/// The tracepoints see every exec on the host: each run records its own sandbox's, nothing of another sandbox
/// running at the same time, nothing of the host's. Three at once: two with the shared program (in two slots of
/// its), one with a program of its own.
#[test]
fn the_kernel_source_records_only_its_own_sandbox() {
    require_sandbox_and_the_kernel_source!();
    require_bpffs!();
    let dir = audit_dir(false);
    let pins = PinDir::new("own-sandbox");
    let run = |tag: &'static str, file: PathBuf, pin_dir: String| {
        std::thread::spawn(move || {
            let script = format!("i=0; while [ $i -lt 200 ]; do /bin/echo {tag} >/dev/null; i=$((i+1)); done");
            let o = kernel_source_command(
                pin_dir,
                &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "sh", "-c", &script],
            )
            .output()
            .unwrap();
            assert_eq!(code(&o), 0, "{}", stderr(&o));
        })
    };
    let (a, b, c) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"), dir.path().join("c.jsonl"));
    let shared = pins.path().to_string();
    let runs = [
        run("sandbox-a", a.clone(), shared.clone()),
        run("sandbox-b", b.clone(), shared),
        run("sandbox-c", c.clone(), String::new()),
    ];
    // The host's own execs meanwhile.
    for _ in 0..50 {
        std::process::Command::new("/bin/echo").arg("host").output().unwrap();
    }
    for r in runs {
        r.join().unwrap();
    }
    // The two shared runs started together, each finding nothing pinned: one pinned, the other used its pins.
    let entries: Vec<_> = fs::read_dir(pins.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(entries.len() == 1 && pins.pinned().is_some(), "one build's pins and nothing else: {entries:?}");
    for (file, own) in [(&a, "sandbox-a"), (&b, "sandbox-b"), (&c, "sandbox-c")] {
        let argvs = execs(&records(file));
        let echoes: Vec<&Vec<String>> = argvs.iter().filter(|a| a[0] == "/bin/echo").collect();
        assert_eq!(echoes.len(), 200, "{file:?}: {argvs:?}");
        assert!(echoes.iter().all(|a| a[1] == own), "{file:?} holds another's execs: {argvs:?}");
        assert!(audit::verify(file).unwrap().ok());
    }
}

#[test]
fn the_exec_source_is_checked_and_fails_closed() {
    require_sandbox!();
    let dir = audit_dir(false);
    let file = dir.path().join("audit.jsonl");
    let o = airlock_with_exec_source("bpf", &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "true"]);
    assert_eq!(code(&o), 125);
    assert_eq!(stderr(&o).trim(), "airlock: AIRLOCK_EXEC_RECORDS=\"bpf\": expected auto, seccomp or kernel");
    assert!(!file.exists(), "nothing may start on a bad value");
    // Rootless, the kernel's tracepoints cannot be had: asked for by name, the run fails (no command ran) and
    // says why; `auto` falls back to seccomp notification (the rootless tests above).
    require_test_user!();
    let rootless = audit_dir(true);
    let file = rootless.path().join("audit.jsonl");
    let state = PathBuf::from(common::test_state_dir(common::test_user_uid()));
    let o = common::airlock_as_user_in(
        &state,
        &["AIRLOCK_EXEC_RECORDS=kernel".to_string()],
        &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "echo", "ran"],
    );
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("kernel's exec tracepoints") && stderr(&o).contains("CAP_BPF"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("ran"), "the command ran: {}", stdout(&o));
    let execs = if file.exists() { execs(&records(&file)) } else { Vec::new() };
    assert!(execs.is_empty(), "{execs:?}");
}

/// A thread rewrites an argument while another thread of the same process execs with it: the kernel copies
/// whichever it finds, and the record from the kernel's tracepoints says exactly what the program was started
/// with (read from the new program's memory), every time. (By seccomp notification the supervisor reads the
/// caller's memory before the kernel does, and may see the other value: docs/audit.md.)
#[test]
fn the_kernel_source_records_the_argv_that_ran_while_a_thread_rewrites_it() {
    require_sandbox_and_the_kernel_source!();
    let Some(python) = common::python3() else { skip_or_fail!("python3 is needed for the racing thread") };
    let racer = "import ctypes, os, threading\n\
                 libc = ctypes.CDLL(None)\n\
                 for i in range(40):\n\
                 \x20   pid = os.fork()\n\
                 \x20   if pid == 0:\n\
                 \x20       buf = ctypes.create_string_buffer(b'before', 16)\n\
                 \x20       argv = (ctypes.c_char_p * 3)()\n\
                 \x20       argv[0] = b'/bin/echo'\n\
                 \x20       argv[1] = ctypes.cast(buf, ctypes.c_char_p)\n\
                 \x20       def flip():\n\
                 \x20           while True:\n\
                 \x20               ctypes.memmove(buf, b'after!', 6)\n\
                 \x20               ctypes.memmove(buf, b'before', 6)\n\
                 \x20       threading.Thread(target=flip, daemon=True).start()\n\
                 \x20       libc.execv(b'/bin/echo', argv)\n\
                 \x20       os._exit(127)\n\
                 \x20   os.waitpid(pid, 0)\n";
    let dir = audit_dir(false);
    let file = dir.path().join("audit.jsonl");
    let o = airlock_with_exec_source(
        "kernel",
        &["run", "--rm", "--audit", file.to_str().unwrap(), "--", python, "-c", racer],
    );
    let printed: Vec<String> = ok(&o).lines().map(str::to_string).collect();
    assert_eq!(printed.len(), 40, "{printed:?}");
    let recorded: Vec<String> =
        execs(&records(&file)).into_iter().filter(|a| a[0] == "/bin/echo").map(|a| a[1].clone()).collect();
    assert_eq!(recorded, printed, "each record must hold the argv the program printed");
}

/// The ring cannot make an exec wait: when the supervisor does not drain it (stopped here with SIGSTOP while the
/// sandbox execs 600 times; the ring holds about 200 records), the records that did not fit are lost, and the
/// log says how many — never silently.
#[test]
fn the_kernel_source_says_how_many_records_a_full_ring_lost() {
    require_sandbox_and_the_kernel_source!();
    let dir = audit_dir(false);
    let file = dir.path().join("audit.jsonl");
    let script = "sleep 1; i=0; while [ $i -lt 600 ]; do /bin/true; i=$((i+1)); done";
    let child =
        exec_source_command("kernel", &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "sh", "-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let supervisor = child.id().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let signal =
        |sig: &str| assert!(std::process::Command::new("kill").args([sig, &supervisor]).status().unwrap().success());
    signal("-STOP");
    // The loop runs while the supervisor is stopped: 600 execs take well under these seconds here.
    std::thread::sleep(Duration::from_secs(6));
    signal("-CONT");
    let o = child.wait_with_output().unwrap();
    ok(&o);
    let all = records(&file);
    let recorded = execs(&all).iter().filter(|a| a[0] == "/bin/true").count();
    let lost: Vec<&Value> = all.iter().filter(|r| r["kind"] == "resource" && r["resource"] == "exec_records").collect();
    assert!(!lost.is_empty(), "no record of lost exec records ({recorded} of 600 recorded)");
    let message = lost.last().unwrap()["message"].as_str().unwrap();
    // "... ; N lost in all"
    let total: usize = message.rsplit("; ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(recorded < 600 && total > 0, "{recorded} recorded, {message}");
    assert_eq!(recorded + total, 600, "every /bin/true is recorded or counted as lost: {recorded} + {message}");
    assert!(audit::verify(&file).unwrap().ok());
}

/// Which source a run uses shows in its supervisor: the kernel source holds BPF programs (and their links) for
/// the run's life; `AIRLOCK_EXEC_RECORDS=seccomp` makes no `bpf` call at all (nothing is paid for a program that
/// would not be used).
#[test]
fn the_supervisor_holds_bpf_programs_only_with_the_kernel_source() {
    require_sandbox_and_the_kernel_source!();
    let dir = audit_dir(false);
    let file = dir.path().join("audit.jsonl");
    let child = exec_source_command("kernel", &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "sleep", "2"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let links: Vec<String> = fs::read_dir(format!("/proc/{}/fd", child.id()))
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    ok(&child.wait_with_output().unwrap());
    assert!(links.iter().any(|l| l == "anon_inode:bpf-prog"), "{links:?}");

    if std::process::Command::new("strace").arg("-V").output().is_err() {
        skip_or_fail!("strace is needed to see that the seccomp source makes no bpf call");
    }
    let trace = dir.path().join("strace.txt");
    let o = std::process::Command::new("strace")
        .args(["-f", "-e", "trace=bpf", "-o", trace.to_str().unwrap()])
        .arg(common::airlock_path())
        .args(["run", "--rm", "--audit", file.to_str().unwrap(), "--", "true"])
        .env("AIRLOCK_STATE_DIR", common::test_state_dir(0))
        .env("AIRLOCK_EXEC_RECORDS", "seccomp")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    ok(&o);
    let calls = fs::read_to_string(&trace).unwrap();
    assert!(!calls.contains("bpf("), "the seccomp source loaded a BPF program:\n{calls}");
}

/// A bpffs directory of one test's, for the shared exec tracer's pins (`AIRLOCK_BPF_PIN_DIR`), removed with
/// everything pinned in it when dropped.
struct PinDir(String);

impl PinDir {
    /// Panics when /sys/fs/bpf is no bpffs: callers check [`bpffs_mounted`] first.
    fn new(tag: &str) -> PinDir {
        assert!(bpffs_mounted(), "no bpffs at /sys/fs/bpf");
        PinDir(format!("/sys/fs/bpf/airlock-test-{}", unique_name(tag)))
    }

    fn path(&self) -> &str {
        &self.0
    }

    /// The build's pinned directory in it (the one entry named by a build hash: 16 hex digits), if any.
    fn pinned(&self) -> Option<PathBuf> {
        let entries = fs::read_dir(&self.0).ok()?;
        let is_hash = |name: &str| name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit());
        let names: Vec<PathBuf> =
            entries.map(|e| e.unwrap().path()).filter(|p| is_hash(&p.file_name().unwrap().to_string_lossy())).collect();
        assert!(names.len() <= 1, "more than one build pinned: {names:?}");
        names.into_iter().next()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Whether a bpffs is mounted at /sys/fs/bpf (systemd mounts one at boot).
fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf"))
}

fn bpftool() -> Option<&'static str> {
    ["/usr/sbin/bpftool", "/usr/bin/bpftool"].into_iter().find(|p| Path::new(p).exists())
}

/// `bpftool -j ARGS`, parsed.
fn bpftool_json(tool: &str, args: &[&str]) -> Value {
    let o = std::process::Command::new(tool).arg("-j").args(args).output().unwrap();
    assert!(o.status.success(), "bpftool {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The shared program's slots (`runs` map): slot number -> the pid of the supervisor holding it (0: free).
fn slots(tool: &str, pinned: &Path) -> Vec<(u64, u64)> {
    let dump = bpftool_json(tool, &["map", "dump", "pinned", pinned.join("runs").to_str().unwrap()]);
    let mut slots: Vec<(u64, u64)> = dump
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["formatted"]["key"].as_u64().unwrap(), e["formatted"]["value"]["supervisor_pid"].as_u64().unwrap()))
        .collect();
    slots.sort();
    slots
}

/// The kernel source's program is loaded once and pinned, not by every run: the first audited run loads and pins
/// it, the next ones load nothing (no `BPF_PROG_LOAD`) and use the same program; each run holds a slot while it
/// runs (its supervisor's pid in the `runs` map) and leaves it free for the next; nothing stays attached.
#[test]
fn the_kernel_source_is_loaded_once_and_each_run_holds_a_slot_while_it_runs() {
    require_sandbox_and_the_kernel_source!();
    require_bpffs!();
    let Some(tool) = bpftool() else { skip_or_fail!("bpftool is needed to read the pinned maps") };
    if std::process::Command::new("strace").arg("-V").output().is_err() {
        skip_or_fail!("strace is needed to count the bpf calls");
    }
    let pins = PinDir::new("once");
    let dir = audit_dir(false);
    let file = dir.path().join("audit.jsonl");
    let airlock = common::airlock_path();
    let traced_run = |trace: &Path, command: &[&str]| {
        let mut args = vec!["-f", "-e", "trace=bpf", "-o", trace.to_str().unwrap(), airlock.to_str().unwrap()];
        args.extend(["run", "--rm", "--audit", file.to_str().unwrap(), "--"]);
        args.extend(command);
        let o = std::process::Command::new("strace")
            .args(&args)
            .env("AIRLOCK_STATE_DIR", common::test_state_dir(0))
            .env("AIRLOCK_EXEC_RECORDS", "kernel")
            .env("AIRLOCK_BPF_PIN_DIR", pins.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        ok(&o);
        fs::read_to_string(trace).unwrap()
    };
    // Another build's (empty) pin directory, and a directory that is not airlock's.
    fs::create_dir(pins.path()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(pins.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let (old_build, foreign) = (Path::new(pins.path()).join("0000000000000000"), Path::new(pins.path()).join("tc"));
    fs::create_dir(&old_build).unwrap();
    fs::create_dir(&foreign).unwrap();
    let first = traced_run(&dir.path().join("first.txt"), &["/bin/echo", "one"]);
    assert!(!old_build.exists() && foreign.exists(), "another build's pins must go, nothing else");
    assert!(
        first.contains("BPF_PROG_LOAD") && first.contains("BPF_OBJ_PIN"),
        "the first run did not load and pin:\n{first}"
    );
    let pinned = pins.pinned().expect("nothing pinned");
    let mode = fs::metadata(pins.path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((mode.uid(), mode.mode() & 0o777), (0, 0o700), "the pin directory must be root's alone");
    let prog_id =
        |p: &Path| bpftool_json(tool, &["prog", "show", "pinned", p.join("exec_done").to_str().unwrap()])["id"].clone();
    let id = prog_id(&pinned);
    let second = traced_run(&dir.path().join("second.txt"), &["/bin/echo", "two"]);
    assert!(!second.contains("BPF_PROG_LOAD"), "the second run loaded a program:\n{second}");
    assert!(second.contains("BPF_RAW_TRACEPOINT_OPEN"), "the second run attached nothing:\n{second}");
    assert_eq!(prog_id(&pinned), id, "the pinned program changed");
    let argvs = execs(&records(&file));
    let echoes: Vec<&Vec<String>> = argvs.iter().filter(|a| a[0] == "/bin/echo").collect();
    assert_eq!(echoes, [&vec!["/bin/echo".to_string(), "one".into()], &vec!["/bin/echo".to_string(), "two".into()]]);
    assert_eq!(slots(tool, &pinned), [(0, 0)], "one slot, left free");

    // A run holds its slot while it runs: a second run at the same time takes another.
    let holder =
        kernel_source_command(pins.path(), &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "sleep", "3"])
            .spawn()
            .unwrap();
    let held = wait_for(Duration::from_secs(10), || slots(tool, &pinned).contains(&(0, u64::from(holder.id()))));
    assert!(held, "the running supervisor holds no slot: {:?}", slots(tool, &pinned));
    audited_run(&pins, &file, &["/bin/echo", "three"]);
    assert_eq!(slots(tool, &pinned), [(0, u64::from(holder.id())), (1, 0)]);
    ok(&holder.wait_with_output().unwrap());
    assert_eq!(slots(tool, &pinned), [(0, 0), (1, 0)]);
    let links = bpftool_json(tool, &["link", "list"]);
    let ours = links.as_array().unwrap().iter().filter(|l| l["prog_id"] == id).count();
    assert_eq!(ours, 0, "links left attached: {links}");
    assert!(audit::verify(&file).unwrap().ok());
}

/// A supervisor killed with SIGKILL cannot free its slot: the next run finds its holder gone and takes it, and
/// records its own execs there (none of the dead run's).
#[test]
fn a_slot_whose_supervisor_was_killed_is_taken_by_the_next_run() {
    require_sandbox_and_the_kernel_source!();
    require_bpffs!();
    let Some(tool) = bpftool() else { skip_or_fail!("bpftool is needed to read the pinned maps") };
    let pins = PinDir::new("killed");
    let dir = audit_dir(false);
    let (dead, next) = (dir.path().join("dead.jsonl"), dir.path().join("next.jsonl"));
    let mut victim = kernel_source_command(
        pins.path(),
        &[
            "run",
            "--rm",
            "--audit",
            dead.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "while :; do /bin/echo dead >/dev/null; sleep 0.01; done",
        ],
    )
    .spawn()
    .unwrap();
    let held = wait_for(Duration::from_secs(10), || {
        pins.pinned().is_some_and(|p| slots(tool, &p).contains(&(0, u64::from(victim.id()))))
    });
    assert!(held, "the run holds no slot");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let pinned = pins.pinned().unwrap();
    assert_eq!(slots(tool, &pinned), [(0, u64::from(victim.id()))], "the killed run's slot looks held");
    audited_run(&pins, &next, &["/bin/echo", "next"]);
    assert_eq!(slots(tool, &pinned), [(0, 0)], "the dead run's slot was not taken and freed");
    let argvs = execs(&records(&next));
    assert_eq!(argvs, [vec!["/bin/echo".to_string(), "next".into()]], "{argvs:?}");
}

/// The pin directory is trusted only when it is root's and writable by nobody else (/sys/fs/bpf is often
/// world-writable): one made by another user first is not used, the run loads a program of its own and records
/// as well, and nothing is pinned in it; and a rootless run makes none.
#[test]
fn a_pin_directory_another_user_could_write_is_not_used() {
    require_sandbox_and_the_kernel_source!();
    require_bpffs!();
    require_test_user!();
    let dir = audit_dir(false);
    for (tag, owner, mode) in [("foreign", common::test_user_uid(), 0o700), ("open", 0, 0o777)] {
        let pins = PinDir::new(tag);
        fs::create_dir(pins.path()).unwrap();
        std::os::unix::fs::chown(pins.path(), Some(owner), Some(owner)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(pins.path(), fs::Permissions::from_mode(mode)).unwrap();
        let file = dir.path().join(format!("{tag}.jsonl"));
        assert_eq!(audited_run(&pins, &file, &["/bin/echo", tag]).trim(), tag);
        assert_eq!(execs(&records(&file)), [vec!["/bin/echo".to_string(), tag.into()]]);
        assert_eq!(fs::read_dir(pins.path()).unwrap().count(), 0, "{tag}: something was pinned in it");
    }
    // A pin directory outside any bpffs is not made: the run loads a program of its own and leaves nothing.
    let scratch = audit_dir(false);
    let nowhere = scratch.path().join("pins");
    let file = scratch.path().join("nowhere.jsonl");
    let o =
        kernel_source_command(&nowhere, &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "/bin/echo", "x"])
            .output()
            .unwrap();
    assert_eq!(ok(&o).trim(), "x");
    assert!(!nowhere.exists(), "a pin directory was made outside bpffs");
    // A rootless audited run (seccomp notification: no program for it) makes no pin directory, which would keep
    // root's runs from trusting it.
    let pins = PinDir::new("rootless");
    let rootless = audit_dir(true);
    let file = rootless.path().join("rootless.jsonl");
    let state = PathBuf::from(common::test_state_dir(common::test_user_uid()));
    let o = common::airlock_as_user_in(
        &state,
        &[format!("AIRLOCK_BPF_PIN_DIR={}", pins.path())],
        &["run", "--rm", "--audit", file.to_str().unwrap(), "--", "/bin/echo", "rootless"],
    );
    assert_eq!(ok(&o).trim(), "rootless");
    assert_eq!(execs(&records(&file)), [vec!["/bin/echo".to_string(), "rootless".into()]]);
    assert!(!Path::new(pins.path()).exists(), "a rootless run made the pin directory");
}

/// `airlock run --rm --audit FILE -- COMMAND` with the kernel source pinned in `pins`: its output, the run having
/// succeeded.
fn audited_run(pins: &PinDir, file: &Path, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--audit", file.to_str().unwrap(), "--"];
    args.extend(command);
    ok(&kernel_source_command(pins.path(), &args).output().unwrap())
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}
