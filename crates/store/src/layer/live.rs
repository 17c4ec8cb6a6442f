//! Checkpoint and rollback of a *running* long-lived sandbox: its workspace overlay is replaced in place.
//!
//! Overlayfs does not allow its layers to change under a mounted overlay, so the caller (the `airlock checkpoint`
//! or `rollback` process, on the host) works in three steps, each of the two in-sandbox ones done by a helper
//! process that enters the sandbox's user, mount and pid namespaces (by pidfd on its init, as `airlock exec`
//! does) and takes the sandbox root's identity there:
//!
//! 1. [`LiveSandbox::freeze`]: every process of the sandbox (its pid namespace, init excepted: it runs no
//!    sandbox code) gets `SIGSTOP` (`kill(-1)` from inside, which reaches exactly that namespace and is applied
//!    to processes forking at that moment too); the helper waits until each is stopped, `syncfs`es the workspace,
//!    and makes the overlay's mount read-only (`mount_setattr`). The kernel refuses that while a file on it is
//!    open for writing (`EBUSY`): then everything is thawed and the caller refuses, since a writer holding a file
//!    of the old layer could change it after it was frozen.
//! 2. On the host, the caller renames the layer directories (the old upper becomes the checkpoint; or, for a
//!    rollback, is put aside) and opens the new stack's directories.
//! 3. [`LiveSandbox::swap`]: the helper mounts the new overlay (lower: the frozen layers and the workspace; a fresh
//!    upper and work; options as init's, `mounts::mount_workspace_overlay`), detaches the old one from the
//!    workspace's path and moves the new one there, then sends `SIGCONT` to everything it stopped.
//!
//! What running processes see: new opens, path lookups and new commands see the new tree. A process whose working
//! directory or open file is inside the workspace keeps that view of the old tree, now read-only (its writes fail
//! with `EROFS`, so they can never reach a frozen layer); after a rollback that old view is of layers that were
//! removed and may show errors. Landlock rules of processes started before the swap name the old mount's
//! directory, so under Landlock they cannot write to the new tree: run them again (`airlock exec`). Processes see
//! the stop and continue (a parent waiting with `WUNTRACED` is told).

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use runtime::failure::os_error;
use runtime::mounts::{self, OverlayFds};
use runtime::namespaces::{self, Kind};
use runtime::plan::MAX_FROZEN_LAYERS;
use runtime::userns::{translate_id, IdSide};
use sys::process::Forked;
use sys::{mount, namespace, Errno};

/// How long processes have to stop after `SIGSTOP` (a process in a long uninterruptible system call).
const STOP_WAIT_MS: u32 = 5000;
/// How often a freeze that waits sends `SIGSTOP` again (see `wait_all_stopped`).
const RESTOP_EVERY_MS: u32 = 50;
/// How long `EBUSY` from making the mount read-only is retried (a system call in flight when it stopped).
const READONLY_ATTEMPTS: u32 = 50;

/// Steps of the helper, for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LiveStep {
    EnterNamespaces = 1,
    SwitchIds,
    Stop,
    WaitStopped,
    OpenWorkspace,
    Sync,
    MakeReadOnly,
    OpenLayers,
    MountOverlay,
    CloneOld,
    DetachOld,
    MoveNew,
    Continue,
    Fork,
    Idmap,
    StopVm,
    ContinueVm,
}

impl LiveStep {
    pub(super) fn from_u32(n: u32) -> Option<LiveStep> {
        use LiveStep::*;
        [EnterNamespaces, SwitchIds, Stop, WaitStopped, OpenWorkspace, Sync, MakeReadOnly, OpenLayers, MountOverlay]
            .into_iter()
            .chain([CloneOld, DetachOld, MoveNew, Continue, Fork, Idmap, StopVm, ContinueVm])
            .find(|s| *s as u32 == n)
    }

