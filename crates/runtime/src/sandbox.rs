//! `airlock run`, top to bottom: the design's setup order in one place (`run_sandbox`), each step with the
//! reason it comes where it does. The sandbox's own steps (5–7) are in `init` and `exec`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::Duration;

use policy::sandbox::{Requirement, SandboxPolicy};

use crate::cgroups::{self, CgroupEntryPoint, CgroupStats, SandboxCgroup};
use crate::failure::{self, errno_text, os_error, os_error_text, ChildFailure, Step};
use crate::init::{self, InitFds};
use crate::namespaces;
use crate::prepare::{prepare_sandbox, HostContext, PrepareError, Prepared};
use crate::supervisor::{supervise, StateWatch};
use crate::userns;

/// Exit status for a run killed by `--timeout`.
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit status for a run killed for memory (128 + SIGKILL).
pub const EXIT_OUT_OF_MEMORY: i32 = 137;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("network gateway")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error("cannot create the sandbox's pipes: {}", os_error_text(.0))]
    CreatePipes(std::io::Error),
    #[error("cannot create namespaces (user, pid, mount, network, ipc, uts, cgroup): {}{}", os_error_text(.0), .1)]
    CloneNamespaces(std::io::Error, &'static str),
    #[error("cannot map user ids for the sandbox")]
    MapIds(#[from] userns::UsernsError),
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error("cannot set resource limits")]
    Cgroup(#[from] cgroups::CgroupError),
    #[error("cannot hand the copy-on-write layer {0} to the sandbox's root")]
    PrepareLayer(String, #[source] std::io::Error),
    #[error("cannot resume in the copy-on-write layer {path}: its files belong to host uid {had}, but this run's sandbox root is host uid {now} (resuming needs the same identity every run: a workspace owned by an ordinary user, whom root inside maps to, or by host root, mounted idmapped)")]
    LayerOwnerChanged { path: String, had: u32, now: u32 },
    #[error("the sandbox's cgroup path {0} contains a NUL byte")]
    CgroupPath(String),
    #[error("cannot open the sandbox's cgroup {0}")]
    OpenCgroup(String, #[source] std::io::Error),
    #[error("cannot wait for the sandbox: {}", os_error_text(.0))]
    Wait(std::io::Error),
    #[error("cannot record execs from the kernel's exec tracepoints (AIRLOCK_EXEC_RECORDS=kernel): {}: {}; unset AIRLOCK_EXEC_RECORDS to fall back to seccomp notification", os_error_text(.0), .1)]
    LoadExecTracer(std::io::Error, &'static str),
    #[error(
        "cannot point the exec tracer at the sandbox's pid namespace: {}; AIRLOCK_BPF_PIN_DIR= (empty) makes each run \
         load a program of its own, AIRLOCK_EXEC_RECORDS=seccomp records execs by seccomp notification",
        os_error_text(.0)
    )]
    FollowPidNamespace(std::io::Error),
    /// A setup step inside the sandbox failed; the message names the step and the item.
    #[error("{0}")]
    SetupStep(String),
}

/// How a run ended, with the exit status airlock should return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The command exited (or was killed by signal N: code 128+N).
    Exited(i32),
    /// `--timeout` expired; the whole sandbox was killed.
    TimedOut(Duration),
    /// The command could not be executed (126) or was not found (127).
    ExecFailed { code: i32, message: String },
    /// The memory limit was hit and the kernel killed the command (137); the summary names limit and peak.
    OutOfMemory { summary: String },
}

/// What a finished run reports besides its outcome.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The cgroup's final numbers, when the run had limits.
    pub stats: Option<CgroupStats>,
    /// What the sandbox got (see [`crate::enforcement`]).
    pub enforcement: crate::enforcement::EnforcementReport,
}

impl RunOutcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunOutcome::Exited(code) => *code,
            RunOutcome::TimedOut(_) => EXIT_TIMED_OUT,
            RunOutcome::ExecFailed { code, .. } => *code,
            RunOutcome::OutOfMemory { .. } => EXIT_OUT_OF_MEMORY,
        }
    }
}

/// Runs `policy`'s command in a new sandbox and waits for it. Warnings (best-effort layers missing) go to
/// `warn` before anything runs.
///
/// With `audit`, the command's seccomp filter notifies the calls `audit.notify` names to this process, which
/// records them through `audit.sink` (exec records, denials, learn-mode writes).
pub fn run_sandbox(
    policy: &SandboxPolicy,
    host: &HostContext,
    warn: &mut dyn FnMut(&str),
    audit: Option<AuditRequest<'_>>,
) -> Result<(RunOutcome, RunReport), SandboxError> {
    run_sandbox_with(policy, host, warn, None, audit)
}

