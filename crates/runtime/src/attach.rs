//! `airlock exec`: a new command in a running long-lived sandbox, top to bottom.
//!
//! The sandbox is already built (its init holds the namespaces, the root, the cgroup); what is new is only the
//! command's process, and that gets exactly the last steps `airlock run`'s command gets (`exec::exec_command`):
//! the plan is built from the sandbox's stored policy plus the new command, so limits, identity, Landlock and
//! seccomp are the same.
//!
//! With `-t` (`HostContext::tty`), this process opens a new pseudo-terminal in the sandbox's own devpts instance
//! once it has entered the sandbox's namespaces, gives the slave to the command as its controlling terminal and
//! relays the master to the caller's terminal, as `run -t`'s supervisor does. The command's terminal is never the
//! caller's.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use policy::sandbox::{Requirement, SandboxPolicy};

use crate::cgroups::{self, SandboxCgroup};
use crate::exec::{self, CommandFds};
use crate::failure::{self, os_error, os_error_text};
use crate::namespaces::{self, Kind};
use crate::prepare::{prepare_sandbox, HostContext, PrepareError};
use crate::sandbox::{self, AuditChannel, RunOutcome};
use crate::userns::{translate_id, IdSide};
use crate::{landlock, userns};
use sys::Errno;

/// The running sandbox to enter, as its supervisor recorded it.
#[derive(Debug, Clone)]
pub struct RunningSandbox {
    pub name: String,
    pub init_pid: libc::pid_t,
    /// Init's start time (field 22 of `/proc/PID/stat`), against pid reuse.
    pub init_start_time: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The sandbox's init is gone (or its pid now belongs to another process).
    #[error("sandbox {0} is not running")]
    NotRunning(String),
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("cannot open init (pid {}) of the sandbox: {}", .0, os_error_text(.1))]
    OpenInit(libc::pid_t, std::io::Error),
    #[error("cannot find the cgroup of sandbox {0}, which has resource limits; refusing to run without them")]
    CgroupMissing(String),
    #[error("cannot join the sandbox's cgroup")]
    JoinCgroup(#[from] cgroups::CgroupError),
    #[error("cannot read the uid map of the sandbox's init (pid {0}): {1}")]
    ReadIdMap(libc::pid_t, std::io::Error),
    #[error("cannot create the command's failure pipe: {}", os_error_text(.0))]
    CreatePipe(std::io::Error),
    #[error("cannot enter the sandbox's namespaces: {}", os_error_text(.0))]
    EnterNamespaces(std::io::Error),
    #[error("cannot enter the sandbox's namespaces: chdir /: {}", os_error_text(.0))]
    ChdirRoot(std::io::Error),
    #[error("cannot create the Landlock ruleset inside the sandbox: {0}")]
    Landlock(String),
    #[error("cannot open a pseudo-terminal in the sandbox: {}", os_error_text(.0))]
    Terminal(std::io::Error),
    #[error("cannot open a pseudo-terminal in the sandbox: {}: {}", .0, os_error_text(.1))]
    TerminalStep(&'static str, std::io::Error),
    #[error("cannot fork the command's process: {}", os_error_text(.0))]
    Fork(std::io::Error),
    #[error("cannot open the host's /proc (for --timeout): {}", os_error_text(.0))]
    OpenHostProc(std::io::Error),
    #[error("cannot wait for the command: {}", os_error_text(.0))]
    Wait(std::io::Error),
    /// Taking this process's privileges down to the sandbox's failed (`what`: the step).
    #[error("cannot {what}: {}", os_error_text(.error))]
    Restrict { what: &'static str, error: std::io::Error },
    /// A step of the command's process failed; the message names the step and the item.
    #[error("{0}")]
    SetupStep(String),
}

/// Runs `policy`'s command inside `target` and waits for it. `host.layer` must name the sandbox's layer when it
/// has a `cow` workspace (the plan describes it; nothing is mounted again). With `audit`, this process holds the
/// command's seccomp listener and records its execs and denials itself (appending to the sandbox's log alongside
/// its supervisor: the log's lock makes that safe).
pub fn exec_in_sandbox(
    policy: &SandboxPolicy,
    host: &HostContext,
    target: &RunningSandbox,
    warn: &mut dyn FnMut(&str),
    audit: Option<sandbox::AuditRequest<'_>>,
) -> Result<RunOutcome, AttachError> {
    enter_and_supervise(policy, host, target, warn, audit, None)
}

/// Makes the sandbox's exec agent (`agent`): a process made exactly as `exec_in_sandbox` makes a command, which
/// serves requests on `listener` (bound and listening; the caller's copy may close once this returns... it
/// returns only when the agent has ended, with the sandbox). This process stays what it is for a command: the
/// holder of the seccomp listener, so the commands the agent starts are audited as an exec's are.
pub fn serve_agent_in_sandbox(
    policy: &SandboxPolicy,
    host: &HostContext,
    target: &RunningSandbox,
    warn: &mut dyn FnMut(&str),
    audit: Option<sandbox::AuditRequest<'_>>,
    listener: OwnedFd,
    socket: &crate::agent::AgentSocket,
) -> Result<RunOutcome, AttachError> {
    enter_and_supervise(policy, host, target, warn, audit, Some((listener, socket)))
}

fn enter_and_supervise(
    policy: &SandboxPolicy,
    host: &HostContext,
    target: &RunningSandbox,
    warn: &mut dyn FnMut(&str),
    audit: Option<sandbox::AuditRequest<'_>>,
    agent: Option<(OwnedFd, &crate::agent::AgentSocket)>,
) -> Result<RunOutcome, AttachError> {
    let (agent_listener, agent_socket_path) = match agent {
        Some((listener, path)) => (Some(listener), Some(path)),
        None => (None, None),
    };
    // 1. Validate and build the command's plan, as `run` does: no side effect before this succeeds.
    let mut prepared = prepare_sandbox(policy, host)?;
    for w in &prepared.enforcement.warnings() {
        warn(w);
    }
    let mut audit = audit.filter(|a| a.notify.any());
    if let Some(a) = &audit {
        prepared.plan.seccomp = sandbox::audited_seccomp_program(a.notify, prepared.plan.writes_as_host_root())
            .map_err(|e| AttachError::SetupStep(e.to_string()))?;
    }
    // The listener's socket and the host's /proc, before setns hides the host's /proc.
    let channel = match &audit {
        Some(_) => Some(sandbox::audit_channel().map_err(|e| AttachError::CreatePipe(os_error(e)))?),
        None => None,
    };

    // 2. Init, by pidfd.
    let pidfd = open_init(target)?;
    // With a timeout, the host's /proc, opened before setns puts the sandbox's in its place: at the deadline the
    // command's session is looked up there (see `kill_session`).
    let host_proc = match policy.timeout {
        Some(_) => match open_host_proc() {
            Ok(fd) => Some(fd),
            Err(e) => {
                drop(pidfd);
                if let Some(c) = channel {
                    drop((c.child_end, c.supervisor_end, c.proc_dir));
                }
                return Err(AttachError::OpenHostProc(os_error(e)));
            }
        },
        None => None,
    };
    // The child's end goes to the command's process; ours are the supervisor's end and the host's /proc.
    let (audit_child_end, audit_ends) = match channel {
        Some(AuditChannel { supervisor_end, child_end, proc_dir }) => {
            (Some(child_end), Some((supervisor_end, proc_dir)))
        }
        None => (None, None),
    };
    let joined = enter_sandbox(
        &prepared,
        policy,
        target,
        pidfd.as_fd(),
        audit_child_end.as_ref().map(AsRawFd::as_raw_fd),
        agent_listener.as_ref().zip(agent_socket_path),
    );
    drop(pidfd);
    // The agent holds the listener now; ours closes, so when the agent ends nothing listens any more.
    drop(agent_listener);
    drop(audit_child_end);
    let (child, child_pidfd, failure_read, tty_socket) = match joined {
        Ok(j) => j,
        Err(e) => {
            drop(audit_ends);
            drop(host_proc);
            return Err(e);
        }
    };

    // 4. Wait for the command, forwarding signals (the command is in its own session), relaying its terminal,
    //    killing it at the exec's deadline (`policy.timeout`; the rest of its session right after, below).
    let tty_socket_fd = tty_socket.as_ref().map(AsRawFd::as_raw_fd);
    let ended = match (audit.as_mut(), audit_ends) {
        (Some(request), Some((supervisor_end, proc_dir))) => {
            let mut seccomp_audit = crate::notify::SeccompAudit::new(
                &prepared.plan.seccomp,
                proc_dir.as_raw_fd(),
                supervisor_end,
                &mut *request.sink,
            )
            .with_command(&prepared.plan.command);
            let ended = crate::supervisor::supervise(
                child,
                child_pidfd.as_fd(),
                policy.timeout,
                tty_socket_fd,
                Some(&mut seccomp_audit),
                None,
            );
            drop(seccomp_audit);
            drop(proc_dir);
            ended
        }
        // The policy's timeout is this exec's own (`airlock exec --timeout`), not the sandbox's.
        _ => crate::supervisor::supervise(child, child_pidfd.as_fd(), policy.timeout, tty_socket_fd, None, None),
    };
    // Timed out: the supervisor loop killed the command itself; what it started dies now too. Its session (and
    // process group) keep the command's pid as their id until the last member is gone, so that id still names
    // exactly this exec's processes even though the command has been reaped; the sandbox's other execs are other
    // sessions and are untouched.
    if let Some(fd) = host_proc {
        if matches!(ended, Ok(crate::supervisor::Ended::TimedOut(_))) {
            kill_session(child, fd.as_raw_fd());
        }
        drop(fd);
    }
    drop(tty_socket);
    drop(child_pidfd);
    let failure = failure::read_failure(failure_read.as_raw_fd());
    drop(failure_read);
    let ended = ended.map_err(|e| AttachError::Wait(os_error(e)))?;
    sandbox::outcome(&prepared, ended, failure).map_err(|e| AttachError::SetupStep(e.to_string()))
}

/// A pidfd of the sandbox's init, checked against the recorded start time after it is open, so that it is known
/// to refer to the sandbox's init and not to a process that reused its pid.
fn open_init(target: &RunningSandbox) -> Result<OwnedFd, AttachError> {
    let pidfd = sys::process::pidfd_open(target.init_pid).map_err(|e| match e {
        libc::ESRCH => AttachError::NotRunning(target.name.clone()),
        e => AttachError::OpenInit(target.init_pid, os_error(e)),
    })?;
    if crate::host::process_start_time(target.init_pid) != Some(target.init_start_time) {
        drop(pidfd);
        return Err(AttachError::NotRunning(target.name.clone()));
    }
    Ok(pidfd)
}

/// Makes this process a visitor of the running sandbox `target` with its command's rights, to work on its files
/// (the daemon's files API): its user and mount namespaces entered (so `/` is the sandbox's root: every path,
/// `..` and symlink resolves inside it, never on the host), the sandbox's user ids, no capabilities (bounding
/// set included), `no_new_privs`, and the sandbox's Landlock ruleset. What this process may then read or write
/// is what a command in the sandbox may, and what it creates belongs to the sandbox's user. There is no way
/// back: the caller does its file work and exits. This process must be single-threaded (`setns` into a user
/// namespace requires it).
pub fn enter_sandbox_as_its_user(
    policy: &SandboxPolicy,
    host: &HostContext,
    target: &RunningSandbox,
) -> Result<(), AttachError> {
    let prepared = prepare_sandbox(policy, host)?;
    let plan = &prepared.plan;
    let pidfd = open_init(target)?;
    if plan.ids.host_root {
        // As host root: our supplementary groups would be host groups inside (see `run_sandbox`).
        let _ = sys::credentials::clear_supplementary_groups();
    }
    // The user namespace and the mount namespace only: files need no other (and the pid namespace would apply
    // to children alone). Both at once by pidfd, as `exec` does.
    const FLAGS: libc::c_int = namespaces::flags(&[Kind::User, Kind::Mount]);
    // This process is single-threaded (required for CLONE_NEWUSER).
    let entered = sys::namespace::setns(pidfd.as_fd(), FLAGS);
    drop(pidfd);
    entered.map_err(|e| AttachError::EnterNamespaces(os_error(e)))?;
    // setns left our working directory on the host's tree: a relative path must not resolve there.
    sys::process::change_directory(c"/").map_err(|e| AttachError::ChdirRoot(os_error(e)))?;
    // The Landlock ruleset after setns: its paths are the sandbox's.
    let ruleset = match &plan.landlock {
        Some(lp) => Some(
            landlock::create_ruleset(lp)
                .map_err(|f| AttachError::Landlock(sandbox::describe_failure(&prepared, &f)))?,
        ),
        None => None,
    };
    let step = |what: &'static str, e: Errno| AttachError::Restrict { what, error: os_error(e) };
    // The order of `exec_command`: bounding set, ambient set and securebits while we still hold CAP_SETPCAP,
    // then the ids, then the remaining capabilities.
    crate::caps::drop_bounding_set(plan.cap_last, plan.caps_kept).map_err(|e| step("drop the bounding set", e))?;
    crate::caps::raise_ambient(plan.cap_last, plan.caps_kept).map_err(|e| step("keep root's capabilities", e))?;
    crate::caps::lock_securebits().map_err(|e| step("lock securebits", e))?;
    exec::switch_ids(plan.ids.uid, plan.ids.gid).map_err(|e| step("switch to the sandbox's ids", e))?;
    crate::caps::keep_only(plan.caps_kept).map_err(|e| step("drop capabilities", e))?;
    sys::process::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| step("set no_new_privs", e))?;
    if let Some(fd) = ruleset {
        let restricted = landlock::restrict_self(fd);
        sys::fd::close(fd);
        restricted.map_err(|e| step("enforce Landlock", e))?;
    }
    Ok(())
}

/// Step 3: the cgroup (while the host's cgroupfs is visible), the namespaces, the Landlock ruleset (after
/// `setns`: its paths are the sandbox's), with `-t` the pseudo-terminal, then the command's process. Returns its
/// pid, pidfd, the read end of its failure pipe and, with `-t`, the socket the terminal's master waits on.
fn enter_sandbox(
    prepared: &crate::prepare::Prepared,
    policy: &SandboxPolicy,
    target: &RunningSandbox,
    pidfd: BorrowedFd<'_>,
    audit_socket: Option<RawFd>,
    agent: Option<(&OwnedFd, &crate::agent::AgentSocket)>,
) -> Result<(libc::pid_t, OwnedFd, OwnedFd, Option<OwnedFd>), AttachError> {
    let agent_listener = agent.map(|(listener, _)| listener);
    let plan = &prepared.plan;
    // The agent's buffers, before the fork: its loop allocates nothing.
    let mut agent_space = agent_listener.map(|_| crate::agent::AgentSpace::new());
    // The cgroup first: this process joins it (the command, its child, is born inside), because after setns
    // the host's cgroupfs is out of sight. Fails closed when the sandbox has limits but no cgroup is found.
    if policy.limits.needs_cgroup() {
        let found: Option<SandboxCgroup> = cgroups::detect_layout(std::path::Path::new(cgroups::SYS_FS_CGROUP))
            .and_then(|layout| cgroups::find_sandbox_cgroup(&layout, &target.name))
            .ok()
            .flatten();
        match (found, policy.limits_enforcement) {
            (Some(cg), _) => {
                let joined = cg.add_process(std::process::id() as i32);
                // Only the supervisor that created the cgroup removes it; our copy must not on drop.
                std::mem::forget(cg);
                joined?;
            }
            (None, Requirement::BestEffort) => {}
            (None, Requirement::Required) => return Err(AttachError::CgroupMissing(target.name.clone())),
        }
    }

    // Init's namespaces, as `run_sandbox` made them: its own user, mount, pid, IPC, UTS and cgroup namespaces,
    // and its own network namespace unless the policy shares the host's (which the sandbox's user namespace does
    // not own: joining it would fail, and there is nothing to join). (Not read from /proc/PID/ns: init is not
    // dumpable, and rootless we may not look there.)
    let flags = namespaces::sandbox_flags(plan.new_network_namespace);

    // As host root: our supplementary groups would be host groups inside (see `run_sandbox`).
    // Stdio pipes must be writable by the command's host id (the sandbox's, read from init's map).
    if plan.ids.host_root {
        let _ = sys::credentials::clear_supplementary_groups();
        let (uid, gid) = host_ids_of(target.init_pid, plan.ids.uid, plan.ids.gid)?;
        userns::hand_stdio_pipes_to(uid, gid);
        // The agent's socket belongs to the sandbox's user, whose host ids its clients give the pipes they send
        // (as above: a command may reopen its streams through /proc/self/fd). Before setns: a host path.
        if let Some((_, socket)) = agent {
            std::os::unix::fs::chown(&socket.bound, Some(uid), Some(gid)).map_err(|e| {
                AttachError::SetupStep(format!("cannot give {} to the sandbox's user: {e}", socket.bound.display()))
            })?;
        }
    }
    // Published once it has its owner (rootless it is ours already, which is the sandbox's user's).
    if let Some((_, socket)) = agent {
        std::fs::rename(&socket.bound, &socket.published).map_err(|e| {
            AttachError::SetupStep(format!(
                "cannot publish the exec agent's socket {}: {e}",
                socket.published.display()
            ))
        })?;
    }
    let (failure_read, failure_write) = sys::fd::pipe_cloexec().map_err(|e| AttachError::CreatePipe(os_error(e)))?;
    // Nothing in the sandbox may ptrace this process or its child before the child's execve (they hold
    // capabilities in the sandbox's user namespace until `exec_command` drops them).
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 0);
    // The child inherits a full mask; `exec_command` resets it. The supervisor loop collects ours by signalfd.
    let _old_mask = sys::signal::block_all();

    // All at once by pidfd: the kernel checks that we may ptrace init (see `init::hold_until_stopped` on why a
    // held init stays dumpable rootless), enters the user namespace first, then the others. (Entering the user
    // namespace alone first would lose the right to ptrace init, which the pidfd form checks.) After this our
    // root and working directory are the sandbox's root.
    // This process is single-threaded (required for CLONE_NEWUSER).
    if let Err(e) = sys::namespace::setns(pidfd, flags) {
        drop((failure_read, failure_write));
        return Err(AttachError::EnterNamespaces(os_error(e)));
    }
    let ruleset = match &plan.landlock {
        Some(lp) => match landlock::create_ruleset(lp) {
            Ok(fd) => Some(fd),
            Err(f) => {
                drop((failure_read, failure_write));
                return Err(AttachError::Landlock(sandbox::describe_failure(prepared, &f)));
            }
        },
        None => None,
    };
    // With `-t`: a new pseudo-terminal of the sandbox's own devpts (after setns, /dev/pts/ptmx is the sandbox's).
    let terminal = match plan.tty.map(|winsize| open_terminal(&winsize)).transpose() {
        Ok(t) => t,
        Err(e) => {
            drop((failure_read, failure_write));
            if let Some(fd) = ruleset {
                sys::fd::close(fd);
            }
            return Err(e);
        }
    };

    // The pid namespace applies to children only: the command is our child, pid N inside.
    // By number: `exec_command` never returns (it execs or exits), so in the child `failure_write` is never
    // dropped and the descriptor stays open for it.
    let fds = CommandFds {
        failure: failure_write.as_raw_fd(),
        tty_slave: terminal.as_ref().map(|(slave, _)| slave.as_fd()),
        landlock_ruleset: ruleset,
        audit_socket,
        agent_listener: agent_listener.map(AsRawFd::as_raw_fd),
    };
    // A long-lived agent starts from a heap without the setup's garbage (it and this process keep it for the
    // sandbox's whole life).
    if agent_listener.is_some() {
        sys::process::trim_heap();
    }
    // This process is single-threaded; the child only runs exec_command, which does async-signal-safe work on
    // the prepared plan (no allocation).
    let agent = agent_listener.zip(agent_space.as_mut());
    let started = match (agent, audit_socket) {
        (None, None) => spawn_command_without_fork(plan, &fds),
        // A fork for the agent, which lives on in a copy of this memory (and makes itself dumpable, which a
        // shared memory would make us), and for an audited command: its `execve` waits for an answer from this
        // process, which the spawn without a fork would keep suspended until that `execve` is done.
        (agent, _) => match sys::process::fork_with_pidfd(0, None) {
            Ok(sys::process::PidfdFork::Child) => match agent {
                Some((listener, space)) => exec::become_agent(plan, &fds, listener.as_fd(), space),
                None => exec::exec_command(plan, &fds),
            },
            Ok(sys::process::PidfdFork::Parent { pid, pidfd }) => Ok((pid, pidfd)),
            Err(e) => Err(e),
        },
    };
    let (child, child_pidfd) = match started {
        Ok(started) => started,
        Err(e) => {
            drop((failure_read, failure_write));
            if let Some(fd) = ruleset {
                sys::fd::close(fd);
            }
            drop(terminal);
            return Err(AttachError::Fork(os_error(e)));
        }
    };
    drop(failure_write);
    if let Some(fd) = ruleset {
        sys::fd::close(fd);
    }
    // The slave is the command's alone: ours closes, so the master reads end of file once the command's ends.
    let tty_socket = terminal.map(|(slave, socket)| {
        drop(slave);
        socket
    });
    Ok((child, child_pidfd, failure_read, tty_socket))
}

