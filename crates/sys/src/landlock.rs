//! Landlock's three system calls, called directly: they run after `clone` in the sandbox's init, where nothing
//! may allocate (the `landlock` crate builds its rulesets in Vecs).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::{check, check_fd, errno, Errno};

/// `LANDLOCK_CREATE_RULESET_VERSION`: ask `landlock_create_ruleset` for the ABI version instead of a ruleset.
const CREATE_RULESET_VERSION: u32 = 1;
/// `LANDLOCK_RULE_PATH_BENEATH`.
const RULE_PATH_BENEATH: u32 = 1;

/// `struct landlock_ruleset_attr` (as of ABI 6; older kernels read a prefix of it, see [`create_ruleset`]).
#[repr(C)]
pub struct RulesetAttr {
    pub handled_access_fs: u64,
    pub handled_access_net: u64,
    pub scoped: u64,
}

/// `struct landlock_path_beneath_attr`.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version the running kernel supports, or the errno explaining why there is none
/// (`ENOSYS`: not built in; `EOPNOTSUPP`: built in but not enabled in the `lsm=` boot parameter).
pub fn abi_version() -> Result<u32, Errno> {
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, landlock_create_ruleset reads no
    // memory and creates no file descriptor; it only returns a number or -1 with errno.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        Err(errno())
    } else {
        u32::try_from(ret).map_err(|_| libc::EINVAL)
    }
}

/// A new ruleset handling what `attr` says. `size`: how much of `attr` this kernel's ABI knows (the struct grew
/// with the ABI); at most its size.
pub fn create_ruleset(attr: &RulesetAttr, size: usize) -> Result<OwnedFd, Errno> {
    let size = size.min(std::mem::size_of::<RulesetAttr>());
    // SAFETY: `attr` is a live, repr(C) struct of at least `size` bytes; the flags are 0.
    let fd =
        check_fd(unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, attr as *const RulesetAttr, size, 0u32) })?;
    // SAFETY: landlock_create_ruleset succeeded, so `fd` is a descriptor it just created, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds a rule to `ruleset`: `allowed_access` on the file or tree `parent` refers to.
pub fn add_path_beneath_rule(ruleset: RawFd, parent: RawFd, allowed_access: u64) -> Result<(), Errno> {
    let attr = PathBeneathAttr { allowed_access, parent_fd: parent };
    // SAFETY: `attr` is a live packed struct matching `struct landlock_path_beneath_attr`; flags are 0.
    let ret = unsafe {
        libc::syscall(libc::SYS_landlock_add_rule, ruleset, RULE_PATH_BENEATH, &attr as *const PathBeneathAttr, 0u32)
    };
    check(ret).map(drop)
}

/// Enforces the ruleset on the calling thread (and everything it will exec or fork). Needs `no_new_privs`.
pub fn restrict_self(ruleset: RawFd) -> Result<(), Errno> {
    // SAFETY: landlock_restrict_self takes only integers.
    let ret = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) };
    check(ret).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attributes_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<PathBeneathAttr>(), 12);
        assert_eq!(std::mem::size_of::<RulesetAttr>(), 24);
    }

    #[test]
    fn this_kernel_reports_an_abi_or_why_not() {
        match abi_version() {
            Ok(abi) => assert!(abi >= 1),
            Err(e) => assert!(e == libc::ENOSYS || e == libc::EOPNOTSUPP, "errno {e}"),
        }
    }
}
