//! What the host and the guest agent say to each other on the control port (`airlock.ctl`): one JSON document a
//! line. The host sends one [`GuestRequest`]; the guest answers with [`GuestMessage`]s, the last an outcome.
//! The command's standard streams have ports of their own (`airlock.stdin`, `.stdout`, `.stderr`), raw bytes.

use policy::sandbox::SandboxPolicy;

/// The serial ports' names (`/sys/class/virtio-ports/*/name` in the guest).
pub const PORT_CONTROL: &str = "airlock.ctl";
pub const PORT_STDIN: &str = "airlock.stdin";
pub const PORT_STDOUT: &str = "airlock.stdout";
pub const PORT_STDERR: &str = "airlock.stderr";

/// Commands a held guest runs at once (`airlock exec`, the files API, E2B's background and foreground commands).
/// They share the four ports: input and output travel in frames tagged with their session (see `super::held`),
/// each session's output within a window of [`OUTPUT_WINDOW`] bytes per stream that the host reopens as its
/// client reads, so one client that stops reading holds only its own command. More clients wait their turn in
/// the supervisor's listen queue.
pub const MAX_SESSIONS: usize = 16;

/// Bytes of a session's stdout (and as many of its stderr) the guest may send before the host has passed them
/// on to its client ([`super::held::HostMessage::Credit`] gives room back): the most the host holds for one
/// client that does not read (a command that writes more waits, as into a full pipe).
pub const OUTPUT_WINDOW: usize = 1 << 20;

/// Bytes of a session's input the host may send before the guest has given them to the command
/// ([`GuestMessage::InputTaken`]): the most the guest holds for a command that does not read its input.
pub const INPUT_WINDOW: usize = 128 * 1024;

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
    /// `--net allow`: the guest's NIC and `/etc` files (see `super::net`); `None`: the guest has no NIC.
    #[serde(default)]
    pub network: Option<super::net::GuestNetwork>,
    /// `airlock create`: the guest holds the sandbox and runs commands on request (`held`), not one command.
    #[serde(default)]
    pub held: bool,
    /// `run -t`: the command's terminal in the guest's sandbox, of this size (rows, columns), relayed to the
    /// standard stream ports.
    #[serde(default)]
    pub tty: Option<(u16, u16)>,
    /// Host root, a root other than the host's: the first id of the sandbox's host id range (see
    /// `super::GuestIdRange`), onto which the guest's engine maps the sandbox's ids.
    #[serde(default)]
    pub id_base: Option<u32>,
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

/// The host's reader of the control port: the bytes as they arrive, the guest's messages out, one a line. The
/// guest is not trusted: a line longer than [`MAX_MESSAGE_BYTES`] (ended or not) or one that is not a message is
/// an error, and at most that much of one line is held.
#[derive(Debug, Default)]
pub struct ControlReader {
    pending: Vec<u8>,
}

/// What the guest sent that the host refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("the guest sent a control message longer than {limit} bytes (the guest is not trusted: refused)")]
    TooLong { limit: usize },
    #[error("the guest sent a message airlock does not understand: {0}")]
    Malformed(String),
}

impl ControlReader {
    /// Takes what was read from the port.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole message, `None` until one has arrived.
    pub fn next_message(&mut self) -> Result<Option<GuestMessage>, ControlError> {
        let Some(end) = self.pending.iter().position(|&b| b == b'\n') else {
            // A line without its end yet: bounded, so a guest cannot make the host hold an endless line.
            if self.pending.len() > MAX_MESSAGE_BYTES {
                return Err(ControlError::TooLong { limit: MAX_MESSAGE_BYTES });
            }
            return Ok(None);
        };
        if end > MAX_MESSAGE_BYTES {
            return Err(ControlError::TooLong { limit: MAX_MESSAGE_BYTES });
        }
        let line: Vec<u8> = self.pending.drain(..=end).collect();
        serde_json::from_slice(&line).map(Some).map_err(|_| {
            // Shown cut: the line is the guest's.
            let mut shown = String::from_utf8_lossy(&line).trim().to_string();
            if shown.len() > 200 {
                let cut = (0..=200).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
                shown.truncate(cut);
                shown.push_str("...");
            }
            ControlError::Malformed(shown)
        })
    }
}

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
                    error: None,
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
    /// Where it is mounted in the guest: the host path it exports (unless `export` says otherwise).
    pub path: String,
    pub readonly: bool,
    /// The host directory QEMU exports when it is not `path`, and its subdirectory the guest mounts at `path`:
    /// a `cow` workspace's staging directory, its overlay mounted on the subdirectory (see `super::WorkspaceOverlay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ShareExport>,
}

