//! `runtime::seccomp`'s default filter in a real process: a forked child installs it and makes the calls it must
//! refuse (and some it must let through), each with integer arguments only.
//!
//! Unsafe on purpose: the calls under test are made raw, by number (`syscall(2)`, and `int 0x80` for the 32-bit
//! ABI), which is what the filter sees; no wrapper of `sys` may make an arbitrary call.

#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use policy::seccomp::default_seccomp_profile;
use runtime::seccomp::{compile_seccomp_program, install_seccomp_on_current_thread, SeccompProgram};

fn default_program() -> SeccompProgram {
    compile_seccomp_program(&default_seccomp_profile().unwrap()).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeds,
    Fails(i32),
}

struct Check {
    what: &'static str,
    nr: libc::c_long,
    args: [libc::c_long; 3],
    expect: Outcome,
}

/// `ioctl` requests with the high 32 bits set: the kernel reads an `unsigned int`, so they are the same
/// request, and the filter must see them as such.
const TIOCSTI_HIGH_BITS: libc::c_long = 0xffff_ffff_0000_5412_u64 as libc::c_long;

/// Calls made in a child under the default filter. Arguments are integers only, with 0 where the kernel
/// expects a pointer, so that no call can touch the process's memory even if the filter let it through.
/// Order matters: clone(CLONE_NEWUSER) comes before unshare(CLONE_NEWUSER), which, were it let through,
/// would leave the child in a namespace where the clone fails by itself.
const CHECKS: &[Check] = &[
    Check { what: "getpid", nr: libc::SYS_getpid, args: [0; 3], expect: Outcome::Succeeds },
    Check {
        what: "keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING)",
        nr: libc::SYS_keyctl,
        args: [0, -3, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check { what: "unshare(0)", nr: libc::SYS_unshare, args: [0; 3], expect: Outcome::Succeeds },
    Check {
        what: "clone(CLONE_NEWUSER | SIGCHLD)",
        nr: libc::SYS_clone,
        args: [(libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long, 0, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check {
        what: "unshare(CLONE_NEWUSER)",
        nr: libc::SYS_unshare,
        args: [libc::CLONE_NEWUSER as libc::c_long, 0, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check {
        what: "clone(SIGCHLD), i.e. fork",
        nr: libc::SYS_clone,
        args: [libc::SIGCHLD as libc::c_long, 0, 0],
        expect: Outcome::Succeeds,
    },
    Check { what: "clone3(NULL, 0)", nr: libc::SYS_clone3, args: [0; 3], expect: Outcome::Fails(libc::ENOSYS) },
    Check { what: "setns(-1, 0)", nr: libc::SYS_setns, args: [-1, 0, 0], expect: Outcome::Fails(libc::EPERM) },
    Check {
        what: "socket(AF_PACKET, SOCK_RAW, 0)",
        nr: libc::SYS_socket,
        args: [libc::AF_PACKET as libc::c_long, libc::SOCK_RAW as libc::c_long, 0],
        expect: Outcome::Fails(libc::EAFNOSUPPORT),
    },
    Check {
        what: "socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT)",
        nr: libc::SYS_socket,
        args: [libc::AF_NETLINK as libc::c_long, libc::SOCK_RAW as libc::c_long, 9],
        expect: Outcome::Fails(libc::EAFNOSUPPORT),
    },
    Check {
        what: "socket(AF_UNIX, SOCK_STREAM, 0)",
        nr: libc::SYS_socket,
        args: [libc::AF_UNIX as libc::c_long, libc::SOCK_STREAM as libc::c_long, 0],
        expect: Outcome::Succeeds,
    },
    Check {
        what: "socket(AF_INET, SOCK_STREAM, 0)",
        nr: libc::SYS_socket,
        args: [libc::AF_INET as libc::c_long, libc::SOCK_STREAM as libc::c_long, 0],
        expect: Outcome::Succeeds,
    },
    Check {
        what: "ioctl(-1, TIOCSTI | 0xffffffff00000000, NULL)",
        nr: libc::SYS_ioctl,
        args: [-1, TIOCSTI_HIGH_BITS, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check {
        what: "ioctl(-1, TIOCLINUX, NULL)",
        nr: libc::SYS_ioctl,
        args: [-1, 0x541C, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check {
        what: "ioctl(-1, FIONREAD, NULL) reaches the kernel",
        nr: libc::SYS_ioctl,
        args: [-1, 0x541B, 0],
        expect: Outcome::Fails(libc::EBADF),
    },
    Check {
        what: "personality(READ_IMPLIES_EXEC)",
        nr: libc::SYS_personality,
        args: [0x0400000, 0, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check {
        what: "personality(0xffffffff)",
        nr: libc::SYS_personality,
        args: [0xffff_ffff, 0, 0],
        expect: Outcome::Succeeds,
    },
    Check {
        what: "io_uring_setup(1, NULL)",
        nr: libc::SYS_io_uring_setup,
        args: [1, 0, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check {
        what: "open_by_handle_at(-1, NULL, 0)",
        nr: libc::SYS_open_by_handle_at,
        args: [-1, 0, 0],
        expect: Outcome::Fails(libc::EPERM),
    },
    Check { what: "chroot(NULL)", nr: libc::SYS_chroot, args: [0; 3], expect: Outcome::Fails(libc::EPERM) },
    #[cfg(target_arch = "x86_64")]
    Check {
        what: "x32 getpid (0x40000000 | 39)",
        nr: 0x4000_0000 | libc::SYS_getpid,
        args: [0; 3],
        expect: Outcome::Fails(libc::ENOSYS),
    },
];

/// Exit codes of the checking child, besides the 1-based index of the first failed check.
const EXIT_NO_NEW_PRIVS_FAILED: i32 = 100;
const EXIT_INSTALL_FAILED: i32 = 101;

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Makes one call of `CHECKS`. Async-signal-safe: it runs in a child forked from a multi-threaded process.
fn run_check(check: &Check) -> Outcome {
    let [a0, a1, a2] = check.args;
    // SAFETY: `check` is an entry of `CHECKS`, whose arguments are integers with 0 where the kernel expects
    // a pointer, so the kernel reads and writes none of this process's memory (a NULL pointer gets EFAULT).
    // The one call that creates a process, clone with a NULL stack, gives the new child a copy-on-write copy
    // of this address space, like fork; that child leaves at once below.
    let ret = unsafe { libc::syscall(check.nr, a0, a1, a2, 0 as libc::c_long, 0 as libc::c_long) };
    if ret < 0 {
        return Outcome::Fails(last_errno());
    }
    if check.nr == libc::SYS_clone {
        if ret == 0 {
            // In the new child of clone: `_exit` ends it without unwinding or running exit handlers.
            sys::process::exit_immediately(0);
        }
        reap(libc::pid_t::try_from(ret).unwrap_or(-1));
    }
    Outcome::Succeeds
}

/// Waits for `pid` and returns its wait status.
fn reap(pid: libc::pid_t) -> libc::c_int {
    sys::wait::wait_for_exit(pid).unwrap_or(0)
}

/// Runs `child` in a forked process and returns its wait status. `child` must be async-signal-safe: the
/// test binary is multi-threaded, and a lock held by another thread at fork time stays held in the child.
fn in_forked_child(child: impl FnOnce() -> i32) -> libc::c_int {
    // The child runs only `child`, which callers keep to raw system calls (no allocation, no lock), then
    // `_exit`s; it never returns into the test harness.
    let pid = sys::process::fork_and_run(child);
    let pid = pid.unwrap_or_else(|e| panic!("fork: {}", std::io::Error::from_raw_os_error(e)));
    reap(pid)
}

/// Seccomp filters need CONFIG_SECCOMP_FILTER; a kernel without it is a reason to skip, not to fail.
fn skip_reason() -> Option<&'static str> {
    let mode = sys::process::prctl(libc::PR_GET_SECCOMP, 0);
    mode.is_err().then_some("the kernel has no seccomp (prctl(PR_GET_SECCOMP) failed)")
}

fn install_in_child(program: &SeccompProgram) -> Result<(), i32> {
    if sys::process::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).is_err() {
        return Err(EXIT_NO_NEW_PRIVS_FAILED);
    }
    install_seccomp_on_current_thread(program).map_err(|_| EXIT_INSTALL_FAILED)
}

#[test]
fn seccomp_filter_refuses_the_denied_calls_in_a_real_process() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let program = default_program();
    let status = in_forked_child(|| {
        if let Err(code) = install_in_child(&program) {
            return code;
        }
        for (index, check) in CHECKS.iter().enumerate() {
            if run_check(check) != check.expect {
                return i32::try_from(index + 1).unwrap_or(99);
            }
        }
        0
    });
    assert!(libc::WIFEXITED(status), "checking child died: wait status {status:#x}");
    let code = libc::WEXITSTATUS(status);
    let failed = match code {
        0 => return,
        EXIT_NO_NEW_PRIVS_FAILED => "prctl(PR_SET_NO_NEW_PRIVS)".to_owned(),
        EXIT_INSTALL_FAILED => "install_seccomp_on_current_thread".to_owned(),
        index => {
            let check = &CHECKS[usize::try_from(index - 1).unwrap()];
            format!("{}: expected {:?}", check.what, check.expect)
        }
    };
    panic!("under the default filter, {failed}");
}

/// `int 0x80` from a 64-bit process: the 32-bit getpid (20). Returns the raw `eax`.
#[cfg(target_arch = "x86_64")]
fn int80_getpid() -> i32 {
    let eax: i32;
    // SAFETY: the 32-bit getpid takes no argument and touches no memory. `int 0x80` switches to the kernel
    // stack (no use of ours: `nostack`) and returns with every register restored but eax, which is an
    // output; r8-r11 are declared clobbered for the kernels that zeroed them on this path.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inlateout("eax") 20 => eax,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            options(nostack),
        );
    }
    eax
}

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_filter_refuses_int_0x80_in_a_real_process() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    // Without a filter first: a kernel booted with ia32_emulation=0 kills `int 0x80` with SIGSEGV.
    let unfiltered = in_forked_child(|| {
        let pid = std::process::id() as i32;
        i32::from(int80_getpid() != pid)
    });
    if !libc::WIFEXITED(unfiltered) {
        eprintln!("skipped: int 0x80 is not available on this kernel (wait status {unfiltered:#x})");
        return;
    }
    assert_eq!(libc::WEXITSTATUS(unfiltered), 0, "int 0x80 getpid does not return the pid without a filter");

    let program = default_program();
    let filtered = in_forked_child(|| {
        if let Err(code) = install_in_child(&program) {
            return code;
        }
        i32::from(int80_getpid() != -libc::ENOSYS)
    });
    assert!(libc::WIFEXITED(filtered), "filtered child died: wait status {filtered:#x}");
    assert_eq!(libc::WEXITSTATUS(filtered), 0, "int 0x80 getpid was not refused with ENOSYS");
}
