//! The command's process: the last steps before `execve`, in the order the design fixes. Runs after `fork` from
//! the sandbox's init; syscalls on prepared data only.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

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
pub struct CommandFds<'a> {
    /// Failure pipe (close-on-exec: a successful `execve` closes it unwritten).
    pub failure: RawFd,
    /// Slave side of the sandbox's pseudo-terminal, with `-t`.
    pub tty_slave: Option<BorrowedFd<'a>>,
    /// The Landlock ruleset built by init, when Landlock is on.
    pub landlock_ruleset: Option<RawFd>,
    /// With an audited seccomp program: the socket that carries the filter's listener to the supervisor.
    pub audit_socket: Option<RawFd>,
    /// The exec agent's listening socket, when this process becomes the agent (`agent::serve`) instead of
    /// executing the command.
    pub agent_listener: Option<RawFd>,
}

/// Never returns: either `execve` replaces the process or a failure record is written and it exits.
pub fn exec_command(plan: &SandboxPlan, fds: &CommandFds<'_>) -> ! {
    confine_command_process(plan, fds);
    let errno = execute_candidates(plan);
    let code = if errno == libc::ENOENT || errno == libc::ENOTDIR { EXIT_NOT_FOUND } else { EXIT_NOT_EXECUTABLE };
    report_and_exit(fds.failure, Step::Execute, errno, 0, code)
}

/// Never returns: confined exactly as a command is (`confine_command_process`), this process serves as the
/// sandbox's exec agent on `listener`, where a command would `execve`.
pub fn become_agent(
    plan: &SandboxPlan,
    fds: &CommandFds<'_>,
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
fn confine_command_process(plan: &SandboxPlan, fds: &CommandFds<'_>) {
    let fail = |step: Step, errno: Errno| -> ! { report_and_exit(fds.failure, step, errno, 0, EXIT_SETUP_FAILED) };

    // Signals: init blocks everything (it waits for them with sigwaitinfo); the command starts with the default
    // disposition for each and an empty mask, as a freshly started program expects (Rust's runtime ignores
    // SIGPIPE, and that must not leak into `yes | head`).
    sys::signal::reset_all();

    // A new session: the command has no controlling terminal of the caller's, so it cannot inject input into
    // it with TIOCSTI (CVE-2017-5226) — or, with `-t`, the sandbox's own pseudo-terminal becomes it.
    if let Err(e) = sys::process::new_session() {
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
    if let Err(e) = sys::process::change_directory(&plan.command.cwd) {
        report_and_exit(fds.failure, Step::ChangeDirectory, e, 0, EXIT_SETUP_FAILED);
    }

    for (index, &(resource, soft, hard)) in plan.rlimits.iter().enumerate() {
        if let Err(e) = sys::process::set_limit(resource, soft, hard) {
            report_and_exit(fds.failure, Step::SetRlimit, e, index as u32, EXIT_SETUP_FAILED);
        }
    }

    // Capabilities, in the only order that works: the bounding set, the ambient set and securebits need
    // CAP_SETPCAP, which the switch to a non-root id may take away (and the securebits forbid raising ambient
    // capabilities once set); the remaining sets are cut down to what is kept after the switch.
    if let Err(e) = caps::drop_bounding_set(plan.cap_last, plan.caps_kept) {
        fail(Step::DropBoundingSet, e);
    }
    if let Err(e) = caps::raise_ambient(plan.cap_last, plan.caps_kept) {
        fail(Step::DropCapabilities, e);
    }
    if let Err(e) = caps::lock_securebits() {
        fail(Step::SetSecurebits, e);
    }
    if let Err(e) = switch_ids(plan.ids.uid, plan.ids.gid) {
        fail(Step::SwitchIds, e);
    }
    if let Err(e) = caps::keep_only(plan.caps_kept) {
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
                Some(socket) => sys::socket::send_fd(socket, listener),
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
    // Execs recorded (notified, or traced in the kernel): a candidate that does not exist is skipped without an
    // execve, so the exec log does not list every PATH directory tried (the result is the same: execve would say
    // ENOENT or ENOTDIR).
    let audited = plan.seccomp.notify().exec || plan.execs_traced;
    for candidate in &plan.command.candidates {
        if audited {
            if let Err(libc::ENOENT | libc::ENOTDIR) = sys::fd::access(candidate, libc::F_OK) {
                continue;
            }
        }
        match sys::process::execute(candidate, plan.command.argv_pointers(), plan.command.envp_pointers()) {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => result = libc::EACCES,
            other => return other,
        }
    }
    result
}

/// Makes the pseudo-terminal slave the controlling terminal and the standard streams. Then the slave's own
/// descriptor closes, by number: its owner (init's, or the `airlock exec` process's) is never dropped in this
/// process, which execs or exits.
fn attach_terminal(slave: BorrowedFd<'_>) -> Result<(), Errno> {
    use sys::fd::StandardStream;
    sys::terminal::set_controlling_terminal(slave)?;
    for stream in [StandardStream::Input, StandardStream::Output, StandardStream::Error] {
        sys::fd::dup_onto_standard_stream(slave, stream)?;
    }
    if slave.as_raw_fd() > 2 {
        sys::fd::close(slave.as_raw_fd());
    }
    Ok(())
}

/// `setresgid` then `setresuid` (the gid first: after the uid changes we may no longer have CAP_SETGID). Used by
/// init (to become the namespace's root) and by the command's process (to become the target identity).
/// Supplementary groups were already cleared by the supervisor (as host root) before `clone`; rootless, the
/// kernel forbids changing them (`setgroups` is denied in the namespace unless `newgidmap` allowed it).
pub fn switch_ids(uid: u32, gid: u32) -> Result<(), Errno> {
    sys::credentials::setresgid(gid, gid, gid)?;
    sys::credentials::setresuid(uid, uid, uid)
}
