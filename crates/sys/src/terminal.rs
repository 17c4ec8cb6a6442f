//! Terminals.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{check, check_fd, Errno};

/// `ioctl(fd, TIOCGWINSZ)`: the size of the terminal `fd` refers to.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<libc::winsize, Errno> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize into the live local passed; `fd` is borrowed, so open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } as libc::c_long)?;
    Ok(ws)
}

/// `ioctl(fd, TIOCSWINSZ)`: sets the size of the terminal `fd` refers to.
pub fn set_window_size(fd: BorrowedFd<'_>, size: &libc::winsize) -> Result<(), Errno> {
    // SAFETY: TIOCSWINSZ reads one winsize from a live reference; `fd` is borrowed, so open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size as *const libc::winsize) } as libc::c_long)
        .map(drop)
}

/// `ioctl(master, TIOCSPTLCK, 0)`: unlocks a pseudo-terminal master's slave, so it can be opened.
pub fn unlock_pseudo_terminal(master: BorrowedFd<'_>) -> Result<(), Errno> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a live local; `master` is borrowed, so open.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } as libc::c_long).map(drop)
}

/// `ioctl(master, TIOCGPTPEER, flags)`: opens a pseudo-terminal master's slave through the master (no path
/// lookup that could be raced).
pub fn open_peer(master: BorrowedFd<'_>, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    // SAFETY: TIOCGPTPEER takes integer flags; `master` is borrowed, so open.
    let fd = check_fd(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) } as libc::c_long)?;
    // SAFETY: TIOCGPTPEER succeeded, so `fd` is an open descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `ioctl(fd, TIOCSCTTY, 0)`: the terminal becomes the controlling terminal of the caller's session (which the
/// caller leads and which has none yet).
pub fn set_controlling_terminal(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: TIOCSCTTY takes an integer argument; `fd` is borrowed, so open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) } as libc::c_long).map(drop)
}

/// `isatty(fd)`: whether `fd` refers to a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: isatty takes an integer; `fd` is borrowed, so open.
    unsafe { libc::isatty(fd.as_raw_fd()) == 1 }
}

/// `tcgetattr(fd)`: the terminal's attributes.
pub fn attributes(fd: BorrowedFd<'_>) -> Result<libc::termios, Errno> {
    // SAFETY: termios is plain data; an all-zero one is a valid value for tcgetattr to overwrite.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes one termios into a live local; `fd` is borrowed, so open.
    check(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } as libc::c_long)?;
    Ok(t)
}

/// `tcsetattr(fd, TCSANOW, attributes)`: sets the terminal's attributes now.
pub fn set_attributes(fd: BorrowedFd<'_>, attributes: &libc::termios) -> Result<(), Errno> {
    // SAFETY: tcsetattr reads one termios from a live reference; `fd` is borrowed, so open.
    check(unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, attributes) } as libc::c_long).map(drop)
}

/// `cfmakeraw`: `attributes` changed to raw mode (no echo, no line editing, no signal characters, 8-bit).
pub fn raw(attributes: &libc::termios) -> libc::termios {
    let mut t = *attributes;
    // SAFETY: cfmakeraw edits the live local it is given (flags only; no system call).
    unsafe { libc::cfmakeraw(&mut t) };
    t
}
