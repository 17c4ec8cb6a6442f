//! `--ro-bind FILE` and `--bind FILE` in a VM: 9p exports directories only, so each bound file is bound over a
//! placeholder in a staging directory (in QEMU's own mount namespace) which is exported; the guest's engine binds
//! it where the policy says. Real QEMU under TCG (as tests/vm.rs says why).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod vm_support;

use std::os::unix::fs::MetadataExt;

use common::{code, stderr, stdout, TempDir};

#[test]
fn bound_files_reach_the_guest_read_only_or_writable_as_asked_and_nothing_is_left() {
    require_vm!();
    let dir = TempDir::new("vm-binds");
    let ro = dir.path().join("ro.txt");
    let rw = dir.path().join("rw.txt");
    std::fs::write(&ro, "read me\n").unwrap();
    std::fs::write(&rw, "before\n").unwrap();
    // A writable file of an ordinary user's: root inside maps to its owner and writes as that user.
    std::os::unix::fs::chown(&rw, Some(4242), Some(4242)).unwrap();
    // airlock's temporary directory is one of the test's own, to find its staging directory in.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let ro_bind = format!("{}:/tmp/ro.txt", ro.display());
    let rw_bind = format!("{}:/tmp/rw.txt", rw.display());
    let script = "cat /tmp/ro.txt; echo x >> /tmp/ro.txt 2>/dev/null; echo ro_write=$?; \
                  echo after >> /tmp/rw.txt; echo rw_write=$?; cat /tmp/rw.txt";
    let mut cmd = vm_support::airlock_cmd(&[
        "run",
        "--isolation",
        "vm",
        "--ro-bind",
        &ro_bind,
        "--bind",
        &rw_bind,
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    cmd.env("TMPDIR", &tmp);
    let o = vm_support::output_with_input(cmd, b"");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("read me\n"), "{out}");
    assert!(out.contains("ro_write=") && !out.contains("ro_write=0"), "the read-only file was written: {out}");
    assert!(out.contains("rw_write=0\nbefore\nafter\n"), "{out}");
    assert_eq!(std::fs::read_to_string(&ro).unwrap(), "read me\n");
    assert_eq!(std::fs::read_to_string(&rw).unwrap(), "before\nafter\n");
    assert_eq!(std::fs::metadata(&rw).unwrap().uid(), 4242, "the written file changed owner");
    // The staging directory goes with the run; nothing stays mounted on the host.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left in airlock's temporary directory: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("airlock-vm-files-"), "{mounts}");

    // Neither a directory nor a regular file: refused before anything starts.
    let o = vm_support::vm(&["run", "--isolation", "vm", "--ro-bind", "/dev/null:/tmp/n", "--", "true"], b"");
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert_eq!(
        stderr(&o).trim_end(),
        "airlock: --isolation vm does not support binding /dev/null (neither a directory nor a regular file) yet"
    );
}

#[test]
fn a_user_binds_a_file_into_a_vm_read_only() {
    require_vm!();
    let Some(_) = common::test_user() else {
        skip_or_fail!("cannot create the test user");
    };
    let uid = common::test_user_uid();
    let dir = TempDir::new("vm-binds-user");
    let file = dir.path().join("mine.txt");
    std::fs::write(&file, "the user's\n").unwrap();
    for path in [dir.path(), file.as_path()] {
        std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    }
    let state = dir.path().join("state");
    let bind = format!("{}:/tmp/mine.txt", file.display());
    let o = common::airlock_as_user_in(
        &state,
        &["AIRLOCK_VM_ACCEL=tcg".to_string()],
        &[
            "run",
            "--isolation",
            "vm",
            "--ro-bind",
            &bind,
            "--",
            "/bin/sh",
            "-c",
            "cat /tmp/mine.txt; echo y >> /tmp/mine.txt 2>/dev/null; echo w=$?",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("the user's\nw=") && !out.contains("w=0"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "the user's\n");
}
