//! Checkpoint and rollback of a running `--isolation vm` sandbox: its workspace overlay, which lives in its QEMU's
//! mount namespace, is replaced in place there.
//!
//! The guest reaches the workspace through virtio-9p: QEMU exports a staging directory (see `session::vm`) and the
//! overlay is mounted on its subdirectory `workspace`, which the guest binds at the workspace's path. QEMU's 9p
//! server resolves every request's path again from the export's root (an unopened fid is a path), so a lookup
//! crosses whatever overlay is mounted on that subdirectory *now*: a new overlay mounted there is what the guest's
//! next lookups and new commands see. Files the guest has open stay descriptors of QEMU's on the old overlay. The
//! guest mounts its shares `cache=none` (no page cache, no dentry kept once unused), and the share's inode
//! numbers carry the overlay's device (`multidevs=remap`), so a file of the new overlay is never taken for one of
//! the old.
//!
//! The three steps of [`super::live`], with the VM's own freeze:
//!
//! 1. [`LiveVm::freeze`]: QEMU gets `SIGSTOP` (by pidfd), and every one of its threads (the vCPUs, 9p's workers,
//!    the main loop) is waited for until it is stopped: no guest code runs and no 9p request is being served
//!    (a system call in flight completes before its thread stops). A helper then enters QEMU's mount namespace
//!    (and, for a user's QEMU, its user namespace first: the user's own), `syncfs`es the overlay and makes its
//!    mount read-only. The kernel refuses that (`EBUSY`) while QEMU holds a file of it open for writing (a
//!    guest process's open file): then QEMU continues and the caller refuses.
//! 2. The caller renames the layer directories on the host (QEMU's mount namespace is a private copy of the
//!    host's: the same directories).
//! 3. [`LiveVm::swap`]: the helper opens the new stack's directories in QEMU's namespace, mounts the new overlay
//!    detached, takes the old one off the mount point and moves the new one there, then QEMU continues.
//!
//! What the guest sees: its next path lookups and new commands see the new tree. A file it has open stays the
//! old overlay's, now read-only (`EROFS` on write: a frozen layer never changes); a directory a running process
//! is in is a path to QEMU and is found again in the new tree (or is gone, after a rollback). The guest's clock
//! jumps by the time QEMU was stopped.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use runtime::failure::os_error;
use runtime::mounts::{self, OverlayFds};
use runtime::namespaces::Kind;
use runtime::plan::MAX_FROZEN_LAYERS;
use sys::namespace;
use sys::process::Forked;

use super::live::{
    at, helper_outcome, make_read_only, open_dir, open_stack, replace_mount, report_failure, stat_says_stopped,
    LiveError, LiveStep, NewStack, StepResult,
};

/// How long QEMU's threads have to stop after `SIGSTOP`.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The running VM sandbox, by pidfd on its QEMU (checked against the recorded start time: not a reused pid).
pub struct LiveVm {
    name: String,
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// QEMU's mount namespace, where the overlay is mounted.
    mnt_ns: OwnedFd,
    /// QEMU's user namespace when it is not ours: a user's QEMU makes its own (its ids mapped to themselves), which
    /// owns its mount namespace. Host root's QEMU is in the host's.
    user_ns: Option<OwnedFd>,
    /// Where the overlay is mounted in QEMU's mount namespace.
    mount_point: CString,
}

enum VmOp<'a> {
    Freeze,
    Swap(&'a NewStack),
    Thaw,
}