/// What an audited run sends to the supervisor and where the events go (see `notify`).
pub struct AuditRequest<'a> {
    pub notify: crate::seccomp::NotifyOptions,
    pub sink: &'a mut dyn crate::notify::AuditSink,
    /// Where exec records come from (`run` only; `airlock exec` records its command's execs by seccomp
    /// notification whatever this says).
    pub exec_source: crate::exec_tracepoints::ExecSource,
    /// The bpffs directory of the shared exec tracer (see `exec_tracepoints`); `None`: this run loads its own.
    pub exec_tracer_pins: Option<std::path::PathBuf>,
}

/// `airlock create`: as [`run_sandbox`], with `host.hold` set, but `on_ready(init_pid)` is called once init has
/// finished setting the sandbox up (it closes the failure pipe unwritten). Returns when the sandbox is stopped.
pub fn run_held_sandbox(
    policy: &SandboxPolicy,
    host: &HostContext,
    warn: &mut dyn FnMut(&str),
    on_ready: &mut dyn FnMut(libc::pid_t),
) -> Result<(RunOutcome, RunReport), SandboxError> {
    run_sandbox_with(policy, host, warn, Some(on_ready), None)
}

fn run_sandbox_with(
    policy: &SandboxPolicy,
    host: &HostContext,
    warn: &mut dyn FnMut(&str),
    on_ready: Option<&mut dyn FnMut(libc::pid_t)>,
    audit: Option<AuditRequest<'_>>,
) -> Result<(RunOutcome, RunReport), SandboxError> {
    // 1. Validate everything and build the plan: no side effect before this succeeds (bar the id-range lock).
    if matches!(policy.network, policy::sandbox::Network::Allow(_)) && host.gateway.is_none() {
        return Err(PrepareError::NetworkAllowNotAvailable.into());
    }
    let mut prepared = prepare_sandbox(policy, host)?;
    let mut audit = audit.filter(|a| a.notify.any());
    // Exec records from the kernel's tracepoints when asked or possible (see `exec_tracepoints`): loaded now,
    // before the filter is compiled, because the filter then notifies no exec, and before clone, because init
    // takes the filter with it. Recording starts once the sandbox's pid namespace exists (after clone).
    use crate::exec_tracepoints::{ExecSource, KernelExecSource};
    let mut kernel_execs = match audit.as_mut().filter(|a| a.notify.exec && a.exec_source != ExecSource::Seccomp) {
        Some(a) => match KernelExecSource::load(a.exec_tracer_pins.as_deref()) {
            Ok(source) => {
                a.notify.exec = false;
                Some(source)
            }
            Err(e) if a.exec_source == ExecSource::Kernel => {
                return Err(SandboxError::LoadExecTracer(os_error(e), crate::exec_tracepoints::load_failure_hint(e)));
            }
            Err(_) => None,
        },
        None => None,
    };
    if let Some(a) = &audit {
        prepared.plan.seccomp = audited_seccomp_program(a.notify, prepared.plan.writes_as_host_root())?;
    }
    prepared.plan.execs_traced = kernel_execs.is_some();
    for w in prepared.enforcement.warnings() {
        warn(&w);
    }
    crate::fault::stop_here("prepared");

    // 2. Supervisor state on the host.
    // The network gateway (`--net allow`) first: it is a process of its own (tokio threads may not exist in this
    // one, which must clone into a new user namespace single-threaded), started now, while nothing of the
    // sandbox exists, with its events file opened here on the host. It waits for init to pass it the sandbox's
    // TUN interface (step 5). Dropped on any error path below, it is stopped.
    let mut gateway = match (&prepared.plan.tun, &host.gateway) {
        (Some(_), Some(setup)) => Some(crate::gateway::GatewayProcess::start(setup)?),
        _ => None,
    };
    crate::fault::stop_here("gateway-started");
    // The cgroup: it needs the host's cgroupfs, which the sandbox will never see. Every check that can refuse a
    // limit is made now, before anything of the sandbox exists. How init enters it without a costly migration
    // is `SandboxCgroup::entry`'s business: on cgroup v2 init is born inside, so the cgroup is made now; on v1
    // init joins it itself, so making it (the directories, the limits: most of the cost) waits until init is
    // running, and overlaps its first setup steps (step 4). Init joins before it runs anything of the
    // sandbox's. (Cgroups left by an airlock that was killed are removed then too, while init works.)
    let (cgroup_layout, planned) = plan_cgroup(policy, host, warn)?.unzip();
    let (mut cgroup, mut planned_cgroup) = match planned {
        Some(cgroups::CgroupPlan::Made(cgroup)) => {
            crate::fault::stop_here("cgroup-created");
            (Some(cgroup), None)
        }
        Some(cgroups::CgroupPlan::Deferred(planned)) => (None, Some(planned)),
        None => (None, None),
    };
    let mut cgroup_dir: Option<std::fs::File> = None;
    let entry = match (&cgroup, &planned_cgroup) {
        (Some(made), _) => Some(made.entry()),
        (None, Some(planned)) => Some(CgroupEntryPoint::SelfAttach(planned.tasks())),
        (None, None) => None,
    };
    match entry {
        Some(CgroupEntryPoint::SelfAttach(tasks)) => {
            prepared.plan.cgroup_tasks = tasks
                .iter()
                .map(|t| std::ffi::CString::new(t.as_os_str().as_encoded_bytes()))
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    SandboxError::CgroupPath(tasks.first().map(|t| t.display().to_string()).unwrap_or_default())
                })?;
        }
        Some(CgroupEntryPoint::CloneInto(dir)) => {
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(&dir)
                .map_err(|e| SandboxError::OpenCgroup(dir.display().to_string(), e))?;
            cgroup_dir = Some(opened);
        }
        None => {}
    }
    let prepared = prepared;
    let plan = &prepared.plan;
    // The copy-on-write layer's directories belong to the sandbox's root on the host: the overlay writes to
    // them with its credentials. (Rootless, that is the invoker, who created them.) A layer mounted idmapped
    // (a workspace owned by host root) is seen through the sandbox's own maps: on disk its owner is root
    // inside's id itself, 0, whatever host range this run has.
    if plan.ids.host_root {
        for (dirs, idmapped) in plan.sources.iter().filter_map(|s| s.overlay.as_ref().map(|o| (o, s.idmapped))) {
            let (owner_uid, owner_gid) = match idmapped {
                true => (plan.ids.init_uid, plan.ids.init_gid),
                false => (plan.ids.init_host_uid, plan.ids.init_host_gid),
            };
            // A layer that holds earlier runs' files (a resumed sandbox: checkpoints, or changes in upper) was
            // written by an earlier run's sandbox root: this run's must be the same host id, or its files would be
            // another identity's (and the older ones unreadable or foreign to it).
            let upper = std::path::Path::new(std::ffi::OsStr::from_bytes(dirs.upper.to_bytes()));
            let meta = std::fs::symlink_metadata(upper)
                .map_err(|e| SandboxError::PrepareLayer(upper.display().to_string(), e))?;
            let holds_files = !dirs.frozen.is_empty()
                || std::fs::read_dir(upper)
                    .map_err(|e| SandboxError::PrepareLayer(upper.display().to_string(), e))?
                    .next()
                    .is_some();
            if holds_files && meta.uid() != owner_uid {
                return Err(SandboxError::LayerOwnerChanged {
                    path: upper.display().to_string(),
                    had: meta.uid(),
                    now: owner_uid,
                });
            }
            for dir in [&dirs.upper, &dirs.work] {
                let path = std::path::Path::new(std::ffi::OsStr::from_bytes(dir.to_bytes()));
                std::os::unix::fs::lchown(path, Some(owner_uid), Some(owner_gid))
                    .map_err(|e| SandboxError::PrepareLayer(path.display().to_string(), e))?;
            }
        }
    }
    let pipes = SupervisorPipes::create(plan.tty.is_some()).map_err(|e| SandboxError::CreatePipes(os_error(e)))?;
    // Audited: the socket the command's seccomp listener will come back on, and the host's /proc to read the
    // notifying processes from (both opened before clone; the child's ends are close-on-exec and closed by the
    // command before its execve).
    let audit_channel = match &audit {
        Some(_) => match audit_channel() {
            Ok(channel) => Some(channel),
            Err(e) => return Err(SandboxError::CreatePipes(os_error(e))),
        },
        None => None,
    };
    // Slots for init's detached mount clones, allocated now because init may not allocate.
    let mut trees: Vec<RawFd> = vec![-1; plan.sources.len()];
    if plan.ids.host_root {
        // The sandbox inherits our supplementary groups: as host root they would be host group 0 (and only root
        // inside, with CAP_SETGID, could replace them). Clear them now (airlock needs none of its own).
        let _ = sys::credentials::clear_supplementary_groups();
        userns::hand_stdio_pipes_to(plan.ids.host_uid, plan.ids.host_gid);
    }
    // Block every signal before clone: init inherits the mask and collects them with sigwaitinfo (a pid-1 drops
    // signals it neither handles nor blocks), and the supervisor collects its own through a signalfd.
    let old_mask = sys::signal::block_all();

    // 3. clone into the new namespaces, one process; it waits on the start pipe.
    // (The cgroup namespace is created by init once it is in its cgroup, so that the namespace's root is the
    // sandbox's own cgroup, and the network namespace beside init while it builds the mount tree: see init.rs.)
    let flags = namespaces::clone_flags();
    // airlock is single-threaded (no thread is ever started before this point); the child only runs
    // sandbox_init_main, which does async-signal-safe work on the prepared plan.
    // cgroup v2 (with `cgroup_dir`): born in the sandbox's cgroup (`clone3`); otherwise `clone`.
    let cloned = sys::process::fork_with_pidfd(flags as u64, cgroup_dir.as_ref().map(AsFd::as_fd));
    drop(cgroup_dir);
    let SupervisorPipes { start_read, start_write, failure_read, failure_write, tty } = pipes;
    let (tty_init_end, tty_supervisor_end) = tty.unzip();
    let (pid, pidfd) = match cloned {
        Ok(sys::process::PidfdFork::Child) => {
            drop(start_write);
            drop(failure_read);
            drop(tty_supervisor_end);
            // Init's descriptors go by number: `sandbox_init_main` never returns (it execs or exits), so their
            // owners here are never dropped in the child and the descriptors stay open for init.
            let fds = InitFds {
                start: start_read.as_raw_fd(),
                failure: failure_write.as_raw_fd(),
                tty_socket: tty_init_end.as_ref().map(AsRawFd::as_raw_fd),
                audit_socket: audit_channel.as_ref().map(|c| c.child_end.as_raw_fd()),
                gateway_socket: gateway.as_ref().map(crate::gateway::GatewayProcess::sandbox_end),
            };
            init::sandbox_init_main(plan, &fds, &mut trees)
        }
        Ok(sys::process::PidfdFork::Parent { pid, pidfd }) => (pid, pidfd),
        Err(errno) => {
            sys::signal::set_mask(&old_mask);
            drop((start_read, start_write, failure_read, failure_write, tty_init_end, tty_supervisor_end));
            drop(audit_channel);
            return Err(SandboxError::CloneNamespaces(os_error(errno), clone_hint(errno)));
        }
    };
    drop(start_read);
    drop(failure_write);
    drop(tty_init_end);
    let mut audit_state = match (audit, audit_channel) {
        (Some(a), Some(channel)) => {
            let AuditChannel { supervisor_end, child_end, proc_dir } = channel;
            drop(child_end);
            // Before init is released (below): the command's first exec is recorded.
            if let Some(k) = kernel_execs.as_mut() {
                if let Err(e) = k.follow(proc_dir.as_raw_fd(), pid) {
                    let _ = sys::signal::kill(pid, libc::SIGKILL);
                    let _ = sys::wait::wait_for_exit(pid);
                    sys::signal::set_mask(&old_mask);
                    return Err(SandboxError::FollowPidNamespace(os_error(e)));
                }
            }
            Some((a, supervisor_end, proc_dir))
        }
        (_, channel) => {
            drop(channel);
            None
        }
    };
    // The gateway's socket end now belongs to init alone: if init dies, the gateway sees the socket close.
    if let Some(g) = gateway.as_mut() {
        g.close_sandbox_end();
    }

    crate::fault::stop_here("cloned");
    // 4. Parent: the id maps (root inside -> an unprivileged host id), then release the child.
    //    Attaching its network needs nothing from here: init creates the gateway's interface inside the
    //    sandbox's network namespace (only a process there can) and hands it to the gateway itself.
    // Then, on cgroup v1, the cgroup is made while init takes its first steps: its directories first, and init
    // is told to join (or, best-effort limits that cannot be had, to go on without); then its limits, while
    // init joins and builds the sandbox, and init is told they are written. Init waits for the first word
    // before it switches to the sandbox's ids, and for the second before it starts the command, so the command
    // never runs outside its limits; if the cgroup cannot be made or limited, init is killed and the run fails
    // closed.
    let released = release_child(pid, plan, start_write.as_raw_fd()).and_then(|()| {
        let Some(planned) = planned_cgroup.take() else { return Ok(()) };
        // A broken pipe: init ended early (its failure record tells why, read after it is reaped); nothing to tell.
        let say = |word: u8| match sys::fd::write_all(start_write.as_raw_fd(), &[word]) {
            Ok(()) | Err(libc::EPIPE) => Ok(()),
            Err(e) => Err(SandboxError::CreatePipes(os_error(e))),
        };
        let (made, limits) = match planned.make_dirs() {
            Ok(made) => made,
            Err(e) => {
                best_effort_or_fail(e, &policy.limits, policy.limits_enforcement, warn)?;
                return say(init::CGROUP_NONE);
            }
        };
        say(init::CGROUP_JOIN)?;
        let cgroup = cgroup.insert(made);
        // Best effort, a limit that cannot be written leaves the cgroup (init is in it), with what was written.
        if let Err(e) = limits.write(cgroup) {
            best_effort_or_fail(e, &policy.limits, policy.limits_enforcement, warn)?;
        }
        crate::fault::stop_here("cgroup-created");
        say(init::CGROUP_LIMITED)
    });
    if let Err(e) = released {
        let _ = sys::signal::kill(pid, libc::SIGKILL);
        let _ = sys::wait::wait_for_exit(pid);
        drop(pidfd);
        drop((start_write, failure_read, tty_supervisor_end));
        if let Some((_, supervisor_end, proc_dir)) = audit_state.take() {
            drop((supervisor_end, proc_dir));
        }
        sys::signal::set_mask(&old_mask);
        return Err(e);
    }

    // Cgroups left by an airlock that was killed (it could not remove its own): swept now, while init builds the
    // sandbox, rather than before it starts. Best effort: one that cannot be removed now is tried next time.
    match (&cgroup_layout, &cgroup) {
        (Some(_), Some(ours)) => drop(cgroups::remove_stale_cgroups_beside(ours)),
        (Some(layout), None) => drop(cgroups::remove_stale_cgroups(layout)),
        (None, _) => {}
    }
    crate::fault::stop_here("released");
    // A long-lived sandbox is ready when init closes the failure pipe unwritten (a record means setup failed,
    // and init exits: the wait below collects it).
    let early_failure = match on_ready {
        Some(ready) => {
            let f = failure::read_failure(failure_read.as_raw_fd());
            if f.is_none() {
                ready(pid);
            }
            f
        }
        None => None,
    };

    // 5-7 happen in the sandbox. The supervisor forwards signals, relays the terminal, enforces the timeout.
    let tty_socket = tty_supervisor_end.as_ref().map(AsRawFd::as_raw_fd);
    // Only once the sandbox is ready: its record (written by `on_ready`) is part of what is watched.
    let mut watch = host.watch_state.as_ref().filter(|_| early_failure.is_none()).and_then(StateWatch::new);
    let supervised = match audit_state {
        Some((request, supervisor_end, proc_dir)) => {
            let mut seccomp_audit =
                crate::notify::SeccompAudit::new(&plan.seccomp, proc_dir.as_raw_fd(), supervisor_end, request.sink)
                    .with_command(&plan.command)
                    .with_kernel_execs(kernel_execs.take());
            let supervised =
                supervise(pid, pidfd.as_fd(), policy.timeout, tty_socket, Some(&mut seccomp_audit), watch.as_mut());
            // The socket was the SeccompAudit's, closed with it.
            drop(seccomp_audit);
            drop(proc_dir);
            supervised
        }
        None => supervise(pid, pidfd.as_fd(), policy.timeout, tty_socket, None, watch.as_mut()),
    };
    if watch.as_ref().is_some_and(StateWatch::fired) {
        warn("the sandbox's state directory was removed while it ran: stopped the sandbox, nothing could reach it");
    }
    drop(pidfd);
    drop(start_write);
    drop(tty_supervisor_end);
    sys::signal::set_mask(&old_mask);

    // 8. Teardown: init's exit killed the namespace's every process (the kernel does it when a pid-1 exits),
    //    and with the last of them the mount namespace and its tmpfs mounts are gone. Nothing was created on the
    //    host but the id-range lock, released when `prepared` is dropped, and the gateway's process, stopped
    //    now: its TUN descriptor holds the sandbox's network namespace, so it would not see the end itself.
    if let Some(g) = gateway.take() {
        g.stop();
    }
    let failure = early_failure.or_else(|| failure::read_failure(failure_read.as_raw_fd()));
    drop(failure_read);
    let stats = cgroup.as_ref().and_then(|cg| match host.cgroup_accounting {
        cgroups::Accounting::Full => cg.stats().ok(),
        cgroups::Accounting::LimitsOnly => cg.verdicts().ok(),
    });
    if let Some(cg) = cgroup {
        if let Err(e) = cg.remove() {
            warn(&format!("cannot remove the sandbox's cgroup: {e}"));
        }
    }
    // Id-range locks an airlock killed with SIGKILL left (ours is still held, so it stays until `prepared` goes).
    if prepared.id_range.is_some() {
        userns::sweep_stale_id_range_locks(&host.lock_dir);
    }
    let ended = supervised.map_err(|e| SandboxError::Wait(os_error(e)))?;
    let mut outcome = outcome(&prepared, ended, failure)?;
    if let (RunOutcome::Exited(EXIT_OUT_OF_MEMORY), Some(st)) = (&outcome, &stats) {
        if st.oom_killed() {
            outcome = RunOutcome::OutOfMemory { summary: st.memory_summary() };
        }
    }
    Ok((outcome, RunReport { stats, enforcement: prepared.enforcement.clone() }))
}