/// Starts the command's process without copying this one (`sys::process::vfork_and_run`: it shares this
/// memory, and this process waits, until its `execve`), then opens a pidfd for it. Returns its pid and the pidfd.
///
/// The pidfd comes after the start, by pid: only this process reaps its children, so the pid cannot be reused
/// before, and a command that already ended is a zombie the pidfd still refers to. If the pidfd cannot be had,
/// the command is killed and reaped, and the error returned.
fn spawn_command_without_fork(
    plan: &crate::plan::SandboxPlan,
    fds: &CommandFds<'_>,
) -> Result<(libc::pid_t, OwnedFd), Errno> {
    // This process is single-threaded (the spawn checks it); the child only runs exec_command (async-signal-safe,
    // no allocation, ends in `execve` or `_exit`).
    let child = sys::process::vfork_and_run(&mut || exec::exec_command(plan, fds))?;
    // Dumpability belongs to the memory, which the child shared until its `execve`: its switch of ids set it to
    // the host's `suid_dumpable`. Ours is non-dumpable again, as `enter_sandbox` made it before `setns`.
    let _ = sys::process::prctl(libc::PR_SET_DUMPABLE, 0);
    match sys::process::pidfd_open(child) {
        Ok(pidfd) => Ok((child, pidfd)),
        Err(e) => {
            let _ = sys::signal::kill(child, libc::SIGKILL);
            let _ = sys::wait::waitpid(child, 0);
            Err(e)
        }
    }
}

