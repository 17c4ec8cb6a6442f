//! The scheduler: which CPUs a process may run on.

use crate::{check, Errno};

/// Lets `pid` run on every CPU the caller may run on except the one the caller is running on now, when there is
/// such a CPU (`sched_getcpu`, `sched_getaffinity`, `sched_setaffinity`); with one CPU, nothing changes. For a
/// child just forked to work beside its parent: the kernel often queues a new child on its parent's CPU and
/// runs it there first, leaving the other CPUs idle while the parent waits. Async-signal-safe; allocates
/// nothing.
pub fn move_off_current_cpu(pid: libc::pid_t) -> Result<(), Errno> {
    // SAFETY: sched_getcpu takes no arguments; glibc reads it from the thread's rseq area or asks the kernel.
    let current = unsafe { libc::sched_getcpu() };
    let current = usize::try_from(current).map_err(|_| crate::errno())?;
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `allowed` is a live cpu_set_t of `size` bytes, which the kernel fills.
    check(unsafe { libc::sched_getaffinity(0, size, &mut allowed) } as libc::c_long)?;
    // SAFETY: CPU_CLR and CPU_COUNT only touch the bits of `allowed`, and CPU_CLR is given a CPU within it (it
    // would panic past its end, and a CPU past its end is not in it anyway).
    let others = unsafe {
        if current < libc::CPU_SETSIZE as usize {
            libc::CPU_CLR(current, &mut allowed);
        }
        libc::CPU_COUNT(&allowed)
    };
    if others == 0 {
        return Ok(());
    }
    // SAFETY: `allowed` is a live cpu_set_t of `size` bytes, which the kernel only reads.
    check(unsafe { libc::sched_setaffinity(pid, size, &allowed) } as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity(pid: libc::pid_t) -> libc::cpu_set_t {
        // SAFETY: all zeroes is the empty set; `set` is a live cpu_set_t of the size given.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
            set
        }
    }

    fn cpus(set: &libc::cpu_set_t) -> Vec<usize> {
        // SAFETY: CPU_ISSET reads the bits of a live set, for CPUs within it.
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) }).collect()
    }

    #[test]
    fn a_child_moved_off_the_current_cpu_keeps_every_other_one() {
        let mine = cpus(&affinity(0));
        let child = crate::process::fork_and_run(|| {
            std::thread::sleep(std::time::Duration::from_secs(30));
            0
        })
        .unwrap();
        let moved = move_off_current_cpu(child);
        let theirs = cpus(&affinity(child));
        // SAFETY: kill and waitpid on the child forked above, which nothing else reaps.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        moved.unwrap();
        if mine.len() >= 2 {
            // One CPU fewer: the one this thread ran on at the call (it may have moved since).
            assert_eq!(theirs.len(), mine.len() - 1, "{mine:?} -> {theirs:?}");
            assert!(theirs.iter().all(|cpu| mine.contains(cpu)), "{mine:?} -> {theirs:?}");
        } else {
            println!("SKIP: one CPU allowed ({mine:?}): nothing to move to");
            assert_eq!(theirs, mine);
        }
    }

    #[test]
    fn moving_a_process_that_is_gone_is_an_error() {
        if cpus(&affinity(0)).len() >= 2 {
            // pid_max is at most 2^22: this pid never exists.
            assert_eq!(move_off_current_cpu(1 << 23), Err(libc::ESRCH));
        }
    }
}
