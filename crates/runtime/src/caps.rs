//! Capabilities: the command keeps none. Root inside a user namespace holds every capability *in that
//! namespace*; dropping them all (bounding, ambient, inheritable, permitted, effective) and locking the
//! securebits means neither uid 0 nor a setuid-root binary can get them back.

use sys::Errno;

/// Drops every capability up to `cap_last` from the bounding set, so no later `execve` can gain one.
/// Needs `CAP_SETPCAP`, so it runs before the switch to the target ids.
pub fn drop_bounding_set(cap_last: u32) -> Result<(), Errno> {
    for cap in 0..=cap_last {
        match sys::process::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) {
            // A capability this kernel does not know: nothing to drop.
            Ok(_) | Err(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
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

/// Empties the effective, permitted, inheritable and ambient sets of the calling thread.
pub fn drop_all_capabilities() -> Result<(), Errno> {
    sys::process::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong)?;
    sys::capability::clear_thread_sets()
}
