//! Seccomp user notification (`seccomp_unotify(2)`), on the supervisor's side: the audit log's view of every
//! exec, every call the deny-list refuses and, in learn mode, every write to a path.
//!
//! The command's process installs a filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER` (`exec::exec_command`), sends
//! the listener over a Unix socket and closes its copy, all before its `execve`. The supervisor's poll loop
//! (`supervisor::supervise_audited`) receives it, and from then on answers each notification here:
//!
//! - exec (unless the run's exec records come from the kernel's tracepoints, `exec_tracepoints`, whose records
//!   are drained into the same sink in the same loop): read pid, parent, path, argv (bounded) and cwd from
//!   `/proc` and the target's memory (`process_vm_readv`), answer `SECCOMP_USER_NOTIF_FLAG_CONTINUE`; that
//!   answer fails when the notification is no longer valid (the process may have died, and its pid been reused,
//!   while we read), which marks the record `process_gone` as `SECCOMP_IOCTL_NOTIF_ID_VALID` before it would, one
//!   system call fewer.
//!   The record is for audit, not a security decision: the target's memory can change between our read and the
//!   kernel's (TOCTOU, as `seccomp_unotify(2)` warns), so a hostile process can make the record say something other
//!   than what ran. Nothing is allowed or refused on what was read.
//! - denial: answer with the rule's errno (`error = -errno`), exactly what the kernel filter returns when not
//!   auditing, and record call, pid and errno.
//! - learn-mode write: read the path, continue (the kernel decides as always), record it.
//!
//! The answer goes out before the record is handed to the sink, so a slow disk delays the log, not the process
//! (except that the next notification waits for the sink). A process that dies before we read it gets a record
//! with the `process_gone` marker; no read blocks, so nothing hangs.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};

use audit::event::{
    MARK_NOT_FOUND, MARK_PROCESS_GONE, MARK_TRUNCATED, MARK_UNREADABLE, MAX_LIST_ITEMS, MAX_STRING_BYTES,
};
use audit::{Event, ExecRecord, SyscallDenial};

use crate::seccomp::{NotifiedCall, SeccompProgram};
use sys::Errno;

/// Where the runtime hands audit events: the binary writes them to the log.
pub trait AuditSink {
    fn record(&mut self, event: Event);
    /// A sink that buffers records: how long until it wants [`AuditSink::flush`] called (`None`: nothing
    /// pending). The supervisor's loop wakes up for it, so records are written within that delay even while the
    /// sandbox is quiet, and never on the path of a waiting exec.
    fn flush_due(&self) -> Option<std::time::Duration> {
        None
    }
    fn flush(&mut self) {}
}

/// Bytes of argv read per exec, all arguments together; the rest is counted as omitted.
const MAX_ARGV_BYTES: usize = 32 * 1024;
/// Argument pointers read per exec (beyond [`MAX_LIST_ITEMS`] they are only counted).
const MAX_ARGV_POINTERS: usize = 1024;

/// The supervisor's side of an audited sandbox's notifications.
pub struct SeccompAudit<'a> {
    /// The program the command installed: classifies each notification.
    pub program: &'a SeccompProgram,
    /// The host's `/proc` (opened before `setns` when this is `airlock exec`): notification pids are host pids.
    pub proc_dir: RawFd,
    pub sink: &'a mut dyn AuditSink,
    /// The socket the listener arrives on (closed once it has).
    socket: Option<OwnedFd>,
    listener: Option<RawFd>,
    /// The plan's command: see [`SeccompAudit::own_exec`].
    command: Option<&'a crate::plan::CommandPlan>,
    /// Host pid -> pid inside, for processes seen before (a parent is usually one): saves reading `/proc` for
    /// each exec's parent. Bounded; an entry is replaced whenever its pid is looked up afresh.
    pids: PidCache,
    /// The exec records' source when it is the kernel's tracepoints (then the filter notifies no exec).
    kernel_execs: Option<crate::exec_tracepoints::KernelExecSource>,
}

