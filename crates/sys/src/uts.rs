//! The UTS namespace's names: the host name, and the kernel's `uname`.

use std::ffi::CStr;

use crate::{check, Errno};

/// `sethostname(name)`, in the caller's UTS namespace.
pub fn set_hostname(name: &CStr) -> Result<(), Errno> {
    // SAFETY: `name` is valid for `len` bytes, alive for the call; sethostname only reads them.
    check(unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) } as libc::c_long).map(drop)
}

/// `uname()`: the kernel's names (`release`, `machine`...), each a NUL-terminated array.
pub fn uname() -> Result<libc::utsname, Errno> {
    // SAFETY: an all-zero utsname (arrays of chars) is a valid value for uname to overwrite.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes one utsname into a live local.
    check(unsafe { libc::uname(&mut uts) } as libc::c_long)?;
    Ok(uts)
}
