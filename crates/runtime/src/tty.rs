//! `-t`: a pseudo-terminal from the sandbox's own devpts instance. Init opens it, keeps the slave for the
//! command, and passes the master to the supervisor over a Unix socket (SCM_RIGHTS); the supervisor relays it to
//! the caller's terminal. `airlock exec -t` does the same from the `airlock exec` process once it has entered the
//! sandbox's namespaces (`attach`). The command's terminal is thus never the caller's: no TIOCSTI into the
//! caller's shell.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use crate::failure::{ChildFailure, Step};

/// Opens a new pseudo-terminal in the sandbox, sets its size, sends the master to the supervisor and returns
/// the slave. Runs in init after `pivot_root`, or in `airlock exec` after `setns` into the sandbox. Our copy of
/// the master closes on return, sent or not.
pub fn open_sandbox_terminal(winsize: &libc::winsize, socket: RawFd) -> Result<OwnedFd, ChildFailure> {
    let fail = |step| move |errno| ChildFailure { step, errno, index: 0 };
    let master = sys::fd::open(c"/dev/pts/ptmx", libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        .map_err(fail(Step::OpenPseudoTerminal))?;
    sys::terminal::unlock_pseudo_terminal(master.as_fd()).map_err(fail(Step::OpenPseudoTerminal))?;
    sys::terminal::set_window_size(master.as_fd(), winsize).map_err(fail(Step::OpenPseudoTerminal))?;
    // TIOCGPTPEER opens the slave through the master, without a path lookup that could be raced.
    let slave = sys::terminal::open_peer(master.as_fd(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
        .map_err(fail(Step::OpenPseudoTerminal))?;
    // On failure the slave closes with the master.
    sys::socket::send_fd(socket, master.as_raw_fd()).map_err(fail(Step::SendPseudoTerminal))?;
    Ok(slave)
}