    pub fn description(self) -> &'static str {
        match self {
            LiveStep::EnterNamespaces => "enter the sandbox's user, mount and pid namespaces",
            LiveStep::SwitchIds => "take the sandbox root's identity",
            LiveStep::Stop => "stop the sandbox's processes",
            LiveStep::WaitStopped => "wait for the sandbox's processes to stop",
            LiveStep::OpenWorkspace => "open the workspace inside the sandbox",
            LiveStep::Sync => "sync the workspace's layer",
            LiveStep::MakeReadOnly => "make the workspace's old overlay read-only",
            LiveStep::OpenLayers => "open the new stack's layers",
            LiveStep::MountOverlay => "mount the new workspace overlay",
            LiveStep::CloneOld => "keep a copy of the old workspace mount",
            LiveStep::DetachOld => "detach the old workspace overlay",
            LiveStep::MoveNew => "put the new overlay at the workspace's path",
            LiveStep::Continue => "let the sandbox's processes continue",
            LiveStep::Fork => "fork the helper inside the sandbox",
            LiveStep::Idmap => "mount the workspace and its layer idmapped for the new stack",
            LiveStep::StopVm => "stop the VM's QEMU",
            LiveStep::ContinueVm => "let the VM's QEMU continue",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("sandbox {0} is not running")]
    NotRunning(String),
    #[error("cannot open init (pid {}) of the sandbox: errno {}", .0, .1.raw_os_error().unwrap_or(0))]
    OpenInit(libc::pid_t, std::io::Error),
    #[error("cannot read the ids of the sandbox's init (pid {0}): {1}")]
    ReadIds(libc::pid_t, String),
    #[error("cannot start the helper: errno {}", .0.raw_os_error().unwrap_or(0))]
    Helper(std::io::Error),
    /// A process in the sandbox holds a file of the workspace open for writing.
    #[error(
        "a process in the sandbox has a file in the workspace open for writing, which would change the layer after \
         it was frozen; nothing was changed (retry once it has closed it, or stop the sandbox first)"
    )]
    WriterOpen,
    #[error("the sandbox's processes did not all stop within {}s; nothing was changed", STOP_WAIT_MS / 1000)]
    StopTimeout,
    #[error("cannot {}: {}", .0.description(), runtime::failure::os_error_text(.1))]
    Step(LiveStep, std::io::Error),
    #[error("the sandbox has {0} checkpoints; at most {MAX_FROZEN_LAYERS} can be stacked")]
    TooManyLayers(usize),
}

/// The running sandbox, by pidfd on its init (checked against the recorded start time: not a reused pid).
pub struct LiveSandbox {
    name: String,
    pidfd: OwnedFd,
    /// Its mount and pid namespaces (`/proc/PID/ns/`), entered by descriptor after its user namespace (entering
    /// them by pidfd then would need the right to ptrace init, lost with the host's capabilities).
    mnt_ns: OwnedFd,
    pid_ns: OwnedFd,
    /// Its user namespace (`/proc/PID/ns/user`): the maps of an idmapped workspace's mounts.
    user_ns: OwnedFd,
    /// Init's ids inside (what the helper becomes there: the overlay's copy-ups are done as its mounter).
    uid: u32,
    gid: u32,
}

/// The new stack's directories on the host: the frozen layers newest first, then the workspace.
pub struct NewStack {
    pub upper: CString,
    pub work: CString,
    pub frozen: Vec<CString>,
    pub lower: CString,
    /// A workspace owned by host root, mounted idmapped (see `runtime::rootfs`): the directory holding `upper`,
    /// `work` and the checkpoints, to be idmapped as init's was. `None`: no idmapping.
    pub idmapped_layer: Option<CString>,
}

enum Op<'a> {
    Freeze,
    Swap(&'a NewStack),
    /// Undo a freeze: the old mount writable again, processes continued.
    Thaw,
}

impl LiveSandbox {
    pub fn open(name: &str, init_pid: libc::pid_t, init_start_time: u64) -> Result<LiveSandbox, LiveError> {
        let pidfd = sys::process::pidfd_open(init_pid).map_err(|e| match e {
            libc::ESRCH => LiveError::NotRunning(name.to_string()),
            e => LiveError::OpenInit(init_pid, os_error(e)),
        })?;
        let open_ns = |ns: &str| {
            std::fs::File::open(format!("/proc/{init_pid}/ns/{ns}"))
                .map(OwnedFd::from)
                .map_err(|e| LiveError::OpenInit(init_pid, e))
        };
        let mnt_ns = open_ns(Kind::Mount.proc_name())?;
        let pid_ns = open_ns(Kind::Pid.proc_name())?;
        let user_ns = open_ns(Kind::User.proc_name())?;
        // Owned from here: dropped (its descriptors closed) on every error below.
        let mut sandbox = LiveSandbox { name: name.to_string(), pidfd, mnt_ns, pid_ns, user_ns, uid: 0, gid: 0 };
        // After the opens: they are known to be init's, not a process's that reused its pid.
        if runtime::host::process_start_time(init_pid) != Some(init_start_time) {
            return Err(LiveError::NotRunning(sandbox.name.clone()));
        }
        (sandbox.uid, sandbox.gid) = inside_ids_of(init_pid).map_err(|e| LiveError::ReadIds(init_pid, e))?;
        Ok(sandbox)
    }