/// Step 4: the maps, then the start byte (init is already in its cgroup, or joins it itself: see `entry`). The start pipe's write end stays open until the
/// sandbox is gone: init watches it for a hang-up to learn that the supervisor died while init's parent-death
/// signal was being re-armed.
fn release_child(pid: libc::pid_t, plan: &crate::plan::SandboxPlan, start_write: RawFd) -> Result<(), SandboxError> {
    match &plan.ids.map_tools {
        Some(tools) => userns::write_id_maps_with_tools(pid, tools, &plan.ids.uid_map, &plan.ids.gid_map)?,
        None => userns::write_id_maps(pid, plan.ids.host_root, &plan.ids.uid_map, &plan.ids.gid_map)?,
    }
    // As host root, the root overlay's directories and a workspace owned by host root (with its layer's
    // directories) become idmapped with the maps just written (see `rootfs`), before init opens them.
    let mut paths = Vec::new();
    if let Some(overlay) = plan.root_overlay.as_ref().filter(|o| o.idmapped) {
        paths.extend(crate::rootfs::root_layer_paths(overlay));
    }
    for source in plan.sources.iter().filter(|s| s.idmapped) {
        paths.push((&source.host_path, format!("workspace {}", source.display)));
        // The layer as one mount: overlayfs wants upper and work on the same one (the checkpoints are under it
        // too). It is seen only by init, which opens upper, work and the checkpoints through it, before the host's
        // tree is gone from its view.
        if let Some(dirs) = &source.overlay {
            paths.push((&dirs.root, format!("workspace's copy-on-write layer {}", dirs.upper_display)));
        }
    }
    // A directory under another one of them, on the same filesystem (the writable root's layer `NAME/rootfs`
    // under the workspace's layer `NAME`), is reached through that one's idmapped mount, with the same maps: it
    // needs no mount of its own, and could not have one (an idmapped mount cannot be idmapped again: EPERM).
    let depth = |path: &std::ffi::CString| path.to_bytes().split(|&b| b == b'/').filter(|c| !c.is_empty()).count();
    paths.sort_by_key(|(path, _)| depth(path));
    let as_path = |path: &std::ffi::CString| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes()));
    let device = |path: &std::ffi::CString| std::fs::metadata(as_path(path)).ok().map(|m| m.dev());
    let mut kept: Vec<(&std::ffi::CString, String)> = Vec::new();
    for (path, display) in paths {
        let covered = kept.iter().any(|(outer, _)| {
            as_path(path).starts_with(as_path(outer)) && device(path).is_some() && device(path) == device(outer)
        });
        if !covered {
            kept.push((path, display));
        }
    }
    crate::rootfs::idmap_over_paths(pid, &kept)?;
    sys::fd::write_all(start_write, b"1").map_err(|e| SandboxError::CreatePipes(os_error(e)))
}

