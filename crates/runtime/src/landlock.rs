//! Landlock: the second wall. Even if a mount were misconfigured, the command can only write where the policy
//! allows, and (ABI 6+) cannot connect to abstract Unix sockets or signal processes outside its own domain.
//!
//! The ruleset is built in the sandbox's init after `pivot_root` (the paths are the sandbox's own) and enforced
//! by the command's process just before seccomp. We call the three Landlock system calls directly rather than
//! through the `landlock` crate: this all runs after `clone`, where nothing may allocate, and the crate builds
//! its rulesets in Vecs.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use crate::failure::{ChildFailure, Step};
use sys::Errno;

/// `LANDLOCK_CREATE_RULESET_VERSION`: ask `landlock_create_ruleset` for the ABI version instead of a ruleset.
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: u32 = 1;

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
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, landlock_create_ruleset reads no
    // memory and creates no file descriptor; it only returns a number or -1 with errno.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(sys::errno())
    } else {
        u32::try_from(ret).map_err(|_| libc::EINVAL)
    }
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

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Creates the ruleset and adds the plan's rules, plus one rule for each of the command's standard streams that
/// is a file or a terminal, so `/dev/stdout` and friends can be reopened (the command holds those files open
/// already; the rule grants nothing it cannot do through the descriptor). Returns the ruleset fd.
pub fn create_ruleset(plan: &LandlockPlan) -> Result<RawFd, ChildFailure> {
    let handled = handled_fs_access(plan.abi);
    let attr = RulesetAttr { handled_access_fs: handled, handled_access_net: 0, scoped: handled_scopes(plan.abi) };
    // The struct grew with the ABI: v1-3 know only the fs field, v4-5 add net, v6 adds scoped.
    let size = match plan.abi {
        0..=3 => 8usize,
        4 | 5 => 16,
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    let create_failed = |errno| ChildFailure { step: Step::CreateLandlockRuleset, errno, index: 0 };
    // SAFETY: `attr` is a live, repr(C) struct of at least `size` bytes; the flags are 0.
    let ret = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, &attr as *const RulesetAttr, size, 0u32) };
    let ruleset = sys::check_fd(ret).map_err(create_failed)?;
    for (index, rule) in plan.rules.iter().enumerate() {
        if let Err(errno) = add_path_rule(ruleset, &rule.path, rule.access & handled) {
            sys::fd::close(ruleset);
            return Err(ChildFailure { step: Step::AddLandlockRule, errno, index: index as u32 });
        }
    }
    for (fd, path) in [(0, c"/proc/self/fd/0"), (1, c"/proc/self/fd/1"), (2, c"/proc/self/fd/2")] {
        if is_file_or_char_device(fd) {
            // Best effort by design: a stream that cannot be reopened only loses that convenience.
            let _ = add_path_rule(ruleset, path, ACCESS_DEVICE & handled);
        }
    }
    Ok(ruleset)
}

fn is_file_or_char_device(fd: RawFd) -> bool {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into a live local; a closed fd only yields EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFCHR)
}

fn add_path_rule(ruleset: RawFd, path: &CStr, access: u64) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string.
    let fd = sys::check_fd(unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on the O_PATH fd we just opened, into a live local.
    let is_dir = unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let allowed = if is_dir { access } else { access & FILE_ACCESS };
    let attr = PathBeneathAttr { allowed_access: allowed, parent_fd: fd };
    // SAFETY: `attr` is a live packed struct matching `struct landlock_path_beneath_attr`; flags are 0.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0u32,
        )
    };
    sys::fd::close(fd);
    sys::check(ret).map(drop)
}

/// Enforces the ruleset on the calling thread (and everything it will exec or fork). Needs `no_new_privs`.
pub fn restrict_self(ruleset: RawFd) -> Result<(), Errno> {
    // SAFETY: landlock_restrict_self takes only integers.
    let ret = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    sys::check(ret).map(drop)
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

    #[test]
    fn path_beneath_attr_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<PathBeneathAttr>(), 12);
        assert_eq!(std::mem::size_of::<RulesetAttr>(), 24);
    }
}
