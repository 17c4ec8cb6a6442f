//! `--isolation vm` with limits: QEMU runs in a host cgroup of its own whose limits are the VM's (its RAM plus
//! QEMU's overhead, `--cpus` as a CPU quota, a bound on QEMU's threads), made by the namespace backend's cgroup
//! code (v1 or v2) and gone after the run; the asked limit still holds for the command inside the guest; a
//! rootless run gets what the namespace backend gives (a delegated cgroup, or the same refusal). TCG guests, as
//! in vm.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod vm_support;

use std::io::{Read, Write};
use std::path::PathBuf;

use common::{code, stderr};
use vm_support::{cgroup_dirs, cgroup_file, wait_gone, Running};

/// The guest's RAM for `--memory 128M` (vm::MEMORY_OVERHEAD_MIB over it) and QEMU's overhead under TCG
/// (vm::cgroup: its base 128 MiB and the 128 MiB translation cache).
const GUEST_MIB: u64 = 128 + 256;
const VMM_OVERHEAD_TCG_MIB: u64 = 128 + 128;

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

#[test]
fn qemu_runs_in_a_host_cgroup_of_the_vms_size_which_goes_with_it_and_the_guest_limit_still_kills_a_hog() {
    require_vm!();
    let name = format!("vml-cg-{}", std::process::id());
    // The guest waits for a line on its standard input while the test looks at QEMU's cgroup; then it allocates
    // twice its --memory.
    let (mut run, line) = Running::start(&[
        "run",
        "--isolation",
        "vm",
        "--name",
        &name,
        "--memory",
        "128M",
        "--cpus",
        "1",
        "--",
        "/bin/sh",
        "-c",
        "echo up; read go; exec /usr/bin/python3 -c 'b = b\"x\" * (256 << 20); print(\"ALIVE\", len(b))'",
    ]);
    assert_eq!(line.trim(), "up");
    let dirs = cgroup_dirs(run.qemu);
    let ours: Vec<PathBuf> =
        dirs.iter().map(|(_, d)| d.clone()).filter(|d| d.to_string_lossy().contains(&format!("-vmm-{name}"))).collect();
    assert!(!ours.is_empty(), "qemu {} is in no cgroup of its own: {dirs:?}", run.qemu);
    let expected_memory = (GUEST_MIB + VMM_OVERHEAD_TCG_MIB) << 20;
    let pids_max;
    if let Some(limit) = cgroup_file(run.qemu, "memory.limit_in_bytes") {
        // cgroup v1 (this machine: hybrid).
        assert_eq!(read(&limit).parse::<u64>().unwrap(), expected_memory, "{}", limit.display());
        let quota = cgroup_file(run.qemu, "cpu.cfs_quota_us").expect("qemu's cpu cgroup");
        let period = cgroup_file(run.qemu, "cpu.cfs_period_us").unwrap();
        assert_eq!((read(&quota), read(&period)), ("100000".to_string(), "100000".to_string()));
        pids_max = read(&cgroup_file(run.qemu, "pids.max").expect("qemu's pids cgroup"));
    } else {
        let max = cgroup_file(run.qemu, "memory.max").expect("qemu's memory cgroup (v2)");
        assert_eq!(read(&max).parse::<u64>().unwrap(), expected_memory);
        assert_eq!(read(&cgroup_file(run.qemu, "cpu.max").unwrap()), "100000 100000");
        pids_max = read(&cgroup_file(run.qemu, "pids.max").unwrap());
    }
    assert_eq!(pids_max, "128");
    // Every thread of QEMU is inside (it joined before exec: no thread was left in airlock's cgroup).
    let procs: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", run.qemu))
        .unwrap()
        .flatten()
        .map(|t| std::fs::read_to_string(t.path().join("cgroup")).unwrap())
        .collect();
    assert!(procs.iter().all(|c| c.contains(&format!("-vmm-{name}"))), "{procs:?}");

    run.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    run.out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    run.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = run.child.wait().unwrap();
    // The guest's engine applied --memory to the command inside the guest: killed there, reported as the
    // namespace backend reports it, and the VM itself (well under its host limit) was not.
    assert_eq!(status.code(), Some(137), "stdout: {rest}\nstderr: {err}");
    assert!(!rest.contains("ALIVE"), "{rest}");
    assert!(err.contains("out of memory"), "{err}");
    // QEMU is gone and so is its cgroup, in every hierarchy.
    assert!(wait_gone(run.qemu, 10));
    for dir in &ours {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}

#[test]
fn without_limits_qemu_gets_no_cgroup_and_a_killed_airlocks_cgroup_is_swept() {
    require_vm!();
    let name = format!("vml-kill-{}", std::process::id());
    let (mut run, line) = Running::start(&[
        "run",
        "--isolation",
        "vm",
        "--name",
        &name,
        "--pids",
        "50",
        "--",
        "/bin/sh",
        "-c",
        "echo up; sleep 120",
    ]);
    assert_eq!(line.trim(), "up");
    let ours: Vec<PathBuf> = cgroup_dirs(run.qemu)
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d.to_string_lossy().contains(&format!("-vmm-{name}")))
        .collect();
    assert!(!ours.is_empty(), "--pids alone puts qemu in a cgroup too");
    run.child.kill().unwrap();
    run.child.wait().unwrap();
    assert!(wait_gone(run.qemu, 10), "qemu outlived airlock");
    // The next run that makes a cgroup (a cheap namespace one) sweeps the dead owner's.
    let o = common::airlock(&["run", "--memory", "64M", "--", "/bin/true"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for dir in &ours {
        assert!(!dir.exists(), "{} is left after the sweep", dir.display());
    }

    // No limit asked: QEMU stays in airlock's cgroup.
    let (mut run, _) = Running::start(&["run", "--isolation", "vm", "--", "/bin/sh", "-c", "echo up; read x"]);
    let mine = std::fs::read_to_string(format!("/proc/{}/cgroup", run.child.id())).unwrap();
    let qemus = std::fs::read_to_string(format!("/proc/{}/cgroup", run.qemu)).unwrap();
    assert_eq!(qemus, mine);
    run.child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let mut rest = Vec::new();
    run.out.read_to_end(&mut rest).unwrap();
    assert_eq!(run.child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_user_gets_the_namespace_backends_answer_for_limits() {
    require_vm!();
    if common::test_user().is_none() {
        skip_or_fail!("cannot create the test user");
    }
    let dir = common::TempDir::new("vml-user");
    std::os::unix::fs::chown(dir.path(), Some(common::test_user_uid()), None).unwrap();
    let state = dir.path().join("state");
    let env = ["AIRLOCK_VM_ACCEL=tcg".to_string()];
    let limits = ["--memory", "64M", "--cpus", "1"];
    let ns = common::airlock_as_user_in(&state, &env, &[&["run"][..], &limits, &["--", "/bin/true"]].concat());
    let vm = common::airlock_as_user_in(
        &state,
        &env,
        &[&["run", "--isolation", "vm"][..], &limits, &["--", "/bin/true"]].concat(),
    );
    // Same answer: both run (a delegated v2 cgroup) or both refuse with 125, naming the cgroup layer and a fix.
    assert_eq!(code(&vm), code(&ns), "namespaces: {}\nvm: {}", stderr(&ns), stderr(&vm));
    if code(&vm) == 125 {
        let (ns_err, vm_err) = (stderr(&ns), stderr(&vm));
        assert!(vm_err.contains("cannot enforce") && vm_err.contains("to fix"), "{vm_err}");
        let reason = |e: &str| e.split("cannot enforce").nth(1).unwrap_or_default().trim().to_string();
        assert_eq!(reason(&vm_err), reason(&ns_err), "namespaces: {ns_err}\nvm: {vm_err}");
        assert!(vm_err.lines().count() == 1, "{vm_err}");
    }
}

#[test]
fn qemu_killed_by_its_host_cgroups_limit_is_reported_as_such() {
    require_vm!();
    let name = format!("vml-oom-{}", std::process::id());
    let (mut run, line) = Running::start(&[
        "run",
        "--isolation",
        "vm",
        "--name",
        &name,
        "--memory",
        "256M",
        "--",
        "/bin/sh",
        "-c",
        "echo up; read go; exec /usr/bin/python3 -c 'b = b\"x\" * (200 << 20); print(\"ALIVE\")'",
    ]);
    assert_eq!(line.trim(), "up");
    // The host squeezes QEMU's cgroup to what it uses now and a little: the guest's next 200 MiB cannot be had.
    let (usage, limit) = match cgroup_file(run.qemu, "memory.limit_in_bytes") {
        Some(limit) => (cgroup_file(run.qemu, "memory.usage_in_bytes").unwrap(), limit),
        None => (cgroup_file(run.qemu, "memory.current").unwrap(), cgroup_file(run.qemu, "memory.max").unwrap()),
    };
    let squeezed = read(&usage).parse::<u64>().unwrap() + (16 << 20);
    std::fs::write(&limit, squeezed.to_string()).unwrap();
    run.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    run.out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    run.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(125), "stdout: {rest}\nstderr: {err}");
    assert!(!rest.contains("ALIVE"), "{rest}");
    assert!(err.contains("QEMU was killed by its host cgroup's memory limit"), "{err}");
    assert!(wait_gone(run.qemu, 10));
    assert!(!limit.parent().unwrap().exists(), "{} is left", limit.parent().unwrap().display());
}

#[test]
fn a_created_vms_qemu_is_in_its_host_cgroup_until_it_stops() {
    require_vm!();
    let name = format!("vml-held-{}", std::process::id());
    let o = vm_support::vm(&["create", "--isolation", "vm", "--memory", "128M", "--cpus", "1", &name], b"");
    assert_eq!(code(&o), 0, "create: {}", stderr(&o));
    let record = vm_support::state_dir().join("sandboxes").join(&name).join("sandbox.json");
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    let qemu = record["init_pid"].as_i64().unwrap() as i32;
    let ours: Vec<PathBuf> = cgroup_dirs(qemu)
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d.to_string_lossy().contains(&format!("-vmm-{name}")))
        .collect();
    let limit = cgroup_file(qemu, "memory.limit_in_bytes").or_else(|| cgroup_file(qemu, "memory.max"));
    let stop = || {
        let _ = vm_support::airlock_cmd(&["stop", &name]).output();
        let _ = vm_support::airlock_cmd(&["rm", &name]).output();
    };
    if ours.is_empty() || limit.is_none() {
        stop();
        panic!("the held VM's qemu {qemu} is in no cgroup of its own: {:?}", cgroup_dirs(qemu));
    }
    assert_eq!(read(&limit.unwrap()).parse::<u64>().unwrap(), (GUEST_MIB + VMM_OVERHEAD_TCG_MIB) << 20);
    // The guest's limit holds for an exec too.
    let hog =
        vm_support::vm(&["exec", &name, "--", "/usr/bin/python3", "-c", "b = b'x' * (256 << 20); print('ALIVE')"], b"");
    stop();
    assert_eq!(code(&hog), 137, "{}", stderr(&hog));
    assert!(wait_gone(qemu, 15));
    for dir in &ours {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
