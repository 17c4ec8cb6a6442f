//! The escape suite under `--isolation vm`: what isolation.rs and seccomp.rs try against the namespace backend,
//! tried from inside a guest, as root inside, and checked from the host as well. A TCG boot costs seconds, so
//! all the attempts are one shell script in one guest, each printing a `key=value` line the test asserts; a
//! second guest is killed from outside (QEMU dies as a panicking guest's would) and must leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod vm_support;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{code, stderr, stdout, TempDir};
use vm_support::{cgroup_dirs, vm, wait_gone, Running};

const PYTHON: &str = "/usr/bin/python3";

/// The calls a shell cannot make, by ctypes: ptrace of a host pid and of the engine's init, module loading,
/// a reboot of the guest, the kernel log.
const PY_CALLS: &str = r#"
import ctypes, errno, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def call(name, f, *args):
    r = f(*args)
    print(f"{name}=" + ("0" if r == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))))
host_pid, port = int(sys.argv[1]), int(sys.argv[2])
call("ptrace_host", libc.ptrace, 16, host_pid, 0, 0)
call("ptrace_init", libc.ptrace, 16, 1, 0, 0)
call("init_module", libc.syscall, 175, b"\0" * 64, 64, b"")
fd = os.open("/dev/null", os.O_RDONLY)
call("finit_module", libc.syscall, 313, fd, b"", 0)
call("syslog", libc.syscall, 103, 3, ctypes.create_string_buffer(64), 64)
call("reboot", libc.syscall, 169, 0xfee1dead, 672274793, 0x4321fedc, 0)
for name, addr in [("tcp_lo", "127.0.0.1"), ("tcp_out", "10.0.2.2"), ("tcp_host", "192.0.2.1")]:
    try:
        socket.create_connection((addr, port), timeout=3)
        print(f"{name}=CONNECTED")
    except OSError as e:
        print(f"{name}=" + errno.errorcode.get(e.errno, str(e.errno) if e.errno else type(e).__name__))
print("ifaces=" + " ".join(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])))
"#;

fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    let prefix = format!("{key}=");
    out.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim)
}

fn describe(o: &Output) -> String {
    format!("status {:?}\n--- stdout\n{}--- stderr\n{}", o.status.code(), stdout(o), stderr(o))
}

/// Mount points of the host that no sandbox should have: all but the usual pseudo filesystems.
fn host_only_mount_points() -> BTreeSet<String> {
    let usual = ["/", "/proc", "/sys", "/dev", "/dev/shm", "/dev/pts", "/dev/mqueue", "/tmp", "/run"];
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| !usual.contains(&p.as_str()))
        .collect()
}