impl LiveVm {
    pub fn open(name: &str, qemu_pid: libc::pid_t, start_time: u64, mount_point: &Path) -> Result<LiveVm, LiveError> {
        let pidfd = sys::process::pidfd_open(qemu_pid).map_err(|e| match e {
            libc::ESRCH => LiveError::NotRunning(name.to_string()),
            e => LiveError::OpenInit(qemu_pid, os_error(e)),
        })?;
        let open_ns =
            |path: String| std::fs::File::open(path).map(OwnedFd::from).map_err(|e| LiveError::OpenInit(qemu_pid, e));
        let mnt_ns = open_ns(format!("/proc/{qemu_pid}/ns/{}", Kind::Mount.proc_name()))?;
        let user_ns = open_ns(format!("/proc/{qemu_pid}/ns/{}", Kind::User.proc_name()))?;
        let ours = open_ns(format!("/proc/self/ns/{}", Kind::User.proc_name()))?;
        let identity = |ns: &OwnedFd| {
            sys::fs::fstatat(ns.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
                .map(|st| (st.st_dev, st.st_ino))
                .map_err(|e| LiveError::Helper(os_error(e)))
        };
        let user_ns = if identity(&user_ns)? == identity(&ours)? { None } else { Some(user_ns) };
        let mount_point = CString::new(mount_point.as_os_str().as_encoded_bytes())
            .map_err(|_| LiveError::Step(LiveStep::OpenWorkspace, os_error(libc::EINVAL)))?;
        // After the opens: they are known to be QEMU's, not a process's that reused its pid.
        if runtime::host::process_start_time(qemu_pid) != Some(start_time) {
            return Err(LiveError::NotRunning(name.to_string()));
        }
        Ok(LiveVm { name: name.to_string(), pid: qemu_pid, pidfd, mnt_ns, user_ns, mount_point })
    }

    /// Step 1 (see the module's documentation). On error, the VM runs on as before.
    pub fn freeze(&self) -> Result<(), LiveError> {
        self.stop()?;
        let frozen = self.in_qemu_namespaces(&VmOp::Freeze);
        if frozen.is_err() {
            let _ = self.resume();
        }
        frozen
    }

    /// Step 3: the new overlay in place of the old, then QEMU continues. On error the old overlay is still in
    /// place (read-only, QEMU stopped, until [`LiveVm::thaw`]).
    pub fn swap(&self, stack: &NewStack) -> Result<(), LiveError> {
        if stack.frozen.len() > MAX_FROZEN_LAYERS {
            return Err(LiveError::TooManyLayers(stack.frozen.len()));
        }
        self.in_qemu_namespaces(&VmOp::Swap(stack))?;
        self.resume()
    }

    /// Undoes [`LiveVm::freeze`] after a failure in between: the old mount writable again, QEMU continued.
    pub fn thaw(&self) -> Result<(), LiveError> {
        let writable = self.in_qemu_namespaces(&VmOp::Thaw);
        let resumed = self.resume();
        writable.and(resumed)
    }

    /// `SIGSTOP` to QEMU, then waits until each of its threads is stopped.
    fn stop(&self) -> Result<(), LiveError> {
        sys::process::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGSTOP).map_err(|e| match e {
            libc::ESRCH => LiveError::NotRunning(self.name.clone()),
            e => LiveError::Step(LiveStep::StopVm, os_error(e)),
        })?;
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match all_threads_stopped(self.pid) {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                Ok(false) => {
                    let _ = self.resume();
                    return Err(LiveError::StopTimeout);
                }
                Err(e) => {
                    let _ = self.resume();
                    return Err(LiveError::Step(LiveStep::StopVm, e));
                }
            }
        }
    }

    fn resume(&self) -> Result<(), LiveError> {
        sys::process::pidfd_send_signal(self.pidfd.as_fd(), libc::SIGCONT)
            .map_err(|e| LiveError::Step(LiveStep::ContinueVm, os_error(e)))
    }

    /// Forks a helper that enters QEMU's namespaces and does `op` there; it reports a failed step on a pipe.
    fn in_qemu_namespaces(&self, op: &VmOp<'_>) -> Result<(), LiveError> {
        let (read_end, write_end) = sys::fd::pipe_cloexec().map_err(|e| LiveError::Helper(os_error(e)))?;
        // airlock is single-threaded (`fork` refuses otherwise), as entering a user namespace needs; the child
        // does async-signal-safe work only (system calls on data prepared before the fork, fixed-size buffers)
        // and leaves with _exit.
        match sys::process::fork() {
            Ok(Forked::Child) => {
                drop(read_end);
                let report = write_end.as_raw_fd();
                if let Err((step, errno)) = self.helper(op) {
                    report_failure(report, step, errno)
                }
                sys::process::exit_immediately(0)
            }
            Ok(Forked::Parent(pid)) => {
                drop(write_end);
                helper_outcome(pid, read_end)
            }
            Err(e) => Err(LiveError::Helper(os_error(e))),
        }
    }

    /// In the forked helper.
    fn helper(&self, op: &VmOp<'_>) -> StepResult {
        // Nothing may ptrace us while we hold capabilities in QEMU's namespaces.
        let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 0);
        // A user's QEMU: its user namespace (ours, made by our user: all capabilities in it) before its mount
        // namespace, which it owns.
        if let Some(user_ns) = &self.user_ns {
            namespace::setns(user_ns.as_fd(), Kind::User.flag()).map_err(at(LiveStep::EnterNamespaces))?;
        }
        namespace::setns(self.mnt_ns.as_fd(), Kind::Mount.flag()).map_err(at(LiveStep::EnterNamespaces))?;
        let mount_point: &CStr = &self.mount_point;
        match op {
            VmOp::Freeze => {
                let ws = open_dir(mount_point).map_err(at(LiveStep::OpenWorkspace))?;
                // The layer's data on disk before it is frozen.
                sys::fs::syncfs(ws.as_fd()).map_err(at(LiveStep::Sync))?;
                make_read_only(ws.as_raw_fd(), true)
            }
            VmOp::Thaw => {
                let ws = open_dir(mount_point).map_err(at(LiveStep::OpenWorkspace))?;
                make_read_only(ws.as_raw_fd(), false)
            }
            VmOp::Swap(stack) => {
                // The layers as QEMU's namespace has them (a private copy of the host's: the same directories),
                // the overlay made as QEMU's launcher made the first one (`userxattr`, in its namespaces).
                let mut fds = OverlayFds { source: 0, ..OverlayFds::NONE };
                if let Err(e) = open_stack(stack, &mut fds) {
                    fds.close_all();
                    return Err((LiveStep::OpenLayers, e));
                }
                let mut trees = [-1];
                mounts::mount_workspace_overlay(&fds, &mut trees).map_err(|f| (LiveStep::MountOverlay, f.errno))?;
                replace_mount(mount_point, trees[0])
            }
        }
    }
}

/// Whether every thread of `pid` (`/proc/PID/task/*/stat`) is stopped (`T`, `t`) or gone.
fn all_threads_stopped(pid: libc::pid_t) -> Result<bool, std::io::Error> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = match std::fs::read(task?.path().join("stat")) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => return Err(e),
        };
        if !stat_says_stopped(&stat) {
            return Ok(false);
        }
    }
    Ok(true)
}
