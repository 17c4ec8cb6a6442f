//! Signals.

use crate::{check, Errno};

/// `kill(pid, sig)`.
pub fn kill(pid: libc::pid_t, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill takes only integers.
    check(unsafe { libc::kill(pid, sig) } as libc::c_long).map(drop)
}
