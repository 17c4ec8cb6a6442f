//! `airlock oci` as containerd's runc: Debian's containerd, started by each test with its own config, state,
//! sockets and namespace under a temporary directory (CRI off), and `ctr run --runc-binary WRAPPER --rootfs DIR`
//! with a busybox root. The wrapper is the two lines a user writes: `exec airlock oci "$@"`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/oci.rs"]
mod oci_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use oci_support::*;

macro_rules! require_containerd {
    () => {
        require_sandbox!();
        if let Some(reason) = containerd_missing() {
            skip_or_fail!("{reason}");
        }
    };
}

/// A container id unique to this test run.
fn id(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

fn text(o: &std::process::Output) -> String {
    format!("status {:?}\nstdout: {}\nstderr: {}", o.status.code(), stdout(o), stderr(o))
}

/// Waits until `ctr task ls` shows the task with `status`.
fn wait_status(c: &Containerd, id: &str, status: &str) {
    let started = Instant::now();
    loop {
        let o = c.ctr(&["task", "ls"]);
        if stdout(&o).lines().any(|l| l.split_whitespace().next() == Some(id) && l.contains(status)) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "task {id} never {status}: {}", text(&o));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_run_gives_the_output_and_exit_status_and_leaves_nothing() {
    require_containerd!();
    let c = Containerd::start("run");
    let id = id("run");
    let mut args = c.run_args(&["--rm"], &id);
    args.extend(["sh", "-c", "echo out-$((6*7)); echo err >&2; hostname; exit 3"]);
    let o = c.ctr(&args);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(stdout(&o).contains("out-42"), "{}", text(&o));
    assert!(stderr(&o).contains("err"), "{}", text(&o));
    let left = c.wait_clean(&id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn task_exec_ps_pause_resume_and_kill_9_is_137() {
    require_containerd!();
    let c = Containerd::start("task");
    let id = id("task");
    let mut args = c.run_args(&[], &id);
    args.extend(["sh", "-c", "echo started; sleep 600"]);
    let mut run = c.ctr_command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(run.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "started");
    wait_status(&c, &id, "RUNNING");

    let o = c.ctr(&["task", "exec", "--exec-id", "e1", &id, "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(stdout(&o).contains("in-exec"), "{}", text(&o));

    // ps: host pids of the container's processes, the sleep among them.
    let o = c.ctr(&["task", "ps", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let pids: Vec<i32> = stdout(&o).lines().skip(1).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect();
    let sleep = pids.iter().copied().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("sleep"))
    });
    let sleep = sleep.unwrap_or_else(|| panic!("no sleep among {pids:?}"));
    for pid in &pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(!cmdline.contains("__supervise"), "airlock's own process {pid} listed as the container's: {cmdline}");
    }
    let state = |pid: i32| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("State:")).unwrap().trim().chars().next().unwrap()
    };

    let o = c.ctr(&["task", "pause", &id]);
    assert!(o.status.success(), "{}", text(&o));
    wait_status(&c, &id, "PAUSED");
    // Frozen (a freezer cgroup: D) or stopped (T), not sleeping.
    assert!(matches!(state(sleep), 'D' | 'T'), "paused, the sleep is in state {}", state(sleep));
    let o = c.ctr(&["task", "resume", &id]);
    assert!(o.status.success(), "{}", text(&o));
    wait_status(&c, &id, "RUNNING");
    assert_eq!(state(sleep), 'S', "resumed, the sleep sleeps again");

    let o = c.ctr(&["task", "kill", "-s", "9", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(137), "ctr run after kill -9");
    // ctr run deleted the task once it ended; a kill now finds nothing to signal.
    let o = c.ctr(&["task", "kill", "-s", "9", &id]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = c.ctr(&["container", "delete", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let left = c.wait_clean(&id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn ctr_run_t_gets_a_terminal_through_the_console_socket() {
    require_containerd!();
    if !std::path::Path::new("/usr/bin/script").exists() {
        skip_or_fail!("script (bsdutils) is missing");
    }
    let c = Containerd::start("tty");
    let id = id("tty");
    let mut args = c.run_args(&["-t", "--rm"], &id);
    args.extend(["sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; tty; exit 4"]);
    let ctr = format!(
        "ctr --address {} --namespace {} {}",
        c.address.display(),
        c.namespace,
        args.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ")
    );
    // ctr -t needs a terminal of its own: script gives it one, and exits with its status (-e).
    let o = Command::new("script").args(["-qec", &ctr, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(stdout(&o).contains("is-a-tty"), "{}", text(&o));
    assert!(stdout(&o).contains("/dev/pts/"), "{}", text(&o));
    let left = c.wait_clean(&id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn the_bundles_memory_limit_is_the_sandboxes() {
    require_containerd!();
    let c = Containerd::start("mem");
    let id = id("mem");
    let mut args = c.run_args(&["-d", "--memory-limit", "33554432"], &id);
    args.extend(["sleep", "600"]);
    let o = c.ctr(&args);
    assert!(o.status.success(), "{}", text(&o));
    wait_status(&c, &id, "RUNNING");
    let sandboxes = c.sandboxes();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    // What `wait_clean` looks for is there while the container runs (the check can fail).
    assert!(!c.leftovers().is_empty(), "a running container shows no processes or state");
    let o = c.airlock(&["stats", &sandboxes[0], "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(stats["memory"]["limit_bytes"], 33554432, "{stats:#}");
    let o = c.ctr(&["task", "kill", "-s", "9", &id]);
    assert!(o.status.success(), "{}", text(&o));
    wait_status(&c, &id, "STOPPED");
    assert!(c.ctr(&["task", "delete", &id]).status.success());
    assert!(c.ctr(&["container", "delete", &id]).status.success());
    let left = c.wait_clean(&id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// Two HTTP servers on the host's loopback: each answers `body-PORT` and logs the paths it was asked for.
const SERVERS: &str = r#"
import http.server, sys, threading
log = open(sys.argv[1], "a")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        log.write("%d %s\n" % (self.server.server_port, self.path)); log.flush()
        body = ("body-%d" % self.server.server_port).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), H) for _ in range(2)]
for s in servers: threading.Thread(target=s.serve_forever, daemon=True).start()
print(" ".join(str(s.server_port) for s in servers), flush=True)
sys.stdin.read()
"#;

#[test]
fn the_net_allow_annotation_reaches_one_destination_and_refuses_another() {
    require_containerd!();
    let Some(python) = python3() else { skip_or_fail!("python3 is missing") };
    let c = Containerd::start("net");
    let id = id("net");
    let log = c.dir.path().join("servers.log");
    let mut servers = Command::new(python)
        .args(["-c", SERVERS])
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(servers.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ports: Vec<u16> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let (allowed, refused) = (ports[0], ports[1]);
    let annotation = format!("dev.airlock.net.allow=localhost:{allowed}");
    let script = format!(
        "wget -q -O /tmp/a http://localhost:{allowed}/allowed && cat /tmp/a && echo; \
         wget -q -T 5 -O /tmp/b http://localhost:{refused}/refused && echo REACHED-REFUSED; echo done"
    );
    let mut args = c.run_args(&["--rm", "--annotation", &annotation], &id);
    args.extend(["sh", "-c", &script]);
    let o = c.ctr(&args);
    drop(servers.stdin.take());
    let _ = servers.kill();
    let _ = servers.wait();
    assert!(stdout(&o).contains(&format!("body-{allowed}")), "{}", text(&o));
    assert!(stdout(&o).contains("done"), "{}", text(&o));
    assert!(!stdout(&o).contains("REACHED-REFUSED"), "{}", text(&o));
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(seen.contains(&format!("{allowed} /allowed")), "{seen}");
    assert!(!seen.contains("/refused"), "the refused server was reached: {seen}");
    let left = c.wait_clean(&id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn the_audit_annotation_records_the_containers_execs() {
    require_containerd!();
    let c = Containerd::start("audit");
    let id = id("audit");
    let mut args = c.run_args(&["--rm", "--annotation", "dev.airlock.audit=true"], &id);
    args.extend(["sh", "-c", "cat /etc/passwd >/dev/null; echo audited"]);
    let o = c.ctr(&args);
    assert!(o.status.success() && stdout(&o).contains("audited"), "{}", text(&o));
    let dir = c.airlock_state.join("oci-audit");
    let copies: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let log = std::fs::read_to_string(&copies[0]).unwrap();
    assert!(log.contains("/etc/passwd") || log.contains("\"cat\""), "no record of the command's exec:\n{log}");
    let left = c.wait_clean(&id);
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn refusals_and_errors_go_to_the_log_and_fail_closed() {
    require_containerd!();
    let c = Containerd::start("refuse");
    // The host network is refused (and said in the log); the container runs with its own.
    let id1 = id("hostnet");
    let mut args = c.run_args(&["-d", "--net-host"], &id1);
    args.extend(["sleep", "600"]);
    let o = c.ctr(&args);
    assert!(o.status.success(), "{}", text(&o));
    wait_status(&c, &id1, "RUNNING");
    let log = c.task_log(&id1);
    let refused = log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|l| {
        l["level"] == "warning"
            && l["msg"].as_str().is_some_and(|m| m.contains("host network"))
            && l["time"].is_string()
    });
    assert!(refused, "no warning about the host network in the log:\n{log}");
    let o = c.ctr(&["task", "exec", "--exec-id", "n", &id1, "cat", "/proc/net/dev"]);
    let interfaces: Vec<String> =
        stdout(&o).lines().filter_map(|l| Some(l.split_once(':')?.0.trim().to_string())).collect();
    assert_eq!(interfaces, vec!["lo"], "{}", text(&o));
    assert!(c.ctr(&["task", "kill", "-s", "9", &id1]).status.success());
    wait_status(&c, &id1, "STOPPED");
    assert!(c.ctr(&["task", "delete", &id1]).status.success());
    assert!(c.ctr(&["container", "delete", &id1]).status.success());

    // A bad annotation: create fails, containerd shows the runtime's error, nothing runs.
    let id2 = id("badannot");
    let mut args = c.run_args(&["--rm", "--annotation", "dev.airlock.audit=maybe"], &id2);
    args.extend(["sh", "-c", "echo SHOULD-NOT-RUN"]);
    let o = c.ctr(&args);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!stdout(&o).contains("SHOULD-NOT-RUN"), "{}", text(&o));
    assert!(stderr(&o).contains("dev.airlock.audit"), "{}", text(&o));
    let _ = c.ctr(&["container", "delete", &id2]);
    for id in [&id1, &id2] {
        let left = c.wait_clean(id);
        assert!(left.is_empty(), "left behind: {left:#?}");
    }
}

/// `airlock oci ARGS…` as runtime-tools calls it: its own --root and --log, output to `out`.
fn oci(root: &std::path::Path, log: &std::path::Path, args: &[&str], out: &std::path::Path) -> std::process::Output {
    let out = std::fs::File::create(out).unwrap();
    Command::new(airlock_path())
        .arg("oci")
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(log)
        .args(["--log-format", "json"])
        .args(args)
        .env("AIRLOCK_STATE_DIR", root.join("airlock-state"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .output()
        .unwrap()
}

fn oci_state(root: &std::path::Path, log: &std::path::Path, id: &str) -> serde_json::Value {
    let o = Command::new(airlock_path())
        .arg("oci")
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(log)
        .args(["state", id])
        .env("AIRLOCK_STATE_DIR", root.join("airlock-state"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn the_runc_lifecycle_by_hand_create_state_start_kill_delete() {
    require_containerd!();
    let dir = TempDir::new("oci-cli");
    let root = dir.path().join("root");
    let log = dir.path().join("log.json");
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    busybox_rootfs(&bundle);
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "process": {"args": ["sh", "-c", "echo by-hand; sleep 600"], "env": ["PATH=/bin"], "cwd": "/",
                    "user": {"uid": 0, "gid": 0}},
        "hostname": "byhand",
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}]},
        "hooks": {"prestart": [{"path": "/bin/false"}]},
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    let id = id("byhand");
    let pid_file = dir.path().join("init.pid");
    let out = dir.path().join("out");
    let o = oci(
        &root,
        &log,
        &["create", "--bundle", bundle.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &id],
        &out,
    );
    assert!(o.status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let pid: i64 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let state = oci_state(&root, &log, &id);
    assert_eq!(state["status"], "created", "{state:#}");
    assert_eq!(state["pid"], pid, "{state:#}");
    assert_eq!(state["id"], id.as_str());
    // The refused hook is said in the log, as a warning.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"level\":\"warning\"") && logged.contains("hooks"), "{logged}");

    let o = oci(&root, &log, &["start", &id], &dir.path().join("start.out"));
    assert!(o.status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let started = Instant::now();
    while !std::fs::read_to_string(&out).unwrap_or_default().contains("by-hand") {
        assert!(started.elapsed() < Duration::from_secs(20), "no output: {:?}", std::fs::read_to_string(&out));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(oci_state(&root, &log, &id)["status"], "running");
    let o = oci(&root, &log, &["delete", &id], &dir.path().join("delete.out"));
    assert!(!o.status.success(), "a running container was deleted without --force");

    let o = oci(&root, &log, &["kill", &id, "KILL"], &dir.path().join("kill.out"));
    assert!(o.status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let started = Instant::now();
    while oci_state(&root, &log, &id)["status"] != "stopped" {
        assert!(started.elapsed() < Duration::from_secs(20), "still not stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    // runc's texts, which containerd's shim maps.
    let o = oci(&root, &log, &["kill", &id, "9"], &dir.path().join("kill2.out"));
    assert!(!o.status.success());
    let last = std::fs::read_to_string(&log).unwrap().lines().last().unwrap().to_string();
    let last: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains("container not running"), "{last}");

    let o = oci(&root, &log, &["delete", &id], &dir.path().join("delete2.out"));
    assert!(o.status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(!root.join(&id).exists());
    let sandboxes = std::fs::read_dir(root.join("airlock-state/sandboxes")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(sandboxes, 0, "the sandbox's state is left");
    let o = oci(&root, &log, &["delete", &id], &dir.path().join("delete3.out"));
    assert!(!o.status.success());
    let last = std::fs::read_to_string(&log).unwrap().lines().last().unwrap().to_string();
    assert!(last.contains("does not exist"), "{last}");

    // dev.airlock.profile names a built-in or a file in /etc/airlock/profiles, never a path: a pod's author is not
    // the host's administrator, and a profile can widen what a sandbox sees.
    for (value, refused) in
        [("/etc/passwd", true), ("../../etc/passwd", true), ("no-such-profile", true), ("default", false)]
    {
        let mut config = config.clone();
        config["annotations"] = serde_json::json!({"dev.airlock.profile": value});
        config["hooks"] = serde_json::json!({});
        std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
        let id = format!("{id}-p{}", value.len());
        let args = ["create", "--bundle", bundle.to_str().unwrap(), "--pid-file", pid_file.to_str().unwrap(), &id];
        let o = oci(&root, &log, &args, &dir.path().join("profile.out"));
        let last = std::fs::read_to_string(&log).unwrap().lines().last().unwrap_or_default().to_string();
        assert_eq!(!o.status.success(), refused, "dev.airlock.profile={value}: {last}");
        if refused {
            assert!(last.contains("dev.airlock.profile") && last.contains("\"level\":\"error\""), "{last}");
            assert!(!root.join(&id).exists(), "a refused create left its state");
        } else {
            let o = oci(&root, &log, &["delete", "--force", &id], &dir.path().join("profile-delete.out"));
            assert!(o.status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
    }
    let sandboxes = std::fs::read_dir(root.join("airlock-state/sandboxes")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(sandboxes, 0, "a sandbox's state is left");
}
