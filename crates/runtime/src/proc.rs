//! A fresh `/proc` for the sandbox's pid namespace, with the entries that leak host state or change the host
//! masked or read-only (the list follows Docker's default masked/read-only paths, plus kernel-address leaks).
//!
//! Runs after `/dev` is built: masked files are covered with a clone of the sandbox's `/dev/null` bind, which can
//! only be cloned once it is attached in this mount namespace.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::failure::{fail, ChildFailure, Step};
use sys::mount::{self, attach, mkdir_and_open, new_fs, new_tmpfs, EMPTY, RESOLVE_INSIDE};
use sys::Errno;

// What needs masking: the sandbox's root is never host root (a dedicated id range, or the invoker), and the
// command holds no capability, so every /proc entry that only host root may read or write (mode 0400/0600/0200
// and owned by host root: kmsg, kpage*, timer_list, irq/*/smp_affinity, bus/pci/*, ...) is already out of its
// reach. Masks cost a mount each (~20 us), so they cover what the kernel shows to everyone, plus the entries
// the design names explicitly.

/// Files covered with `/dev/null`: reading them shows nothing, writing them changes nothing. Entries this kernel
/// does not have are skipped.
const MASKED_FILES: &[&CStr] = &[
    c"kcore",         // physical memory of the host (0400, but named by the design: masked wherever it exists)
    c"kallsyms",      // kernel symbol addresses (KASLR bypass where kptr_restrict allows)
    c"keys",          // keys of every keyring visible to the caller
    c"key-users",     // per-user key quotas of the host
    c"config.gz",     // the kernel's build configuration, a map of its weak spots
    c"latency_stats", // host-wide scheduling latency
    c"sched_debug",   // every host task's name and pid (older kernels)
    c"timer_stats",   // host timers with task names and pids (older kernels)
];

/// Directories covered with an empty read-only tmpfs.
const MASKED_DIRS: &[&CStr] = &[
    c"acpi",   // ACPI event and device control
    c"asound", // sound devices
    c"scsi",   // SCSI device control (writes rescan or remove host devices)
];

/// Entries made read-only, though their files belong to host root: sysctls of the namespaces the sandbox owns
/// (network, its user namespace) are writable by root inside, and SysRq is the host's emergency brake.
const READ_ONLY: &[&CStr] = &[c"sys", c"sysrq-trigger"];

/// Mounts a fresh procfs at `/proc` of the new root and applies the masks.
pub fn mount_proc(root: RawFd) -> Result<(), ChildFailure> {
    let proc = mount_fresh_proc(root).map_err(fail(Step::MountProc, 0))?;
    mask_proc_entries(root, proc.as_raw_fd())
}

fn mount_fresh_proc(root: RawFd) -> Result<OwnedFd, Errno> {
    let target = mkdir_and_open(root, c"proc", 0o555)?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    let mnt = new_fs(c"proc", [], attrs)?;
    let attached = attach(mnt.as_raw_fd(), target.as_raw_fd());
    // The mount point first, then (on failure) the mount.
    drop(target);
    attached?;
    Ok(mnt)
}

fn mask_proc_entries(root: RawFd, proc_fd: RawFd) -> Result<(), ChildFailure> {
    let mut index = 0usize;
    for name in MASKED_FILES {
        index += 1;
        let Some(target) = open_entry(proc_fd, name, false).map_err(fail(Step::MaskProcEntry, index))? else {
            continue;
        };
        let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
        let result =
            mount::open_tree(root, c"dev/null", flags).and_then(|null| attach(null.as_raw_fd(), target.as_raw_fd()));
        drop(target);
        result.map_err(fail(Step::MaskProcEntry, index))?;
    }
    for name in MASKED_DIRS {
        index += 1;
        let Some(target) = open_entry(proc_fd, name, true).map_err(fail(Step::MaskProcEntry, index))? else {
            continue;
        };
        let empty_ro =
            libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
        let result = new_tmpfs([(c"mode", c"0555"), (c"size", c"4k")], empty_ro)
            .and_then(|mnt| attach(mnt.as_raw_fd(), target.as_raw_fd()));
        drop(target);
        result.map_err(fail(Step::MaskProcEntry, index))?;
    }
    for name in READ_ONLY {
        index += 1;
        let Some(target) = open_entry(proc_fd, name, false).map_err(fail(Step::MaskProcEntry, index))? else {
            continue;
        };
        let result = remount_read_only(proc_fd, name, target.as_raw_fd());
        drop(target);
        result.map_err(fail(Step::MaskProcEntry, index))?;
    }
    Ok(())
}

/// Binds `/proc/NAME` onto itself read-only (recursively: `/proc/sys/fs/binfmt_misc` and the like included).
fn remount_read_only(proc_fd: RawFd, name: &CStr, target: RawFd) -> Result<(), Errno> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32;
    let tree = mount::open_tree(proc_fd, name, flags)?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    mount::mount_setattr(tree.as_raw_fd(), EMPTY, libc::AT_EMPTY_PATH as u32 | libc::AT_RECURSIVE as u32, attrs, 0)?;
    attach(tree.as_raw_fd(), target)
}

/// Opens `/proc/NAME` as an `O_PATH` mount target; `None` when this kernel has no such entry.
fn open_entry(proc_fd: RawFd, name: &CStr, dir: bool) -> Result<Option<OwnedFd>, Errno> {
    let flags = if dir { libc::O_PATH | libc::O_DIRECTORY } else { libc::O_PATH };
    match sys::fd::openat2(proc_fd, name, flags, RESOLVE_INSIDE) {
        Ok(fd) => Ok(Some(fd)),
        Err(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
