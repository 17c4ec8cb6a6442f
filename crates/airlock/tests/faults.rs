//! Fault injection: `airlock run` killed with SIGKILL at each setup step (the debug build's
//! `AIRLOCK_FAULT_STOP=POINT` stops it there, see `runtime::fault`) leaves no process, no mount in the host's
//! namespace (under the state directory, the workspace, /run/airlock), and, once the next command has run, no
//! cgroup and no id-range lock; the killed run's kept state (its workspace layer), if it got that far, is listed
//! as not running and `rm` removes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next())
}

/// Every descendant of `pid` (by the parent field of /proc/N/stat).
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let ppid = stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.split_off(1)
}

/// The host namespace's mounts under `dir` (mount points), as mountinfo lists them.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

fn airlock_cgroups() -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().contains("airlock") {
                    *n += 1;
                }
                walk(&e.path(), n);
            }
        }
    }
    let mut n = 0;
    walk(Path::new("/sys/fs/cgroup"), &mut n);
    n
}

fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_at_each_setup_step_leaves_nothing_behind() {
    if !common::is_root() {
        skip_or_fail!("fault injection runs the cgroup and id-range steps, which need root");
    }
    require_sandbox!();
    let state = common::TempDir::new("faults");
    let ws = common::TempDir::new("faults-ws");
    std::fs::write(ws.path().join("a.txt"), "original\n").unwrap();
    let airlock = |args: &[&str], fault: Option<&str>| {
        let mut cmd = Command::new(common::airlock_path());
        cmd.args(args)
            .env("AIRLOCK_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(point) = fault {
            cmd.env("AIRLOCK_FAULT_STOP", point);
        }
        cmd
    };
    // What the machine has before (the other tests' sandboxes are gone: cargo runs one test binary at a time).
    let cgroups_before = airlock_cgroups();
    for point in runtime::fault::POINTS {
        let name = format!("fault-{point}");
        let mut run = airlock(
            &[
                "run",
                "--name",
                &name,
                "--memory",
                "256M",
                "--allow",
                "example.com",
                "--workspace",
                ws.str(),
                "--",
                "sleep",
                "100",
            ],
            Some(point),
        )
        .spawn()
        .unwrap();
        let pid = run.id();
        wait_until(&format!("airlock to stop at {point}"), 30, || state_of(pid) == Some('T'));
        let children = descendants(pid);
        run.kill().unwrap();
        let _ = run.wait();
        // The sandbox's init (parent-death signal) and the gateway (its socket to init closes) go with it.
        wait_until(&format!("{point}: the run's processes to go ({children:?})"), 20, || {
            children.iter().all(|c| state_of(*c).is_none_or(|s| s == 'Z'))
        });
        // Nothing of the run is mounted on the host: under the state directory, the workspace, /tmp, /run.
        for dir in [state.path(), ws.path(), Path::new("/run/airlock")] {
            assert_eq!(mounts_under(dir), Vec::<String>::new(), "{point}: a mount was left in the host's namespace");
        }
        // The next command cleans what it finds: the dead run's cgroup and its id-range lock.
        let next = airlock(&["run", "--memory", "64M", "--", "true"], None).output().unwrap();
        assert!(next.status.success(), "{point}: {}", String::from_utf8_lossy(&next.stderr));
        assert_eq!(airlock_cgroups(), cgroups_before, "{point}: a cgroup was left");
        let locks = std::fs::read_dir(state.path().join("id-ranges")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(locks, 0, "{point}: an id-range lock was left");
        // The killed run's kept state (its workspace layer) is there, not running, and rm removes it.
        let ls = airlock(&["ls"], None).stdout(Stdio::piped()).output().unwrap();
        let listed = String::from_utf8_lossy(&ls.stdout).into_owned();
        if let Some(line) = listed.lines().find(|l| l.starts_with(&name)) {
            assert!(!line.contains("running"), "{point}: {line}");
            let rm = airlock(&["rm", &name], None).output().unwrap();
            assert!(rm.status.success(), "{point}: rm: {}", String::from_utf8_lossy(&rm.stderr));
        }
        assert!(!state.path().join("sandboxes").join(&name).exists(), "{point}: the killed run's state stays");
    }
    assert_eq!(std::fs::read_to_string(ws.path().join("a.txt")).unwrap(), "original\n");
}