    /// Step 1 (see the module's documentation). On error, the sandbox runs on as before.
    pub fn freeze(&self, workspace: &CStr) -> Result<(), LiveError> {
        self.run(workspace, &Op::Freeze)
    }

    /// Step 3: the new overlay in place of the old, then everything continues. On error the old overlay is still
    /// in place (read-only until [`LiveSandbox::thaw`]).
    pub fn swap(&self, workspace: &CStr, stack: &NewStack) -> Result<(), LiveError> {
        if stack.frozen.len() > MAX_FROZEN_LAYERS {
            return Err(LiveError::TooManyLayers(stack.frozen.len()));
        }
        self.run(workspace, &Op::Swap(stack))
    }

    /// Undoes [`LiveSandbox::freeze`] after a failure in between.
    pub fn thaw(&self, workspace: &CStr) -> Result<(), LiveError> {
        self.run(workspace, &Op::Thaw)
    }

    /// Forks a helper that enters the sandbox and forks the worker (which is then in the sandbox's pid
    /// namespace, with `/proc/self` its own); the worker reports a failed step on a pipe.
    fn run(&self, workspace: &CStr, op: &Op) -> Result<(), LiveError> {
        let (read_end, write_end) = sys::fd::pipe_cloexec().map_err(|e| LiveError::Helper(os_error(e)))?;
        // airlock is single-threaded (`fork` refuses otherwise); the child still does async-signal-safe work only
        // (system calls on data prepared before the fork, fixed-size buffers) and leaves with _exit.
        let helper = match sys::process::fork() {
            Ok(Forked::Child) => {
                drop(read_end);
                // By number: `helper_main` never returns (it exits), so `write_end` is never dropped in the
                // helper and the descriptor stays open for its report.
                helper_main(self, workspace, op, write_end.as_raw_fd())
            }
            Ok(Forked::Parent(pid)) => pid,
            Err(e) => {
                drop((read_end, write_end));
                return Err(LiveError::Helper(os_error(e)));
            }
        };
        drop(write_end);
        helper_outcome(helper, read_end)
    }
}

/// What a helper (`helper` forked with `read_end`'s pipe for its report) ended with: the step it reported as
/// failed, or success when it exited 0 without a report.
pub(super) fn helper_outcome(helper: libc::pid_t, read_end: OwnedFd) -> Result<(), LiveError> {
    let status = sys::wait::wait_for_exit(helper).unwrap_or(0);
    let mut report = [0u8; 8];
    let got = sys::fd::read(read_end.as_raw_fd(), &mut report);
    drop(read_end);
    match got {
        Ok(8) => {
            let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
            let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
            let step = LiveStep::from_u32(step).unwrap_or(LiveStep::Fork);
            Err(match (step, errno) {
                (LiveStep::MakeReadOnly, libc::EBUSY) => LiveError::WriterOpen,
                (LiveStep::WaitStopped, libc::ETIMEDOUT) => LiveError::StopTimeout,
                _ => LiveError::Step(step, os_error(errno)),
            })
        }
        _ if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => Ok(()),
        _ => Err(LiveError::Step(LiveStep::Fork, os_error(libc::ECHILD))),
    }
}

/// Writes a failed step's report (step, errno) to `report` and exits the helper with status 1.
pub(super) fn report_failure(report: RawFd, step: LiveStep, errno: Errno) -> ! {
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    let _ = sys::fd::write_all(report, &buf);
    sys::process::exit_immediately(1)
}

