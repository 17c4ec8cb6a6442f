//! How the sandbox's processes report a failed setup step to the supervisor.
//!
//! After `clone` nothing may allocate, so a failure is a fixed-size record — which step, the errno, and the index
//! of the item (mount, path) it concerned — written in one `write` (atomic, far below `PIPE_BUF`) to a
//! close-on-exec pipe. The supervisor turns it into a sentence using the plan it built, which still holds every
//! path by index. An `execve` that succeeds closes the pipe without writing, which is how the supervisor knows
//! the command started.

use std::os::fd::RawFd;

use sys::Errno;

/// The setup step that failed. The numbering is internal to one airlock binary (both ends are the same binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    WaitForSupervisor = 1,
    SwitchToSandboxRoot,
    JoinCgroup,
    UnshareCgroupNamespace,
    MakeMountsPrivate,
    OpenMountSource,
    CheckMountSource,
    CloneMountSource,
    OpenWorkspaceLayer,
    MountWorkspaceOverlay,
    SetMountSourceAttributes,
    MountStagingRoot,
    CreateMountPoint,
    AttachMount,
    CreateRootSymlink,
    MountTmpfs,
    MountProc,
    MaskProcEntry,
    MountDev,
    MountDevpts,
    CreateDevSymlink,
    MakeRootReadOnly,
    PivotRoot,
    DetachOldRoot,
    SetHostname,
    BringUpLoopback,
    OpenDevNull,
    OpenPseudoTerminal,
    SendPseudoTerminal,
    CreateLandlockRuleset,
    AddLandlockRule,
    ForkCommand,
    BlockSignals,
    NewSession,
    SetControllingTerminal,
    CloseInheritedFds,
    ChangeDirectory,
    SetRlimit,
    DropBoundingSet,
    SetSecurebits,
    SwitchIds,
    DropCapabilities,
    SetNoNewPrivs,
    RestrictLandlock,
    InstallSeccomp,
    Execute,
    SendSeccompListener,
    OpenTunDevice,
    CreateTunInterface,
    ConfigureTunInterface,
    AddDefaultRoute,
    HandTunToGateway,
    WriteSandboxFile,
    MountRootOverlay,
    OpenRootLayer,
    CreateNetworkNamespace,
    EnterNetworkNamespace,
}

impl Step {
    const ALL: [Step; 57] = [
        Step::WaitForSupervisor,
        Step::SwitchToSandboxRoot,
        Step::JoinCgroup,
        Step::UnshareCgroupNamespace,
        Step::MakeMountsPrivate,
        Step::OpenMountSource,
        Step::CheckMountSource,
        Step::CloneMountSource,
        Step::OpenWorkspaceLayer,
        Step::MountWorkspaceOverlay,
        Step::SetMountSourceAttributes,
        Step::MountStagingRoot,
        Step::CreateMountPoint,
        Step::AttachMount,
        Step::CreateRootSymlink,
        Step::MountTmpfs,
        Step::MountProc,
        Step::MaskProcEntry,
        Step::MountDev,
        Step::MountDevpts,
        Step::CreateDevSymlink,
        Step::MakeRootReadOnly,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::SetHostname,
        Step::BringUpLoopback,
        Step::OpenDevNull,
        Step::OpenPseudoTerminal,
        Step::SendPseudoTerminal,
        Step::CreateLandlockRuleset,
        Step::AddLandlockRule,
        Step::ForkCommand,
        Step::BlockSignals,
        Step::NewSession,
        Step::SetControllingTerminal,
        Step::CloseInheritedFds,
        Step::ChangeDirectory,
        Step::SetRlimit,
        Step::DropBoundingSet,
        Step::SetSecurebits,
        Step::SwitchIds,
        Step::DropCapabilities,
        Step::SetNoNewPrivs,
        Step::RestrictLandlock,
        Step::InstallSeccomp,
        Step::Execute,
        Step::SendSeccompListener,
        Step::OpenTunDevice,
        Step::CreateTunInterface,
        Step::ConfigureTunInterface,
        Step::AddDefaultRoute,
        Step::HandTunToGateway,
        Step::WriteSandboxFile,
        Step::MountRootOverlay,
        Step::OpenRootLayer,
        Step::CreateNetworkNamespace,
        Step::EnterNetworkNamespace,
    ];

