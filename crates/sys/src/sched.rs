//! The scheduler: which CPUs a process may run on.

use crate::{check, Errno};

/// A set of CPUs (`cpu_set_t`), as `sched_getaffinity` gives it.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// How many CPUs are in the set.
    pub fn count(&self) -> usize {
        // SAFETY: CPU_COUNT reads the bits of a live set.
        let count = unsafe { libc::CPU_COUNT(&self.0) };
        usize::try_from(count).unwrap_or(0)
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        // SAFETY: CPU_ISSET reads the bits of a live set, for a CPU within it (it would panic past its end).
        cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, &self.0) }
    }

    fn remove(&mut self, cpu: usize) {
        if cpu < libc::CPU_SETSIZE as usize {
            // SAFETY: CPU_CLR only clears a bit of a live set, for a CPU within it (checked above).
            unsafe { libc::CPU_CLR(cpu, &mut self.0) }
        }
    }
}

/// The CPUs `pid` (0: the calling thread) may run on (`sched_getaffinity`).
pub fn allowed_cpus(pid: libc::pid_t) -> Result<CpuSet, Errno> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size given, which the kernel fills.
    check(unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } as libc::c_long)?;
    Ok(CpuSet(set))
}

/// Lets `pid` (0: the calling thread) run on `cpus` only (`sched_setaffinity`). When the thread's CPU is not in
/// the set, the kernel moves it before this returns.
pub fn set_allowed_cpus(pid: libc::pid_t, cpus: &CpuSet) -> Result<(), Errno> {
    // SAFETY: `cpus` is a live cpu_set_t of the size given, which the kernel only reads.
    check(unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &cpus.0) } as libc::c_long)
        .map(drop)
}

/// The CPU the calling thread runs on now (`sched_getcpu`; glibc reads it from the thread's rseq area).
pub fn current_cpu() -> Result<usize, Errno> {
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).map_err(|_| crate::errno())
}

/// Lets `pid` (0: the calling thread) run on every CPU the calling thread may run on except the one it runs on
/// now, when there is such a CPU; with one CPU, nothing changes. Returns whether it changed anything. For two
/// processes meant to work at the same time: the kernel often queues a new child on its parent's CPU and runs
/// the two in turns there while the other CPUs idle. Async-signal-safe; allocates nothing.
pub fn move_off_current_cpu(pid: libc::pid_t) -> Result<bool, Errno> {
    let current = current_cpu()?;
    let mut others = allowed_cpus(0)?;
    others.remove(current);
    if others.count() == 0 {
        return Ok(false);
    }
    set_allowed_cpus(pid, &others).map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(pid: libc::pid_t) -> Vec<usize> {
        let set = allowed_cpus(pid).unwrap();
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| set.contains(cpu)).collect()
    }

    #[test]
    fn a_child_moved_off_the_current_cpu_keeps_every_other_one() {
        let mine = cpus(0);
        let child = crate::process::fork_and_run(|| {
            std::thread::sleep(std::time::Duration::from_secs(30));
            0
        })
        .unwrap();
        let moved = move_off_current_cpu(child);
        let theirs = cpus(child);
        // SAFETY: kill and waitpid on the child forked above, which nothing else reaps.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        if mine.len() >= 2 {
            assert_eq!(moved, Ok(true));
            // One CPU fewer: the one this thread ran on at the call (it may have moved since).
            assert_eq!(theirs.len(), mine.len() - 1, "{mine:?} -> {theirs:?}");
            assert!(theirs.iter().all(|cpu| mine.contains(cpu)), "{mine:?} -> {theirs:?}");
        } else {
            println!("SKIP: one CPU allowed ({mine:?}): nothing to move to");
            assert_eq!(moved, Ok(false));
            assert_eq!(theirs, mine);
        }
    }

    #[test]
    fn a_thread_moves_itself_off_its_cpu_and_back() {
        let mine = cpus(0);
        if mine.len() < 2 {
            println!("SKIP: one CPU allowed ({mine:?}): nothing to move to");
            return;
        }
        let saved = allowed_cpus(0).unwrap();
        let before = current_cpu().unwrap();
        assert_eq!(move_off_current_cpu(0), Ok(true));
        // The kernel moved this thread before the call returned, and it may not go back until restored.
        let after = current_cpu().unwrap();
        assert_ne!(after, before);
        assert!(!cpus(0).contains(&before), "{:?} still has {before}", cpus(0));
        set_allowed_cpus(0, &saved).unwrap();
        assert_eq!(cpus(0), mine);
    }

    #[test]
    fn moving_a_process_that_is_gone_is_an_error() {
        if cpus(0).len() >= 2 {
            // pid_max is at most 2^22: this pid never exists.
            assert_eq!(move_off_current_cpu(1 << 23), Err(libc::ESRCH));
        }
    }
}
