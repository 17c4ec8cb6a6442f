//! `clone3(CLONE_INTO_CGROUP)`, the way the sandbox's init is born in its cgroup on cgroup v2, tested on a real
//! v2 hierarchy: `/sys/fs/cgroup` when it is pure v2, or `/sys/fs/cgroup/unified` on a hybrid host (a child
//! cgroup there needs no controllers for this).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests of the sys crate call raw syscalls to set up and check what it does, as the crate itself does.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use sys::{fd, process};

fn v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").is_file() && p.join("cgroup.controllers").is_file())
}

#[test]
fn child_is_born_in_the_given_v2_cgroup() {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let Some(root) = v2_root() else {
        assert!(!in_ci, "no cgroup v2 hierarchy mounted on this CI machine");
        eprintln!("SKIP: no cgroup v2 hierarchy is mounted");
        return;
    };
    let dir = root.join(format!("airlock-clone3-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        assert!(!in_ci, "cannot create {} on this CI machine: {e}", dir.display());
        eprintln!("SKIP: cannot create a v2 cgroup ({e}); this test needs root");
        return;
    }
    let cgroup_dir = std::fs::File::open(&dir).unwrap();
    let (release_read, release_write) = fd::pipe_cloexec().unwrap();
    let mut pidfd = -1;
    // SAFETY: the test's threads do not matter to a child that only reads a pipe and exits (both
    // async-signal-safe); the pidfd and the cgroup fd are live.
    let pid = unsafe { process::clone3_process(0, &mut pidfd, Some(std::os::fd::AsRawFd::as_raw_fd(&cgroup_dir))) };
    let pid = match pid {
        Ok(0) => {
            // The child's copy of the write end must go, or its read never sees EOF.
            drop(release_write);
            let mut byte = [0u8; 1];
            let _ = fd::read(release_read.as_raw_fd(), &mut byte);
            process::exit_immediately(0)
        }
        Ok(pid) => pid,
        Err(e) => panic!("clone3 failed: errno {e}"),
    };
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    drop(release_write);
    drop(release_read);
    let mut status = 0;
    // SAFETY: waitpid writes into a live local.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    fd::close(pidfd);
    let _ = std::fs::remove_dir(&dir);
    let name = dir.file_name().unwrap().to_str().unwrap();
    let v2_line = membership.lines().find(|l| l.starts_with("0::")).unwrap();
    assert!(v2_line.ends_with(&format!("/{name}")), "child's v2 cgroup is {v2_line}, expected .../{name}");
}