/// The helper: enters the namespaces, forks the worker, exits with its status.
fn helper_main(sandbox: &LiveSandbox, workspace: &CStr, op: &Op, report: RawFd) -> ! {
    let (pidfd, uid, gid) = (sandbox.pidfd.as_fd(), sandbox.uid, sandbox.gid);
    let fail = |step: LiveStep, errno: Errno| -> ! { report_failure(report, step, errno) };
    // Nothing in the sandbox may ptrace us while we hold capabilities in its namespace.
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 0);
    // The new overlay first, for a swap: overlayfs takes private clones of its layers' mounts, which must be in
    // the mounter's mount namespace, and the sandbox's no longer holds the host's paths. So, in the sandbox's user
    // namespace, a copy of the host's mount namespace, where the layers are opened (with our host credentials,
    // like init), then the overlay is made as the sandbox's root, detached, to be moved into the sandbox's mount
    // namespace by the worker.
    let mut new_overlay = -1;
    if let Op::Swap(stack) = op {
        // An idmapped workspace: while we are still host root (`MOUNT_ATTR_IDMAP` needs it), a private copy of the
        // host's mount namespace with the workspace and its layer idmapped over themselves, as the supervisor made
        // them for init (`runtime::rootfs`); the sandbox's copy below is made from it.
        if let Some(layer) = &stack.idmapped_layer {
            let user_ns = sandbox.user_ns.as_raw_fd();
            let idmapped = namespace::unshare(Kind::Mount.flag())
                .and_then(|()| mount::make_all_private())
                .and_then(|()| runtime::rootfs::idmap_over_itself(&stack.lower, user_ns))
                .and_then(|()| runtime::rootfs::idmap_over_itself(layer, user_ns));
            if let Err(e) = idmapped {
                fail(LiveStep::Idmap, e);
            }
        }
        // This process is single-threaded, as entering a user namespace needs.
        let entered = namespace::setns(pidfd, Kind::User.flag()).and_then(|()| namespace::unshare(Kind::Mount.flag()));
        if let Err(e) = entered {
            fail(LiveStep::EnterNamespaces, e);
        }
        let mut fds = OverlayFds { source: 0, ..OverlayFds::NONE };
        if let Err(e) = open_stack(stack, &mut fds) {
            fds.close_all();
            fail(LiveStep::OpenLayers, e);
        }
        if let Err(e) = runtime::exec::switch_ids(uid, gid) {
            fds.close_all();
            fail(LiveStep::SwitchIds, e);
        }
        let mut trees = [-1];
        if let Err(f) = mounts::mount_workspace_overlay(&fds, &mut trees) {
            fail(LiveStep::MountOverlay, f.errno);
        }
        new_overlay = trees[0];
        let (mnt_ns, pid_ns) = (sandbox.mnt_ns.as_fd(), sandbox.pid_ns.as_fd());
        let entered =
            namespace::setns(mnt_ns, Kind::Mount.flag()).and_then(|()| namespace::setns(pid_ns, Kind::Pid.flag()));
        if let Err(e) = entered {
            fail(LiveStep::EnterNamespaces, e);
        }
    } else {
        const FLAGS: libc::c_int = namespaces::flags(&[Kind::User, Kind::Mount, Kind::Pid]);
        // This process is single-threaded, as entering a user namespace needs.
        if let Err(e) = namespace::setns(pidfd, FLAGS) {
            fail(LiveStep::EnterNamespaces, e);
        }
    }
    // As for the helper itself (single-threaded; the worker does async-signal-safe work only).
    match sys::process::fork() {
        Ok(Forked::Child) => {
            if let Err((step, e)) = worker(uid, gid, workspace, op, new_overlay) {
                fail(step, e);
            }
            sys::process::exit_immediately(0)
        }
        Ok(Forked::Parent(pid)) => {
            let status = sys::wait::wait_for_exit(pid).unwrap_or(0);
            let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            sys::process::exit_immediately(if ok { 0 } else { 1 })
        }
        Err(e) => fail(LiveStep::Fork, e),
    }
}

pub(super) type StepResult = Result<(), (LiveStep, Errno)>;

pub(super) fn at(step: LiveStep) -> impl Fn(Errno) -> (LiveStep, Errno) {
    move |e| (step, e)
}