/// One cgroup per sandbox when the policy sets a memory, process or CPU limit: made now (cgroup v2) or
/// planned, to be made once init runs (v1: see `SandboxCgroup::plan`), with the layout it was planned in. Fails
/// closed: a limit that cannot be enforced stops the run (the error names the controller and the fix) — unless
/// the profile says `enforce = "best-effort"`, and then the run goes on without the cgroup, saying so.
fn plan_cgroup(
    policy: &SandboxPolicy,
    host: &HostContext,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<(cgroups::CgroupLayout, cgroups::CgroupPlan)>, SandboxError> {
    if !policy.limits.needs_cgroup() {
        return Ok(None);
    }
    let name = host.name.as_deref().unwrap_or("run");
    let planned = cgroups::detect_layout(std::path::Path::new(cgroups::SYS_FS_CGROUP)).and_then(|layout| {
        SandboxCgroup::plan(&layout, name, &policy.limits, host.cgroup_accounting).map(|plan| (layout, plan))
    });
    match planned {
        Ok(planned) => Ok(Some(planned)),
        Err(e) => Ok(best_effort_or_fail(e, &policy.limits, policy.limits_enforcement, warn).map(|()| None)?),
    }
}

/// A cgroup that cannot be had: the error, or with best-effort limits a warning naming the `asked` flags.
fn best_effort_or_fail(
    e: cgroups::CgroupError,
    asked: &policy::sandbox::Limits,
    enforcement: Requirement,
    warn: &mut dyn FnMut(&str),
) -> Result<(), cgroups::CgroupError> {
    match enforcement {
        Requirement::Required => Err(e),
        Requirement::BestEffort => {
            let named: Vec<String> = [
                asked.memory_bytes.map(|b| format!("--memory {}", cgroups::format_bytes(b))),
                asked.pids.map(|n| format!("--pids {n}")),
                asked.cpus.map(|c| format!("--cpus {c}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            warn(&format!(
                "limits NOT enforced ({}): {} (the profile allows best-effort limits)",
                named.join(", "),
                crate::failure::error_chain(&e)
            ));
            Ok(())
        }
    }
}

/// [`plan_cgroup`]'s rules for any process tree that `asked` limits stand for: a cgroup holding `limits` when
/// `asked` needs one (stale cgroups swept first), refused or, best-effort, warned about with the `asked` flags
/// named. The VM backend puts QEMU in one (its `limits` are the VM's size, not the command's).
pub fn create_limits_cgroup(
    asked: &policy::sandbox::Limits,
    limits: &policy::sandbox::Limits,
    enforcement: Requirement,
    name: &str,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<SandboxCgroup>, cgroups::CgroupError> {
    if !asked.needs_cgroup() {
        return Ok(None);
    }
    let created = cgroups::detect_layout(std::path::Path::new(cgroups::SYS_FS_CGROUP)).and_then(|layout| {
        // Best effort: a stale cgroup that cannot be removed now is tried again next time.
        let _ = cgroups::remove_stale_cgroups(&layout);
        SandboxCgroup::create(&layout, name, limits)
    });
    match created {
        Ok(cgroup) => Ok(Some(cgroup)),
        Err(e) => best_effort_or_fail(e, asked, enforcement, warn).map(|()| None),
    }
}

pub(crate) fn outcome(
    prepared: &Prepared,
    ended: crate::supervisor::Ended,
    failure: Option<ChildFailure>,
) -> Result<RunOutcome, SandboxError> {
    use crate::supervisor::Ended;
    match (failure, ended) {
        (Some(f), Ended::Exited(code)) if f.step == Step::Execute => {
            let name = &prepared.plan.command.display_name;
            let message = match f.errno {
                libc::ENOENT | libc::ENOTDIR => format!("command not found: {name} (looked in the sandbox's PATH)"),
                errno => format!("cannot execute {name}: {}", errno_text(errno)),
            };
            Ok(RunOutcome::ExecFailed { code, message })
        }
        (Some(f), _) => Err(SandboxError::SetupStep(describe_failure(prepared, &f))),
        (None, Ended::TimedOut(d)) => Ok(RunOutcome::TimedOut(d)),
        (None, Ended::Exited(code)) => Ok(RunOutcome::Exited(code)),
    }
}

/// Turns a failure record into one sentence naming the step, the item and the fix where there is a known one.
pub fn describe_failure(prepared: &Prepared, f: &ChildFailure) -> String {
    let plan = &prepared.plan;
    let index = f.index as usize;
    let item = match f.step {
        Step::OpenMountSource | Step::CheckMountSource | Step::CloneMountSource | Step::SetMountSourceAttributes => {
            plan.sources.get(index).map(|s| s.display.clone())
        }
        Step::MountRootOverlay | Step::OpenRootLayer => plan.root_overlay.as_ref().map(|o| {
            let lowers = o.lower_displays.join(", ");
            match &o.layer_display {
                Some(layer) => format!("of {lowers} (layer {layer})"),
                None => format!("of {lowers}"),
            }
        }),
        Step::OpenWorkspaceLayer | Step::MountWorkspaceOverlay => plan.sources.get(index).map(|s| {
            let layer = s.overlay.as_ref().map(|o| o.upper_display.as_str()).unwrap_or("?");
            format!("{} (layer {layer})", s.display)
        }),
        Step::CreateMountPoint
        | Step::AttachMount
        | Step::CreateRootSymlink
        | Step::MountTmpfs
        | Step::WriteSandboxFile => prepared.entry_names.get(index).cloned(),
        Step::AddLandlockRule => {
            plan.landlock.as_ref().and_then(|l| l.rules.get(index)).map(|r| r.path.to_string_lossy().to_string())
        }
        Step::ChangeDirectory => Some(plan.command.cwd.to_string_lossy().to_string()),
        _ => None,
    };
    let what = match item {
        Some(item) => format!("{} {item}", f.step.description()),
        None => f.step.description().to_string(),
    };
    let hint = match (f.step, f.errno) {
        (Step::OpenMountSource, libc::ELOOP) => " (it became a symlink after validation; refusing to follow it)",
        (Step::CheckMountSource, _) => " (its type changed after validation)",
        (Step::CreateMountPoint, libc::EROFS) => {
            " (the mount point must already exist inside a read-only part of the root)"
        }
        (Step::CreateMountPoint, libc::ELOOP) => " (a symlink is in the way; mount targets never follow symlinks)",
        // The kernel mounts a new procfs in a user namespace only while a /proc with nothing mounted over it is
        // visible (mnt_too_revealing): a container's masked /proc (/proc/kcore, /proc/sys, ...) blocks it.
        (Step::MountProc, libc::EPERM) => PROC_MASKED_FIX,
        (Step::MountProc, _) => " (a fresh /proc needs a fully visible host /proc; run airlock doctor)",
        (Step::CreateLandlockRuleset, _) | (Step::RestrictLandlock, _) => " (run airlock doctor)",
        (Step::OpenTunDevice | Step::CreateTunInterface | Step::ConfigureTunInterface | Step::AddDefaultRoute, _) => {
            " (the network gateway needs a TUN interface in the sandbox; run `airlock doctor`; --net none and --net \
             host work without it)"
        }
        (Step::HandTunToGateway, _) => " (the network gateway's process ended early; its error is above)",
        // Made by init's child instead of `clone` (see `net::start_network_namespace`): the same causes.
        (Step::CreateNetworkNamespace, errno) => clone_hint(errno),
        _ => "",
    };
    format!("cannot {what}: {}{hint}", errno_text(f.errno))
}

/// The fix for a fresh /proc refused inside a container (README "Inside containers").
pub const PROC_MASKED_FIX: &str = " (this /proc has paths masked by mounts over them, as container runtimes do, and \
     the kernel then refuses a new /proc: start the container with an unmasked /proc: `docker run --security-opt \
     systempaths=unconfined`, or remove the /proc entries of linux.maskedPaths and linux.readonlyPaths in \
     runc's config.json)";

/// The fix for namespaces refused by a container's seccomp filter (README "Inside containers").
pub const SECCOMP_FIX: &str = " (this process runs under a seccomp filter, as in a container, and Docker's default \
     profile refuses new namespaces: start the container with airlock's profile, Docker's default plus what \
     airlock needs: `docker run --security-opt seccomp=contrib/docker/airlock-seccomp.json`, installed as \
     share/airlock/airlock-seccomp.json)";

fn clone_hint(errno: i32) -> &'static str {
    let filtered = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "2"])));
    match errno {
        libc::EPERM if filtered => SECCOMP_FIX,
        libc::EPERM | libc::ENOSPC | libc::EUSERS => {
            " (user namespaces are restricted on this host; run `airlock doctor` for the cause and the fix)"
        }
        libc::EINVAL => " (this kernel lacks one of these namespaces; run `airlock doctor`)",
        _ => "",
    }
}