/// What a share exports when it is not its guest path (see [`Share::export`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShareExport {
    /// The host directory QEMU serves.
    pub dir: String,
    /// Its subdirectory the guest binds at the share's path.
    pub subdir: String,
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
    /// A held guest: a message of one session's command (a warning, an audit record, its outcome).
    Of {
        session: u32,
        message: Box<GuestMessage>,
    },
    /// A held guest: `bytes` more of `session`'s input reached its command (the host may send that much more).
    InputTaken {
        session: u32,
        bytes: u32,
    },
}

impl GuestMessage {
    /// Whether this ends a command: its outcome.
    pub fn is_outcome(&self) -> bool {
        matches!(
            self,
            GuestMessage::Exited(_)
                | GuestMessage::TimedOut { .. }
                | GuestMessage::ExecFailed { .. }
                | GuestMessage::OutOfMemory { .. }
                | GuestMessage::Failed(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_whole_and_in_order_however_the_bytes_arrive() {
        let mut reader = ControlReader::default();
        let record = AuditRecord::Exec {
            pid: 3,
            host_pid: 80,
            ppid: 2,
            path: b"/bin/true".to_vec(),
            argv: vec![b"/bin/true".to_vec(), vec![0xff, b'x']],
            argv_omitted: 0,
            cwd: b"/".to_vec(),
            dirfd: None,
            markers: vec!["truncated".to_string()],
        };
        let mut bytes = serde_json::to_vec(&GuestMessage::Audit(record.clone())).unwrap();
        bytes.push(b'\n');
        bytes.extend_from_slice(b"\"started\"\n");
        let (first, rest) = bytes.split_at(7);
        reader.push(first);
        assert_eq!(reader.next_message(), Ok(None));
        reader.push(rest);
        assert_eq!(reader.next_message(), Ok(Some(GuestMessage::Audit(record.clone()))));
        assert_eq!(reader.next_message(), Ok(Some(GuestMessage::Started)));
        assert_eq!(reader.next_message(), Ok(None));
        let audit::Event::Exec(exec) = record.into_event().unwrap() else { panic!("not an exec") };
        assert_eq!(exec.markers, vec![audit::event::MARK_TRUNCATED]);
        assert_eq!(exec.argv[1], vec![0xff, b'x']);
    }

    #[test]
    fn a_hostile_guest_gets_an_error_not_a_panic_nor_unbounded_memory() {
        // An endless line without its end: refused once past the bound, not held.
        let mut reader = ControlReader::default();
        let chunk = vec![b'a'; 64 * 1024];
        let mut refused = None;
        for _ in 0..(MAX_MESSAGE_BYTES / chunk.len() + 2) {
            reader.push(&chunk);
            if let Err(e) = reader.next_message() {
                refused = Some(e);
                break;
            }
        }
        assert_eq!(refused, Some(ControlError::TooLong { limit: MAX_MESSAGE_BYTES }));
        // A long line that did end is refused too.
        let mut reader = ControlReader::default();
        let mut long = vec![b' '; MAX_MESSAGE_BYTES + 1];
        long.push(b'\n');
        reader.push(&long);
        assert_eq!(reader.next_message(), Err(ControlError::TooLong { limit: MAX_MESSAGE_BYTES }));
        // Garbage, and a lifecycle record (not a kind the guest can send), are malformed; the shown text is cut.
        for line in [&b"\xff\xfe{not json\n"[..], br#"{"audit":{"exited":{"status":0}}}"#, &[b'x'; 5000]] {
            let mut reader = ControlReader::default();
            reader.push(line);
            reader.push(b"\n");
            match reader.next_message() {
                Err(ControlError::Malformed(shown)) => assert!(shown.len() <= 203, "{shown}"),
                other => panic!("{other:?}"),
            }
        }
        // A marker the log does not know: refused by the conversion, named.
        let odd = AuditRecord::Exec {
            pid: 1,
            host_pid: 1,
            ppid: 0,
            path: vec![],
            argv: vec![],
            argv_omitted: 0,
            cwd: vec![],
            dirfd: None,
            markers: vec!["forged".to_string()],
        };
        assert_eq!(odd.into_event().err(), Some(AuditRecordError::UnknownMarker("forged".to_string())));
    }
}