impl<'a> SeccompAudit<'a> {
    /// `socket` is ours: it is closed when the listener arrives, or on drop.
    pub fn new(program: &'a SeccompProgram, proc_dir: RawFd, socket: OwnedFd, sink: &'a mut dyn AuditSink) -> Self {
        SeccompAudit {
            program,
            proc_dir,
            sink,
            socket: Some(socket),
            listener: None,
            command: None,
            pids: PidCache::default(),
            kernel_execs: None,
        }
    }

    /// Exec records come from the kernel's tracepoints: drained in the same loop (see `exec_tracepoints`).
    pub fn with_kernel_execs(mut self, source: Option<crate::exec_tracepoints::KernelExecSource>) -> Self {
        self.kernel_execs = source;
        self
    }

    /// The command the plan starts (its first execve is made by airlock's own code in the command's process).
    pub fn with_command(mut self, command: &'a crate::plan::CommandPlan) -> Self {
        self.command = Some(command);
        self
    }

    /// The command's first execve, made by airlock's code in a process that is still a copy of this one's memory
    /// (cloned without exec from the supervisor, or from `airlock exec`): its path and argv pointers are the
    /// plan's, at the same addresses. Then the plan says what they hold, exactly (no sandbox code has run in that
    /// process yet), which also covers the one case the memory cannot be read: rootless, that process is not
    /// dumpable and its memory belongs to the host's user namespace, where we hold no capability.
    fn own_exec(&self, path: u64, argv: u64) -> Option<ExecRecord> {
        let command = self.command?;
        if argv != command.argv_ptr() as u64 {
            return None;
        }
        let candidate = command.candidates.iter().find(|c| c.as_ptr() as u64 == path)?;
        Some(ExecRecord {
            path: candidate.to_bytes().to_vec(),
            argv: command.argv.iter().map(|a| a.to_bytes().to_vec()).collect(),
            cwd: command.cwd.to_bytes().to_vec(),
            ..Default::default()
        })
    }

    /// The descriptors to poll: the socket until the listener came, then the listener; the kernel's exec ring,
    /// only to wake the loop (the program wakes it when the ring is half full): `flush_if_due`, called after
    /// every wake-up, drains it.
    pub fn poll_fds(&self) -> [libc::pollfd; 3] {
        [
            libc::pollfd { fd: self.socket.as_ref().map_or(-1, AsRawFd::as_raw_fd), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.listener.unwrap_or(-1), events: libc::POLLIN, revents: 0 },
            self.kernel_execs.as_ref().map_or(libc::pollfd { fd: -1, events: 0, revents: 0 }, |k| k.poll_fd()),
        ]
    }

