//! The command's process: the last steps before `execve`, in the order the design fixes. Runs after `fork` from
//! the sandbox's init; syscalls on prepared data only.

use std::os::fd::RawFd;

use crate::failure::{report_and_exit, Step};
use crate::plan::SandboxPlan;
use crate::{caps, landlock, seccomp};
use sys::Errno;

/// Exit status when the setup failed (nothing ran).
pub const EXIT_SETUP_FAILED: i32 = 125;
/// Exit status when the command was found but could not be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit status when the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// Descriptors the command's process needs until `execve`.
pub struct CommandFds {
    /// Failure pipe (close-on-exec: a successful `execve` closes it unwritten).
    pub failure: RawFd,
    /// Slave side of the sandbox's pseudo-terminal, with `-t`.
    pub tty_slave: Option<RawFd>,
    /// The Landlock ruleset built by init, when Landlock is on.
    pub landlock_ruleset: Option<RawFd>,
    /// With an audited seccomp program: the socket that carries the filter's listener to the supervisor.
    pub audit_socket: Option<RawFd>,
    /// The exec agent's listening socket, when this process becomes the agent (`agent::serve`) instead of
    /// executing the command.
    pub agent_listener: Option<RawFd>,
}

/// Never returns: either `execve` replaces the process or a failure record is written and it exits.
pub fn exec_command(plan: &SandboxPlan, fds: &CommandFds) -> ! {
    confine_command_process(plan, fds);
    let errno = execute_candidates(plan);
    let code = if errno == libc::ENOENT || errno == libc::ENOTDIR { EXIT_NOT_FOUND } else { EXIT_NOT_EXECUTABLE };
    report_and_exit(fds.failure, Step::Execute, errno, 0, code)
}

/// Never returns: confined exactly as a command is (`confine_command_process`), this process serves as the
/// sandbox's exec agent on `listener`, where a command would `execve`.
pub fn become_agent(
    plan: &SandboxPlan,
    fds: &CommandFds,
    listener: std::os::fd::BorrowedFd<'_>,
    space: &mut crate::agent::AgentSpace,
) -> ! {
    confine_command_process(plan, fds);
    // Set up: the failure pipe closes unwritten (an agent never execs, which would have closed it), so the
    // `airlock` process that made us reads no failure when we end.
    sys::fd::close(fds.failure);
    crate::agent::serve(plan, listener, space)
}

/// Every step of the command's process but the `execve`: signals, session, descriptors, directory, limits,
/// capabilities, identity, `no_new_privs`, Landlock, seccomp. A failed step writes its failure record and exits.
fn confine_command_process(plan: &SandboxPlan, fds: &CommandFds) {
    let fail = |step: Step, errno: Errno| -> ! { report_and_exit(fds.failure, step, errno, 0, EXIT_SETUP_FAILED) };

    // Signals: init blocks everything (it waits for them with sigwaitinfo); the command starts with the default
    // disposition for each and an empty mask, as a freshly started program expects (Rust's runtime ignores
    // SIGPIPE, and that must not leak into `yes | head`).
    reset_signals();

    // A new session: the command has no controlling terminal of the caller's, so it cannot inject input into
    // it with TIOCSTI (CVE-2017-5226) — or, with `-t`, the sandbox's own pseudo-terminal becomes it.
    // SAFETY: setsid takes no arguments.
    if let Err(e) = sys::check(unsafe { libc::setsid() } as libc::c_long) {
        fail(Step::NewSession, e);
    }
    if let Some(slave) = fds.tty_slave {
        if let Err(e) = attach_terminal(slave) {
            fail(Step::SetControllingTerminal, e);
        }
    }

    // Every descriptor above 2 closes, except the two we still need (both close-on-exec or closed below):
    // nothing the caller leaked reaches the command (CVE-2016-9962).
    let mut keep = [
        fds.failure,
        fds.landlock_ruleset.unwrap_or(-1),
        fds.audit_socket.unwrap_or(-1),
        fds.agent_listener.unwrap_or(-1),
    ];
    keep.sort_unstable();
    if let Err(e) = sys::fd::close_fds_except(&keep) {
        fail(Step::CloseInheritedFds, e);
    }

    // The working directory is set by path inside the new root, never inherited as a descriptor
    // (CVE-2024-21626).
    // SAFETY: valid NUL-terminated string.
    if let Err(e) = sys::check(unsafe { libc::chdir(plan.command.cwd.as_ptr()) } as libc::c_long) {
        report_and_exit(fds.failure, Step::ChangeDirectory, e, 0, EXIT_SETUP_FAILED);
    }

    for (index, &(resource, soft, hard)) in plan.rlimits.iter().enumerate() {
        let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: setrlimit reads a live rlimit.
        if let Err(e) = sys::check(unsafe { libc::setrlimit(resource as _, &limit) } as libc::c_long) {
            report_and_exit(fds.failure, Step::SetRlimit, e, index as u32, EXIT_SETUP_FAILED);
        }
    }

    // Capabilities, in the only order that works: the bounding set and securebits need CAP_SETPCAP, which the
    // switch to a non-root id may take away; the remaining sets are emptied after the switch.
    if let Err(e) = caps::drop_bounding_set(plan.cap_last) {
        fail(Step::DropBoundingSet, e);
    }
    if let Err(e) = caps::lock_securebits() {
        fail(Step::SetSecurebits, e);
    }
    if let Err(e) = switch_ids(plan.ids.uid, plan.ids.gid) {
        fail(Step::SwitchIds, e);
    }
    if let Err(e) = caps::drop_all_capabilities() {
        fail(Step::DropCapabilities, e);
    }

    // no_new_privs: setuid bits and file capabilities grant nothing from here on; Landlock and seccomp need it.
    if let Err(e) = sys::process::prctl(libc::PR_SET_NO_NEW_PRIVS, 1) {
        fail(Step::SetNoNewPrivs, e);
    }
    if let Some(ruleset) = fds.landlock_ruleset {
        if let Err(e) = landlock::restrict_self(ruleset) {
            fail(Step::RestrictLandlock, e);
        }
        sys::fd::close(ruleset);
    }

    // Seccomp last: from here on even airlock's own remaining calls go through the filter, and nothing but
    // execve (and reporting its failure) is left to do.
    // Audited (`--audit`, `create`, learn mode): the filter comes with a listener, which goes to the supervisor
    // before execve — the execve itself is the first call it is asked about — and our copy closes: a process
    // holding its own listener could answer its own notifications.
    match seccomp::install_seccomp_with_listener(&plan.seccomp) {
        Ok(None) => {}
        Ok(Some(listener)) => {
            let sent = match fds.audit_socket {
                Some(socket) => crate::tty::send_fd(socket, listener),
                None => Err(libc::EBADF),
            };
            sys::fd::close(listener);
            if let Err(e) = sent {
                fail(Step::SendSeccompListener, e);
            }
        }
        Err(e) => fail(Step::InstallSeccomp, e),
    }
    if let Some(socket) = fds.audit_socket {
        sys::fd::close(socket);
    }
}

