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

/// The login name of `uid`, from the passwd database.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: an all-zero passwd is a valid output buffer.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the size given; getpwuid_r fills them.
    let ret = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if ret != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
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