    /// Handles what `poll` reported on [`SeccompAudit::poll_fds`].
    pub fn handle(&mut self, pfds: &[libc::pollfd]) {
        let ready = |i: usize| pfds.get(i).map_or(0, |p| p.revents);
        if ready(0) & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            if let Some(socket) = self.socket.take() {
                // A hang-up without a descriptor: the command failed before installing its filter (its failure
                // record says why) — there is nothing to audit.
                if let Ok(Some(listener)) = sys::socket::recv_fd(socket.as_raw_fd()) {
                    // By number from here: closed by `handle` on the hang-up, or on drop.
                    let listener = listener.into_raw_fd();
                    set_sync_wakeup(listener);
                    self.listener = Some(listener);
                }
                drop(socket);
            }
        }
        let listener_ready = ready(1);
        if listener_ready & libc::POLLIN != 0 {
            if let Some(listener) = self.listener {
                self.answer_one(listener);
            }
        } else if listener_ready & (libc::POLLHUP | libc::POLLERR) != 0 {
            // Every process with the filter is gone.
            if let Some(listener) = self.listener.take() {
                sys::fd::close(listener);
            }
        }
    }

    /// Receives one notification, answers it, records it.
    fn answer_one(&mut self, listener: RawFd) {
        let Ok(req) = sys::seccomp::receive_notification(listener) else {
            // ENOENT: the process was killed between poll and receive. Nothing to answer.
            return;
        };
        let host_pid = req.pid as i32;
        let event = match self.program.classify(req.data.nr, &req.data.args) {
            NotifiedCall::Denied { name, rule, errno, errno_name } => {
                // The pid inside before the answer: once answered, the process may exit at once (a failed
                // `unshare` command does), and a dead process's pidfd says -1. (With exec records from the
                // seccomp source its exec had put it in the cache; from the kernel's tracepoints, nothing did.)
                let pid = self.pids.inside(self.proc_dir, host_pid).unwrap_or(0);
                respond(listener, req.id, -errno, 0);
                Event::Denied(SyscallDenial {
                    pid,
                    host_pid,
                    syscall: name.to_string(),
                    nr: i64::from(req.data.nr),
                    errno,
                    errno_name: errno_name.to_string(),
                    rule,
                })
            }
            NotifiedCall::Exec { path, argv, dirfd } => {
                // Before the answer: the path and argv (the exec replaces them), the pids and the working
                // directory (a short program may be gone, even reaped, right after), then the answer, which also
                // says whether the notification was still valid — the process may have died, and its pid been
                // reused, while we read. The record is written after the answer (buffered by the sink).
                let mut record = match self.own_exec(path, argv).filter(|_| dirfd.is_none()) {
                    Some(own) => ExecRecord { host_pid, ..own },
                    None => read_exec_memory(host_pid, path, argv),
                };
                record.dirfd = dirfd;
                read_exec_context(self.proc_dir, &mut self.pids, &mut record);
                // Whether the file exists: a PATH search tries directories in turn, and those execs fail with
                // ENOENT and run nothing.
                if !record.path.is_empty() && !exists_inside(self.proc_dir, host_pid, &record.path, dirfd) {
                    record.markers.push(MARK_NOT_FOUND);
                }
                // The answer itself says whether the notification was still valid: SEND fails (ENOENT) when
                // the process died, and its pid may have been reused, while we read — the check
                // `SECCOMP_IOCTL_NOTIF_ID_VALID` would make, one system call fewer on the exec's path. Nothing
                // was read after it, so every read above was of the notifying process when SEND succeeds.
                if !respond(listener, req.id, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32) {
                    record.markers.push(MARK_PROCESS_GONE);
                }
                Event::Exec(record)
            }
            NotifiedCall::Write { name, path, dirfd } => {
                let raw = read_string(host_pid, path);
                let pid = self.pids.inside(self.proc_dir, host_pid).unwrap_or(0);
                let resolved = raw.as_ref().ok().map(|(bytes, _)| absolute(self.proc_dir, host_pid, bytes, dirfd));
                respond(listener, req.id, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32);
                Event::FileWrite { pid, syscall: name.to_string(), path: resolved.unwrap_or_default(), writable: false }
            }
            NotifiedCall::Other => {
                respond(listener, req.id, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32);
                return;
            }
        };
        self.sink.record(event);
    }
}

impl SeccompAudit<'_> {
    /// Milliseconds until the sink wants a flush or the kernel's exec ring a drain, for `poll` (`None`: no
    /// wish).
    pub fn flush_wait_ms(&self) -> Option<i32> {
        let flush = self.sink.flush_due();
        let drain = self.kernel_execs.as_ref().map(|_| crate::exec_tracepoints::DRAIN_EVERY);
        let due = match (flush, drain) {
            (Some(f), Some(d)) => Some(f.min(d)),
            (f, d) => f.or(d),
        };
        due.map(|d| d.as_millis().min(i32::MAX as u128) as i32)
    }

    /// Drains the kernel's exec ring (an empty one costs two reads of shared memory), then flushes the sink if
    /// it is due. Called after every wake-up of the supervisor's loop.
    pub fn flush_if_due(&mut self) {
        self.drain_kernel_execs();
        if self.sink.flush_due().is_some_and(|d| d.is_zero()) {
            self.sink.flush();
        }
    }

    fn drain_kernel_execs(&mut self) {
        if let Some(k) = &mut self.kernel_execs {
            k.drain_into(&mut *self.sink);
        }
    }
}

