//! The seccomp filter as a sandboxed command meets it: the real `airlock run`, with python3 (the host's, seen
//! read-only inside) making the calls the default profile denies and the ones it must keep working.
//!
//! Python is the driver because this crate has no `unsafe`: ctypes' `syscall()` makes each call with integer
//! arguments (0 where the kernel expects a pointer, so a call let through by mistake cannot do harm), and
//! threads, fork and `int 0x80` come from the language itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs each `NAME|NR|ARG,ARG,...|ERRNO` given on the command line and compares the errno (0: success), then
/// the calls libraries make on their own. Prints one line per check; exits 1 if any failed.
const PROBE: &str = r#"
import ctypes, mmap, os, platform, socket, sys, threading

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
failures = 0

def report(name, got, want):
    global failures
    if got != want:
        failures += 1
    print(("ok     " if got == want else "FAILED ") + f"{name}: errno {got}, expected {want}")

for spec in sys.argv[1:]:
    name, nr, args, want = spec.split("|")
    args = [ctypes.c_long(int(a)) for a in args.split(",") if a]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(int(nr)), *args)
    report(name, ctypes.get_errno() if ret < 0 else 0, int(want))

# glibc tries clone3 first for threads and must fall back to clone on ENOSYS.
try:
    done = []
    thread = threading.Thread(target=done.append, args=(1,))
    thread.start()
    thread.join()
    report("pthread_create", 0 if done else -1, 0)
except RuntimeError as error:
    report(f"pthread_create ({error})", -1, 0)

pid = os.fork()
if pid == 0:
    os._exit(7)
_, status = os.waitpid(pid, 0)
report("fork", 0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7 else -1, 0)

