//! Capabilities: the calling thread's sets.

use crate::{check, Errno};

#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `capset` (version 3, this thread) with every set empty: effective, permitted and inheritable.
pub fn clear_thread_sets() -> Result<(), Errno> {
    set_thread_sets(0, 0, 0)
}

/// `capset` (version 3, this thread): the effective, permitted and inheritable sets as bit masks (bit N is
/// capability N).
pub fn set_thread_sets(effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
    let header = CapUserHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    // Version 3 splits each 64-bit set into two 32-bit words, low word first.
    let word = |mask: u64, i: u32| (mask >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapUserData {
        effective: word(effective, i),
        permitted: word(permitted, i),
        inheritable: word(inheritable, i),
    });
    // SAFETY: capset reads a v3 header and two data structs, both live, correctly laid out (repr(C)) locals.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapUserHeader, data.as_ptr()) };
    check(ret).map(drop)
}

/// `capget` (version 3, this thread): the effective set as a bit mask (bit N is capability N), what
/// `/proc/self/status` shows as `CapEff` without the kernel formatting the whole status file.
pub fn effective_thread_set() -> Result<u64, Errno> {
    let mut header = CapUserHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapUserData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capget writes a v3 header and two data structs, both live, correctly laid out (repr(C)), mutable
    // locals of exactly the sizes version 3 uses.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapUserHeader, data.as_mut_ptr()) };
    check(ret)?;
    Ok(u64::from(data[0].effective) | u64::from(data[1].effective) << 32)
}

/// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)`: `cap` (in the permitted and inheritable sets already)
/// joins the ambient set, which `execve` of a program without file capabilities keeps.
pub fn raise_ambient(cap: u32) -> Result<(), Errno> {
    // SAFETY: PR_CAP_AMBIENT takes integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            cap as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(ret as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_thread_set_is_what_proc_status_shows() {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap();
        assert_eq!(effective_thread_set().unwrap(), cap_eff);
    }
}