impl Drop for SeccompAudit<'_> {
    fn drop(&mut self) {
        // The sandbox is gone (or going): what its last execs left in the ring is recorded before the flush, and
        // so before the run's `exited` record.
        self.drain_kernel_execs();
        self.sink.flush();
        drop(self.socket.take());
        if let Some(listener) = self.listener.take() {
            sys::fd::close(listener);
        }
    }
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (6.6+): our answer wakes the waiting process on this CPU, which is about
/// to wait in `poll` anyway, instead of another (in a VM, waking an idle virtual CPU costs more than the switch).
/// Older kernels refuse the flag; it is only speed.
fn set_sync_wakeup(listener: RawFd) {
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
    let _ = sys::seccomp::set_listener_flags(listener, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
}

/// Answers notification `id`: `error` (negative errno) or `flags` (CONTINUE). Whether the answer reached the
/// process: a failure (ENOENT) means the notification was no longer valid, its process gone (killed while in the
/// call).
fn respond(listener: RawFd, id: u64, error: i32, flags: u32) -> bool {
    sys::seccomp::send_response(listener, id, error, flags).is_ok()
}

/// What an exec notification says, read from `/proc` and the process's memory, bounded.
/// The path and argv of an exec notification, from the process's memory, bounded.
fn read_exec_memory(host_pid: i32, path: u64, argv: u64) -> ExecRecord {
    let mut record = ExecRecord { host_pid, ..Default::default() };
    match read_string(host_pid, path) {
        Ok((bytes, cut)) => {
            record.path = bytes;
            if cut {
                record.markers.push(MARK_TRUNCATED);
            }
        }
        Err(e) => record.markers.push(gone_or_unreadable(e)),
    }
    // A shell or `execvp` passes argv[0] at the path's own address: that string is read once.
    let known =
        (!record.path.is_empty() && !record.markers.contains(&MARK_TRUNCATED)).then_some((path, &record.path[..]));
    match read_argv(host_pid, argv, known) {
        Ok((args, omitted, cut)) => {
            record.argv = args;
            record.argv_omitted = omitted;
            if cut {
                record.markers.push(MARK_TRUNCATED);
            }
        }
        Err(e) => record.markers.push(gone_or_unreadable(e)),
    }
    record
}

/// The pids inside and the working directory (unless known), from `/proc`.
fn read_exec_context(proc_dir: RawFd, pids: &mut PidCache, record: &mut ExecRecord) {
    let host_pid = record.host_pid;
    match process_ids(proc_dir, host_pid) {
        Some(status) => {
            record.pid = status.inside_pid;
            pids.insert(host_pid, status.inside_pid);
            record.ppid = status.parent_host_pid.and_then(|p| pids.inside(proc_dir, p)).unwrap_or(0);
        }
        None => record.markers.push(MARK_PROCESS_GONE),
    }
    if record.cwd.is_empty() {
        record.cwd = read_link(proc_dir, &format!("{host_pid}/cwd")).unwrap_or_default();
    }
}

fn gone_or_unreadable(errno: Errno) -> &'static str {
    if errno == libc::ESRCH {
        MARK_PROCESS_GONE
    } else {
        MARK_UNREADABLE
    }
}

/// `path` made absolute: relative to the directory `dirfd` names, or to the process's cwd.
fn absolute(proc_dir: RawFd, host_pid: i32, path: &[u8], dirfd: Option<i32>) -> Vec<u8> {
    if path.first() == Some(&b'/') {
        return path.to_vec();
    }
    let base = match dirfd {
        Some(fd) => read_link(proc_dir, &format!("{host_pid}/fd/{fd}")),
        None => read_link(proc_dir, &format!("{host_pid}/cwd")),
    };
    match base {
        Some(mut base) => {
            if base.last() != Some(&b'/') {
                base.push(b'/');
            }
            base.extend_from_slice(path);
            base
        }
        None => path.to_vec(),
    }
}

