//! Waiting for child processes.

use crate::{check, Errno};

/// `waitpid(pid, &status, options)`: the pid waited for (0 with `WNOHANG` when no child has changed state yet)
/// and its wait status.
pub fn waitpid(pid: libc::pid_t, options: libc::c_int) -> Result<(libc::pid_t, libc::c_int), Errno> {
    let mut status = 0;
    // SAFETY: waitpid writes one int into a live local.
    let ret = check(unsafe { libc::waitpid(pid, &mut status, options) } as libc::c_long)?;
    Ok((ret as libc::pid_t, status))
}

/// Waits until `pid` exits (retrying when a signal interrupts the wait); returns its wait status.
pub fn wait_for_exit(pid: libc::pid_t) -> Result<libc::c_int, Errno> {
    loop {
        match waitpid(pid, 0) {
            Err(libc::EINTR) => continue,
            other => return other.map(|(_, status)| status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The child is reaped by `wait_for_exit`, which is what is tested, not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    fn a_childs_exit_status_is_collected() {
        let child = std::process::Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let status = wait_for_exit(child.id() as libc::pid_t).unwrap();
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 7);
        assert_eq!(waitpid(child.id() as libc::pid_t, libc::WNOHANG), Err(libc::ECHILD));
    }
}