    fn from_u32(value: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == value)
    }

    /// What the step does, for messages ("cannot <description>").
    pub fn description(self) -> &'static str {
        match self {
            Step::WaitForSupervisor => "wait for the supervisor to map user ids",
            Step::SwitchToSandboxRoot => "switch to the sandbox's root id",
            Step::UnshareCgroupNamespace => "create the cgroup namespace",
            Step::JoinCgroup => "join the sandbox's cgroup through",
            Step::MakeMountsPrivate => "make the mount namespace private",
            Step::OpenMountSource => "open mount source",
            Step::CheckMountSource => "check mount source",
            Step::CloneMountSource => "clone mount source",
            Step::OpenWorkspaceLayer => "open the copy-on-write layer of",
            Step::MountWorkspaceOverlay => "mount the copy-on-write overlay of",
            Step::SetMountSourceAttributes => "set mount flags on",
            Step::MountStagingRoot => "mount the new root tmpfs",
            Step::CreateMountPoint => "create mount point",
            Step::AttachMount => "attach mount at",
            Step::CreateRootSymlink => "create symlink",
            Step::MountTmpfs => "mount tmpfs at",
            Step::MountProc => "mount a fresh /proc",
            Step::MaskProcEntry => "mask /proc entry",
            Step::MountDev => "build the minimal /dev",
            Step::MountDevpts => "mount a new devpts instance on /dev/pts",
            Step::CreateDevSymlink => "create /dev symlink",
            Step::MakeRootReadOnly => "make the new root read-only",
            Step::PivotRoot => "pivot_root into the new root",
            Step::DetachOldRoot => "detach the old root",
            Step::SetHostname => "set the hostname",
            Step::BringUpLoopback => "bring up the loopback interface",
            Step::OpenDevNull => "point init's standard streams at /dev/null",
            Step::OpenPseudoTerminal => "open a pseudo-terminal",
            Step::SendPseudoTerminal => "pass the pseudo-terminal to the supervisor",
            Step::CreateLandlockRuleset => "create the Landlock ruleset",
            Step::AddLandlockRule => "add Landlock rule for",
            Step::ForkCommand => "fork the command's process",
            Step::BlockSignals => "set up signal handling in the sandbox init",
            Step::NewSession => "start a new session",
            Step::SetControllingTerminal => "set the controlling terminal",
            Step::CloseInheritedFds => "close inherited file descriptors",
            Step::ChangeDirectory => "change directory to",
            Step::SetRlimit => "set resource limit",
            Step::DropBoundingSet => "drop the capability bounding set",
            Step::SetSecurebits => "lock the securebits",
            Step::SwitchIds => "switch to the target user and group ids",
            Step::DropCapabilities => "drop capabilities",
            Step::SetNoNewPrivs => "set no_new_privs",
            Step::RestrictLandlock => "enforce the Landlock ruleset",
            Step::InstallSeccomp => "install the seccomp filter",
            Step::SendSeccompListener => "pass the seccomp listener to the audit log's supervisor",
            Step::Execute => "execute",
            Step::OpenTunDevice => "open /dev/net/tun for the network gateway",
            Step::CreateTunInterface => "create the network gateway's TUN interface airlock0",
            Step::ConfigureTunInterface => "configure the network gateway's interface airlock0",
            Step::AddDefaultRoute => "add the default route via the network gateway",
            Step::HandTunToGateway => "hand the TUN interface to the network gateway process",
            Step::WriteSandboxFile => "write the sandbox's own",
            Step::MountRootOverlay => "mount the root overlay",
            Step::OpenRootLayer => "open the root overlay's directories",
            Step::CreateNetworkNamespace => "create the network namespace",
            Step::EnterNetworkNamespace => "enter the sandbox's network namespace",
        }
    }
}

