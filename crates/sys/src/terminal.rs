//! Terminals.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::{check, Errno};

/// `ioctl(fd, TIOCGWINSZ)`: the size of the terminal `fd` refers to.
pub fn window_size(fd: BorrowedFd<'_>) -> Result<libc::winsize, Errno> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize into the live local passed; `fd` is borrowed, so open.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } as libc::c_long)?;
    Ok(ws)
}
