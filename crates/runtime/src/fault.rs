//! Fault points for tests (debug builds only): `AIRLOCK_FAULT_STOP=POINT` stops the process (`SIGSTOP`) when
//! its setup reaches POINT, so a test can `kill -9` it there and check what it leaves on the host. Release
//! builds compile the check out.

/// The points, in setup order: the plan made (the id range claimed), the gateway started, the cgroup made, init
/// cloned (before its id maps), init released (the sandbox running, before supervision). On cgroup v1 the cgroup
/// is made after `cloned`, while init takes its first steps (init waits for it before it runs anything of the
/// sandbox's): `cgroup-created` then comes between `cloned` and `released`.
pub const POINTS: [&str; 5] = ["prepared", "gateway-started", "cgroup-created", "cloned", "released"];

/// Stops here when `AIRLOCK_FAULT_STOP` names `point` (debug builds only).
pub fn stop_here(point: &str) {
    if cfg!(debug_assertions) && std::env::var_os("AIRLOCK_FAULT_STOP").is_some_and(|v| v == point) {
        let _ = sys::signal::kill(sys::process::pid(), libc::SIGSTOP);
    }
}
