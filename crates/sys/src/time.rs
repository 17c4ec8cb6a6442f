//! Time: sleeping.

use std::time::Duration;

/// `nanosleep(duration)`: sleeps about that long. A signal cuts it short (the remainder is not slept: callers
/// poll in a loop anyway).
pub fn sleep(duration: Duration) {
    let ts = libc::timespec {
        tv_sec: duration.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: duration.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `ts` is a live timespec; the remainder pointer may be null.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}