/// The pipes and sockets between supervisor and sandbox.
struct SupervisorPipes {
    start_read: OwnedFd,
    start_write: OwnedFd,
    failure_read: OwnedFd,
    failure_write: OwnedFd,
    /// (init's end, supervisor's end) of the socket that carries the pseudo-terminal master.
    tty: Option<(OwnedFd, OwnedFd)>,
}

impl SupervisorPipes {
    fn create(tty: bool) -> Result<Self, i32> {
        let (start_read, start_write) = sys::fd::pipe_cloexec()?;
        let (failure_read, failure_write) = sys::fd::pipe_cloexec()?;
        let tty = if tty { Some(sys::fd::socketpair_cloexec()?) } else { None };
        Ok(SupervisorPipes { start_read, start_write, failure_read, failure_write, tty })
    }
}

/// The sandbox's seccomp program (with `guard_set_id`, refusing set-ID bits: see
/// `policy::seccomp::sandbox_seccomp_profile`), compiled to notify the calls `notify` names.
pub fn audited_seccomp_program(
    notify: crate::seccomp::NotifyOptions,
    guard_set_id: bool,
) -> Result<crate::seccomp::SeccompProgram, SandboxError> {
    let profile = policy::seccomp::sandbox_seccomp_profile(guard_set_id)
        .map_err(|e| SandboxError::Prepare(PrepareError::Seccomp(e.to_string())))?;
    crate::seccomp::compile_notifying_seccomp_program(&profile, notify)
        .map_err(|e| SandboxError::Prepare(PrepareError::Seccomp(e.to_string())))
}

/// The descriptors an audited run needs on top of the usual pipes.
pub struct AuditChannel {
    /// Ours: the listener arrives here.
    pub supervisor_end: OwnedFd,
    /// The command's (through init, or the `airlock exec` process's child): it sends the listener.
    pub child_end: OwnedFd,
    /// The host's `/proc`, for the notifying processes' status, cwd and descriptors.
    pub proc_dir: OwnedFd,
}

/// A close-on-exec socket pair and the host's `/proc`, opened now (before `clone`, or before `setns` in `airlock
/// exec`, after which `/proc` would be the sandbox's).
pub fn audit_channel() -> Result<AuditChannel, sys::Errno> {
    let (supervisor_end, child_end) = sys::fd::socketpair_cloexec()?;
    let proc_dir = sys::fd::open(c"/proc", libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
    Ok(AuditChannel { supervisor_end, child_end, proc_dir })
}
