//! `runtime::cgroups` through its public API on this machine's real cgroups: 100 sandboxes' worth of create,
//! place, remove leave no directory behind, and what one create + remove costs.
//!
//! Skips with a printed reason when not root or when no cgroupfs is mounted; under `CI=true` a machine that has
//! cgroups must run it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use policy::sandbox::Limits;
use runtime::cgroups::{detect_layout, remove_stale_cgroups, CgroupLayout, SandboxCgroup, SYS_FS_CGROUP};

fn layout_or_skip() -> Option<CgroupLayout> {
    let layout = match detect_layout(Path::new(SYS_FS_CGROUP)) {
        Ok(layout) => layout,
        Err(e) => {
            println!("SKIP: {e}");
            return None;
        }
    };
    if !runtime::host::is_host_root() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: cgroups are mounted but the test is not root");
        println!("SKIP: needs root to create cgroups at the hierarchy's root");
        return None;
    }
    Some(layout)
}

#[test]
fn cgroups_of_a_hundred_sandboxes_leave_nothing_behind() {
    let Some(layout) = layout_or_skip() else { return };
    // Stale cgroups of earlier, killed runs would be counted below; clear them first.
    remove_stale_cgroups(&layout).unwrap();
    let limits = Limits { memory_bytes: Some(64 << 20), pids: Some(64), cpus: Some(1.5), ..Limits::default() };
    let mut made: Vec<PathBuf> = Vec::new();
    let (mut creating, mut removing) = (Duration::ZERO, Duration::ZERO);
    for i in 0..100 {
        let started = Instant::now();
        let cgroup = SandboxCgroup::create(&layout, &format!("run{i}"), &limits).unwrap();
        let created = started.elapsed();
        let mut child = Command::new("true").spawn().unwrap();
        // `true` may already have exited: a dead pid cannot be moved (ESRCH), which is fine here.
        let _ = cgroup.add_process(child.id() as i32);
        child.wait().unwrap();
        made.extend(cgroup.paths().into_iter().map(Path::to_path_buf));
        let stats = cgroup.stats().unwrap();
        assert_eq!(stats.memory_limit, Some(64 << 20));
        assert_eq!(stats.pids_limit, Some(64));
        let started = Instant::now();
        cgroup.remove().unwrap();
        creating += created;
        removing += started.elapsed();
    }
    let left: Vec<&PathBuf> = made.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    println!(
        "a cgroup with memory, pids and cpu limits, on average: create {:?}, remove {:?}",
        creating / 100,
        removing / 100
    );
}