/// In the sandbox's namespaces, as its root (pid namespace: our `kill(-1)` reaches its processes only).
fn worker(uid: u32, gid: u32, workspace: &CStr, op: &Op, new_overlay: RawFd) -> StepResult {
    runtime::exec::switch_ids(uid, gid).map_err(at(LiveStep::SwitchIds))?;
    match op {
        Op::Freeze => {
            signal_all(libc::SIGSTOP).map_err(at(LiveStep::Stop))?;
            let frozen = wait_all_stopped().and_then(|()| {
                let ws = open_dir(workspace).map_err(at(LiveStep::OpenWorkspace))?;
                // The layer's data on disk before it is frozen.
                let synced = sys::fs::syncfs(ws.as_fd());
                // `ws` is closed when it goes out of scope here.
                synced.map_err(at(LiveStep::Sync)).and_then(|()| make_read_only(ws.as_raw_fd(), true))
            });
            if frozen.is_err() {
                let _ = signal_all(libc::SIGCONT);
            }
            frozen
        }
        Op::Thaw => {
            let ws = open_dir(workspace).map_err(at(LiveStep::OpenWorkspace));
            let writable = ws.and_then(|fd| make_read_only(fd.as_raw_fd(), false));
            let continued = signal_all(libc::SIGCONT).map_err(at(LiveStep::Continue));
            writable.and(continued)
        }
        Op::Swap(_) => {
            // Again: a command `airlock exec` started since the freeze is stopped too while the mount changes.
            signal_all(libc::SIGSTOP).map_err(at(LiveStep::Stop))?;
            wait_all_stopped()?;
            replace_mount(workspace, new_overlay)?;
            signal_all(libc::SIGCONT).map_err(at(LiveStep::Continue))
        }
    }
}

/// Detaches the mount at `workspace` and moves `new` there. If the move fails, a clone of the old mount taken
/// first goes back, so the workspace is never left without its mount.
pub(super) fn replace_mount(workspace: &CStr, new: RawFd) -> StepResult {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    let old = mount::open_tree(libc::AT_FDCWD, workspace, flags).map_err(at(LiveStep::CloneOld))?;
    if let Err(e) = mount::umount2(workspace, libc::MNT_DETACH) {
        return Err((LiveStep::DetachOld, e));
    }
    let moved = mount::move_mount(new, mount::EMPTY, libc::AT_FDCWD, workspace, libc::MOVE_MOUNT_F_EMPTY_PATH);
    if let Err(e) = moved {
        let _ =
            mount::move_mount(old.as_raw_fd(), mount::EMPTY, libc::AT_FDCWD, workspace, libc::MOVE_MOUNT_F_EMPTY_PATH);
        return Err((LiveStep::MoveNew, e));
    }
    Ok(())
}

/// Opens the stack's directories into `fds` (no symlink anywhere on the way, as init opens them).
pub(super) fn open_stack(stack: &NewStack, fds: &mut OverlayFds) -> Result<(), Errno> {
    // By number: `OverlayFds` is a plan of raw descriptors (built without allocating, after the fork), closed by
    // its `close_all` or by `mounts::mount_workspace_overlay`.
    let open = |path: &CStr| {
        sys::fd::openat2(libc::AT_FDCWD, path, libc::O_PATH | libc::O_DIRECTORY, libc::RESOLVE_NO_SYMLINKS)
            .map(IntoRawFd::into_raw_fd)
    };
    fds.upper = open(&stack.upper)?;
    fds.work = open(&stack.work)?;
    for layer in &stack.frozen {
        let slot = fds.frozen.get_mut(fds.frozen_count).ok_or(libc::E2BIG)?;
        *slot = open(layer)?;
        fds.frozen_count += 1;
    }
    fds.lower = open(&stack.lower)?;
    Ok(())
}