# int 0x80 from a 64-bit process, 32-bit getpid (20): mov eax, 20; int 0x80; ret. Run in a child: a kernel
# booted with ia32_emulation=0 answers with SIGSEGV instead.
if platform.machine() == "x86_64":
    pid = os.fork()
    if pid == 0:
        page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(b"\xb8\x14\x00\x00\x00\xcd\x80\xc3")
        call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
        ret = call()
        os._exit(-ret if -255 <= ret < 0 else 0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print(f"skipped int 0x80: killed by signal {os.WTERMSIG(status)} (no ia32 emulation)")
    else:
        report("int 0x80 getpid", os.WEXITSTATUS(status), 38)

status = open("/proc/self/status").read()
report("Seccomp: 2 in /proc/self/status", 0 if "Seccomp:\t2" in status else -1, 0)
report("NoNewPrivs: 1 in /proc/self/status", 0 if "NoNewPrivs:\t1" in status else -1, 0)
sys.exit(1 if failures else 0)
"#;

/// `ioctl` requests are `unsigned int` in the kernel: these high bits do not change the request.
const HIGH_BITS: i64 = 0xffff_ffff_0000_0000_u64 as i64;

/// (what, syscall number, arguments, expected errno or 0 for success).
fn checks() -> Vec<(&'static str, libc::c_long, Vec<i64>, i32)> {
    let checks = vec![
        ("getpid", libc::SYS_getpid, vec![], 0),
        ("socket(AF_INET, SOCK_STREAM)", libc::SYS_socket, vec![2, 1, 0], 0),
        ("socket(AF_UNIX, SOCK_STREAM)", libc::SYS_socket, vec![1, 1, 0], 0),
        ("unshare(0)", libc::SYS_unshare, vec![0], 0),
        ("personality(0xffffffff)", libc::SYS_personality, vec![0xffff_ffff], 0),
        ("keyctl(KEYCTL_GET_KEYRING_ID, session)", libc::SYS_keyctl, vec![0, -3, 0], libc::EPERM),
        ("add_key(NULL...)", libc::SYS_add_key, vec![0, 0, 0, 0, 0], libc::EPERM),
        ("bpf(BPF_MAP_CREATE, NULL, 0)", libc::SYS_bpf, vec![0, 0, 0], libc::EPERM),
        ("perf_event_open(NULL...)", libc::SYS_perf_event_open, vec![0, 0, -1, -1, 0], libc::EPERM),
        ("userfaultfd(0)", libc::SYS_userfaultfd, vec![0], libc::EPERM),
        ("io_uring_setup(1, NULL)", libc::SYS_io_uring_setup, vec![1, 0], libc::EPERM),
        ("init_module(NULL...)", libc::SYS_init_module, vec![0, 0, 0], libc::EPERM),
        ("kexec_load(0...)", libc::SYS_kexec_load, vec![0, 0, 0, 0], libc::EPERM),
        ("clock_settime(CLOCK_REALTIME, NULL)", libc::SYS_clock_settime, vec![0, 0], libc::EPERM),
        ("mount(NULL...)", libc::SYS_mount, vec![0, 0, 0, 0, 0], libc::EPERM),
        ("umount2(NULL, 0)", libc::SYS_umount2, vec![0, 0], libc::EPERM),
        ("chroot(NULL)", libc::SYS_chroot, vec![0], libc::EPERM),
        ("pivot_root(NULL, NULL)", libc::SYS_pivot_root, vec![0, 0], libc::EPERM),
        ("fsopen(NULL, 0)", libc::SYS_fsopen, vec![0, 0], libc::EPERM),
        ("open_tree(-1, NULL, 0)", libc::SYS_open_tree, vec![-1, 0, 0], libc::EPERM),
        ("open_by_handle_at(-1, NULL, 0)", libc::SYS_open_by_handle_at, vec![-1, 0, 0], libc::EPERM),
        ("setns(-1, 0)", libc::SYS_setns, vec![-1, 0], libc::EPERM),
        ("unshare(CLONE_NEWUSER)", libc::SYS_unshare, vec![0x1000_0000], libc::EPERM),
        ("unshare(CLONE_NEWNS)", libc::SYS_unshare, vec![0x0002_0000], libc::EPERM),
        ("clone3(NULL, 0)", libc::SYS_clone3, vec![0, 0], libc::ENOSYS),
        ("personality(READ_IMPLIES_EXEC)", libc::SYS_personality, vec![0x0040_0000], libc::EPERM),
        ("ioctl(-1, TIOCSTI + high bits)", libc::SYS_ioctl, vec![-1, HIGH_BITS | 0x5412, 0], libc::EPERM),
        ("ioctl(-1, TIOCLINUX)", libc::SYS_ioctl, vec![-1, 0x541C, 0], libc::EPERM),
        ("ioctl(-1, FIONREAD) reaches the kernel", libc::SYS_ioctl, vec![-1, 0x541B, 0], libc::EBADF),
        ("socket(AF_PACKET, SOCK_RAW)", libc::SYS_socket, vec![17, 3, 0], libc::EAFNOSUPPORT),
        ("socket(AF_ALG, SOCK_SEQPACKET)", libc::SYS_socket, vec![38, 5, 0], libc::EAFNOSUPPORT),
        ("socket(AF_VSOCK, SOCK_STREAM)", libc::SYS_socket, vec![40, 1, 0], libc::EAFNOSUPPORT),
        ("socket(AF_KEY, SOCK_RAW)", libc::SYS_socket, vec![15, 3, 2], libc::EAFNOSUPPORT),
        ("socket(AF_NETLINK, NETLINK_AUDIT)", libc::SYS_socket, vec![16, 3, 9], libc::EAFNOSUPPORT),
        // 460 on every architecture; libc does not name it yet.
        ("lsm_set_self_attr(0...)", 460, vec![0, 0, 0, 0], libc::EPERM),
    ];
    // x86_64 only: the x32 ABI, and I/O port access.
    #[cfg(target_arch = "x86_64")]
    let checks = {
        let mut checks = checks;
        checks.extend([
            ("x32 getpid", 0x4000_0000 | libc::SYS_getpid, vec![], libc::ENOSYS),
            ("iopl(3)", libc::SYS_iopl, vec![3], libc::EPERM),
        ]);
        checks
    };
    checks
}

fn airlock() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
}

fn describe(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A reason to skip when this machine cannot run a sandbox at all; under `CI=true` that is a failure instead.
fn skip_reason() -> Option<String> {
    if !Path::new("/usr/bin/python3").exists() {
        return Some("/usr/bin/python3 is not installed: it drives the calls inside the sandbox".to_owned());
    }
    let output = airlock().args(["run", "--rm", "--", "/bin/true"]).output().unwrap();
    if output.status.success() {
        return None;
    }
    let reason = format!("`airlock run -- /bin/true` fails here: {}", describe(&output));
    assert!(std::env::var("CI").as_deref() != Ok("true"), "under CI=true: {reason}");
    Some(reason)
}

#[test]
fn seccomp_default_filter_denies_escapes_and_keeps_ordinary_calls() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipped: {reason}");
        return;
    }
    let specs: Vec<String> = checks()
        .into_iter()
        .map(|(what, nr, args, errno)| {
            let args: Vec<String> = args.iter().map(i64::to_string).collect();
            format!("{what}|{nr}|{}|{errno}", args.join(","))
        })
        .collect();
    let output = airlock().args(["run", "--rm", "--", "/usr/bin/python3", "-c", PROBE]).args(&specs).output().unwrap();
    eprintln!("{}", describe(&output));
    assert!(output.status.success(), "some calls were not filtered as the profile says (FAILED lines above)");
}
