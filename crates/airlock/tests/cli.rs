//! The command line itself, driven through the real binary: usage errors and their exit status, what each
//! subcommand's help lists, `rm --force`, `rm --all` and `prune`, `--env-file` and `--json` of run, create and
//! exec, `stats` of a sandbox without limits, exec's out-of-memory line, shell completions and the man page.
//!
//! The tests that remove every sandbox (`prune`, `rm --all`) use a state directory of their own, so that they
//! never touch the sandboxes of tests running beside them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{code, ok, stderr, stdout, StopOnDrop, TempDir};

/// A name no other test uses.
fn unique_name(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// `airlock ARGS...` with the tests' state directory, or `state` when given.
fn airlock_in(state: Option<&Path>, args: &[&str]) -> Output {
    match state {
        None => common::airlock(args),
        Some(dir) => Command::new(common::airlock_path())
            .args(args)
            .env("AIRLOCK_STATE_DIR", dir)
            .stdin(Stdio::null())
            .output()
            .expect("spawn airlock"),
    }
}

fn airlock(args: &[&str]) -> Output {
    common::airlock(args)
}

/// Exactly one line on stderr, an `airlock:` line containing `needle`.
#[track_caller]
fn one_airlock_line(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    assert!(err.starts_with("airlock: ") && err.contains(needle), "expected `airlock: ...{needle}...`, got: {err}");
}

/// Both streams, for assertion messages.
fn describe(o: &Output) -> String {
    format!("exit {}\nstdout:\n{}\nstderr:\n{}", code(o), stdout(o), stderr(o))
}

/// Whether `pid` is a live process started at `start` (field 22 of /proc/PID/stat).
fn alive(pid: i64, start: i64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[19].parse::<i64>().ok() == Some(start) && !matches!(fields[0], "Z" | "X")
}

/// The JSON object on the last line of stdout.
#[track_caller]
fn last_json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    let line = out.lines().last().unwrap_or_else(|| panic!("no output\n{}", describe(o)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{}", describe(o)))
}

/// Skips (or fails under CI) unless `airlock create` works here; returns after creating nothing.
macro_rules! require_create {
    () => {{
        require_sandbox!();
        let name = unique_name("probe");
        let o = airlock(&["create", &name]);
        let _ = airlock(&["rm", "--force", &name]);
        if code(&o) != 0 {
            skip_or_fail!("airlock create does not work here: {}", stderr(&o).trim());
        }
    }};
}

// ---------------------------------------------------------------------------------------------------------------
// Usage errors and help
// ---------------------------------------------------------------------------------------------------------------

/// Every usage error is 125 with one `airlock:` line, whatever the subcommand; help and version are 0.
#[test]
fn usage_errors_exit_125_and_help_exits_0() {
    for (args, needle) in [
        (&["foo"][..], "foo"),
        (&["stats"][..], "<NAME>"),
        (&["ls", "--bogus"][..], "--bogus"),
        (&["rm"][..], "<NAME>"),
        (&["completions", "tcsh"][..], "tcsh"),
        (&["run", "--no-such-flag", "true"][..], "--no-such-flag"),
        (&["exec"][..], "required"),
        (&["create", "--rm", "x"][..], "--rm"),
        (&["create", "-t", "x"][..], "-t"),
        (&["create", "--resume", "x"][..], "--resume"),
        (&["create", "--name", "x", "x"][..], "--name"),
        (&["rm", "--all", "name"][..], "--all"),
    ] {
        let o = airlock(args);
        assert_eq!(code(&o), 125, "airlock {args:?} is a usage error\n{}", describe(&o));
        one_airlock_line(&o, needle);
        assert!(stdout(&o).is_empty(), "{}", describe(&o));
    }
    // `airlock` alone: the help, on stderr, as a usage error.
    let o = airlock(&[]);
    assert_eq!(code(&o), 125, "{}", describe(&o));
    assert!(stderr(&o).contains("Usage:"), "{}", describe(&o));
    for args in [&["--help"][..], &["--version"][..], &["run", "--help"][..], &["create", "-h"][..], &["help"][..]] {
        let o = airlock(args);
        assert_eq!(code(&o), 0, "airlock {args:?}\n{}", describe(&o));
        assert!(!stdout(&o).is_empty());
    }
}

/// The options of an `--help`: the long and short flags its option lines start with.
fn listed_flags(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| {
            l.split([',', ' '])
                .take_while(|w| w.starts_with('-') || w.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// `create --help` does not list what create refuses; `run --help` lists them and no developer note.
#[test]
fn help_lists_only_what_the_subcommand_takes() {
    let create = ok(&airlock(&["create", "--help"]));
    let create_flags = listed_flags(&create);
    for refused in ["--name", "--resume", "--rm", "-t", "--tty"] {
        assert!(!create_flags.iter().any(|f| f == refused), "create --help lists {refused}:\n{create}");
    }
    for taken in ["--workspace", "--memory", "--env-file", "--json", "--audit"] {
        assert!(create_flags.iter().any(|f| f == taken), "create --help does not list {taken}:\n{create}");
    }
    let run = ok(&airlock(&["run", "--help"]));
    let run_flags = listed_flags(&run);
    for taken in ["--name", "--resume", "--rm", "-t", "--tty", "--env-file", "--json"] {
        assert!(run_flags.iter().any(|f| f == taken), "run --help does not list {taken}:\n{run}");
    }
    for note in ["allow_hyphen_values", "mistyped flag"] {
        assert!(!run.contains(note), "run --help shows a developer note ({note}):\n{run}");
    }
    // --audit: what the audit log records now, not only the gateway's decisions.
    assert!(!run.contains("in this build"), "run --help: --audit's help is out of date:\n{run}");
    for what in ["execve", "refused", "network gateway"] {
        assert!(run.contains(what), "run --help: --audit's help does not mention {what}:\n{run}");
    }
    let exec = ok(&airlock(&["exec", "--help"]));
    for taken in ["--cwd", "--timeout", "--env-file", "--json", "-t"] {
        assert!(listed_flags(&exec).iter().any(|f| f == taken), "exec --help does not list {taken}:\n{exec}");
    }
    let rm = ok(&airlock(&["rm", "--help"]));
    for taken in ["--force", "--all"] {
        assert!(listed_flags(&rm).iter().any(|f| f == taken), "rm --help does not list {taken}:\n{rm}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Completions and man pages
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn completions_for_each_shell() {
    let bash = ok(&airlock(&["completions", "bash"]));
    assert!(bash.contains("_airlock()") && bash.contains("complete "), "{bash}");
    for sub in ["create", "exec", "prune", "--env-file"] {
        assert!(bash.contains(sub), "the bash completion does not know {sub}");
    }
    assert!(!bash.contains("__supervise"), "the bash completion offers an internal subcommand");
    for shell in ["zsh", "fish"] {
        assert!(ok(&airlock(&["completions", shell])).contains("airlock"), "{shell}");
    }
}

/// `airlock man`: roff whose first request (after clap_mangen's quote-string definition) is `.TH airlock 1`;
/// `--dir` writes one page per subcommand.
#[test]
fn man_pages_are_roff() {
    let page = ok(&airlock(&["man"]));
    let first = page.lines().find(|l| !l.starts_with(".ie ") && !l.starts_with(".el ")).unwrap();
    assert!(first.starts_with(".TH airlock 1"), "{first:?}\n{page}");
    assert!(page.contains(".SH NAME") && page.contains("prune"), "{page}");
    let dir = TempDir::new("man");
    ok(&airlock(&["man", "--dir", dir.str()]));
    for file in ["airlock.1", "airlock-run.1", "airlock-create.1", "airlock-exec.1", "airlock-rm.1"] {
        let text = fs::read_to_string(dir.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(".TH "), "{file}:\n{text}");
    }
    let run = fs::read_to_string(dir.path().join("airlock-run.1")).unwrap();
    assert!(run.contains("env\\-file"), "{run}");
    assert!(!dir.path().join("airlock-__supervise.1").exists() && !dir.path().join("airlock-help.1").exists());
}

// ---------------------------------------------------------------------------------------------------------------
// --env-file and --json
// ---------------------------------------------------------------------------------------------------------------

/// A malformed --env-file line is one error naming FILE:LINE, exit 125, nothing run — for run, create and exec.
#[test]
fn env_file_errors_name_the_file_and_line() {
    let files = TempDir::new("envfile");
    let bad = files.path().join("bad.env");
    fs::write(&bad, "# comment\n\nA=1\nthis line has no equals sign\n").unwrap();
    let bad = bad.to_str().unwrap();
    let place = format!("{bad}:4: expected KEY=VALUE");
    let marker = files.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let o = airlock(&["run", "--env-file", bad, "--", "sh", "-c", &touch]);
    assert_eq!(code(&o), 125, "{}", describe(&o));
    one_airlock_line(&o, &place);
    assert!(!o.stderr.windows(b"no equals".len()).any(|w| w == b"no equals"), "the line's text is not echoed");
    let name = unique_name("envbad");
    let _cleanup = StopOnDrop::new(&name, airlock);
    let o = airlock(&["create", "--env-file", bad, &name]);
    assert_eq!(code(&o), 125, "{}", describe(&o));
    one_airlock_line(&o, &place);
    assert_ne!(code(&airlock(&["stats", &name])), 0, "create made the sandbox all the same");
    let o = airlock(&["run", "--env-file", "/no/such/env-file", "--", "true"]);
    assert_eq!(code(&o), 125);
    one_airlock_line(&o, "/no/such/env-file");
    assert!(!marker.exists());
}

#[test]
fn run_env_file_and_json() {
    require_sandbox!();
    let files = TempDir::new("runenv");
    let one = files.path().join("one.env");
    let two = files.path().join("two.env");
    fs::write(&one, "# settings\nA=1\n\nB=two words\nC=from-file\n").unwrap();
    fs::write(&two, "C=second-file\n").unwrap();
    let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
    let script = "echo \"$A|$B|$C|$D\"";
    let o = airlock(&["run", "--env-file", one, "--", "sh", "-c", script]);
    assert_eq!(ok(&o), "1|two words|from-file|\n");
    // Later files win, and --env wins over every file.
    let o = airlock(&["run", "--env-file", one, "--env-file", two, "--env", "D=flag", "--", "sh", "-c", script]);
    assert_eq!(ok(&o), "1|two words|second-file|flag\n");

    // --json: the command's output, then one JSON object.
    let o = airlock(&["run", "--json", "--", "sh", "-c", "echo out; exit 3"]);
    assert_eq!(code(&o), 3, "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.starts_with("out\n"), "{out}");
    let v = last_json(&o);
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["signal"], serde_json::Value::Null);
    assert_eq!(v["oom"], false);
    assert_eq!(v["timed_out"], false);
    assert!(v["name"].is_null(), "{v}");
    assert!(v["duration_ms"].as_u64().is_some(), "{v}");
    let o = airlock(&["run", "--json", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(code(&o), 143, "{}", describe(&o));
    assert_eq!(last_json(&o)["signal"], 15);
    let o = airlock(&["run", "--json", "--timeout", "1s", "--", "sleep", "30"]);
    assert_eq!(code(&o), 124, "{}", describe(&o));
    let v = last_json(&o);
    assert_eq!((v["exit_code"].as_i64(), v["timed_out"].as_bool()), (Some(124), Some(true)), "{v}");
    assert!(v["duration_ms"].as_u64().unwrap() >= 900, "{v}");
    let name = unique_name("runjson");
    let _cleanup = StopOnDrop::new(&name, airlock);
    let o = airlock(&["run", "--json", "--name", &name, "--", "true"]);
    assert_eq!(last_json(&o)["name"], name.as_str(), "{}", describe(&o));
}

/// exec --cwd, --timeout, --env-file and --json, and create --json.
#[test]
fn exec_options_and_create_json() {
    require_create!();
    let name = unique_name("xjson");
    let _cleanup = StopOnDrop::new(&name, airlock);
    let files = TempDir::new("xjson");
    let env = files.path().join("vars.env");
    fs::write(&env, "X=from-create\n").unwrap();
    let o = airlock(&["create", "--json", "--env-file", env.to_str().unwrap(), &name]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let v = last_json(&o);
    assert_eq!(stdout(&o).lines().count(), 1, "create --json prints one object\n{}", describe(&o));
    assert_eq!(v["name"], name.as_str());
    assert_eq!(v["state"], "running");
    let (init, supervisor) = (v["ids"]["init_pid"].as_i64().unwrap(), v["ids"]["supervisor_pid"].as_i64().unwrap());
    assert!(Path::new(&format!("/proc/{init}")).exists() && Path::new(&format!("/proc/{supervisor}")).exists());

    // --env-file at create applies to every exec; one at exec adds to it.
    fs::write(files.path().join("exec.env"), "# for exec\nY=from-exec\n").unwrap();
    let exec_env = files.path().join("exec.env");
    let o = airlock(&["exec", "--env-file", exec_env.to_str().unwrap(), &name, "--", "sh", "-c", "echo \"$X|$Y\""]);
    assert_eq!(ok(&o), "from-create|from-exec\n");
    // --cwd.
    assert_eq!(ok(&airlock(&["exec", "--cwd", "/tmp", &name, "--", "pwd"])), "/tmp\n");
    // --json.
    let o = airlock(&["exec", "--json", &name, "--", "sh", "-c", "echo hi; exit 7"]);
    assert_eq!(code(&o), 7, "{}", describe(&o));
    assert!(stdout(&o).starts_with("hi\n"));
    let v = last_json(&o);
    assert_eq!((v["name"].as_str(), v["exit_code"].as_i64()), (Some(name.as_str()), Some(7)), "{v}");
    assert_eq!((v["oom"].as_bool(), v["timed_out"].as_bool()), (Some(false), Some(false)), "{v}");
    // --timeout: 124 like timeout(1), one airlock: line, and --json says so.
    let started = Instant::now();
    let o = airlock(&["exec", "--timeout", "1s", "--json", &name, "--", "sleep", "30"]);
    assert_eq!(code(&o), 124, "{}", describe(&o));
    assert!(started.elapsed() < Duration::from_secs(10));
    one_airlock_line(&o, "timed out after 1s");
    assert_eq!(last_json(&o)["timed_out"], true);
}

// ---------------------------------------------------------------------------------------------------------------
// rm --force, rm --all, prune
// ---------------------------------------------------------------------------------------------------------------

/// `rm --force` on a running sandbox: its supervisor and init are gone and so is its state directory.
#[test]
fn rm_force_stops_and_removes_a_running_sandbox() {
    require_create!();
    let name = unique_name("rmforce");
    let _cleanup = StopOnDrop::new(&name, airlock);
    ok(&airlock(&["create", &name]));
    ok(&airlock(&["exec", &name, "--", "sh", "-c", "sleep 300 >/dev/null 2>&1 &"]));
    let uid = std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap());
    let dir = Path::new(&common::test_state_dir(uid)).join("sandboxes").join(&name);
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("sandbox.json")).unwrap()).unwrap();
    let num = |k: &str| record[k].as_i64().unwrap_or_else(|| panic!("no {k} in {record}"));
    let (init, init_start) = (num("init_pid"), num("init_start_time"));
    let (sup, sup_start) = (num("supervisor_pid"), num("supervisor_start_time"));
    assert!(alive(init, init_start) && alive(sup, sup_start));

    // Without --force: refused, it runs on.
    let o = airlock(&["rm", &name]);
    assert_eq!(code(&o), 1, "{}", describe(&o));
    one_airlock_line(&o, "rm --force");
    assert!(alive(init, init_start));

    let o = airlock(&["rm", "--force", &name]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    assert!(!alive(init, init_start), "init outlived rm --force");
    assert!(!alive(sup, sup_start), "the supervisor outlived rm --force");
    assert!(!dir.exists(), "{} is still there", dir.display());
    let ls = ok(&airlock(&["ls"]));
    assert!(!ls.contains(&name), "{ls}");
    // An ended sandbox: --force is harmless.
    let other = unique_name("rmforce2");
    let _cleanup_other = StopOnDrop::new(&other, airlock);
    ok(&airlock(&["create", &other]));
    ok(&airlock(&["stop", &other]));
    ok(&airlock(&["rm", "--force", &other]));
    assert_ne!(code(&airlock(&["rm", "--force", &other])), 0, "removed twice");
}

/// `prune` removes the ended sandboxes and leaves the running ones; `rm --all` is the same, `rm --all --force`
/// also stops and removes the running ones. In a state directory of their own.
#[test]
fn prune_and_rm_all() {
    require_create!();
    let state = TempDir::new("prune-state");
    let state = Some(state.path());
    let (ended, running) = (unique_name("pr-ended"), unique_name("pr-running"));
    let _c1 = StopOnDrop::new(&ended, |args: &[&str]| airlock_in(state, args));
    let _c2 = StopOnDrop::new(&running, |args: &[&str]| airlock_in(state, args));
    let dirs = |s: Option<&Path>| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(s.unwrap().join("sandboxes"))
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let make = || {
        ok(&airlock_in(state, &["create", &ended]));
        ok(&airlock_in(state, &["stop", &ended]));
        ok(&airlock_in(state, &["create", &running]));
    };
    make();
    let o = airlock_in(state, &["run", "--name", "pr-run-kept", "--", "true"]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    assert_eq!(dirs(state).len(), 3, "{:?}", dirs(state));

    ok(&airlock_in(state, &["prune"]));
    assert_eq!(dirs(state), vec![running.clone()], "prune removes exactly the ended sandboxes");
    assert_eq!(ok(&airlock_in(state, &["exec", &running, "--", "echo", "up"])), "up\n", "prune touched a running one");

    ok(&airlock_in(state, &["create", &ended]));
    ok(&airlock_in(state, &["stop", &ended]));
    ok(&airlock_in(state, &["rm", "--all"]));
    assert_eq!(dirs(state), vec![running.clone()], "rm --all removes exactly the ended sandboxes");

    ok(&airlock_in(state, &["create", &ended]));
    ok(&airlock_in(state, &["rm", "--all", "--force"]));
    assert!(dirs(state).is_empty(), "rm --all --force leaves {:?}", dirs(state));
    assert!(ok(&airlock_in(state, &["ls"])).contains("no sandboxes"));
    // Nothing to remove: still 0.
    ok(&airlock_in(state, &["prune"]));
}

// ---------------------------------------------------------------------------------------------------------------
// stats and exec's out-of-memory line
// ---------------------------------------------------------------------------------------------------------------

/// A running sandbox created without limits has no cgroup: stats says so and shows its processes (exit 0).
#[test]
fn stats_of_a_running_sandbox_without_limits() {
    require_create!();
    let name = unique_name("stnolim");
    let _cleanup = StopOnDrop::new(&name, airlock);
    ok(&airlock(&["create", &name]));
    let o = airlock(&["stats", &name]);
    assert_eq!(code(&o), 0, "{}", describe(&o));
    let text = stdout(&o);
    assert!(text.lines().next().is_some_and(|l| l.contains(&name) && l.contains("running")), "{text}");
    assert!(text.contains("no cgroup") && text.contains("--memory"), "stats does not say why:\n{text}");
    let o = airlock(&["stats", "--json", &name]);
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["source"], "proc");
    assert!(v["pids"]["current"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["memory"]["current_bytes"].as_u64().unwrap() > 0, "{v}");
    assert!(v["memory"]["limit_bytes"].is_null() && v["memory"]["oom_kills"].is_null(), "{v}");
    // A process started by exec counts.
    ok(&airlock(&["exec", &name, "--", "sh", "-c", "sleep 300 >/dev/null 2>&1 &"]));
    let v: serde_json::Value = serde_json::from_str(&ok(&airlock(&["stats", "--json", &name]))).unwrap();
    assert!(v["pids"]["current"].as_u64().unwrap() >= 2, "the exec's sleep is not counted: {v}");
    // Ended, without numbers kept: says so, exit 1; unknown: no such sandbox.
    ok(&airlock(&["stop", &name]));
    let o = airlock(&["stats", &name]);
    assert_eq!(code(&o), 1, "{}", describe(&o));
    one_airlock_line(&o, "kept no numbers");
    let o = airlock(&["stats", &unique_name("nosuch")]);
    assert_eq!(code(&o), 1, "{}", describe(&o));
    one_airlock_line(&o, "no sandbox named");
}

/// A command `airlock exec` runs that is killed for memory: 137 and the same line `run` prints; a plain
/// SIGKILL afterwards is not called out of memory.
#[test]
fn exec_killed_for_memory_says_so() {
    require_create!();
    if !common::is_root() {
        skip_or_fail!("cgroup limits need host root on this host (cgroup v1 has no delegation)");
    }
    let Some(python) = common::python3() else {
        skip_or_fail!("python3 is not installed; it allocates the memory inside");
    };
    let name = unique_name("xoom");
    let _cleanup = StopOnDrop::new(&name, airlock);
    let o = airlock(&["create", "--memory", "64M", &name]);
    if code(&o) != 0 {
        skip_or_fail!("no memory limit here: {}", stderr(&o).trim());
    }
    let o = airlock(&["exec", "--json", &name, "--", python, "-c", "b = bytearray(512 * 1024 * 1024)"]);
    assert_eq!(code(&o), 137, "{}", describe(&o));
    let err = stderr(&o);
    let line = err.lines().find(|l| l.starts_with("airlock: ")).unwrap_or_else(|| panic!("no airlock: line\n{err}"));
    assert!(line.starts_with("airlock: killed: out of memory (limit 64M, peak "), "{line}");
    assert_eq!(last_json(&o)["oom"], true);
    // The sandbox lives on; a SIGKILL that is not the OOM killer's is only 137.
    let o = airlock(&["exec", "--json", &name, "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(code(&o), 137, "{}", describe(&o));
    assert!(!stderr(&o).contains("out of memory"), "{}", describe(&o));
    assert_eq!(last_json(&o)["oom"], false);
}

/// Through a daemon, what its API cannot do is a usage error (125) before anything is sent.
#[test]
fn through_a_daemon_the_refusals_are_usage_errors() {
    let host = "unix:///nonexistent/airlock-cli-test.sock";
    for (args, needle) in [
        (&["prune"][..], "prune"),
        (&["rm", "--all"][..], "rm --all"),
        (&["exec", "--json", "x", "--", "true"][..], "--json"),
        (&["create", "--json", "x"][..], "--json"),
        (&["serve"][..], "no --host"),
    ] {
        let mut full = vec!["--host", host];
        full.extend_from_slice(args);
        let o = airlock(&full);
        assert_eq!(code(&o), 125, "airlock {full:?}\n{}", describe(&o));
        one_airlock_line(&o, needle);
    }
}