#[test]
fn a_guest_root_reaches_nothing_of_the_host() {
    require_vm!();
    if !Path::new(PYTHON).exists() {
        skip_or_fail!("{PYTHON} is not installed; the guest makes its system calls with it");
    }
    let mark = format!("airlock-vm-escape-{}", std::process::id());
    let secret = TempDir::new("vm-escape-secret");
    std::fs::write(secret.path().join("key"), &mark).unwrap();
    let ws = TempDir::new("vm-escape-ws");
    vm_support::user_owned(ws.path());
    let devs = TempDir::new("vm-escape-devs");
    for (name, kind, dev) in [("disk", "b", ["254", "0"]), ("mem", "c", ["1", "1"])] {
        let path = devs.path().join(name);
        assert!(Command::new("mknod").arg(&path).arg(kind).args(dev).status().unwrap().success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut sleeper = Command::new("sleep").arg("1000").stdin(Stdio::null()).spawn().unwrap();
    let host_pid = sleeper.id();
    let core_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let host_mounts = host_only_mount_points();

    let secret_dir = secret.path().display().to_string();
    let ws_dir = ws.path().display().to_string();
    let script = format!(
        r#"[ -e {secret_dir} ]; echo "secret_visible=$?"
cat {secret_dir}/key 2>/dev/null; echo "secret_read=$?"
for p in /proc/[0-9]*; do read c < "$p/comm"; echo "proc ${{p#/proc/}} $c"; done
kill -9 {host_pid}; echo "kill=$?"
[ -e /proc/{host_pid} ]; echo "host_proc=$?"
kill -9 -1; echo "kill_all=$?"
awk '{{print "mount " $5}}' /proc/self/mountinfo
echo "dev=$(ls -A /dev | sort | tr '\n' ' ')"
for d in /dev/vda /dev/mem /dev/kmem /dev/port /dev/kmsg /dev/kvm /dev/hvc0 /dev/ttyS0 /dev/vport0p1 /dev/vport1p1 /dev/console; do
  [ -e "$d" ] && echo "present $d"
done
mknod /tmp/disk b 254 0 2>/dev/null; echo "mknod=$?"
head -c 16 /ro/disk >/dev/null 2>&1; echo "share_disk=$?"
head -c 16 /ro/mem >/dev/null 2>&1; echo "share_mem=$?"
cat /etc/shadow >/dev/null 2>&1; echo "shadow=$?"
touch /usr/{mark} 2>/dev/null; echo "write_usr=$?"
touch /etc/{mark} 2>/dev/null; echo "write_etc=$?"
touch /{mark} 2>/dev/null; echo "write_root=$?"
echo inside > {ws_dir}/written; echo "write_ws=$?"
dmesg >/dev/null 2>&1; echo "dmesg=$?"
modprobe -q dummy 2>/dev/null; echo "modprobe=$?"
echo '|/bin/sh -c "touch /tmp/{mark}"' > /proc/sys/kernel/core_pattern 2>/dev/null; echo "core_pattern=$?"
echo h > /proc/sysrq-trigger 2>/dev/null; echo "sysrq_trigger=$?"
echo 1 > /proc/sys/vm/drop_caches 2>/dev/null; echo "drop_caches=$?"
mkdir -p /tmp/m && mount -t 9p -o trans=virtio airlock0 /tmp/m 2>/dev/null; echo "mount_9p=$?"
mount -t proc proc /tmp/m 2>/dev/null; echo "mount_proc=$?"
unshare -U -r true 2>/dev/null; echo "unshare_user=$?"
{PYTHON} -c '{py}' {host_pid} {port}
echo done=1"#,
        py = PY_CALLS.replace('\'', "'\"'\"'"),
    );
    let ro_bind = format!("{}:/ro", devs.path().display());
    let o = vm(
        &[
            "run",
            "--isolation",
            "vm",
            "--user",
            "root",
            "--workspace",
            &ws_dir,
            "--workspace-mode",
            "rw",
            "--ro-bind",
            &ro_bind,
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        b"",
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let sleeper_alive = sleeper.try_wait().unwrap().is_none();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    listener.set_nonblocking(true).unwrap();
    let accepted = listener.accept().is_ok();

    let out = stdout(&o);
    let d = describe(&o);
    assert_eq!(field(&out, "done"), Some("1"), "{d}");
    // Host files outside the shares: not there at all.
    assert_eq!(field(&out, "secret_visible"), Some("1"), "{d}");
    assert_ne!(field(&out, "secret_read"), Some("0"), "{d}");
    assert!(!out.contains(&mark), "{d}");
    // Host processes: invisible and unkillable; the guest's sandbox holds the engine's init and the shell (the
    // loop uses builtins only).
    let procs: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("proc ")).collect();
    // (The engine is the initramfs's /init, the guest's airlock.)
    assert_eq!(procs, ["1 init", "2 sh"], "{d}");
    assert_eq!(field(&out, "kill"), Some("1"), "{d}");
    assert_eq!(field(&out, "host_proc"), Some("1"), "{d}");
    assert!(sleeper_alive, "the host's sleep {host_pid} was killed from the guest\n{d}");
    // No host mount inside.
    let inside_mounts: BTreeSet<&str> = out.lines().filter_map(|l| l.strip_prefix("mount ")).collect();
    assert!(!inside_mounts.is_empty(), "{d}");
    let leaked: Vec<&String> = host_mounts.iter().filter(|m| inside_mounts.contains(m.as_str())).collect();
    assert!(leaked.is_empty(), "host mount points inside the guest's sandbox: {leaked:?}\n{d}");
    // Devices: the engine's minimal /dev, none of the VM's (virtio ports, console, disk), no mknod, share nodes dead.
    let dev: BTreeSet<&str> = field(&out, "dev").unwrap().split_whitespace().collect();
    let expected: BTreeSet<&str> =
        ["null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin", "stdout", "stderr"]
            .into_iter()
            .collect();
    assert_eq!(dev, expected, "{d}");
    assert!(!out.contains("present "), "{d}");
    for key in ["mknod", "share_disk", "share_mem"] {
        assert_ne!(field(&out, key), Some("0"), "{key}\n{d}");
    }
    // Writes: only the workspace, and it lands on the host.
    // The host's root-only files in the shared system directories: root inside is not their owner.
    assert_ne!(field(&out, "shadow"), Some("0"), "the host's /etc/shadow is readable\n{d}");
    for key in ["write_usr", "write_etc", "write_root"] {
        assert_ne!(field(&out, key), Some("0"), "{key}\n{d}");
    }
    assert!(!Path::new("/usr").join(&mark).exists() && !Path::new("/etc").join(&mark).exists());
    assert_eq!(field(&out, "write_ws"), Some("0"), "{d}");
    assert_eq!(std::fs::read_to_string(ws.path().join("written")).unwrap(), "inside\n");
    // The kernel: its log, modules, /proc/sys, sysrq, mounts, namespaces, reboot: refused by the engine.
    for key in
        ["dmesg", "modprobe", "core_pattern", "sysrq_trigger", "drop_caches", "mount_9p", "mount_proc", "unshare_user"]
    {
        assert_ne!(field(&out, key), Some("0"), "{key}\n{d}");
    }
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(), core_before);
    assert!(!Path::new("/tmp").join(&mark).exists());
    for key in ["ptrace_host", "ptrace_init", "init_module", "finit_module", "syslog", "reboot"] {
        let v = field(&out, key).unwrap_or_else(|| panic!("{key} missing\n{d}"));
        assert!(["EPERM", "ESRCH", "EACCES", "ENOSYS"].contains(&v), "{key}={v}\n{d}");
    }
    assert_eq!(field(&out, "ptrace_host"), Some("ESRCH"), "{d}");
    // --net none: loopback only; the host's listener is not reachable from the guest's loopback or beyond.
    assert_eq!(field(&out, "ifaces"), Some("lo"), "{d}");
    assert_eq!(field(&out, "tcp_lo"), Some("ECONNREFUSED"), "{d}");
    for key in ["tcp_out", "tcp_host"] {
        let v = field(&out, key).unwrap();
        assert!(["ENETUNREACH", "EHOSTUNREACH"].contains(&v), "{key}={v}\n{d}");
    }
    assert!(!accepted, "the host's 127.0.0.1:{port} accepted a connection from the guest");
    assert_eq!(code(&o), 0, "{d}");
}

#[test]
fn a_guest_whose_vmm_dies_leaves_no_process_socket_mount_or_cgroup() {
    require_vm!();
    let ws = TempDir::new("vm-escape-kill");
    vm_support::user_owned(ws.path());
    let ws_path = ws.path().to_string_lossy().into_owned();
    let name = format!("vm-escape-kill-{}", std::process::id());
    let (mut run, line) = Running::start(&[
        "run",
        "--isolation",
        "vm",
        "--name",
        &name,
        "--memory",
        "64M",
        "--workspace",
        &ws_path,
        "--",
        "/bin/sh",
        "-c",
        "echo up; echo x > f; sleep 120",
    ]);
    assert_eq!(line.trim(), "up");
    let cgroups: Vec<_> =
        cgroup_dirs(run.qemu).into_iter().map(|(_, d)| d).filter(|d| d.to_string_lossy().contains(&name)).collect();
    assert!(!cgroups.is_empty());
    let sockets_before = unix_socket_inodes(run.child.id() as i32);
    assert!(!sockets_before.is_empty(), "airlock talks to its guest over socket pairs");
    // QEMU dies abruptly, as a panicking guest's does (panic=-1, -no-reboot) or an OOM kill on the host.
    assert!(Command::new("kill").args(["-KILL", &run.qemu.to_string()]).status().unwrap().success());
    let status = run.child.wait().unwrap();
    let mut err = String::new();
    run.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(125), "{err}");
    assert!(err.starts_with("airlock: ") && err.contains("stopped"), "{err}");
    assert!(wait_gone(run.qemu, 5));
    for dir in &cgroups {
        assert!(!dir.exists(), "{} is left", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&ws_path), "{mounts}");
    // Nothing of the run on the host's disk but the workspace layer a named cow run keeps (for diff/discard):
    // no socket files, no console file, no initramfs being built.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.contains(".initramfs-") || (n.contains(&name) && e.file_type().is_ok_and(|t| !t.is_dir()))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!ws.path().join("f").exists(), "a cow workspace's write reached the host");
    let ls = vm_support::airlock_cmd(&["ls"]).output().unwrap();
    let running = stdout(&ls).lines().any(|l| l.contains(&name) && l.contains("running"));
    assert!(!running, "{}", stdout(&ls));
    let _ = vm_support::airlock_cmd(&["rm", &name]).output();
}

#[test]
fn a_root_owned_workspace_makes_root_inside_no_owner_of_the_hosts_files() {
    require_vm!();
    // With `--rootfs host` the guest sees the host's system directories over 9p with their owners: were root
    // inside mapped to guest root (to write a root-owned workspace as root), it would own `/etc/shadow` there.
    // It is not: the workspace gets the notice a host that cannot idmap it gives, and stays unwritable.
    let ws = TempDir::new("vm-escape-root-ws");
    let ws_path = ws.path().to_string_lossy().into_owned();
    let o = vm_support::vm(
        &[
            "run",
            "--isolation",
            "vm",
            "--workspace",
            &ws_path,
            "--workspace-mode",
            "rw",
            "--",
            "/bin/sh",
            "-c",
            "cat /etc/shadow >/dev/null 2>&1; echo shadow=$?; touch w 2>/dev/null; echo write=$?",
        ],
        b"",
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert_ne!(field(&out, "shadow"), Some("0"), "the host's /etc/shadow is readable: {out}");
    assert_ne!(field(&out, "write"), Some("0"), "{out}");
    assert!(!ws.path().join("w").exists());
    assert!(stderr(&o).contains("is owned by host root and root inside is not root outside"), "{}", stderr(&o));
}

/// The inodes of the unix sockets process `pid` holds.
fn unix_socket_inodes(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .filter(|l| l.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}
