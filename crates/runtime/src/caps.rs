//! Capabilities: the command keeps none, or — root inside a writable root, for package managers — the few
//! `policy::sandbox::RootCapabilities::PackageManager` names. Root inside a user namespace holds every
//! capability *in that namespace*; dropping the rest (bounding, ambient, inheritable, permitted, effective) and
//! locking the securebits means neither uid 0 nor a setuid-root binary can get them back.

use sys::Errno;

/// Capability bit numbers (`linux/capability.h`) that airlock checks by name: the id-mapping ones (what root may
/// map into a user namespace, `userns::root_mapping`) and `CAP_SYS_ADMIN` (`airlock doctor`'s host facts).
pub const CAP_SETGID: u32 = 6;
pub const CAP_SETUID: u32 = 7;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SETFCAP: u32 = 31;

/// The capabilities of `RootCapabilities::PackageManager`, as a mask (bit N is capability N; the numbers are
/// the kernel's, `linux/capability.h`): CHOWN 0, DAC_OVERRIDE 1, FOWNER 3, KILL 5, SETGID 6, SETUID 7. Not
/// FSETID (4): with it a `chown` keeps a file's set-user-ID bit, so in a root-owned workspace shared idmapped
/// (`rw`), root inside could hand an existing set-user-ID program to host root; package managers set those bits
/// with `chmod` after `chown` and need no FSETID.
pub const PACKAGE_MANAGER: u64 = 1 << 0 | 1 << 1 | 1 << 3 | 1 << 5 | 1 << 6 | 1 << 7;

/// Drops every capability up to `cap_last` but those in `keep` from the bounding set, so no later `execve` can
/// gain one. Needs `CAP_SETPCAP`, so it runs before the switch to the target ids.
pub fn drop_bounding_set(cap_last: u32, keep: u64) -> Result<(), Errno> {
    for cap in (0..=cap_last).filter(|cap| keep & (1 << cap) == 0) {
        match sys::process::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) {
            // A capability this kernel does not know: nothing to drop.
            Ok(_) | Err(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Puts `keep` in the ambient set, the one way a capability survives `execve` once `SECBIT_NOROOT` is set.
/// Runs before [`lock_securebits`] (which forbids raising ambient capabilities) while we still hold every
/// capability: a capability joins the ambient set only from the permitted and inheritable sets.
pub fn raise_ambient(cap_last: u32, keep: u64) -> Result<(), Errno> {
    if keep == 0 {
        return Ok(());
    }
    let all = if cap_last >= 63 { u64::MAX } else { (1u64 << (cap_last + 1)) - 1 };
    sys::capability::set_thread_sets(all, all, keep)?;
    for cap in (0..=cap_last).filter(|cap| keep & (1 << cap) != 0) {
        sys::capability::raise_ambient(cap)?;
    }
    Ok(())
}

/// `SECBIT_NOROOT` (uid 0 and setuid-root executables get no capabilities on `execve`),
/// `SECBIT_NO_CAP_AMBIENT_RAISE`, and every lock bit, so the command cannot undo them.
pub fn lock_securebits() -> Result<(), Errno> {
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    sys::process::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong).map(drop)
}

/// After the switch to the target ids: the effective, permitted and inheritable sets become `keep`, the ambient
/// set too (the kernel drops from it what leaves the other two); with `keep` empty, every set is emptied.
pub fn keep_only(keep: u64) -> Result<(), Errno> {
    if keep == 0 {
        sys::process::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)?;
    }
    sys::capability::set_thread_sets(keep, keep, keep)
}