/// Tries each candidate path like `execvp` does: a missing file moves on to the next `PATH` entry, a permission
/// error is remembered (and reported if nothing else works), anything else stops. Returns only on failure.
fn execute_candidates(plan: &SandboxPlan) -> Errno {
    let mut result = libc::ENOENT;
    // Audited: a candidate that does not exist is skipped without an execve, so the exec log does not list every
    // PATH directory tried (the result is the same: execve would say ENOENT or ENOTDIR).
    let audited = plan.seccomp.notify().exec;
    for candidate in &plan.command.candidates {
        // SAFETY: the path is a NUL-terminated string from the plan; access takes an integer mode.
        if audited && unsafe { libc::access(candidate.as_ptr(), libc::F_OK) } != 0 {
            match sys::errno() {
                libc::ENOENT | libc::ENOTDIR => continue,
                _ => {}
            }
        }
        // SAFETY: the path and both NULL-terminated pointer arrays come from the plan, which outlives the call.
        unsafe { libc::execve(candidate.as_ptr(), plan.command.argv_ptr(), plan.command.envp_ptr()) };
        match sys::errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => result = libc::EACCES,
            other => return other,
        }
    }
    result
}

fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: setting the default disposition is always valid; errors (unsupported numbers) are harmless.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty sigset is initialised by sigemptyset before sigprocmask reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Makes the pseudo-terminal slave the controlling terminal and the standard streams.
fn attach_terminal(slave: RawFd) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument.
    sys::check(unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } as libc::c_long)?;
    for target in 0..3 {
        // SAFETY: dup2 takes only integers.
        sys::check(unsafe { libc::dup2(slave, target) } as libc::c_long)?;
    }
    if slave > 2 {
        sys::fd::close(slave);
    }
    Ok(())
}

/// `setresgid` then `setresuid` (the gid first: after the uid changes we may no longer have CAP_SETGID). Used by
/// init (to become the namespace's root) and by the command's process (to become the target identity).
/// Supplementary groups were already cleared by the supervisor (as host root) before `clone`; rootless, the
/// kernel forbids changing them (`setgroups` is denied in the namespace).
pub fn switch_ids(uid: u32, gid: u32) -> Result<(), Errno> {
    // SAFETY: setresgid/setresuid take only integers.
    sys::check(unsafe { libc::setresgid(gid, gid, gid) } as libc::c_long)?;
    // SAFETY: as above.
    sys::check(unsafe { libc::setresuid(uid, uid, uid) } as libc::c_long)?;
    Ok(())
}