pub(super) fn open_dir(path: &CStr) -> Result<OwnedFd, Errno> {
    sys::fd::open(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
}

/// The overlay's mount read-only (or writable again). `EBUSY` while a system call that writes is in flight is
/// retried; a file open for writing keeps it `EBUSY`.
pub(super) fn make_read_only(ws: RawFd, read_only: bool) -> StepResult {
    let (set, clear) = if read_only { (libc::MOUNT_ATTR_RDONLY, 0) } else { (0, libc::MOUNT_ATTR_RDONLY) };
    let mut attempts = 0;
    loop {
        match mount::mount_setattr(ws, mount::EMPTY, libc::AT_EMPTY_PATH as u32, set, clear) {
            Ok(()) => return Ok(()),
            Err(libc::EBUSY) if attempts < READONLY_ATTEMPTS => {
                attempts += 1;
                sys::time::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err((LiveStep::MakeReadOnly, e)),
        }
    }
}

/// `kill(-1, sig)`: every process of our pid namespace but init and us.
fn signal_all(sig: i32) -> Result<(), Errno> {
    match sys::signal::kill(-1, sig) {
        // No process to signal: nothing runs in the sandbox but init.
        Ok(()) | Err(libc::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits until every process of the namespace (from its `/proc`) but init and us is stopped or a zombie.
/// `SIGSTOP` goes out again every [`RESTOP_EVERY_MS`]: a command `airlock exec` started after the first one
/// (it joins the namespace from outside, so nothing stopped its creation) is stopped too instead of running on
/// until the wait gives up.
fn wait_all_stopped() -> StepResult {
    let mut waited = 0;
    loop {
        if all_stopped().map_err(at(LiveStep::WaitStopped))? {
            return Ok(());
        }
        if waited >= STOP_WAIT_MS {
            return Err((LiveStep::WaitStopped, libc::ETIMEDOUT));
        }
        sys::time::sleep(Duration::from_millis(1));
        waited += 1;
        if waited % RESTOP_EVERY_MS == 0 {
            signal_all(libc::SIGSTOP).map_err(at(LiveStep::Stop))?;
        }
    }
}

fn all_stopped() -> Result<bool, Errno> {
    let me = sys::process::pid() as u64;
    // Closed when this returns.
    let dir = sys::fd::open(c"/proc", libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = sys::dir::getdents64(dir.as_fd(), &mut buf)?;
        if n == 0 {
            return Ok(true);
        }
        for name in sys::dir::Entries::new(&buf[..n]) {
            let Some(pid) = parse_u64(name) else { continue };
            if pid == 1 || pid == me {
                continue;
            }
            if !is_stopped(dir.as_raw_fd(), name)? {
                return Ok(false);
            }
        }
    }
}

/// Whether `/proc/PID/stat`'s state is stopped (`T`, `t`) or gone (`Z`, `X`, or no such process any more), or
/// the process is a `vfork` parent waiting for its child (see below).
fn is_stopped(proc_dir: RawFd, pid: &[u8]) -> Result<bool, Errno> {
    let mut stat = [0u8; 512];
    let Some(n) = read_proc_file(proc_dir, pid, b"/stat", &mut stat)? else { return Ok(true) };
    let state = stat_state(&stat[..n]);
    if state_says_stopped(state) {
        return Ok(true);
    }
    // A `vfork` parent waits, uninterruptibly, until its child has exec'd or exited: SIGSTOP cannot stop it,
    // and it runs nothing of its own meanwhile. Its child is a process of the namespace, checked on its own, so
    // the parent counts as stopped (a shell such as dash vforks each command: a SIGSTOP that caught the child
    // between its vfork and its exec left the parent in `D` for good, and the freeze waited its 5 s out).
    if state == Some(b'D') {
        let mut wchan = [0u8; 64];
        if let Some(n) = read_proc_file(proc_dir, pid, b"/wchan", &mut wchan)? {
            return Ok(waits_for_vfork_child(&wchan[..n]));
        }
        return Ok(true);
    }
    Ok(false)
}

/// Whether `/proc/PID/wchan` names the kernel's wait of a `vfork` parent for its child (in `kernel_clone`, or
/// `wait_for_vfork_done` where the kernel did not inline it).
fn waits_for_vfork_child(wchan: &[u8]) -> bool {
    matches!(wchan, b"kernel_clone" | b"wait_for_vfork_done")
}

/// Reads `/proc/PID/FILE` (`file` starts with `/`) into `buf`; `None` when the process is gone.
fn read_proc_file(proc_dir: RawFd, pid: &[u8], file: &[u8], buf: &mut [u8]) -> Result<Option<usize>, Errno> {
    let mut path = [0u8; 32];
    if pid.len() + file.len() + 1 > path.len() {
        return Ok(None);
    }
    path[..pid.len()].copy_from_slice(pid);
    path[pid.len()..pid.len() + file.len()].copy_from_slice(file);
    // NUL-terminated: zeroed past the name (a pid holds no NUL).
    let Ok(path) = CStr::from_bytes_until_nul(&path) else { return Ok(None) };
    let fd = match sys::fd::openat(proc_dir, path, libc::O_RDONLY | libc::O_CLOEXEC, 0) {
        Ok(fd) => fd,
        Err(libc::ENOENT) | Err(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    let n = sys::fd::read(fd.as_raw_fd(), buf);
    drop(fd);
    match n {
        Ok(n) => Ok(Some(n)),
        Err(libc::ESRCH) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a `/proc/PID/stat` line's state is stopped (`T`, `t`) or gone (`Z`, `X`, or no state to read).
pub(super) fn stat_says_stopped(stat: &[u8]) -> bool {
    state_says_stopped(stat_state(stat))
}

/// Whether a state letter is stopped (`T`, `t`) or gone (`Z`, `X`, or none).
fn state_says_stopped(state: Option<u8>) -> bool {
    state.is_none_or(|s| matches!(s, b'T' | b't' | b'Z' | b'X'))
}

/// The state letter of a `/proc/PID/stat` line: after the last `)` (the command name may hold any byte).
fn stat_state(stat: &[u8]) -> Option<u8> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0')))
}

/// Init's ids inside its user namespace: its host ids (`/proc/PID/status`) looked up in its maps.
fn inside_ids_of(pid: libc::pid_t) -> Result<(u32, u32), String> {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| format!("{file}: {e}"));
    let status = read("status")?;
    let host_id = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("status has no {key}"))
    };
    let (uid, gid) = (host_id("Uid:")?, host_id("Gid:")?);
    let uid =
        translate_id(&read("uid_map")?, uid, IdSide::Outside).ok_or_else(|| format!("host uid {uid} is not mapped"))?;
    let gid =
        translate_id(&read("gid_map")?, gid, IdSide::Outside).ok_or_else(|| format!("host gid {gid} is not mapped"))?;
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(pid: libc::pid_t) -> Option<u8> {
        std::fs::read(format!("/proc/{pid}/stat")).ok().and_then(|stat| stat_state(&stat))
    }

    /// A process whose `vfork` child stopped before its exec (as a SIGSTOP sent by a freeze can catch a shell's
    /// child) stays in `D` and cannot be stopped itself: it counts as stopped; a sleeping process does not.
    #[test]
    fn a_vfork_parent_waiting_for_its_stopped_child_counts_as_stopped() {
        let parent = sys::process::fork_and_run(|| {
            let _ = sys::process::vfork_and_run(&mut || {
                let _ = sys::signal::kill(sys::process::pid(), libc::SIGSTOP);
                0
            });
            0
        })
        .unwrap();
        let sleeper = sys::process::fork_and_run(|| {
            std::thread::sleep(Duration::from_secs(30));
            0
        })
        .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while (state_of(parent) != Some(b'D') || state_of(sleeper) != Some(b'S'))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
        let proc_dir = sys::fd::open(c"/proc", libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC).unwrap();
        let parent_stopped = is_stopped(proc_dir.as_raw_fd(), parent.to_string().as_bytes());
        let sleeper_stopped = is_stopped(proc_dir.as_raw_fd(), sleeper.to_string().as_bytes());
        let parent_state = state_of(parent);
        // The stopped child dies, its parent's vfork returns and it exits.
        for child in children.split_whitespace().filter_map(|c| c.parse::<libc::pid_t>().ok()) {
            let _ = sys::signal::kill(child, libc::SIGKILL);
        }
        let _ = sys::signal::kill(sleeper, libc::SIGKILL);
        let _ = sys::wait::wait_for_exit(parent);
        let _ = sys::wait::wait_for_exit(sleeper);
        assert_eq!(parent_state, Some(b'D'), "the vfork parent's state");
        assert!(!children.trim().is_empty(), "the vfork child");
        assert_eq!(parent_stopped, Ok(true));
        assert_eq!(sleeper_stopped, Ok(false));
    }

    #[test]
    fn host_ids_map_back_inside() {
        let map = "         0 1879048192      65536\n";
        assert_eq!(translate_id(map, 1_879_048_192, IdSide::Outside), Some(0));
        assert_eq!(translate_id(map, 1_879_048_192 + 1000, IdSide::Outside), Some(1000));
        assert_eq!(translate_id(map, 0, IdSide::Outside), None);
        assert_eq!(translate_id("0 1000 1\n", 1000, IdSide::Outside), Some(0));
        assert_eq!(
            translate_id("0 1879048192 1000\n1000 1001 1\n1001 1879049193 64535\n", 1001, IdSide::Outside),
            Some(1000)
        );
    }

    #[test]
    fn stat_states_and_pids_parse() {
        assert_eq!(stat_state(b"12 (sh) T 1 12"), Some(b'T'));
        assert_eq!(stat_state(b"12 (a) b) S 1 12"), Some(b'S'));
        assert_eq!(stat_state(b"garbage"), None);
        assert_eq!(parse_u64(b"1234"), Some(1234));
        assert_eq!(parse_u64(b"self"), None);
        assert_eq!(parse_u64(b""), None);
        for step in 1..=17 {
            assert_eq!(LiveStep::from_u32(step).map(|s| s as u32), Some(step));
        }
    }
}