/// Whether `path` names something in the process's view (its root, cwd or `dirfd`), through `/proc/PID/root`
/// and friends. Only ENOENT/ENOTDIR count as missing: anything else (a permission error) is reported as there.
fn exists_inside(proc_dir: RawFd, host_pid: i32, path: &[u8], dirfd: Option<i32>) -> bool {
    let mut relative = match (path.first(), dirfd) {
        (Some(b'/'), _) => format!("{host_pid}/root").into_bytes(),
        (_, Some(fd)) => format!("{host_pid}/fd/{fd}/").into_bytes(),
        (_, None) => format!("{host_pid}/cwd/").into_bytes(),
    };
    relative.extend_from_slice(path);
    let Ok(relative) = CString::new(relative) else { return true };
    if !matches!(sys::fd::faccessat(proc_dir, &relative, libc::F_OK, 0), Err(libc::ENOENT | libc::ENOTDIR)) {
        return true;
    }
    // ENOENT also when the process itself is gone (its /proc entry with it): that says nothing of the file.
    let Ok(own) = CString::new(host_pid.to_string()) else { return true };
    sys::fd::faccessat(proc_dir, &own, libc::F_OK, 0).is_err()
}

struct Status {
    inside_pid: i32,
    parent_host_pid: Option<i32>,
}

/// `NSpid` (its last entry: the pid in the process's innermost pid namespace, which is the sandbox's unless the
/// process is in one nested inside it: the default seccomp policy refuses to make one) and `PPid` (a host pid)
/// from `/proc/PID/status`.
fn read_status(proc_dir: RawFd, host_pid: i32) -> Option<Status> {
    let text = read_proc_file(proc_dir, &format!("{host_pid}/status"))?;
    let text = String::from_utf8_lossy(&text);
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let inside_pid = field("NSpid:")?.split_whitespace().last()?.parse().ok()?;
    let parent_host_pid = field("PPid:").and_then(|p| p.parse().ok()).filter(|&p: &i32| p > 0);
    Some(Status { inside_pid, parent_host_pid })
}

/// Host pid -> pid inside the sandbox, remembered (at most [`PidCache::CAPACITY`] entries; emptied when full).
#[derive(Default)]
struct PidCache(std::collections::HashMap<i32, i32>);

impl PidCache {
    const CAPACITY: usize = 4096;

    fn inside(&mut self, proc_dir: RawFd, host_pid: i32) -> Option<i32> {
        if let Some(&pid) = self.0.get(&host_pid) {
            return Some(pid);
        }
        let pid = process_ids(proc_dir, host_pid)?.inside_pid;
        self.insert(host_pid, pid);
        Some(pid)
    }

    fn insert(&mut self, host_pid: i32, inside: i32) {
        if self.0.len() >= Self::CAPACITY {
            self.0.clear();
        }
        self.0.insert(host_pid, inside);
    }
}

/// The pid inside and the parent's host pid, the cheap way: a pidfd, its `fdinfo` (`NSpid`) and `PIDFD_GET_INFO`
/// (the parent) — a few microseconds, where formatting `/proc/PID/status` takes tens. Falls back to `status` on
/// kernels without `PIDFD_GET_INFO`.
fn process_ids(proc_dir: RawFd, host_pid: i32) -> Option<Status> {
    let Ok(pidfd) = sys::process::pidfd_open(host_pid) else {
        return read_status(proc_dir, host_pid);
    };
    let info = sys::process::pidfd_info(pidfd.as_fd(), sys::process::PIDFD_INFO_PID);
    let fdinfo = read_fdinfo(proc_dir, pidfd.as_raw_fd());
    drop(pidfd);
    let inside_pid = fdinfo.as_deref().and_then(|text| {
        let text = String::from_utf8_lossy(text);
        text.lines().find_map(|l| l.strip_prefix("NSpid:")).and_then(|v| v.split_whitespace().last()?.parse().ok())
    });
    // -1: the process has exited (its pidfd outlives it).
    let inside_pid = inside_pid.filter(|&p: &i32| p > 0);
    match (info, inside_pid) {
        (Ok(info), Some(inside_pid)) => {
            Some(Status { inside_pid, parent_host_pid: i32::try_from(info.ppid).ok().filter(|&p| p > 0) })
        }
        _ => read_status(proc_dir, host_pid),
    }
}

