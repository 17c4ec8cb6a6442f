//! The one crate of the workspace where raw system calls are made: thin wrappers over the calls airlock's sandbox
//! engine needs, one module per kernel concept (`fd`, `fs`, `dir`, `xattr`, `process`, `namespace`, `signal`,
//! `mount`, `loop_device`, `capability`, `terminal`, `time`, `sched`, `bpf`).
//!
//! Every function here is async-signal-safe and allocates nothing: they are called after `clone`, in the
//! sandbox's init and in the command's process, where only such work is allowed. One exception: `bpf` (the
//! audit log's exec tracer, loaded through C code that allocates), which only the supervisor uses, in its own
//! process. Errors are the raw errno, which the caller turns into a failure record or a typed error.

// The workspace lints deny unsafe; this crate exists to hold it. Every unsafe block still needs its SAFETY
// comment, and unsafe operations inside unsafe fns need their own block.
#![allow(unsafe_code)]

pub mod bpf;
pub mod capability;
pub mod credentials;
pub mod dir;
pub mod fd;
pub mod fs;
pub mod kernel;
pub mod landlock;
pub mod loop_device;
pub mod memory;
pub mod mount;
pub mod namespace;
pub mod net;
pub mod process;
pub mod sched;
pub mod seccomp;
pub mod signal;
pub mod socket;
pub mod terminal;
pub mod time;
pub mod uts;
pub mod wait;
pub mod xattr;

/// A raw errno value.
pub type Errno = i32;

/// The calling thread's errno.
pub fn errno() -> Errno {
    // SAFETY: __errno_location returns a valid pointer to this thread's errno; reading an int is always safe.
    unsafe { *libc::__errno_location() }
}

/// The symbolic name of an errno (`EPERM`), for the ones airlock reports (a failed setup step, a failed exec);
/// `None` for others.
pub fn errno_name(errno: Errno) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ETXTBSY => "ETXTBSY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::ELIBBAD => "ELIBBAD",
        libc::EUSERS => "EUSERS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return None,
    })
}

/// Turns a `-1 means errno` return value into a Result.
pub fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret)
    }
}

/// Like [`check`], for calls returning a file descriptor.
pub fn check_fd(ret: libc::c_long) -> Result<std::os::fd::RawFd, Errno> {
    check(ret).map(|fd| fd as std::os::fd::RawFd)
}

/// Retries a call interrupted by a signal.
pub fn retry_eintr(mut call: impl FnMut() -> libc::c_long) -> Result<libc::c_long, Errno> {
    loop {
        match check(call()) {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}