/// One failure record, as written to the failure pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFailure {
    pub step: Step,
    pub errno: Errno,
    /// Index of the item concerned in the plan list the step works on (or 0).
    pub index: u32,
}

/// The size of one failure record.
pub(crate) const RECORD_LEN: usize = 12;

impl ChildFailure {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(&(self.step as u32).to_ne_bytes());
        out[4..8].copy_from_slice(&self.errno.to_ne_bytes());
        out[8..12].copy_from_slice(&self.index.to_ne_bytes());
        out
    }

    pub(crate) fn decode(buf: &[u8; RECORD_LEN]) -> Option<ChildFailure> {
        let word = |i: usize| -> [u8; 4] { [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]] };
        Some(ChildFailure {
            step: Step::from_u32(u32::from_ne_bytes(word(0)))?,
            errno: i32::from_ne_bytes(word(4)),
            index: u32::from_ne_bytes(word(8)),
        })
    }
}

/// A failed step, with the index of the item it concerned (for `map_err`).
pub fn fail(step: Step, index: usize) -> impl FnOnce(Errno) -> ChildFailure {
    move |errno| ChildFailure { step, errno, index: index as u32 }
}

/// Writes a failure record and exits with `code`. Async-signal-safe.
pub fn report_and_exit(fd: RawFd, step: Step, errno: Errno, index: u32, code: i32) -> ! {
    let record = ChildFailure { step, errno, index }.encode();
    // Nothing can be done if the supervisor is gone: the exit status still says the setup failed.
    let _ = sys::fd::write_all(fd, &record);
    sys::process::exit_immediately(code)
}

/// Reads the first failure record from the pipe, if the sandbox wrote one. The write end must be closed in this
/// process and the writers must have exited, so the read cannot block.
pub fn read_failure(fd: RawFd) -> Option<ChildFailure> {
    let mut buf = [0u8; RECORD_LEN];
    let mut filled = 0;
    while filled < RECORD_LEN {
        match sys::fd::read(fd, &mut buf[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    if filled == RECORD_LEN {
        ChildFailure::decode(&buf)
    } else {
        None
    }
}

/// An error and its sources on one line: "what failed: why: why".
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The text of an errno value (`strerror`), e.g. "Permission denied".
pub fn errno_text(errno: Errno) -> String {
    std::io::Error::from_raw_os_error(errno).to_string().split(" (os error").next().unwrap_or_default().to_string()
}

/// An error from the kernel as messages show it: the description, without Rust's `(os error N)` suffix. Errors
/// keep the `io::Error` itself (callers can match its kind or raw errno); only their text goes through this.
pub fn os_error_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => errno_text(errno),
        None => e.to_string(),
    }
}

/// The `io::Error` of an errno a system call returned.
pub fn os_error(errno: Errno) -> std::io::Error {
    std::io::Error::from_raw_os_error(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_read_as_their_errno_text() {
        assert_eq!(os_error_text(&os_error(libc::EPERM)), "Operation not permitted");
        assert_eq!(os_error_text(&os_error(libc::EPERM)), errno_text(libc::EPERM));
        assert_eq!(os_error(libc::ENOENT).kind(), std::io::ErrorKind::NotFound);
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "bad device name");
        assert_eq!(os_error_text(&other), "bad device name");
    }

    #[test]
    fn records_round_trip() {
        for step in Step::ALL {
            let rec = ChildFailure { step, errno: libc::EPERM, index: 7 };
            assert_eq!(ChildFailure::decode(&rec.encode()), Some(rec));
        }
    }

    #[test]
    fn unknown_step_is_rejected() {
        let mut buf = ChildFailure { step: Step::Execute, errno: 1, index: 0 }.encode();
        buf[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert_eq!(ChildFailure::decode(&buf), None);
    }

    #[test]
    fn errno_text_has_no_os_error_suffix() {
        assert_eq!(errno_text(libc::ENOENT), "No such file or directory");
    }
}
