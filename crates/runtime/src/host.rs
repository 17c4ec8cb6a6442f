//! Facts about the calling process and its terminal, for the binary (which has no `unsafe`).

use std::os::fd::AsFd;

use sys::fd::StandardStream;

/// A small file's content (a `/proc` or cgroup file), read to its end without asking its size first: such files
/// report size 0 anyway, and the `statx` that `fs::read_to_string` makes for the hint, then its reads of 32 bytes
/// and up, are system calls for nothing (a start reads a few of these; the stats after a limited run nine).
pub fn read_small(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The real uid and gid of the caller.
pub fn current_ids() -> (u32, u32) {
    sys::process::real_ids()
}

/// Whether airlock runs as host root (effective uid 0).
pub fn is_host_root() -> bool {
    sys::process::effective_uid() == 0
}

/// A user's `/etc/passwd` entry, the fields airlock uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    /// The login group (`None`: not a number).
    pub gid: Option<u32>,
    /// The home directory (`None`: the line stops before it).
    pub home: Option<String>,
}

/// `uid`'s entry in `/etc/passwd` (read directly: airlock is linked statically, and NSS modules cannot be loaded
/// into a static binary). `None` for users only a network directory knows.
pub fn passwd_entry(uid: u32) -> Option<PasswdEntry> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let (name, id) = (fields.first()?, fields.get(2)?);
        (id.parse::<u32>().ok()? == uid && !name.is_empty()).then(|| PasswdEntry {
            name: name.to_string(),
            gid: fields.get(3).and_then(|g| g.parse().ok()),
            home: fields.get(5).map(|h| h.to_string()),
        })
    })
}

/// The login name of `uid` (see [`passwd_entry`]).
pub fn user_name(uid: u32) -> Option<String> {
    passwd_entry(uid).map(|entry| entry.name)
}

/// The caller's terminal size (stdin, else stdout), or 80x24 when neither is a terminal.
pub fn caller_window_size() -> libc::winsize {
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    for fd in [stdin.as_fd(), stdout.as_fd()] {
        if let Ok(ws) = sys::terminal::window_size(fd) {
            if ws.ws_row > 0 {
                return ws;
            }
        }
    }
    libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 }
}

/// Restores the default action for SIGPIPE (Rust's runtime ignores it): `airlock ... | head` then ends airlock
/// quietly, like any other command-line tool, instead of failing on every write.
pub fn restore_default_sigpipe() {
    sys::signal::set_default_action(libc::SIGPIPE);
}

/// Runs `f` with SIGPIPE ignored, then puts the previous action back: a write in `f` to a pipe whose reader is
/// gone fails with EPIPE instead of killing this process (airlock restores SIGPIPE's default action at start).
pub fn with_sigpipe_ignored<T>(f: impl FnOnce() -> T) -> T {
    let previous = sys::signal::ignore(libc::SIGPIPE);
    let out = f();
    if let Some(previous) = previous {
        sys::signal::restore(libc::SIGPIPE, previous);
    }
    out
}

/// Opens the lock file `path` (created 0600 if missing, never through a symlink) and takes its lock without
/// waiting: the file while this process holds the lock, `None` when another process holds it.
pub fn try_lock_file(path: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    match sys::fd::flock(file.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(Some(file)),
        Err(libc::EWOULDBLOCK) => Ok(None),
        Err(errno) => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`): with the pid, it names one
/// process, whatever reuses the pid later.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start_time` still runs: it exists, is that process (not one that
/// reused the pid), and is not a zombie. (An exited daemonized process stays a zombie until the host's pid 1
/// reaps it, which some init systems do late: its work is over all the same.)
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let start = fields.nth(18).and_then(|f| f.parse::<u64>().ok());
    start == Some(start_time) && !matches!(state, Some("Z" | "X"))
}

/// Points standard output and standard error at `file` (the supervisor of a long-lived sandbox, once
/// `airlock create` has returned, writes to its log).
pub fn redirect_stdout_stderr_to(file: &std::fs::File) -> std::io::Result<()> {
    for stream in [StandardStream::Output, StandardStream::Error] {
        sys::fd::dup_onto_standard_stream(file.as_fd(), stream).map_err(std::io::Error::from_raw_os_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_not_alive_and_a_running_process_is() {
        let mut child = std::process::Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let start = process_start_time(pid).unwrap();
        assert!(process_alive(pid, start));
        assert!(!process_alive(pid, start + 1), "another start time is another process");
        // Killed but not reaped: a zombie, whose /proc entry (and start time) is still there.
        std::process::Command::new("/bin/kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while process_alive(pid, start) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(process_start_time(pid), Some(start), "still a zombie, not reaped");
        assert!(!process_alive(pid, start));
        child.wait().unwrap();
        assert!(!process_alive(pid, start));
    }
}
