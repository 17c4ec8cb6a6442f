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
    let header = CapUserHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [CapUserData { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads a v3 header and two data structs, both live, correctly laid out (repr(C)) locals.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapUserHeader, data.as_ptr()) };
    check(ret).map(drop)
}