fn read_proc_file(proc_dir: RawFd, relative: &str) -> Option<Vec<u8>> {
    let path = CString::new(relative).ok()?;
    let fd = sys::fd::openat(proc_dir, &path, libc::O_RDONLY | libc::O_CLOEXEC, 0).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < 64 * 1024 {
        match sys::fd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    Some(out)
}

/// `/proc/self/fdinfo/FD` of a pidfd, in one `read`: its few lines (well under a page) come whole from the first
/// read of a seq file, so the read that would only say end-of-file is saved. A file that filled the buffer is
/// read on to its end.
fn read_fdinfo(proc_dir: RawFd, fd: RawFd) -> Option<Vec<u8>> {
    let path = CString::new(format!("self/fdinfo/{fd}")).ok()?;
    let file = sys::fd::openat(proc_dir, &path, libc::O_RDONLY | libc::O_CLOEXEC, 0).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = sys::fd::read(file.as_raw_fd(), &mut buf).ok()?;
    if n == buf.len() {
        return read_proc_file(proc_dir, &format!("self/fdinfo/{fd}"));
    }
    buf.truncate(n);
    Some(buf)
}

fn read_link(proc_dir: RawFd, relative: &str) -> Option<Vec<u8>> {
    let path = CString::new(relative).ok()?;
    let mut buf = vec![0u8; MAX_STRING_BYTES + 1];
    let n = sys::fd::readlinkat(proc_dir, &path, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Reads up to `buf.len()` bytes at `addr` in process `pid`, stopping at the first page it cannot read. Returns
/// how many were read.
fn read_remote(pid: i32, addr: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    if buf.is_empty() {
        return Ok(0);
    }
    sys::seccomp::read_process_memory(pid, addr, buf)
}

/// A NUL-terminated string at `addr`, at most [`MAX_STRING_BYTES`] + 1 bytes (so that the record marks the cut);
/// read up to each page's end at a time, so a string near unmapped memory still reads. Also says if it was cut.
fn read_string(pid: i32, addr: u64) -> Result<(Vec<u8>, bool), Errno> {
    const PAGE: u64 = 4096;
    let limit = MAX_STRING_BYTES + 1;
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < limit {
        let to_page_end = (PAGE - at % PAGE) as usize;
        let mut chunk = vec![0u8; to_page_end.min(limit - out.len())];
        let n = read_remote(pid, at, &mut chunk)?;
        if n == 0 {
            return Err(libc::EFAULT);
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Ok((out, false));
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    Ok((out, true))
}

/// argv at `addr`: the strings (at most [`MAX_LIST_ITEMS`], [`MAX_ARGV_BYTES`] together), how many more there
/// were (counted up to [`MAX_ARGV_POINTERS`]), and whether any string was cut.
/// `known`: a string already read (its address and bytes), not read again where a pointer names it.
fn read_argv(pid: i32, addr: u64, known: Option<(u64, &[u8])>) -> Result<(Vec<Vec<u8>>, usize, bool), Errno> {
    if addr == 0 {
        return Ok((Vec::new(), 0, false));
    }
    let mut pointers = Vec::new();
    let mut raw = vec![0u8; 8 * 64];
    let mut at = addr;
    'read: while pointers.len() < MAX_ARGV_POINTERS {
        let n = read_remote(pid, at, &mut raw)?;
        if n < 8 {
            return Err(libc::EFAULT);
        }
        for word in raw[..n - n % 8].chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let pointer = u64::from_ne_bytes(bytes);
            if pointer == 0 {
                break 'read;
            }
            pointers.push(pointer);
            if pointers.len() == MAX_ARGV_POINTERS {
                break 'read;
            }
        }
        at += (n - n % 8) as u64;
    }
    let mut args = Vec::new();
    let mut bytes = 0;
    let mut cut = false;
    for &pointer in &pointers {
        if args.len() == MAX_LIST_ITEMS || bytes >= MAX_ARGV_BYTES {
            break;
        }
        let (arg, arg_cut) = match known {
            Some((at, bytes)) if at == pointer => (bytes.to_vec(), false),
            _ => read_string(pid, pointer)?,
        };
        bytes += arg.len();
        cut |= arg_cut;
        args.push(arg);
    }
    let omitted = pointers.len() - args.len();
    Ok((args, omitted, cut))
}