/// Opens a pseudo-terminal in the sandbox (`tty::open_sandbox_terminal`, as init does for `run -t`), sized
/// `winsize`. Its master is sent over a new socket pair, to be received by the relay in `supervise` as `run -t`'s
/// is; returns the slave and the socket's receiving end.
fn open_terminal(winsize: &libc::winsize) -> Result<(OwnedFd, OwnedFd), AttachError> {
    let (sending, receiving) = sys::fd::socketpair_cloexec().map_err(|e| AttachError::Terminal(os_error(e)))?;
    let opened = crate::tty::open_sandbox_terminal(winsize, sending.as_raw_fd());
    drop(sending);
    match opened {
        Ok(slave) => Ok((slave, receiving)),
        Err(f) => Err(AttachError::TerminalStep(f.step.description(), os_error(f.errno))),
    }
}

fn open_host_proc() -> Result<OwnedFd, Errno> {
    sys::fd::open(c"/proc", libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
}

/// How many times the session is swept for members: each sweep kills every member it sees, so only a process
/// forked between a sweep's listing and its kill survives one, and that one is found by the next.
const SESSION_SWEEPS: usize = 16;

/// SIGKILLs every process of session `session` (the timed-out command's pid, which `exec_command`'s `setsid`
/// made the id of its session and process group), read from the host's /proc (`proc_dir`). A process that left
/// with its own `setsid` is no longer in the session and is not found (as with coreutils `timeout`).
fn kill_session(session: libc::pid_t, proc_dir: RawFd) {
    // The process group at once first: one call, and the kernel does not let a member fork past it.
    let _ = sys::signal::kill(-session, libc::SIGKILL);
    for _ in 0..SESSION_SWEEPS {
        let members = live_session_members(proc_dir, session);
        if members.is_empty() {
            return;
        }
        for pid in members {
            // By pidfd, checked again once open: the pid is known to be the member, not a process that reused it.
            let Ok(fd) = sys::process::pidfd_open(pid) else { continue };
            if live_session_of(proc_dir, pid) == Some(session) {
                let _ = sys::process::pidfd_send_signal(fd.as_fd(), libc::SIGKILL);
            }
            drop(fd);
        }
    }
}

/// The pids (host's) of `proc_dir` whose session is `session` and that have not exited yet.
fn live_session_members(proc_dir: RawFd, session: libc::pid_t) -> Vec<libc::pid_t> {
    let mut members = Vec::new();
    // A new open file description each sweep (a dup would share the first one's position, at the end).
    let Ok(dir) = sys::fd::openat(proc_dir, c".", libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC, 0) else {
        return members;
    };
    // By descriptor: after setns, `/proc` by path is the sandbox's. (This runs in the `airlock exec` process, on
    // the parent's side of its fork, once the command is reaped: the Vec and the Strings below are fine here.)
    let mut buf = [0u8; 8192];
    sys::dir::for_each_name(dir.as_fd(), &mut buf, |name| {
        let Some(pid) = std::str::from_utf8(name).ok().and_then(|n| n.parse::<libc::pid_t>().ok()) else {
            return;
        };
        if live_session_of(proc_dir, pid) == Some(session) {
            members.push(pid);
        }
    });
    members
}

/// The session of `pid` (field 6 of `/proc/PID/stat`, in the host's pid namespace: `proc_dir` is the host's),
/// or None when it is gone or has exited (a zombie is past killing).
fn live_session_of(proc_dir: RawFd, pid: libc::pid_t) -> Option<libc::pid_t> {
    use std::io::Read;
    let path = std::ffi::CString::new(format!("{pid}/stat")).ok()?;
    let mut file = std::fs::File::from(sys::fd::openat(proc_dir, &path, libc::O_RDONLY | libc::O_CLOEXEC, 0).ok()?);
    let mut stat = String::new();
    file.read_to_string(&mut stat).ok()?;
    // "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses, so after the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(2)?.parse().ok()
}

/// The host ids the sandbox's maps give inside ids `uid`/`gid`.
fn host_ids_of(pid: libc::pid_t, uid: u32, gid: u32) -> Result<(u32, u32), AttachError> {
    let read =
        |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| AttachError::ReadIdMap(pid, e));
    let host_uid = translate_id(&read("uid_map")?, uid, IdSide::Inside).unwrap_or(u32::MAX);
    let host_gid = translate_id(&read("gid_map")?, gid, IdSide::Inside).unwrap_or(u32::MAX);
    Ok((host_uid, host_gid))
}

#[cfg(test)]
mod tests {
    use crate::userns::{translate_id, IdSide};

    #[test]
    fn inside_ids_map_through_each_line() {
        let map = "         0     100000      65536\n";
        assert_eq!(translate_id(map, 0, IdSide::Inside), Some(100000));
        assert_eq!(translate_id(map, 1000, IdSide::Inside), Some(101000));
        assert_eq!(translate_id(map, 65536, IdSide::Inside), None);
        assert_eq!(translate_id("1000 1000 1\n", 1000, IdSide::Inside), Some(1000));
        assert_eq!(translate_id("1000 1000 1\n", 0, IdSide::Inside), None);
    }
}
