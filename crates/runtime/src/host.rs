//! Facts about the calling process and its terminal, for the binary (which has no `unsafe`).

/// The real uid and gid of the caller.
pub fn current_ids() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail and take no arguments.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// Whether airlock runs as host root (effective uid 0).
pub fn is_host_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The login name of `uid`, from `/etc/passwd` (read directly: airlock is linked statically, and NSS modules
/// cannot be loaded into a static binary). `None` for users only a network directory knows.
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// The caller's terminal size (stdin, else stdout), or 80x24 when neither is a terminal.
pub fn caller_window_size() -> libc::winsize {
    for fd in [0, 1] {
        // SAFETY: an all-zero winsize is valid; TIOCGWINSZ writes into the live local.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return ws;
        }
    }
    libc::winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 }
}

/// Restores the default action for SIGPIPE (Rust's runtime ignores it): `airlock ... | head` then ends airlock
/// quietly, like any other command-line tool, instead of failing on every write.
pub fn restore_default_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL is always valid and has no memory effects.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// `flock(LOCK_EX | LOCK_NB)` on `file`: whether this process now holds the lock.
pub fn try_lock_exclusive(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd the File owns, integer arguments only.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
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

/// Points standard output and standard error at `file` (the supervisor of a long-lived sandbox, once
/// `airlock create` has returned, writes to its log).
pub fn redirect_stdout_stderr_to(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    for target in [1, 2] {
        // SAFETY: dup2 on an fd the File owns and a standard stream number; integers only.
        if unsafe { libc::dup2(file.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
