//! What the host and the guest agent say to each other on the control port (`airlock.ctl`): one JSON document a
//! line. The host sends one [`GuestRequest`]; the guest answers with [`GuestMessage`]s, the last an outcome.
//! The command's standard streams have ports of their own (`airlock.stdin`, `.stdout`, `.stderr`), raw bytes.

use policy::sandbox::SandboxPolicy;

/// The serial ports' names (`/sys/class/virtio-ports/*/name` in the guest).
pub const PORT_CONTROL: &str = "airlock.ctl";
pub const PORT_STDIN: &str = "airlock.stdin";
pub const PORT_STDOUT: &str = "airlock.stdout";
pub const PORT_STDERR: &str = "airlock.stderr";

/// What the guest agent sets up and runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GuestRequest {
    /// The policy the guest's namespace engine applies (the workspace as the guest sees it: a `cow` workspace's
    /// merged view is exported read-write, so it is `rw` here).
    pub policy: SandboxPolicy,
    /// The sandbox's name (its cgroup's, inside the guest).
    pub name: Option<String>,
    /// The host directories exported to the guest, each mounted at its own path.
    pub shares: Vec<Share>,
    /// Symbolic links of the host's root the policy shows (`/bin` → `usr/bin` on a merged-/usr system).
    pub symlinks: Vec<Symlink>,
    /// `--audit` (and learn mode): the calls the guest's engine sends to its seccomp listener, whose records come
    /// back as [`GuestMessage::Audit`]; `None`: nothing is audited.
    #[serde(default)]
    pub audit: Option<AuditNotify>,
}

/// `runtime::seccomp::NotifyOptions` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditNotify {
    pub exec: bool,
    pub denials: bool,
    pub writes: bool,
}

impl From<runtime::seccomp::NotifyOptions> for AuditNotify {
    fn from(n: runtime::seccomp::NotifyOptions) -> AuditNotify {
        AuditNotify { exec: n.exec, denials: n.denials, writes: n.writes }
    }
}

impl From<AuditNotify> for runtime::seccomp::NotifyOptions {
    fn from(n: AuditNotify) -> runtime::seccomp::NotifyOptions {
        runtime::seccomp::NotifyOptions { exec: n.exec, denials: n.denials, writes: n.writes }
    }
}

/// Longest line the host reads from the guest's control port (newline excluded). A record's fields are already
/// bounded in the guest (argv 32 KiB, strings 4 KiB, as `audit::event` says), and bytes travel as JSON number
/// arrays (up to 4 characters a byte): 1 MiB holds any record an honest guest sends. A longer line is refused
/// (the guest is not trusted): the host holds at most this much of one line in memory.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// One record of the guest's seccomp listener (`runtime::notify`), as the guest's engine made it; the host hands
/// it to the run's audit sink, which writes it to the log on the host. `pid`s are the guest's; `host_pid` is the
/// process's pid in the guest kernel (the VM's host side has no such process).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditRecord {
    Exec {
        pid: i32,
        host_pid: i32,
        ppid: i32,
        path: Vec<u8>,
        argv: Vec<Vec<u8>>,
        argv_omitted: usize,
        cwd: Vec<u8>,
        dirfd: Option<i32>,
        markers: Vec<String>,
    },
    Denied {
        pid: i32,
        host_pid: i32,
        syscall: String,
        nr: i64,
        errno: i32,
        errno_name: String,
        rule: usize,
    },
    FileWrite {
        pid: i32,
        syscall: String,
        path: Vec<u8>,
        writable: bool,
    },
}

/// An [`AuditRecord`] the guest sent that the audit log cannot take.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditRecordError {
    #[error("an exec record with an unknown marker {0:?}")]
    UnknownMarker(String),
}

impl AuditRecord {
    /// The guest's side: `None` for an event the guest's listener never makes (lifecycle records are the host's).
    pub fn from_event(event: audit::Event) -> Option<AuditRecord> {
        Some(match event {
            audit::Event::Exec(e) => AuditRecord::Exec {
                pid: e.pid,
                host_pid: e.host_pid,
                ppid: e.ppid,
                path: e.path,
                argv: e.argv,
                argv_omitted: e.argv_omitted,
                cwd: e.cwd,
                dirfd: e.dirfd,
                markers: e.markers.iter().map(|m| m.to_string()).collect(),
            },
            audit::Event::Denied(d) => AuditRecord::Denied {
                pid: d.pid,
                host_pid: d.host_pid,
                syscall: d.syscall,
                nr: d.nr,
                errno: d.errno,
                errno_name: d.errno_name,
                rule: d.rule,
            },
            audit::Event::FileWrite { pid, syscall, path, writable } => {
                AuditRecord::FileWrite { pid, syscall, path, writable }
            }
            _ => return None,
        })
    }

    /// The host's side: the event the audit sink takes. Only the listener's kinds can arrive (the enum has no
    /// others), so a guest cannot forge a lifecycle record (`created`, `exited`, `workspace`).
    pub fn into_event(self) -> Result<audit::Event, AuditRecordError> {
        use audit::event::{MARK_NOT_FOUND, MARK_NOT_UTF8, MARK_PROCESS_GONE, MARK_TRUNCATED, MARK_UNREADABLE};
        Ok(match self {
            AuditRecord::Exec { pid, host_pid, ppid, path, argv, argv_omitted, cwd, dirfd, markers } => {
                let markers = markers
                    .into_iter()
                    .map(|m| {
                        [MARK_NOT_FOUND, MARK_NOT_UTF8, MARK_PROCESS_GONE, MARK_TRUNCATED, MARK_UNREADABLE]
                            .into_iter()
                            .find(|known| *known == m)
                            .ok_or(AuditRecordError::UnknownMarker(m))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                audit::Event::Exec(audit::ExecRecord {
                    pid,
                    host_pid,
                    ppid,
                    path,
                    argv,
                    argv_omitted,
                    cwd,
                    dirfd,
                    markers,
                })
            }
            AuditRecord::Denied { pid, host_pid, syscall, nr, errno, errno_name, rule } => {
                audit::Event::Denied(audit::SyscallDenial { pid, host_pid, syscall, nr, errno, errno_name, rule })
            }
            AuditRecord::FileWrite { pid, syscall, path, writable } => {
                audit::Event::FileWrite { pid, syscall, path, writable }
            }
        })
    }
}

/// One virtio-9p export.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// Its mount tag (`airlockN`).
    pub tag: String,
    /// Where it is mounted in the guest: the host path it exports.
    pub path: String,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Symlink {
    pub path: String,
    pub target: String,
}

/// From the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestMessage {
    /// The request arrived and the shares are mounted: the guest is up.
    Started,
    /// A protection the guest's engine runs without (printed as the namespace backend's warnings are).
    Warning(String),
    /// A record of the guest's seccomp listener, in the order the listener made them.
    Audit(AuditRecord),
    /// The command's outcome, as the engine reported it.
    Exited(i32),
    TimedOut {
        millis: u64,
    },
    ExecFailed {
        code: i32,
        message: String,
    },
    OutOfMemory {
        summary: String,
    },
    /// The guest could not set the sandbox up: the layer and why (one line).
    Failed(String),
}
