//! Landlock: the second wall. Even if a mount were misconfigured, the command can only write where the policy
//! allows, and (ABI 6+) cannot connect to abstract Unix sockets or signal processes outside its own domain.
//!
//! The ruleset is built in the sandbox's init after `pivot_root` (the paths are the sandbox's own) and enforced
//! by the command's process just before seccomp. The three Landlock system calls are `sys::landlock`'s, called
//! directly rather than through the `landlock` crate: this all runs after `clone`, where nothing may allocate,
//! and the crate builds its rulesets in Vecs.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use crate::failure::{ChildFailure, Step};
use sys::Errno;

pub const ACCESS_EXECUTE: u64 = 1 << 0;
pub const ACCESS_WRITE_FILE: u64 = 1 << 1;
pub const ACCESS_READ_FILE: u64 = 1 << 2;
pub const ACCESS_READ_DIR: u64 = 1 << 3;
pub const ACCESS_TRUNCATE: u64 = 1 << 14;
pub const ACCESS_IOCTL_DEV: u64 = 1 << 15;
/// Rights that apply to a file (not a directory); a rule on a file may only carry these.
const FILE_ACCESS: u64 = ACCESS_EXECUTE | ACCESS_WRITE_FILE | ACCESS_READ_FILE | ACCESS_TRUNCATE | ACCESS_IOCTL_DEV;
/// Read and execute, for the whole tree.
pub const ACCESS_READ: u64 = ACCESS_EXECUTE | ACCESS_READ_FILE | ACCESS_READ_DIR;
/// For the sandbox's terminals and harmless devices: read, write, ioctl.
pub const ACCESS_DEVICE: u64 = ACCESS_READ_FILE | ACCESS_WRITE_FILE | ACCESS_IOCTL_DEV;
/// Everything (masked by the ABI's handled set).
pub const ACCESS_ALL: u64 = u64::MAX;

const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

/// The Landlock ABI version the running kernel supports, or the errno explaining why there is none
/// (`ENOSYS`: not built in; `EOPNOTSUPP`: built in but not enabled in the `lsm=` boot parameter).
pub fn abi_version() -> Result<u32, i32> {
    sys::landlock::abi_version()
}

/// Filesystem rights the given ABI knows about (each ABI adds one right: v2 refer, v3 truncate, v5 ioctl_dev).
pub fn handled_fs_access(abi: u32) -> u64 {
    match abi {
        0 => 0,
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    }
}

/// Scopes the given ABI knows about (v6: abstract Unix sockets and signals).
pub fn handled_scopes(abi: u32) -> u64 {
    if abi >= 6 {
        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    } else {
        0
    }
}

/// One rule: `path` (inside the sandbox) and everything beneath it gets `access`.
#[derive(Debug, Clone)]
pub struct LandlockRule {
    pub path: CString,
    pub access: u64,
}

/// The ruleset to build in the sandbox's init.
#[derive(Debug, Clone)]
pub struct LandlockPlan {
    pub abi: u32,
    pub rules: Vec<LandlockRule>,
}

/// Creates the ruleset and adds the plan's rules, plus one rule for each of the command's standard streams that
/// is a file or a terminal, so `/dev/stdout` and friends can be reopened (the command holds those files open
/// already; the rule grants nothing it cannot do through the descriptor). Returns the ruleset fd.
pub fn create_ruleset(plan: &LandlockPlan) -> Result<RawFd, ChildFailure> {
    let handled = handled_fs_access(plan.abi);
    let attr = sys::landlock::RulesetAttr {
        handled_access_fs: handled,
        handled_access_net: 0,
        scoped: handled_scopes(plan.abi),
    };
    // The struct grew with the ABI: v1-3 know only the fs field, v4-5 add net, v6 adds scoped.
    let size = match plan.abi {
        0..=3 => 8usize,
        4 | 5 => 16,
        _ => std::mem::size_of::<sys::landlock::RulesetAttr>(),
    };
    let create_failed = |errno| ChildFailure { step: Step::CreateLandlockRuleset, errno, index: 0 };
    // Owned while it is built: an error below closes it.
    let ruleset = sys::landlock::create_ruleset(&attr, size).map_err(create_failed)?;
    for (index, rule) in plan.rules.iter().enumerate() {
        add_path_rule(ruleset.as_raw_fd(), &rule.path, rule.access & handled).map_err(|errno| ChildFailure {
            step: Step::AddLandlockRule,
            errno,
            index: index as u32,
        })?;
    }
    for (fd, path) in [(0, c"/proc/self/fd/0"), (1, c"/proc/self/fd/1"), (2, c"/proc/self/fd/2")] {
        if is_file_or_char_device(fd) {
            // Best effort by design: a stream that cannot be reopened only loses that convenience.
            let _ = add_path_rule(ruleset.as_raw_fd(), path, ACCESS_DEVICE & handled);
        }
    }
    // Handed over by number: the caller keeps it until the command's process enforces it.
    Ok(ruleset.into_raw_fd())
}

fn is_file_or_char_device(fd: RawFd) -> bool {
    sys::fd::fstat(fd).is_ok_and(|st| matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFCHR))
}

fn add_path_rule(ruleset: RawFd, path: &CStr, access: u64) -> Result<(), Errno> {
    let fd = sys::fd::open(path, libc::O_PATH | libc::O_CLOEXEC)?;
    let is_dir = sys::fd::fstat(fd.as_raw_fd()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
    let allowed = if is_dir { access } else { access & FILE_ACCESS };
    sys::landlock::add_path_beneath_rule(ruleset, fd.as_raw_fd(), allowed)
}

/// Enforces the ruleset on the calling thread (and everything it will exec or fork). Needs `no_new_privs`.
pub fn restrict_self(ruleset: RawFd) -> Result<(), Errno> {
    sys::landlock::restrict_self(ruleset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handled_rights_grow_with_the_abi() {
        assert_eq!(handled_fs_access(1) & ACCESS_TRUNCATE, 0);
        assert_ne!(handled_fs_access(3) & ACCESS_TRUNCATE, 0);
        assert_eq!(handled_fs_access(4) & ACCESS_IOCTL_DEV, 0);
        assert_ne!(handled_fs_access(5) & ACCESS_IOCTL_DEV, 0);
        assert_eq!(handled_scopes(5), 0);
        assert_eq!(handled_scopes(6), SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL);
    }
}
